#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Fake vhost-user front-end: plays QEMU and the guest driver against a real
`tballoon serve`, over the real sockets (memfd guest RAM, eventfds, backend
channel), and drives the real CLI. Prints TAP.

Usage: frontend.py PATH/TO/tballoon
"""
import fcntl
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

TB = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./tballoon")

# vhost-user
GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE = 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD = 18, 21
GET_CONFIG, SET_CONFIG = 24, 25
VERSION, REPLY, NEED_REPLY = 1, 4, 8
PF = (1 << 0) | (1 << 3) | (1 << 5) | (1 << 9)
F_VERSION_1, F_PROTOCOL, F_TIMED, F_MUST_TELL = 1 << 32, 1 << 30, 1 << 12, 1 << 0
F_DEFLATE_ON_OOM = 1 << 2

MiB = 1 << 20
RAM = 16 * MiB
UVA = 0x7F0000000000
QSZ = 64
# guest layout: region A gpa [0, 8M) = memfd [0, 8M); region B gpa [16M, 24M)
# = memfd [8M, 16M). Rings live in region A at 7M, buffers at 7.5M.
RING_GPA = {0: 7 * MiB, 1: 7 * MiB + 0x10000}
BUF_GPA = 7 * MiB + 0x80000

# config offsets
O_NUM, O_ACTUAL = 0, 4
O_CMD, O_OP, O_FLAGS, O_DEADLINE, O_TARGET, O_FLOOR = 16, 20, 24, 28, 32, 36
O_ACK, O_STATE, O_REASON, O_ELAPSED, O_START, O_SEQ = 40, 44, 48, 52, 56, 60
ST_RUNNING, ST_DONE, ST_DEADLINE, ST_PRESSURE, ST_ABORTED, ST_REJECTED = 1, 2, 3, 4, 5, 6

n = 0
failed = 0


def tap(ok, name):
    global n, failed
    n += 1
    print(("ok %d - %s" if ok else "not ok %d - %s") % (n, name), flush=True)
    if not ok:
        failed += 1


class Guest:
    """QEMU + guest memory + a scripted driver."""

    def __init__(self, path, sock=None):
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        self.sock = sock
        self.sock.settimeout(5)
        fd = os.memfd_create("guest-ram", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, RAM)
        # QEMU seals its memfds (memory-backend-memfd seal=on); so does this
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        self.memfd = fd
        self.mem = mmap.mmap(fd, RAM)
        self.mem.write(b"\x01" * RAM)          # every page resident
        self.be_ours, self.be_theirs = socket.socketpair()
        self.kick = {q: os.eventfd(0, os.EFD_NONBLOCK) for q in (0, 1)}
        self.call = {q: os.eventfd(0, os.EFD_NONBLOCK) for q in (0, 1)}
        self.avail_idx = {0: 0, 1: 0}
        self.seq = 0

    # --- memory -------------------------------------------------------
    @staticmethod
    def off(gpa):
        if gpa < 8 * MiB:
            return gpa
        assert 16 * MiB <= gpa < 24 * MiB
        return gpa - 8 * MiB

    def w(self, gpa, fmt, *v):
        struct.pack_into(fmt, self.mem, self.off(gpa), *v)

    def r(self, gpa, fmt):
        return struct.unpack_from(fmt, self.mem, self.off(gpa))

    # --- messages -----------------------------------------------------
    def send(self, req, payload=b"", fds=(), flags=VERSION):
        hdr = struct.pack("<III", req, flags, len(payload))
        if fds:
            socket.send_fds(self.sock, [hdr + payload], list(fds))
        else:
            self.sock.sendall(hdr + payload)

    def recv(self):
        hdr = self.recvn(12)
        req, flags, size = struct.unpack("<III", hdr)
        return req, flags, self.recvn(size)

    def recvn(self, k):
        b = b""
        while len(b) < k:
            c = self.sock.recv(k - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    def call_u64(self, req, payload=b"", fds=(), need_reply=False):
        self.send(req, payload, fds, VERSION | (NEED_REPLY if need_reply else 0))
        r, flags, p = self.recv()
        assert r == req and flags == VERSION | REPLY, (r, flags)
        return struct.unpack("<Q", p)[0] if len(p) == 8 else p

    def get_config(self):
        self.send(GET_CONFIG, struct.pack("<III", 0, 64, 0) + bytes(64))
        r, _, p = self.recv()
        assert r == GET_CONFIG and len(p) == 12 + 64
        return bytearray(p[12:])

    def guest_write(self, off, val):
        """A guest config write: QEMU does GET_CONFIG then a whole SET_CONFIG."""
        cfg = self.get_config()
        struct.pack_into("<I", cfg, off, val)
        return self.call_u64(SET_CONFIG, struct.pack("<III", 0, 64, 0) + bytes(cfg),
                             need_reply=True)

    def cfg(self, off):
        return struct.unpack_from("<I", self.get_config(), off)[0]

    def report(self, ack, state, actual, elapsed=10, start=0, reason=0):
        self.guest_write(O_ACTUAL, actual)
        self.guest_write(O_ELAPSED, elapsed)
        self.guest_write(O_START, start)
        self.guest_write(O_REASON, reason)
        self.guest_write(O_STATE, state)
        self.guest_write(O_ACK, ack)
        self.seq += 1
        self.guest_write(O_SEQ, self.seq)

    def wait_config_change(self, timeout=5):
        self.be_ours.settimeout(timeout)
        h = self.be_ours.recv(12)
        return struct.unpack("<III", h)

    # --- session ------------------------------------------------------
    def negotiate(self, features=F_VERSION_1 | F_PROTOCOL | F_TIMED | F_MUST_TELL):
        offered = self.call_u64(GET_FEATURES)
        pf = self.call_u64(GET_PROTOCOL_FEATURES)
        self.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & PF))
        nq = self.call_u64(GET_QUEUE_NUM)
        ack = self.call_u64(SET_BACKEND_REQ_FD, fds=[self.be_theirs.fileno()], need_reply=True)
        self.send(SET_OWNER)
        self.send(SET_FEATURES, struct.pack("<Q", features & offered))
        regions = struct.pack("<QQQQ", 0, 8 * MiB, UVA, 0) + \
            struct.pack("<QQQQ", 16 * MiB, 8 * MiB, UVA + 16 * MiB, 8 * MiB)
        ack2 = self.call_u64(SET_MEM_TABLE, struct.pack("<II", 2, 0) + regions,
                             fds=[self.memfd, self.memfd], need_reply=True)
        for q in (0, 1):
            base = RING_GPA[q]
            # the driver zeroes its rings before handing them over
            self.mem[self.off(base):self.off(base) + 0x4000] = bytes(0x4000)
            self.avail_idx[q] = 0
            self.send(SET_VRING_NUM, struct.pack("<II", q, QSZ))
            self.send(SET_VRING_BASE, struct.pack("<II", q, 0))
            self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + base,
                                                  UVA + base + 0x2000, UVA + base + 0x1000, 0))
            self.send(SET_VRING_KICK, struct.pack("<Q", q), fds=[self.kick[q]])
            self.send(SET_VRING_CALL, struct.pack("<Q", q), fds=[self.call[q]])
            self.call_u64(SET_VRING_ENABLE, struct.pack("<II", q, 1), need_reply=True)
        return offered, pf, nq, ack, ack2

    def reconnect(self, path):
        """QEMU re-attaching a restarted back-end: same guest memory and
        rings, the handshake again, rings resumed at the used index."""
        self.sock.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(5)
        self.be_ours, self.be_theirs = socket.socketpair()
        features = F_VERSION_1 | F_PROTOCOL | F_TIMED | F_MUST_TELL
        offered = self.call_u64(GET_FEATURES)
        pf = self.call_u64(GET_PROTOCOL_FEATURES)
        self.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & PF))
        self.call_u64(SET_BACKEND_REQ_FD, fds=[self.be_theirs.fileno()], need_reply=True)
        self.send(SET_OWNER)
        self.send(SET_FEATURES, struct.pack("<Q", features & offered))
        regions = struct.pack("<QQQQ", 0, 8 * MiB, UVA, 0) + \
            struct.pack("<QQQQ", 16 * MiB, 8 * MiB, UVA + 16 * MiB, 8 * MiB)
        self.call_u64(SET_MEM_TABLE, struct.pack("<II", 2, 0) + regions,
                      fds=[self.memfd, self.memfd], need_reply=True)
        for q in (0, 1):
            base = RING_GPA[q]
            self.send(SET_VRING_NUM, struct.pack("<II", q, QSZ))
            self.send(SET_VRING_BASE, struct.pack("<II", q, self.used_idx(q)))
            self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + base,
                                                  UVA + base + 0x2000, UVA + base + 0x1000, 0))
            self.send(SET_VRING_KICK, struct.pack("<Q", q), fds=[self.kick[q]])
            self.send(SET_VRING_CALL, struct.pack("<Q", q), fds=[self.call[q]])
            self.call_u64(SET_VRING_ENABLE, struct.pack("<II", q, 1), need_reply=True)

    # --- rings --------------------------------------------------------
    def add_buf(self, q, descs):
        """descs: list of (gpa, len, flags, next); head is descs[0]'s slot 0.."""
        base = RING_GPA[q]
        for i, (addr, ln, fl, nx) in enumerate(descs):
            self.w(base + 16 * i, "<QIHH", addr, ln, fl, nx)
        a = self.avail_idx[q]
        self.w(base + 0x1000 + 4 + 2 * (a % QSZ), "<H", 0)
        self.avail_idx[q] = a + 1
        self.w(base + 0x1000 + 2, "<H", (a + 1) & 0xFFFF)
        os.eventfd_write(self.kick[q], 1)

    def used_idx(self, q):
        return self.r(RING_GPA[q] + 0x2000 + 2, "<H")[0]

    def wait_call(self, q, timeout=5):
        # poll, not select: earlier tests may have pushed fds past 1024
        pl = select.poll()
        pl.register(self.call[q], select.POLLIN)
        if not pl.poll(timeout * 1000):
            return False
        os.eventfd_read(self.call[q])
        return True

    def pfn_buffer(self, q, pfns, gpa=BUF_GPA):
        data = struct.pack("<%dI" % len(pfns), *pfns)
        self.mem[self.off(gpa):self.off(gpa) + len(data)] = data
        self.add_buf(q, [(gpa, len(data), 0, 0)])

    def close(self):
        self.sock.close()


