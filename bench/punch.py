#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The backend's punching: in the event loop against the punch threads --
inflate time, the daemon's CPU per GiB, and how long the daemon keeps a
control request waiting while it releases memory.

    bench/punch.py [--reps N] [--threads 0,1,2] [--ram memfd,thp] [--out DIR]

Each variant boots a fresh guest (1.5 GiB, 2 vCPUs, TCG, virtio_tballoon on
`tballoon serve --punch-threads N`, guest RAM in a memfd of 4 KiB pages or
in 2 MiB transparent huge pages) and runs, per repetition:
  backed  the guest touches 1 GiB and frees it (its free pages are backed on
          the host), then `tballoon inflate --to 1G --deadline 60s --wait`,
          then a deflate to 0;
  holes   the same inflate straight after that deflate (its free pages are
          holes on the host: the guest's zeroing faults each one back in).
During each inflate a second client sends `query-balloon` on the control
socket every 2 ms (the same loop serves it as QEMU's config accesses) and
records each round trip. Figures: inflate seconds (host, from the command to
the CLI's exit), the daemon's CPU seconds per GiB (/proc/PID/stat, all its
threads), and the control round trips (median, 99th percentile, max, ms).
Medians over the repetitions; raw figures in DIR/punch.json, a Markdown
table on stdout. The guest kernel's init_on_alloc setting (its boot line)
is printed with the table.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from benchenv import DEFAULT_OUT, proc_cpu
from tbtest import machine

MIB = 1 << 20
PROBE_S = 0.002     # one control request every 2 ms: a light load of its own


def say(msg):
    print("[punch] " + msg, file=sys.stderr, flush=True)



class Prober:
    """query-balloon back to back on the control socket, round trips in ms."""

    def __init__(self, path):
        self.q = machine.Qmp(path)
        self.rtts = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.wait(PROBE_S):
            t0 = time.monotonic()
            self.q.command("query-balloon")
            self.rtts.append((time.monotonic() - t0) * 1000.0)

    def take(self):
        self.stop.set()
        self.t.join(30)
        self.q.close()
        return self.rtts


def pct(vals, p):
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))] if s else None


def timed_inflate(g):
    pid = g.backend.pid
    c0 = proc_cpu(pid)
    probe = Prober(g.control)
    time.sleep(0.2)                 # the prober runs before the inflate starts
    t0 = time.monotonic()
    rc, obj, err = g.tool_json("inflate", "--to", "1G", "--deadline", "60s", "--wait")
    secs = time.monotonic() - t0
    rtts = probe.take()
    cpu = proc_cpu(pid) - c0
    if rc != 0 or not obj or (obj.get("command") or {}).get("state") != "done":
        raise RuntimeError("inflate: exit %d %s %s" % (rc, obj, err[-200:]))
    return {"seconds": secs, "guest_ms": obj["command"].get("elapsed_ms"),
            "backend_cpu_s": cpu, "rtt_ms_p50": statistics.median(rtts) if rtts else None,
            "rtt_ms_p99": pct(rtts, 99), "rtt_ms_max": max(rtts) if rtts else None,
            "probes": len(rtts)}


def deflate(g):
    rc, _, err = g.tool_json("deflate", "--to", "0", "--deadline", "60s", "--wait")
    if rc != 0:
        raise RuntimeError("deflate: exit %d %s" % (rc, err[-200:]))


def run_variant(threads, reps, ram="memfd"):
    res = {"backed": [], "holes": []}
    with machine.Guest(driver="tballoon", device="tballoon", mem="1536M",
                       name="punch-%s-%d" % (ram, threads), ram=ram,
                       backend_args=("--punch-threads", str(threads))) as g:
        if g.driver_status != "loaded":
            raise RuntimeError("driver %s" % g.driver_status)
        st = g.status()
        if st.get("punch_threads") != threads:
            raise RuntimeError("the daemon runs %s punch threads, not %d"
                               % (st.get("punch_threads"), threads))
        res["cmdline"] = g.sh("cat /proc/cmdline").out.strip()
        for r in range(reps):
            out = g.sh("memhog 1024 0", timeout=300)
            if out.rc:
                raise RuntimeError("memhog: %s" % out.out)
            backed = timed_inflate(g)
            deflate(g)
            holes = timed_inflate(g)
            deflate(g)
            for kind, x in (("backed", backed), ("holes", holes)):
                res[kind].append(x)
                say("%s threads %d round %d %s: inflate %.2f s (guest %s ms), daemon CPU "
                    "%.2f s, control round trip median %.1f ms, max %.1f ms (%d probes)" % (
                        ram, threads, r + 1, kind, x["seconds"], x["guest_ms"], x["backend_cpu_s"],
                        x["rtt_ms_p50"] or 0, x["rtt_ms_max"] or 0, x["probes"]))
    return res


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="0,1,2",
                    help="the --punch-threads values to compare (0,1,2)")
    ap.add_argument("--ram", default="memfd",
                    help="guest RAM backings to compare: memfd (4 KiB pages), thp "
                         "(2 MiB transparent huge pages), or both: memfd,thp (memfd)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    rams = [r for r in args.ram.split(",") if r]
    for r in rams:
        if r not in machine.RAM_BACKINGS:
            ap.error("--ram %s: not one of %s" % (r, ", ".join(machine.RAM_BACKINGS)))
    variants = [(r, int(t)) for r in rams for t in args.threads.split(",")]
    res = {}
    for v in variants:
        res[v] = run_variant(v[1], args.reps, v[0])
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(str(outdir / "punch.json"), "w") as f:
        json.dump({"reps": args.reps, "host_cpus": os.cpu_count(),
                   "results": {"%s/%d" % v: res[v] for v in variants}}, f, indent=1)
    cmdline = res[variants[0]]["cmdline"]
    ioa = [w for w in cmdline.split() if w.startswith("init_on_alloc=")]
    print("guest boot line: %s (init_on_alloc: %s)" % (
        cmdline, ioa[0].split("=")[1] if ioa else "the kernel's default, on for Debian"))
    print("| 1 GiB inflate, %d host CPUs | guest RAM | free pages | inflate (s) | guest (ms) "
          "| daemon CPU (s/GiB) | control round trip median / p99 / max (ms) |"
          % os.cpu_count())
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        for kind in ("backed", "holes"):
            rs = res[v][kind]
            print("| --punch-threads %d | %s | %s | %.2f | %.0f | %.3f | %.1f / %.1f / %.1f |" % (
                v[1], {"thp": "2 MiB THP"}.get(v[0], "memfd, 4 KiB"),
                "backed" if kind == "backed" else "host holes", med(rs, "seconds"),
                med(rs, "guest_ms") or 0, med(rs, "backend_cpu_s"), med(rs, "rtt_ms_p50"),
                med(rs, "rtt_ms_p99"), med(rs, "rtt_ms_max")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
