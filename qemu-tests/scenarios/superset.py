# SPDX-License-Identifier: GPL-2.0
"""What Linux's virtio_balloon does beyond inflate and deflate, with our
driver in its place and with our backend as the device: free page reporting,
free page hinting, page poison and the reclaim statistics (tags 10-15).

Each scenario asserts the effect, not the negotiation: reported memory
leaves the host (the allocated blocks of the guest's memfd drop), a live
migration with hinting sends less RAM, a poisoning guest keeps its poison.
The peers are QEMU's own virtio-balloon-pci and Linux's own virtio_balloon.
"""

import time

from . import GROUPS, MIB, PAGE, group, mib, scenario
from tbtest import machine
from .driver import (_empty, _guest_bg, _guest_bg_wait, _insmod_again, _oom_lines,
                     _qmp_balloon, _vmstat, _withhold)

KB = 1024
# the stock device with everything the upstream driver can use
ALL_STOCK = "free-page-reporting=on,free-page-hint=on,deflate-on-oom=on,iothread=hint0"

group("super-stock", driver="tballoon", device="stock", mem="1G", stock_props=ALL_STOCK)
group("super-ours", driver="tballoon", device="tballoon", mem="1G",
      backend_args=("--free-page-reporting", "--deflate-on-oom"))
group("super-dead", driver="tballoon", device="tballoon", mem="1G",
      backend_args=("--free-page-reporting",))
group("super-upstream", driver="upstream", device="tballoon", mem="1G",
      backend_args=("--free-page-reporting",))
# a guest that poisons freed pages (page_poison=1), on both devices
group("poison-ours", driver="tballoon", device="tballoon", mem="1G",
      backend_args=("--free-page-reporting",), extra_append="page_poison=1")
group("poison-stock-off", driver="tballoon", device="stock", mem="1G",
      stock_props="free-page-reporting=on,page-poison=off", extra_append="page_poison=1")
group("zero-ours", driver="tballoon", device="tballoon", mem="1G",
      backend_args=("--free-page-reporting",), extra_append="init_on_free=1")
# migration with and without hinting, for the same driver
group("hint-on", driver="tballoon", device="stock", mem="1G",
      stock_props="free-page-hint=on,iothread=hint0")
group("hint-off", driver="tballoon", device="stock", mem="1G")

# reclaim statistics the guest kernel's virtio_balloon.h defines (6.12)
RECLAIM_TAGS = ("oom-kills", "alloc-stalls", "async-scans", "direct-scans",
                "async-reclaims", "direct-reclaims")


def _allocated(g):
    return g.host_memory()["memfd_allocated"]


def _settle(g, timeout=60.0, still=3.0):
    """Wait until the memfd's allocated bytes stop falling; returns them."""
    t0 = time.monotonic()
    last, since = _allocated(g), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        now = _allocated(g)
        if now < last - 4 * MIB:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return now
    return _allocated(g)


def _free_and_measure(ctx, size_mib=512, hold_s=4, within_s=10.0):
    """A guest program takes SIZE_MIB, holds it, frees it (exits).

    Returns (drop in bytes, seconds from the free to 90% of it gone on the
    host or None, allocated before, while held, after).
    """
    g = ctx.guest
    base = _settle(g)
    _guest_bg(g, "memhog %d %d" % (size_mib, hold_s), "hog")
    t0 = time.monotonic()
    while "touched" not in g.sh("cat /tmp/hog.out 2>/dev/null").out:
        ctx.require(time.monotonic() - t0 < 120, "memhog did not touch its memory")
        time.sleep(0.2)
    held = _allocated(g)
    rc, out = _guest_bg_wait(g, "hog", 120)
    freed_at = time.monotonic()
    ctx.require(rc == 0, "memhog %d MiB ran (exit %s: %s)" % (size_mib, rc, out.strip()))
    want = held - size_mib * MIB * 9 // 10
    secs = None
    while time.monotonic() - freed_at < within_s + 20:
        now = _allocated(g)
        if secs is None and now <= want:
            secs = time.monotonic() - freed_at
            break
        time.sleep(0.1)
    after = _settle(g, timeout=30.0, still=2.0)
    ctx.diag("guest memfd allocated: %s settled, %s with %d MiB held, %s after the free "
             "(90%% of it gone on the host after %s)", mib(base), mib(held), size_mib,
             mib(after), "%.2f s" % secs if secs is not None else "never")
    return held - after, secs, base, held, after


