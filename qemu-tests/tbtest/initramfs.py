# SPDX-License-Identifier: GPL-2.0
"""Build (and cache) the test initramfs.

Contents: busybox-static, the Debian virtio transport modules (those that
are not built into the kernel: all of them on 6.1, none on 6.12), the reference
balloon drivers (virtio_balloon, virtio_mem; the debug and skip-zero kernels have no
virtio_mem), our virtio_tballoon.ko when it
exists, the static programs built from qemu-tests/guest/*.c, /init and
/bin/tb-agent. The archive is cached under $TB_CACHE/qemu-tests/ by a hash of
all those inputs, so it is rebuilt exactly when one of them changes.
"""

import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import env as tbenv

# Bump when the layout below changes.
LAYOUT_VERSION = "3"

BUSYBOX = Path("/bin/busybox")

# Loaded by /init in this order (no modules.dep in the initramfs).
TRANSPORT = ["virtio_ring", "virtio", "virtio_pci_modern_dev",
             "virtio_pci_legacy_dev", "virtio_pci"]
# Reference peers, loaded only on request (tb.driver=upstream, tests).
REFERENCE = ["virtio_balloon", "virtio_mem"]

KEEP_ARCHIVES = 6


class Initramfs:
    """A built archive and what went into it."""

    def __init__(self, path, digest, has_module, module_digest, programs,
                 builtin=()):
        self.path = path
        self.digest = digest
        self.has_module = has_module
        self.module_digest = module_digest
        self.programs = programs
        self.builtin = tuple(builtin)   # TRANSPORT modules built into the kernel


def _find_module(moddir, name):
    """Path of NAME.ko[.xz|.zst] in the guest module tree."""
    for ext in (".ko", ".ko.xz", ".ko.zst"):
        hits = sorted(moddir.glob("kernel/**/" + name + ext))
        if hits:
            return hits[0]
    raise FileNotFoundError("module %s not found under %s" % (name, moddir))


def _builtin(moddir):
    """Names of the modules built into the guest kernel (modules.builtin)."""
    path = moddir / "modules.builtin"
    if not path.exists():
        return set()
    return {Path(line.strip()).name.split(".ko")[0]
            for line in path.read_text().splitlines() if line.strip()}


