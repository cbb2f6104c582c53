# SPDX-License-Identifier: GPL-2.0
"""Compatibility: our driver on the stock device, the upstream driver on ours."""

import time

from . import MIB, group, mib, scenario
from tbtest import machine

# Our driver on QEMU's own virtio-balloon-pci (no TIMED feature): it must
# follow num_pages like the upstream driver. Driven through QMP "balloon".
group("stock", driver="tballoon", device="stock", mem="1G")

KB = 1024


def _balloon_to(ctx, qmp, guest_bytes, timeout=120.0):
    """QMP balloon to GUEST_BYTES of guest memory; wait for actual; seconds."""
    t0 = time.monotonic()
    qmp.command("balloon", value=guest_bytes)
    actual = None
    while time.monotonic() - t0 < timeout:
        actual = qmp.command("query-balloon")["actual"]
        if actual == guest_bytes:
            return time.monotonic() - t0, actual
        time.sleep(0.2)
    return None, actual


@scenario("stock-device", "stock", needs=("module",))
def stock_device(ctx):
    """virtio_tballoon on stock virtio-balloon-pci: follows QMP balloon 512M and back"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded",
                "virtio_tballoon.ko did not load (%s)" % g.driver_status)
    qmp = machine.Qmp(g.path("qmp.sock"))
    try:
        ram = qmp.command("query-balloon")["actual"]
        mi0 = g.meminfo()
        secs, actual = _balloon_to(ctx, qmp, ram - 512 * MIB)
        ctx.require(secs is not None, "balloon to %s: guest stuck at %s"
                    % (mib(ram - 512 * MIB), mib(actual)))
        mi1 = g.meminfo()
        ctx.diag("inflate 512 MiB via QMP: %.2f s wall (polled), MemTotal %d -> %d kB",
                 secs, mi0["MemTotal"], mi1["MemTotal"])
        ctx.expect((mi0["MemTotal"] - mi1["MemTotal"]) * KB == 512 * MIB,
                   "MemTotal dropped by 512 MiB (dropped %s)"
                   % mib((mi0["MemTotal"] - mi1["MemTotal"]) * KB))
        secs, actual = _balloon_to(ctx, qmp, ram)
        ctx.require(secs is not None, "balloon back to %s: guest stuck at %s"
                    % (mib(ram), mib(actual)))
        mi2 = g.meminfo()
        ctx.diag("deflate via QMP: %.2f s wall (polled), MemTotal %d kB", secs,
                 mi2["MemTotal"])
        ctx.expect(mi2["MemTotal"] == mi0["MemTotal"],
                   "MemTotal back to %d kB (got %d)" % (mi0["MemTotal"], mi2["MemTotal"]))
    finally:
        qmp.close()
    ctx.check_healthy()


# Linux's own virtio_balloon on our backend (TIMED not negotiated): the
# backend drives it through num_pages and still punches the pages out.
group("upstream", driver="upstream", device="tballoon", mem="1G")

PAGE = 4096


@scenario("upstream-driver", "upstream", needs=("tool",))
def upstream_driver(ctx):
    """upstream virtio_balloon on tballoon serve: inflate 512M, host RSS drops, deflate"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded",
                "virtio_balloon.ko did not load (%s)" % g.driver_status)
    st0 = ctx.status()
    ctx.require(st0.get("connected") and st0.get("driver_ok"),
                "backend: connected %s, driver_ok %s" % (st0.get("connected"),
                                                         st0.get("driver_ok")))
    ctx.expect(st0.get("timed") is False, "TIMED not negotiated with the upstream driver")
    mi0 = g.meminfo()
    target = 512 * MIB // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "120s", timeout=300)
    ctx.expect(rc == 0 and st["command"].get("state") == "done",
               "inflate done (exit %d, state %s)" % (rc, st["command"].get("state")))
    ctx.expect(st.get("actual_pages") == target, "actual_pages == %d (got %s)"
               % (target, st.get("actual_pages")))
    st1 = ctx.status()
    drop = st0["resident_bytes"] - st1["resident_bytes"]
    ctx.diag("host resident %s -> %s", mib(st0["resident_bytes"]), mib(st1["resident_bytes"]))
    ctx.expect(drop >= 0.95 * 512 * MIB, "resident dropped by >= 95%% of 512 MiB (%s)"
               % mib(drop))
    mi1 = g.meminfo()
    ctx.expect((mi0["MemTotal"] - mi1["MemTotal"]) * KB == 512 * MIB,
               "MemTotal dropped by 512 MiB (%d -> %d kB)" % (mi0["MemTotal"],
                                                              mi1["MemTotal"]))
    rc, st, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.expect(rc == 0 and st.get("actual_pages") == 0,
               "deflate to 0 done (exit %d, actual %s)" % (rc, st.get("actual_pages")))
    mi2 = g.meminfo()
    ctx.expect(mi2["MemTotal"] == mi0["MemTotal"], "MemTotal back to %d kB (got %d)"
               % (mi0["MemTotal"], mi2["MemTotal"]))
    ctx.check_healthy()
