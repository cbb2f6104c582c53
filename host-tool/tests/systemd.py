#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`tballoon serve` as systemd runs it, on a machine where systemd is not
PID 1: the installed units pass `systemd-analyze verify`; socket activation
through `systemd-socket-activate` with READY=1 read from NOTIFY_SOCKET; log
priorities for journald; a SIGKILLed daemon restarted by an fd holder (the
stand-in for systemd's fd store, qemu-tests/tbtest/fdholder.py) takes the
same vhost-user connection back; one daemon per socket; socket mode and
group. Prints TAP.

Usage: systemd.py PATH/TO/tballoon
"""
import grp
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TOP, "qemu-tests"))
import frontend as fe  # noqa: E402  (the fake front-end; reads TB from argv)
from frontend import Guest, ctl, status, tap, wait_for  # noqa: E402
from tbtest.fdholder import FdHolder  # noqa: E402

TB = fe.TB


class Notify:
    """A NOTIFY_SOCKET the test reads."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait(self, key, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            msg = self.sock.recv(4096).decode()
            if key in msg.split("\n"):
                return msg
        return None

    def close(self):
        self.sock.close()


def test_install(tmp):
    dest = os.path.join(tmp, "dest")
    p = subprocess.run(["make", "-s", "-C", TOP, "install", "DESTDIR=" + dest],
                       capture_output=True, text=True)
    files = sorted(os.path.relpath(os.path.join(d, f), dest)
                   for d, _, fs in os.walk(dest) for f in fs)
    want = ["usr/local/bin/tballoon", "usr/local/lib/python3/dist-packages/tballoon.py",
            "usr/local/lib/systemd/system/tballoon-serve@.service",
            "usr/local/lib/systemd/system/tballoon-serve@.socket",
            "usr/local/share/man/man8/tballoon.8"]
    tap(p.returncode == 0 and files == want,
        "install: make install DESTDIR= installs %s" % ", ".join(want))
    if files != want:
        sys.stderr.write("installed: %r\n%s" % (files, p.stderr))
    p = subprocess.run(["make", "-s", "-C", TOP, "uninstall", "DESTDIR=" + dest],
                       capture_output=True, text=True)
    left = [f for _, _, fs in os.walk(dest) for f in fs]
    tap(p.returncode == 0 and not left, "install: make uninstall removes them (%d left)"
        % len(left))

    # systemd-analyze verify: units installed for real paths, an instance
    prefix = os.path.join(tmp, "usr")
    p = subprocess.run(["make", "-s", "-C", TOP, "install", "PREFIX=" + prefix],
                       capture_output=True, text=True)
    unitdir = os.path.join(prefix, "lib", "systemd", "system")
    for kind in ("service", "socket"):
        os.symlink("tballoon-serve@." + kind,
                   os.path.join(unitdir, "tballoon-serve@vm1." + kind))
    with open(os.path.join(unitdir, "tballoon-serve@.service")) as f:
        unit = f.read()
    v = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        os.path.join(unitdir, "tballoon-serve@vm1.service"),
                        os.path.join(unitdir, "tballoon-serve@vm1.socket")],
                       capture_output=True, text=True)
    tap(p.returncode == 0 and v.returncode == 0 and not v.stderr.strip() and
        "ExecStart=%s/bin/tballoon serve" % prefix in unit,
        "systemd: systemd-analyze verify accepts tballoon-serve@vm1.service and .socket")
    if v.returncode or v.stderr.strip():
        sys.stderr.write(v.stderr)
    tap("Type=notify" in unit and "FileDescriptorStoreMax=" in unit and
        "RuntimeDirectory=tballoon" in unit and "StateDirectory=tballoon" in unit,
        "systemd: the service is Type=notify with an fd store, runtime and state directory")


