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
AVAIL0 = 900 << 20      # "follow": the guest's available memory with no balloon
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
    main loop does), "follow" (the guest's available memory follows the
    balloon, AVAIL0 less it, in samples taken only when the test asks
    through resample(); a deflate is instant, an inflate 16 MiB per 20 ms)."""

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
        # "follow": the sample the guest-stats reads return, its number
        self.sample_actual = RAM
        self.sample_lu = 1
        self.want_sample = False
        self.moved_t = 0.0
        self.start()

    def resample(self, timeout=10):
        """follow: the next guest-stats read returns a new sample, taken
        then; wait until the daemon has read it"""
        self.want_sample = True
        return wait_for(lambda: not self.want_sample, timeout)

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
            if self.actual != self.target and not (
                    self.mode == "follow" and self.target < self.actual and
                    time.monotonic() - self.moved_t < 0.02):
                step = max(abs(self.target - self.actual) // 8, 4096)
                if self.mode == "follow":
                    # an inflate 16 MiB every 20 ms, the first 20 ms after
                    # the command; a deflate at once
                    step = 16 << 20 if self.target < self.actual else RAM
                    self.moved_t = time.monotonic()
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
                elif name == "qom-get" and self.mode == "follow":
                    if self.want_sample:
                        self.sample_actual = self.actual
                        self.sample_lu += 1
                    ret = {"stats": {"stat-available-memory":
                                     AVAIL0 - (RAM - self.sample_actual),
                                     "stat-swap-in": 0, "stat-major-faults": 0,
                                     "stat-total-memory": self.sample_actual},
                           "last-update": self.sample_lu}
                    self.send(c, {"return": ret, "id": rid})
                    self.want_sample = False
                    continue
                elif name == "qom-get":
                    last_update += 1
                    ret = {"stats": {"stat-available-memory": 600 << 20,
                                     "stat-swap-in": 0, "stat-major-faults": 0,
                                     "stat-alloc-stalls": 18446744073709551615,
                                     "stat-total-memory": self.actual},
                           "last-update": last_update}
                elif name == "balloon":
                    self.target = args["value"]
                    self.moved_t = time.monotonic()
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

    # The floor estimate after a deflate. The guest's statistics come in
    # samples (every polling period in QEMU); one taken after a deflate
    # must not be paired with the balloon before it, or the daemon credits
    # the guest with the deflated pages twice and lets an inflate run past
    # the floor (qemu-tests qmp-ours-floor on a fast host: 140 MiB below a
    # 300 MiB floor).
    path = os.path.join(tmp, "follow.qmp")
    fq = FakeQemu(path, "follow")
    srv, cp, log = serve(tmp, "follow", path)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        wait_for(lambda: status(cp).get("connected"), 10)
        r1 = ctl(cp, "inflate", "--to", "512M", "--deadline", "10s", "--wait")
        ok = r1.returncode == 0 and fq.resample()
        # one more read with the balloon at 512M: the daemon's previous read
        k = fq.seen.count("qom-get")
        ok = ok and wait_for(lambda: fq.seen.count("qom-get") > k, 10)
        r2 = ctl(cp, "deflate", "--to", "0", "--deadline", "10s", "--wait")
        # the guest's next sample sees the balloon empty: 900 MiB available
        ok = ok and r2.returncode == 0 and fq.resample()
        r = ctl(cp, "inflate", "--to", "900M", "--deadline", "20s", "--floor", "500M",
                "--wait")
        balloon = RAM - fq.actual
        tap(ok and r.returncode == 4 and "pressure (floor)" in r.stdout and
            AVAIL0 - balloon >= (500 << 20) - (16 << 20),
            "a sample taken after a deflate: the floor holds (balloon %d MiB, guest "
            "available %d MiB, floor 500 MiB; exit %d)"
            % (balloon >> 20, (AVAIL0 - balloon) >> 20, r.returncode))
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
