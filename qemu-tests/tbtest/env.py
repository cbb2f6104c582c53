# SPDX-License-Identifier: GPL-2.0
"""Paths of the machine: repository, caches, guest kernel, QEMU root.

The TB_* values come from ``scripts/setup --env`` (which also installs what is
missing). When all of them are already in the environment, setup is not run.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "qemu-tests"
GUEST_SRC = TESTS / "guest"

KEYS = ("TB_CACHE", "TB_KVER", "TB_KDIR", "TB_GUEST", "TB_KSRC", "TB_QROOT")


class Env:
    """The TB_* settings plus the derived paths the harness uses."""

    def __init__(self, values):
        self.values = values
        self.cache = Path(values["TB_CACHE"])
        self.kver = values["TB_KVER"]
        self.kdir = Path(values["TB_KDIR"])
        self.guest = Path(values["TB_GUEST"])
        self.qroot = Path(values["TB_QROOT"])
        self.kernel = self.guest / "boot" / ("vmlinuz-" + self.kver)
        self.moddir = self.guest / "lib" / "modules" / self.kver
        self.tool = Path(os.environ.get("TB_TOOL", REPO / "host-tool" / "tballoon"))
        self.module = Path(os.environ.get("TB_MODULE", REPO / "virtio_tballoon.ko"))
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
    if all(k in os.environ for k in KEYS):
        values = {k: os.environ[k] for k in KEYS}
    else:
        res = subprocess.run([str(REPO / "scripts" / "setup"), "--env"],
                             stdout=subprocess.PIPE, stderr=sys.stderr,
                             universal_newlines=True)
        if res.returncode != 0:
            raise RuntimeError("scripts/setup --env failed (exit %d)" % res.returncode)
        values = {}
        for line in res.stdout.splitlines():
            key, sep, val = line.partition("=")
            if sep and key.startswith("TB_"):
                values[key] = val
        absent = [k for k in KEYS if k not in values]
        if absent:
            raise RuntimeError("scripts/setup --env did not print %s" % ", ".join(absent))
    _env = Env(values)
    return _env
