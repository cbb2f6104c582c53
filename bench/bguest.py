# SPDX-License-Identifier: GPL-2.0
"""Benchmark guests: the qemu-tests Guest with bench tweaks.

BenchGuest boots the qemu-tests guest (same kernel, initramfs, agent, QEMU
root, cleanup) with:
- bench/guest/*.c built statically and appended to the harness initramfs as
  a second cpio archive (the kernel unpacks concatenated archives), cached in
  $TB_CACHE/qemu-tests/bench-initramfs-<hash>.cpio.gz;
- kind "virtio-mem": base RAM plus a virtio-mem-pci device on its own shared
  memfd (the rest of the guest's RAM).
The guest's memory on the host (st_blocks of the memfds the QEMU process
holds, RssShmem of QEMU) comes from machine.Guest.host_memory().
"""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "qemu-tests"))

from tbtest import machine  # noqa: E402
from tbtest import initramfs as tbinitramfs  # noqa: E402

GUEST_SRC = BENCH / "guest"
# zram swap for the policy benchmark (bench/policy.py), in load order: the
# guest has no modprobe, so the compressor zram asks for is loaded first
SWAP_MODULES = ["lzo_compress", "lzo_decompress", "lzo-rle", "zsmalloc", "zram"]
KEEP_OVERLAYS = 3
MIB = 1 << 20


def parse_size(text):
    units = {"K": 10, "M": 20, "G": 30}
    text = str(text)
    if text[-1:].upper() in units:
        return int(text[:-1]) << units[text[-1].upper()]
    return int(text)


def _build_kmods(kdir, dest, tmp):
    """Build bench/guest/kmod/*.c out of tree against KDIR into DEST."""
    build = Path(tmp) / "kmod"
    shutil.copytree(str(GUEST_SRC / "kmod"), str(build))
    subprocess.run(["make", "-s", "-C", str(kdir), "M=%s" % build, "modules"],
                   stdout=subprocess.DEVNULL, check=True)
    built = sorted(build.glob("*.ko"))
    for ko in built:
        shutil.copy2(str(ko), str(dest / ko.name))
    return ["lib/modules/" + ko.name for ko in built]


