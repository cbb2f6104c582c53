# SPDX-License-Identifier: GPL-2.0
"""A vhost-user front-end proxy that re-attaches a restarted back-end.

QEMU 11.1's vhost-user-test-device cannot re-attach to a restarted back-end
(it aborts in vhost_dev_start). For the backend-restart scenario this proxy
sits between QEMU and `tballoon serve`: it forwards every message both ways,
keeps the session state (features, memory table, rings, and duplicates of
every fd), and when the back-end goes away it waits for a new one and
re-runs the handshake on it, as a reconnect-capable front-end does: rings
resume at the used index read from guest memory. QEMU sees a back-end that
was slow for a moment; requests it sent meanwhile wait and are replayed.

A back-end is only taken once it has answered the replayed handshake: a
connect() that succeeds proves nothing. When a back-end is SIGKILLed the
kernel releases its sockets one by one, the session socket (our EOF) before
its listening socket, so a prompt reconnect can land in the dying daemon's
listen backlog and be reset a moment later (ECONNRESET on the first reply).
Such a connection is dropped and the wait goes on.
"""

import os
import select
import socket
import struct
import threading
import time

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE = 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD = 18, 21
GET_CONFIG, GET_INFLIGHT_FD, GET_MAX_MEM_SLOTS = 24, 31, 36
EXPLICIT_REPLY = {GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_VRING_BASE,
                  GET_CONFIG, GET_INFLIGHT_FD, GET_MAX_MEM_SLOTS}
NEED_REPLY = 0x8
MAX_FDS = 8


class Msg:
    def __init__(self, req, flags, payload, fds):
        self.req, self.flags, self.payload, self.fds = req, flags, payload, list(fds)

    def raw(self, flags=None):
        f = self.flags if flags is None else flags
        return struct.pack("<III", self.req, f, len(self.payload)) + self.payload


