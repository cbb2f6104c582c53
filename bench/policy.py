#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Host memory policies side by side on one multi-VM workload.

    bench/policy.py [--trace bench/policy-trace.json] [--policies a,b,...]
                    [--budget MIB] [--out DIR]
    bench/policy.py --new-trace SEED [--length S]   # write a new trace

Three 1 GiB guests (2 vCPUs each, TCG), each with a zram swap device of
512 MiB so that swapping is observable, each running memtrace (bench/guest)
on its own phase list of the committed, seeded trace: its memory grows
(64 MiB/s) and shrinks in phases while it works on it (one word per page,
round and round). Before the trace each guest touches and frees 800 MiB,
as a guest that has run for a while has. Policies, on the same trace:

  static     our driver on `tballoon serve`, no balloon changes
  mom        the same, driven by `tballoon balance --set policy=mom --period
             10s`: oVirt MOM's default balloon rules on the same engine, at
             MOM's default policy interval
  reporting  Linux's virtio_balloon on QEMU's virtio-balloon-pci with
             free-page-reporting=on, no balloon changes
  tballoon   our driver on `tballoon serve`, driven by `tballoon balance`
  tballoon-fpr  the same with free page reporting (`serve
             --free-page-reporting`): the engine sizes the guests, reporting
             returns what their programs free in between

Both engines see the host as a budget of --budget MiB (default 2560) less
the guests' resident memory (`--set host-budget=...`, host reserve 256 MiB):
the host has 24 GiB, and a policy that only acts under host pressure would
otherwise never act. At three moments of the trace (30, 60, 90 s) the
engines get `tballoon reclaim --total 1G --deadline 2s --wait`.

