#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""python/tballoon.py, the supported Python client, against the real daemon:
with no VM (NotReady, CommandNotFound, version, commands) and with a fake
QEMU behind --qmp (inflate, wait, the event stream, abort). Prints TAP.

Usage: python_client.py PATH/TO/tballoon
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, HERE)
import tballoon  # noqa: E402
from qmp_peer import FakeQemu, RAM, wait_for  # noqa: E402

TB = sys.argv[1] if len(sys.argv) > 1 else "./tballoon"
n = failed = 0


def tap(ok, what):
    global n, failed
    n += 1
    print(("ok %d - python client: %s" if ok else "not ok %d - python client: %s") % (n, what),
          flush=True)
    failed += not ok


def raises(cls, fn):
    try:
        fn()
    except cls as e:
        return e
    return None


def main():
    tmp = tempfile.mkdtemp(prefix="tb-py-")
    tap(tballoon.pages("512M") == 131072 and tballoon.pages("1.5G") == 393216 and
        tballoon.pages("0x1000") == 1 and tballoon.pages("10p") == 10 and
        tballoon.pages(8192) == 2 and raises(ValueError, lambda: tballoon.pages("1.5K")) and
        raises(ValueError, lambda: tballoon.pages("1x")),
        "pages() reads sizes as the CLI does")

    # no VM: refusals are typed
    vu, cp = os.path.join(tmp, "vu.sock"), os.path.join(tmp, "ctl.sock")
    srv = subprocess.Popen([TB, "serve", "--socket-path", vu, "--control", cp],
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        with tballoon.Client(cp, timeout=10) as c:
            v = c.version()
            tap(v["tballoon"]["major"] == 0 and v["package"].startswith("tballoon "),
                "version: %s" % v["package"])
            tap({"inflate", "query-balloon", "query-version"} <= set(c.commands()),
                "commands lists the protocol")
            e = raises(tballoon.NotReady, lambda: c.inflate(100, 1000))
            tap(e is not None and e.cls == "DeviceNotActive" and "front-end" in e.desc,
                "inflate with no VM raises NotReady (%s)" % e)
            e = raises(tballoon.Error, lambda: c.execute("frobnicate"))
            tap(e is not None and e.cls == "CommandNotFound" and not isinstance(e, tballoon.NotReady),
                "an unknown command raises Error(CommandNotFound)")
            tap(c.abort() is None, "abort with nothing running is None")
            e = raises(tballoon.NotReady, lambda: c.wait_ready(timeout=0.3))
            tap(e is not None, "wait_ready gives up with NotReady")
    finally:
        srv.terminate()
        srv.wait(10)

    # a VM behind --qmp (the fake QEMU of qmp_peer.py)
    path = os.path.join(tmp, "vm.qmp")
    fq = FakeQemu(path, "good")
    cp = os.path.join(tmp, "vm.ctl")
    srv = subprocess.Popen([TB, "serve", "--qmp", path, "--control", cp],
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(cp), 10)
        with tballoon.Client(cp, timeout=20) as c:
            st = c.wait_ready(timeout=10)
            tap(st["kind"] == "qmp" and st["guest_ram_bytes"] == RAM, "wait_ready: a qmp VM")
            st = c.inflate(tballoon.pages("256M"), 10000)
            cid = st["command"]["cmd_id"]
            final = c.wait(cid)
            tap(final["command"]["state"] == "done" and final["actual_pages"] == 65536 and
                fq.target == RAM - (256 << 20),
                "inflate 256M, wait: done at %d pages" % final["actual_pages"])
            st = c.set(0, 10000)
            evs = [ev["event"] for ev in c.events(timeout=3)]
            tap(st["command"]["op"] == "deflate" and "BALLOON_DONE" in evs and
                "BALLOON_PROGRESS" in evs,
                "set(0) deflates; events() streams progress and the outcome (%d events)"
                % len(evs))
            c.inflate(tballoon.pages("900M"), 60000, paced=True)
            time.sleep(0.3)
            st = c.abort()
            tap(st is not None and c.status()["command"]["op"] == "abort",
                "abort stops a running paced inflate")
    finally:
        srv.terminate()
        srv.wait(10)
        fq.close()
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