def _expect_reported(ctx, size_mib=512):
    drop, secs, _, _, _ = _free_and_measure(ctx, size_mib)
    ctx.expect(secs is not None and secs <= 10.0,
               "the host released >= 90%% of the %d MiB the guest freed within 10 s "
               "(%s, dropped %s)" % (size_mib, "%.2f s" % secs if secs is not None
                                     else "not within 30 s", mib(drop)))
    return drop, secs


def _expect_timed_round(ctx, mib_=256):
    """A timed inflate and deflate next to reporting: exact accounting."""
    g = ctx.guest
    rc, st, _ = ctx.balloon("inflate", mib_ * MIB // PAGE, "30s")
    held = (_vmstat(g, "balloon_inflate") or 0) - (_vmstat(g, "balloon_deflate") or 0)
    ctx.expect(rc == 0 and st.get("actual_pages") == st.get("device_pages") == held
               == mib_ * MIB // PAGE,
               "timed inflate %d MiB with reporting on: exit %d, actual %s, device %s, "
               "vmstat %s" % (mib_, rc, st.get("actual_pages"), st.get("device_pages"), held))
    rc, st, _ = ctx.balloon("deflate", 0, "30s")
    ctx.expect(rc == 0 and st.get("actual_pages") == st.get("device_pages") == 0,
               "timed deflate to 0: exit %d, actual %s, device %s"
               % (rc, st.get("actual_pages"), st.get("device_pages")))


def _expect_timed_during_reports(ctx, mib_=256):
    """A paced timed inflate (5 s) while the kernel reports what a program
    just freed (it reports 2 s after the free): exact accounting."""
    g = ctx.guest
    res = g.sh("memhog 400 0", timeout=120)
    ctx.require(res.rc == 0, "memhog 400 MiB (%s)" % res.out.strip())
    r0 = ctx.status()["stats"]["reports"]
    rc, st, _ = ctx.balloon("inflate", mib_ * MIB // PAGE, "5s", extra=("--paced",))
    r1 = st["stats"]["reports"] if st else r0
    held = (_vmstat(g, "balloon_inflate") or 0) - (_vmstat(g, "balloon_deflate") or 0)
    ctx.diag("paced inflate of %d MiB over 5 s: %d free page reports during it", mib_, r1 - r0)
    ctx.expect(r1 > r0, "the kernel reported while the command ran (%d reports)" % (r1 - r0))
    ctx.expect(rc == 0 and st.get("actual_pages") == st.get("device_pages") == held
               == mib_ * MIB // PAGE,
               "the timed inflate beside the reports: exit %d, actual %s, device %s, vmstat %s"
               % (rc, st.get("actual_pages"), st.get("device_pages"), held))
    rc, st, _ = ctx.balloon("deflate", 0, "30s")
    ctx.expect(rc == 0 and st.get("actual_pages") == st.get("device_pages") == 0,
               "deflate to 0: exit %d" % rc)


def _kernel_has_reclaim_tags(g):
    return g.sh("uname -r").out.strip().startswith("6.12")


@scenario("super-stock-reporting", "super-stock", needs=("module",))
def stock_reporting(ctx):
    """our driver on virtio-balloon-pci with free-page-reporting, free-page-hint and deflate-on-oom: freed guest memory leaves the host within 10 s; a program larger than what the balloon left survives (the balloon gives pages back); guest-stats has the reclaim tags where the kernel defines them"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded", "virtio_tballoon loaded (%s)" % g.driver_status)
    lines = [l for l in g.dmesg().splitlines() if "page reporting" in l.lower()]
    ctx.diag("dmesg: %s", " | ".join(lines[-2:]) or "(nothing on page reporting)")
    _expect_reported(ctx)
    qmp = machine.Qmp(g.path("qmp.sock"))
    try:
        # deflate-on-oom beside reporting: a program larger than what the
        # balloon left survives, the balloon gives pages back
        ram = qmp.command("query-balloon")["actual"]
        got = _qmp_balloon(qmp, ram - 640 * MIB)
        ctx.require(ram - got >= 500 * MIB, "QMP balloon took >= 500 MiB with reporting and "
                    "hinting on (%s)" % mib(ram - got))
        hog = g.meminfo()["MemAvailable"] // KB + 200
        res = g.sh("memhog %d; echo rc=$?" % hog, timeout=300)
        after = qmp.command("query-balloon")["actual"]
        ctx.diag("balloon %s, memhog %d MiB (200 over MemAvailable): %s; the guest took "
                 "back %s", mib(ram - got), hog, res.out.strip().replace("\n", "; "),
                 mib(after - got))
        ctx.expect("rc=0" in res.out and not _oom_lines(g),
                   "memhog survived, no OOM kill (deflate-on-oom)")
        ctx.expect(after - got >= 150 * MIB, "the balloon gave back >= 150 MiB (%s)"
                   % mib(after - got))
        ctx.expect(_qmp_balloon(qmp, ram) == ram, "balloon back to empty")
        path = "/machine/peripheral/balloon0"
        qmp.command("qom-set", path=path, property="guest-stats-polling-interval", value=1)
        time.sleep(3.0)
        st = qmp.command("qom-get", path=path, property="guest-stats").get("stats", {})
        qmp.command("qom-set", path=path, property="guest-stats-polling-interval", value=0)
    finally:
        qmp.close()
    names = ["stat-" + t for t in RECLAIM_TAGS]
    have = {n: st.get(n) for n in names}
    ctx.diag("QEMU guest-stats reclaim tags: %s", have)
    if _kernel_has_reclaim_tags(g):
        ctx.expect(all(isinstance(v, int) and v >= 0 for v in have.values()),
                   "6.12 guest: every reclaim tag in QEMU's guest-stats")
    else:
        # QEMU shows a tag the guest never sent as -1 (as u64: 2^64 - 1)
        ctx.expect(all(v in (None, -1, (1 << 64) - 1) for v in have.values()),
                   "6.1 guest: no reclaim tag sent (absent, not zero)")
    ctx.check_healthy()


@scenario("super-stock-hint", "hint-on", needs=("module",))
def stock_hint(ctx):
    """free page hinting on virtio-balloon-pci: a live migration sends less RAM than the same migration of a guest without hinting"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded", "virtio_tballoon loaded (%s)" % g.driver_status)
    sent = {}
    for name, guest in (("hinting", g), ("no hinting", None)):
        if guest is None:
            # the same driver and workload on a device without hinting
            opts = dict(GROUPS["hint-off"], name="hint-off", log=ctx.diag)
            with machine.Guest(**opts) as other:
                sent[name] = _migrate_after_use(ctx, other)
        else:
            sent[name] = _migrate_after_use(ctx, guest)
            off = [l for l in guest.dmesg().splitlines() if "free page hint" in l]
            ctx.diag("dmesg: %s", " | ".join(off[-2:]) or "-")
    ctx.diag("RAM sent by a migration after 600 MiB used and freed: %s with hinting, "
             "%s without (%.0f%%)", mib(sent["hinting"]), mib(sent["no hinting"]),
             100.0 * sent["hinting"] / max(sent["no hinting"], 1))
    ctx.expect(sent["hinting"] < sent["no hinting"] * 3 // 4,
               "hinting sends less than 3/4 of the RAM sent without it (%s vs %s)"
               % (mib(sent["hinting"]), mib(sent["no hinting"])))
    res = g.sh("memhog 300 0", timeout=120)
    ctx.expect(res.rc == 0, "the migrated guest allocates 300 MiB afterwards (%s)"
               % res.out.strip())
    ctx.check_healthy()


def _migrate_after_use(ctx, g):
    """Use and free 600 MiB (not zero pages), migrate; RAM bytes sent."""
    res = g.sh("memhog 600 0", timeout=120)
    ctx.require(res.rc == 0, "memhog 600 MiB (%s)" % res.out.strip())
    free0 = g.meminfo()["MemFree"]
    info = g.migrate()
    ram = info.get("ram", {})
    ctx.diag("%s: migration sent %s of RAM in %s ms (status %s)", g.name,
             mib(ram.get("transferred", 0)), info.get("total-time"), info.get("status"))
    ctx.require(info.get("status") == "completed", "migration completed (%s)"
                % info.get("status"))
    # hinted blocks go back to the guest when the device says DONE
    t0 = time.monotonic()
    while g.meminfo()["MemFree"] < free0 - 32 * 1024 and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    free1 = g.meminfo()["MemFree"]
    ctx.diag("%s: MemFree %d kB before the migration, %d kB after", g.name, free0, free1)
    ctx.expect(free1 >= free0 - 32 * 1024, "%s: the guest has its free memory back after "
               "the migration (MemFree %d -> %d kB)" % (g.name, free0, free1))
    return ram.get("transferred", 0)


@scenario("super-ours-reporting", "super-ours")
def ours_reporting(ctx):
    """free page reporting on tballoon serve with our driver: freed memory leaves the host within 10 s, the daemon counts it, timed commands after and during reports keep exact accounting; 6.12's reclaim tags in tballoon stats"""
    st = ctx.require_timed_device()
    ctx.require(st.get("free_page_reporting") is True,
                "REPORTING negotiated (status %s)" % st.get("free_page_reporting"))
    r0 = st["stats"]["reported_bytes"]
    drop, secs = _expect_reported(ctx)
    st = ctx.status()
    ctx.diag("daemon: %d reports, %s reported and released, %s kept", st["stats"]["reports"],
             mib(st["stats"]["reported_bytes"]), mib(st["stats"]["reported_kept_bytes"]))
    ctx.expect(st["stats"]["reported_bytes"] - r0 >= 450 * MIB,
               "the daemon counted the report (%s since the free)"
               % mib(st["stats"]["reported_bytes"] - r0))
    ctx.expect(st.get("actual_pages") == 0 and st.get("device_pages") == 0,
               "reported pages never enter the balloon (actual %s, device %s)"
               % (st.get("actual_pages"), st.get("device_pages")))
    _expect_timed_round(ctx)
    _expect_timed_during_reports(ctx)
    _stats_tags(ctx)
    ctx.check_healthy()


def _stats_tags(ctx):
    g = ctx.guest
    with machine.tballoon.Client(str(g.control), timeout=60) as c:
        c.stats()           # the next statistics request goes out now
        time.sleep(2.5)
        s = c.stats()
    gs = s.get("guest", {})
    have = {t: gs.get(t) for t in RECLAIM_TAGS}
    ctx.diag("tballoon stats reclaim tags: %s", have)
    if _kernel_has_reclaim_tags(g):
        ctx.expect(all(isinstance(v, int) for v in have.values()),
                   "6.12 guest: every reclaim tag in tballoon stats")
        ctx.expect(have["oom-kills"] == (_vmstat(g, "oom_kill") or 0),
                   "oom-kills matches the guest's vmstat oom_kill")
    else:
        ctx.expect(all(v is None for v in have.values()),
                   "6.1 guest: no reclaim tag (absent, not zero)")


@scenario("super-upstream-reporting", "super-upstream", needs=("tool",))
def upstream_reporting(ctx):
    """Linux's virtio_balloon with free page reporting on tballoon serve: freed memory leaves the host within 10 s and the daemon counts it"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded", "virtio_balloon loaded (%s)" % g.driver_status)
    st = ctx.status()
    ctx.require(st.get("free_page_reporting") is True,
                "the upstream driver negotiated REPORTING (status %s)"
                % st.get("free_page_reporting"))
    _expect_reported(ctx)
    st = ctx.status()
    ctx.expect(st["stats"]["reported_bytes"] >= 450 * MIB,
               "the daemon counted reports (%s)" % mib(st["stats"]["reported_bytes"]))
    ctx.check_healthy()


def _require_poisoning(ctx):
    """page_poison=1 needs CONFIG_PAGE_POISONING: without it the kernel lists
    the parameter as unknown and never poisons, so say that, not a wrong
    negotiation"""
    unknown = [l for l in ctx.guest.dmesg().splitlines()
               if "Unknown kernel command line parameters" in l and "page_poison" in l]
    ctx.require(not unknown, "the guest kernel has CONFIG_PAGE_POISONING (%s)" % unknown[:1])


@scenario("super-poison-ours", "poison-ours")
def poison_ours(ctx):
    """a guest with page_poison=1 on tballoon serve: PAGE_POISON negotiated with the poison value, reported pages kept (a hole would read as zero, not poison), no poison corruption in the guest"""
    g = ctx.guest
    _require_poisoning(ctx)
    st = ctx.require_timed_device()
    ctx.diag("status: page_poison %s, poison_val %#x, free_page_reporting %s",
             st.get("page_poison"), st.get("poison_val", 0), st.get("free_page_reporting"))
    ctx.require(st.get("page_poison") is True, "PAGE_POISON negotiated")
    ctx.expect(st.get("poison_val") == 0xaaaaaaaa, "poison_val is PAGE_POISON (0xaa) in "
               "each byte (%#x)" % st.get("poison_val", 0))
    drop, secs, _, _, _ = _free_and_measure(ctx, 256)
    st = ctx.status()
    ctx.diag("daemon: %d reports, %s released, %s kept", st["stats"]["reports"],
             mib(st["stats"]["reported_bytes"]), mib(st["stats"]["reported_kept_bytes"]))
    ctx.expect(st["stats"]["reported_kept_bytes"] > 0 and st["stats"]["reported_bytes"] == 0,
               "reports kept, none released")
    res = g.sh("memhog 400 0", timeout=120)
    ctx.expect(res.rc == 0, "the guest reuses its reported memory (%s)" % res.out.strip())
    _expect_timed_round(ctx)
    bad = [l for l in g.dmesg().splitlines() if "pagealloc" in l]
    ctx.expect(not bad, "no page poison error in dmesg (%s)" % bad[:2])
    ctx.check_healthy()


@scenario("super-zero-ours", "zero-ours")
def zero_ours(ctx):
    """a guest with init_on_free=1 on tballoon serve: PAGE_POISON with poison_val 0, reported pages released (holes read as the zeros the guest expects)"""
    g = ctx.guest
    st = ctx.require_timed_device()
    ctx.require(st.get("page_poison") is True and st.get("poison_val") == 0,
                "PAGE_POISON negotiated with poison_val 0 (%s, %#x)"
                % (st.get("page_poison"), st.get("poison_val", 0)))
    _expect_reported(ctx)
    res = g.sh("memhog 400 0", timeout=120)
    ctx.expect(res.rc == 0, "the guest reuses its reported memory (%s)" % res.out.strip())
    ctx.check_healthy()


@scenario("super-poison-refused", "poison-stock-off", needs=("module",))
def poison_refused(ctx):
    """a guest with page_poison=1 on virtio-balloon-pci,page-poison=off: the driver does not use free page reporting (the device would not keep the poison), nothing freed leaves the host"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded", "virtio_tballoon loaded (%s)" % g.driver_status)
    _require_poisoning(ctx)
    said = [l for l in g.dmesg().splitlines() if "does not offer PAGE_POISON" in l]
    ctx.expect(said, "the driver says why it does not report")
    feats = g.sh("cat /sys/bus/virtio/drivers/virtio_tballoon/virtio*/features").out.strip()
    ctx.diag("negotiated features: %s", feats)
    ctx.expect(len(feats) > 5 and feats[5] == "0", "REPORTING (bit 5) not negotiated")
    drop, secs, _, _, _ = _free_and_measure(ctx, 256, within_s=5.0)
    ctx.expect(drop < 64 * MIB, "the host released nothing the guest freed (%s)" % mib(drop))
    ctx.check_healthy()


