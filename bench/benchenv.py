# SPDX-License-Identifier: GPL-2.0
"""What every bench script sets up first: where results go (DEFAULT_OUT,
and TB_OUT for the guests' run directories) and the qemu-tests harness on
sys.path; also proc_cpu(), a host process's CPU seconds. Import it before
tbtest:

    from benchenv import DEFAULT_OUT
    from tbtest import machine
"""

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_OUT = REPO / "out" / "bench"
os.environ.setdefault("TB_OUT", str(DEFAULT_OUT / "runs"))
if str(REPO / "qemu-tests") not in sys.path:
    sys.path.insert(0, str(REPO / "qemu-tests"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """utime + stime of a host process (all its threads), seconds; 0 for None."""
    if pid is None:
        return 0.0
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
