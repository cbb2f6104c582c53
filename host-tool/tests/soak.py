#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Soak: `tballoon serve` (the sanitizer build) under a random mix of valid
and hostile vhost-user sessions, control clients and commands for SECONDS.

Checks that the daemon answers query-balloon within 100 ms throughout (a
separate monitor process asks every 100 ms over its own connection), that
its memory stays bounded (RSS of the last quarter against the second), that
no fd leaks (its fd count at the end against the start) and that it exits
cleanly on SIGTERM. Prints TAP and the figures.

Usage: soak.py PATH/TO/tballoon [SECONDS] [SEED]
"""
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if len(sys.argv) > 1 and sys.argv[1] == "--monitor":
    MONITOR = True
else:
    MONITOR = False
    sys.path.insert(0, HERE)
    import frontend as fe  # noqa: E402
    from frontend import Guest, tap  # noqa: E402

LATENCY_MS = 100


def monitor(cp, seconds, out):
    """Ask query-balloon every 100 ms; write the latencies (ms) to @out."""
    lat = []
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect(cp)
    f = c.makefile("rb")
    f.readline()                                  # greeting
    c.sendall(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t0 = time.monotonic()
        c.sendall(b'{"execute":"query-balloon","id":%d}\n' % i)
        while True:
            line = f.readline()
            if not line:
                raise EOFError("daemon closed the monitor")
            m = json.loads(line)
            if m.get("id") == i:
                break
        lat.append((time.monotonic() - t0) * 1000)
        time.sleep(0.1)
    with open(out, "w") as fo:
        json.dump(lat, fo)


def ctl_request(cp, line, read=True):
    """One client: greeting, qmp_capabilities, @line; the response to it."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(cp)
    try:
        f = c.makefile("rb")
        f.readline()
        c.sendall(b'{"execute":"qmp_capabilities"}\n')
        f.readline()
        c.sendall(line)
        while read:
            resp = f.readline()
            if not resp or b'"event"' not in resp:
                return resp
    finally:
        c.close()
    return b""


def close_guest(g):
    for fd in list(g.kick.values()) + list(g.call.values()):
        os.close(fd)
    g.mem.close()
    os.close(g.memfd)
    g.be_ours.close()
    g.be_theirs.close()
    g.sock.close()


def valid_session(vu, cp, rnd):
    g = Guest(vu)
    try:
        g.negotiate()
        op = rnd.choice(["inflate", "deflate"])
        target = rnd.randrange(0, 2048)
        r = ctl_request(cp, json.dumps({"execute": op, "arguments": {
            "target-pages": target, "deadline-ms": rnd.randrange(10, 5000)}}).encode() + b"\n")
        if b'"return"' in r:
            g.wait_config_change(timeout=2)
            cmd = g.cfg(fe.O_CMD)
            for k in range(rnd.randrange(1, 20)):
                g.report(cmd, fe.ST_RUNNING, rnd.randrange(0, 2048))
                start = rnd.randrange(0, 1700)
                pfns = list(range(start, start + rnd.randrange(1, 64)))
                g.pfn_buffer(rnd.choice([0, 1]), pfns)
                g.wait_call(0, timeout=0.2)
            g.report(cmd, rnd.choice([fe.ST_DONE, fe.ST_DEADLINE, fe.ST_PRESSURE]),
                     rnd.randrange(0, 2048))
    except (OSError, EOFError, AssertionError, ValueError):
        pass
    finally:
        close_guest(g)


def hostile_session(vu, rnd):
    g = Guest(vu)
    sock = g.sock
    try:
        if rnd.random() < 0.5:
            g.negotiate()
        for _ in range(rnd.randrange(5, 60)):
            req = rnd.choice([rnd.randrange(0, 45), 0xFFFFFFFF])
            flags = rnd.choice([fe.VERSION, fe.VERSION | fe.NEED_REPLY, rnd.getrandbits(32)])
            payload = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 8, 40, 200])))
            hdr = struct.pack("<III", req, flags, len(payload))
            fds = [g.kick[0]] if rnd.random() < 0.2 else []
            sock.settimeout(1)
            if fds:
                socket.send_fds(sock, [hdr + payload], fds)
            else:
                sock.sendall(hdr + payload)
            sock.setblocking(False)
            try:
                while sock.recv(65536):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            if rnd.random() < 0.1:
                os.eventfd_write(g.kick[rnd.choice([0, 1])], 1)
        if rnd.random() < 0.2:                    # a half message, then silence
            sock.settimeout(1)
            sock.sendall(struct.pack("<III", 1, 1, 8)[:rnd.randrange(1, 12)])
            time.sleep(rnd.random() * 1.5)
    except (OSError, EOFError, AssertionError, ValueError):
        pass
    finally:
        close_guest(g)


