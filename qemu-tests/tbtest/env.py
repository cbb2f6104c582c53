# SPDX-License-Identifier: GPL-2.0
"""Paths of the machine: repository, caches, guest kernel, QEMU root.

The TB_* values come from ``scripts/setup --env`` (which also installs what is
missing). When all of them are already in the environment, setup is not run.

Two guest kernels: Debian 12's 6.1 (TB_KVER, TB_KDIR, TB_GUEST; the default)
and 6.12 from bookworm-backports (TB_KVER2, TB_KDIR2, TB_GUEST2), chosen by
TB_KERNEL=6.1|6.12 (run.py --kernel). The module under test for 6.12 is built
out of the source tree, in out/module-<kver>/ (make module MODOUT=...).

A third, TB_KERNEL=debug: the debug kernel scripts/setup --debug-kernel builds
from linux-source-6.1 (lockdep, KASAN, DEBUG_VM, hung-task detector; TB_KVER3,
TB_KDIR3 = its build tree, TB_GUEST3), module in out/module-<kver>/ as well.

A fourth, TB_KERNEL=skipzero: the kernel scripts/setup --bench-kernel builds
from linux-source-6.1 with driver/patches/6.1/ applied (init_on_alloc on, no
checkers; TB_KVER4, TB_KDIR4, TB_GUEST4), for make bench-skipzero; and a
fifth, TB_KERNEL=skipzero-6.12: the same from linux-source-6.12 with
driver/patches/6.12/ (scripts/setup --bench-kernel-6.12; TB_KVER5, TB_KDIR5,
TB_GUEST5).
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "qemu-tests"
GUEST_SRC = TESTS / "guest"

KEYS = ("TB_CACHE", "TB_KVER", "TB_KDIR", "TB_GUEST", "TB_KSRC", "TB_QROOT")
# The second kernel generation (6.12); needed only with TB_KERNEL=6.12.
KEYS2 = ("TB_KVER2", "TB_KDIR2", "TB_GUEST2")
# The debug kernel; needed only with TB_KERNEL=debug (built on first use).
KEYS3 = ("TB_KVER3", "TB_KDIR3", "TB_GUEST3")
# The skip-zero kernel; needed only with TB_KERNEL=skipzero (built on first use).
KEYS4 = ("TB_KVER4", "TB_KDIR4", "TB_GUEST4")
# The 6.12 skip-zero kernel; needed only with TB_KERNEL=skipzero-6.12.
KEYS5 = ("TB_KVER5", "TB_KDIR5", "TB_GUEST5")
KERNELS = ("6.1", "6.12", "debug", "skipzero", "skipzero-6.12")
SUFFIX = {"6.1": "", "6.12": "2", "debug": "3", "skipzero": "4", "skipzero-6.12": "5"}
EXTRA_KEYS = {"6.1": (), "6.12": KEYS2, "debug": KEYS3, "skipzero": KEYS4,
              "skipzero-6.12": KEYS5}
# the kernels scripts/setup builds from tinyconfig (no virtio_mem module; they
# boot as a bzImage)
BUILT = ("debug", "skipzero", "skipzero-6.12")
SETUP_FLAG = {"debug": "--debug-kernel", "skipzero": "--bench-kernel",
              "skipzero-6.12": "--bench-kernel-6.12"}


def kernel_choice():
    """The guest kernel generation asked for by TB_KERNEL (default 6.1)."""
    which = os.environ.get("TB_KERNEL", "6.1") or "6.1"
    if which not in KERNELS:
        raise RuntimeError("TB_KERNEL=%s: expected one of %s" % (which, ", ".join(KERNELS)))
    return which


class Env:
    """The TB_* settings plus the derived paths the harness uses."""

    def __init__(self, values, which="6.1"):
        self.values = values
        self.which = which          # one of KERNELS
        sfx = SUFFIX[which]
        self.cache = Path(values["TB_CACHE"])
        self.kver = values["TB_KVER" + sfx]
        self.kdir = Path(values["TB_KDIR" + sfx])
        self.guest = Path(values["TB_GUEST" + sfx])
        self.qroot = Path(values["TB_QROOT"])
        self.kernel = self.guest / "boot" / ("vmlinuz-" + self.kver)
        self.moddir = self.guest / "lib" / "modules" / self.kver
        self.tool = Path(os.environ.get("TB_TOOL", REPO / "host-tool" / "tballoon"))
        # 6.1: `make module` in the tree; others: a copy built in out/module-<kver>/.
        self.modout = None if which == "6.1" else REPO / "out" / ("module-" + self.kver)
        default_ko = (self.modout or REPO) / "virtio_tballoon.ko"
        self.module = Path(os.environ.get("TB_MODULE", default_ko))
        self.out = Path(os.environ.get("TB_OUT", REPO / "out" / "qemu-tests"))

    def missing(self):
        """Human-readable list of the parts a full run needs but lacks."""
        gone = []
        if not self.kernel.exists():
            gone.append("guest kernel %s missing (run scripts/setup)" % self.kernel)
        if not (self.qroot / ".done").exists():
            gone.append("QEMU root %s missing (run scripts/setup)" % self.qroot)
        if not self.tool.exists():
            gone.append("host tool %s missing (make -C host-tool)" % self.tool)
        if not self.module.exists():
            gone.append("guest module %s missing (make module)" % self.module)
        return gone


_env = None


def load():
    """Return the Env, running scripts/setup --env once if needed."""
    global _env
    if _env is not None:
        return _env
    which = kernel_choice()
    need = KEYS + EXTRA_KEYS[which]
    if all(k in os.environ for k in need):
        values = {k: os.environ[k] for k in need}
    else:
        argv = [str(REPO / "scripts" / "setup"), "--env"]
        if which in SETUP_FLAG:
            argv.append(SETUP_FLAG[which])
        res = subprocess.run(argv,
                             stdout=subprocess.PIPE, stderr=sys.stderr,
                             universal_newlines=True)
        if res.returncode != 0:
            raise RuntimeError("scripts/setup --env failed (exit %d)" % res.returncode)
        values = {}
        for line in res.stdout.splitlines():
            key, sep, val = line.partition("=")
            if sep and key.startswith("TB_"):
                values[key] = val
        absent = [k for k in need if k not in values]
        if absent:
            raise RuntimeError("scripts/setup --env did not print %s" % ", ".join(absent))
    _env = Env(values, which)
    return _env
