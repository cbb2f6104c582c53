#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""tballoon boot tests: real guest kernel, real QEMU, real tballoon backend.

    run.py [--list] [--kvm] [--keep] [--smp N] [--bzimage] [--build]
           [--kernel 6.1|6.12] [SCENARIO...]
    run.py --demo [--kvm] [--keep] [--kernel 6.1|6.12]

Prints TAP on stdout (plan, "ok N - name" / "not ok N - name # reason",
"# " diagnostics with the measured figures); exit status 1 if any scenario
failed. Run directories (console.log, backend.log, qemu.log, tool.log) are
under out/qemu-tests/ and kept when a scenario fails or with --keep.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tbtest import env as tbenv  # noqa: E402
from tbtest import machine  # noqa: E402
import scenarios  # noqa: E402

EXIT_NAMES = {0: "done", 1: "error", 2: "usage", 3: "deadline", 4: "pressure",
              5: "aborted", 6: "rejected", 7: "no outcome from the guest"}


def out(line=""):
    print(line, flush=True)


def diag(msg):
    for line in str(msg).splitlines() or [""]:
        out("# " + line)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def build_parts(e):
    """--build: make the module and the host tool when their sources exist."""
    if (tbenv.REPO / "Kbuild").exists():
        diag("building virtio_tballoon.ko for %s" % e.kver)
        argv = ["make", "-s", "-C", str(tbenv.REPO), "module", "KDIR=%s" % e.kdir]
        if e.modout is not None:
            argv.append("MODOUT=%s" % e.modout)
        subprocess.run(argv, stdout=sys.stderr, check=True)
    if (tbenv.REPO / "host-tool" / "Makefile").exists():
        diag("building host-tool/tballoon")
        subprocess.run(["make", "-s", "-C", str(tbenv.REPO / "host-tool")],
                       stdout=sys.stderr, check=True)


def stale_note(e):
    """Warn when the module is older than its sources (nobody rebuilt it)."""
    if not e.module.exists() or "TB_MODULE" in os.environ or e.modout is not None:
        return
    mtime = e.module.stat().st_mtime
    srcs = list((tbenv.REPO / "driver").glob("*.[ch]")) + [tbenv.REPO / "proto" /
                                                           "virtio_tballoon.h"]
    newer = [p.name for p in srcs if p.exists() and p.stat().st_mtime > mtime]
    if newer:
        diag("warning: %s is older than %s (use --build)" % (e.module.name, ", ".join(newer)))


def missing_for(e, needs):
    gone = []
    if "tool" in needs and not e.tool.exists():
        gone.append("host tool %s missing (make -C host-tool)" % e.tool)
    if "module" in needs and not e.module.exists():
        gone.append("%s missing (make module%s)" % (
            e.module, "" if e.modout is None else
            " KDIR=%s MODOUT=%s" % (e.kdir, e.modout)))
    return gone


def log_tails(g):
    """Diagnostic lines: the ends of a guest's console and backend logs."""
    lines = ["console tail (%s):" % g.console_log]
    lines += ["  " + ln for ln in machine.tail(g.console_log, 15)]
    if g.backend_log.exists():
        lines.append("backend tail (%s):" % g.backend_log)
        lines += ["  " + ln for ln in machine.tail(g.backend_log, 15)]
    return lines


def run_tests(args):
    e = tbenv.load()
    names = [s.name for s in scenarios.REGISTRY]
    unknown = [n for n in args.scenario if n not in names]
    if unknown:
        print("run.py: unknown scenario %s (see --list)" % ", ".join(unknown), file=sys.stderr)
        return 2
    selected = [s for s in scenarios.REGISTRY
                if s.name in args.scenario or
                (not args.scenario and (s.kernels is None or e.which in s.kernels))]
    stale_note(e)
    for m in e.missing():
        diag("note: " + m)
    out("1..%d" % len(selected))

    failed = 0
    guest = None
    guest_group = None
    boot_error = None
    shared = {}
    try:
        for num, sc in enumerate(selected, 1):
            opts = dict(scenarios.GROUPS[sc.group])
            lines = []
            reason = None
            missing = missing_for(e, sc.needs)
            if missing:
                reason = "; ".join(missing)
            if reason is None and sc.group != guest_group:
                if guest is not None:
                    guest.close()
                guest, guest_group, boot_error, shared = None, sc.group, None, {}
                opts.update(kvm=args.kvm, keep=args.keep, smp=args.smp,
                            bzimage=args.bzimage, name=sc.group, log=diag)
                if opts.get("device") == "tballoon" and not e.tool.exists():
                    # Still boot (initramfs, agent, driver load), without the device.
                    diag("host tool missing: group %s boots without the balloon device"
                         % sc.group)
                    opts["device"] = "none"
                booting = machine.Guest(**opts)
                try:
                    guest = booting.__enter__()
                    diag("group %s: booted %s in %.2f s, driver %s: %s, run dir %s" % (
                        sc.group, guest.kernel.name, guest.boot_s, guest.driver,
                        guest.driver_status, guest.rundir))
                except Exception as err:    # the guest closed itself, run dir kept
                    boot_error = "guest boot failed: %s" % str(err).splitlines()[0]
                    lines.append(str(err))
                    if not isinstance(err, machine.GuestError):
                        lines.append(traceback.format_exc())
                    if booting.rundir is not None:
                        lines += log_tails(booting)
            if reason is None and boot_error:
                reason = boot_error
            t0 = time.monotonic()
            gone = bool(reason)     # not run at all: no guest logs to show
            if reason is None:
                ctx = scenarios.Ctx(guest, shared, lines.append)
                try:
                    sc.fn(ctx)
                    if ctx.failures:
                        reason = ctx.failures[0]
                        if len(ctx.failures) > 1:
                            reason += " (+%d more)" % (len(ctx.failures) - 1)
                except scenarios.Fail as err:
                    reason = str(err)
                except machine.GuestError as err:
                    reason = str(err).splitlines()[0]
                    lines.append(str(err))
                    guest_group = None  # agent or guest unusable: next one reboots
                except subprocess.TimeoutExpired as err:
                    reason = "timed out: %s" % " ".join(err.cmd[1:4] if err.cmd else [])
                except Exception as err:  # a harness bug must not stop the run
                    reason = "harness error: %r" % err
                    lines.append(traceback.format_exc())
                try:
                    guest.check_alive()
                except machine.GuestError as err:
                    reason = reason or "guest died: %s" % str(err).splitlines()[0]
                    lines.append(str(err))
                    guest_group = None
            if reason is None:
                out("ok %d - %s" % (num, sc.name))
            else:
                failed += 1
                out("not ok %d - %s # %s" % (num, sc.name, reason.replace("\n", " ")))
                if guest is not None and not gone:
                    guest.failed = True
                    lines += log_tails(guest)
            lines.append("%s took %.1f s" % (sc.name, time.monotonic() - t0))
            for line in lines:
                diag(line)
    finally:
        if guest is not None:
            guest.close()
    diag("%d passed, %d failed" % (len(selected) - failed, failed))
    return 1 if failed else 0


