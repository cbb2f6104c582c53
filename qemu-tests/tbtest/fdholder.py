# SPDX-License-Identifier: GPL-2.0
"""A minimal stand-in for systemd's service manager, for one service.

Where systemd is not PID 1 (the CI machine), this does for `tballoon serve`
what tballoon-serve@.socket and tballoon-serve@.service do under systemd:

- it creates the listening sockets itself and passes them to the service
  (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), so clients can connect while
  the service is down;
- it reads the service's notifications on NOTIFY_SOCKET (READY=1,
  STOPPING=1, STATUS=) and keeps its file descriptor store: FDSTORE=1 with
  FDNAME= stores the fds sent with the message under that name,
  FDSTOREREMOVE=1 with FDNAME= closes and drops them (sd_notify(3));
- restart() starts the service again with the listeners and every stored
  fd, named, as systemd does after a crash with Restart=on-failure.

Only what tballoon uses of the protocol is implemented.
"""
import array
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time


class FdHolder:
    def __init__(self, argv, listen_paths, notify_path, logfile, listen_name="tballoon"):
        self.argv = list(argv)
        self.logfile = str(logfile)
        self.listeners = []
        for p in listen_paths:
            try:
                os.unlink(str(p))
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(p))
            os.chmod(str(p), 0o600)
            s.listen(16)
            self.listeners.append(s)
        self.listen_name = listen_name
        self.notify_path = str(notify_path)
        try:
            os.unlink(self.notify_path)
        except FileNotFoundError:
            pass
        self.nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.nsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.nsock.bind(self.notify_path)
        self.lock = threading.Lock()
        self.store = []             # [(name, fd)], in arrival order
        self.messages = []          # every notification, decoded
        self.ready = threading.Event()
        self.starts = 0
        self.proc = None
        self.closed = False
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    # --- the notify socket ----------------------------------------------
    def _reader(self):
        fds_size = socket.CMSG_SPACE(64 * array.array("i").itemsize)
        while not self.closed:
            try:
                data, anc, _flags, _addr = self.nsock.recvmsg(4096, fds_size)
            except OSError:
                return
            fds = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                    fds.extend(a)
            self._handle(data.decode(errors="replace"), fds)

    def _handle(self, text, fds):
        kv = {}
        for line in text.split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                kv[k] = v
        with self.lock:
            self.messages.append(kv)
            name = kv.get("FDNAME", "stored")
            if kv.get("FDSTOREREMOVE") == "1":
                keep = []
                for n, fd in self.store:
                    if n == name:
                        os.close(fd)
                    else:
                        keep.append((n, fd))
                self.store = keep
            if kv.get("FDSTORE") == "1":
                for fd in fds:
                    self.store.append((name, fd))
                fds = []
        for fd in fds:              # sent without FDSTORE=1: not ours to keep
            os.close(fd)
        if kv.get("READY") == "1":
            self.ready.set()

    # --- the service ------------------------------------------------------
    def stored_names(self):
        with self.lock:
            return [n for n, _ in self.store]

    def start(self, timeout=10.0):
        """Start the service with the listeners and the fd store; wait for READY=1."""
        with self.lock:
            passed = [s.fileno() for s in self.listeners] + [fd for _, fd in self.store]
            names = [self.listen_name] * len(self.listeners) + [n for n, _ in self.store]
        self.ready.clear()
        env = dict(os.environ, LISTEN_FDS=str(len(passed)),
                   LISTEN_FDNAMES=":".join(names), NOTIFY_SOCKET=self.notify_path)
        env.pop("LISTEN_PID", None)
        n = len(passed)

        def place_fds():
            # move every fd out of the way first (above any target), then
            # to 3, 4, ...
            floor = max([3 + n] + [fd + 1 for fd in passed])
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, floor) for fd in passed]
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)
            for fd in high:
                os.close(fd)
            os.setpgid(0, 0)

        # LISTEN_PID must be the service's own pid: set it in a shell that
        # then execs the service.
        argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'] + self.argv
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         pass_fds=tuple(range(3, 3 + n)),
                                         preexec_fn=place_fds)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError("service exited with %d before READY=1"
                                   % self.proc.returncode)
            if time.monotonic() > deadline:
                raise RuntimeError("no READY=1 within %.0f s" % timeout)
        return self.proc

    def kill(self, sig=signal.SIGKILL, timeout=30.0):
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=timeout)

    def restart(self, timeout=10.0):
        """What systemd does after the service crashed (Restart=on-failure)."""
        if self.proc is not None:
            self.kill()
        return self.start(timeout)

    def close(self):
        self.kill(signal.SIGTERM)
        self.closed = True
        self.nsock.close()
        with self.lock:
            for _, fd in self.store:
                os.close(fd)
            self.store = []
        for s in self.listeners:
            s.close()
        try:
            os.unlink(self.notify_path)
        except FileNotFoundError:
            pass
