#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""What a durable state file costs: PFN buffers per second through
`tballoon serve` with and without --state-file, driven by the fake
front-end of tests/frontend.py (one-PFN buffers, BATCH of them per kick,
as a driver with several buffers in flight sends them). Not a test: prints
the figures.

Usage: bench_state.py PATH/TO/tballoon [SECONDS] [BATCH]
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import frontend as fe  # noqa: E402
from frontend import Guest  # noqa: E402

SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 32


def run(tmp, name, *extra):
    srv, vu, cp = fe.start_serve(tmp, name, *extra)
    g = Guest(vu)
    g.negotiate()
    base = fe.RING_GPA[0]
    n, pfn, t0 = 0, 0, time.monotonic()
    while time.monotonic() - t0 < SECONDS:
        a = g.avail_idx[0]
        for i in range(BATCH):
            gpa = fe.BUF_GPA + 4 * i
            g.w(gpa, "<I", pfn % 1024)
            pfn += 1
            g.w(base + 16 * i, "<QIHH", gpa, 4, 0, 0)
            g.w(base + 0x1000 + 4 + 2 * ((a + i) % fe.QSZ), "<H", i)
        g.avail_idx[0] = a + BATCH
        g.w(base + 0x1000 + 2, "<H", (a + BATCH) & 0xFFFF)
        os.eventfd_write(g.kick[0], 1)
        while (g.used_idx(0) - a) & 0xFFFF < BATCH:
            g.wait_call(0, timeout=10)
        n += BATCH
    dt = time.monotonic() - t0
    g.close()
    srv.kill()
    srv.wait()
    return n / dt


def main():
    tmp = tempfile.mkdtemp(prefix="tb-bench-state-")
    without = run(tmp, "plain")
    with_state = run(tmp, "state", "--state-file", os.path.join(tmp, "state.json"))
    print("%s: %d one-PFN buffers per kick: %.0f buffers/s without a state file, "
          "%.0f with (%.1f%%)" % (fe.TB, BATCH, without, with_state,
                                  100.0 * with_state / without))


if __name__ == "__main__":
    main()
