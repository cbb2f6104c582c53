# SPDX-License-Identifier: GPL-2.0
"""Host-enforced timed commands: `tballoon serve --qmp` in front of QEMU's
stock virtio-balloon-pci, with Linux's virtio_balloon (group qmp-upstream),
our driver in standard mode (qmp-ours) or no driver at all (qmp-none).

The same CLI as against our device; the deadline, floor, pressure and
unresponsiveness are the daemon's to enforce, from QMP's view of the guest.
"""

import os
import re
import signal
import time

from . import MIB, PAGE, available_kb, group, mib, scenario
from tbtest import machine
from .docs import run_examples

group("qmp-upstream", driver="upstream", device="stock", mem="1G", serve_qmp=True)
group("qmp-ours", driver="tballoon", device="stock", mem="1G", serve_qmp=True)
group("qmp-none", driver="none", device="stock", mem="1G", serve_qmp=True,
      backend_args=("--grace", "3s"))

KB = 1024


def _require_qmp(ctx, driver):
    g = ctx.guest
    ctx.require(g.driver_status == "loaded", "guest driver %s is %s (see console.log)"
                % (driver, g.driver_status))
    st = ctx.status()
    ctx.require(st.get("kind") == "qmp", "status kind qmp (got %s)" % st.get("kind"))
    ctx.require(st.get("connected") and st.get("driver_ok"),
                "serve --qmp: connected %s, driver_ok %s" % (st.get("connected"),
                                                            st.get("driver_ok")))
    ctx.expect(st.get("enforced_by") == "host" and st.get("timed") is False,
               "enforced by the host (got %s, timed %s)" % (st.get("enforced_by"),
                                                           st.get("timed")))
    return st


def _wait_stats(ctx, timeout=30.0):
    """Until the guest's statistics with available memory have arrived."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rc, st, _ = ctx.guest.tool_json("stats")
        if rc == 0 and st and "available-memory" in (st.get("guest") or {}):
            return st
        time.sleep(0.5)
    return None


def _settle(ctx, timeout=20.0):
    """The balloon once it has stopped moving (a stop overshoots, then the
    guest deflates back to the new target)."""
    last, since = None, time.monotonic()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        a = ctx.status().get("actual_pages")
        if a != last:
            last, since = a, time.monotonic()
        elif time.monotonic() - since > 1.5:
            break
        time.sleep(0.1)
    return last


@scenario("qmp-docs-examples", "qmp-upstream", needs=("tool",))
def qmp_docs_examples(ctx):
    """serve --qmp, Linux's virtio_balloon: every `$ tballoon` example of host-tool.rst exits 0"""
    _require_qmp(ctx, "virtio_balloon")
    ctx.require(_wait_stats(ctx), "guest statistics through QMP within 30 s")
    run_examples(ctx)
    st = ctx.status()
    ctx.expect(st.get("actual_pages") == 0, "balloon empty after the examples (actual %s)"
               % st.get("actual_pages"))
    ctx.check_healthy()


def _deadline(ctx):
    """inflate 900 MiB in 300 ms: ends deadline, stopped near where it was"""
    target = 900 * MIB // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "300ms")
    cmd = st.get("command", {})
    at_stop = st.get("actual_pages", 0)
    ctx.expect(rc == 3 and cmd.get("state") == "deadline",
               "exit 3, state deadline (got %d, %s)" % (rc, cmd.get("state")))
    settled = _settle(ctx)
    ctx.diag("deadline 300 ms: balloon %s at the stop, %s once settled (overshoot %+d pages),"
             " host %s ms", mib(at_stop * PAGE), mib((settled or 0) * PAGE),
             (settled or 0) - at_stop, cmd.get("host_elapsed_ms"))
    ctx.expect(settled is not None and settled < target,
               "the balloon stopped short of the target (%s pages)" % settled)
    ctx.expect(st.get("num_pages") == at_stop or ctx.status().get("num_pages") < target,
               "the target was set back to where the balloon was")
    rc, st, _ = ctx.balloon("deflate", 0, "60s")
    ctx.expect(rc == 0 and st.get("actual_pages") == 0, "deflate to 0: exit %d, actual %s"
               % (rc, st.get("actual_pages")))
    ctx.check_healthy()


