#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Guest-enforced against host-enforced timed commands, side by side.

    bench/enforce.py [--reps N] [--only a,b,c] [--out DIR]

The same strategies, one run, same machine (TCG), same 1.5 GiB guest and
guest kernel, through the same `tballoon` CLI:
  (a) virtio_tballoon + tballoon serve --socket-path   the guest enforces (TIMED)
  (b) Linux virtio_balloon + virtio-balloon-pci + tballoon serve --qmp   the host enforces
  (c) virtio_tballoon (standard mode) + virtio-balloon-pci + serve --qmp  the host enforces

Per configuration, medians of N repetitions of:
  - 1 GiB inflate with a 100 ms, 300 ms and 1 s deadline: when the outcome
    was known after the deadline (host clock), and how far the balloon went
    on after it (the largest size an observer saw in the 2 s after the
    outcome, against the size at the outcome; the observer is the device's
    own PFN count for (a) and QEMU's query-balloon every 20 ms for (b), (c));
  - 1 GiB inflate with a 60 s deadline: time to the target, progress
    reports per second, progress lines a `--wait` client printed per second;
  - 1 GiB inflate with a floor 700 MiB below the guest's MemAvailable: the
    lowest MemAvailable the guest saw meanwhile (memwatch, every 5 ms)
    against the floor, and where it settled.

Writes DIR/enforce.json and prints a Markdown table (bench/README.md).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchenv import DEFAULT_OUT
from tbtest import machine

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096
GUEST_RAM = "1536M"
MOVE = GIB // PAGE
DEADLINES = ("100ms", "300ms", "1s")

CONFIGS = {
    "a": ("guest", dict(driver="tballoon", device="tballoon")),
    "b": ("host: virtio_balloon", dict(driver="upstream", device="stock", serve_qmp=True)),
    "c": ("host: virtio_tballoon std", dict(driver="tballoon", device="stock", serve_qmp=True)),
}
LABELS = {
    "a": "(a) virtio_tballoon + serve --socket-path (guest-enforced)",
    "b": "(b) virtio_balloon + virtio-balloon-pci + serve --qmp (host-enforced)",
    "c": "(c) virtio_tballoon std + virtio-balloon-pci + serve --qmp (host-enforced)",
}


def say(msg):
    print("[enforce] " + msg, file=sys.stderr, flush=True)


class Observer:
    """The balloon size as the host sees it, as fast as it can be read."""

    def __init__(self, g, key):
        self.g = g
        self.key = key
        self.qmp = machine.Qmp(g.path("qmp.sock")) if g.device == "stock" else None
        self.ram = self.qmp.command("query-balloon")["actual"] if self.qmp else None

    def pages(self):
        if self.qmp:
            return (self.ram - self.qmp.command("query-balloon")["actual"]) // PAGE
        return self.g.status().get("device_pages", 0)

    def watch(self, secs, interval=0.02):
        top, end = 0, time.monotonic() + secs
        last = None
        while time.monotonic() < end:
            last = self.pages()
            top = max(top, last)
            time.sleep(interval)
        return top, last


def run_cmd(g, op, to, deadline, *extra):
    """tballoon OP --wait --json; (exit, status)."""
    rc, st, err = g.tool_json(op, "--to", "%dp" % to, "--deadline", deadline, "--wait",
                              *extra, timeout=300)
    if st is None:
        raise RuntimeError("tballoon %s printed no JSON (exit %d): %s" % (op, rc, err))
    return rc, st


def empty(g, obs):
    run_cmd(g, "deflate", 0, "60s")
    end = time.monotonic() + 30
    while obs.pages() and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)


def avail_kb(g):
    return g.meminfo()["MemAvailable"]


