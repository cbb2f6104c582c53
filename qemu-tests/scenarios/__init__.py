# SPDX-License-Identifier: GPL-2.0
"""Scenario registry and the helpers scenarios assert with.

A scenario is a function taking a Ctx, registered with @scenario. Scenarios of
the same group share one booted guest, in registration order; each group boots
its own guest with the group's options (see GROUPS).
"""

import re

GROUPS = {}     # group name -> Guest keyword arguments
REGISTRY = []   # Scenario, in registration (= run) order

PAGE = 4096
MIB = 1 << 20

# dmesg lines that mean the guest kernel is unhappy.
BAD_DMESG = re.compile(r"WARNING:|BUG:|Oops|Out of memory|Call Trace|"
                       r"general protection fault|Kernel panic|UBSAN|KASAN|"
                       r"list_(add|del) corruption|refcount_t:|soft lockup|"
                       r"hung_task|blocked for more than|pagealloc: ")


class Fail(Exception):
    """A requirement of the scenario does not hold; stop it here."""


class Scenario:
    def __init__(self, name, group, fn, needs, kernels=None):
        self.name = name
        self.group = group
        self.fn = fn
        self.needs = needs
        self.kernels = kernels      # None: every guest kernel; else run.py --kernel values
        self.doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


def group(name, **guest_opts):
    """Declare a guest group and the Guest options it boots with."""
    GROUPS[name] = guest_opts


def scenario(name, group, needs=("tool", "module"), kernels=None):
    """Register FN as scenario NAME running in guest group GROUP.

    needs: parts without which the scenario cannot pass ("tool", "module").
    kernels: the guest kernels it needs (e.g. ("debug",): lock statistics,
    fault injection); a run of all scenarios leaves it out on the others.
    """
    def register(fn):
        REGISTRY.append(Scenario(name, group, fn, tuple(needs),
                                 tuple(kernels) if kernels else None))
        return fn
    return register


class Ctx:
    """What a scenario gets: the guest, shared state of its group, checks."""

    def __init__(self, guest, shared, diag):
        self.guest = guest
        self.shared = shared        # dict shared by the group's scenarios
        self._diag = diag
        self.failures = []

    def diag(self, fmt, *args):
        self._diag(fmt % args if args else fmt)

    def expect(self, cond, what):
        """Record a failed check and go on."""
        if not cond:
            self.failures.append(what)
            self.diag("FAILED: %s", what)
        return cond

    def require(self, cond, what):
        """Fail the scenario now unless COND."""
        if not cond:
            raise Fail(what)

    # ---- common checks ---------------------------------------------------

    def status(self):
        """tballoon status --json as a dict."""
        return self.guest.status()

    def require_timed_device(self):
        """The backend sees our driver, TIMED negotiated; returns the status."""
        g = self.guest
        self.require(g.driver_status == "loaded",
                     "guest driver virtio_tballoon is %s (see console.log)" % g.driver_status)
        st = self.status()
        self.require(st.get("connected"), "backend: QEMU not connected")
        self.require(st.get("driver_ok"), "backend: guest driver not DRIVER_OK")
        self.require(st.get("timed"), "backend: VIRTIO_BALLOON_F_TIMED not negotiated")
        return st

    def check_healthy(self):
        """Agent answers, dmesg free of warnings, oopses and OOM kills."""
        res = self.guest.sh("echo alive", timeout=60)
        self.expect(res.rc == 0 and res.out.strip() == "alive",
                    "guest agent answers (got %r)" % (res,))
        bad = [line for line in self.guest.dmesg().splitlines() if BAD_DMESG.search(line)]
        for line in bad[:10]:
            self.diag("dmesg: %s", line)
        self.expect(not bad, "guest dmesg clean (%d bad lines)" % len(bad))

    def balloon(self, op, to_pages, deadline, extra=(), timeout=None):
        """Run `tballoon OP --to Np --deadline D --wait --json`.

        Returns (exit code, status dict or None, host wall seconds).
        """
        import time
        t0 = time.monotonic()
        rc, st, err = self.guest.tool_json(op, "--to", "%dp" % to_pages,
                                           "--deadline", deadline, "--wait",
                                           *extra, timeout=timeout or 600)
        wall = time.monotonic() - t0
        if err.strip():
            for line in err.strip().splitlines()[-5:]:
                self.diag("tballoon %s stderr: %s", op, line)
        self.require(st is not None, "tballoon %s --wait --json printed no JSON (exit %d)"
                     % (op, rc))
        cmd = st.get("command") or {}
        self.diag("%s to %d pages: exit %d, state %s, reason %s, actual %d, guest %s ms, "
                  "host %s ms, wall %.2f s, %s reports", op, to_pages, rc,
                  cmd.get("state"), cmd.get("reason"), st.get("actual_pages", -1),
                  cmd.get("elapsed_ms"), cmd.get("host_elapsed_ms"), wall,
                  cmd.get("reports"))
        return rc, st, wall


def available_kb(guest):
    """MemAvailable plus the pages on the per-CPU free lists, in kB.

    Since 6.7 the per-CPU free lists grow with the allocation and free rate
    and can hold tens of MiB: free memory that MemAvailable does not count.
    A balloon that allocates refills them from the buddy lists in batches, so
    MemAvailable alone drops below what is really free by up to one batch.
    """
    avail = guest.meminfo()["MemAvailable"]
    pcp = sum(int(w[1]) for w in (ln.split() for ln in
                                  guest.sh("cat /proc/zoneinfo").out.splitlines())
              if len(w) == 2 and w[0] == "count:")
    return avail + pcp * PAGE // 1024


def mib(nbytes):
    return "%.1f MiB" % (nbytes / MIB)


# Import the scenario modules (they register themselves).
from . import timed, compat, driver, backend, docs, qmp, superset, policy  # noqa: E402,F401