Figures per policy: host memory saved (GiB*s below the sum of guest RAM,
from the allocated blocks of each guest's memfd, sampled every 0.5 s),
major faults, swap-ins and OOM kills in the guests, the workloads' work
relative to static (pages touched), and the reclaims' freed amount and
overshoot. Raw figures in DIR/policy.json, series in DIR/policy-*.dat, the
plot DIR/policy.png (each guest's footprint and size, the host's free
budget, per policy), a Markdown table on stdout.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchenv import BENCH, DEFAULT_OUT
import bguest
from tbtest import machine

MIB = 1 << 20
GUESTS = ("g1", "g2", "g3")
POLICIES = ("static", "mom", "reporting", "tballoon", "tballoon-fpr")
OPTS = {
    "static": dict(driver="tballoon", device="tballoon"),
    "mom": dict(driver="tballoon", device="tballoon"),
    "reporting": dict(driver="upstream", device="stock", stock_props="free-page-reporting=on"),
    "tballoon": dict(driver="tballoon", device="tballoon"),
    "tballoon-fpr": dict(driver="tballoon", device="tballoon",
                         backend_args=("--free-page-reporting",)),
}
RECLAIM_AT = (30, 60, 90)
TITLES = {"static": "static sizes", "mom": "oVirt MOM rules (same engine)",
          "reporting": "free page reporting (virtio_balloon, QEMU)",
          "tballoon": "tballoon balance",
          "tballoon-fpr": "tballoon balance + free page reporting (ours, on serve)"}


def say(msg):
    print("[policy] " + msg, file=sys.stderr, flush=True)


def new_trace(seed, length):
    """Per guest: phases of 8-25 s at idle (80-200 MiB), medium (250-450)
    or burst (500-680) demand; seeded."""
    rnd = random.Random(seed)
    out = {"seed": seed, "length_s": length, "guests": {}}
    for g in GUESTS:
        t, phases = 0, []
        while t < length:
            d = min(rnd.randint(8, 25), length - t)
            kind = rnd.choices(("idle", "medium", "burst"), (5, 3, 2))[0]
            lo, hi = {"idle": (80, 200), "medium": (250, 450), "burst": (500, 680)}[kind]
            phases.append([d, rnd.randint(lo, hi)])
            t += d
        out["guests"][g] = phases
    return out


def vmstat(g):
    out = {}
    for ln in g.sh("cat /proc/vmstat").out.splitlines():
        k, _, v = ln.partition(" ")
        if k in ("pgmajfault", "pswpin", "pswpout", "oom_kill"):
            out[k] = int(v)
    return out


def setup_swap(g):
    res = g.sh("for m in %s; do [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko; "
               "done; echo 512M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null "
               "&& swapon /dev/zram0 && grep -c zram0 /proc/swaps"
               % " ".join(bguest.SWAP_MODULES), timeout=60)
    if res.rc != 0:
        raise RuntimeError("%s: no zram swap: %s %s" % (g.name, res.out, res.err))


class Sampler(threading.Thread):
    def __init__(self, guests):
        super().__init__(daemon=True)
        self.guests = guests
        self.rows = []
        self.stop = threading.Event()
        self.t0 = None

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic() - self.t0
            row = {"t": t}
            for g in self.guests:
                foot = g.host_memory()["memfd_allocated"]
                size = 1024 * MIB
                if g.device == "tballoon":
                    try:
                        st = g.status()
                        size = st["guest_ram_bytes"] - st["actual_bytes"]
                    except machine.GuestError:
                        pass
                row[g.name] = (foot, size)
            self.rows.append(row)
            self.stop.wait(0.5)


def one_policy(name, trace, budget, outdir):
    say("%s: booting 3 guests" % name)
    guests = []
    bal = None
    result = {"policy": name}
    try:
        for gname in GUESTS:
            g = bguest.BenchGuest(mem="1G", smp=2, name="pol-%s-%s" % (name, gname),
                                  log=say, **OPTS[name])
            g.start()
            guests.append(g)
            setup_swap(g)
        for g in guests:
            res = g.sh("tbmem -m touch 800M | tail -n 1", timeout=300)
            if res.rc:
                raise RuntimeError("%s: warm-up: %s" % (g.name, res.out))
        d = None
        if name in ("mom", "tballoon", "tballoon-fpr"):
            d = Path(guests[0].rundir) / "bal"
            d.mkdir()
            for g, gname in zip(guests, GUESTS):
                os.symlink(str(g.control), str(d / (gname + ".ctl")))
            args = [str(guests[0].env.tool), "balance", "--dir", str(d), "-j",
                    "--set", "host-budget=%dM" % budget, "--set", "host-reserve=256M"]
            if name == "mom":
                # MOM's default policy-engine interval is 10 s (mom.conf)
                args += ["--set", "policy=mom", "--period", "10s"]
            bal = subprocess.Popen(args, stdout=open(str(d / "balance.log"), "w"),
                                   stderr=subprocess.STDOUT)
            time.sleep(2)
        base = {g.name: vmstat(g) for g in guests}
        sampler = Sampler(guests)
        sampler.t0 = time.monotonic()
        for g, gname in zip(guests, GUESTS):
            phases = ",".join("%d:%d" % (s, m) for s, m in trace["guests"][gname])
            g.sh("rm -f /tmp/mt.rc; ( memtrace %s > /tmp/mt.out 2>&1; echo $? > /tmp/mt.rc ) "
                 "</dev/null >/dev/null 2>&1 &" % phases)
        sampler.start()
        reclaims = []
        for at in RECLAIM_AT:
            while time.monotonic() - sampler.t0 < at:
                time.sleep(0.2)
            if bal is None:
                continue
            t = time.monotonic()
            r = subprocess.run([str(guests[0].env.tool), "reclaim", "--total", "1G",
                                "--deadline", "2s", "--wait", "-j", "--balance",
                                str(d / "balance.sock")], capture_output=True, text=True,
                               timeout=120)
            objs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
            out = objs[-1] if len(objs) > 1 else {}
            reclaims.append({"at_s": at, "rc": r.returncode, "state": out.get("state"),
                             "freed_bytes": out.get("freed_bytes", 0),
                             "overshoot_bytes": out.get("overshoot_bytes", 0),
                             "planned_bytes": objs[0].get("planned_bytes", 0) if objs else 0,
                             "elapsed_ms": out.get("elapsed_ms"),
                             "wall_s": time.monotonic() - t, "why": out.get("why")})
            say("%s: reclaim 1G/2s at %d s: %s, %.0f MiB freed" % (
                name, at, out.get("state"), out.get("freed_bytes", 0) / MIB))
        length = trace["length_s"]
        ops, rcs = {}, {}
        for g in guests:
            deadline = sampler.t0 + length + 120
            while time.monotonic() < deadline:
                rc = g.sh("cat /tmp/mt.rc 2>/dev/null").out.strip()
                if rc:
                    break
                time.sleep(1)
            rcs[g.name] = int(rc) if rc else None
            done = [ln for ln in g.sh("cat /tmp/mt.out").out.splitlines() if "done" in ln]
            ops[g.name] = int(done[-1].split("ops=")[1].split()[0]) if done else 0
        sampler.stop.set()
        sampler.join(5)
        end = {g.name: vmstat(g) for g in guests}
        delta = {k: sum(end[g.name].get(k, 0) - base[g.name].get(k, 0) for g in guests)
                 for k in ("pgmajfault", "pswpin", "pswpout", "oom_kill")}
        ram = 1024 * MIB * len(guests)
        saved = 0.0
        rows = sampler.rows
        for a, b in zip(rows, rows[1:]):
            foot = sum(a[g.name][0] for g in guests)
            saved += max(0, ram - foot) * (b["t"] - a["t"])
        with open(str(outdir / ("policy-%s.dat" % name)), "w") as f:
            f.write("# t  " + "  ".join("%s_foot_MiB %s_size_MiB" % (g.name, g.name)
                                        for g in guests) + "  host_free_MiB\n")
            for r in rows:
                foot = sum(r[g.name][0] for g in guests)
                f.write("%.2f %s %.1f\n" % (r["t"], " ".join(
                    "%.1f %.1f" % (r[g.name][0] / MIB, r[g.name][1] / MIB) for g in guests),
                    (budget * MIB - foot) / MIB))
        result.update({"saved_gib_s": saved / (1 << 30), "ops": sum(ops.values()),
                       "ops_per_guest": ops, "exit": rcs, "reclaims": reclaims,
                       "mean_footprint_mib": sum(sum(r[g.name][0] for g in guests)
                                                 for r in rows) / max(len(rows), 1) / MIB,
                       **delta})
        if bal is not None:
            with open(str(d / "balance.log")) as f:
                result["commands"] = sum(1 for ln in f if '"issued":true' in ln)
        say("%s: saved %.1f GiB*s, work %d, majflt %d, swap-in %d, OOM %d" % (
            name, result["saved_gib_s"], result["ops"], delta["pgmajfault"], delta["pswpin"],
            delta["oom_kill"]))
        return result
    finally:
        if bal is not None:
            bal.terminate()
            bal.wait(10)
        for g in guests:
            g.close()


def plot(results, outdir, budget):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        say("no gnuplot: install gnuplot-nox (scripts/setup)")
        return None
    png = outdir / "policy.png"
    s = ["set terminal pngcairo noenhanced size 1400,%d font 'sans,10'"
         % (500 * ((len(results) + 1) // 2)),
         "set output '%s'" % png,
         "set multiplot layout %d,2 title 'Three 1 GiB guests on one trace (TCG): per guest, "
         "host footprint (solid) and size (dashed), the free budget of %d MiB (black)' "
         "font 'sans,12'" % ((len(results) + 1) // 2, budget),
         "set xlabel 's'", "set ylabel 'MiB'", "set yrange [-200:*]", "set key top left"]
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    for r in results:
        dat = outdir / ("policy-%s.dat" % r["policy"])
        parts = []
        for i, g in enumerate(GUESTS):
            parts.append("'%s' using 1:%d with lines lw 2 lc rgb '%s' title '%s footprint'"
                         % (dat, 2 + 2 * i, colors[i], g))
            parts.append("'%s' using 1:%d with lines dt 2 lc rgb '%s' title '%s size'"
                         % (dat, 3 + 2 * i, colors[i], g))
        parts.append("'%s' using 1:8 with lines lw 2 lc rgb '#000000' title 'free budget'"
                     % dat)
        s.append("set title '%s'" % TITLES[r["policy"]])
        s.append("plot " + ", ".join(parts))
    s.append("unset multiplot")
    subprocess.run([gnuplot], input="\n".join(s), text=True, check=True)
    return png


def table(results):
    st = next((r for r in results if r["policy"] == "static"), None)
    lines = ["| policy | host memory saved (GiB*s) | mean footprint (MiB) | work vs static | "
             "major faults | swap-ins | OOM kills | commands | reclaim 1G/2s at 30/60/90 s: "
             "freed MiB (overshoot) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rel = "%.2f" % (r["ops"] / st["ops"]) if st and st["ops"] else "-"
        rc = ", ".join("%.0f (%.0f) %s" % (x["freed_bytes"] / MIB, x["overshoot_bytes"] / MIB,
                                           x["state"]) for x in r["reclaims"]) or "n/a"
        lines.append("| %s | %.1f | %.0f | %s | %d | %d | %d | %s | %s |" % (
            TITLES[r["policy"]], r["saved_gib_s"], r["mean_footprint_mib"], rel,
            r["pgmajfault"], r["pswpin"], r["oom_kill"], r.get("commands", "-"), rc))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default=str(BENCH / "policy-trace.json"))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--budget", type=int, default=2560, help="host budget, MiB")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--new-trace", type=int, metavar="SEED")
    ap.add_argument("--length", type=int, default=120)
    a = ap.parse_args()
    if a.new_trace is not None:
        with open(a.trace, "w") as f:
            json.dump(new_trace(a.new_trace, a.length), f, indent=1)
            f.write("\n")
        say("wrote %s" % a.trace)
        return 0
    with open(a.trace) as f:
        trace = json.load(f)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in a.policies.split(","):
        if name not in POLICIES:
            ap.error("unknown policy %s (%s)" % (name, ", ".join(POLICIES)))
        results.append(one_policy(name, trace, a.budget, outdir))
    meta = {"trace": a.trace, "seed": trace["seed"], "length_s": trace["length_s"],
            "budget_mib": a.budget, "date": time.strftime("%Y-%m-%d %H:%M"),
            "host": os.uname().nodename}
    with open(str(outdir / "policy.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    png = plot(results, outdir, a.budget)
    print(table(results))
    say("raw figures %s, plot %s" % (outdir / "policy.json", png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