def one_config(key, reps):
    name, opts = CONFIGS[key]
    out = {"label": LABELS[key], "deadline": {}, "full": [], "floor": []}
    with machine.Guest(mem=GUEST_RAM, name="enforce-" + key, **opts) as g:
        say("%s: booted in %.1f s, driver %s" % (LABELS[key], g.boot_s, g.driver_status))
        if g.driver_status != "loaded":
            raise RuntimeError("%s: guest driver %s" % (key, g.driver_status))
        obs = Observer(g, key)
        # the host-enforced floor needs the guest's statistics first
        end = time.monotonic() + 30
        while time.monotonic() < end:
            rc, st, _ = g.tool_json("stats")
            if rc == 0 and "available-memory" in (st.get("guest") or {}):
                break
            time.sleep(0.5)
        for rep in range(reps):
            for d in DEADLINES:
                rc, st = run_cmd(g, "inflate", MOVE, d)
                cmd = st["command"]
                # the daemon's view when it decided (the observer's first
                # look comes later and may already see the overshoot)
                at = st["actual_pages"]
                top, settled = obs.watch(2.0)
                out["deadline"].setdefault(d, []).append({
                    "state": cmd["state"], "host_ms": cmd["host_elapsed_ms"],
                    "late_ms": cmd["host_elapsed_ms"] - cmd["deadline_ms"],
                    "at_outcome": at, "top_after": top, "settled": settled,
                    "after_pages": top - at})
                say("%s rep %d deadline %s: %s after %d ms, %d pages, then up to %d, "
                    "settled %d" % (key, rep, d, cmd["state"], cmd["host_elapsed_ms"], at,
                                    top, settled))
                empty(g, obs)
            res = g.tool("inflate", "--to", "%dp" % MOVE, "--deadline", "60s", "--wait",
                         timeout=300)
            lines = [ln for ln in res.stdout.splitlines() if ": running," in ln]
            st = g.status()
            cmd = st["command"]
            secs = max(cmd["host_elapsed_ms"], 1) / 1000.0
            out["full"].append({"state": cmd["state"], "host_ms": cmd["host_elapsed_ms"],
                                "reports": cmd["reports"], "reports_per_s": cmd["reports"] / secs,
                                "lines_per_s": len(lines) / secs})
            say("%s rep %d full: %s in %d ms, %d reports, %d progress lines"
                % (key, rep, cmd["state"], cmd["host_elapsed_ms"], cmd["reports"], len(lines)))
            empty(g, obs)
            a0 = avail_kb(g) * 1024
            floor = a0 - 700 * MIB
            g.sh("rm -f /tmp/mw.rc; ( memwatch 5000 > /tmp/mw.out 2>&1; echo $? > /tmp/mw.rc )"
                 " </dev/null >/dev/null 2>&1 &")
            time.sleep(0.3)
            rc, st = run_cmd(g, "inflate", MOVE, "60s", "--floor", "%dp" % (floor // PAGE))
            g.sh("kill -INT $(pidof memwatch)")
            mw = ""
            for _ in range(40):
                if g.sh("cat /tmp/mw.rc 2>/dev/null").out.strip():
                    mw = g.sh("cat /tmp/mw.out").out
                    break
                time.sleep(0.25)
            w = mw.split()
            low = int(w[w.index("min_avail_kb") + 1]) * 1024 if "min_avail_kb" in w else None
            top, settled = obs.watch(2.0)
            a1 = avail_kb(g) * 1024
            out["floor"].append({"state": st["command"]["state"],
                                 "reason": st["command"]["reason"], "floor": floor,
                                 "min_avail": low,
                                 "below_floor_mib": None if low is None else (floor - low) / MIB,
                                 "settled_above_mib": (a1 - floor) / MIB,
                                 "balloon_mib": settled * PAGE / MIB})
            say("%s rep %d floor %.0f MiB: %s (%s), lowest MemAvailable %s MiB, settled %.0f "
                "MiB above" % (key, rep, floor / MIB, st["command"]["state"],
                               st["command"]["reason"],
                               "?" if low is None else "%.0f" % (low / MIB), (a1 - floor) / MIB))
            empty(g, obs)
    return out


def table(res):
    rows = ["| | " + " | ".join("(%s)" % k for k in res) + " |",
            "|---|" + "---|" * len(res)]

    def row(label, fn, fmt):
        """fn(result) -> the values of the repetitions: median [min, max]"""
        vals = []
        for k in res:
            try:
                xs = [x for x in fn(res[k]) if x is not None]
            except (KeyError, ValueError, TypeError):
                xs = []
            if not xs:
                vals.append("-")
            elif len(xs) == 1:
                vals.append(fmt % xs[0])
            else:
                vals.append((fmt + " [" + fmt + ", " + fmt + "]")
                            % (statistics.median(xs), min(xs), max(xs)))
        rows.append("| %s | %s |" % (label, " | ".join(vals)))

    for d in DEADLINES:
        row("1 GiB in %s: outcome after the deadline (ms)" % d,
            lambda r: [x["late_ms"] for x in r["deadline"][d]], "%+.0f")
        row("1 GiB in %s: moved on after the outcome (MiB)" % d,
            lambda r: [x["after_pages"] * PAGE / MIB for x in r["deadline"][d]], "%.1f")
        row("1 GiB in %s: reached by the deadline (MiB)" % d,
            lambda r: [x["at_outcome"] * PAGE / MIB for x in r["deadline"][d]], "%.0f")
    row("1 GiB, 60 s deadline: time to target (s)",
        lambda r: [x["host_ms"] / 1000.0 for x in r["full"]], "%.2f")
    row("progress reports per second", lambda r: [x["reports_per_s"] for x in r["full"]],
        "%.0f")
    row("progress lines per second (`--wait` client)",
        lambda r: [x["lines_per_s"] for x in r["full"]], "%.0f")
    row("floor: lowest MemAvailable below the floor (MiB; < 0: stayed above)",
        lambda r: [x["below_floor_mib"] for x in r["floor"]], "%+.1f")
    row("floor: settled above the floor (MiB)",
        lambda r: [x["settled_above_mib"] for x in r["floor"]], "%.1f")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="a,b,c")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--replot", metavar="JSON", help="print the table of an earlier run")
    args = ap.parse_args()
    if args.replot:
        print(table(json.load(open(args.replot))["results"]))
        return 0
    res = {}
    t0 = time.monotonic()
    for k in args.only.split(","):
        res[k] = one_config(k, args.reps)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(str(outdir / "enforce.json"), "w") as f:
        json.dump({"reps": args.reps, "guest_ram": GUEST_RAM, "results": res,
                   "seconds": time.monotonic() - t0}, f, indent=1)
    for k in res:
        print("- %s" % LABELS[k])
    print()
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
