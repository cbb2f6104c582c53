# SPDX-License-Identifier: GPL-2.0
"""The backend at scale and under change: two memory regions, guest
statistics from the upstream driver, a backend restarted mid-inflate."""

import json
import shutil
import subprocess
import time

from . import MIB, PAGE, group, mib, scenario
from tbtest import machine

GIB = 1 << 30
KB = 1024

# 4 GiB on q35: RAM below the PCI hole and above 4 GiB, two regions of one
# memfd at different offsets.
group("big", driver="tballoon", device="tballoon", mem="4G")


@scenario("inflate-3G-two-regions", "big")
def inflate_3g(ctx):
    """4 GiB guest (two regions): inflate to 75% (3 GiB), >= 95% released on the host, deflate"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    ctx.expect(st0.get("guest_ram_bytes") == 4 * GIB,
               "guest_ram_bytes == 4 GiB (got %s)" % st0.get("guest_ram_bytes"))
    regions = [line for line in open(str(g.backend_log)).read().splitlines()
               if "vhost-user: region" in line]
    for line in regions:
        ctx.diag("%s", line.split("info: ", 1)[-1])
    ctx.expect(len(regions) >= 2, "SET_MEM_TABLE has two regions (got %d)" % len(regions))
    mi0 = g.meminfo()
    target = 3 * GIB // PAGE
    t0 = time.monotonic()
    rc, st, err = g.tool_json("inflate", "--to", "75%", "--deadline", "600s", "--wait",
                              timeout=900)
    wall = time.monotonic() - t0
    ctx.require(st is not None, "inflate --to 75%% printed no JSON (exit %d): %s"
                % (rc, err.strip()))
    cmd = st.get("command", {})
    ctx.diag("inflate to 75%%: exit %d, state %s (%s), actual %d, guest %s ms, wall %.1f s",
             rc, cmd.get("state"), cmd.get("reason"), st.get("actual_pages", -1),
             cmd.get("elapsed_ms"), wall)
    ctx.expect(rc == 0 and cmd.get("state") == "done", "inflate done, exit 0")
    ctx.expect(cmd.get("target_pages") == target,
               "75%% of 4 GiB resolved to %d pages (got %s)" % (target, cmd.get("target_pages")))
    ctx.expect(st.get("actual_pages") == target, "actual_pages == %d (got %s)"
               % (target, st.get("actual_pages")))
    st1 = ctx.status()
    drop = st0["resident_bytes"] - st1["resident_bytes"]
    ctx.diag("host resident %s -> %s: released %s (%.1f%% of 3 GiB), punched %s",
             mib(st0["resident_bytes"]), mib(st1["resident_bytes"]), mib(drop),
             100.0 * drop / (3 * GIB), mib(st1.get("released_bytes", 0)))
    ctx.expect(drop >= 0.95 * 3 * GIB, "resident dropped by >= 95%% of 3 GiB (%s)" % mib(drop))
    ctx.expect(st1["stats"]["refused_pfns"] == 0, "no PFN refused (%d)"
               % st1["stats"]["refused_pfns"])
    ctx.expect(st1.get("device_pages") == target, "device count == %d (got %s)"
               % (target, st1.get("device_pages")))
    mi1 = g.meminfo()
    ctx.expect((mi0["MemTotal"] - mi1["MemTotal"]) * KB == 3 * GIB,
               "MemTotal dropped by 3 GiB (%d -> %d kB)" % (mi0["MemTotal"], mi1["MemTotal"]))
    rc, st, wall = ctx.balloon("deflate", 0, "600s", timeout=900)
    ctx.expect(rc == 0 and st.get("actual_pages") == 0, "deflate to 0 done (exit %d)" % rc)
    mi2 = g.meminfo()
    ctx.expect(mi2["MemTotal"] == mi0["MemTotal"], "MemTotal back (%d kB, was %d)"
               % (mi2["MemTotal"], mi0["MemTotal"]))
    ctx.check_healthy()


@scenario("upstream-stats", "upstream", needs=("tool",))
def upstream_stats(ctx):
    """upstream virtio_balloon fills the statistics queue: tballoon stats shows them, refreshed"""
    g = ctx.guest
    ctx.require(g.driver_status == "loaded",
                "virtio_balloon.ko did not load (%s)" % g.driver_status)
    rc, s0, err = g.tool_json("stats")
    ctx.require(rc == 0 and s0 is not None, "tballoon stats --json failed (%d): %s"
                % (rc, err.strip()))
    ctx.expect(s0.get("stats_vq") is True, "STATS_VQ negotiated by virtio_balloon")
    # the first buffer comes at probe; a fresh one every interval (2 s)
    deadline = time.monotonic() + 30
    s1 = s0
    while time.monotonic() < deadline and s1.get("updates", 0) < s0.get("updates", 0) + 2:
        time.sleep(1)
        rc, s1, err = g.tool_json("stats")
        if s1 is None:
            break
    ctx.require(s1 is not None, "tballoon stats failed: %s" % err.strip())
    gs = s1.get("guest", {})
    ctx.diag("guest statistics (%s updates, %s ms old): %s", s1.get("updates"),
             s1.get("age_ms"), json.dumps(gs, sort_keys=True))
    ctx.expect(s1.get("updates", 0) >= s0.get("updates", 0) + 2,
               "statistics refreshed periodically (%s -> %s updates)"
               % (s0.get("updates"), s1.get("updates")))
    ctx.expect(0 <= s1.get("age_ms", -1) < 5000, "statistics are fresh (age %s ms)"
               % s1.get("age_ms"))
    mi = g.meminfo()
    total = gs.get("total-memory", 0)
    ctx.expect(abs(total - mi["MemTotal"] * KB) <= 64 * MIB,
               "total-memory %s matches MemTotal %s" % (mib(total), mib(mi["MemTotal"] * KB)))
    ctx.expect(0 < gs.get("free-memory", 0) <= total, "free-memory is in (0, total]")
    res = g.tool("stats")
    ctx.expect(res.returncode == 0 and "total-memory" in res.stdout,
               "tballoon stats (text) lists the statistics")
    ctx.check_healthy()


# Backend killed and restarted mid-inflate. QEMU 11.1's
# vhost-user-test-device cannot re-attach to a new backend (reconnect-ms fails
# at realize, "Failed to set msg fds"; a re-connection aborts QEMU in
# vhost_dev_start), so the connection itself must survive: serve runs under
# tbtest.fdholder, which does what systemd does for tballoon-serve@.service
# (holds the sockets, keeps the fd store, restarts with LISTEN_FDS). QEMU's
# one connection is handed to the restarted daemon; QEMU sees nothing.
group("restart", driver="tballoon", device="tballoon", mem="2G", fd_holder=True,
      backend_args=("--state-file", "{rundir}/state.json"))

# Pause and reboot get a guest of their own (no fd holder): a backend-restart failure leaves its guest without a
# session, which must not fail these two as well.
group("reset", driver="tballoon", device="tballoon", mem="2G", allow_reboot=True,
      backend_args=("--state-file", "{rundir}/state.json"))


def _waiter_result(waiter, timeout):
    """The last JSON line of a background `tballoon ... --wait --json`, and its stderr."""
    try:
        out, err = waiter.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        waiter.kill()
        out, err = waiter.communicate()
    try:
        return (json.loads(out.strip().splitlines()[-1]) if out.strip() else {}), err
    except ValueError:
        return {}, err


def _require_fd_store(ctx):
    g = ctx.guest
    ctx.require(g.holder is not None and "vu-sock" in g.holder.stored_names(),
                "serve runs under the fd holder with its session in the fd store (%s)"
                % (g.holder and ",".join(sorted(g.holder.stored_names()))))


@scenario("backend-restart", "restart")
def backend_restart(ctx):
    """serve SIGKILLed mid-inflate and restarted: the command is recovered and reported done"""
    g = ctx.guest
    _require_fd_store(ctx)
    st0 = ctx.require_timed_device()
    mi0 = g.meminfo()
    target = GIB // PAGE
    # paced over 20 s, so that the kill lands in the middle; the operator's
    # `inflate --wait` must live through the restart
    waiter = subprocess.Popen([str(g.env.tool), "-c", str(g.control), "inflate", "--to",
                               "%dp" % target, "--deadline", "20s", "--paced", "--wait",
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
    deadline = time.monotonic() + 60
    time.sleep(0.5)
    st = ctx.status()
    while st.get("actual_pages", 0) < target // 5 and time.monotonic() < deadline:
        time.sleep(0.2)
        st = ctx.status()
    cmd_id = st["command"]["cmd_id"]
    ctx.require(st["command"]["state"] == "running",
                "inflate still running before the kill (%s, actual %d)"
                % (st["command"]["state"], st["actual_pages"]))
    ctx.diag("killing serve at %d/%d pages (command %d)", st["actual_pages"], target, cmd_id)
    stored = sorted(g.holder.stored_names())
    rc = g.kill_backend()
    time.sleep(1.0)
    g.restart_backend()
    st1 = ctx.status()
    # the restarted daemon must have taken the session up; say so now
    # rather than let the command run into the watchdog
    ctx.require(st1.get("connected") and st1.get("driver_ok"),
                "the restarted daemon took QEMU's connection back from the fd store "
                "(connected %s, driver_ok %s; stored: %s)"
                % (st1.get("connected"), st1.get("driver_ok"), ",".join(stored)))
    c1 = st1["command"]
    ctx.diag("restarted: restored %s, command %d %s (recovered %s), actual %d, device %d",
             st1.get("restored"), c1["cmd_id"], c1["state"], c1.get("recovered"),
             st1["actual_pages"], st1.get("device_pages", -1))
    ctx.expect(rc == -9, "serve died by SIGKILL (%s)" % rc)
    ctx.expect(st1.get("restored") and c1["cmd_id"] == cmd_id and c1.get("recovered"),
               "the restarted daemon knows command %d from its state file" % cmd_id)
    rc, st2, err = g.tool_json("watch", timeout=300)
    ctx.require(st2 is not None, "watch printed nothing (exit %d): %s" % (rc, err.strip()))
    c2 = st2["command"]
    ctx.diag("watch: exit %d, command %d %s (%s), actual %d, guest %s ms, %s reports in all, "
             "daemon started %d times", rc, c2["cmd_id"], c2["state"],
             c2["reason"], st2["actual_pages"], c2["elapsed_ms"], c2["reports"],
             g.holder.starts)
    ctx.expect(rc == 0 and c2["state"] == "done" and c2["cmd_id"] == cmd_id,
               "command %d reported done after the restart (exit 0)" % cmd_id)
    ctx.expect(st2["actual_pages"] == target, "actual == %d (got %d)"
               % (target, st2["actual_pages"]))
    w, err = _waiter_result(waiter, 120)
    for line in err.strip().splitlines():
        ctx.diag("inflate --wait stderr: %s", line)
    ctx.expect(waiter.returncode == 0 and w.get("command", {}).get("state") == "done" and
               w.get("command", {}).get("cmd_id") == cmd_id,
               "the operator's inflate --wait lived through the restart: exit %s, state %s"
               % (waiter.returncode, w.get("command", {}).get("state")))
    with open(str(g.backend_log)) as f:
        blog = f.read()
    ctx.expect("session: resumed the vhost-user session" in blog and
               blog.count("vhost-user: features acked") == 1 and g.holder.starts == 2,
               "one QEMU connection across both daemons: the second resumed it, "
               "no new handshake")
    g.check_alive()
    st3 = ctx.status()
    drop = st0["resident_bytes"] - st3["resident_bytes"]
    ctx.diag("host resident %s -> %s (dropped %s), released %s across both daemons, "
             "device count %d", mib(st0["resident_bytes"]), mib(st3["resident_bytes"]),
             mib(drop), mib(st3["released_bytes"]), st3.get("device_pages", -1))
    ctx.expect(drop >= 0.95 * GIB, "resident dropped by >= 95%% of 1 GiB (%s)" % mib(drop))
    ctx.expect(st3.get("device_pages") == target and st3["released_bytes"] >= GIB,
               "accounting consistent: device count %d, released %s"
               % (st3.get("device_pages", -1), mib(st3["released_bytes"])))
    mi1 = g.meminfo()
    ctx.expect((mi0["MemTotal"] - mi1["MemTotal"]) * KB == GIB,
               "guest MemTotal dropped by 1 GiB (%d -> %d kB)" % (mi0["MemTotal"],
                                                                  mi1["MemTotal"]))
    rc, st4, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.expect(rc == 0 and st4.get("actual_pages") == 0, "deflate to 0 afterwards (exit %d)" % rc)
    ctx.check_healthy()


# Killed inside the window between taking a request and answering it: the
# daemon makes a driver report durable (fsync) before it acknowledges the
# config write, and the vCPU that wrote it waits for that acknowledgement.
# strace (fault injection: fsync delayed by 4 s from the third one after
# attaching; the first two are the state save of the command itself) holds
# the daemon in that window for the kill. Its own guest: a daemon that
# loses the request leaves the guest's vCPU waiting for good.
group("restart-reply", driver="tballoon", device="tballoon", mem="1G", fd_holder=True,
      backend_args=("--state-file", "{rundir}/state.json"))


@scenario("backend-restart-in-reply", "restart-reply")
def backend_restart_in_reply(ctx):
    """serve SIGKILLed after taking the driver's report and before acknowledging it (fsync held by strace): the restarted daemon answers the same request, the command ends done, the guest goes on"""
    g = ctx.guest
    _require_fd_store(ctx)
    ctx.require(shutil.which("strace"), "strace installed (scripts/setup installs it)")
    st0 = ctx.require_timed_device()
    # inflate to the current size: done at once, one report, no PFN buffer
    actual = st0["actual_pages"]
    pid = g.backend.pid
    slog = str(g.path("strace.log"))
    tracer = subprocess.Popen(["strace", "-qq", "-p", str(pid), "-o", slog,
                               "-e", "trace=fsync",
                               "-e", "inject=fsync:delay_enter=4000000:when=3+"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    time.sleep(1.0)     # attached
    waiter = subprocess.Popen([str(g.env.tool), "-c", str(g.control), "inflate", "--to",
                               "%dp" % actual, "--deadline", "10s", "--wait", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
    time.sleep(2.0)     # the report's save is in the held fsync
    with open(slog) as f:
        held = [l for l in f.read().splitlines() if "fsync" in l]
    rc = g.kill_backend()
    tracer.wait(30)
    g.restart_backend()
    w, err = _waiter_result(waiter, 60)
    c = w.get("command", {})
    alive = g.sh("echo alive", timeout=30)
    ctx.diag("fsync calls seen by strace before the kill: %d (the last held); serve rc %s; "
             "inflate --wait exit %s: %s/%s, %s reports; guest %s", len(held), rc,
             waiter.returncode, c.get("state"), c.get("reason"), c.get("reports"),
             "answers" if alive.rc == 0 else "does not answer")
    ctx.expect(len(held) >= 3, "the kill came while a third fsync was held (%d seen)"
               % len(held))
    ctx.expect(alive.rc == 0 and alive.out.strip() == "alive",
               "the guest answers after the restart (its config write was acknowledged)")
    ctx.expect(waiter.returncode == 0 and c.get("state") == "done",
               "the command ends done (exit %s, %s)" % (waiter.returncode, c.get("state")))
    st = ctx.status()
    ctx.expect(st.get("actual_pages") == actual and st.get("device_pages") == actual,
               "balloon unchanged and consistent (actual %s, device %s)"
               % (st.get("actual_pages"), st.get("device_pages")))
    ctx.check_healthy()


@scenario("pause-resume", "reset")
def pause_resume(ctx):
    """QMP stop/cont stops and restarts the rings: not a device reset, the balloon stays"""
    from tbtest import machine
    g = ctx.guest
    st0 = ctx.require_timed_device()
    target = st0["actual_pages"] + 256 * MIB // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "120s", timeout=300)
    ctx.require(rc == 0, "inflate 256 MiB done (exit %d)" % rc)
    qmp = machine.Qmp(g.path("qmp.sock"))
    try:
        qmp.command("stop")
        time.sleep(1.0)
        qmp.command("cont")
    finally:
        qmp.close()
    time.sleep(1.0)
    st1 = ctx.status()
    ctx.diag("after stop/cont: actual %d, device %d, resets %d, driver_ok %s",
             st1["actual_pages"], st1.get("device_pages", -1), st1["stats"]["resets"],
             st1["driver_ok"])
    ctx.expect(st1["stats"]["resets"] == st0["stats"]["resets"],
               "no device reset seen (%d -> %d)" % (st0["stats"]["resets"],
                                                   st1["stats"]["resets"]))
    ctx.expect(st1["actual_pages"] == target and st1.get("device_pages") == target,
               "balloon still %d pages (actual %d, device %s)"
               % (target, st1["actual_pages"], st1.get("device_pages")))
    rc, gs0, err = g.tool_json("stats")
    if gs0 is not None and gs0.get("stats_vq"):
        # the statistics buffer the device held survives the pause
        deadline = time.monotonic() + 20
        gs1 = gs0
        while time.monotonic() < deadline and gs1 and \
                gs1.get("updates", 0) < gs0.get("updates", 0) + 2:
            time.sleep(1)
            rc, gs1, err = g.tool_json("stats")
        ctx.diag("statistics after the pause: %s -> %s updates", gs0.get("updates"),
                 gs1 and gs1.get("updates"))
        ctx.expect(gs1 is not None and gs1.get("updates", 0) >= gs0.get("updates", 0) + 2,
                   "guest statistics still refreshed after the pause (%s -> %s updates)"
                   % (gs0.get("updates"), gs1 and gs1.get("updates")))
    rc, st, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.expect(rc == 0 and st.get("actual_pages") == 0, "deflate to 0 after resume (exit %d)" % rc)
    ctx.check_healthy()


@scenario("guest-reboot", "reset")
def guest_reboot(ctx):
    """guest reboots mid-inflate: device reset, balloon and driver block cleared, works again"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    mi0 = g.meminfo()
    target = st0["actual_pages"] + 256 * MIB // PAGE
    rc, st, wall = ctx.balloon("inflate", target, "120s", timeout=300)
    ctx.require(rc == 0, "inflate 256 MiB done (exit %d)" % rc)
    p = g.tool("inflate", "--to", "%dp" % (target + 512 * MIB // PAGE), "--deadline", "60s",
               "--paced")
    ctx.require(p.returncode == 0, "paced inflate not issued: %s" % p.stderr.strip())
    cmd_id = ctx.status()["command"]["cmd_id"]
    time.sleep(1.0)
    t0 = time.monotonic()
    g.reboot()
    ctx.diag("rebooted in %.1f s, driver %s", time.monotonic() - t0, g.driver_status)
    ctx.require(g.driver_status == "loaded", "driver loaded after the reboot (%s)"
                % g.driver_status)
    deadline = time.monotonic() + 30
    st1 = ctx.status()
    while not st1["driver_ok"] and time.monotonic() < deadline:
        time.sleep(0.5)
        st1 = ctx.status()
    c1 = st1["command"]
    ctx.diag("after the reboot: resets %d, actual %d, device %d, num_pages %d, command %d %s (%s)",
             st1["stats"]["resets"], st1["actual_pages"], st1.get("device_pages", -1),
             st1["num_pages"], c1["cmd_id"], c1["state"], c1["reason"])
    ctx.expect(st1["stats"]["resets"] == st0["stats"]["resets"] + 1, "one device reset seen")
    ctx.expect(st1["actual_pages"] == 0 and st1.get("device_pages") == 0 and
               st1["num_pages"] == 0, "balloon accounting reset to 0")
    ctx.expect(c1["cmd_id"] == cmd_id and c1["state"] == "aborted" and c1["reason"] == "removed",
               "the running command %d ended aborted (removed)" % cmd_id)
    mi1 = g.meminfo()
    ctx.expect(mi1["MemTotal"] == mi0["MemTotal"],
               "the rebooted guest has all its RAM (MemTotal %d kB, %d before the inflate)"
               % (mi1["MemTotal"], mi0["MemTotal"]))
    rc, st, wall = ctx.balloon("inflate", 128 * MIB // PAGE, "120s", timeout=300)
    ctx.expect(rc == 0 and st["command"]["cmd_id"] > cmd_id,
               "a new command works after the reboot (exit %d, id %s)"
               % (rc, st["command"].get("cmd_id")))
    rc, st, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.check_healthy()


@scenario("dead-device-reboot", "reset")
def dead_device_reboot(ctx):
    """the device stops returning buffers mid-inflate, then the guest reboots: the reboot completes, the new boot works"""
    g = ctx.guest
    st0 = ctx.require_timed_device()
    p = g.tool("inflate", "--to", "%dp" % (st0["actual_pages"] + 512 * MIB // PAGE),
               "--deadline", "60s", "--paced")
    ctx.require(p.returncode == 0, "paced inflate not issued: %s" % p.stderr.strip())
    time.sleep(1.5)
    ctl = machine.Qmp(g.control)
    try:
        ctl.command("x-test-withhold-buffers", withhold=True)
    finally:
        ctl.sock.close()
    time.sleep(0.5)
    t0 = time.monotonic()
    try:
        g.reboot(timeout=120)
        secs = time.monotonic() - t0
    except machine.GuestError as e:
        secs = None
        ctx.diag("reboot: %s", e)
    ctl = machine.Qmp(g.control)
    try:
        ctl.command("x-test-withhold-buffers", withhold=False)
    finally:
        ctl.sock.close()
    ctx.require(secs is not None, "the guest rebooted within 120 s with the device "
                "withholding its buffers")
    ctx.diag("rebooted in %.1f s with the device withholding buffers; driver %s", secs,
             g.driver_status)
    ctx.expect(g.driver_status == "loaded", "driver loaded after the reboot")
    deadline = time.monotonic() + 30
    st1 = ctx.status()
    while not st1["driver_ok"] and time.monotonic() < deadline:
        time.sleep(0.5)
        st1 = ctx.status()
    rc, st, wall = ctx.balloon("inflate", 64 * MIB // PAGE, "120s", timeout=300)
    ctx.expect(rc == 0, "a new command works after the reboot (exit %d)" % rc)
    rc, st, wall = ctx.balloon("deflate", 0, "120s", timeout=300)
    ctx.check_healthy()
