# SPDX-License-Identifier: GPL-2.0
"""Walking-skeleton scenarios: boot, inflate, deflate, deadline too short."""

from . import MIB, PAGE, group, mib, scenario

# 1 GiB guest, our driver, our backend; boot/inflate/deflate share it.
group("main", driver="tballoon", device="tballoon", mem="1G")
# A fresh 1 GiB guest for the deadline scenario, with one allocating CPU
# (the module's default is two; the driver group checks the stop rules so).
group("deadline", driver="tballoon", device="tballoon", mem="1G",
      extra_append="virtio_tballoon.threads=1")

# Guest RAM in 2 MiB transparent huge pages on the host (a huge=always tmpfs).
group("thp", driver="tballoon", device="tballoon", mem="1G", ram="thp")

INFLATE_BYTES = 512 * MIB
KB = 1024


@scenario("boot", "main", needs=())
def boot(ctx):
    """guest boots, agent answers, virtio_tballoon binds, backend sees DRIVER_OK"""
    g = ctx.guest
    up = g.sh("cat /proc/uptime").out.split()
    ctx.diag("boot: %.2f s to agent ready (guest uptime %s s), initramfs %s",
             g.boot_s, up[0] if up else "?", g.initramfs.digest)
    mods = g.sh("cat /proc/modules").out
    for m in ("virtio_pci", "virtio_ring", "virtio"):
        if m not in g.initramfs.builtin:
            ctx.expect(("%s " % m) in mods, "module %s loaded" % m)
    absent = []
    if not g.initramfs.has_module:
        absent.append("virtio_tballoon.ko missing: build it with `make module`")
    if g.device != "tballoon":
        absent.append("host tool missing (%s): booted without the balloon device"
                      % g.env.tool)
    ctx.require(not absent, "; ".join(absent))
    if g.env.which == "debug":
        # The checkers the debug lane exists for are really on.
        res = g.sh("test -e /proc/lockdep && dmesg | grep -c 'KernelAddressSanitizer initialized'"
                   " ; cat /proc/sys/kernel/hung_task_timeout_secs")
        ctx.diag("debug kernel: lockdep %s, KASAN lines %s, hung_task_timeout_secs %s",
                 "on" if res.rc == 0 else "off", *(res.out.split() + ["?", "?"])[:2])
        ctx.expect(res.rc == 0 and res.out.split()[:1] == ["1"],
                   "debug kernel: lockdep and KASAN on (%r)" % res.out)
    ctx.require(g.driver_status == "loaded",
                "virtio_tballoon.ko did not load (%s); see %s" % (g.driver_status,
                                                                  g.console_log))
    # The balloon device (ID 5) is bound to our driver.
    res = g.sh("for d in /sys/bus/virtio/devices/*; do "
               "echo $(cat $d/device) $(basename $(readlink $d/driver) 2>/dev/null); done")
    ctx.diag("virtio devices: %s", res.out.strip().replace("\n", "; "))
    ctx.expect("0x0005 virtio_tballoon" in res.out,
               "balloon device 0x0005 bound to virtio_tballoon")
    if g.device == "tballoon":
        st = ctx.status()
        ctx.diag("backend: connected %s, driver_ok %s, timed %s, guest_ram %s, resident %s",
                 st.get("connected"), st.get("driver_ok"), st.get("timed"),
                 mib(st.get("guest_ram_bytes", 0)), mib(st.get("resident_bytes", 0)))
        ctx.expect(st.get("connected") is True, "backend: QEMU connected")
        ctx.expect(st.get("driver_ok") is True, "backend: driver_ok")
        ctx.expect(st.get("timed") is True, "backend: TIMED negotiated")
        ram = int(g.mem[:-1]) << (30 if g.mem.endswith("G") else 20)
        ctx.expect(st.get("guest_ram_bytes") == ram,
                   "backend: guest_ram_bytes == %s (got %s)" % (g.mem, st.get("guest_ram_bytes")))
    ctx.check_healthy()