def ctl(path, *args, env=None):
    return subprocess.run([TB, "-c", path] + list(args), capture_output=True, text=True,
                          timeout=30, env=env)


def status(path):
    p = ctl(path, "status", "-j")
    return json.loads(p.stdout)


def wait_for(pred, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def main():
    tmp = tempfile.mkdtemp()
    vu, cp = os.path.join(tmp, "vu.sock"), os.path.join(tmp, "ctl.sock")
    log = open(os.path.join(tmp, "serve.log"), "w")
    srv = subprocess.Popen([TB, "serve", "--socket-path", vu, "--control", cp, "-v", "-v"],
                           stderr=log)
    try:
        wait_for(lambda: os.path.exists(cp) and os.path.exists(vu))
        run(vu, cp)
    except Exception as e:  # a hang or protocol error is a failure, not a crash
        tap(False, "exception: %r" % (e,))
    finally:
        srv.terminate()
        rc = srv.wait(10)
        tap(rc == 0, "serve: clean exit on SIGTERM after the session tests")
        log.close()
        if failed:
            sys.stderr.write(open(os.path.join(tmp, "serve.log")).read()[-6000:])
    print("1..%d" % n)
    sys.exit(1 if failed else 0)


def run_fuzz(vu, cp, iterations=4000, seed=1234):
    """Seeded garbage over the vhost-user socket: the daemon must survive."""
    import random
    rnd = random.Random(seed)
    sock, reconnects, sent = None, 0, 0
    g = None
    for i in range(iterations):
        if sock is None:
            g = Guest(vu)
            sock = g.sock
            sock.setblocking(False)
            if rnd.random() < 0.5:          # sometimes start from a sane session
                sock.setblocking(True)
                sock.settimeout(5)
                try:
                    g.negotiate()
                except (OSError, EOFError, AssertionError):
                    pass
                sock.setblocking(False)
        req = rnd.choice([rnd.randrange(0, 50), rnd.randrange(1, 26), 0xFFFFFFFF])
        flags = rnd.choice([VERSION, VERSION | NEED_REPLY, rnd.getrandbits(32)])
        size = rnd.choice([0, 4, 8, 12, 40, 76, rnd.randrange(0, 300)])
        if req in (SET_MEM_TABLE,) and rnd.random() < 0.5:
            nreg = rnd.randrange(0, 10)
            payload = struct.pack("<II", nreg, 0) + b"".join(
                struct.pack("<QQQQ", rnd.choice([0, rnd.getrandbits(64), 4096 * rnd.randrange(0, 4096)]),
                            rnd.choice([0, 4096, MiB, rnd.getrandbits(64)]),
                            rnd.getrandbits(64), rnd.choice([0, 4096, rnd.getrandbits(64)]))
                for _ in range(min(nreg, 8)))
        else:
            payload = bytes(rnd.getrandbits(8) for _ in range(size))
        fds = []
        if rnd.random() < 0.3:
            fds = [rnd.choice([g.memfd, g.kick[0], g.call[1], g.be_theirs.fileno()])
                   for _ in range(rnd.randrange(1, 4))]
        hdr = struct.pack("<III", req, flags, len(payload) if rnd.random() < 0.9 else rnd.getrandbits(32))
        try:
            sock.setblocking(True)
            sock.settimeout(2)
            if fds:
                socket.send_fds(sock, [hdr + payload], fds)
            else:
                sock.sendall(hdr + payload)
            sent += 1
            sock.setblocking(False)
            while True:                     # drain replies
                if not sock.recv(65536):
                    raise EOFError
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, EOFError):
            sock.close()
            sock = None
            reconnects += 1
        if rnd.random() < 0.05:             # and poke the rings
            for q in (0, 1):
                os.eventfd_write(g.kick[q], 1)
    if sock:
        sock.close()
    ok = wait_for(lambda: not status(cp)["connected"])
    g = Guest(vu)
    g.negotiate()
    s = status(cp)
    tap(ok and s["connected"] and s["driver_ok"],
        "fuzz: %d hostile messages (%d sessions dropped), daemon alive and serving" %
        (sent, reconnects))
    g.close()
    wait_for(lambda: not status(cp)["connected"])