def summarize(g, label):
    st = g.status()
    mi = g.meminfo()
    cmd = st.get("command") or {}
    print("[demo] %s: balloon %d pages (%.0f MiB), last command %s -> %s, "
          "host resident %.0f MiB, guest MemTotal %d MiB, MemAvailable %d MiB" % (
              label, st.get("actual_pages", 0), st.get("actual_pages", 0) * 4096 / (1 << 20),
              cmd.get("op"), cmd.get("state"), st.get("resident_bytes", 0) / (1 << 20),
              mi.get("MemTotal", 0) // 1024, mi.get("MemAvailable", 0) // 1024), flush=True)


def run_demo(args):
    e = tbenv.load()
    gone = missing_for(e, ("tool", "module"))
    if gone:
        print("[demo] cannot run: " + "; ".join(gone), file=sys.stderr)
        return 1
    say = lambda m: print("[demo] " + m, flush=True)  # noqa: E731
    say("booting a 1 GiB guest (%s) with virtio_tballoon and tballoon serve..."
        % ("KVM" if args.kvm else "TCG"))
    rcs = []
    with machine.Guest(kvm=args.kvm, keep=args.keep, smp=args.smp, name="demo",
                       bzimage=args.bzimage, log=say) as g:
        say("booted in %.1f s; driver virtio_tballoon: %s" % (g.boot_s, g.driver_status))
        if g.driver_status != "loaded":
            say("the driver did not load; console log: %s" % g.console_log)
            g.failed = True
            return 1
        summarize(g, "before")
        for op, to in (("inflate", "512M"), ("deflate", "0")):
            argv = [op, "--to", to, "--deadline", "30s", "--wait"]
            say("$ tballoon %s" % " ".join(argv))
            rc = g.tool(*argv, capture=False, timeout=120).returncode
            rcs.append(rc)
            say("exit %d (%s)" % (rc, EXIT_NAMES.get(rc, "?")))
            summarize(g, "after " + op)
        if any(rcs):
            g.failed = True
    ok = not any(rcs)
    say("outcome: %s" % ("inflate and deflate done" if ok else "FAILED (exit codes %s)" % rcs))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="tballoon boot tests (TAP on stdout)")
    ap.add_argument("scenario", nargs="*", help="scenarios to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--demo", action="store_true",
                    help="boot a guest, inflate 512M and deflate with live progress")
    ap.add_argument("--kvm", action="store_true", help="use KVM instead of TCG")
    ap.add_argument("--keep", action="store_true", help="keep run directories")
    ap.add_argument("--smp", type=int, default=2, help="guest vCPUs (default 2)")
    ap.add_argument("--bzimage", action="store_true",
                    help="boot the compressed bzImage instead of the PVH vmlinux")
    ap.add_argument("--build", action="store_true",
                    help="build the module and host tool first")
    ap.add_argument("--kernel", choices=tbenv.KERNELS,
                    help="guest kernel generation (default: $TB_KERNEL or 6.1)")
    args = ap.parse_args()
    if args.kernel:
        os.environ["TB_KERNEL"] = args.kernel

    if args.list:
        for s in scenarios.REGISTRY:
            only = " (kernel %s only)" % "/".join(s.kernels) if s.kernels else ""
            print("%-20s [%s] %s%s" % (s.name, s.group, s.doc, only))
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    try:
        if args.build:
            build_parts(tbenv.load())
        return run_demo(args) if args.demo else run_tests(args)
    except KeyboardInterrupt:
        out("Bail out! interrupted")
        return 130
    except BrokenPipeError:
        # stdout reader went away (| head); guests are already cleaned up.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SystemExit as stop:
        if stop.code and stop.code > 128:
            out("Bail out! killed by signal %d" % (stop.code - 128))
        raise


if __name__ == "__main__":
    sys.exit(main())