def test_socket_activation(tmp):
    vu, cp = os.path.join(tmp, "sa-vu.sock"), os.path.join(tmp, "sa-ctl.sock")
    n = Notify(os.path.join(tmp, "sa-notify.sock"))
    log = open(os.path.join(tmp, "sa.log"), "w")
    sa = subprocess.Popen(["systemd-socket-activate", "-l", vu, "-l", cp,
                           "--fdname=tballoon:tballoon", "-E", "NOTIFY_SOCKET=" + n.path,
                           TB, "serve", "--socket-path", vu, "--control", cp, "-v"],
                          stdout=log, stderr=log)
    try:
        ok = wait_for(lambda: os.path.exists(cp) and os.path.exists(vu))
        ino = (os.stat(vu).st_ino, os.stat(cp).st_ino)
        # the first connection makes systemd-socket-activate start the daemon
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(cp)
        greeting = c.recv(4096)
        ready = n.wait("READY=1")
        c.close()
        tap(ok and b"QMP" in greeting and ready is not None,
            "socket activation: the first client starts serve, READY=1 on NOTIFY_SOCKET")
        tap((os.stat(vu).st_ino, os.stat(cp).st_ino) == ino,
            "socket activation: both sockets are the passed ones, not bound again")
        g = Guest(vu)
        g.negotiate()
        s = status(cp)
        tap(s["connected"] and s["driver_ok"], "socket activation: a front-end on the passed "
            "vhost-user socket gets a session")
        g.close()
        sa.send_signal(signal.SIGTERM)
        stopping = n.wait("STOPPING=1")
        rc = sa.wait(10)
        tap(stopping is not None and rc == 0, "socket activation: STOPPING=1 and exit 0 on SIGTERM")
    finally:
        if sa.poll() is None:
            sa.kill()
            sa.wait()
        log.close()
        n.close()
    with open(os.path.join(tmp, "sa.log")) as f:
        text = f.read()
    tap("passed in by the service manager" in text and
        os.path.exists(vu) and os.path.exists(cp),
        "socket activation: serve says so and leaves the manager's socket files alone")


def test_journal_prefix(tmp):
    logp = os.path.join(tmp, "journal.log")
    vu, cp = os.path.join(tmp, "j-vu.sock"), os.path.join(tmp, "j-ctl.sock")
    with open(logp, "w") as log:
        st = os.fstat(log.fileno())
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        srv = subprocess.Popen([TB, "serve", "--socket-path", vu, "--control", cp],
                               stderr=log, env=env)
        wait_for(lambda: os.path.exists(cp))
        srv.terminate()
        srv.wait(10)
    with open(logp) as f:
        lines = f.read().splitlines()
    tap(lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines) and
        any(line.startswith("<6>") for line in lines),
        "journal: with stderr as JOURNAL_STREAM every line has a syslog priority (%s)"
        % (lines[0][:40] if lines else "no output"))


def test_fd_store_restart(tmp):
    vu, cp = os.path.join(tmp, "fs-vu.sock"), os.path.join(tmp, "fs-ctl.sock")
    state = os.path.join(tmp, "fs-state.json")
    h = FdHolder([TB, "serve", "--socket-path", vu, "--control", cp, "--state-file", state,
                  "-v", "-v"], [vu, cp], os.path.join(tmp, "fs-notify.sock"),
                 os.path.join(tmp, "fs.log"))
    try:
        h.start()
        g = Guest(vu)
        g.negotiate()
        p = ctl(cp, "inflate", "--to", "3072p", "--deadline", "20s")
        g.wait_config_change()
        cmd = g.cfg(fe.O_CMD)
        g.report(cmd, fe.ST_RUNNING, 0)
        g.pfn_buffer(0, list(range(0, 1024)))
        g.wait_call(0)
        g.report(cmd, fe.ST_RUNNING, 1024)
        names = set(h.stored_names())
        want = {"vu-sock", "vu-backend", "vu-mem0", "vu-mem1", "vu-kick0", "vu-kick1",
                "vu-call0", "vu-call1"}
        tap(p.returncode == 0 and want <= names,
            "fd store: the session's socket, memory and eventfds are stored (%s)"
            % ",".join(sorted(names)))
        rc = h.kill()
        # the guest goes on: a buffer waits in the ring while no daemon runs
        g.pfn_buffer(0, list(range(4096, 5120)), gpa=fe.BUF_GPA + 0x4000)
        h.restart()
        s = status(cp)
        tap(rc == -9 and s["connected"] and s["driver_ok"] and s["command"]["cmd_id"] == cmd and
            s["command"]["state"] == "running",
            "fd store: after SIGKILL the restarted daemon has the same connection, "
            "driver ready, command %d running" % cmd)
        tap(g.wait_call(0) and g.used_idx(0) == 2,
            "fd store: the buffer queued during the outage is processed, no handshake replayed")
        g.report(cmd, fe.ST_RUNNING, 2048)
        g.pfn_buffer(0, list(range(5120, 6144)), gpa=fe.BUF_GPA + 0x8000)
        g.wait_call(0)
        g.report(cmd, fe.ST_DONE, 3072, elapsed=900)
        s = status(cp)
        blocks = os.fstat(g.memfd).st_blocks * 512
        tap(s["command"]["state"] == "done" and s["actual_pages"] == 3072 and
            s["device_pages"] == 3072 and s["released_bytes"] == 12 * fe.MiB and
            blocks == fe.RAM - 12 * fe.MiB,
            "fd store: the command ends done, 12 MiB released across both daemons")
        # the backend channel came back too: a new command is announced
        p = ctl(cp, "deflate", "--to", "0", "--deadline", "2s")
        tap(p.returncode == 0 and g.wait_config_change() is not None and
            g.cfg(fe.O_CMD) == cmd + 1,
            "fd store: config-change notifications reach the front-end after the restart")
        g.close()
        # the session ended: its fds leave the store
        tap(wait_for(lambda: not any(n.startswith("vu-") for n in h.stored_names())),
            "fd store: a session that ends is removed from the store")
    finally:
        h.close()