def control_client(cp, rnd, held):
    kind = rnd.randrange(6)
    try:
        if kind == 0:
            ctl_request(cp, b'{"execute":"query-balloon"}\n')
        elif kind == 1:
            ctl_request(cp, bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300)))
                        + b"\n", read=False)
        elif kind == 2:
            ctl_request(cp, b"x" * (70 * 1024), read=False)       # over the line limit
        elif kind == 3:                                          # idle, kept a while
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(cp)
            held.append((time.monotonic() + rnd.random() * 5, c))
        elif kind == 4:                                          # subscribes, never reads
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect(cp)
            c.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"query-stats"}\n')
            held.append((time.monotonic() + rnd.random() * 10, c))
        else:
            ctl_request(cp, b'{"execute":"abort"}\n')
    except OSError:
        pass
    now = time.monotonic()
    for item in [h for h in held if h[0] < now]:
        item[1].close()
        held.remove(item)


def proc_figures(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def main():
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
    tmp = tempfile.mkdtemp(prefix="tb-soak-")
    vu, cp = os.path.join(tmp, "vu.sock"), os.path.join(tmp, "ctl.sock")
    log = open(os.path.join(tmp, "serve.log"), "w")
    srv = subprocess.Popen([fe.TB, "serve", "--socket-path", vu, "--control", cp,
                            "--state-file", os.path.join(tmp, "state.json"), "-q"],
                           stderr=log, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=8"))
    fe.wait_for(lambda: os.path.exists(cp) and os.path.exists(vu))
    time.sleep(0.2)
    rss0, fds0 = proc_figures(srv.pid)
    lat_file = os.path.join(tmp, "latency.json")
    mon = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--monitor", cp,
                            str(seconds), lat_file])
    stop = threading.Event()
    counts = {"valid": 0, "hostile": 0, "clients": 0}
    samples = []

    def sessions():
        rnd = random.Random(seed)
        while not stop.is_set():
            if rnd.random() < 0.5:
                valid_session(vu, cp, rnd)
                counts["valid"] += 1
            else:
                hostile_session(vu, rnd)
                counts["hostile"] += 1

    def clients():
        rnd = random.Random(seed + 1)
        held = []
        while not stop.is_set():
            control_client(cp, rnd, held)
            counts["clients"] += 1
            time.sleep(rnd.random() * 0.05)
        for _, c in held:
            c.close()

    threads = [threading.Thread(target=sessions), threading.Thread(target=clients)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and srv.poll() is None:
        time.sleep(1)
        samples.append(proc_figures(srv.pid)[0])
    stop.set()
    for t in threads:
        t.join(30)
    mon_rc = mon.wait(60)
    time.sleep(1.5)                               # sessions and clients are gone
    alive = srv.poll() is None
    rss1, fds1 = proc_figures(srv.pid) if alive else (-1, -1)
    srv.terminate()
    rc = srv.wait(30)
    log.close()
    with open(os.path.join(tmp, "serve.log")) as f:
        err = f.read()
    lat = json.load(open(lat_file)) if os.path.exists(lat_file) else []
    lat_sorted = sorted(lat)
    worst = lat_sorted[-1] if lat else -1
    p99 = lat_sorted[int(len(lat) * 0.99) - 1] if lat else -1
    q = max(1, len(samples) // 4)
    mid = max(samples[q:2 * q] or [rss0])
    last = max(samples[-q:] or [rss0])

    tap(alive and rc == 0 and "ERROR: AddressSanitizer" not in err and
        "runtime error" not in err,
        "soak: %.0f s (seed %d): %d valid and %d hostile sessions, %d control clients; "
        "the daemon lived and exited 0, no sanitizer report" % (
            seconds, seed, counts["valid"], counts["hostile"], counts["clients"]))
    tap(mon_rc == 0 and lat and worst <= LATENCY_MS,
        "soak: %d query-balloon answers, all within %d ms (worst %.1f ms, p99 %.1f ms)"
        % (len(lat), LATENCY_MS, worst, p99))
    tap(last <= mid + 16 * 1024,
        "soak: memory bounded (RSS %d KiB at start, %d KiB max in the 2nd quarter, %d KiB "
        "max in the last)" % (rss0, mid, last))
    tap(fds1 == fds0, "soak: no fd leak (%d fds at start, %d at the end)" % (fds0, fds1))
    if fe.failed:
        sys.stderr.write(err[-4000:])
    print("1..%d" % fe.n)
    sys.exit(1 if fe.failed else 0)


if __name__ == "__main__":
    if MONITOR:
        monitor(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        main()