def _module_bytes(path):
    """Uncompressed module image (busybox insmod takes plain ELF only)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              stdout=subprocess.PIPE).stdout
    return data


def _gcc_version():
    res = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True)
    return res.stdout.splitlines()[0]


def _has_pvh_note(elf):
    """True if the ELF image has XEN_ELFNOTE_PHYS32_ENTRY (PVH boot entry)."""
    res = subprocess.run(["readelf", "-n", str(elf)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, universal_newlines=True)
    return res.returncode == 0 and "(0x00000012)" in res.stdout


def pvh_kernel(e=None, log=None):
    """The guest kernel as an uncompressed ELF vmlinux, or None.

    QEMU boots an ELF with a PVH note directly (no real-mode setup, no
    decompression), which halves the boot time under TCG. The bzImage's
    payload is XZ- (6.1) or ZSTD- (6.12) compressed: find the stream and
    decompress it, cached as
    $TB_CACHE/qemu-tests/vmlinux-<kver>.
    """
    e = e or tbenv.load()
    log = log or (lambda msg: None)
    outdir = e.cache / "qemu-tests"
    outdir.mkdir(parents=True, exist_ok=True)
    vmlinux = outdir / ("vmlinux-" + e.kver)
    stamp = outdir / ("vmlinux-" + e.kver + ".src")
    src_id = "%d %d" % (e.kernel.stat().st_size, e.kernel.stat().st_mtime_ns)
    if vmlinux.exists() and stamp.exists() and stamp.read_text() == src_id:
        return vmlinux
    data = e.kernel.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    zstart = data.find(b"\x28\xb5\x2f\xfd")    # Debian's 6.12: ZSTD payload
    if start >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(data[start:])
        except lzma.LZMAError as err:
            log("cannot decompress %s (%s): booting the bzImage" % (e.kernel, err))
            return None
    elif zstart >= 0:
        # zstd stops with an error at the bzImage's bytes after the frame;
        # the frame's output is complete (checked below: ELF with PVH note).
        elf = subprocess.run(["zstd", "-dcq"], input=data[zstart:], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
    else:
        log("no XZ or ZSTD payload in %s: booting the bzImage" % e.kernel)
        return None
    tmp = outdir / ("vmlinux-%s.tmp%d" % (e.kver, os.getpid()))
    tmp.write_bytes(elf)
    if elf[:4] != b"\x7fELF" or not _has_pvh_note(tmp):
        tmp.unlink()
        log("%s has no PVH entry: booting the bzImage" % e.kernel)
        return None
    os.replace(str(tmp), str(vmlinux))
    stamp.write_text(src_id)
    return vmlinux


def build(e=None, log=None):
    """Return an Initramfs for the current inputs, building it if needed."""
    e = e or tbenv.load()
    log = log or (lambda msg: None)
    builtin = sorted(n for n in TRANSPORT if n in _builtin(e.moddir))
    modules = {n: _find_module(e.moddir, n) for n in TRANSPORT + REFERENCE
               if n not in builtin and not (e.which in tbenv.BUILT and n == "virtio_mem")}
    sources = sorted(tbenv.GUEST_SRC.glob("*.c"))
    scripts = [tbenv.GUEST_SRC / "init", tbenv.GUEST_SRC / "tb-agent"]

    h = hashlib.sha256()

    def feed(label, data):
        h.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    feed("layout", LAYOUT_VERSION.encode())
    feed("busybox", BUSYBOX.read_bytes())
    feed("gcc", _gcc_version().encode())
    feed("builtin", " ".join(builtin).encode())
    for name, path in sorted(modules.items()):
        feed("mod:" + name, path.read_bytes())
    for path in sources + scripts:
        feed("src:" + path.name, path.read_bytes())
    module_digest = None
    if e.module.exists():
        mdata = _module_bytes(e.module)     # DKMS may install it compressed
        module_digest = hashlib.sha256(mdata).hexdigest()[:12]
        feed("tballoon", mdata)
    digest = h.hexdigest()[:16]

    outdir = e.cache / "qemu-tests"
    outdir.mkdir(parents=True, exist_ok=True)
    archive = outdir / ("initramfs-%s.cpio.gz" % digest)
    programs = [p.stem for p in sources]
    result = Initramfs(archive, digest, module_digest is not None,
                       module_digest, programs, builtin)
    if archive.exists():
        return result

    log("building initramfs %s (module %s)" % (digest, module_digest or "MISSING"))
    with tempfile.TemporaryDirectory(prefix="tb-initramfs.", dir=str(outdir)) as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "dev", "proc", "sys", "tmp", "run", "etc", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(BUSYBOX), str(root / "bin" / "busybox"))
        os.symlink("busybox", str(root / "bin" / "sh"))
        shutil.copy2(str(scripts[0]), str(root / "init"))
        shutil.copy2(str(scripts[1]), str(root / "bin" / "tb-agent"))
        for name, path in modules.items():
            (root / "lib" / "modules" / (name + ".ko")).write_bytes(_module_bytes(path))
        if module_digest:
            (root / "lib" / "modules" / "virtio_tballoon.ko").write_bytes(mdata)
        for src in sources:
            subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
                            "-o", str(root / "bin" / src.stem), str(src)], check=True)
        (root / "etc" / "tb-build-info").write_text(
            "initramfs=%s\nvirtio_tballoon=%s\n" % (digest, module_digest or "missing"))
        # Device nodes the kernel needs before devtmpfs is mounted.
        subprocess.run(["mknod", "-m", "600", str(root / "dev" / "console"), "c", "5", "1"],
                       check=True)
        subprocess.run(["mknod", "-m", "666", str(root / "dev" / "null"), "c", "1", "3"],
                       check=True)
        tmp_archive = Path(tmp) / "initramfs.cpio.gz"
        with open(str(tmp_archive), "wb") as out:
            find = subprocess.Popen(["find", ".", "-print0"], cwd=str(root),
                                    stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "--null", "-o", "-H", "newc", "--quiet",
                                     "-R", "0:0"], cwd=str(root), stdin=find.stdout,
                                    stdout=subprocess.PIPE)
            find.stdout.close()
            gz = subprocess.Popen(["gzip", "-6", "-n"], stdin=cpio.stdout, stdout=out)
            cpio.stdout.close()
            rcs = (gz.wait(), cpio.wait(), find.wait())
            if any(rcs):
                raise RuntimeError("initramfs archive failed: find/cpio/gzip exit %s" % (rcs,))
        os.replace(str(tmp_archive), str(archive))

    old = sorted(outdir.glob("initramfs-*.cpio.gz"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-KEEP_ARCHIVES]:
        stale.unlink()
    return result