def _recv_msg(sock):
    """One message with its fds, or None on EOF."""
    data, fds, _, _ = socket.recv_fds(sock, 12, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    while len(data) < 12:
        more = sock.recv(12 - len(data))
        if not more:
            return None
        data += more
    req, flags, size = struct.unpack("<III", data)
    payload = b""
    while len(payload) < size:
        more = sock.recv(size - len(payload))
        if not more:
            return None
        payload += more
    return Msg(req, flags, payload, fds)


def _send_msg(sock, msg, flags=None):
    if msg.fds:
        socket.send_fds(sock, [msg.raw(flags)], msg.fds)
    else:
        sock.sendall(msg.raw(flags))


class VuProxy:
    """Listen on FRONT_PATH for QEMU, connect to the back-end on BACK_PATH."""

    def __init__(self, front_path, back_path, log=lambda m: None):
        self.front_path = str(front_path)
        self.back_path = str(back_path)
        self.log = log
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.front_path)
        self.listener.listen(1)
        self.front = None
        self.back = None
        self.state = {}         # request -> Msg (session-wide)
        self.queues = {}        # index -> {request: Msg}
        self.stopped = set()    # queues stopped by GET_VRING_BASE
        self.reattached = 0
        self.closing = False
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # ---- session record -------------------------------------------------

    def _keep(self, msg):
        """Remember what a new back-end must be told; own dups of the fds."""
        kept = Msg(msg.req, msg.flags & ~NEED_REPLY, msg.payload,
                   [os.dup(fd) for fd in msg.fds])
        if msg.req in (SET_FEATURES, SET_PROTOCOL_FEATURES, SET_OWNER,
                       SET_BACKEND_REQ_FD, SET_MEM_TABLE):
            old = self.state.get(msg.req)
            self.state[msg.req] = kept
        elif msg.req in (SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_KICK,
                         SET_VRING_CALL, SET_VRING_ERR, SET_VRING_ENABLE):
            if msg.req in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
                idx = struct.unpack_from("<Q", msg.payload)[0] & 0xFF
            else:
                idx = struct.unpack_from("<I", msg.payload)[0]
            q = self.queues.setdefault(idx, {})
            old = q.get(msg.req)
            q[msg.req] = kept
            if msg.req == SET_VRING_KICK:
                self.stopped.discard(idx)
        else:
            for fd in kept.fds:
                os.close(fd)
            return
        if old is not None:
            for fd in old.fds:
                os.close(fd)

    def _used_idx(self, idx):
        """The ring's used index, read from guest memory (the resume point)."""
        mt = self.state.get(SET_MEM_TABLE)
        addr = self.queues.get(idx, {}).get(SET_VRING_ADDR)
        if mt is None or addr is None:
            return 0
        used_uva = struct.unpack_from("<IIQQQQ", addr.payload)[3]
        nregions = struct.unpack_from("<I", mt.payload)[0]
        for i in range(nregions):
            gpa, size, uva, off = struct.unpack_from("<QQQQ", mt.payload, 8 + 32 * i)
            if uva <= used_uva < uva + size:
                raw = os.pread(mt.fds[i], 2, off + used_uva - uva + 2)
                return struct.unpack("<H", raw)[0]
        return 0

    def _replay(self):
        """The handshake again, on a fresh back-end connection."""
        b = self.back
        for req in (GET_FEATURES, GET_PROTOCOL_FEATURES):
            _send_msg(b, Msg(req, 1, b"", []))
            if _recv_msg(b) is None:
                raise ConnectionError("back-end closed during the handshake")
        for req in (SET_PROTOCOL_FEATURES, SET_OWNER, SET_BACKEND_REQ_FD, SET_FEATURES,
                    SET_MEM_TABLE):
            if req in self.state:
                _send_msg(b, self.state[req])
        for idx in sorted(self.queues):
            if idx in self.stopped:
                continue
            q = self.queues[idx]
            if SET_VRING_NUM in q:
                _send_msg(b, q[SET_VRING_NUM])
            base = struct.pack("<II", idx, self._used_idx(idx))
            _send_msg(b, Msg(SET_VRING_BASE, 1, base, []))
            for req in (SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR,
                        SET_VRING_ENABLE):
                if req in q:
                    _send_msg(b, q[req])
        self.log("vuproxy: session replayed on the new back-end")

    # ---- connections ------------------------------------------------------

    def _connect_back(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.closing:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.back_path)
                self.back = s
                return
            except OSError:
                s.close()
            if time.monotonic() > deadline:
                raise TimeoutError("no back-end on %s" % self.back_path)
            time.sleep(0.05)

    def _drop_back(self):
        if self.back is not None:
            self.back.close()
            self.back = None

    def _reattach(self, timeout=120):
        """Wait for a back-end that takes the replayed handshake."""
        self._drop_back()
        self.log("vuproxy: back-end gone, waiting for a new one")
        deadline = time.monotonic() + timeout
        while True:
            self._connect_back(max(0.0, deadline - time.monotonic()))
            try:
                self._replay()
                break
            except OSError as err:      # ConnectionError, BrokenPipeError included
                # e.g. connected to the dying daemon's listener (see above)
                self._drop_back()
                if self.closing:
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError("no back-end took the handshake on %s in %d s "
                                       "(last: %r)" % (self.back_path, timeout, err))
                self.log("vuproxy: handshake on a new connection failed (%r), retrying"
                         % (err,))
                time.sleep(0.05)
        self.reattached += 1

    def _forward(self, msg):
        """Send MSG to the back-end and return its reply (or None if none)."""
        want = msg.req in EXPLICIT_REPLY or msg.flags & NEED_REPLY
        _send_msg(self.back, msg)
        if not want:
            return None
        reply = _recv_msg(self.back)
        if reply is None:
            raise ConnectionError("back-end closed")
        return reply

    def _run(self):
        try:
            self.front, _ = self.listener.accept()
            self._connect_back(30)
            while not self.closing:
                ready, _, _ = select.select([self.front, self.back], [], [])
                if self.back in ready and self.front not in ready:
                    # the back-end never speaks unasked: this is its end
                    # (EOF, or ECONNRESET if it died with a request unread)
                    try:
                        gone = self.back.recv(1, socket.MSG_PEEK) == b""
                    except OSError as err:
                        self.log("vuproxy: %r" % (err,))
                        gone = True
                    if gone:
                        self._reattach()
                    continue
                msg = _recv_msg(self.front)
                if msg is None:
                    break
                self._keep(msg)
                if msg.req == GET_VRING_BASE:
                    self.stopped.add(struct.unpack_from("<I", msg.payload)[0])
                while True:
                    try:
                        reply = self._forward(msg)
                        break
                    except (ConnectionError, BrokenPipeError, OSError) as err:
                        if self.closing:
                            return
                        self.log("vuproxy: %s" % err)
                        self._reattach()
                for fd in msg.fds:
                    os.close(fd)
                if reply is not None:
                    _send_msg(self.front, reply)
                    for fd in reply.fds:
                        os.close(fd)
        except Exception as err:        # reported by the scenario
            if not self.closing:
                self.error = err
                self.log("vuproxy: stopped: %r" % (err,))

    def close(self):
        self.closing = True
        for s in (self.front, self.back, self.listener):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        for m in list(self.state.values()) + [m for q in self.queues.values()
                                              for m in q.values()]:
            for fd in m.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
