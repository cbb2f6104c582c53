# SPDX-License-Identifier: GPL-2.0
"""One test guest: run directory, tballoon backend, QEMU, guest agent.

    with Guest(driver="tballoon", device="tballoon") as g:
        g.sh("cat /proc/meminfo")
        g.tool("status", "--json")

Every process is started in its own session (process group) with a parent-
death signal, and Guest.close() (run by the context manager on every exit
path, exceptions and Ctrl-C included) kills the groups and removes the run
directory unless it is kept. QEMU runs from the trixie root ($TB_QROOT) in a
private mount namespace, where the run directory is bind-mounted on
$TB_QROOT/tb-run: the mount disappears with the QEMU process.
"""

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import env as tbenv
from . import initramfs as tbinitramfs

import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "host-tool" / "python"))
import tballoon  # noqa: E402  (the supported client of the control socket)

# Inside the QEMU root, the run directory is seen here, and the harness's
# cache (kernel, initramfs archives) read-only here.
CHROOT_RUN = "/tb-run"
CHROOT_CACHE = "/tb-cache"
# Guest RAM backed by transparent huge pages (Guest(ram="thp")): a tmpfs
# mounted with huge=always in QEMU's private namespace, here in the root.
CHROOT_RAM = "/tb-ram"
RAM_BACKINGS = ("memfd", "thp")

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """preexec_fn: new session, and SIGKILL if the harness dies (even by -9)."""
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kill_group(proc, grace=5.0):
    """Stop PROC's process group: SIGTERM, then SIGKILL after GRACE s."""
    if proc is None:
        return None
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    # Leftovers of the group (the leader may be gone already).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def parse_size_kib(text):
    """KiB in a QEMU size such as 1G, 1200M or 524288k."""
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    text = text.strip().lower()
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text) // 1024


