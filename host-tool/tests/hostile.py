#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A hostile host filesystem and a hostile guest against `tballoon serve`:
files planted where the daemon writes its state, and PFN chains built to
keep the single-threaded loop busy. Uses the fake front-end of
tests/frontend.py over the real sockets. Prints TAP.

Usage: hostile.py PATH/TO/tballoon
"""
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import frontend as fe  # noqa: E402  (reads TB from argv)
from frontend import Guest, ctl, status, tap, wait_for  # noqa: E402

TB = fe.TB
F_NEXT = 1


def status_within(cp, timeout):
    """status -j answered within @timeout seconds (None if not)."""
    try:
        p = subprocess.run([TB, "-c", cp, "status", "-j"], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(p.stdout) if p.returncode == 0 else None


def inflate_one(g, cp, pfns, gpa=fe.BUF_GPA):
    """One timed command, one PFN buffer, waited for."""
    ctl(cp, "inflate", "--to", "%dp" % (len(set(pfns)) + 1), "--deadline", "20s")
    g.wait_config_change()
    cmd = g.cfg(fe.O_CMD)
    g.report(cmd, fe.ST_RUNNING, 0)
    g.pfn_buffer(0, pfns, gpa=gpa)
    return g.wait_call(0)


def test_state_files(tmp):
    # 1. a symlink at the name the old daemon used for its temporary file
    state = os.path.join(tmp, "s1.json")
    victim = os.path.join(tmp, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.symlink(victim, state + ".tmp")
    srv, vu, cp = fe.start_serve(tmp, "s1", "--state-file", state)
    try:
        g = Guest(vu)
        g.negotiate()
        ok = inflate_one(g, cp, [5])
        with open(victim) as f:
            kept = f.read() == "precious\n"
        st = json.load(open(state))
        tap(ok and kept and st["device_pages"] == 1 and os.path.islink(state + ".tmp"),
            "state file: a symlink at FILE.tmp is not followed (its target is untouched)")
        left = [n for n in os.listdir(tmp) if n.startswith("s1.json.")]
        tap(left == ["s1.json.tmp"], "state file: no temporary file is left behind (%s)" % left)
        g.close()
    finally:
        srv.kill()
        srv.wait()

    # 2. a FIFO at FILE.tmp: opening it for writing would block forever
    state = os.path.join(tmp, "s2.json")
    os.mkfifo(state + ".tmp")
    srv, vu, cp = fe.start_serve(tmp, "s2", "--state-file", state)
    try:
        g = Guest(vu)
        g.negotiate()
        ok = inflate_one(g, cp, [6])
        s = status_within(cp, 5)
        tap(ok and s is not None and s["device_pages"] == 1,
            "state file: a FIFO at FILE.tmp does not block the daemon")
        g.close()
    finally:
        srv.kill()
        srv.wait()

    # 3. a FIFO as the state file: start-up must not hang on it
    state = os.path.join(tmp, "s3.json")
    os.mkfifo(state)
    srv, vu, cp = fe.start_serve(tmp, "s3", "--state-file", state)
    try:
        s = status_within(cp, 5) if wait_for(lambda: os.path.exists(cp), 5) else None
        tap(s is not None and not s["restored"],
            "state file: a FIFO as the state file is ignored at start, the daemon serves")
        g = Guest(vu)
        g.negotiate()
        ok = inflate_one(g, cp, [7])
        tap(ok and stat.S_ISREG(os.lstat(state).st_mode) and
            json.load(open(state))["device_pages"] == 1,
            "state file: the FIFO is replaced by a regular state file")
        g.close()
    finally:
        srv.kill()
        srv.wait()
    with open(os.path.join(tmp, "s3.log")) as f:
        tap("not a regular file" in f.read(), "state file: the daemon says why it ignored it")

    # 4. a symlink as the state file: not read through, replaced on write
    state = os.path.join(tmp, "s4.json")
    os.symlink(victim, state)
    srv, vu, cp = fe.start_serve(tmp, "s4", "--state-file", state)
    try:
        g = Guest(vu)
        g.negotiate()
        ok = inflate_one(g, cp, [8])
        with open(victim) as f:
            kept = f.read() == "precious\n"
        tap(ok and kept and not os.path.islink(state),
            "state file: a symlink as the state file is replaced, its target untouched")
        g.close()
    finally:
        srv.kill()
        srv.wait()


def test_stall(tmp):
    srv, vu, cp = fe.start_serve(tmp, "stall")
    try:
        g = Guest(vu)
        g.negotiate()
        # 16 descriptors of 8 MiB, every 4 bytes naming PFN 9: 32 Mi PFNs
        region_b = 16 * fe.MiB
        pfn9 = (9).to_bytes(4, "little") * (2 * fe.MiB)
        g.mem[8 * fe.MiB:16 * fe.MiB] = pfn9
        descs = [(region_b, 8 * fe.MiB, F_NEXT if i < 15 else 0, i + 1 if i < 15 else 0)
                 for i in range(16)]
        s0 = status(cp)
        t0 = time.monotonic()
        g.add_buf(0, descs)
        back = g.wait_call(0, timeout=60)
        s = status_within(cp, 60)
        dt = time.monotonic() - t0
        fe.tap(back and s is not None and s["stats"]["bad_buffers"] == s0["stats"]["bad_buffers"] + 1 and
               s["device_pages"] == s0["device_pages"],
               "stall: a chain of 16 x 8 MiB naming one PFN (32 Mi PFNs) is refused unread "
               "and returned (%.2f s until the next control answer)" % dt)
        # a valid-size buffer repeating one PFN counts that page once
        ok = inflate_one(g, cp, [11] * 4096)
        s = status(cp)
        fe.tap(ok and s["device_pages"] == s0["device_pages"] + 1 and
               s["released_bytes"] == s0["released_bytes"] + 4096,
               "stall: 4096 copies of one PFN in a buffer count and punch one page "
               "(device_pages +%d)" % (s["device_pages"] - s0["device_pages"]))
        g.close()
    finally:
        srv.kill()
        srv.wait()
    with open(os.path.join(tmp, "stall.log")) as f:
        text = f.read()
    tap("more than 16384: refused" in text and "repeated PFNs" in text,
        "stall: both are logged as what they are")


def test_backend_channel(tmp):
    """A front-end that never reads its backend channel: a command the
    driver cannot be told about is refused as not issued, at once."""
    srv, vu, cp = fe.start_serve(tmp, "bech")
    try:
        g = Guest(vu)
        # the smallest send buffer: a few notifications fill it
        g.be_theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        g.negotiate()
        issued, refused, t_refused = 0, None, None
        for i in range(200):
            t0 = time.monotonic()
            p = ctl(cp, "inflate", "--to", "%dp" % (i + 1), "--deadline", "20s")
            if p.returncode != 0:
                refused, t_refused = p, time.monotonic() - t0
                break
            issued += 1
        s = status(cp)
        tap(refused is not None and "not issued" in refused.stderr and
            s["command"]["cmd_id"] == issued and g.cfg(fe.O_CMD) == issued,
            "backend channel: after %d commands the unread channel is full; the next "
            "is refused as not issued (%.2f s) and the guest's config still shows %d"
            % (issued, t_refused or -1, issued))
        g.close()
    finally:
        srv.kill()
        srv.wait()


def test_slow_loris(tmp):
    """A front-end that dribbles a message one byte at a time."""
    srv, vu, cp = fe.start_serve(tmp, "loris")
    try:
        g = Guest(vu)
        g.negotiate()
        hdr = fe.struct.pack("<III", fe.GET_FEATURES, fe.VERSION, 0)
        t0 = time.monotonic()
        g.sock.sendall(hdr[:1])
        time.sleep(0.3)
        g.sock.sendall(hdr[1:2])
        s = status_within(cp, 0.8)
        tap(s is not None and s["connected"],
            "slow loris: the control socket is served while a message dribbles in")
        for i in range(2, len(hdr)):
            time.sleep(0.3)
            try:
                g.sock.sendall(hdr[i:i + 1])
            except OSError:
                break
        gone = wait_for(lambda: not status(cp)["connected"], 5)
        tap(gone, "slow loris: a message not whole within 1 s ends the session (%.1f s)"
            % (time.monotonic() - t0))
        g.close()
        g2 = Guest(vu)
        g2.negotiate()
        tap(status(cp)["driver_ok"], "slow loris: the next front-end is served")
        g2.close()
    finally:
        srv.kill()
        srv.wait()


def mem_table_with(g, fd, size=8 * fe.MiB):
    """SET_MEM_TABLE of one region on @fd; the REPLY_ACK value (0 = taken)."""
    g.call_u64(fe.GET_FEATURES)
    pf = g.call_u64(fe.GET_PROTOCOL_FEATURES)
    g.send(fe.SET_PROTOCOL_FEATURES, fe.struct.pack("<Q", pf & fe.PF))
    region = fe.struct.pack("<QQQQ", 0, size, fe.UVA, 0)
    return g.call_u64(fe.SET_MEM_TABLE, fe.struct.pack("<II", 1, 0) + region, fds=[fd],
                      need_reply=True)


def test_memory_files(tmp):
    srv, vu, cp = fe.start_serve(tmp, "memf")
    try:
        g = Guest(vu)
        unsealed = os.memfd_create("unsealed")
        os.ftruncate(unsealed, 8 * fe.MiB)
        tap(mem_table_with(g, unsealed) != 0,
            "memory: a memfd the front-end can still shrink is refused")
        g.close()
        g = Guest(vu)
        zero = os.open("/dev/zero", os.O_RDWR)
        tap(mem_table_with(g, zero, size=64 << 40) != 0,
            "memory: a 64 TiB region on /dev/zero (no size to check) is refused")
        os.close(zero)
        g.close()

        # a regular file (cannot be sealed) that the front-end truncates:
        # region B (gpa 16 MiB on, file offset 8 MiB on) disappears
        g = Guest(vu)
        path = os.path.join(tmp, "guest-ram")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, fe.RAM)
        os.close(g.memfd)
        g.mem.close()
        g.memfd = fd
        g.mem = fe.mmap.mmap(fd, fe.RAM)
        g.negotiate()
        g.w(16 * fe.MiB, "<I", 5)      # a PFN buffer in region B
        os.ftruncate(fd, 8 * fe.MiB)
        g.add_buf(0, [(16 * fe.MiB, 4, 0, 0)])
        time.sleep(0.5)
        alive = srv.poll() is None
        s = status_within(cp, 5) if alive else None
        tap(alive and s is not None and s["broken"] and "SIGBUS" in s["broken_reason"],
            "memory: guest RAM truncated under a queue: the daemon survives the SIGBUS "
            "and marks the device broken (%s)" % (s and s["broken_reason"]))
        g.close()
    finally:
        srv.kill()
        srv.wait()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def test_control_clients(tmp):
    srv, vu, cp = fe.start_serve(tmp, "ctlc")
    idle = []
    try:
        rss0 = rss_kib(srv.pid)
        for _ in range(32):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(cp)
            idle.append(c)
            time.sleep(0.01)
        time.sleep(0.3)
        s = status_within(cp, 5)
        tap(s is not None, "control: with all 32 slots held by idle clients the operator "
            "still gets an answer (the oldest idle one is dropped)")
        # one client that asks for every event and never reads them
        g = Guest(vu)
        g.negotiate()
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(cp)
        deaf.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"query-balloon"}\n')
        ctl(cp, "inflate", "--to", "1000p", "--deadline", "20s")
        g.wait_config_change()
        cmd = g.cfg(fe.O_CMD)
        watcher = subprocess.Popen([TB, "-c", cp, "watch", "-j"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        t0 = time.monotonic()
        n = 2000
        for i in range(n):
            g.report(cmd, fe.ST_RUNNING, i % 999)
        g.report(cmd, fe.ST_DONE, 1000, elapsed=5)
        dt = time.monotonic() - t0
        out, _ = watcher.communicate(timeout=30)
        progress = subprocess.run([TB, "-c", cp, "status", "-j"], capture_output=True,
                                  text=True).returncode
        ev = json.loads(out) if out.strip() else {}
        with open(os.path.join(tmp, "ctlc.log")) as f:
            log = f.read()
        rss1 = rss_kib(srv.pid)
        if ev.get("command", {}).get("state") != "done":
            sys.stderr.write("watch printed %r\n" % out[-500:])
        tap(ev.get("command", {}).get("state") == "done" and progress == 0,
            "control: %d reports in %.2f s: the watcher sees the outcome, the daemon "
            "answers" % (n, dt))
        print("# control: 32 idle clients and one that never reads: RSS %d -> %d KiB"
              % (rss0, rss1), flush=True)
        tap("dropping client" in log, "control: the dropped idle client is logged")
        deaf.close()
        g.close()
    finally:
        for c in idle:
            c.close()
        srv.kill()
        srv.wait()


def test_progress_rate(tmp):
    srv, vu, cp = fe.start_serve(tmp, "rate")
    try:
        g = Guest(vu)
        g.negotiate()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(cp)
        c.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"query-balloon"}\n')
        ctl(cp, "inflate", "--to", "1000p", "--deadline", "20s")
        g.wait_config_change()
        cmd = g.cfg(fe.O_CMD)
        t0 = time.monotonic()
        for i in range(500):
            g.report(cmd, fe.ST_RUNNING, i)
        g.report(cmd, fe.ST_DONE, 1000, elapsed=5)
        dt = time.monotonic() - t0
        c.settimeout(5)
        data = b""
        while b"BALLOON_DONE" not in data:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        n = data.count(b"BALLOON_PROGRESS")
        # one per 50 ms window, plus the one held back until the outcome
        bound = int(dt * 1000 / 50) + 3
        tap(b"BALLOON_DONE" in data and n <= bound,
            "control: 500 reports in %.2f s reach a client as %d progress events "
            "(at most one per 50 ms: %d) and the outcome" % (dt, n, bound))
        c.close()
        g.close()
    finally:
        srv.kill()
        srv.wait()


def main():
    tmp = tempfile.mkdtemp(prefix="tb-hostile-")
    for t in (test_state_files, test_stall, test_backend_channel, test_slow_loris,
              test_memory_files, test_control_clients, test_progress_rate):
        try:
            t(tmp)
        except Exception as e:  # a hang or protocol error is a failure
            tap(False, "%s: exception %r" % (t.__name__, e))
    if fe.failed:
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".log"):
                with open(os.path.join(tmp, name)) as f:
                    sys.stderr.write("--- %s\n%s" % (name, f.read()[-3000:]))
    print("1..%d" % fe.n)
    sys.exit(1 if fe.failed else 0)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
