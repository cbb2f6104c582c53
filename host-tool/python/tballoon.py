# SPDX-License-Identifier: GPL-2.0
"""tballoon: a client of `tballoon serve`'s control socket, standard library only.

The same protocol the `tballoon` command speaks (QMP-style JSON lines; see
tballoon(8), CONTROL PROTOCOL), for scripts::

    import tballoon

    with tballoon.Client("/run/tballoon/vm1.ctl") as c:
        c.wait_ready(timeout=60)
        st = c.inflate(tballoon.pages("512M"), deadline_ms=30000,
                       floor_pages=tballoon.pages("128M"))
        final = c.wait(st["command"]["cmd_id"])
        print(final["command"]["state"], final["actual_pages"])
        for ev in c.events(timeout=5):        # BALLOON_PROGRESS / BALLOON_DONE
            print(ev["event"], ev["data"]["actual_pages"])

Errors from the daemon raise Error (its QMP class and text); NotReady is
the one worth retrying (class DeviceNotActive: no VM connected, driver not
ready, no statistics yet), as the CLI's exit code 8. Every wait is bounded
by the timeout given (or the client's, 30 s by default).

The test harness (qemu-tests/tbtest/machine.py) reads the daemon's status
through this module.
"""

import json
import os
import re
import socket
import time

__all__ = ["Client", "Error", "NotReady", "pages", "DEFAULT_CONTROL", "PAGE_SIZE"]

PAGE_SIZE = 4096
DEFAULT_CONTROL = "/run/tballoon.sock"
_UNITS = {"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20,
          "g": 30, "gb": 30, "gib": 30, "t": 40, "tb": 40, "tib": 40}


class Error(Exception):
    """The daemon refused a request: .cls is QMP's error class, .desc its text."""

    def __init__(self, cls, desc):
        super().__init__("%s: %s" % (cls, desc))
        self.cls = cls
        self.desc = desc


class NotReady(Error):
    """Refused for now (DeviceNotActive): the same request may succeed later."""


def pages(size):
    """4 KiB pages of SIZE: an int (bytes), or a string as the CLI takes it
    ("512M", "1.5G", "0x100000", "262144p"; not a percentage)."""
    if isinstance(size, int):
        nbytes = size
    else:
        m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", size.strip())
        if not m:
            raise ValueError("not a size: %r" % size)
        num, unit = m.groups()
        if unit == "p":
            if "." in num:
                raise ValueError("a page count is a whole number: %r" % size)
            return int(num, 0)
        if unit.lower() not in _UNITS:
            raise ValueError("unknown unit in %r" % size)
        if num.lower().startswith("0x"):
            nbytes = int(num, 16) << _UNITS[unit.lower()]
        else:
            whole, _, frac = num.partition(".")
            scaled = (int(whole + frac) << _UNITS[unit.lower()])
            div = 10 ** len(frac)
            if scaled % div:
                raise ValueError("not a whole number of bytes: %r" % size)
            nbytes = scaled // div
    if nbytes < 0 or nbytes % PAGE_SIZE:
        raise ValueError("not a multiple of 4 KiB: %r" % size)
    return nbytes // PAGE_SIZE


class Client:
    """One connection to a control socket (capabilities negotiated)."""

    def __init__(self, path=None, timeout=30.0):
        self.path = path or os.environ.get("TBALLOON_CONTROL") or DEFAULT_CONTROL
        self.timeout = timeout
        self._buf = b""
        self._events = []
        self._id = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(self.path)
            greeting = self._read(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise Error("GenericError", "%s: not a tballoon control socket" % self.path)
            self.greeting = greeting["QMP"]
            self.execute("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    # ---- plumbing --------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.sock.close()

    def _read(self, deadline):
        """The next message, or socket.timeout at @deadline."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no message from %s in time" % self.path)
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("%s closed the connection" % self.path)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line.decode())

    def execute(self, name, timeout=None, **arguments):
        """Run NAME with ARGUMENTS (keyword names as in the protocol, with
        '_' for '-'); its return value, or Error/NotReady. Events that
        arrive meanwhile are kept for events()."""
        self._id += 1
        req = {"execute": name, "id": self._id}
        if arguments:
            req["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self._read(deadline)
            if "event" in msg:
                self._events.append(msg)
                continue
            if "error" in msg:
                e = msg["error"]
                cls = NotReady if e.get("class") == "DeviceNotActive" else Error
                raise cls(e.get("class"), e.get("desc"))
            return msg.get("return")

    # ---- commands --------------------------------------------------------

    def status(self):
        """The status object (tballoon status -j)."""
        return self.execute("query-balloon")

    def stats(self):
        """Accounting and the guest's statistics with their age (tballoon stats -j)."""
        return self.execute("query-stats")

    def version(self):
        return self.execute("query-version")

    def commands(self):
        return [c["name"] for c in self.execute("query-commands")]

    def inflate(self, target_pages, deadline_ms, floor_pages=0, paced=False, gentle=False):
        """Issue an inflate; the status object with the new command.

        gentle: yield to the guest's own work (timed driver only; refused
        otherwise).
        """
        args = dict(target_pages=int(target_pages), deadline_ms=int(deadline_ms),
                    floor_pages=int(floor_pages), paced=bool(paced))
        if gentle:
            args["gentle"] = True
        return self.execute("inflate", **args)

    def deflate(self, target_pages, deadline_ms, paced=False):
        return self.execute("deflate", target_pages=int(target_pages),
                            deadline_ms=int(deadline_ms), paced=bool(paced))

    def set(self, target_pages, deadline_ms, floor_pages=0, paced=False, gentle=False):
        """Inflate or deflate to TARGET_PAGES, whichever the balloon needs."""
        if target_pages < self.status()["actual_pages"]:
            return self.deflate(target_pages, deadline_ms, paced)
        return self.inflate(target_pages, deadline_ms, floor_pages, paced, gentle)

    def abort(self):
        """Stop the running command; None if nothing ran."""
        st = self.status()
        if st["command"]["state"] not in ("running",):
            return None
        return self.execute("abort")

    # ---- waiting ---------------------------------------------------------

    def events(self, timeout=None):
        """Yield events (dicts: event, data, timestamp) as they come, until
        TIMEOUT seconds pass without one (None: the client's timeout)."""
        limit = self.timeout if timeout is None else timeout
        while True:
            if self._events:
                yield self._events.pop(0)
                continue
            try:
                yield self._read(time.monotonic() + limit)
            except socket.timeout:
                return

    def wait(self, cmd_id, timeout=None):
        """Follow command CMD_ID to its end; its final status object.
        socket.timeout if it has not ended within TIMEOUT seconds."""
        deadline = time.monotonic() + (timeout or self.timeout)
        st = self.status()
        while st["command"]["cmd_id"] == cmd_id and st["command"]["state"] == "running":
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("command %d did not end in time" % cmd_id)
            for ev in self.events(timeout=min(left, 1.0)):
                data = ev.get("data") or {}
                if data.get("command", {}).get("cmd_id") == cmd_id:
                    st = data
                    if ev["event"] == "BALLOON_DONE":
                        return st
                break
            else:
                st = self.status()     # quiet for a second: look again
        return st

    def wait_ready(self, timeout=60.0, interval=0.1):
        """Until a VM is connected and its driver ready; the status object.
        NotReady if it is not by TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.get("connected") and st.get("driver_ok"):
                return st
            if time.monotonic() >= deadline:
                raise NotReady("DeviceNotActive", "not ready after %.1f s" % timeout)
            time.sleep(interval)