def tail(path, lines=40):
    """Last LINES lines of a text file, or a note that it is absent."""
    try:
        with open(str(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as err:
        return ["(%s: %s)" % (path, err.strerror)]
    return data.splitlines()[-lines:]


class GuestError(Exception):
    """The guest or one of its processes failed; message says how."""


class AgentTimeout(GuestError):
    pass


class Result:
    """Outcome of a command run in the guest."""

    def __init__(self, rc, raw_out, raw_err):
        self.rc = rc
        self.raw_out = raw_out      # bytes, as the command wrote them
        self.out = raw_out.decode("utf-8", "replace")
        self.err = raw_err.decode("utf-8", "replace")

    def __repr__(self):
        return "Result(rc=%r, out=%r, err=%r)" % (self.rc, self.out[:200], self.err[:200])


class Agent:
    """Host end of tb-agent (guest/tb-agent) on the guest's ttyS1.

    QEMU connects to our listening socket as a chardev client, so nothing the
    guest writes is lost before we accept.
    """

    def __init__(self, listener, alive):
        self.listener = listener
        self.alive = alive          # check_alive(settle=0): raises if QEMU died
        self.conn = None
        self.buf = b""
        self.seq = 0
        self.transcript = []        # (id, command, rc) for debugging

    def _recv_line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentTimeout("guest agent did not answer in time")
            self.conn.settimeout(min(left, 0.5))
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                self.alive()
                continue
            if not chunk:
                self.alive(settle=5.0)      # QEMU closing: say why
                raise GuestError("guest agent connection closed (QEMU still running)")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("ascii", "replace")

    def reattach(self, timeout):
        """Accept a new QEMU's connection to the same guest (after a live
        migration): the guest's agent runs on and says nothing new."""
        old, self.conn, self.buf = self.conn, None, b""
        if old is not None:
            old.close()
        self._accept(time.monotonic() + timeout)

    def _accept(self, deadline):
        """QEMU's connection to our listener, by DEADLINE."""
        while self.conn is None:
            self.listener.settimeout(0.5)
            try:
                self.conn, _ = self.listener.accept()
            except socket.timeout:
                self.alive()
                if time.monotonic() > deadline:
                    raise AgentTimeout("QEMU did not connect the agent serial port")

    def connect(self, timeout):
        """Accept QEMU's connection and wait for TBREADY."""
        deadline = time.monotonic() + timeout
        self._accept(deadline)
        while self._recv_line(deadline) != "TBREADY":
            pass

    def run(self, command, timeout=60.0):
        """Run COMMAND with /bin/sh in the guest; return a Result."""
        self.seq += 1
        cid = self.seq
        payload = base64.b64encode(command.encode())
        self.conn.sendall(b"TBCMD %d %s\n" % (cid, payload))
        deadline = time.monotonic() + timeout
        parts = {"out": [], "err": []}
        cur = None
        while True:
            line = self._recv_line(deadline)
            words = line.split()
            if len(words) >= 2 and words[0] in ("TBOUT", "TBERR", "TBEND") \
                    and words[1] == str(cid):
                if words[0] == "TBEND":
                    rc = int(words[2])
                    break
                cur = "out" if words[0] == "TBOUT" else "err"
            elif cur is not None:
                parts[cur].append(line)
        self.transcript.append((cid, command, rc))
        return Result(rc, base64.b64decode("".join(parts["out"])),
                      base64.b64decode("".join(parts["err"])))


class Guest:
    """A booted guest with (optionally) the tballoon backend attached.

    driver: what /init loads: "tballoon", "upstream" or "none".
    device: "tballoon" (vhost-user device served by tballoon serve),
            "stock" (QEMU's virtio-balloon-pci), or "none".
    """

    def __init__(self, driver="tballoon", device="tballoon", mem="1G", smp=2,
                 kvm=False, keep=False, name="guest", log=None, boot_timeout=180.0,
                 extra_append="", bzimage=False, reconnect_ms=None, backend_args=(),
                 qemu_listens=False, stock_props="", fd_holder=False, allow_reboot=False,
                 device_props="", root_port=False, serve_qmp=False, ram="memfd"):
        self.env = tbenv.load()
        if ram not in RAM_BACKINGS:
            raise ValueError("ram=%r: not one of %s" % (ram, ", ".join(RAM_BACKINGS)))
        # how the host backs guest RAM: "memfd" (4 KiB shmem pages) or
        # "thp" (a file on a huge=always tmpfs of the QEMU process's own:
        # 2 MiB transparent huge pages, so a punched 2 MiB block is one page)
        self.ram = ram
        self.driver = driver
        self.device = device
        self.mem = mem
        if self.env.which == "debug":
            # KASAN's shadow (1/8 of RAM) and lockdep's tables cost the debug
            # kernel ~135 MiB of a 1 GiB guest: give it that back, so the
            # scenarios' sizes (e.g. 900 MiB targets) fit as on Debian's.
            mib_ = int(mem[:-1]) * (1024 if mem.endswith("G") else 1)
            self.mem = "%dM" % (mib_ + mib_ * 5 // 32)
        self.smp = smp
        self.kvm = kvm
        self.keep = keep
        self.name = name
        self.log = log or (lambda msg: None)
        self.boot_timeout = boot_timeout
        self.extra_append = extra_append
        self.bzimage = bzimage      # boot the bzImage, not the PVH vmlinux
        # extra virtio-balloon-pci properties for device="stock",
        # e.g. "deflate-on-oom=on"
        self.stock_props = stock_props
        # extra vhost-user-test-device-pci properties, e.g. "vq_size=1"
        self.device_props = device_props
        # the balloon device behind a PCIe root port (bus rp1): hot-unpluggable
        self.root_port = root_port
        # device="stock" driven by `tballoon serve --qmp` on a second QMP
        # monitor of its own (tbqmp.sock; QEMU serves one client per monitor,
        # qmp.sock stays the harness's)
        self.serve_qmp = serve_qmp
        self.reconnect_ms = reconnect_ms    # QEMU re-connects to a restarted backend
        self.backend_args = tuple(backend_args)     # extra `tballoon serve` options
        # QEMU listens on tb.sock (server=on,wait=on) and the harness connects
        # and hands the socket to `tballoon serve --fd`: a killed backend can
        # be replaced while the guest runs (QEMU re-runs the handshake).
        self.qemu_listens = qemu_listens
        # `tballoon serve` runs under tbtest.fdholder, the stand-in for
        # systemd: it holds tb.sock and control.sock, reads READY=1 and keeps
        # the fd store, so a restarted backend takes QEMU's connection back
        # (QEMU 11.1's vhost-user-test-device cannot re-attach by itself).
        self.fd_holder = fd_holder
        self.holder = None
        self.allow_reboot = allow_reboot    # no -no-reboot: Guest.reboot() works
        self.kernel = None          # host path of what QEMU boots
        self.rundir = None
        self.backend = None
        self.qemu = None
        self.agent = None
        self.listener = None
        self.failed = False
        self.boot_s = None
        self.initramfs = None
        self.driver_status = None

    # ---- paths -----------------------------------------------------------

    def path(self, name):
        return self.rundir / name

    @property
    def console_log(self):
        return self.path("console.log")

    @property
    def backend_log(self):
        return self.path("backend.log")

    @property
    def qemu_log(self):
        return self.path("qemu.log")

    @property
    def control(self):
        return self.path("control.sock")

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.failed = True
            self.close()
            raise
        return self

    def __exit__(self, etype, value, tb):
        if etype is not None:
            self.failed = True
        self.close()
        return False

    def _mkrundir(self):
        out = self.env.out
        # Socket paths must fit sun_path (108 bytes): deep checkouts use /tmp.
        if len(str(out)) > 60:
            out = Path(tempfile.gettempdir()) / "tballoon-qemu-tests"
            self.log("%s is too deep for socket paths, run directories go to %s"
                     % (self.env.out, out))
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.rundir = Path(tempfile.mkdtemp(prefix="%s-%s-" % (stamp, self.name),
                                            dir=str(out)))
        os.chmod(str(self.rundir), 0o755)

    def start(self):
        missing = [m for m in self.env.missing()
                   if not m.startswith(("host tool", "guest module"))]
        if missing:
            raise GuestError("cannot boot: missing " + "; ".join(missing))
        self.initramfs = tbinitramfs.build(self.env, self.log)
        # The debug kernel (tinyconfig-based, KASAN) prints nothing when
        # entered through PVH under QEMU 11.1: it boots as a bzImage, as
        # the skip-zero kernel built the same way does.
        if not self.bzimage and self.env.which not in tbenv.BUILT:
            self.kernel = tbinitramfs.pvh_kernel(self.env, self.log)
        if self.kernel is None:
            # The bzImage is outside the cache: put a copy there (again when
            # the kernel was rebuilt under the same version).
            self.kernel = self.initramfs.path.parent / ("vmlinuz-" + self.env.kver)
            src = self.env.kernel.stat()
            if (not self.kernel.exists() or self.kernel.stat().st_size != src.st_size or
                    self.kernel.stat().st_mtime < src.st_mtime):
                shutil.copy2(str(self.env.kernel), str(self.kernel))
        self._mkrundir()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path("agent.sock")))
        self.listener.listen(1)
        if self.device == "tballoon" and not self.qemu_listens:
            self._start_backend()
        t0 = time.monotonic()
        self._start_qemu()
        if self.device == "tballoon" and self.qemu_listens:
            self._connect_backend()
        if self.device == "stock" and self.serve_qmp:
            self._start_qmp_backend()
        self.agent = Agent(self.listener, self.check_alive)
        self.agent.connect(self.boot_timeout)
        self.boot_s = time.monotonic() - t0
        res = self.sh("cat /run/tb-driver")
        self.driver_status = res.out.split()[1] if res.rc == 0 and res.out.split() else "?"

    def _start_backend(self, mode="wb"):
        if not self.env.tool.exists():
            raise GuestError("host tool missing: %s (make -C host-tool)" % self.env.tool)
        sock = self.path("tb.sock")
        argv = [str(self.env.tool), "serve", "--socket-path", str(sock),
                "--control", str(self.control), "-v"] + self._backend_args()
        if self.fd_holder:
            if self.holder is None:
                from . import fdholder
                self.holder = fdholder.FdHolder(argv, [sock, self.control],
                                                self.path("notify.sock"), self.backend_log)
            try:
                self.backend = self.holder.start()
            except RuntimeError as e:
                raise GuestError("tballoon serve under the fd holder: %s\n%s" % (
                    e, "\n".join(tail(self.backend_log, 20))))
            return
        with open(str(self.backend_log), mode) as logf:
            self.backend = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while not (sock.exists() and self.control.exists()):
            if self.backend.poll() is not None:
                raise GuestError("tballoon serve exited with %d before listening:\n%s" % (
                    self.backend.returncode, "\n".join(tail(self.backend_log, 20))))
            if time.monotonic() > deadline:
                raise GuestError("tballoon serve did not create %s and %s in 10 s"
                                 % (sock.name, self.control.name))
            time.sleep(0.05)

    def _connect_backend(self, mode="wb"):
        """Connect to QEMU's tb.sock and run `tballoon serve --fd` on it."""
        sock_path = self.path("tb.sock")
        deadline = time.monotonic() + 30
        conn = None
        while conn is None:
            self.check_alive()
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(sock_path))
            except OSError:
                conn.close()
                conn = None
                if time.monotonic() > deadline:
                    raise GuestError("QEMU did not listen on %s in 30 s" % sock_path)
                time.sleep(0.05)
        try:
            argv = [str(self.env.tool), "serve", "--fd", str(conn.fileno()),
                    "--control", str(self.control), "-v"] + self._backend_args()
            with open(str(self.backend_log), mode) as logf:
                self.backend = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                                stderr=subprocess.STDOUT,
                                                pass_fds=(conn.fileno(),),
                                                preexec_fn=_die_with_parent)
        finally:
            conn.close()
        deadline = time.monotonic() + 10
        while not self.control.exists():
            if self.backend.poll() is not None:
                raise GuestError("tballoon serve --fd exited with %d:\n%s" % (
                    self.backend.returncode, "\n".join(tail(self.backend_log, 20))))
            if time.monotonic() > deadline:
                raise GuestError("tballoon serve did not create %s in 10 s" % self.control.name)
            time.sleep(0.05)

    def _start_qmp_backend(self, mode="wb", sock_name="tbqmp.sock"):
        """`tballoon serve --qmp RUN/tbqmp.sock` once QEMU listens on it."""
        sock = self.path(sock_name)
        deadline = time.monotonic() + 30
        while not sock.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise GuestError("QEMU did not create %s in 30 s" % sock.name)
            time.sleep(0.05)
        argv = [str(self.env.tool), "serve", "--qmp", str(sock),
                "--control", str(self.control), "-v"] + self._backend_args()
        with open(str(self.backend_log), mode) as logf:
            self.backend = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 15
        while not self.control.exists():
            if self.backend.poll() is not None:
                raise GuestError("tballoon serve --qmp exited with %d:\n%s" % (
                    self.backend.returncode, "\n".join(tail(self.backend_log, 20))))
            if time.monotonic() > deadline:
                raise GuestError("tballoon serve --qmp did not create %s in 15 s"
                                 % self.control.name)
            time.sleep(0.05)

    def _backend_args(self):
        """backend_args with {rundir} replaced by the run directory."""
        return [a.replace("{rundir}", str(self.rundir)) for a in self.backend_args]

    def kill_backend(self, sig=signal.SIGKILL):
        """Kill `tballoon serve` with SIG (QEMU and the guest keep running)."""
        proc, self.backend = self.backend, None
        if proc is None:
            return None
        if self.holder is not None:
            return self.holder.kill(sig)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=30)

    def restart_backend(self):
        """Start `tballoon serve` again with the same sockets (log appended)."""
        if self.fd_holder:
            # the holder keeps the sockets and the fd store: nothing to unlink
            self._start_backend(mode="ab")
            return
        names = ("control.sock",) if self.qemu_listens else ("tb.sock", "control.sock")
        for name in names:
            try:
                os.unlink(str(self.path(name)))
            except FileNotFoundError:
                pass
        if self.qemu_listens:
            self._connect_backend(mode="ab")
        else:
            self._start_backend(mode="ab")

    def ram_backend(self, oid, size, extra=""):
        """A -object memory backend ID of SIZE in this guest's RAM backing."""
        if self.ram == "thp":
            # align=2M: QEMU maps a file at 4 KiB alignment by default,
            # and a huge page needs address and file offset 2 MiB aligned
            obj = ("memory-backend-file,id=%s,size=%s,share=on,mem-path=%s/%s,align=2M"
                   % (oid, size, CHROOT_RAM, oid))
        else:
            obj = "memory-backend-memfd,id=%s,size=%s,share=on" % (oid, size)
        return obj + ("," + extra if extra else "")

    def qemu_argv(self):
        run = CHROOT_RUN
        append = "console=ttyS0 panic=-1 tb.driver=%s %s" % (self.driver, self.extra_append)
        argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config",
                "-display", "none"] + ([] if self.allow_reboot else ["-no-reboot"]) + [
                "-machine", "q35,memory-backend=mem",
                "-accel", "kvm" if self.kvm else "tcg",
                "-smp", str(self.smp), "-m", self.mem,
                "-object", self.ram_backend("mem", self.mem, "prealloc=on"),
                "-kernel", "%s/%s" % (CHROOT_CACHE, self.kernel.name),
                "-initrd", "%s/%s" % (CHROOT_CACHE, self.initramfs.path.name),
                "-append", append.strip(),
                "-chardev", "file,id=con,path=%s/console.log" % run,
                "-serial", "chardev:con",
                "-chardev", "socket,id=agent,path=%s/agent.sock" % run,
                "-serial", "chardev:agent",
                "-qmp", "unix:%s/qmp.sock,server=on,wait=off" % run]
        if self.kvm:
            argv += ["-cpu", "host"]
        if self.device == "tballoon":
            reconnect = (",reconnect-ms=%d" % self.reconnect_ms) if self.reconnect_ms else ""
            if self.qemu_listens:
                reconnect = ",server=on,wait=on"
            if self.root_port:
                # native PCIe hotplug (pciehp), not q35's ACPI hotplug of
                # root ports: the debug kernel has no ACPI PCI hotplug
                argv += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
                         "-device", "pcie-root-port,id=rp1,chassis=1,slot=1"]
            argv += ["-chardev", "socket,id=tb,path=%s/tb.sock%s" % (run, reconnect),
                     "-device", "vhost-user-test-device-pci,chardev=tb,virtio-id=5,"
                     # inflateq, deflateq, statsq and, when the backend
                     # offers free page reporting, reporting_vq
                     "num_vqs=%d,config_size=64"
                     % (4 if "--free-page-reporting" in self.backend_args else 3)
                     # an id and a bus for device_del (docs.py checks the rest
                     # against Documentation/host-tool.rst)
                     + (",id=tb0,bus=rp1" if self.root_port else "")
                     + ("," + self.device_props if self.device_props else "")]
        elif self.device == "stock":
            # free-page-hint=on needs an iothread: iothread=NAME creates it
            for prop in self.stock_props.split(","):
                if prop.startswith("iothread="):
                    argv += ["-object", "iothread,id=%s" % prop.split("=", 1)[1]]
            argv += ["-device", "virtio-balloon-pci,id=balloon0"
                     + ("," + self.stock_props if self.stock_props else "")]
            if self.serve_qmp:
                argv += ["-chardev", "socket,id=tbqmp,path=%s/tbqmp.sock,server=on,wait=off"
                         % run, "-mon", "chardev=tbqmp,mode=control"]
        return argv

    def migrate(self, timeout=600.0, backend=True):
        """Live-migrate the guest to a second QEMU on this machine.

        The destination runs with the same arguments, its own sockets
        (RUN/<name>-N.sock) and `-incoming unix:RUN/migrate-N.sock`; the
        source is migrated with QMP `migrate`, then killed, and this Guest
        goes on with the destination (QEMU, agent, QMP sockets). With
        backend and serve_qmp, `tballoon serve --qmp` is started anew on the
        destination's monitor (the balloon size travels in QEMU's device
        state; a daemon per QEMU). Returns the source's final query-migrate.
        """
        self.migrations = getattr(self, "migrations", 0) + 1
        k = self.migrations
        run = CHROOT_RUN
        sfx = "-%d" % k
        # qemu_argv() names the first QEMU's sockets; the k-th gets NAME-k
        names = {"qmp": "qmp.sock", "tbqmp": "tbqmp.sock", "agent": "agent.sock",
                 "console": "console.log"}
        cur = getattr(self, "sock_names", names)
        new = {key: "%s%s.%s" % (v.rsplit(".", 1)[0], sfx, v.rsplit(".", 1)[1])
               for key, v in names.items()}
        argv = self.qemu_argv()
        for key in names:
            argv = [a.replace("%s/%s" % (run, names[key]), "%s/%s" % (run, new[key]))
                    for a in argv]
        msock = "migrate%s.sock" % sfx
        argv += ["-incoming", "unix:%s/%s" % (run, msock)]
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path(new["agent"])))
        listener.listen(1)
        src_qemu = self.qemu
        self._start_qemu(argv=argv, log_name="qemu%s.log" % sfx)
        dst_qemu = self.qemu
        self.qemu = src_qemu
        deadline = time.monotonic() + 60
        while not self.path(msock).exists():
            if dst_qemu.poll() is not None:
                raise GuestError("destination QEMU exited with %d:\n%s" % (
                    dst_qemu.returncode, "\n".join(tail(self.path("qemu%s.log" % sfx), 10))))
            if time.monotonic() > deadline:
                raise GuestError("destination QEMU did not listen on %s" % msock)
            time.sleep(0.05)
        src = Qmp(self.path(cur["qmp"]))
        try:
            src.command("migrate", uri="unix:%s/%s" % (run, msock))
            end = time.monotonic() + timeout
            info = {}
            while time.monotonic() < end:
                info = src.command("query-migrate")
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.1)
        finally:
            src.close()
        if info.get("status") != "completed":
            _kill_group(dst_qemu)
            raise GuestError("migration %s: %s" % (info.get("status"), info))
        # the source is paused now; it has done its part
        old_backend = self.backend if self.serve_qmp else None
        _kill_group(src_qemu)
        self.qemu = dst_qemu
        self.sock_names = new
        self.listener.close()
        self.listener = listener
        self.agent.listener = listener
        self.agent.reattach(60)
        if old_backend is not None and backend:
            _kill_group(old_backend)
            self.backend = None
            try:
                os.unlink(str(self.control))
            except FileNotFoundError:
                pass
            self._start_qmp_backend(mode="ab", sock_name=new["tbqmp"])
        return info

    def _start_qemu(self, argv=None, log_name="qemu.log"):
        qroot = self.env.qroot
        for d in (CHROOT_RUN, CHROOT_CACHE, CHROOT_RAM):
            (qroot / d.lstrip("/")).mkdir(exist_ok=True)
        # sh -c SCRIPT sh RUNDIR CACHEDIR QROOT QEMU-ARGV...: the mounts live
        # only in this private namespace, so they vanish with QEMU (a THP
        # tmpfs's files with the last fd: QEMU's and the backend's).
        ram = ""
        if self.ram == "thp":
            ram = ('mount -t tmpfs -o huge=always,mode=0700,size=%dk tbram "$3%s" && '
                   % (self.ram_limit_kib(), CHROOT_RAM))
        script = ('mount --bind "$1" "$3%s" && '
                  'mount --bind "$2" "$3%s" && mount -o remount,bind,ro "$3%s" && '
                  'mount -t proc proc "$3/proc" && %s'
                  'r=$3 && shift 3 && exec chroot "$r" "$@"'
                  % (CHROOT_RUN, CHROOT_CACHE, CHROOT_CACHE, ram))
        qargv = argv if argv is not None else self.qemu_argv()
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                str(self.rundir), str(self.initramfs.path.parent), str(qroot)]
        argv += qargv
        with open(str(self.path(log_name.replace(".log", ".cmdline"))), "w") as f:
            f.write(" ".join(argv) + "\n")
        with open(str(self.path(log_name)), "wb") as logf:
            self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)

    def check_alive(self, settle=0.0):
        """Raise GuestError if QEMU or the backend died.

        settle: seconds to give a QEMU that is probably exiting to finish.
        """
        if self.qemu is not None and settle:
            try:
                self.qemu.wait(timeout=settle)
            except subprocess.TimeoutExpired:
                pass
        if self.qemu is not None and self.qemu.poll() is not None:
            raise GuestError("QEMU exited with %d; qemu.log:\n%s\nconsole tail:\n%s" % (
                self.qemu.returncode, "\n".join(tail(self.qemu_log, 10)),
                "\n".join(tail(self.console_log, 25))))
        if self.backend is not None and self.backend.poll() is not None:
            raise GuestError("tballoon serve exited with %d; backend.log tail:\n%s" % (
                self.backend.returncode, "\n".join(tail(self.backend_log, 20))))

    def close(self):
        """Kill QEMU and the backend, close sockets; keep or remove the run dir."""
        if self.agent is not None and self.agent.conn is not None:
            self.agent.conn.close()
        if self.listener is not None:
            self.listener.close()
        qrc = _kill_group(self.qemu)
        brc = _kill_group(self.backend)
        if self.holder is not None:
            self.holder.close()
            self.holder = None
        self.qemu = self.backend = None
        if self.rundir is None:
            return
        with open(str(self.path("exit-codes")), "w") as f:
            f.write("qemu %s\nbackend %s\n" % (qrc, brc))
        if self.agent is not None:
            with open(str(self.path("agent.transcript")), "w") as f:
                for cid, cmd, rc in self.agent.transcript:
                    f.write("# %d rc=%d\n%s\n" % (cid, rc, cmd))
        if self.keep or self.failed:
            self.log("run directory kept: %s" % self.rundir)
        else:
            shutil.rmtree(str(self.rundir), ignore_errors=True)

    # ---- guest side ------------------------------------------------------

    # ---- host view of guest memory ---------------------------------------

    @property
    def qemu_pid(self):
        return self.qemu.pid if self.qemu is not None else None

    def ram_limit_kib(self):
        """Size of the THP tmpfs: every memory backend of the guest, plus 4 MiB."""
        return (parse_size_kib(self.mem) + self.extra_ram_kib()) + 4096

    def extra_ram_kib(self):
        """Guest RAM beyond -m in memory backends of a subclass (virtio-mem)."""
        return 0

    def memfds(self):
        """{name: {size, allocated}} of the guest-RAM files QEMU holds: its
        memfds, or the files of a THP tmpfs (distinct inodes)."""
        pid = self.qemu_pid
        seen = {}
        fddir = "/proc/%d/fd" % pid
        for fd in os.listdir(fddir):
            try:
                target = os.readlink("%s/%s" % (fddir, fd))
                # a THP file reads as the path in QEMU's namespace:
                # QROOT/tb-ram/ID, seen from here
                if not (target.startswith("/memfd:") or
                        (CHROOT_RAM + "/") in target):
                    continue
                st = os.stat("%s/%s" % (fddir, fd))
            except OSError:
                continue
            seen[st.st_ino] = {"name": target, "size": st.st_size,
                               "allocated": st.st_blocks * 512}
        return sorted(seen.values(), key=lambda m: -m["size"])

    def host_memory(self):
        """Allocated bytes of all guest memfds and QEMU's RssShmem."""
        fds = self.memfds()
        rss_shmem = None
        with open("/proc/%d/status" % self.qemu_pid) as f:
            for line in f:
                if line.startswith("RssShmem:"):
                    rss_shmem = int(line.split()[1]) * 1024
        return {"memfd_allocated": sum(m["allocated"] for m in fds),
                "memfd_size": sum(m["size"] for m in fds),
                "memfds": fds, "rss_shmem": rss_shmem}

    def sh(self, command, timeout=60.0):
        """Run a shell command in the guest; returns Result(rc, out, err)."""
        return self.agent.run(command, timeout)

    def reboot(self, timeout=180.0):
        """Reboot the guest (allow_reboot=True) and wait for its agent again."""
        self.agent.seq += 1
        payload = base64.b64encode(b"sync; reboot -f")
        self.agent.conn.sendall(b"TBCMD %d %s\n" % (self.agent.seq, payload))
        deadline = time.monotonic() + timeout
        while self.agent._recv_line(deadline) != "TBREADY":
            pass
        res = self.sh("cat /run/tb-driver")
        self.driver_status = res.out.split()[1] if res.rc == 0 and res.out.split() else "?"

    def meminfo(self):
        """/proc/meminfo of the guest as {key: kB}."""
        res = self.sh("cat /proc/meminfo")
        info = {}
        for line in res.out.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                info[key.strip()] = int(fields[0])
        return info

    def dmesg(self):
        return self.sh("dmesg", timeout=120).out

    # ---- host tool -------------------------------------------------------

    def tool(self, *args, timeout=300.0, capture=True):
        """Run host-tool/tballoon against this guest's control socket.

        Returns subprocess.CompletedProcess (stdout/stderr text if captured).
        """
        if not self.env.tool.exists():
            raise GuestError("host tool missing: %s" % self.env.tool)
        argv = [str(self.env.tool), "-c", str(self.control)] + [str(a) for a in args]
        kw = {}
        if capture:
            kw = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      universal_newlines=True)
        res = subprocess.run(argv, timeout=timeout, **kw)
        if capture:
            with open(str(self.path("tool.log")), "a") as f:
                f.write("$ %s\n-> exit %d\n%s%s" % (" ".join(argv), res.returncode,
                                                    res.stdout, res.stderr))
        return res

    def tool_json(self, *args, timeout=300.0):
        """Run a tool command with --json; returns (exit code, dict or None, stderr)."""
        res = self.tool(*(list(args) + ["--json"]), timeout=timeout)
        obj = None
        for line in reversed(res.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    pass
                break
        return res.returncode, obj, res.stderr

    def status(self):
        """The daemon's status object, through the supported Python client
        (host-tool/python/tballoon.py)."""
        try:
            with tballoon.Client(str(self.control), timeout=60) as c:
                return c.status()
        except (OSError, ValueError, tballoon.Error) as e:
            raise GuestError("status from %s: %s" % (self.control, e))


class Qmp:
    """Minimal QMP client for a guest's RUN/qmp.sock (stock balloon, quit)."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self.events = []
        self._read()                                # greeting
        self.command("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise GuestError("QMP connection closed")
        return json.loads(line.decode())

    def command(self, name, **arguments):
        """Execute NAME; return its "return" value or raise GuestError."""
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise GuestError("QMP %s: %s" % (name, reply["error"].get("desc")))
            return reply.get("return")

    def close(self):
        self.file.close()
        self.sock.close()
