# SPDX-License-Identifier: GPL-2.0
"""`tballoon balance` and `tballoon reclaim --total` against two real guests.

Two 1 GiB guests, each with our driver on `tballoon serve`, share one
directory of control sockets (a.ctl, b.ctl). The engine must shrink both
idle guests, give memory back to the one whose program grows (before it is
OOM-killed), meet a reachable host-wide reclaim by its deadline, report the
shortfall of an unreachable one, and drop a VM whose socket goes away.
"""

import json
import os
import subprocess
import time

from . import GROUPS, MIB, group, mib, scenario
from tbtest import machine
from .driver import _guest_bg, _guest_bg_wait

group("balance", driver="tballoon", device="tballoon", mem="1G")


class Balance:
    """A `tballoon balance -j` daemon over DIR, its decision log parsed."""

    def __init__(self, tool, d, *extra):
        self.tool = str(tool)
        self.dir = d
        self.sock = os.path.join(d, "balance.sock")
        self.logpath = os.path.join(d, "balance.log")
        self.prom = os.path.join(d, "metrics.prom")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            [self.tool, "balance", "--dir", d, "--period", "1s", "-j", "--textfile", self.prom]
            + list(extra), stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while not os.path.exists(self.sock) and time.monotonic() - t0 < 10:
            time.sleep(0.1)

    def lines(self):
        out = []
        with open(self.logpath) as f:
            for ln in f:
                if ln.startswith("{"):
                    try:
                        out.append(json.loads(ln))
                    except ValueError:
                        pass
        return out

    def status(self):
        res = subprocess.run([self.tool, "balance", "--status", "-j", "--listen", self.sock],
                             capture_output=True, text=True, timeout=30)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def reclaim(self, total, deadline, timeout=120):
        res = subprocess.run([self.tool, "reclaim", "--total", total, "--deadline", deadline,
                              "--wait", "-j", "--balance", self.sock],
                             capture_output=True, text=True, timeout=timeout)
        objs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
        return res.returncode, objs, res.stderr

    def close(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def _balloon(g):
    return g.status().get("actual_bytes", 0)


def _settle(a, b, timeout, quiet=6.0):
    """Wait until neither balloon moved for QUIET seconds."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = (_balloon(a), _balloon(b))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
        time.sleep(1.0)
    return False


def _wait(pred, timeout, step=1.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(step)
    return pred()


@scenario("balance-two-guests", "balance")
def balance_two(ctx):
    """balance shrinks two idle guests, grows the one whose program grows, meets a reachable reclaim --total, reports an unreachable one's shortfall, drops a gone VM"""
    a = ctx.guest
    ctx.require_timed_device()
    opts = dict(GROUPS["balance"], name="balance-b", log=ctx.diag)
    with machine.Guest(**opts) as b:
        d = str(a.path("bal"))
        os.mkdir(d)
        os.symlink(str(a.control), os.path.join(d, "a.ctl"))
        os.symlink(str(b.control), os.path.join(d, "b.ctl"))
        bal = Balance(a.env.tool, d)
        try:
            _two(ctx, a, b, bal)
        finally:
            rc = bal.close()
            ctx.expect(rc == 0, "balance exits 0 on SIGTERM (got %s)" % rc)
            ctx.diag("balance log: %d decisions", len(bal.lines()))
        ctx.check_healthy()
        res = b.sh("echo alive")
        ctx.expect(res.rc == 0, "guest b alive")
        oom = [ln for ln in b.dmesg().splitlines() if "Out of memory" in ln or "oom-kill" in ln]
        ctx.expect(not oom, "guest b: no OOM kill (%s)" % "; ".join(oom[:2]))


def _two(ctx, a, b, bal):
    # 1. both idle guests are shrunk, paced, towards their working set and floor
    t0 = time.monotonic()
    ok = _wait(lambda: _balloon(a) >= 400 * MIB and _balloon(b) >= 400 * MIB, 180)
    ctx.diag("idle shrink: balloons a %s, b %s after %.1f s", mib(_balloon(a)),
             mib(_balloon(b)), time.monotonic() - t0)
    ctx.require(ok, "balance shrinks both idle guests by >= 400 MiB within 180 s")
    inflates = [x for x in bal.lines() if x.get("action") == "inflate" and x.get("issued")]
    ctx.expect(inflates and all(x["paced"] and x["deadline_ms"] >= 1000 for x in inflates
                                if "idle" in x["why"]),
               "idle shrinks are paced timed commands (%d issued)" % len(inflates))
    ctx.expect(all("inputs" in x and "avail_bytes" in x["inputs"] for x in inflates),
               "each decision is logged with its inputs")
    st = bal.status()
    ctx.expect(st and sorted(v["vm"] for v in st["vms"]) == ["a", "b"] and
               all(v["managed"] for v in st["vms"]),
               "balance --status shows a and b, managed (%s)" %
               ([(v["vm"], v["managed"]) for v in st["vms"]] if st else None))
    with open(bal.prom) as f:
        prom = f.read()
    ctx.expect('tballoon_balance_vm_balloon_bytes{vm="b"}' in prom,
               "the Prometheus text file has per-VM gauges")
    # let the shrink settle at the guests' working sets and floors
    ctx.expect(_settle(a, b, 180), "the idle shrink settles within 180 s (a %s, b %s)"
               % (mib(_balloon(a)), mib(_balloon(b))))
    ctx.diag("settled: balloons a %s, b %s after %.1f s", mib(_balloon(a)), mib(_balloon(b)),
             time.monotonic() - t0)

    # 2. b's program grows by 400 MiB at 16 MiB/s: b gets memory back in time
    low_b = _balloon(b)
    low_a = _balloon(a)
    _guest_bg(b, "memgrow 400 16 20", "grow")
    rc, out = _guest_bg_wait(b, "grow", timeout=180)
    ctx.diag("memgrow in b: rc %s, %s", rc, (out or "").strip().splitlines()[-1:])
    ctx.expect(rc == 0, "b's growing program is not killed (rc %s)" % rc)
    grew = [x for x in bal.lines() if x.get("vm") == "b" and x.get("action") == "deflate"
            and x.get("issued")]
    ctx.diag("b: %d deflates issued; balloon %s -> %s; a %s -> %s", len(grew), mib(low_b),
             mib(_balloon(b)), mib(low_a), mib(_balloon(a)))
    ctx.expect(grew, "balance issued deflates to b while its program grew")
    ctx.expect(low_b - _balloon(b) >= 200 * MIB or
               any(x["target_bytes"] <= low_b - 200 * MIB for x in grew),
               "b got >= 200 MiB back (balloon %s -> %s)" % (mib(low_b), mib(_balloon(b))))
    ctx.expect(not [x for x in bal.lines() if x.get("vm") == "a" and
                    x.get("action") == "deflate"], "the idle guest a was not grown")
    time.sleep(4)   # b's program exited: its memory is free again

    # 3. a reachable host-wide reclaim meets its deadline
    before = _balloon(a) + _balloon(b)
    rc, objs, err = bal.reclaim("128M", "5s")
    after = _balloon(a) + _balloon(b)
    out = objs[-1] if objs else {}
    ctx.diag("reclaim 128M/5s: rc %d, %s", rc, json.dumps(out)[:600])
    ctx.expect(rc == 0 and out.get("state") == "done",
               "reclaim --total 128M --deadline 5s: done, exit 0 (rc %d, %s; %s)"
               % (rc, out.get("state"), err.strip()))
    ctx.expect(out.get("freed_bytes", 0) >= 128 * MIB and out.get("elapsed_ms", 1e9) <= 6000,
               "freed >= 128 MiB by the deadline (%s in %s ms)"
               % (mib(out.get("freed_bytes", 0)), out.get("elapsed_ms")))
    ctx.expect(after - before >= 128 * MIB, "the balloons grew by >= 128 MiB (%s)"
               % mib(after - before))

    # 4. an unreachable one ends with its shortfall, guests at their floors
    rc, objs, err = bal.reclaim("4G", "3s")
    start = objs[0] if objs else {}
    out = objs[-1] if len(objs) > 1 else {}
    ctx.diag("reclaim 4G/3s: rc %d, planned %s, %s", rc, mib(start.get("planned_bytes", 0)),
             json.dumps(out)[:600])
    ctx.expect(start.get("expected_shortfall_bytes", 0) > 0,
               "the plan says at once that 4 GiB is out of reach (%s)"
               % mib(start.get("expected_shortfall_bytes", 0)))
    ctx.expect(rc in (3, 4) and out.get("state") in ("deadline", "short") and
               out.get("shortfall_bytes", 0) > 0 and out.get("freed_bytes", 0) < 4 << 30,
               "unreachable reclaim: exit 3/4 with the shortfall (rc %d, %s, short %s)"
               % (rc, out.get("state"), mib(out.get("shortfall_bytes", 0))))
    for g in (a, b):
        res = g.sh("grep MemAvailable /proc/meminfo")
        ctx.diag("%s: %s, balloon %s", g.name, res.out.strip(), mib(_balloon(g)))
        ctx.expect(res.rc == 0, "%s answers after the reclaims" % g.name)

    # 5. a bad request is refused, a second reclaim while one runs too
    res = subprocess.run([bal.tool, "reclaim", "--total", "0", "--deadline", "1s",
                          "--balance", bal.sock], capture_output=True, text=True)
    ctx.expect(res.returncode == 2 and "nothing to reclaim" in res.stderr,
               "reclaim --total 0: usage error (%d %s)" % (res.returncode, res.stderr.strip()))

    # 6. a VM whose socket goes away is dropped
    os.unlink(os.path.join(bal.dir, "b.ctl"))
    ok = _wait(lambda: [v["vm"] for v in bal.status()["vms"]] == ["a"], 10)
    ctx.expect(ok, "b dropped once b.ctl is gone")