def test_one_daemon(tmp):
    srv, vu, cp = fe.start_serve(tmp, "one")
    try:
        p = subprocess.run([TB, "serve", "--socket-path", vu, "--control", cp],
                           capture_output=True, text=True, timeout=10)
        s = status(cp)
        tap(p.returncode == 1 and "another tballoon serve is running" in p.stderr and
            s["connected"] is False and srv.poll() is None,
            "one daemon: a second serve on the same paths is refused, the first still serves")
        p = subprocess.run([TB, "serve", "--socket-path", os.path.join(tmp, "other.sock"),
                            "--control", cp], capture_output=True, text=True, timeout=10)
        tap(p.returncode == 1 and "another tballoon serve" in p.stderr and
            not os.path.exists(os.path.join(tmp, "other.sock")),
            "one daemon: sharing only the control socket is refused too, nothing left behind")
        # a socket file that is no longer ours survives our exit
        os.unlink(cp)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(cp)
        ino = os.stat(cp).st_ino
        srv.terminate()
        rc = srv.wait(10)
        tap(rc == 0 and os.path.exists(cp) and os.stat(cp).st_ino == ino and
            not os.path.exists(vu),
            "one daemon: at exit only the sockets still ours are removed")
        other.close()
    finally:
        if srv.poll() is None:
            srv.kill()
    p = subprocess.run([TB, "serve", "--socket-path", os.path.join(tmp, "sd-vu.sock"),
                        "--control", os.path.join(tmp, "sd-ctl.sock"),
                        "--state-file", os.path.join(tmp, "missing", "state.json")],
                       capture_output=True, text=True, timeout=10)
    tap(p.returncode == 1 and "missing" in p.stderr and "No such file" in p.stderr and
        not os.path.exists(os.path.join(tmp, "sd-ctl.sock")),
        "state file: a missing directory is an error at start (%s)" % p.stderr.strip()[-60:])


def test_socket_group(tmp):
    gid = grp.getgrnam("daemon").gr_gid
    srv, vu, cp = fe.start_serve(tmp, "grp", "--socket-group", "daemon")
    try:
        modes = [(os.stat(x).st_mode & 0o777, os.stat(x).st_gid) for x in (vu, cp)]
        tap(modes == [(0o660, gid)] * 2,
            "socket group: both sockets 0660 and group daemon (%r)" % modes)
        os.chmod(tmp, 0o755)

        def as_user(group):
            return subprocess.run(["setpriv", "--reuid=nobody", "--regid=" + group,
                                   "--clear-groups", TB, "-c", cp, "status", "-j"],
                                  capture_output=True, text=True, timeout=10)
        a, b = as_user("daemon"), as_user("nogroup")
        tap(a.returncode == 0 and json.loads(a.stdout).get("connected") is False,
            "socket group: a member of the group may use the control socket")
        tap(b.returncode != 0, "socket group: a user outside it may not (exit %d)" % b.returncode)
        bad = subprocess.run([TB, "serve", "--socket-path", vu, "--control", cp,
                              "--socket-mode", "0666"], capture_output=True, text=True)
        tap(bad.returncode == 2 and "--socket-mode" in bad.stderr,
            "socket mode: a world-accessible mode is refused")
    finally:
        srv.terminate()
        srv.wait(10)


def main():
    tmp = tempfile.mkdtemp(prefix="tb-systemd-")
    os.chmod(tmp, 0o755)
    try:
        for t in (test_install, test_socket_activation, test_journal_prefix,
                  test_fd_store_restart, test_one_daemon, test_socket_group):
            try:
                t(tmp)
            except Exception as e:  # a hang or protocol error is a failure
                tap(False, "%s: exception %r" % (t.__name__, e))
    finally:
        if fe.failed:
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".log"):
                    with open(os.path.join(tmp, name)) as f:
                        sys.stderr.write("--- %s\n%s" % (name, f.read()[-3000:]))
        shutil.rmtree(tmp, ignore_errors=True)
    print("1..%d" % fe.n)
    sys.exit(1 if fe.failed else 0)


if __name__ == "__main__":
    main()