def _overlay(env, cachedir, log):
    """cpio.gz: bench/guest/*.c built into /bin, bench/guest/kmod into /lib/modules."""
    sources = sorted(GUEST_SRC.glob("*.c"))
    headers = sorted(GUEST_SRC.glob("*.h"))
    kmod = sorted((GUEST_SRC / "kmod").glob("*"))
    h = hashlib.sha256()
    gcc = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout.splitlines()[0]
    h.update(gcc.encode() + b"\0" + str(env.kdir).encode() + b"\0" + env.kver.encode())
    h.update(" ".join(SWAP_MODULES).encode())
    for src in sources + headers + kmod:
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    path = cachedir / ("bench-overlay-%s.cpio.gz" % h.hexdigest()[:16])
    if path.exists():
        return path
    log("building bench guest programs: %s" % ", ".join(s.name for s in sources + kmod
                                                        if s.suffix == ".c"))
    with tempfile.TemporaryDirectory(prefix="tb-bench.", dir=str(cachedir)) as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "lib" / "modules").mkdir(parents=True)
        for src in sources:
            subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
                            "-o", str(root / "bin" / src.stem), str(src)], check=True)
        names = ["bin"] + ["bin/" + s.stem for s in sources]
        if kmod:
            names += ["lib", "lib/modules"]
            names += _build_kmods(env.kdir, root / "lib" / "modules", tmp)
        for m in SWAP_MODULES:
            try:
                src = tbinitramfs._find_module(env.moddir, m)
            except FileNotFoundError:
                continue    # built in, or not in this kernel (the bench says so)
            (root / "lib" / "modules" / (m + ".ko")).write_bytes(tbinitramfs._module_bytes(src))
            names.append("lib/modules/%s.ko" % m)
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
                              cwd=str(root), input="\n".join(names).encode(),
                              stdout=subprocess.PIPE, check=True).stdout
        tmp_path = Path(tmp) / "overlay.cpio.gz"
        tmp_path.write_bytes(gzip.compress(cpio, 6, mtime=0))
        os.replace(str(tmp_path), str(path))
    old = sorted(cachedir.glob("bench-overlay-*.cpio.gz"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-KEEP_OVERLAYS]:
        if stale != path:
            stale.unlink()
    return path


def bench_initramfs(env, base, log):
    """The harness archive BASE followed by the bench overlay (same directory)."""
    cachedir = base.parent
    overlay = _overlay(env, cachedir, log)
    digest = hashlib.sha256(base.name.encode() + overlay.name.encode()).hexdigest()[:16]
    path = cachedir / ("bench-initramfs-%s.cpio.gz" % digest)
    if not path.exists():
        tmp = cachedir / ("bench-initramfs-%s.tmp%d" % (digest, os.getpid()))
        with open(str(tmp), "wb") as out:
            for part in (base, overlay):
                with open(str(part), "rb") as f:
                    shutil.copyfileobj(f, out)
        os.replace(str(tmp), str(path))
    old = sorted(cachedir.glob("bench-initramfs-*.cpio.gz"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-KEEP_OVERLAYS]:
        if stale != path:
            stale.unlink()
    return path


# Kernel command line added to every guest of the run (bench/run.py
# --guest-append), so that all four mechanisms see the same guest kernel.
COMMON_APPEND = ""
# How the host backs every guest's RAM (bench/run.py --ram): "memfd" or
# "thp" (2 MiB transparent huge pages, machine.Guest's ram="thp").
RAM = "memfd"


class BenchGuest(machine.Guest):
    """A qemu-tests Guest with the bench programs and optional virtio-mem.

    kind: "plain" (RAM = mem, one memfd) or "virtio-mem" (RAM = mem of base
    memory plus a virtio-mem device of vmem_size, requested fully plugged).
    """

    def __init__(self, kind="plain", vmem_size="1G", vmem_block="2M", **kw):
        kw["extra_append"] = ("%s %s" % (kw.get("extra_append", ""), COMMON_APPEND)).strip()
        kw.setdefault("ram", RAM)
        super().__init__(**kw)
        self.kind = kind
        self.vmem_size = vmem_size
        self.vmem_block = vmem_block
        self.bench_initrd = None

    def qemu_argv(self):
        argv = super().qemu_argv()
        self.bench_initrd = bench_initramfs(self.env, self.initramfs.path, self.log)
        i = argv.index("-initrd")
        argv[i + 1] = "%s/%s" % (machine.CHROOT_CACHE, self.bench_initrd.name)
        if self.kind == "virtio-mem":
            i = argv.index("-m")
            total = parse_size(self.mem) + parse_size(self.vmem_size)
            argv[i + 1] = "%s,maxmem=%dM" % (self.mem, total // MIB)
            argv += ["-object", self.ram_backend("vmem0", self.vmem_size),
                     "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=%s,"
                     "block-size=%s,prealloc=on" % (self.vmem_size, self.vmem_block)]
        return argv

    def extra_ram_kib(self):
        if self.kind == "virtio-mem":
            return parse_size(self.vmem_size) // 1024
        return 0

    def refill(self, nbytes):
        """Touch NBYTES in the guest (tbmem) and free them; returns seconds.

        Makes the guest's free pages host-resident again after a balloon
        deflate left holes (see bench/README.md).
        """
        t = time.monotonic()
        res = self.sh("tbmem -m touch %dM | tail -n 2" % (nbytes // MIB), timeout=600)
        if res.rc != 0:
            raise machine.GuestError("refill: tbmem failed (%d): %s %s"
                                     % (res.rc, res.out, res.err))
        return time.monotonic() - t

