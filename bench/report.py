# SPDX-License-Identifier: GPL-2.0
"""Statistics, the text table and the gnuplot PNG of bench/run.py results."""

import shutil
import statistics
import subprocess
from pathlib import Path

MIB = 1 << 20
ORDER = ["tballoon", "virtio-balloon", "virtio-mem", "limit"]
SHORT = {"tballoon": "a", "virtio-balloon": "b", "virtio-mem": "c", "limit": "d"}
PLOT_TITLES = {
    "tballoon": "(a) tballoon (progress events)",
    "virtio-balloon": "(b) virtio-balloon (query-balloon polled)",
    "virtio-mem": "(c) virtio-mem (qom-get size polled)",
    "limit": "(d) limit: user-space populate/munmap",
}


COLORS = {"tballoon": "#d62728", "virtio-balloon": "#1f77b4",
          "virtio-mem": "#2ca02c", "limit": "#7f7f7f"}


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values)}


def median_run(runs):
    """The run whose time is the median (lower median for even counts)."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def summarize(data):
    """Add data["summary"] (per mechanism stats) and data["ratios"]."""
    summ = {}
    for name, res in data["mechanisms"].items():
        s = {}
        for op in ("inflate", "deflate"):
            runs = res.get(op) or []
            if runs:
                s[op + "_s"] = stats([r["seconds"] for r in runs])
                s[op + "_released_bytes"] = stats([r.get("released") for r in runs])
                s[op + "_host_after_bytes"] = stats([r.get("host_after") for r in runs])
            for mode, var in (res.get("variants") or {}).items():
                runs = var.get(op) or []
                if runs:
                    s["%s_%s_s" % (mode, op)] = stats([r["seconds"] for r in runs])
                    s["%s_%s_released_bytes" % (mode, op)] = stats(
                        [r.get("released") for r in runs])
                    s["%s_%s_host_after_bytes" % (mode, op)] = stats(
                        [r.get("host_after") for r in runs])
        if name == "tballoon":
            inf = res.get("inflate") or []
            dfl = res.get("deflate") or []
            s["inflate_guest_ms"] = stats([r["guest_elapsed_ms"] for r in inf])
            s["deflate_guest_ms"] = stats([r["guest_elapsed_ms"] for r in dfl])
            s["inflate_reports_per_s"] = stats([r["reports_per_s"] for r in inf])
            s["inflate_progress_events_per_s"] = stats(
                [r["progress_events_per_s"] for r in inf])
            s["backend_resident_drop_bytes"] = stats(
                [r["backend_resident_before"] - r["backend_resident_after"] for r in inf])
            ov = res.get("overshoot") or []
            s["overshoot_ms"] = stats([r.get("overshoot_ms") for r in ov])
            s["overshoot_host_ms"] = stats([r.get("host_overshoot_ms") for r in ov])
        summ[name] = s
    data["summary"] = summ

    ratios = {}
    a = summ.get("tballoon", {})
    for other in ("virtio-balloon", "virtio-mem", "limit"):
        o = summ.get(other)
        if not o:
            continue
        for op in ("inflate", "deflate"):
            x, y = a.get(op + "_s"), o.get(op + "_s")
            if x and y and y["median"] > 0:
                ratios["a/%s %s" % (SHORT[other], op)] = x["median"] / y["median"]
    lim = summ.get("limit") or {}
    for mode in ("kernel", "kernel-mt"):
        for op in ("inflate", "deflate"):
            x, y = a.get(op + "_s"), lim.get("%s_%s_s" % (mode, op))
            if x and y and y["median"] > 0:
                ratios["a/d-%s %s" % (mode, op)] = x["median"] / y["median"]
    data["ratios"] = ratios
    return data


def _fmt_s(st):
    if not st:
        return "-"
    return "%.2f / %.2f / %.2f" % (st["min"], st["median"], st["max"])


def _fmt_mib(st):
    if not st:
        return "-"
    return "%.0f MiB" % (st["median"] / MIB)


def table(data):
    summ = data.get("summary") or summarize(data)["summary"]
    lines = []
    m = data.get("meta", {})
    lines.append("tballoon benchmark: %s guest RAM, %s moved, %s, guest %s, %s reps, %s"
                 % ("%d MiB" % (m.get("guest_ram_bytes", 0) // MIB),
                    "%d MiB" % (m.get("moved_bytes", 0) // MIB),
                    (m.get("accel") or "?").upper(), m.get("guest_kernel"),
                    m.get("reps"), m.get("qemu")))
    lines.append("host: %s cpus, load average before %s after %s"
                 % (m.get("cpus"), m.get("load_before"), m.get("load_after")))
    lines.append("")
    hdr = "%-46s %-22s %-22s %-9s %s" % ("mechanism", "inflate s min/med/max",
                                          "deflate s min/med/max", "released",
                                          "host resident after inflate")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for name in ORDER:
        res = data["mechanisms"].get(name)
        if res is None:
            continue
        s = summ.get(name, {})
        if res.get("error") and not s.get("inflate_s"):
            lines.append("%-46s FAILED: %s" % (res["label"], res["error"]))
            continue
        lines.append("%-46s %-22s %-22s %-9s %s" % (
            res["label"], _fmt_s(s.get("inflate_s")), _fmt_s(s.get("deflate_s")),
            _fmt_mib(s.get("inflate_released_bytes")),
            _fmt_mib(s.get("inflate_host_after_bytes"))))
        for mode, label in (("touch", "(d') user space, one write per page"),
                            ("kernel", "(d\") kernel: balloon_page_alloc + free"),
                            ("kernel-mt", "(d\"') the same on %d vCPUs" % m.get("guest_smp", 0))):
            if name == "limit" and s.get("%s_inflate_s" % mode):
                lines.append("%-46s %-22s %-22s %-9s %s" % (
                    label, _fmt_s(s.get("%s_inflate_s" % mode)),
                    _fmt_s(s.get("%s_deflate_s" % mode)),
                    _fmt_mib(s.get("%s_inflate_released_bytes" % mode)),
                    _fmt_mib(s.get("%s_inflate_host_after_bytes" % mode))))
        if res.get("error"):
            lines.append("    error: %s" % res["error"])
    lines.append("")
    lines.append("(a),(b),(c): host wall time from the command to the target being "
                 "observed; (d): guest clock.")
    lines.append("released: drop of the guest-RAM memfds' allocated blocks during the inflate "
                 "(median); host resident: what they still hold afterwards.")
    a = summ.get("tballoon") or {}
    thr = (data["mechanisms"].get("tballoon") or {}).get("driver_threads")
    if thr:
        lines.append("(a) virtio_tballoon threads=%d (CPUs allocating an inflate's blocks)" % thr)
    if a.get("inflate_guest_ms"):
        lines.append("(a) guest clock elapsed_ms: inflate %s, deflate %s" % (
            _fmt_ms(a.get("inflate_guest_ms")), _fmt_ms(a.get("deflate_guest_ms"))))
        lines.append("(a) progress: %s reports/s seen by the backend, %s BALLOON_PROGRESS "
                     "events/s (min/med/max)" % (_fmt_rate(a.get("inflate_reports_per_s")),
                                                 _fmt_rate(a.get("inflate_progress_events_per_s"))))
        lines.append("(a) backend resident_bytes drop on inflate: %s" %
                     _fmt_mib(a.get("backend_resident_drop_bytes")))
    if a.get("overshoot_ms"):
        ov = a["overshoot_ms"]
        lines.append("(a) deadline overshoot (1 GiB in 100 ms, guest elapsed_ms - deadline_ms): "
                     "%d / %d / %d ms min/med/max; host-side %s"
                     % (ov["min"], ov["median"], ov["max"],
                        _fmt_ms(a.get("overshoot_host_ms"))))
    lines.append("")
    lines.append("ratios of medians (tballoon time / other time; < 1: tballoon is faster):")
    ratios = data.get("ratios") or {}
    for other, label in (("b", "(a)/(b) "), ("c", "(a)/(c) "), ("d", "(a)/(d) "),
                         ("d-kernel", "(a)/(d\")"), ("d-kernel-mt", "(a)/(d\"')")):
        i = ratios.get("a/%s inflate" % other)
        d = ratios.get("a/%s deflate" % other)
        if i is None and d is None:
            continue
        lines.append("  %s  inflate %s   deflate %s" % (
            label, "%.3f" % i if i is not None else "-", "%.3f" % d if d is not None else "-"))
    return "\n".join(lines)


def _fmt_ms(st):
    if not st:
        return "-"
    return "%d / %d / %d ms" % (st["min"], st["median"], st["max"])


def _fmt_rate(st):
    if not st:
        return "-"
    return "%.1f / %.1f / %.1f" % (st["min"], st["median"], st["max"])


def _gq(text):
    """A gnuplot single-quoted string."""
    return "'" + text.replace("'", "''") + "'"


def plot(data, png, outdir):
    """Balloon size over time, inflate and deflate panels; returns the PNG path."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        print("no gnuplot: install gnuplot-nox (scripts/setup) for %s" % png)
        return None
    outdir = Path(outdir)
    series = {"inflate": [], "deflate": []}
    curves = []     # (file tag, title, color, dash, {op: runs})
    for name in ORDER:
        res = data["mechanisms"].get(name)
        if not res:
            continue
        curves.append((SHORT[name], PLOT_TITLES[name], COLORS[name], 1, res))
        kern = (res.get("variants") or {}).get("kernel")
        if name == "limit" and kern:
            curves.append(("d-kernel", "(d\") limit: kernel balloon_page_alloc/free",
                           "#000000", 2, kern))
        kern = (res.get("variants") or {}).get("kernel-mt")
        if name == "limit" and kern and kern.get("inflate"):
            curves.append(("d-kernel-mt", "(d\"') limit: the same on %d vCPUs"
                           % data["meta"].get("guest_smp", 0), "#000000", 3, kern))
    for tag, title, color, dash, runs in curves:
        for op in ("inflate", "deflate"):
            run = median_run(runs.get(op) or [])
            if not run or not run.get("trace"):
                continue
            path = outdir / ("trace-%s-%s.dat" % (tag, op))
            with open(str(path), "w") as f:
                f.write("# %s %s (median run, %.3f s): seconds MiB-taken-from-guest\n"
                        % (tag, op, run["seconds"]))
                for t, v in run["trace"]:
                    f.write("%.4f %.2f\n" % (t, v / MIB))
            series[op].append((title, color, dash, path, run["seconds"]))
    m = data.get("meta", {})
    script = [
        "set terminal pngcairo noenhanced size 1400,820 font 'sans,11'",
        "set output '%s'" % png,
        "set multiplot layout 1,2 title \"Taking %d MiB from a %d MiB guest and giving it "
        "back (QEMU TCG, %d vCPUs, median of %s runs)\" font 'sans,13' "
        "margins 0.06,0.985,0.27,0.92 spacing 0.07"
        % (m.get("moved_bytes", 0) // MIB, m.get("guest_ram_bytes", 0) // MIB,
           m.get("guest_smp", 0), m.get("reps")),
        "set grid",
        "set key outside below center vertical maxrows 6 box",
        "set xlabel 'time since the command (s)'",
        "set ylabel 'memory taken from the guest (MiB)'",
        "set yrange [0:%d]" % (m.get("moved_bytes", 0) // MIB * 1.05),
        "set xrange [0:*]",
    ]
    for op, title in (("inflate", "inflate: take 1 GiB"),
                      ("deflate", "deflate: give it back")):
        script.append("set title '%s'" % title)
        parts = []
        for title, color, dash, path, secs in series[op]:
            parts.append("%s using 1:2 with steps lw 2 dt %d lc rgb '%s' title %s"
                         % (_gq(str(path)), dash, color, _gq("%s: %.2f s" % (title, secs))))
        if parts:
            script.append("plot " + ", \\\n     ".join(parts))
    script.append("unset multiplot")
    gp = outdir / "balloon.gp"
    gp.write_text("\n".join(script) + "\n")
    res = subprocess.run([gnuplot, str(gp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    if res.returncode != 0:
        print("gnuplot failed: %s" % res.stderr.strip())
        return None
    return png
