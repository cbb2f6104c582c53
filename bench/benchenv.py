# SPDX-License-Identifier: GPL-2.0
"""What every bench script sets up first: where results go (DEFAULT_OUT,
and TB_OUT for the guests' run directories) and the qemu-tests harness on
sys.path. Import it before tbtest:

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