def _floor(ctx):
    """inflate towards 900 MiB with a 300 MiB floor: stopped by the host with
    the guest's MemAvailable still above the floor"""
    g = ctx.guest
    ctx.require(_wait_stats(ctx), "guest statistics through QMP within 30 s")
    floor = 300 * MIB
    rc, st, _ = ctx.balloon("inflate", 900 * MIB // PAGE, "60s",
                            extra=("--floor", "%dp" % (floor // PAGE)))
    cmd = st.get("command", {})
    ctx.expect(rc == 4 and cmd.get("state") == "pressure" and cmd.get("reason") == "floor",
               "exit 4, pressure (floor) (got %d, %s (%s))"
               % (rc, cmd.get("state"), cmd.get("reason")))
    _settle(ctx)
    avail = available_kb(g) * KB
    ctx.diag("floor %s: balloon %s, guest MemAvailable %s (%+.1f MiB from the floor)",
             mib(floor), mib(ctx.status().get("actual_pages", 0) * PAGE), mib(avail),
             (avail - floor) / MIB)
    ctx.expect(avail >= floor, "guest MemAvailable %s >= floor %s" % (mib(avail), mib(floor)))
    rc, st, _ = ctx.balloon("deflate", 0, "60s")
    ctx.expect(rc == 0, "deflate to 0: exit %d" % rc)
    ctx.check_healthy()


@scenario("qmp-deadline", "qmp-upstream", needs=("tool",))
def qmp_deadline(ctx):
    """serve --qmp, virtio_balloon: 900 MiB in 300 ms ends deadline, the balloon stops"""
    _require_qmp(ctx, "virtio_balloon")
    _deadline(ctx)


@scenario("qmp-floor", "qmp-upstream", needs=("tool",))
def qmp_floor(ctx):
    """serve --qmp, virtio_balloon: a 300 MiB floor holds (host-enforced from guest-stats)"""
    _require_qmp(ctx, "virtio_balloon")
    _floor(ctx)


@scenario("qmp-abort", "qmp-upstream", needs=("tool",))
def qmp_abort(ctx):
    """serve --qmp, virtio_balloon: abort stops a paced inflate where it is; --gentle is refused"""
    g = ctx.guest
    _require_qmp(ctx, "virtio_balloon")
    # only a timed driver can yield to the guest's work: said, not ignored
    res = g.tool("inflate", "--to", "100M", "--deadline", "10s", "--gentle")
    ctx.expect(res.returncode != 0 and "gentle needs the timed protocol" in res.stderr
               and ctx.status().get("actual_pages") == 0,
               "a gentle inflate is refused with its reason, nothing moved (%d: %s)"
               % (res.returncode, res.stderr.strip()))
    res = g.tool("inflate", "--to", "600M", "--deadline", "20s", "--paced")
    ctx.require(res.returncode == 0, "paced inflate accepted (%s)" % res.stderr.strip())
    time.sleep(2.0)
    mid = ctx.status().get("actual_pages", 0)
    res = g.tool("abort")
    ctx.expect(res.returncode == 0, "abort exits 0 (%s)" % res.stderr.strip())
    settled = _settle(ctx)
    ctx.diag("paced 600 MiB over 20 s, aborted after 2 s: %s then, %s settled",
             mib(mid * PAGE), mib((settled or 0) * PAGE))
    ctx.expect(0 < mid < 600 * MIB // PAGE // 2,
               "paced: about a tenth of the way after 2 s (%s)" % mib(mid * PAGE))
    ctx.expect(settled is not None and settled < 600 * MIB // PAGE // 2,
               "the balloon stayed near where it was aborted (%s)" % settled)
    rc, st, _ = ctx.balloon("deflate", 0, "60s")
    ctx.expect(rc == 0, "deflate to 0: exit %d" % rc)


@scenario("qmp-vm-gone", "qmp-upstream", needs=("tool",))
def qmp_vm_gone(ctx):
    """serve --qmp: QEMU killed mid-command: the command ends aborted (removed), serve lives"""
    g = ctx.guest
    _require_qmp(ctx, "virtio_balloon")
    res = g.tool("inflate", "--to", "600M", "--deadline", "30s", "--paced")
    ctx.require(res.returncode == 0, "paced inflate accepted (%s)" % res.stderr.strip())
    time.sleep(1.0)
    os.killpg(g.qemu.pid, signal.SIGKILL)
    g.qemu.wait(timeout=30)
    g.qemu = None       # the harness must not take QEMU's death for a failure
    time.sleep(1.0)
    st = ctx.status()
    cmd = st.get("command", {})
    ctx.expect(cmd.get("state") == "aborted" and cmd.get("reason") == "removed",
               "the command ended aborted (removed) (got %s (%s))"
               % (cmd.get("state"), cmd.get("reason")))
    ctx.expect(st.get("connected") is False, "status says disconnected")
    res = g.tool("inflate", "--to", "100M", "--deadline", "10s")
    ctx.expect(res.returncode != 0 and "no front-end" in res.stderr,
               "a new command is refused with a reason (%d: %s)"
               % (res.returncode, res.stderr.strip()))
    ctx.expect(g.backend.poll() is None, "serve --qmp still runs")
    log = g.backend_log.read_text(errors="replace")
    ctx.expect(re.search(r"QEMU closed the QMP connection|read: |connect: ", log) is not None,
               "the daemon logged why the VM went away")


@scenario("qmp-ours-deadline", "qmp-ours", needs=("tool", "module"))
def qmp_ours_deadline(ctx):
    """serve --qmp, virtio_tballoon in standard mode: 900 MiB in 300 ms ends deadline"""
    _require_qmp(ctx, "virtio_tballoon")
    _deadline(ctx)


@scenario("qmp-ours-floor", "qmp-ours", needs=("tool", "module"))
def qmp_ours_floor(ctx):
    """serve --qmp, virtio_tballoon in standard mode: a 300 MiB floor holds"""
    _require_qmp(ctx, "virtio_tballoon")
    _floor(ctx)


@scenario("qmp-unresponsive", "qmp-none", needs=("tool",))
def qmp_unresponsive(ctx):
    """serve --qmp, no balloon driver in the guest: ends guest-unresponsive after the grace"""
    st = ctx.status()
    ctx.require(st.get("connected"), "serve --qmp connected to QEMU")
    rc, st, wall = ctx.balloon("inflate", 256 * MIB // PAGE, "30s")
    cmd = st.get("command", {})
    ctx.diag("no driver: %s after %.1f s", cmd.get("state"), wall)
    ctx.expect(rc == 7 and cmd.get("state") == "guest-unresponsive",
               "exit 7, guest-unresponsive (got %d, %s)" % (rc, cmd.get("state")))
    ctx.expect(cmd.get("host_elapsed_ms", 30000) < cmd.get("deadline_ms", 0),
               "decided at the grace (3 s), before the deadline (after %s ms)"
               % cmd.get("host_elapsed_ms"))
    ctx.expect(st.get("stats", {}).get("unresponsive") == 1, "counted as unresponsive")


# Live migration between two QEMUs on this machine, the balloon managed by
# `tballoon serve --qmp`: one daemon per QEMU, the balloon size travels in
# QEMU's device state.
group("qmp-migrate", driver="upstream", device="stock", mem="1G", serve_qmp=True)


def _ram_bytes(info):
    ram = info.get("ram", {})
    return ram.get("transferred", 0), info.get("total-time", 0)


@scenario("qmp-migrate", "qmp-migrate", needs=("tool",))
def qmp_migrate(ctx):
    """serve --qmp: live migration before and after a timed shrink; the balloon survives"""
    g = ctx.guest
    _require_qmp(ctx, "virtio_balloon")
    # memory the guest used and freed: not zero pages, migration must send it
    res = g.sh("memhog 600 0", timeout=120)
    ctx.require(res.rc == 0, "memhog 600 MiB in the guest (%s)" % res.out.strip())
    info = g.migrate()
    sent0, ms0 = _ram_bytes(info)
    st = ctx.status()
    ctx.diag("migration without a shrink: %s of RAM sent in %d ms", mib(sent0), ms0)
    ctx.expect(st.get("connected") and st.get("actual_pages") == 0,
               "the destination's daemon sees the VM, balloon empty (%s, %s pages)"
               % (st.get("connected"), st.get("actual_pages")))
    ctx.require(_wait_stats(ctx), "guest statistics on the destination within 30 s")
    avail = g.meminfo()["MemAvailable"] * KB
    target = (avail - 160 * MIB) // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "60s",
                               extra=("--floor", "%dp" % (128 * MIB // PAGE)))
    ctx.expect(rc in (0, 4), "the pre-migration shrink ends done or at the floor (exit %d)" % rc)
    pages = _settle(ctx)
    ctx.diag("shrink: %s taken in %.1f s (MemAvailable was %s)", mib(pages * PAGE), wall,
             mib(avail))
    info = g.migrate()
    sent1, ms1 = _ram_bytes(info)
    st = ctx.status()
    ctx.diag("migration after the shrink: %s of RAM sent in %d ms (%.0f%% of before)",
             mib(sent1), ms1, 100.0 * sent1 / max(sent0, 1))
    ctx.expect(st.get("actual_pages") == pages,
               "the balloon survived: the destination's daemon sees %s pages (was %s)"
               % (st.get("actual_pages"), pages))
    qmp = machine.Qmp(g.path(g.sock_names["qmp"]))
    try:
        qa = qmp.command("query-balloon")["actual"]
    finally:
        qmp.close()
    ctx.expect(qa == st.get("guest_ram_bytes", 0) - pages * PAGE,
               "QEMU's query-balloon on the destination agrees (%s)" % mib(qa))
    ctx.expect(sent1 < sent0, "the shrink sends less RAM (%s against %s)"
               % (mib(sent1), mib(sent0)))
    rc, st, _ = ctx.balloon("deflate", 0, "60s")
    ctx.expect(rc == 0 and st.get("actual_pages") == 0,
               "deflate on the destination: exit %d, actual %s" % (rc, st.get("actual_pages")))
    ctx.check_healthy()
