#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""tballoon benchmark: four ways to take 1 GiB from a 1.5 GiB guest, side by side.

    bench/run.py [--reps N] [--only a,b,c,d] [--out DIR] [--sample-ms MS] [--keep]

Same machine, same accelerator (TCG), same guest kernel, same guest size,
one run (see bench/README.md):
  (a) virtio_tballoon + tballoon serve       tballoon inflate/deflate --wait --json
  (b) Linux virtio_balloon + virtio-balloon-pci   QMP balloon, query-balloon polled
  (c) Linux virtio_mem + virtio-mem-pci      qom-set requested-size, qom-get size polled
  (d) the limit: tbmem in the guest          populate 1 GiB of 4 KiB pages, unmap it
      (d') the same with one write per page; (d") tbkalloc.ko: balloon_page_alloc()
      1 GiB in the guest kernel and free it; (d"') the same on every guest vCPU;
      (d"") 2 MiB blocks as the driver allocates them, on every vCPU, without
      the zeroing on a kernel with driver/patches/
Prints a table with min/median/max and ratios; writes out/bench/results.json
(raw figures) and out/bench/balloon.png (size over time, gnuplot).
"""

import argparse
import hashlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_OUT = REPO / "out" / "bench"
# Run directories of the guests (socket paths must stay short).
os.environ.setdefault("TB_OUT", str(DEFAULT_OUT / "runs"))
sys.path.insert(0, str(BENCH))

import bguest  # noqa: E402
import tbprofile  # noqa: E402
from benchenv import proc_cpu  # noqa: E402
import report  # noqa: E402
from tbtest import env as tbenv  # noqa: E402
from tbtest import machine  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096
GUEST_RAM = "1536M"         # every guest: 1.5 GiB of RAM ...
MOVE = GIB                  # ... of which 1 GiB is taken and given back
OVERSHOOT_DEADLINE = "100ms"
# the scale point (--scale): a bigger guest, a bigger move, (a) (b) (c) only
SCALE_RAM = "4096M"
SCALE_MOVE = 3 * GIB
# the workload-cost runs: tbwork (bench/guest) runs alone this long before
# the inflate and after it (its baseline rate), the first WORK_WARM s and
# WORK_SETTLE s after the move not counted in the baseline
WORK_PRE = 2.0
WORK_POST = 1.5
WORK_WARM = 0.5
WORK_SETTLE = 0.3
WORK_SIZE = "64M"

MECHANISMS = {
    "a": "tballoon",
    "z": "tballoon-zero",
    "b": "virtio-balloon",
    "c": "virtio-mem",
    "d": "limit",
}
LABELS = {
    "tballoon": "(a) virtio_tballoon + tballoon serve",
    "tballoon-zero": "(a0) the same, skip_zero=0",
    "virtio-balloon": "(b) virtio_balloon + QEMU virtio-balloon-pci",
    "virtio-mem": "(c) virtio_mem + QEMU virtio-mem-pci",
    "limit": "(d) limit: user space populate + munmap",
}


def say(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def poll_until(read, want, interval, timeout):
    """Call READ() every INTERVAL s until it returns WANT.

    Returns (seconds to the first sample equal to WANT or None, trace) where
    trace is [(seconds, value)], seconds counted from the call.
    """
    t0 = time.monotonic()
    trace = []
    k = 0
    while True:
        v = read()
        t = time.monotonic() - t0
        trace.append((t, v))
        if v == want:
            return t, trace
        if t > timeout:
            return None, trace
        k += 1
        nxt = t0 + k * interval
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            k = int((time.monotonic() - t0) / interval)


def refill(g, log):
    """Guest touches 1 GiB and frees it: every page host-resident again.

    A balloon deflate gives the guest holes: without this, the next run would
    start from a smaller host footprint and pay host page faults inside the
    timed section (the guest zeroes each page it allocates, init_on_alloc=1).
    """
    secs = g.refill(MOVE)
    log("refill (guest touched %d MiB) %.1f s" % (MOVE // MIB, secs))


def meminfo_total(g):
    return g.meminfo().get("MemTotal", 0) * 1024


def mem_auto_init(g):
    """The guest kernel's "mem auto-init:" boot line (init_on_alloc/free)."""
    res = g.sh("dmesg | grep -m1 'mem auto-init'")
    line = res.out.strip()
    return line.split("mem auto-init:", 1)[-1].strip() if line else None


def parse_tbwork(out):
    """([(seconds, units)], {mark: (seconds, units)}) from tbwork's output."""
    samples, marks = [], {}
    for line in out.splitlines():
        w = line.split()
        if len(w) == 3 and w[0] in ("sample", "total"):
            samples.append((int(w[1]) / 1e6, int(w[2])))
        elif len(w) == 4 and w[0] == "mark":
            marks[int(w[1])] = (int(w[2]) / 1e6, int(w[3]))
    if len(samples) < 10 or len(marks) != 2:
        raise BenchError("tbwork printed too little: %r" % out[-300:])
    return samples, marks


def _rate(samples, t0, t1):
    """Units per second over the samples from T0 to T1."""
    inside = [(t, u) for t, u in samples if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def work_lost(samples, marks, moved):
    """What the guest's workload lost during one move.

    Marks 1 and 2 are the samples at which the workload saw the move begin
    and end. Its baseline is its rate alone: before the move (from WORK_WARM)
    and after it (from WORK_SETTLE after the end); the loss is what that rate
    would have done between the marks less what was done, in seconds of the
    workload's work.
    """
    (m1, u1), (m2, u2) = marks[1], marks[2]
    t_end = samples[-1][0]
    pre = _rate(samples, WORK_WARM, m1)
    post = _rate(samples, m2 + WORK_SETTLE, t_end)
    rates = [r for r in (pre, post) if r]
    if not rates:
        raise BenchError("tbwork: no baseline around the move")
    base = sum(rates) / len(rates)
    lost_s = (base * (m2 - m1) - (u2 - u1)) / base
    return {"rate_before": pre, "rate_after": post, "window_s": m2 - m1,
            "lost_s": lost_s, "lost_share": lost_s / (m2 - m1) if m2 > m1 else None,
            "lost_s_per_gib": lost_s * GIB / moved if moved else None}


def run_workload(g, move, log):
    """tbwork in the guest alone, then during MOVE(), then alone again."""
    g.sh("rm -f /tmp/tbwork.stop* /tmp/tbwork.out /tmp/tbwork.rc; "
         "( tbwork -s %s /tmp/tbwork.stop > /tmp/tbwork.out 2>&1; echo $? > /tmp/tbwork.rc ) "
         "</dev/null >/dev/null 2>&1 &" % WORK_SIZE)
    time.sleep(WORK_PRE)
    g.sh("touch /tmp/tbwork.stop.1")
    x = move()
    g.sh("touch /tmp/tbwork.stop.2")
    time.sleep(WORK_POST)
    g.sh("touch /tmp/tbwork.stop")
    for _ in range(100):
        if g.sh("test -e /tmp/tbwork.rc").rc == 0:
            break
        time.sleep(0.1)
    res = g.sh("cat /tmp/tbwork.rc /tmp/tbwork.out", timeout=60)
    if res.rc != 0 or not res.out.startswith("0"):
        raise BenchError("tbwork failed: %s %s" % (res.out[-300:], res.err[-300:]))
    x.pop("trace", None)
    moved = x.get("pages_moved", 0) * PAGE if "pages_moved" in x else MOVE
    samples, marks = parse_tbwork(res.out)
    w = x["workload"] = work_lost(samples, marks, moved)
    log("  workload: %.2f s of its work lost in %.2f s (inflate %.2f s), "
        "rates alone %s / %s pages/s" % (w["lost_s"], w["window_s"], x["seconds"],
                                         "%.0f" % w["rate_before"] if w["rate_before"] else "-",
                                         "%.0f" % w["rate_after"] if w["rate_after"] else "-"))
    return x


def load_average():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


class ControlListener:
    """A second client of tballoon serve's control socket: records its events."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        greeting = self.file.readline()
        if b"QMP" not in greeting:
            raise BenchError("control socket: no greeting (%r)" % greeting[:80])
        # as a QMP client does; a client that never asks anything is
        # dropped after 30 s
        self.sock.sendall(b'{"execute":"qmp_capabilities"}\n')
        self.events = []        # (receive time.time(), event dict)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        try:
            for line in self.file:
                try:
                    obj = json.loads(line.decode())
                except ValueError:
                    continue
                if "event" in obj:
                    with self.lock:
                        self.events.append((time.time(), obj))
        except (OSError, ValueError):
            pass

    def take(self):
        with self.lock:
            evs, self.events = self.events, []
        return evs

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def event_time(ev, fallback):
    ts = ev.get("timestamp") or {}
    if "seconds" in ts:
        return ts["seconds"] + ts.get("microseconds", 0) / 1e6
    return fallback


# ---------------------------------------------------------------------------
# (a) tballoon
# ---------------------------------------------------------------------------

def tballoon_cmd(g, listener, op, to, deadline, extra=()):
    """Run `tballoon OP --to TO --deadline D --wait --json`; a measured run."""
    listener.take()
    hm0 = g.host_memory()
    st0 = g.status()
    cpu0 = (proc_cpu(g.backend.pid), proc_cpu(g.qemu.pid))
    t_real = time.time()
    t0 = time.monotonic()
    res = g.tool(op, "--to", to, "--deadline", deadline, "--wait", "--json", *extra,
                 timeout=600)
    wall = time.monotonic() - t0
    cpu1 = (proc_cpu(g.backend.pid), proc_cpu(g.qemu.pid))
    time.sleep(0.05)            # let the last events arrive
    events = listener.take()
    st = None
    for line in reversed(res.stdout.splitlines()):
        if line.strip().startswith("{"):
            st = json.loads(line)
            break
    if st is None:
        raise BenchError("tballoon %s printed no JSON (exit %d): %s"
                         % (op, res.returncode, res.stderr.strip()))
    cmd = st["command"]
    hm1 = g.host_memory()
    trace = [(0.0, st0["actual_pages"] * PAGE)]
    progress = 0
    for recv, ev in events:
        data = ev.get("data") or {}
        if (data.get("command") or {}).get("cmd_id") != cmd["cmd_id"]:
            continue
        if ev["event"] == "BALLOON_PROGRESS":
            progress += 1
        trace.append((event_time(ev, recv) - t_real, data.get("actual_pages", 0) * PAGE))
    trace.append((wall, st["actual_pages"] * PAGE))
    host_s = (cmd.get("host_elapsed_ms") or 0) / 1000.0
    return {
        "op": op, "to": to, "deadline": deadline, "exit": res.returncode,
        "state": cmd.get("state"), "reason": cmd.get("reason"),
        "seconds": wall,
        "wall_s": wall,
        "backend_cpu_s": cpu1[0] - cpu0[0],
        "qemu_cpu_s": cpu1[1] - cpu0[1],
        "guest_elapsed_ms": cmd.get("elapsed_ms"),
        "host_elapsed_ms": cmd.get("host_elapsed_ms"),
        "deadline_ms": cmd.get("deadline_ms"),
        "start_pages": cmd.get("start_pages"),
        "actual_pages": st.get("actual_pages"),
        "pages_moved": abs(st.get("actual_pages", 0) - (cmd.get("start_pages") or 0)),
        "reports": cmd.get("reports"),
        "progress_events": progress,
        "reports_per_s": (cmd.get("reports") or 0) / host_s if host_s else None,
        "progress_events_per_s": progress / host_s if host_s else None,
        "backend_resident_before": st0.get("resident_bytes"),
        "backend_resident_after": st.get("resident_bytes"),
        "host_before": hm0["memfd_allocated"], "host_after": hm1["memfd_allocated"],
        "rss_shmem_before": hm0["rss_shmem"], "rss_shmem_after": hm1["rss_shmem"],
        "released": hm0["memfd_allocated"] - hm1["memfd_allocated"],
        "trace": trace,
    }


def host_fields(hm0, hm1):
    return {"host_before": hm0["memfd_allocated"], "host_after": hm1["memfd_allocated"],
            "rss_shmem_before": hm0["rss_shmem"], "rss_shmem_after": hm1["rss_shmem"],
            "released": hm0["memfd_allocated"] - hm1["memfd_allocated"]}


class Mechanism:
    """One way of taking memory from a guest: its guest, setup and one round.

    bench/run.py boots every mechanism's guest first, then runs the rounds
    interleaved (round r: each mechanism once, the order rotated), so slow
    drifts of the machine's load hit all four alike.
    """

    name = None

    def __init__(self, args, res):
        self.args = args
        self.res = res
        self.g = None

    def guest(self):
        raise NotImplementedError

    def setup(self):
        pass

    def round(self, r):
        raise NotImplementedError

    def finish(self):
        pass

    def close(self):
        pass

    def keep(self, inf, dfl):
        self.res["inflate"].append(inf)
        self.res["deflate"].append(dfl)

    def inflate(self, extra=()):
        raise NotImplementedError

    def deflate(self):
        raise NotImplementedError

    def holes(self, r):
        """Inflate straight after a deflate: the free pages are host holes."""
        inf = self.inflate()
        dfl = self.deflate()
        inf.pop("trace", None)
        self.res.setdefault("holes", []).append(inf)
        say("(%s) round %d: inflate after a deflate %.2f s (released %d MiB), deflate %.2f s"
            % (report.SHORT[self.name], r + 1, inf["seconds"], inf["released"] // MIB,
               dfl["seconds"]))

    def workload(self, r, key="workload", extra=()):
        """The guest's workload around an inflate (refilled first)."""
        refill(self.g, say)
        say("(%s) round %d: %s" % (report.SHORT[self.name], r + 1, key))
        x = run_workload(self.g, lambda: self.inflate(extra), say)
        self.deflate()
        self.res.setdefault(key, []).append(x)

    # also measure the workload with `tballoon inflate --gentle`
    gentle_too = False

    def extras(self, r):
        """Holes and workload, after a round of the main comparison."""
        if self.args.scale_phase:
            return
        self.holes(r)
        self.workload(r)
        if self.gentle_too:
            self.workload(r, "workload_gentle", ("--gentle",))


class Tballoon(Mechanism):
    name = "tballoon"
    skip_zero = None        # the module's default
    tag = "a"
    gentle_too = True

    def guest(self):
        return bguest.BenchGuest(driver="tballoon", device="tballoon", mem=GUEST_RAM,
                                 smp=self.args.smp, keep=self.args.keep,
                                 name="bench-" + self.tag, log=say)

    def setup(self):
        g = self.g
        if g.driver_status != "loaded":
            raise BenchError("virtio_tballoon did not load (%s)" % g.driver_status)
        st = g.status()
        if not (st.get("connected") and st.get("driver_ok") and st.get("timed")):
            raise BenchError("backend not ready: %s" % st)
        self.res["guest_ram_bytes"] = st.get("guest_ram_bytes")
        threads = self.module_param("threads", self.args.tb_threads or None)
        self.res["driver_threads"] = int(threads) if threads else None
        self.res["skip_zero"] = self.module_param("skip_zero", self.skip_zero)
        self.res["mem_auto_init"] = mem_auto_init(g)
        self.listener = ControlListener(g.control)

    def module_param(self, name, value=None):
        """virtio_tballoon's parameter NAME, set to VALUE first unless None."""
        path = "/sys/module/virtio_tballoon/parameters/" + name
        if value is not None:
            out = self.g.sh("echo %d > %s" % (value, path))
            if out.rc != 0:
                raise BenchError("cannot set %s: %s" % (path, out.err[-200:]))
        out = self.g.sh("cat %s" % path)
        return out.out.strip() if out.rc == 0 else None

    def inflate(self, extra=()):
        return tballoon_cmd(self.g, self.listener, "inflate", "%dp" % (MOVE // PAGE), "60s",
                            extra)

    def deflate(self):
        return tballoon_cmd(self.g, self.listener, "deflate", "0", "60s")

    def round(self, r):
        g = self.g
        refill(g, say)
        mt0 = meminfo_total(g)
        inf = self.inflate()
        inf["memtotal_drop"] = mt0 - meminfo_total(g)
        dfl = self.deflate()
        say("(a) round %d: inflate %.2f s (guest %s ms, %s reports, released %d MiB), "
            "deflate %.2f s (guest %s ms)" % (
                r + 1, inf["seconds"], inf["guest_elapsed_ms"], inf["reports"],
                inf["released"] // MIB, dfl["seconds"], dfl["guest_elapsed_ms"]))
        for x in (inf, dfl):
            if x["exit"] != 0 or x["state"] != "done":
                raise BenchError("tballoon %s: exit %d state %s" % (
                    x["op"], x["exit"], x["state"]))
        self.keep(inf, dfl)
        if self.args.scale_phase:
            return
        # A deadline that cannot be met: how late is the final report?
        ov = tballoon_cmd(g, self.listener, "inflate", "%dp" % (MOVE // PAGE),
                          OVERSHOOT_DEADLINE)
        ov["overshoot_ms"] = (ov["guest_elapsed_ms"] - ov["deadline_ms"]
                              if ov["guest_elapsed_ms"] is not None else None)
        ov["host_overshoot_ms"] = (ov["host_elapsed_ms"] - ov["deadline_ms"]
                                   if ov["host_elapsed_ms"] is not None else None)
        say("(a) overshoot %d: exit %d state %s, elapsed %s ms for deadline %s ms "
            "(%d pages moved)" % (r + 1, ov["exit"], ov["state"], ov["guest_elapsed_ms"],
                                  ov["deadline_ms"], ov["pages_moved"]))
        ov.pop("trace")
        self.res["overshoot"].append(ov)
        back = tballoon_cmd(g, self.listener, "deflate", "0", "60s")
        if back["exit"] != 0:
            raise BenchError("deflate after the overshoot run: exit %d" % back["exit"])
        self.extras(r)

    def finish(self):
        self.res["backend_stats"] = self.g.status().get("stats")

    def close(self):
        if getattr(self, "listener", None) is not None:
            self.listener.close()


class TballoonZero(Tballoon):
    """(a) with the driver's skip_zero parameter off: its blocks are zeroed
    as init_on_alloc says. Differs from (a) only on a kernel with
    driver/patches/ (make bench-skipzero)."""

    name = "tballoon-zero"
    skip_zero = 0
    tag = "z"
    gentle_too = False


class QmpMechanism(Mechanism):
    """A QEMU device driven over QMP, its size polled every --sample-ms."""

    def setup(self):
        self.qmp = machine.Qmp(self.g.path("qmp.sock"))

    def close(self):
        if getattr(self, "qmp", None) is not None:
            self.qmp.close()

    def read(self):
        raise NotImplementedError

    def command(self, value):
        raise NotImplementedError

    def taken(self, value):
        """Bytes taken from the guest when read() says VALUE."""
        raise NotImplementedError

    def move(self, op, value):
        hm0 = self.g.host_memory()
        cpu0 = proc_cpu(self.g.qemu.pid)
        self.command(value)
        secs, trace = poll_until(self.read, value, self.args.sample_ms / 1000.0,
                                 self.args.timeout)
        cpu1 = proc_cpu(self.g.qemu.pid)
        hm1 = self.g.host_memory()
        if secs is None:
            raise BenchError("%s %s: stuck at %d MiB (want %d MiB)" % (
                self.name, op, trace[-1][1] // MIB, value // MIB))
        return dict(host_fields(hm0, hm1), op=op, seconds=secs, samples=len(trace),
                    target_bytes=value, qemu_cpu_s=cpu1 - cpu0,
                    trace=[(t, self.taken(v)) for t, v in trace])


class VirtioBalloon(QmpMechanism):
    name = "virtio-balloon"

    def guest(self):
        return bguest.BenchGuest(driver="upstream", device="stock", mem=GUEST_RAM,
                                 smp=self.args.smp, keep=self.args.keep, name="bench-b",
                                 log=say)

    def setup(self):
        if self.g.driver_status != "loaded":
            raise BenchError("virtio_balloon did not load (%s)" % self.g.driver_status)
        super().setup()
        self.ram = self.read()
        self.res["guest_ram_bytes"] = self.ram
        self.res["mem_auto_init"] = mem_auto_init(self.g)

    def inflate(self, extra=()):
        return self.move("inflate", self.ram - MOVE)

    def deflate(self):
        return self.move("deflate", self.ram)

    def read(self):
        return self.qmp.command("query-balloon")["actual"]

    def command(self, value):
        self.qmp.command("balloon", value=value)

    def taken(self, value):
        return self.ram - value

    def round(self, r):
        refill(self.g, say)
        mt0 = meminfo_total(self.g)
        inf = self.inflate()
        inf["memtotal_drop"] = mt0 - meminfo_total(self.g)
        dfl = self.deflate()
        say("(b) round %d: inflate %.2f s (released %d MiB), deflate %.2f s" % (
            r + 1, inf["seconds"], inf["released"] // MIB, dfl["seconds"]))
        self.keep(inf, dfl)
        self.extras(r)


class VirtioMem(QmpMechanism):
    name = "virtio-mem"

    def guest(self):
        base = bguest.parse_size(GUEST_RAM) - MOVE
        return bguest.BenchGuest(kind="virtio-mem", vmem_size="%dM" % (MOVE // MIB),
                                 vmem_block="2M", driver="none", device="none",
                                 mem="%dM" % (base // MIB), smp=self.args.smp,
                                 keep=self.args.keep, name="bench-c",
                                 extra_append="memhp_default_state=online_movable", log=say)

    def read(self):
        return self.qmp.command("qom-get", path="vm0", property="size")

    def command(self, value):
        self.qmp.command("qom-set", path="vm0", property="requested-size", value=value)

    def taken(self, value):
        return MOVE - value

    def inflate(self, extra=()):
        return self.move("inflate", 0)

    def deflate(self):
        return self.move("deflate", MOVE)

    def setup(self):
        super().setup()
        g = self.g
        r = g.sh("insmod /lib/modules/virtio_mem.ko", timeout=60)
        if r.rc != 0:
            raise BenchError("insmod virtio_mem: %s" % r.err.strip())
        secs, trace = poll_until(self.read, MOVE, 0.1, self.args.timeout)
        if secs is None:
            raise BenchError("virtio-mem: initial plug stuck at %d MiB" % (self.read() // MIB))
        # The guest onlines the last memory block after the device says plugged.
        total = 0
        for _ in range(100):
            total = meminfo_total(g)
            if total >= MOVE:
                break
            time.sleep(0.1)
        self.res["initial_plug_s"] = secs
        self.res["mem_auto_init"] = mem_auto_init(g)
        self.res["guest_ram_bytes"] = bguest.parse_size(GUEST_RAM)
        self.res["guest_memtotal_after_plug"] = total

    def round(self, r):
        refill(self.g, say)
        mt0 = meminfo_total(self.g)
        inf = self.inflate()
        inf["memtotal_drop"] = mt0 - meminfo_total(self.g)
        dfl = self.deflate()
        say("(c) round %d: unplug %.2f s (released %d MiB), plug %.2f s" % (
            r + 1, inf["seconds"], inf["released"] // MIB, dfl["seconds"]))
        self.keep(inf, dfl)
        self.extras(r)


def parse_tbmem(out):
    alloc, free, vals = [], [], {}
    for line in out.splitlines():
        w = line.split()
        if len(w) == 4 and w[0] == "sample":
            (alloc if w[1] == "alloc" else free).append((int(w[2]) / 1e6, int(w[3])))
        elif len(w) == 2 and w[0] in ("alloc_us", "free_us"):
            vals[w[0]] = int(w[1])
    if "alloc_us" not in vals or "free_us" not in vals:
        raise BenchError("tbmem printed no times: %r" % out[-300:])
    return vals["alloc_us"] / 1e6, vals["free_us"] / 1e6, alloc, free


def parse_tbkalloc(out):
    alloc, free, vals = [], [], {}
    for line in out.splitlines():
        w = line.split("tbkalloc:", 1)[-1].split()
        if len(w) == 4 and w[0] == "sample":
            (alloc if w[1] == "alloc" else free).append((int(w[2]) / 1e6, int(w[3]) * PAGE))
        elif len(w) == 6 and w[0] == "pages":
            vals = {"pages": int(w[1]), "alloc_us": int(w[3]), "free_us": int(w[5])}
    if not vals:
        raise BenchError("tbkalloc printed no times: %r" % out[-300:])
    return vals["alloc_us"] / 1e6, vals["free_us"] / 1e6, alloc, free, vals["pages"]


class Limit(Mechanism):
    """tbmem (user space, 4 KiB pages) and tbkalloc (kernel, balloon_page_alloc)."""

    name = "limit"
    # kernel-blocks: tbkalloc's 2 MiB blocks on every vCPU, as the driver
    # allocates an inflate (skip_zero=1: without the zeroing on a kernel
    # with driver/patches/, zeroed elsewhere)
    MODES = ("populate", "touch", "kernel", "kernel-mt", "kernel-blocks")

    def guest(self):
        return bguest.BenchGuest(driver="none", device="none", mem=GUEST_RAM,
                                 smp=self.args.smp, keep=self.args.keep, name="bench-d",
                                 log=say)

    def setup(self):
        self.res["guest_ram_bytes"] = bguest.parse_size(GUEST_RAM)
        self.res["variants"] = {m: {"inflate": [], "deflate": []} for m in self.MODES[1:]}

    def run_mode(self, mode, r):
        g = self.g
        hm0 = g.host_memory()
        if mode.startswith("kernel"):
            mark = "tbbench-mark-%d-%d-%s" % (os.getpid(), r, mode)
            nthreads = 1 if mode == "kernel" else self.args.smp
            blocks = " order=9 skip_zero=1" if mode == "kernel-blocks" else ""
            out = g.sh("echo %s > /dev/kmsg; insmod /lib/modules/tbkalloc.ko "
                       "pages=%d sample_ms=%d threads=%d%s && rmmod tbkalloc; "
                       "dmesg | sed -n '/%s/,$p' | grep tbkalloc:"
                       % (mark, MOVE // PAGE, self.args.sample_ms, nthreads, blocks, mark),
                       timeout=600)
            if blocks:
                m = re.search(r"tbkalloc: threads \d+ order (\d+) skip_zero (\d)", out.out)
                self.res["blocks_skip_zero"] = bool(m and m.group(2) == "1")
            if out.rc != 0:
                raise BenchError("tbkalloc: %s %s" % (out.out[-300:], out.err[-300:]))
            a_s, f_s, a_tr, f_tr, pages = parse_tbkalloc(out.out)
            if pages != MOVE // PAGE:
                raise BenchError("tbkalloc allocated only %d pages" % pages)
        else:
            out = g.sh("tbmem -m %s -i %d %dM" % (mode, self.args.sample_ms, MOVE // MIB),
                       timeout=600)
            if out.rc != 0:
                raise BenchError("tbmem failed (%d): %s" % (out.rc, out.out[-300:]))
            a_s, f_s, a_tr, f_tr = parse_tbmem(out.out)
        hm1 = g.host_memory()
        common = dict(host_fields(hm0, hm1), mode=mode)
        say("(d) %s round %d: alloc %.2f s, free %.2f s" % (mode, r + 1, a_s, f_s))
        return (dict(common, op="inflate", seconds=a_s, trace=a_tr),
                dict(common, op="deflate", seconds=f_s, trace=f_tr))

    def round(self, r):
        for mode in self.MODES:
            inf, dfl = self.run_mode(mode, r)
            if mode == "populate":
                self.keep(inf, dfl)
            else:
                var = self.res["variants"][mode]
                var["inflate"].append(inf)
                var["deflate"].append(dfl)


CLASSES = {"tballoon": Tballoon, "tballoon-zero": TballoonZero,
           "virtio-balloon": VirtioBalloon,
           "virtio-mem": VirtioMem, "limit": Limit}


def run_all(args, data, wanted):
    """Boot every guest, then ARGS.reps interleaved rounds."""
    mechs = []
    try:
        for name in wanted:
            res = {"label": LABELS[name], "inflate": [], "deflate": [], "overshoot": [],
                   "error": None}
            data["mechanisms"][name] = res
            m = CLASSES[name](args, res)
            say("booting the guest of %s" % LABELS[name])
            try:
                m.g = m.guest().__enter__()
                res["boot_s"] = m.g.boot_s
                m.setup()
                mechs.append(m)
            except Exception as err:      # noqa: BLE001 - reported, others go on
                fail(m, err)
        for r in range(args.reps):
            live = [m for m in mechs if m.res["error"] is None]
            if not live:
                break
            k = r % len(live)
            order = live[k:] + live[:k]
            say("round %d of %d: %s" % (r + 1, args.reps, ", ".join(m.name for m in order)))
            for m in order:
                t = time.monotonic()
                try:
                    m.round(r)
                except Exception as err:  # noqa: BLE001
                    fail(m, err)
                m.res.setdefault("round_s", []).append(round(time.monotonic() - t, 1))
        for m in mechs:
            if m.res["error"] is None:
                try:
                    m.finish()
                except Exception as err:  # noqa: BLE001
                    fail(m, err)
    finally:
        for m in mechs:
            m.close()
            if m.g is not None:
                m.g.__exit__(None, None, None)
    return all(m.res["error"] is None for m in mechs) and len(mechs) == len(wanted)


def run_scale(args, data, wanted):
    """The scale point: SCALE_MOVE of a SCALE_RAM guest, main moves only."""
    global GUEST_RAM, MOVE
    saved = GUEST_RAM, MOVE
    GUEST_RAM, MOVE = SCALE_RAM, SCALE_MOVE
    sargs = argparse.Namespace(**vars(args))
    sargs.reps = args.scale_reps
    sargs.scale_phase = True
    scale = {"guest_ram_bytes": bguest.parse_size(SCALE_RAM), "moved_bytes": SCALE_MOVE,
             "reps": args.scale_reps, "mechanisms": {}}
    data["scale"] = scale
    say("scale point: %d MiB of a %s guest" % (SCALE_MOVE // MIB, SCALE_RAM))
    try:
        return run_all(sargs, scale, wanted)
    finally:
        GUEST_RAM, MOVE = saved


def fail(m, err):
    m.res["error"] = str(err).splitlines()[0] if str(err) else repr(err)
    say("%s FAILED: %s" % (m.name, m.res["error"]))
    if not isinstance(err, (BenchError, machine.GuestError)):
        traceback.print_exc(file=sys.stderr)
    if m.g is not None:
        m.g.failed = True       # keep its run directory
        m.close()
        m.g.__exit__(None, None, None)
        m.g = None


# ---------------------------------------------------------------------------

def pin_parts(e):
    """Copy the module and the tool under test out of the tree, so a rebuild
    or a `make clean` during the run (other people work in this tree; kbuild's
    clean deletes every *.ko below the repository) cannot change them."""
    root = e.cache / "bench-parts"
    pinned = {}
    for key, src in (("TB_MODULE", e.module), ("TB_TOOL", e.tool)):
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        dst = root / digest / src.name
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.parent / (src.name + ".tmp%d" % os.getpid())
            tmp.write_bytes(data)
            os.chmod(str(tmp), 0o755)
            os.replace(str(tmp), str(dst))
        os.utime(str(dst.parent))
        pinned[key] = {"source": str(src), "copy": str(dst), "sha256": digest}
        os.environ[key] = str(dst)
    e.module = Path(os.environ["TB_MODULE"])
    e.tool = Path(os.environ["TB_TOOL"])
    old = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    keep = {Path(p["copy"]).parent for p in pinned.values()}
    for stale in old[:-8]:
        if stale not in keep:
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()
    return pinned


def meta(args, e):
    def cmd_out(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  universal_newlines=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    qemu = cmd_out(["chroot", str(e.qroot), "qemu-system-x86_64", "--version"])
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "host_kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                           if ln.startswith("model name")), None),
        "accel": "tcg",
        "guest_kernel": e.kver,
        "guest_smp": args.smp,
        "guest_ram_bytes": bguest.parse_size(GUEST_RAM),
        "moved_bytes": MOVE,
        "qemu": qemu.splitlines()[0] if qemu else None,
        "git_commit": cmd_out(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_dirty": bool(cmd_out(["git", "-C", str(REPO), "status", "--porcelain",
                                   "--untracked-files=no"])),
        "reps": args.reps,
        "sample_ms": args.sample_ms,
        "host_memory": "allocated bytes (st_blocks*512) of the guest-RAM memfds, "
                       "found through /proc/<qemu pid>/fd, summed over distinct inodes; "
                       "(a) also reports tballoon serve's resident_bytes",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per mechanism (3)")
    ap.add_argument("--only", default="a,b,c,d",
                    help="mechanisms to run (a,b,c,d; z: (a) with skip_zero=0)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (out/bench)")
    ap.add_argument("--sample-ms", type=int, default=25,
                    help="polling / sampling interval for the traces (25 ms)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="give up on one QMP-driven move after this many s (180)")
    ap.add_argument("--smp", type=int, default=2, help="guest vCPUs (2)")
    ap.add_argument("--tb-threads", type=int, default=0, metavar="N",
                    help="(a): set virtio_tballoon's threads parameter (CPUs that allocate "
                         "an inflate's blocks) in the guest; default: the module's (2)")
    ap.add_argument("--guest-append", default="", metavar="ARGS",
                    help="kernel command line for every guest of the run, e.g. "
                         "init_on_alloc=0 (Debian's kernel zeroes every allocated page)")
    ap.add_argument("--ram", choices=machine.RAM_BACKINGS, default="memfd",
                    help="how the host backs guest RAM: memfd (4 KiB pages, the default) "
                         "or thp (2 MiB transparent huge pages on a huge=always tmpfs)")
    ap.add_argument("--scale-reps", type=int, default=1, metavar="N",
                    help="rounds of the scale point: %s of a %s guest, (a) (b) (c) "
                         "(1; 0: skip it)" % ("3 GiB", SCALE_RAM))
    ap.add_argument("--keep", action="store_true", help="keep guest run directories")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the tballoon profile (bench/tbprofile.py) at the end")
    ap.add_argument("--profile-reps", type=int, default=3,
                    help="repetitions of the profile's untraced runs (3)")
    ap.add_argument("--perf", action="store_true",
                    help="profile: also perf record tballoon serve and QEMU (needs perf)")
    ap.add_argument("--replot", metavar="JSON",
                    help="only redo table and plot from an existing results.json")
    args = ap.parse_args()
    args.scale_phase = False

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        data = json.loads(Path(args.replot).read_text())
        report.summarize(data)
        print(report.table(data))
        if not args.no_plot:
            report.plot(data, out / "balloon.png", out)
        return 0

    if os.geteuid() != 0:
        print("bench/run.py: must run as root (chroot, mount namespace)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(143)))
    e = tbenv.load()
    if e.modout is not None and e.kdir.exists():
        # another guest kernel (TB_KERNEL): the module built against it,
        # before the check of what is missing counts it as missing
        say("building virtio_tballoon.ko for %s" % e.kver)
        subprocess.run(["make", "-s", "-C", str(REPO), "module", "KDIR=%s" % e.kdir,
                        "MODOUT=%s" % e.modout], check=True, stdout=subprocess.DEVNULL)
    gone = e.missing()
    if gone:
        print("bench/run.py: cannot run: " + "; ".join(gone), file=sys.stderr)
        return 1
    wanted = [MECHANISMS[k.strip()] for k in args.only.split(",") if k.strip()]

    pinned = pin_parts(e)
    bguest.COMMON_APPEND = args.guest_append
    bguest.RAM = args.ram
    data = {"meta": meta(args, e), "mechanisms": {}}
    data["meta"]["guest_append"] = args.guest_append
    data["meta"]["host_ram"] = args.ram
    data["meta"]["parts"] = pinned
    data["meta"]["load_before"] = load_average()
    t_start = time.monotonic()
    ok = run_all(args, data, wanted)
    scale_wanted = [w for w in wanted if w != "limit"]
    if args.scale_reps > 0 and scale_wanted:
        ok = run_scale(args, data, scale_wanted) and ok
    if not args.no_profile and "tballoon" in wanted:
        say("profile of tballoon (bench/tbprofile.py)")
        pargs = argparse.Namespace(out=str(out), smp=args.smp, keep=args.keep,
                                   reps=args.profile_reps, perf=args.perf)
        try:
            data["profile"] = tbprofile.profile(pargs, log=say)
        except Exception as err:  # noqa: BLE001 - the comparison stands without it
            data["profile"] = {"error": str(err).splitlines()[0] if str(err) else repr(err)}
            say("profile FAILED: %s" % data["profile"]["error"])
            traceback.print_exc(file=sys.stderr)
            ok = False
    data["meta"]["load_after"] = load_average()
    data["meta"]["total_s"] = time.monotonic() - t_start
    report.summarize(data)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    print(report.table(data))
    if data.get("profile") and "error" not in data["profile"]:
        text = tbprofile.summary(data["profile"])
        (out / "profile.txt").write_text(text + "\n")
        print()
        print(text)
    print("raw figures: %s" % (out / "results.json"))
    if not args.no_plot:
        png = report.plot(data, out / "balloon.png", out)
        if png:
            print("plot: %s" % png)
    say("total %.0f s" % data["meta"]["total_s"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
