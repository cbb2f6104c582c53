#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Where tballoon's time goes: one guest, one 1 GiB inflate and deflate, traced.

    bench/tbprofile.py [--out DIR] [--smp N] [--keep]

Boots the tballoon guest of bench/run.py (1.5 GiB, TCG) and measures:
- CPU time of every QEMU thread (vCPUs, main loop) and of tballoon serve
  during an untraced inflate and deflate (/proc/PID/task/*/stat);
- the driver's own timeline with the guest's function_graph tracer limited
  to the driver's entry points and the virtio config/notify calls
  (tballoon_send, tballoon_complete, tballoon_report, tballoon_fill_deflate,
  tballoon_ack, vp_get, vp_set, vp_notify, vp_generation,
  balloon_page_list_enqueue/dequeue): per-buffer cycle, device turnaround,
  cost of a progress report and of a config access;
- the backend's view from its -v log: pages and punched ranges per buffer,
  vhost-user messages per command;
- the same inflate in a second guest booted with init_on_alloc=0 (Debian's
  kernel zeroes every allocated page by default: CONFIG_INIT_ON_ALLOC_DEFAULT_ON).
Writes DIR/profile.json and prints a summary; bench/run.py runs it too.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_OUT = REPO / "out" / "bench"
os.environ.setdefault("TB_OUT", str(DEFAULT_OUT / "runs"))
sys.path.insert(0, str(BENCH))

import bguest  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096
GUEST_RAM = "1536M"
TRACEFS = "/sys/kernel/tracing"
TRACED = ["tballoon_work", "tballoon_send", "tballoon_complete", "tballoon_report",
          "tballoon_fill_deflate", "tballoon_ack", "tballoon_config_changed",
          "vp_get", "vp_set", "vp_notify", "vp_generation",
          "balloon_page_list_enqueue", "balloon_page_list_dequeue"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print("[profile] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Host CPU accounting
# ---------------------------------------------------------------------------

def thread_times(pid):
    """{thread name (tid): cpu seconds} for every thread of PID."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        out["%s (%s)" % (name, tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_delta(before, after):
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after
            if after[k] - before.get(k, 0.0) > 0}


def _status_json(res, op):
    for line in reversed(res.stdout.splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise RuntimeError("tballoon %s printed no JSON (exit %d): %s"
                       % (op, res.returncode, res.stderr.strip()))


def timed_op(g, op, to):
    pids = {"qemu": g.qemu.pid, "backend": g.backend.pid}
    before = {k: thread_times(p) for k, p in pids.items()}
    t0 = time.monotonic()
    res = g.tool(op, "--to", to, "--deadline", "60s", "--wait", "--json", timeout=300)
    wall = time.monotonic() - t0
    after = {k: thread_times(p) for k, p in pids.items()}
    st = _status_json(res, op)
    cmd = st["command"]
    cpu = {k: cpu_delta(before[k], after[k]) for k in pids}
    return {"op": op, "exit": res.returncode, "state": cmd["state"], "wall_s": wall,
            "guest_elapsed_ms": cmd["elapsed_ms"], "reports": cmd["reports"],
            "cpu_s": cpu,
            "cpu_total_s": {k: round(sum(v.values()), 3) for k, v in cpu.items()}}


# ---------------------------------------------------------------------------
# Guest function_graph trace
# ---------------------------------------------------------------------------

LINE = re.compile(r"^\s*(?P<ts>\d+\.\d+)\s*\|\s*(?P<cpu>\d+)\)\s*(?:[!#@*+$]\s*)?"
                  r"(?:(?P<dur>\d+(?:\.\d+)?)\s*us)?\s*\|\s*(?P<fn>.*)$")


def parse_graph(text):
    """[(start_s, name, duration_us or None, kind)] from a function_graph trace.

    kind: "leaf" (name();), "enter" (name() {), "exit" (} /* name */).
    """
    events = []
    stacks = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ts = float(m.group("ts"))
        cpu = m.group("cpu")
        fn = m.group("fn").strip()
        dur = float(m.group("dur")) if m.group("dur") else None
        name = re.sub(r"\s*\[.*?\]", "", fn)
        if fn.endswith("();"):
            events.append((ts, name[:-3], dur, "leaf"))
        elif fn.endswith("{"):
            n = name[:-1].strip()[:-2]
            stacks.setdefault(cpu, []).append((n, ts))
            events.append((ts, n, None, "enter"))
        elif fn.startswith("}"):
            mm = re.search(r"/\*\s*(\S+)", fn)
            n = mm.group(1) if mm else "?"
            start = ts
            st = stacks.get(cpu) or []
            if st and st[-1][0] == n:
                start = st.pop()[1]
            events.append((start, n, dur, "exit"))
    return events


def _st(values):
    if not values:
        return None
    return {"n": len(values), "total_ms": round(sum(values) / 1000.0, 3),
            "median_us": round(statistics.median(values), 1),
            "max_us": round(max(values), 1)}


def analyse_trace(text):
    ev = parse_graph(text)
    durs = {}
    for ts, name, dur, kind in ev:
        if kind in ("leaf", "exit") and dur is not None:
            durs.setdefault(name, []).append(dur)
    funcs = {k: _st(v) for k, v in sorted(durs.items())}
    sends = sorted(ts for ts, name, dur, kind in ev if name == "tballoon_send"
                   and kind in ("enter", "leaf"))
    acks = sorted(ts for ts, name, dur, kind in ev if name == "tballoon_ack")
    cycle = [(b - a) * 1e6 for a, b in zip(sends, sends[1:])]
    # device turnaround: a send to the first ack interrupt after it
    turn = []
    j = 0
    for s in sends:
        while j < len(acks) and acks[j] < s:
            j += 1
        if j < len(acks):
            turn.append((acks[j] - s) * 1e6)
    work = durs.get("tballoon_work") or []
    out = {"functions": funcs, "buffers_sent": len(sends),
           "cycle_between_sends": _st(cycle[len(cycle) // 4:]),  # steady state
           "send_to_next_ack": _st(turn[len(turn) // 4:]),
           "worker_ms": round(max(work) / 1000.0, 1) if work else None}
    rep = durs.get("tballoon_report") or []
    if work:
        out["share_of_worker"] = {}
        for name in ("tballoon_report", "tballoon_complete", "tballoon_send",
                     "tballoon_fill_deflate"):
            if durs.get(name):
                out["share_of_worker"][name] = round(sum(durs[name]) / max(work), 3)
        if rep:
            out["report_ms_total"] = round(sum(rep) / 1000.0, 1)
    return out


def traced_op(g, op, to):
    T = TRACEFS
    g.sh("echo 0 > %s/tracing_on; : > %s/trace; echo 1 > %s/tracing_on" % (T, T, T))
    t0 = time.monotonic()
    res = g.tool(op, "--to", to, "--deadline", "60s", "--wait", "--json", timeout=300)
    wall = time.monotonic() - t0
    g.sh("echo 0 > %s/tracing_on" % T)
    text = g.sh("cat %s/trace" % T, timeout=300).out
    st = _status_json(res, op)
    out = analyse_trace(text)
    out.update(op=op, wall_s=wall, guest_elapsed_ms=st["command"]["elapsed_ms"],
               reports=st["command"]["reports"], trace_lines=len(text.splitlines()))
    overrun = g.sh("cat %s/per_cpu/cpu*/stats | grep overrun" % T).out
    out["overrun"] = sum(int(x.split()[-1]) for x in overrun.splitlines() if x.split())
    return out, text


def setup_trace(g):
    T = TRACEFS
    script = ["mount -t tracefs nodev %s 2>/dev/null; cd %s" % (T, T),
              "echo 0 > tracing_on", "echo nop > current_tracer",
              "echo 8192 > buffer_size_kb", ": > set_ftrace_filter"]
    for f in TRACED:
        script.append("echo %s >> set_ftrace_filter 2>/dev/null || echo missing %s" % (f, f))
    script += ["echo function_graph > current_tracer", "echo 1 > options/funcgraph-tail",
               "echo 1 > options/funcgraph-abstime", "cat set_ftrace_filter"]
    res = g.sh("\n".join(script))
    return [ln.split()[1] for ln in res.out.splitlines() if ln.startswith("missing")]


# ---------------------------------------------------------------------------
# Backend log
# ---------------------------------------------------------------------------

BUF = re.compile(r"queue (\d): (\d+) pages in (\d+) ranges")
MSG = re.compile(r"vhost-user: <- (\S+)")


def backend_log_since(g, offset):
    with open(str(g.backend_log), "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def analyse_backend(text):
    bufs = [(int(q), int(p), int(r)) for q, p, r in BUF.findall(text)]
    msgs = {}
    for m in MSG.findall(text):
        msgs[m] = msgs.get(m, 0) + 1
    out = {"messages": msgs}
    for q, name in ((0, "inflate"), (1, "deflate")):
        b = [x for x in bufs if x[0] == q]
        if b:
            out[name + "_buffers"] = len(b)
            out[name + "_pages_per_buffer"] = [p for _, p, _ in b[:6]] + (
                ["..."] if len(b) > 6 else [])
            out[name + "_ranges_total"] = sum(r for _, _, r in b)
            out[name + "_ranges_per_buffer_median"] = statistics.median(r for _, _, r in b)
    return out


def log_size(g):
    try:
        return g.backend_log.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------

def _reps(g, args, log, label):
    """REPS x (refill, inflate, deflate), then one inflate straight after a
    deflate (no refill: the free pages are host holes) and its deflate."""
    runs = []
    for r in range(args.reps):
        g.refill(GIB)
        for op, to in (("inflate", "1G"), ("deflate", "0")):
            off = log_size(g)
            x = timed_op(g, op, to)
            x["rep"] = r + 1
            x["backend"] = analyse_backend(backend_log_since(g, off))
            runs.append(x)
            log("%s %s rep %d: %.2f s wall, guest %s ms, cpu %s" % (
                label, op, r + 1, x["wall_s"], x["guest_elapsed_ms"], x["cpu_total_s"]))
    holes = []
    for op, to in (("inflate", "1G"), ("deflate", "0")):
        x = timed_op(g, op, to)
        holes.append(x)
        log("%s %s without refill: %.2f s wall" % (label, op, x["wall_s"]))
    return runs, holes


def perf_inflate(g, args, log):
    """`perf record` tballoon serve and QEMU during one inflate: top symbols."""
    import shutil
    import subprocess
    perf = shutil.which("perf")
    if perf is None:
        return {"error": "perf not installed (Debian package linux-perf)"}
    g.refill(GIB)
    out = {}
    procs = {}
    for name, pid in (("backend", g.backend.pid), ("qemu", g.qemu.pid)):
        data = Path(args.out) / ("perf-%s.data" % name)
        procs[name] = (data, subprocess.Popen(
            [perf, "record", "-q", "-o", str(data), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    timed_op(g, "inflate", "1G")
    for name, (data, proc) in procs.items():
        proc.send_signal(2)
        proc.wait(timeout=60)
        rep = subprocess.run([perf, "report", "-i", str(data), "--no-children", "--stdio",
                              "--sort", "comm,dso,sym"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True)
        top = [ln.strip() for ln in rep.stdout.splitlines()
               if ln.strip() and not ln.startswith("#") and "%" in ln][:12]
        out[name] = top
        log("perf %s: %s" % (name, "; ".join(top[:3])))
    timed_op(g, "deflate", "0")
    return out


def profile(args, log=say):
    prof = {"reps": args.reps}
    with bguest.BenchGuest(driver="tballoon", device="tballoon", mem=GUEST_RAM,
                           smp=args.smp, keep=args.keep, name="prof-a", log=log) as g:
        if g.driver_status != "loaded":
            raise RuntimeError("virtio_tballoon did not load")
        prof["untraced"], prof["no_refill"] = _reps(g, args, log, "default")
        if getattr(args, "perf", False):
            prof["perf"] = perf_inflate(g, args, log)
        missing = setup_trace(g)
        prof["trace_missing_functions"] = missing
        prof["traced"] = []
        g.refill(GIB)
        for op, to in (("inflate", "1G"), ("deflate", "0")):
            r, text = traced_op(g, op, to)
            prof["traced"].append(r)
            (Path(args.out) / ("ftrace-%s.txt" % op)).write_text(text)
            log("%s traced: %.2f s wall, %d buffers, cycle %s us, device %s us" % (
                op, r["wall_s"], r["buffers_sent"],
                (r["cycle_between_sends"] or {}).get("median_us"),
                (r["send_to_next_ack"] or {}).get("median_us")))
    with bguest.BenchGuest(driver="tballoon", device="tballoon", mem=GUEST_RAM,
                           smp=args.smp, keep=args.keep, name="prof-z", log=log,
                           extra_append="init_on_alloc=0") as g:
        if g.driver_status != "loaded":
            raise RuntimeError("virtio_tballoon did not load (init_on_alloc=0 guest)")
        prof["init_on_alloc_0"], prof["init_on_alloc_0_no_refill"] = _reps(
            g, args, log, "init_on_alloc=0")
    return prof


def _med(runs, op, key="wall_s"):
    vals = [r[key] for r in runs if r["op"] == op and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summary(prof):
    lines = ["profile of a 1 GiB inflate / deflate (tballoon, 1.5 GiB guest, TCG, "
             "%s reps, medians):" % prof.get("reps")]
    runs = prof.get("untraced", [])
    for op in ("inflate", "deflate"):
        mine = [r for r in runs if r["op"] == op]
        if not mine:
            continue
        cpu = {}
        for r in mine:
            for proc, threads in r["cpu_s"].items():
                for th, v in threads.items():
                    th = re.sub(r" \(\d+\)$", "", th)
                    cpu.setdefault((proc, th), []).append(v)
        busy = sorted(((k, statistics.median(v)) for k, v in cpu.items()),
                      key=lambda kv: -kv[1])[:4]
        be = mine[-1].get("backend", {})
        lines.append("  %s: %.2f s wall, guest %s ms; host CPU s (median): %s" % (
            op, _med(runs, op), _med(runs, op, "guest_elapsed_ms"),
            ", ".join("%s/%s %.2f" % (k[0], k[1], v) for k, v in busy)))
        if be.get(op + "_buffers"):
            lines.append("      backend: %d buffers, pages/buffer %s, %d punched ranges "
                         "(median %s per buffer), vhost-user messages %s" % (
                             be[op + "_buffers"], be[op + "_pages_per_buffer"],
                             be[op + "_ranges_total"], be[op + "_ranges_per_buffer_median"],
                             be["messages"]))
    for r in prof.get("traced", []):
        f = r["functions"]
        lines.append("  %s traced (%.2f s wall, guest %s ms, trace overrun %s):" % (
            r["op"], r["wall_s"], r["guest_elapsed_ms"], r["overrun"]))
        lines.append("      %d buffers; steady-state cycle between sends: median %s us; "
                     "send -> next used-buffer interrupt: median %s us" % (
                         r["buffers_sent"], (r["cycle_between_sends"] or {}).get("median_us"),
                         (r["send_to_next_ack"] or {}).get("median_us")))
        for name in ("tballoon_complete", "balloon_page_list_enqueue",
                     "tballoon_fill_deflate", "balloon_page_list_dequeue", "tballoon_send",
                     "vp_notify", "tballoon_report", "vp_set", "vp_get"):
            s = f.get(name)
            if s:
                lines.append("      %-26s n=%-4d total %8.1f ms  median %8.1f us  max %8.1f us"
                             % (name, s["n"], s["total_ms"], s["median_us"], s["max_us"]))
        if r.get("share_of_worker"):
            lines.append("      share of the worker's %.0f ms: %s" % (
                r["worker_ms"], ", ".join("%s %.0f%%" % (k, 100 * v)
                                          for k, v in r["share_of_worker"].items())))
    z = prof.get("init_on_alloc_0", [])
    for op in ("inflate", "deflate"):
        if _med(z, op) is not None:
            lines.append("  init_on_alloc=0 %s: %.2f s wall vs %.2f s with Debian's default "
                         "init_on_alloc=1" % (op, _med(z, op), _med(runs, op)))
    for label, key in (("init_on_alloc=1", "no_refill"),
                       ("init_on_alloc=0", "init_on_alloc_0_no_refill")):
        x = [r for r in prof.get(key, []) if r["op"] == "inflate"]
        if x:
            lines.append("  %s inflate right after a deflate (free pages are host holes): "
                         "%.2f s wall, host CPU %s" % (label, x[0]["wall_s"],
                                                       x[0]["cpu_total_s"]))
    for name, top in (prof.get("perf") or {}).items():
        if isinstance(top, list):
            lines.append("  perf %s (inflate), top symbols:" % name)
            lines += ["      " + t for t in top[:8]]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--perf", action="store_true",
                    help="also perf record the backend and QEMU during one inflate")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    prof = profile(args)
    (Path(args.out) / "profile.json").write_text(json.dumps(prof, indent=1) + "\n")
    text = summary(prof)
    (Path(args.out) / "profile.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
