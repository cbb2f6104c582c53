#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""What a pre-migration shrink buys: live migration of the same 1 GiB guest
under the same load, with and without a timed shrink first, and with QEMU's
free page hinting instead.

    bench/migrate.py [--reps N] [--out DIR]

Each variant boots a fresh guest (Linux's virtio_balloon, QEMU's stock
virtio-balloon-pci, `tballoon serve --qmp`), dirties 600 MiB (memhog
touches it and exits: free memory that is not zero pages), then migrates
to a second QEMU on this machine (incoming on a UNIX socket):
  none    migrate as it is
  shrink  `tballoon inflate` of MemAvailable - 160 MiB with a 128 MiB
          floor first (60 s deadline), then migrate
  hint    free-page-hint=on on the device, no shrink: QEMU asks the guest
          for free pages and skips them in the first pass
Reports RAM bytes sent and total time (query-migrate), medians.
Writes DIR/migrate.json and prints a Markdown table.
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
PAGE = 4096
VARIANTS = ("none", "shrink", "hint")


def say(msg):
    print("[migrate] " + msg, file=sys.stderr, flush=True)


def one(variant):
    props = "free-page-hint=on,iothread=tbhint" if variant == "hint" else ""
    with machine.Guest(driver="upstream", device="stock", mem="1G", serve_qmp=True,
                       stock_props=props, name="migrate-" + variant) as g:
        res = g.sh("memhog 600 0", timeout=120)
        if res.rc:
            raise RuntimeError("memhog: %s" % res.out)
        shrink = {}
        if variant == "shrink":
            end = time.monotonic() + 30
            while time.monotonic() < end:
                rc, st, _ = g.tool_json("stats")
                if rc == 0 and "available-memory" in (st.get("guest") or {}):
                    break
                time.sleep(0.5)
            avail = g.meminfo()["MemAvailable"] * 1024
            t0 = time.monotonic()
            rc, st, _ = g.tool_json("inflate", "--to", "%dp" % ((avail - 160 * MIB) // PAGE),
                                    "--deadline", "60s", "--floor",
                                    "%dp" % (128 * MIB // PAGE), "--wait", timeout=120)
            shrink = {"exit": rc, "state": st["command"]["state"],
                      "seconds": time.monotonic() - t0,
                      "balloon_mib": st["actual_pages"] * PAGE / MIB}
            time.sleep(2.0)     # the guest settles at the stop
        t0 = time.monotonic()
        info = g.migrate(backend=False)
        wall = time.monotonic() - t0
        ram = info.get("ram", {})
        out = {"variant": variant, "sent_mib": ram.get("transferred", 0) / MIB,
               "total_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
               "wall_s": wall, "pages_zero": ram.get("duplicate"),
               "pages_normal": ram.get("normal"), "shrink": shrink}
        say("%s: %.1f MiB sent in %s ms%s" % (variant, out["sent_mib"], out["total_ms"],
                                              " (shrink %.0f MiB in %.1f s, %s)" % (
                                                  shrink["balloon_mib"], shrink["seconds"],
                                                  shrink["state"]) if shrink else ""))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    res = {v: [] for v in VARIANTS}
    for _ in range(args.reps):
        for v in VARIANTS:          # interleaved: drift hits every variant alike
            res[v].append(one(v))
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(str(outdir / "migrate.json"), "w") as f:
        json.dump({"reps": args.reps, "results": res}, f, indent=1)
    base = statistics.median(r["sent_mib"] for r in res["none"])
    print("| 1 GiB guest, 600 MiB dirtied and freed | RAM sent (MiB) | vs none | "
          "total time (ms) | downtime (ms) | shrink |")
    print("|---|---|---|---|---|---|")
    for v in VARIANTS:
        rs = res[v]
        sent = statistics.median(r["sent_mib"] for r in rs)
        tot = statistics.median(r["total_ms"] or 0 for r in rs)
        down = statistics.median(r["downtime_ms"] or 0 for r in rs)
        sh = ("%.0f MiB in %.1f s" % (statistics.median(r["shrink"]["balloon_mib"] for r in rs),
                                      statistics.median(r["shrink"]["seconds"] for r in rs))
              if v == "shrink" else "-")
        print("| %s | %.0f | %.2f | %.0f | %.0f | %s |" % (v, sent, sent / base, tot, down, sh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
