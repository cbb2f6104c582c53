#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Free page reporting, ours against Linux's virtio_balloon: how fast memory
a guest frees leaves the host, and what it costs the guest and the host.

    bench/reporting.py [--reps N] [--free MIB] [--out DIR]

Each variant boots a fresh 1 GiB guest (2 vCPUs, TCG) with free page
reporting on, waits until the guest's memory file stops shrinking (boot-time
reports), then, per repetition, a guest program takes --free MiB (default
512), touches it and exits. From the moment it exited the host polls the
allocated blocks of the guest-RAM memfd (every 20 ms) and records when 50%
and 90% of the freed amount are gone and how much left in all (after 5 s
without change: the kernel reports in runs 2 s apart). Over that window it also takes the guest's kernel CPU time
(system + softirq, /proc/stat in the guest, less the same of an idle window
just before, scaled to the same length; the guest accounts CPU time in
ticks of 10 ms, so "< 0.01" is what it could see), QEMU's CPU time and, with our backend, the
daemon's. Variants:
  ours-serve      virtio_tballoon on `tballoon serve --free-page-reporting`
  upstream-serve  virtio_balloon on `tballoon serve --free-page-reporting`
  ours-qemu       virtio_tballoon on virtio-balloon-pci,free-page-reporting=on
  upstream-qemu   virtio_balloon on virtio-balloon-pci,free-page-reporting=on
Medians; raw figures in DIR/reporting.json, a Markdown table on stdout.
The kernel waits 2 s (PAGE_REPORTING_DELAY) after free memory grew before
it reports, for either driver: that is the floor of the latency.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchenv import DEFAULT_OUT, proc_cpu
from tbtest import machine

MIB = 1 << 20
VARIANTS = {
    "ours-serve": dict(driver="tballoon", device="tballoon",
                       backend_args=("--free-page-reporting",)),
    "upstream-serve": dict(driver="upstream", device="tballoon",
                           backend_args=("--free-page-reporting",)),
    "ours-qemu": dict(driver="tballoon", device="stock", stock_props="free-page-reporting=on"),
    "upstream-qemu": dict(driver="upstream", device="stock",
                          stock_props="free-page-reporting=on"),
}


def say(msg):
    print("[reporting] " + msg, file=sys.stderr, flush=True)



def guest_kernel_cpu(g):
    """system + softirq seconds of all guest CPUs (/proc/stat)."""
    f = g.sh("head -1 /proc/stat").out.split()
    return (int(f[3]) + int(f[7])) / 100.0      # USER_HZ in the guest: 100


def settle(g, still=5.0, timeout=90.0):
    t0 = time.monotonic()
    last, since = g.host_memory()["memfd_allocated"], time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.1)
        now = g.host_memory()["memfd_allocated"]
        if abs(now - last) > 2 * MIB:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            break
    return last


def one_free(g, free_mib):
    settle(g)
    k0 = guest_kernel_cpu(g)
    time.sleep(3.0)                 # an idle window, for the guest's own noise
    idle = guest_kernel_cpu(g) - k0
    res = g.sh("memhog %d 0" % free_mib, timeout=120)
    if res.rc:
        raise RuntimeError("memhog: %s" % res.out)
    t_free = time.monotonic()
    held = g.host_memory()["memfd_allocated"]
    k1, q1 = guest_kernel_cpu(g), proc_cpu(g.qemu_pid)
    b1 = proc_cpu(g.backend.pid if g.backend is not None else None)
    marks, last, since = {}, held, t_free
    while time.monotonic() - t_free < 30:
        now = g.host_memory()["memfd_allocated"]
        gone = held - now
        for frac in (0.5, 0.9):
            if frac not in marks and gone >= frac * free_mib * MIB:
                marks[frac] = time.monotonic() - t_free
        if abs(now - last) > 2 * MIB:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 5.0:
            break           # longer than the kernel's 2 s between two reporting runs
        time.sleep(0.02)
    window = since - t_free
    k2, q2 = guest_kernel_cpu(g), proc_cpu(g.qemu_pid)
    b2 = proc_cpu(g.backend.pid if g.backend is not None else None)
    return {"t50_s": marks.get(0.5), "t90_s": marks.get(0.9), "window_s": window,
            "released_mib": (held - last) / MIB,
            "guest_kernel_cpu_s": max(0.0, (k2 - k1) - idle * (window + 3.0) / 3.0),
            "qemu_cpu_s": q2 - q1, "backend_cpu_s": b2 - b1}


def run_variant(name, reps, free_mib):
    opts = dict(VARIANTS[name], mem="1G", name="report-" + name)
    out = []
    with machine.Guest(**opts) as g:
        if g.driver_status != "loaded":
            raise RuntimeError("%s: driver %s" % (name, g.driver_status))
        for _ in range(reps):
            r = one_free(g, free_mib)
            say("%s: 90%% of %d MiB gone after %s s, %.0f MiB in all; guest kernel CPU "
                "%.2f s, QEMU %.2f s, daemon %.2f s" % (
                    name, free_mib, "%.2f" % r["t90_s"] if r["t90_s"] else "-",
                    r["released_mib"], r["guest_kernel_cpu_s"], r["qemu_cpu_s"],
                    r["backend_cpu_s"]))
            out.append(r)
    return out


def med(rs, key):
    vals = [r[key] for r in rs if r[key] is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--free", type=int, default=512)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    res = {v: run_variant(v, args.reps, args.free) for v in VARIANTS}
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(str(outdir / "reporting.json"), "w") as f:
        json.dump({"reps": args.reps, "free_mib": args.free, "results": res}, f, indent=1)
    def fmt(v, p="%.2f"):
        if v is None:
            return "-"
        return "< 0.01" if p == "%.2f" and v < 0.005 else p % v
    print("| %d MiB freed in a 1 GiB guest | 50%% gone (s) | 90%% gone (s) | released (MiB) "
          "| guest kernel CPU (s) | QEMU CPU (s) | daemon CPU (s) |" % args.free)
    print("|---|---|---|---|---|---|---|")
    for v, rs in res.items():
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            v, fmt(med(rs, "t50_s")), fmt(med(rs, "t90_s")),
            fmt(med(rs, "released_mib"), "%.0f"), fmt(med(rs, "guest_kernel_cpu_s")),
            fmt(med(rs, "qemu_cpu_s")),
            fmt(med(rs, "backend_cpu_s")) if v.endswith("serve") else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