def run(vu, cp):
    g = Guest(vu)
    offered, pf, nq, ack, ack2 = g.negotiate()
    tap(offered & F_VERSION_1 and offered & F_PROTOCOL and offered & F_TIMED and
        offered & F_MUST_TELL, "vu: features offer VERSION_1, PROTOCOL_FEATURES, TIMED, MUST_TELL_HOST")
    tap(pf & PF == PF, "vu: protocol features offer MQ, REPLY_ACK, BACKEND_REQ, CONFIG")
    tap(nq == 4, "vu: GET_QUEUE_NUM is 4 (inflateq, deflateq, statsq, reporting_vq)")
    tap(ack == 0 and ack2 == 0, "vu: REPLY_ACK acks backend channel and memory table")
    s = status(cp)
    tap(s["connected"] and s["driver_ok"] and s["timed"], "status: connected, driver_ok, timed")
    tap(s["guest_ram_bytes"] == RAM, "status: guest RAM is the sum of the regions")
    tap(s["resident_bytes"] == RAM, "status: resident counts the shared memfd once")

    # --- inflate, --wait --json, released memory measured ------------
    cl = subprocess.Popen([TB, "-c", cp, "inflate", "--to", "4M", "--deadline", "5s",
                           "--wait", "--json"], stdout=subprocess.PIPE, text=True)
    req, flags, size = g.wait_config_change()
    tap(req == 2 and flags == VERSION and size == 0,
        "vu: CONFIG_CHANGE_MSG on the backend channel, without NEED_REPLY")
    c = g.get_config()
    cmd = struct.unpack_from("<I", c, O_CMD)[0]
    tap(cmd == 1 and struct.unpack_from("<IIIII", c, O_OP) == (1, 0, 5000, 1024, 0) and
        struct.unpack_from("<I", c, O_NUM)[0] == 1024,
        "config: the command is in the timed block, num_pages mirrors the target")
    g.report(cmd, ST_RUNNING, 0)
    # PFNs 0..511 (region A) and 4096..4607 (region B: gpa 16M), unordered
    g.pfn_buffer(0, list(range(0, 256)) + list(range(4096, 4608)) + list(range(256, 512)))
    tap(g.wait_call(0), "ring: inflate buffer used and the call eventfd signalled")
    tap(g.used_idx(0) == 1, "ring: used index advanced")
    g.report(cmd, ST_DONE, 1024, elapsed=42)
    out, _ = cl.communicate(timeout=10)
    tap(cl.returncode == 0, "cli: inflate --wait exits 0 on done")
    try:
        res = json.loads(out)
        lines = out.strip().count("\n") + 1
    except ValueError:
        res, lines = {}, 0
    cmdj = res.get("command", {})
    tap(lines == 1 and cmdj.get("state") == "done" and cmdj.get("elapsed_ms") == 42 and
        cmdj.get("reports") == 2, "cli: --wait --json prints one status object at the end")
    tap(res.get("released_bytes") == 4 * MiB and cmdj.get("host_released_bytes") == 4 * MiB,
        "host: 4 MiB punched and resident dropped by 4 MiB")
    tap(os.fstat(g.memfd).st_blocks * 512 == RAM - 4 * MiB, "host: memfd blocks really freed")
    tap(g.mem[0] == 0 and g.mem[511 * 4096] == 0 and g.mem[512 * 4096] == 1 and
        g.mem[8 * MiB] == 0 and g.mem[8 * MiB + 512 * 4096] == 1,
        "host: exactly the inflated pages read back as zero")

    # --- hostile buffers ------------------------------------------------
    g.pfn_buffer(0, [0xFFFFF, 3 * MiB // 4096, 0x10000000])   # outside, 2 outside
    g.wait_call(0)
    g.add_buf(0, [(BUF_GPA, 4, 1, 0)])                           # self loop
    g.wait_call(0)
    g.add_buf(0, [(BUF_GPA, 6, 0, 0)])                           # length % 4
    g.wait_call(0)
    s = status(cp)
    tap(s["stats"]["refused_pfns"] == 2 and s["stats"]["bad_buffers"] == 2 and
        s["released_bytes"] == 4 * MiB + 4096,
        "ring: PFNs outside RAM refused, loops and odd lengths counted, daemon alive")
    tap(g.guest_write(O_ACTUAL, 1024) == 0, "vu: session still healthy after hostile buffers")
    bad = g.call_u64(SET_CONFIG, struct.pack("<III", 60, 8, 0) + bytes(8), need_reply=True)
    tap(bad == 1, "vu: out-of-bounds SET_CONFIG fails with REPLY_ACK 1")
    unk = g.call_u64(77, need_reply=True)
    tap(unk == 1, "vu: unknown request with NEED_REPLY fails, session survives")

    # --- pressure, plain-text progress ---------------------------------
    cl = subprocess.Popen([TB, "-c", cp, "inflate", "--to", "2048p", "--deadline", "5s",
                           "--floor", "1M", "--wait"], stdout=subprocess.PIPE, text=True)
    g.wait_config_change()
    cmd = g.cfg(O_CMD)
    g.report(cmd, ST_RUNNING, 1024, start=1024)
    g.report(cmd, ST_RUNNING, 1500, start=1024)
    g.report(cmd, ST_PRESSURE, 1600, start=1024, reason=10)
    out, _ = cl.communicate(timeout=10)
    lines = out.strip().split("\n")
    tap(cl.returncode == 4, "cli: pressure exits 4")
    tap(len(lines) == 3 and "476/1024" in lines[1] and "pressure (floor)" in lines[-1] and
        "576 pages (2.2 MiB) moved" in lines[-1], "cli: plain progress lines, then the outcome line")

    # --- a silent guest, then Ctrl-C: the client says so and detaches ----
    cl = subprocess.Popen([TB, "-c", cp, "inflate", "--to", "1800p", "--deadline", "30s",
                           "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    g.wait_config_change()
    time.sleep(2.5)
    cl.send_signal(signal.SIGINT)
    out, err = cl.communicate(timeout=10)
    st = status(cp)
    tap(cl.returncode == 130 and "waiting for the guest to report" in err and
        "goes on in the daemon" in err and "tballoon watch" in err and
        st["command"]["state"] == "running",
        "cli: --wait says it waits for a silent guest; Ctrl-C detaches, saying how to "
        "follow (exit %s, %r)" % (cl.returncode, err.strip()[-160:]))

    # --- rejected --------------------------------------------------------
    cl = subprocess.Popen([TB, "-c", cp, "deflate", "--to", "0", "--deadline", "1s", "--wait"],
                          stdout=subprocess.PIPE, text=True)
    g.wait_config_change()
    g.report(g.cfg(O_CMD), ST_REJECTED, 1600, reason=6)
    cl.communicate(timeout=10)
    tap(cl.returncode == 6, "cli: rejected exits 6")

    # --- deadline reported by the guest -----------------------------------
    cl = subprocess.Popen([TB, "-c", cp, "deflate", "--to", "0", "--deadline", "1s", "--wait"],
                          stdout=subprocess.PIPE, text=True)
    g.wait_config_change()
    g.report(g.cfg(O_CMD), ST_DEADLINE, 800)
    cl.communicate(timeout=10)
    tap(cl.returncode == 3, "cli: deadline exits 3")

    # --- abort from another client while waiting; two watchers ------------
    w1 = subprocess.Popen([TB, "-c", cp, "deflate", "--to", "0", "--deadline", "30s", "--wait"],
                          stdout=subprocess.PIPE, text=True)
    g.wait_config_change()
    first = g.cfg(O_CMD)
    g.report(first, ST_RUNNING, 800)
    p = ctl(cp, "abort", "-j")
    g.wait_config_change()
    w1.communicate(timeout=10)
    tap(p.returncode == 0 and w1.returncode == 5, "cli: abort exits 0, the waiter exits 5")
    tap(g.cfg(O_OP) == 3 and g.cfg(O_CMD) == first + 1, "config: abort is a new cmd_id with op abort")
    g.report(first + 1, ST_ABORTED, 780, reason=8)

    # --- no outcome: exit 7 after deadline + grace --------------------------
    t0 = time.time()
    p = ctl(cp, "inflate", "--to", "1000p", "--deadline", "200ms", "--grace", "300ms", "--wait")
    dt = time.time() - t0
    tap(p.returncode == 7 and 0.4 < dt < 3, "cli: no outcome within deadline + grace exits 7")
    g.wait_config_change()

    # --- direction and range checks before the guest sees anything ---------
    g.report(g.cfg(O_CMD), ST_DONE, 780)
    before = g.cfg(O_CMD)
    p1 = ctl(cp, "inflate", "--to", "100p", "--deadline", "1s")
    p2 = ctl(cp, "deflate", "--to", "900p", "--deadline", "1s")
    p3 = ctl(cp, "inflate", "--to", "1G", "--deadline", "1s")
    tap(p1.returncode == 1 and p2.returncode == 1 and p3.returncode == 1 and
        g.cfg(O_CMD) == before, "host: direction and beyond-RAM targets refused, guest untouched")

    # --- QEMU goes away mid-command ------------------------------------------
    w = subprocess.Popen([TB, "-c", cp, "inflate", "--to", "2000p", "--deadline", "30s",
                          "--wait", "-j"], stdout=subprocess.PIPE, text=True)
    g.wait_config_change()
    g.report(g.cfg(O_CMD), ST_RUNNING, 780)
    g.close()
    out, _ = w.communicate(timeout=10)
    res = json.loads(out) if out.strip() else {}
    tap(w.returncode == 5 and res.get("command", {}).get("reason") == "removed",
        "disconnect: the running command ends aborted (removed)")
    tap(wait_for(lambda: not status(cp)["connected"]), "disconnect: status shows not connected")

    # --- QEMU reconnects -------------------------------------------------------
    g2 = Guest(vu)
    g2.negotiate(features=F_VERSION_1 | F_PROTOCOL | F_MUST_TELL)   # upstream driver
    s = status(cp)
    tap(s["connected"] and s["driver_ok"] and not s["timed"], "reconnect: new session, TIMED not negotiated")
    cl = subprocess.Popen([TB, "-c", cp, "inflate", "--to", "512p", "--deadline", "5s", "--wait"],
                          stdout=subprocess.PIPE, text=True)
    g2.wait_config_change()
    tap(g2.cfg(O_NUM) == 512 and g2.cfg(O_OP) == 0, "standard balloon: command is num_pages only")
    g2.pfn_buffer(0, list(range(1000, 1512)))
    g2.wait_call(0)
    g2.guest_write(O_ACTUAL, 256)
    g2.guest_write(O_ACTUAL, 512)
    out, _ = cl.communicate(timeout=10)
    tap(cl.returncode == 0 and "done" in out, "standard balloon: done when actual == num_pages")
    p = ctl(cp, "inflate", "--to", "600p", "--deadline", "1s", "--paced")
    first = g2.wait_config_change() and g2.cfg(O_NUM)
    tap(p.returncode == 0 and 512 < first < 600,
        "standard balloon: --paced is paced by the host (first step %s of 512..600)" % first)
    g2.close()
    run_fuzz(vu, cp)
    run_fd_mode(os.path.dirname(cp))
    run_restart(os.path.dirname(cp))
    run_reset_and_watchdog(os.path.dirname(cp))
    run_deflate_on_oom(os.path.dirname(cp))
    run_punch_pool(os.path.dirname(cp))


def qmp_cmd(path, name, **args):
    """One QMP command on the control socket; its reply (return or error)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rwb")
    try:
        json.loads(f.readline())                        # the greeting
        for cmd in ({"execute": "qmp_capabilities"}, {"execute": name, "arguments": args}):
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while True:
                r = json.loads(f.readline())
                if "return" in r or "error" in r:
                    break
        return r
    finally:
        f.close()
        s.close()


def run_punch_pool(tmp):
    """The punch threads: with every punch slowed down, the event loop still
    answers the front-end while an inflate buffer is being released, the
    buffer goes back only once released, and a ring stop (GET_VRING_BASE)
    waits for it. With --punch-threads 0 the loop punches itself and the
    config answer waits (the first check fails there)."""
    srv, vu, cp = start_serve(tmp, "pool")
    try:
        g = Guest(vu)
        g.negotiate()
        r = qmp_cmd(cp, "x-test-punch-delay", ms=3000)
        tap(r.get("return", {}).get("punch_threads", 0) >= 1,
            "pool: status shows the punch threads (%s)" % r.get("return", {}).get("punch_threads"))
        tap("error" in qmp_cmd(cp, "x-test-punch-delay", ms=10001),
            "pool: x-test-punch-delay refuses a delay over 10 s")
        g.pfn_buffer(0, list(range(0, 256)))
        time.sleep(0.5)                 # the loop took the kick, a thread punches
        t0 = time.monotonic()
        g.get_config()
        answered = time.monotonic() - t0
        used_then = g.used_idx(0)
        tap(used_then == 0, "pool: GET_CONFIG answered in %.3f s while the buffer was "
            "still being released (used index %d)" % (answered, used_then))
        back = g.wait_call(0, timeout=15)
        st = status(cp)
        tap(back and g.used_idx(0) == 1 and st["released_bytes"] == 256 * 4096,
            "pool: the buffer goes back once released (used %d, released %d bytes)"
            % (g.used_idx(0), st["released_bytes"]))
        # a ring stop while a buffer is being released: the reply waits for it
        g.pfn_buffer(0, list(range(256, 512)), gpa=BUF_GPA + 0x4000)
        time.sleep(0.5)
        base = g.call_u64(GET_VRING_BASE, struct.pack("<II", 0, 0))
        base = struct.unpack("<II", base)[1] if isinstance(base, bytes) else base >> 32
        tap(base == 2 and g.used_idx(0) == 2,
            "pool: GET_VRING_BASE waits for the buffer being released (base %d, used %d)"
            % (base, g.used_idx(0)))
        g.close()
    finally:
        srv.terminate()
        srv.wait(10)


def run_deflate_on_oom(tmp):
    """DEFLATE_ON_OOM is offered only with --deflate-on-oom; status says
    whether the driver took it; a daemon without the option refuses it."""
    srv, vu, cp = start_serve(tmp, "nooom")
    try:
        g = Guest(vu)
        tap(not (F_DEFLATE_ON_OOM & g.call_u64(GET_FEATURES)),
            "vu: DEFLATE_ON_OOM not offered by default")
        g.close()
    finally:
        srv.terminate()
        srv.wait(10)
    srv, vu, cp = start_serve(tmp, "oom", "--deflate-on-oom")
    try:
        g = Guest(vu)
        offered = g.negotiate(features=F_VERSION_1 | F_PROTOCOL | F_TIMED | F_MUST_TELL |
                              F_DEFLATE_ON_OOM)[0]
        tap(offered & F_DEFLATE_ON_OOM, "vu: --deflate-on-oom offers DEFLATE_ON_OOM")
        s = status(cp)
        tap(s.get("deflate_on_oom") is True, "status: deflate_on_oom true once negotiated")
        out = subprocess.run([TB, "-c", cp, "status"], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
        tap("timed yes, deflate-on-oom" in out, "status (text) says deflate-on-oom")
        # 1024 pages in, then the guest takes 512 back on its own (as on
        # OOM), then 512 more for a deflate command: only the first count
        g.pfn_buffer(0, list(range(0, 1024)))
        g.wait_call(0)
        g.pfn_buffer(1, list(range(0, 512)), gpa=BUF_GPA + 0x4000)
        g.wait_call(1)
        st1 = status(cp)
        p = ctl(cp, "deflate", "--to", "0", "--deadline", "5s")
        g.wait_config_change()
        cmd = g.cfg(O_CMD)
        g.report(cmd, ST_RUNNING, 512)
        g.pfn_buffer(1, list(range(512, 1024)), gpa=BUF_GPA + 0x8000)
        g.wait_call(1)
        st2 = status(cp)
        out = subprocess.run([TB, "-c", cp, "status"], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
        tap(p.returncode == 0 and st1["stats"]["guest_deflated_pages"] == 512 and
            st2["stats"]["guest_deflated_pages"] == 512 and
            st2["stats"]["deflated_pages"] == 1024 and
            "taken back by the guest 512 pages" in out,
            "stats: guest_deflated_pages counts what the guest took back without a deflate "
            "command (512 of 1024)")
        g.close()
    finally:
        srv.terminate()
        srv.wait(10)


def start_serve(tmp, name, *extra):
    vu, cp = os.path.join(tmp, name + "-vu.sock"), os.path.join(tmp, name + "-ctl.sock")
    for p in (vu, cp):
        if os.path.exists(p):
            os.unlink(p)
    log = open(os.path.join(tmp, name + ".log"), "a")
    srv = subprocess.Popen([TB, "serve", "--socket-path", vu, "--control", cp, "-v", "-v"] +
                           list(extra), stderr=log)
    log.close()
    wait_for(lambda: os.path.exists(cp) and os.path.exists(vu))
    return srv, vu, cp


def run_restart(tmp):
    """serve killed mid-inflate and restarted with its state file: the
    command is recovered and reported, the accounting stays consistent."""
    state = os.path.join(tmp, "state.json")
    srv, vu, cp = start_serve(tmp, "restart", "--state-file", state)
    g = Guest(vu)
    g.negotiate()
    p = ctl(cp, "inflate", "--to", "3072p", "--deadline", "20s")
    g.wait_config_change()
    cmd = g.cfg(O_CMD)
    g.report(cmd, ST_RUNNING, 0)
    g.pfn_buffer(0, list(range(0, 1024)))
    g.wait_call(0)
    # the buffer is back, so it is never delivered again: its release must
    # already be in the state file (punch pool: counted after the punch)
    st = json.load(open(state))
    tap(g.used_idx(0) == 1 and st["counters"]["released_bytes"] == 4 * MiB,
        "restart: a returned buffer's release is in the state file (%s bytes)"
        % st["counters"]["released_bytes"])
    g.report(cmd, ST_RUNNING, 1024)
    st = json.load(open(state))
    tap(p.returncode == 0 and st["command"]["cmd_id"] == cmd and st["device_pages"] == 1024,
        "restart: the state file follows the running command")
    w0 = subprocess.Popen([TB, "-c", cp, "watch", "-j"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    srv.kill()
    srv.wait(5)

    # the guest goes on while no back-end runs: a buffer waits in the ring
    # (PFNs below 7 MiB or in region B: the rings live at 7 MiB)
    g.pfn_buffer(0, list(range(4096, 5120)), gpa=BUF_GPA + 0x4000)
    srv, vu, cp = start_serve(tmp, "restart", "--state-file", state)
    s = status(cp)
    c = s["command"]
    tap(s["restored"] and c["cmd_id"] == cmd and c["state"] == "running" and c["recovered"] and
        s["actual_pages"] == 1024 and s["device_pages"] == 1024 and
        s["released_bytes"] == 4 * MiB,
        "restart: restored before QEMU is back: command %d running, balloon 1024 pages" % cmd)
    w = subprocess.Popen([TB, "-c", cp, "watch", "-j"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    g.reconnect(vu)
    tap(g.wait_call(0) and g.used_idx(0) == 2,
        "restart: the buffer queued during the outage is processed after the handshake")
    g.report(cmd, ST_RUNNING, 2048)
    g.pfn_buffer(0, list(range(5120, 6144)), gpa=BUF_GPA + 0x8000)
    g.wait_call(0)
    g.report(cmd, ST_DONE, 3072, elapsed=900)
    out, _ = w.communicate(timeout=10)
    res = json.loads(out) if out.strip() else {}
    c = res.get("command", {})
    tap(w.returncode == 0 and c.get("cmd_id") == cmd and c.get("state") == "done" and
        c.get("elapsed_ms") == 900, "restart: watch reports the recovered command done (exit 0)")
    if not (w.returncode == 0 and c.get("cmd_id") == cmd and c.get("elapsed_ms") == 900):
        sys.stderr.write("watch: exit %s, %r\n" % (w.returncode, out))
    out0, err0 = w0.communicate(timeout=10)
    res0 = json.loads(out0) if out0.strip() else {}
    tap(w0.returncode == 0 and res0.get("command", {}).get("state") == "done" and
        "follows command" in err0,
        "restart: a client watching across the restart rejoins and sees done")
    s = status(cp)
    blocks = os.fstat(g.memfd).st_blocks * 512
    tap(s["actual_pages"] == 3072 and s["device_pages"] == 3072 and
        s["released_bytes"] == 12 * MiB and blocks == RAM - 12 * MiB and
        s["resident_bytes"] == blocks,
        "restart: accounting consistent (12 MiB released across two daemons, memfd agrees)")

    # killed again; this time the final report is lost in the outage
    p = ctl(cp, "inflate", "--to", "3584p", "--deadline", "20s")
    g.wait_config_change()
    cmd2 = g.cfg(O_CMD)
    g.report(cmd2, ST_RUNNING, 3072, start=3072)
    srv.kill()
    srv.wait(5)
    g.pfn_buffer(0, list(range(1024, 1536)), gpa=BUF_GPA + 0xC000)
    srv, vu, cp = start_serve(tmp, "restart", "--state-file", state)
    g.reconnect(vu)
    g.wait_call(0)
    tap(wait_for(lambda: status(cp)["command"]["state"] == "done") and
        status(cp)["actual_pages"] == 3584 and status(cp)["command"]["cmd_id"] == cmd2,
        "restart: a command whose final report was lost ends done from the PFN count")
    tap(cmd2 == cmd + 1 and ctl(cp, "deflate", "--to", "0", "--deadline", "1s").returncode == 0
        and g.wait_config_change() and g.cfg(O_CMD) == cmd2 + 1,
        "restart: command ids continue across restarts")
    srv.terminate()
    rc = srv.wait(5)
    st = json.load(open(state))
    tap(rc == 0 and st["command"]["cmd_id"] == cmd2 + 1 and st["config"] != "00" * 64,
        "restart: SIGTERM keeps the state file (our exit is not a device reset)")
    g.close()


def run_reset_and_watchdog(tmp):
    """Guest reboot (rings restarted at 0), host watchdog, broken device."""
    srv, vu, cp = start_serve(tmp, "reset", "--grace", "300ms")
    g = Guest(vu)
    g.negotiate()
    p = ctl(cp, "inflate", "--to", "1024p", "--deadline", "200ms", "--wait", "-j")
    res = json.loads(p.stdout) if p.stdout.strip() else {}
    tap(p.returncode == 7 and res.get("command", {}).get("state") == "guest-unresponsive",
        "watchdog: no outcome by deadline + grace ends guest-unresponsive, exit 7")
    g.wait_config_change()
    cmd = g.cfg(O_CMD)
    g.report(cmd, ST_DEADLINE, 0)
    tap(status(cp)["command"]["state"] == "deadline",
        "watchdog: a late guest report is still authoritative")
    g.pfn_buffer(0, list(range(0, 256)))
    g.wait_call(0)
    g.guest_write(O_ACTUAL, 256)
    # reboot: QEMU stops the rings, the new driver starts them at 0
    for q in (0, 1):
        g.call_u64(GET_VRING_BASE, struct.pack("<II", q, 0))
    g.negotiate()
    s = status(cp)
    tap(s["stats"]["resets"] == 1 and s["actual_pages"] == 0 and s["device_pages"] == 0 and
        s["command"]["cmd_id"] == cmd, "reset: a guest reboot clears the balloon and driver block")
    if s["stats"]["resets"] != 1:
        sys.stderr.write("reset: %r\n" % (s,))
    # pause/resume (rings resumed where they were) is not a reset
    for q in (0, 1):
        g.call_u64(GET_VRING_BASE, struct.pack("<II", q, 0))
    g.pfn_buffer(0, [5])
    g.reconnect(vu)
    g.wait_call(0)
    s = status(cp)
    tap(s["stats"]["resets"] == 1 and s["device_pages"] == 1,
        "reset: rings resumed at their position are not a reset")
    # a ring broken by the guest marks the device, the daemon keeps serving
    g.w(RING_GPA[0] + 0x1000 + 2, "<H", (g.avail_idx[0] + 500) & 0xFFFF)
    os.eventfd_write(g.kick[0], 1)
    tap(wait_for(lambda: status(cp)["broken"]), "broken: an avail index jump marks the device")
    s = status(cp)
    p = ctl(cp, "inflate", "--to", "100p", "--deadline", "1s")
    tap("queue 0" in s["broken_reason"] and p.returncode == 1 and "broken" in p.stderr,
        "broken: status says why, commands are refused, the control socket serves")
    if p.returncode != 1 or "broken" not in p.stderr:
        sys.stderr.write("broken: %r %r\n" % (s, p.stderr))
    for q in (0, 1):
        g.call_u64(GET_VRING_BASE, struct.pack("<II", q, 0))
    g.negotiate()
    tap(not status(cp)["broken"], "broken: cleared by the next device reset")
    g.close()
    srv.terminate()
    tap(srv.wait(5) == 0, "reset: clean exit")


def run_fd_mode(tmp):
    """serve --fd: a connected socket handed over, exit when it closes."""
    ours, theirs = socket.socketpair()
    cp = os.path.join(tmp, "ctl-fd.sock")
    srv = subprocess.Popen([TB, "serve", "--fd", str(theirs.fileno()), "--control", cp],
                           pass_fds=[theirs.fileno()], stderr=subprocess.DEVNULL)
    theirs.close()
    wait_for(lambda: os.path.exists(cp))
    g = Guest(None, sock=ours)
    g.negotiate()
    s = status(cp)
    tap(s["connected"] and s["driver_ok"], "serve --fd: session on the handed-over socket")
    g.close()
    try:
        rc = srv.wait(5)
    except subprocess.TimeoutExpired:
        srv.kill()
        rc = None
    tap(rc == 0 and not os.path.exists(cp), "serve --fd: exits 0 when the session ends")


if __name__ == "__main__":
    main()