@scenario("inflate-512M", "main")
def inflate(ctx):
    """inflate by 512 MiB (deadline 120 s): done, actual == target, host RSS drops"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    mi0 = g.meminfo()
    ctx.shared["pre_inflate_meminfo"] = mi0
    target = st0["actual_pages"] + INFLATE_BYTES // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "120s", timeout=300)
    ctx.shared["inflate_wall_s"] = wall
    cmd = st.get("command", {})
    ctx.expect(rc == 0, "exit code 0 (got %d)" % rc)
    ctx.expect(cmd.get("state") == "done", "state done (got %s)" % cmd.get("state"))
    ctx.expect(st.get("actual_pages") == target,
               "actual_pages == target %d (got %s)" % (target, st.get("actual_pages")))
    ctx.expect(cmd.get("target_pages") == target,
               "command.target_pages == %d (got %s)" % (target, cmd.get("target_pages")))
    st1 = ctx.status()
    drop = st0["resident_bytes"] - st1["resident_bytes"]
    ctx.diag("host resident %s -> %s (dropped %s), released %s",
             mib(st0["resident_bytes"]), mib(st1["resident_bytes"]), mib(drop),
             mib(st1.get("released_bytes", 0)))
    ctx.expect(drop >= 0.95 * INFLATE_BYTES,
               "resident_bytes dropped by >= 95%% of 512 MiB (dropped %s)" % mib(drop))
    if cmd.get("elapsed_ms"):
        ctx.diag("inflate rate: %.1f MiB/s (guest clock)",
                 (INFLATE_BYTES / MIB) / (cmd["elapsed_ms"] / 1000.0))
    mi1 = g.meminfo()
    total_drop = (mi0["MemTotal"] - mi1["MemTotal"]) * KB
    ctx.diag("guest MemTotal %d -> %d kB, MemAvailable %d -> %d kB",
             mi0["MemTotal"], mi1["MemTotal"], mi0["MemAvailable"], mi1["MemAvailable"])
    ctx.expect(abs(total_drop - INFLATE_BYTES) <= 4 * MIB,
               "guest MemTotal dropped by 512 MiB (dropped %s)" % mib(total_drop))
    ctx.check_healthy()


@scenario("deflate-0", "main")
def deflate(ctx):
    """deflate back to 0: done, MemTotal back, MemAvailable recovers"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    mi0 = ctx.shared.get("pre_inflate_meminfo")
    if st0["actual_pages"] == 0:
        ctx.diag("balloon empty: inflating 512 MiB first")
        mi0 = g.meminfo()
        rc, st, _ = ctx.balloon("inflate", INFLATE_BYTES // PAGE, "120s", timeout=300)
        ctx.require(rc == 0, "setup inflate failed (exit %d)" % rc)
    elif mi0 is None:
        # Balloon already inflated by someone else: expect the pages back.
        mi0 = g.meminfo()
        mi0["MemTotal"] += st0["actual_pages"] * PAGE // KB
        mi0["MemAvailable"] += st0["actual_pages"] * PAGE // KB
    rc, st, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    cmd = st.get("command", {})
    ctx.expect(rc == 0, "exit code 0 (got %d)" % rc)
    ctx.expect(cmd.get("state") == "done", "state done (got %s)" % cmd.get("state"))
    ctx.expect(st.get("actual_pages") == 0, "actual_pages == 0 (got %s)"
               % st.get("actual_pages"))
    mi1 = g.meminfo()
    # Since 6.7 the per-CPU free lists grow with the free rate (6.12 keeps
    # ~40 MiB of the deflated pages there: free, but outside MemFree and
    # MemAvailable, until an idle CPU's vmstat decay drains them). Count them.
    pcp = sum(int(w[1]) for w in (ln.split() for ln in
                                  g.sh("cat /proc/zoneinfo").out.splitlines())
              if len(w) == 2 and w[0] == "count:")
    if pcp * PAGE // KB > 4 * 1024:
        ctx.diag("per-CPU free lists hold %d kB: counted as available", pcp * PAGE // KB)
        mi1["MemAvailable"] += pcp * PAGE // KB
    ctx.diag("guest MemTotal %d -> %d kB (pre-inflate %d), MemAvailable %d kB "
             "(pre-inflate %d)", mi0["MemTotal"] - st0["actual_pages"] * PAGE // KB,
             mi1["MemTotal"], mi0["MemTotal"], mi1["MemAvailable"], mi0["MemAvailable"])
    ctx.expect(abs(mi1["MemTotal"] - mi0["MemTotal"]) <= 1024,
               "MemTotal back to pre-inflate %d kB (got %d)" % (mi0["MemTotal"],
                                                                mi1["MemTotal"]))
    ctx.expect(mi1["MemAvailable"] >= mi0["MemAvailable"] - 32 * 1024,
               "MemAvailable recovered to within 32 MiB of %d kB (got %d)"
               % (mi0["MemAvailable"], mi1["MemAvailable"]))
    st1 = ctx.status()
    ctx.diag("host resident after deflate %s (pages come back when the guest touches them)",
             mib(st1["resident_bytes"]))
    ctx.check_healthy()


@scenario("inflate-threads", "main")
def inflate_threads(ctx):
    """256 MiB inflate with threads=1 (worker only) and threads=2 (a helper CPU): both done"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    param = "/sys/module/virtio_tballoon/parameters/threads"
    had = g.sh("cat %s" % param).out.strip()
    ctx.require(had.isdigit(), "module parameter threads readable (got %r)" % had)
    base = st0["actual_pages"]
    try:
        for n in (1, 2):
            ctx.expect(g.sh("echo %d > %s" % (n, param)).rc == 0, "threads=%d set" % n)
            r0 = ctx.status().get("released_bytes", 0)
            target = base + 256 * MIB // PAGE
            rc, st, wall = ctx.balloon("inflate", target, "120s", timeout=300)
            cmd = st.get("command", {})
            ctx.expect(rc == 0 and cmd.get("state") == "done",
                       "threads=%d: inflate done (exit %d, state %s)" % (n, rc, cmd.get("state")))
            ctx.expect(st.get("actual_pages") == target,
                       "threads=%d: actual_pages == %d (got %s)"
                       % (n, target, st.get("actual_pages")))
            # The free pages are mostly host holes after deflate-0: count
            # what the backend punched, not the resident drop.
            rel = ctx.status().get("released_bytes", 0) - r0
            ctx.diag("threads=%d: 256 MiB in %s ms (guest clock), backend released %s",
                     n, cmd.get("elapsed_ms"), mib(rel))
            # (a page migrated meanwhile would add 4 KiB)
            ctx.expect(256 * MIB <= rel <= 260 * MIB,
                       "threads=%d: backend released 256 MiB (%s)" % (n, mib(rel)))
            rc, st, _ = ctx.balloon("deflate", base, "120s", timeout=300)
            ctx.expect(rc == 0 and st.get("actual_pages") == base,
                       "threads=%d: deflate back to %d (exit %d, actual %s)"
                       % (n, base, rc, st.get("actual_pages")))
    finally:
        g.sh("echo %s > %s" % (had, param))
    ctx.check_healthy()


def _qemu_faults(g):
    """Page faults QEMU's process took so far (minor + major)."""
    with open("/proc/%d/stat" % g.qemu.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[9])


@scenario("inflate-skip-zero", "main", kernels=("skipzero", "skipzero-6.12"))
def inflate_skip_zero(ctx):
    """kernel with driver/patches/: an inflate over host holes faults almost none of them in with skip_zero=1, most of them with skip_zero=0"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    ctx.require("blocks may skip init_on_alloc" in g.dmesg(),
                "the driver found the kernel's __GFP_SKIP_ZERO (probe message)")
    param = "/sys/module/virtio_tballoon/parameters/skip_zero"
    had = g.sh("cat %s" % param).out.strip()
    base = st0["actual_pages"]
    npages = 384 * MIB // PAGE
    faults = {}
    try:
        for skip in ("Y", "N"):
            ctx.expect(g.sh("echo %s > %s" % (skip, param)).rc == 0, "skip_zero=%s set" % skip)
            # inflate and deflate once: the guest's free pages are host holes
            rc1, _, _ = ctx.balloon("inflate", base + npages, "120s", timeout=300)
            rc2, _, _ = ctx.balloon("deflate", base, "120s", timeout=300)
            ctx.require(rc1 == 0 and rc2 == 0, "skip_zero=%s: first inflate and deflate "
                        "done (exit %d, %d)" % (skip, rc1, rc2))
            f0 = _qemu_faults(g)
            rc, st, wall = ctx.balloon("inflate", base + npages, "120s", timeout=300)
            faults[skip] = _qemu_faults(g) - f0
            ctx.expect(rc == 0 and st.get("actual_pages") == base + npages,
                       "skip_zero=%s: inflate over host holes done (exit %d)" % (skip, rc))
            ctx.diag("skip_zero=%s: %s over host holes in %.2f s, %d host page faults in "
                     "QEMU (%d pages)", skip, mib(npages * PAGE), wall, faults[skip], npages)
            rc, _, _ = ctx.balloon("deflate", base, "120s", timeout=300)
            ctx.expect(rc == 0, "skip_zero=%s: deflate back (exit %d)" % (skip, rc))
    finally:
        g.sh("echo %s > %s" % (had or "Y", param))
    ctx.expect(faults.get("Y", npages) < npages // 10,
               "skip_zero=Y: fewer than a tenth of the pages faulted in (%s)" % faults.get("Y"))
    ctx.expect(faults.get("N", 0) > npages // 2,
               "skip_zero=N: the zeroing faulted in more than half (%s)" % faults.get("N"))
    # the memory the deflates gave back is the guest's again
    res = g.sh("memhog 256", timeout=120)
    ctx.expect(res.rc == 0 and "touched 256 MiB" in res.out,
               "the guest uses 256 MiB of the returned memory (%s)" % res.out.strip())
    ctx.check_healthy()


def _ram_pmd_mapped(g):
    """Bytes of the guest-RAM file QEMU maps with huge (PMD) mappings."""
    total, inside = 0, False
    with open("/proc/%d/smaps" % g.qemu.pid) as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                inside = "/tb-ram/mem" in line
            elif inside and first in ("ShmemPmdMapped:", "FilePmdMapped:"):
                total += int(line.split()[1]) * 1024
    return total


@scenario("inflate-thp", "thp")
def inflate_thp(ctx):
    """guest RAM in host huge pages: a 384 MiB inflate releases whole huge pages and splits none, an inflate over host holes faults them back in by the huge page"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    base = st0["actual_pages"]
    npages = 384 * MIB // PAGE
    pmd0 = _ram_pmd_mapped(g)
    ram = g.host_memory()["memfd_size"]
    ctx.diag("guest RAM %s, %s of it in host huge pages", mib(ram), mib(pmd0))
    ctx.require(pmd0 >= ram // 2, "the host backs most guest RAM with huge pages "
                "(%s of %s; does the host kernel have shmem THP?)" % (mib(pmd0), mib(ram)))
    host0 = g.host_memory()["memfd_allocated"]
    rel0 = ctx.status().get("released_bytes", 0)
    rc, st, wall = ctx.balloon("inflate", base + npages, "120s", timeout=300)
    ctx.require(rc == 0 and st.get("actual_pages") == base + npages,
                "inflate 384 MiB done (exit %d, actual %s)" % (rc, st.get("actual_pages")))
    rel = ctx.status().get("released_bytes", 0) - rel0
    freed = host0 - g.host_memory()["memfd_allocated"]
    pmd1 = _ram_pmd_mapped(g)
    ctx.diag("384 MiB in %.2f s: backend released %s, the RAM file lost %s, huge "
             "mappings %s -> %s", wall, mib(rel), mib(freed), mib(pmd0), mib(pmd1))
    ctx.expect(freed >= 384 * MIB, "the host freed the 384 MiB (%s)" % mib(freed))
    # a punch that is not whole huge pages splits them: the rest of RAM
    # would lose its huge mappings too
    ctx.expect(pmd0 - pmd1 <= 384 * MIB + 8 * MIB,
               "no huge page split beyond the balloon (huge mappings lost %s)"
               % mib(pmd0 - pmd1))
    rc, _, _ = ctx.balloon("deflate", base, "120s", timeout=300)
    ctx.require(rc == 0, "deflate back (exit %d)" % rc)
    # the guest's free pages are now host holes: its zeroing faults them in
    f0 = _qemu_faults(g)
    rc, st, wall = ctx.balloon("inflate", base + npages, "120s", timeout=300)
    faults = _qemu_faults(g) - f0
    ctx.expect(rc == 0 and st.get("actual_pages") == base + npages,
               "inflate over host holes done (exit %d)" % rc)
    ctx.diag("384 MiB over host holes in %.2f s, %d host page faults in QEMU (%d pages)",
             wall, faults, npages)
    ctx.expect(faults < npages // 64,
               "the holes came back by the huge page: fewer than 1/64 of the pages "
               "faulted (%d)" % faults)
    rc, _, _ = ctx.balloon("deflate", base, "120s", timeout=300)
    ctx.expect(rc == 0, "deflate back (exit %d)" % rc)
    res = g.sh("memhog 256", timeout=120)
    ctx.expect(res.rc == 0 and "touched 256 MiB" in res.out,
               "the guest uses 256 MiB of the returned memory (%s)" % res.out.strip())
    ctx.check_healthy()


@scenario("deadline-too-short", "deadline")
def deadline_short(ctx):
    """900 MiB target, 20 ms deadline: state deadline, actual < target, on time"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    thr = g.sh("cat /sys/module/virtio_tballoon/parameters/threads").out.strip()
    ctx.expect(thr == "1", "deadline group: module loaded with threads=1 (got %r)" % thr)
    target = 900 * MIB // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "20ms", timeout=120)
    cmd = st.get("command", {})
    ctx.expect(rc == 3, "exit code 3 (deadline) (got %d)" % rc)
    ctx.expect(cmd.get("state") == "deadline", "state deadline (got %s)" % cmd.get("state"))
    ctx.expect(cmd.get("deadline_ms") == 20, "deadline_ms 20 (got %s)" % cmd.get("deadline_ms"))
    actual = st.get("actual_pages", -1)
    ctx.expect(0 <= actual < target, "actual %d < target %d" % (actual, target))
    ctx.diag("moved %d pages (%s) before the deadline", actual - st0["actual_pages"],
             mib((actual - st0["actual_pages"]) * PAGE))
    elapsed = cmd.get("elapsed_ms")
    ctx.expect(elapsed is not None and elapsed <= 20 + 100,
               "final report elapsed_ms <= deadline_ms + 100 (got %s)" % elapsed)
    mi = g.meminfo()
    ctx.diag("guest MemAvailable %d kB after the deadline", mi.get("MemAvailable", -1))
    ctx.check_healthy()
    # The guest can still give the pages back.
    rc, st, _ = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.expect(rc == 0 and st.get("actual_pages") == 0,
               "deflate to 0 afterwards: exit %d, actual %s" % (rc, st.get("actual_pages")))


