#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`tballoon serve --qmp` against fake QMP peers: a socket that is not a
QEMU, one that never greets, a QEMU without a balloon, one that stops
answering mid-command, one that sends a line without end, and one that
behaves (the balloon follows BALLOON_CHANGE and query-balloon, stats
arrive, the deadline stops it where it is). The real QEMU is in
qemu-tests (scenarios/qmp.py); this is the protocol layer, bad peers
included. Prints TAP.

Usage: qmp_peer.py PATH/TO/tballoon
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TB = sys.argv[1] if len(sys.argv) > 1 else "host-tool/tballoon"
RAM = 1 << 30
n = 0
failed = 0


def tap(ok, name):
    global n, failed
    n += 1
    print(("ok %d - qmp peer: %s" if ok else "not ok %d - qmp peer: %s") % (n, name),
          flush=True)
    if not ok:
        failed += 1
    return ok


class FakeQemu(threading.Thread):
    """A QMP server on PATH. mode: "good", "notqemu", "silent", "noballoon",
    "mute-after-up" (stops answering once a balloon command came), "longline",
    "stall" (each balloon command holds QEMU's loop for 2 s, as a busy TCG
    main loop does)."""

    def __init__(self, path, mode="good"):
        super().__init__(daemon=True)
        self.path, self.mode = path, mode
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.actual = RAM
        self.target = RAM
        self.seen = []
        self.conns = 0
        self.stop = False
        self.start()

    def send(self, c, obj):
        c.sendall(json.dumps(obj).encode() + b"\r\n")

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            try:
                self.serve(c)
            except OSError:
                pass
            finally:
                c.close()

    def serve(self, c):
        if self.mode == "silent":
            time.sleep(30)
            return
        if self.mode == "notqemu":
            c.sendall(b'{"hello": "I am not QEMU"}\n')
            time.sleep(5)
            return
        self.send(c, {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0},
                                          "package": "fake"}, "capabilities": []}})
        buf = b""
        c.settimeout(0.02)
        mute = False
        last_update = 0
        while not self.stop:
            # the guest moves 1/8 of the way each 20 ms, BALLOON_CHANGE follows
            if self.actual != self.target:
                step = max(abs(self.target - self.actual) // 8, 4096)
                step = min(step, abs(self.target - self.actual))
                self.actual += step if self.target > self.actual else -step
                if not mute:
                    self.send(c, {"event": "BALLOON_CHANGE", "data": {"actual": self.actual},
                                  "timestamp": {"seconds": 0, "microseconds": 0}})
            try:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            except socket.timeout:
                continue
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                name = req.get("execute")
                self.seen.append(name)
                if mute:
                    continue
                rid = req.get("id")
                args = req.get("arguments", {})
                if name == "qmp_capabilities":
                    ret = {}
                elif name == "query-memory-size-summary":
                    ret = {"base-memory": RAM, "plugged-memory": 0}
                elif name == "qom-list":
                    if self.mode == "noballoon":
                        ret = [{"name": "type", "type": "string"}]
                    elif args.get("path") == "/machine/peripheral":
                        ret = [{"name": "type", "type": "string"},
                               {"name": "balloon0", "type": "child<virtio-balloon-pci>"}]
                    else:
                        ret = []
                elif name == "query-balloon":
                    ret = {"actual": self.actual}
                elif name == "qom-set":
                    ret = {}
                elif name == "qom-get":
                    last_update += 1
                    ret = {"stats": {"stat-available-memory": 600 << 20,
                                     "stat-swap-in": 0, "stat-major-faults": 0,
                                     "stat-alloc-stalls": 18446744073709551615,
                                     "stat-total-memory": self.actual},
                           "last-update": last_update}
                elif name == "balloon":
                    self.target = args["value"]
                    ret = {}
                    if self.mode == "stall":
                        time.sleep(2.0)
                    if self.mode == "mute-after-up":
                        mute = True
                        continue
                    if self.mode == "longline":
                        c.settimeout(None)
                        c.sendall(b'{"return": "' + b"x" * (1 << 21))
                        time.sleep(5)
                        return
                else:
                    self.send(c, {"error": {"class": "CommandNotFound", "desc": name},
                                  "id": rid})
                    continue
                self.send(c, {"return": ret, "id": rid})

    def close(self):
        self.stop = True
        self.sock.close()


def ctl(cp, *args, timeout=30):
    return subprocess.run([TB, "-c", cp] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def status(cp):
    p = ctl(cp, "status", "-j")
    return json.loads(p.stdout) if p.returncode == 0 else {}


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return None


def serve(tmp, name, qmp, *extra):
    cp = os.path.join(tmp, name + ".ctl")
    log = open(os.path.join(tmp, name + ".log"), "w+")
    p = subprocess.Popen([TB, "serve", "--qmp", qmp, "--control", cp, "-v"] + list(extra),
                         stdout=log, stderr=log)
    return p, cp, log


def logtext(log):
    log.flush()
    log.seek(0)
    return log.read()


def refused(tmp, mode, want, why):
    path = os.path.join(tmp, mode + ".qmp")
    fq = FakeQemu(path, mode)
    t0 = time.monotonic()
    p, cp, log = serve(tmp, mode, path)
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    secs = time.monotonic() - t0
    text = logtext(log)
    tap(rc == 1 and want in text and not os.path.exists(cp),
        "%s: exit %s in %.1f s, says %r" % (why, rc, secs,
                                            (text.strip().splitlines() or [""])[-1][-140:]))
    fq.close()


def main():
    tmp = tempfile.mkdtemp(prefix="tb-qmp-")
    refused(tmp, "notqemu", "not QEMU's QMP greeting", "a socket that is not a QEMU")
    refused(tmp, "silent", "no QMP greeting", "a socket that never greets")
    refused(tmp, "noballoon", "no virtio-balloon device", "a QEMU without a balloon")
    p = subprocess.run([TB, "serve", "--qmp", os.path.join(tmp, "nothing.qmp"),
                        "--control", os.path.join(tmp, "n.ctl")], capture_output=True,
                       text=True, timeout=30)
    tap(p.returncode == 1 and "connect" in p.stderr,
        "a path with no socket: exit %d, %s" % (p.returncode, p.stderr.strip()[-100:]))
    p = subprocess.run([TB, "serve", "--qmp", "x", "--state-file", "y", "--control", "z"],
                       capture_output=True, text=True, timeout=30)
    tap(p.returncode == 2 and "--state-file is for the vhost-user device" in p.stderr,
        "--qmp with --state-file is a usage error (%s)" % p.stderr.strip()[-100:])

    # a peer that behaves
    path = os.path.join(tmp, "good.qmp")
    fq = FakeQemu(path, "good")
    srv, cp, log = serve(tmp, "good", path, "--grace", "2s")
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        st = status(cp)
        tap(st.get("kind") == "qmp" and st.get("connected") and
            st.get("guest_ram_bytes") == RAM and st.get("enforced_by") == "host",
            "set up: kind %s, RAM %s, connected %s" % (st.get("kind"), st.get("guest_ram_bytes"),
                                                      st.get("connected")))
        tap(wait_for(lambda: "qom-get" in fq.seen, 5) and "qom-set" in fq.seen,
            "the statistics polling period is set and guest-stats read")
        r = ctl(cp, "inflate", "--to", "256M", "--deadline", "10s", "--wait")
        tap(r.returncode == 0 and ": done," in r.stdout and fq.target == RAM - (256 << 20),
            "inflate 256M: QMP balloon %d, %s" % (fq.target,
                                                  (r.stdout.strip().splitlines() or [""])[-1]))
        stats = json.loads(ctl(cp, "stats", "-j").stdout or "{}").get("guest", {})
        tap(stats.get("available-memory") == 600 << 20 and "alloc-stalls" not in stats,
            "guest-stats: values passed on, -1 absent (%s)" % sorted(stats))
        r = ctl(cp, "deflate", "--to", "0", "--deadline", "10s", "--paced", "--wait")
        tap(r.returncode == 0 and fq.target == RAM,
            "a paced deflate (host pacing) ends done: exit %d" % r.returncode)
        # watch --follow -j: an NDJSON stream of every event
        fol = subprocess.Popen([TB, "-c", cp, "watch", "--follow", "-j"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        ctl(cp, "inflate", "--to", "64M", "--deadline", "10s", "--wait")
        time.sleep(0.3)
        fol.send_signal(signal.SIGINT)
        out, _ = fol.communicate(timeout=10)
        evs = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
        tap(fol.returncode == 0 and "BALLOON_PROGRESS" in evs and evs[-1] == "BALLOON_DONE",
            "watch --follow -j: one JSON event per line until Ctrl-C (%d events, exit %s)"
            % (len(evs), fol.returncode))
        # the floor (600 MiB available) stops an inflate on the host
        r = ctl(cp, "inflate", "--to", "900M", "--deadline", "10s", "--floor", "500M",
                "--wait")
        tap(r.returncode == 4 and "pressure (floor)" in r.stdout,
            "the host stops an inflate at the floor: exit %d, %s"
            % (r.returncode, (r.stdout.strip().splitlines() or [""])[-1][-100:]))
        ctl(cp, "deflate", "--to", "0", "--deadline", "10s", "--wait")
    finally:
        srv.terminate()
        srv.wait(10)
        fq.close()

    # a QEMU that stops answering mid-command: detected within the reply bound
    path = os.path.join(tmp, "mute.qmp")
    fq = FakeQemu(path, "mute-after-up")
    srv, cp, log = serve(tmp, "mute", path)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        fol = subprocess.Popen([TB, "-c", cp, "watch", "--follow", "-j"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        t0 = time.monotonic()
        r = ctl(cp, "inflate", "--to", "256M", "--deadline", "60s", "--wait", timeout=60)
        secs = time.monotonic() - t0
        # the reply bound and the guest's grace are both 5 s: either ends it
        last = (r.stdout.strip().splitlines() or [""])[-1]
        tap(r.returncode in (5, 7) and ("aborted (removed)" in last or
                                        "guest-unresponsive" in last) and
            wait_for(lambda: "QEMU is not answering" in logtext(log), 10) and
            srv.poll() is None,
            "a QEMU that stops answering: noticed in %.1f s, daemon alive, %s"
            % (secs, last[-80:]))
        tap(wait_for(lambda: fq.conns >= 2, 10),
            "the daemon connects again (%d connections)" % fq.conns)
        wait_for(lambda: status(cp).get("connected"), 10)
        fol.send_signal(signal.SIGINT)
        out, _ = fol.communicate(timeout=10)
        evs = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
        tap("FRONTEND_DISCONNECTED" in evs and "FRONTEND_CONNECTED" in evs and
            evs.index("FRONTEND_DISCONNECTED") < len(evs) - 1 - evs[::-1].index("FRONTEND_CONNECTED"),
            "events: FRONTEND_DISCONNECTED when QEMU stopped answering, FRONTEND_CONNECTED "
            "when it was back (%s)" % ", ".join(e for e in evs if e.startswith("FRONTEND")))
    finally:
        srv.terminate()
        srv.wait(10)
        fq.close()

    # a QEMU whose loop stalls 2 s on each balloon command, during a paced
    # inflate (a step every 100 ms): the targets are coalesced, not queued
    # until the daemon gives up on QEMU
    path = os.path.join(tmp, "stall.qmp")
    fq = FakeQemu(path, "stall")
    srv, cp, log = serve(tmp, "stall", path)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        wait_for(lambda: status(cp).get("connected"), 10)
        r = ctl(cp, "inflate", "--to", "256M", "--deadline", "8s", "--paced", "--wait",
                timeout=60)
        last = (r.stdout.strip().splitlines() or [""])[-1]
        tap(r.returncode in (0, 3) and "does not take its requests" not in logtext(log) and
            status(cp).get("connected"),
            "a QEMU stalling 2 s per balloon command during a paced inflate: still "
            "connected, %d balloon commands sent, exit %d, %s"
            % (fq.seen.count("balloon"), r.returncode, last[-80:]))
    finally:
        srv.terminate()
        srv.wait(10)
        fq.close()

    # a line without end: refused past its bound, the daemon lives
    path = os.path.join(tmp, "long.qmp")
    fq = FakeQemu(path, "longline")
    srv, cp, log = serve(tmp, "long", path)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        ctl(cp, "inflate", "--to", "256M", "--deadline", "60s")
        ok = wait_for(lambda: "longer than" in logtext(log), 10)
        tap(ok and srv.poll() is None and not status(cp).get("connected"),
            "a QMP line longer than the bound ends the connection, not the daemon")
    finally:
        srv.terminate()
        srv.wait(10)
        fq.close()
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
