#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`tballoon balance` and `tballoon reclaim` against scripted control sockets
(TAP). Usage: balance.py path/to/tballoon

Unit test of one layer: the daemon's loop, its socket and its clients. Each
VM here is a scripted stand-in for a `tballoon serve` control socket (the
QMP-style protocol of ctl.h) whose guest reaches a target at once. The
real thing, two real guests on real `serve` daemons, is the qemu-tests
scenario balance-two-guests.

Covers: bad options and configuration files, the decision log and
--dry-run, a VM whose socket accepts but never answers (skipped within its
vm-timeout, the others still managed), a VM that disappears, --status,
the Prometheus text file, reclaim --total reachable and not, bad requests
on balance's socket, a second daemon on the same socket.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

TB = sys.argv[1] if len(sys.argv) > 1 else "./tballoon"
MiB = 1 << 20
n = 0
failed = False


def tap(ok, name):
    global n, failed
    n += 1
    print("%s %d - %s" % ("ok" if ok else "not ok", n, name), flush=True)
    if not ok:
        failed = True


class FakeVM:
    """A control socket with a 1 GiB guest that reaches every target at once."""

    def __init__(self, path, avail=900 * MiB, hang=False, refuse=False, timed=True):
        self.path = path
        self.timed = timed
        self.ram = 1024 * MiB
        self.actual = 0
        self.avail = avail
        self.hang = hang
        self.refuse = refuse
        self.cmd_id = 0
        self.cmd = {"state": "idle", "reason": "none"}
        self.commands = []
        self.updates = 1
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.alive = True
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if not self.hang:
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def status(self):
        return {"connected": True, "driver_ok": True, "timed": self.timed,
                "guest_ram_bytes": self.ram,
                "actual_bytes": self.actual, "actual_pages": self.actual // 4096,
                "command": dict(self.cmd, cmd_id=self.cmd_id)}

    def stats(self):
        self.updates += 1
        return {"stats_vq": True, "updates": self.updates, "age_ms": 100,
                "guest": {"available-memory": max(self.avail - self.actual, 0),
                          "swap-in": 0, "major-faults": 0}}

    def _serve(self, c):
        f = c.makefile("rwb")
        try:
            f.write(b'{"QMP":{"version":{},"capabilities":[]}}\n')
            f.flush()
            for line in f:
                req = json.loads(line)
                name, args = req.get("execute"), req.get("arguments", {})
                with self.lock:
                    if name == "qmp_capabilities":
                        ret = {}
                    elif name == "query-balloon":
                        ret = self.status()
                    elif name == "query-stats":
                        ret = self.stats()
                    elif name in ("inflate", "deflate") and self.refuse:
                        ret = None
                    elif name in ("inflate", "deflate"):
                        self.commands.append((name, args))
                        self.cmd_id += 1
                        start = self.actual
                        self.actual = args["target-pages"] * 4096
                        self.cmd = {"state": "done", "reason": "none", "op": name,
                                    "start_pages": start // 4096, "elapsed_ms": 100}
                        ret = self.status()
                    else:
                        ret = None
                if ret is None:
                    out = {"error": {"class": "GenericError", "desc": "refused"}}
                else:
                    out = {"return": ret}
                f.write((json.dumps(out) + "\n").encode())
                f.flush()
        except (OSError, ValueError):
            pass

    def close(self):
        self.alive = False
        self.sock.close()
        for c in self.conns:
            c.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def run(*args, timeout=30):
    return subprocess.run([TB] + list(args), capture_output=True, text=True, timeout=timeout)


def jlines(text):
    out = []
    for ln in text.splitlines():
        if ln.startswith("{"):
            out.append(json.loads(ln))
    return out


def wait_for(pred, timeout=10):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def qmp(path, *reqs):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rwb")
    out = [json.loads(f.readline())]
    for r in reqs:
        f.write((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n")
        f.flush()
        out.append(json.loads(f.readline()))
    s.close()
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="tb-balance-")
    d = os.path.join(tmp, "vms")
    os.mkdir(d)

    # ---- command line and configuration --------------------------------
    r = run("balance", "--period", "10ms", "--once", "--dir", d)
    tap(r.returncode == 2 and "period" in r.stderr, "balance: --period 10ms is a usage error")
    r = run("balance", "--set", "bogus=1", "--once", "--dir", d)
    tap(r.returncode == 2 and "bogus: unknown key" in r.stderr, "balance: unknown --set key")
    r = run("balance", "--set", "floor-pct", "--once", "--dir", d)
    tap(r.returncode == 2 and "KEY=VALUE" in r.stderr, "balance: --set without =")
    r = run("balance", "--config", os.path.join(tmp, "none.conf"), "--once", "--dir", d)
    tap(r.returncode == 2 and "none.conf" in r.stderr, "balance: a named config file must exist")
    conf = os.path.join(tmp, "bad.conf")
    with open(conf, "w") as f:
        f.write("# ok\nfloor-pct = 30\nreserve = lots\n")
    r = run("balance", "--config", conf, "--once", "--dir", d)
    tap(r.returncode == 2 and "bad.conf:3: reserve = lots" in r.stderr,
        "balance: a bad config line is named with its number (%s)" % r.stderr.strip())
    with open(conf, "w") as f:
        f.write("floor-pct = 30\nstep-pct = 0\n")
    r = run("balance", "--config", conf, "--once", "--dir", d)
    tap(r.returncode == 2 and "step-pct" in r.stderr, "balance: a config that cannot work")
    r = run("reclaim", "--deadline", "1s")
    tap(r.returncode == 2 and "--total" in r.stderr, "reclaim: --total is required")
    r = run("reclaim", "--total", "1G", "--deadline", "0")
    tap(r.returncode == 2, "reclaim: --deadline 0 is a usage error")
    r = run("reclaim", "--total", "1G", "--deadline", "1s", "--balance",
            os.path.join(tmp, "nobody.sock"))
    tap(r.returncode == 1 and "cannot connect" in r.stderr, "reclaim: no daemon, exit 1")
    r = run("balance", "--status", "--listen", os.path.join(tmp, "nobody.sock"))
    tap(r.returncode == 1 and "cannot connect" in r.stderr, "balance --status: no daemon, exit 1")
    r = run("balance", "--once", "--dry-run", "--dir", os.path.join(tmp, "missing"))
    tap(r.returncode == 0, "balance --once on a missing directory: nothing to manage, exit 0")

    # ---- one period, dry run: decisions logged, nothing issued ----------
    a = FakeVM(os.path.join(d, "a.ctl"))
    hung = FakeVM(os.path.join(d, "hung.ctl"), hang=True)
    t0 = time.monotonic()
    r = run("balance", "--once", "--dry-run", "-j", "--dir", d, "--set", "vm-timeout=500ms")
    took = time.monotonic() - t0
    log = jlines(r.stdout)
    by = {x.get("vm"): x for x in log}
    tap(r.returncode == 0 and "a" in by and by["a"]["action"] == "inflate" and
        not by["a"]["issued"] and by["a"]["dry_run"] and not a.commands,
        "dry run: the idle guest's inflate is logged, not issued (%s)" % by.get("a"))
    tap("inputs" in by.get("a", {}) and by["a"]["inputs"]["avail_bytes"] > 0 and
        by["a"]["paced"] and by["a"]["deadline_ms"] >= 1000,
        "a decision carries its inputs, a deadline and pacing")
    tap("hung" in by and "does not answer" in by["hung"]["why"] and took < 20,
        "a socket that never answers is skipped, the period still ends (%.1f s)" % took)
    r = run("balance", "--once", "--dry-run", "--dir", d, "--set", "vm-timeout=500ms")
    tap(r.returncode == 0 and "a: inflate" in r.stdout and "(dry run)" in r.stdout,
        "the text log says what it would do")
    hung.close()

    # ---- the daemon ------------------------------------------------------
    b = FakeVM(os.path.join(d, "b.ctl"), avail=600 * MiB, timed=False)
    prom = os.path.join(tmp, "metrics.prom")
    sock = os.path.join(d, "balance.sock")
    logf = open(os.path.join(tmp, "balance.log"), "w")
    p = subprocess.Popen([TB, "balance", "--dir", d, "--period", "200ms", "-j", "--textfile",
                          prom, "--set", "reclaim-hold=1h"], stdout=logf,
                         stderr=subprocess.STDOUT)
    try:
        tap(wait_for(lambda: os.path.exists(sock)), "balance listens on DIR/balance.sock")
        tap(wait_for(lambda: a.commands and b.commands),
            "the daemon issues timed commands to both VMs")
        name, args = a.commands[0]
        tap(name == "inflate" and args["paced"] is True and args["deadline-ms"] >= 1000 and
            args["floor-pages"] > 0, "an idle shrink: paced, with a deadline and a floor (%s)"
            % args)
        tap(args.get("gentle") is True and b.commands[0][0] == "inflate" and
            "gentle" not in b.commands[0][1],
            "gentle for the timed VM's idle shrink, not asked of the one without (%s, %s)"
            % (args.get("gentle"), b.commands[0][1]))
        tap(wait_for(lambda: os.path.exists(prom)), "the Prometheus text file is written")
        with open(prom) as f:
            text = f.read()
        tap('tballoon_balance_vm_balloon_bytes{vm="a"}' in text and
            "# TYPE tballoon_balance_commands_total counter" in text,
            "the text file has per-VM gauges and counters")
        r = run("balance", "--status", "-j", "--listen", sock)
        st = json.loads(r.stdout) if r.returncode == 0 else {}
        tap(sorted(v["vm"] for v in st.get("vms", [])) == ["a", "b"] and
            all(v["managed"] for v in st["vms"]), "--status -j: both VMs, managed")
        r = run("balance", "--status", "--listen", sock)
        tap(r.returncode == 0 and "a " in r.stdout and "why" in r.stdout,
            "--status text: a table")
        r = run("balance", "--dir", d, "--period", "1s")
        tap(r.returncode == 1 and "another balance daemon" in r.stderr,
            "a second daemon on the same socket is refused")

        # a shrink settles at the floor; then a reclaim within reach
        wait_for(lambda: a.actual >= 600 * MiB and b.actual >= 300 * MiB, 20)
        os.environ["TBALLOON_BALANCE"] = sock
        a.avail = a.actual + 400 * MiB     # a's guest freed memory: slack again
        r = run("reclaim", "--total", "64M", "--deadline", "3s", "--wait", "-j")
        objs = jlines(r.stdout)
        out = objs[-1] if objs else {}
        tap(r.returncode == 0 and out.get("state") == "done" and
            out.get("freed_bytes", 0) >= 64 * MiB,
            "reclaim 64M: done, exit 0 (%d %s)" % (r.returncode, json.dumps(out)[:300]))
        tap(any(x[0] == "inflate" and x[1]["paced"] is False for x in a.commands + b.commands),
            "a reclaim's inflates are not paced")
        r = run("reclaim", "--total", "16G", "--deadline", "2s", "--wait", "-j")
        objs = jlines(r.stdout)
        tap(r.returncode in (3, 4) and len(objs) == 2 and
            objs[0]["expected_shortfall_bytes"] > 0 and objs[1]["shortfall_bytes"] > 0,
            "reclaim 16G: out of reach, the shortfall said at once and at the end (%d)"
            % r.returncode)
        r = run("reclaim", "--total", "64M", "--deadline", "2s", "-j")
        tap(r.returncode == 0 and jlines(r.stdout) and "planned_bytes" in jlines(r.stdout)[0],
            "reclaim without --wait prints the plan and returns")
        wait_for(lambda: not json.loads(run("balance", "--status", "-j", "--listen",
                                             sock).stdout)["reclaim_running"], 10)

        # after a reclaim: idle guests still shrink, none grows unless it suffers
        c = FakeVM(os.path.join(d, "c.ctl"))     # a new idle VM, all slack
        b.avail = b.actual + 20 * MiB       # b runs short: below its reserve
        nb = len(b.commands)
        tap(wait_for(lambda: c.commands and c.commands[0][0] == "inflate"),
            "during the hold after a reclaim an idle guest is still shrunk")
        st = json.loads(run("balance", "--status", "-j", "--listen", sock).stdout)
        vb = [v for v in st["vms"] if v["vm"] == "b"][0]
        tap(st["holding_ms"] > 0 and not [c for c in b.commands[nb:] if c[0] == "deflate"] and
            "grows only if it suffers" in vb["why"],
            "... and a guest below its reserve is not grown (%s)" % vb["why"])

        # bad requests on balance's socket
        g, r1 = qmp(sock, '{"execute":"query-balance"}')
        tap("QMP" in g and r1.get("error", {}).get("class") == "CommandNotFound",
            "balance's socket: commands before qmp_capabilities are refused")
        _, _, r2, r3, r4 = qmp(sock, '{"execute":"qmp_capabilities"}', "not json",
                               {"execute": "reclaim", "arguments": {"total-bytes": -5,
                                                                    "deadline-ms": 10}},
                               {"execute": "reclaim", "arguments": {"total-bytes": 4097,
                                                                    "deadline-ms": 10}})
        tap("error" in r2 and "error" in r3 and "error" in r4 and
            "4096" in r4["error"]["desc"], "a malformed line, a negative and an unaligned "
            "total are refused with a reason")
        tap(p.poll() is None, "the daemon is still running after the bad requests")

        # a VM that goes away is dropped
        b.close()
        c.close()
        tap(wait_for(lambda: [v["vm"] for v in json.loads(
            run("balance", "--status", "-j", "--listen", sock).stdout)["vms"]] == ["a"]),
            "a VM whose socket is gone is dropped")
    finally:
        p.terminate()
        rc = p.wait(10)
        logf.close()
    tap(rc == 0 and not os.path.exists(sock), "SIGTERM: exit 0, the socket removed")
    a.close()
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