@scenario("super-dead-reporting", "super-dead")
def dead_reporting(ctx):
    """the device keeps a free page report: the driver waits 15 s, then treats the device as broken; the guest answers throughout, rmmod completes, a new driver reports again"""
    g = ctx.guest
    ctx.require_timed_device()
    _settle(g)
    _withhold(g, True)
    try:
        res = g.sh("memhog 256 0", timeout=120)
        ctx.require(res.rc == 0, "memhog 256 MiB (%s)" % res.out.strip())
        t0 = time.monotonic()
        said, slow = [], 0.0
        while not said and time.monotonic() - t0 < 60:
            s0 = time.monotonic()
            said = [l for l in g.dmesg().splitlines() if "kept a free page report" in l]
            slow = max(slow, time.monotonic() - s0)
            time.sleep(0.5)
        ctx.diag("the driver gave up on the report after %.1f s (slowest agent answer "
                 "meanwhile %.2f s): %s", time.monotonic() - t0,
                 slow, said[0].strip() if said else "nothing")
        ctx.expect(said, "the driver says the device kept the report, within 60 s")
        ctx.expect(slow < 5.0, "the guest answered throughout (slowest %.2f s)" % slow)
        res = g.sh("memhog 300 0", timeout=120)
        ctx.expect(res.rc == 0, "the guest allocates its memory afterwards (%s)"
                   % res.out.strip())
        t0 = time.monotonic()
        res = g.sh("rmmod virtio_tballoon", timeout=60)
        ctx.diag("rmmod with the device broken: exit %d in %.2f s", res.rc,
                 time.monotonic() - t0)
        ctx.expect(res.rc == 0, "rmmod completes (%s)" % res.err.strip())
    finally:
        _withhold(g, False)
    _insmod_again(ctx, "the reset device works with a new driver")
    ctx.expect(ctx.status().get("free_page_reporting") is True,
               "the new driver negotiated reporting again")
    _empty(ctx)
    _expect_reported(ctx)
    ctx.check_healthy()
