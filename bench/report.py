# SPDX-License-Identifier: GPL-2.0
"""Statistics, the text table and the gnuplot PNG of bench/run.py results."""

import shutil
import statistics
import subprocess
from pathlib import Path

MIB = 1 << 20
ORDER = ["tballoon", "tballoon-zero", "virtio-balloon", "virtio-mem", "limit"]
SHORT = {"tballoon": "a", "tballoon-zero": "a0", "virtio-balloon": "b", "virtio-mem": "c",
         "limit": "d"}
PLOT_TITLES = {
    "tballoon": "(a) tballoon (progress events)",
    "tballoon-zero": "(a0) tballoon, skip_zero=0",
    "virtio-balloon": "(b) virtio-balloon (query-balloon polled)",
    "virtio-mem": "(c) virtio-mem (qom-get size polled)",
    "limit": "(d) limit: user-space populate/munmap",
}


COLORS = {"tballoon": "#d62728", "tballoon-zero": "#ff7f0e", "virtio-balloon": "#1f77b4",
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


GIB = 1 << 30


def _per_gib(runs, key, moved):
    return stats([r[key] * GIB / moved for r in runs if r.get(key) is not None])


def _extras(s, res, moved):
    """Holes, workload and CPU figures of one mechanism into S."""
    inf = res.get("inflate") or []
    s["inflate_qemu_cpu_s_per_gib"] = _per_gib(inf, "qemu_cpu_s", moved)
    s["inflate_backend_cpu_s_per_gib"] = _per_gib(inf, "backend_cpu_s", moved)
    holes = res.get("holes") or []
    if holes:
        s["holes_inflate_s"] = stats([r["seconds"] for r in holes])
        s["holes_backend_cpu_s_per_gib"] = _per_gib(holes, "backend_cpu_s", moved)
    for key in ("workload", "workload_gentle"):
        runs = res.get(key) or []
        if not runs:
            continue
        s[key + "_inflate_s"] = stats([r["seconds"] for r in runs])
        s[key + "_lost_s_per_gib"] = stats([r["workload"]["lost_s_per_gib"] for r in runs])
        s[key + "_lost_share"] = stats([r["workload"].get("lost_share") for r in runs])


def summarize(data):
    """Add data["summary"] (per mechanism stats) and data["ratios"]."""
    summ = {}
    moved = data.get("meta", {}).get("moved_bytes") or GIB
    for name, res in data["mechanisms"].items():
        s = {}
        _extras(s, res, moved)
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

    def put(key, x, y):
        """ratios[KEY]: the median of X over that of Y (stats), when both exist"""
        if x and y and y["median"] > 0:
            ratios[key] = x["median"] / y["median"]

    a = summ.get("tballoon", {})
    for other in ("tballoon-zero", "virtio-balloon", "virtio-mem", "limit"):
        o = summ.get(other) or {}
        for op in ("inflate", "deflate"):
            put("a/%s %s" % (SHORT[other], op), a.get(op + "_s"), o.get(op + "_s"))
    lim = summ.get("limit") or {}
    for mode in ("kernel", "kernel-mt", "kernel-blocks"):
        for op in ("inflate", "deflate"):
            put("a/d-%s %s" % (mode, op), a.get(op + "_s"), lim.get("%s_%s_s" % (mode, op)))
    for other in ("virtio-balloon", "virtio-mem"):
        o = summ.get(other) or {}
        put("a/%s holes" % SHORT[other], a.get("holes_inflate_s"), o.get("holes_inflate_s"))
        for key, mine in (("work", "workload_lost_s_per_gib"),
                          ("work-gentle", "workload_gentle_lost_s_per_gib")):
            put("a/%s %s" % (SHORT[other], key), a.get(mine), o.get("workload_lost_s_per_gib"))
    put("a holes/a inflate", a.get("holes_inflate_s"), a.get("inflate_s"))
    sc = data.get("scale")
    if sc:
        ssum = {}
        for name, res in sc["mechanisms"].items():
            ssum[name] = {op + "_s": stats([r["seconds"] for r in res.get(op) or []])
                          for op in ("inflate", "deflate")}
            ssum[name]["inflate_backend_cpu_s_per_gib"] = _per_gib(
                res.get("inflate") or [], "backend_cpu_s", sc["moved_bytes"])
        sc["summary"] = ssum
        sa = ssum.get("tballoon") or {}
        for other in ("virtio-balloon", "virtio-mem"):
            for op in ("inflate", "deflate"):
                put("scale a/%s %s" % (SHORT[other], op), sa.get(op + "_s"),
                    (ssum.get(other) or {}).get(op + "_s"))
    data["ratios"] = ratios
    return data


def _fmt_s(st):
    if not st:
        return "-"
    # below 10 ms (the limit's blocks without the zeroing) in milliseconds
    if st["max"] < 0.01:
        return "%.1f / %.1f / %.1f ms" % (st["min"] * 1e3, st["median"] * 1e3, st["max"] * 1e3)
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
    lines.append("host: %s cpus, load average before %s after %s, guest RAM in %s"
                 % (m.get("cpus"), m.get("load_before"), m.get("load_after"),
                    {"thp": "2 MiB transparent huge pages (--ram thp)"}.get(
                        m.get("host_ram"), "a memfd of 4 KiB pages")))
    inits = sorted({str(r.get("mem_auto_init")) for r in data["mechanisms"].values()
                    if r.get("mem_auto_init")})
    lines.append("guest kernel mem auto-init: %s%s" % (
        " | ".join(inits) or "?", " (command line: %s)" % m["guest_append"]
        if m.get("guest_append") else ""))
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
                            ("kernel-mt", "(d\"') the same on %d vCPUs" % m.get("guest_smp", 0)),
                            ("kernel-blocks", "(d\"\") 2 MiB blocks, %d vCPUs, %s" % (
                                m.get("guest_smp", 0),
                                "not zeroed" if (data["mechanisms"].get("limit") or {}).get(
                                    "blocks_skip_zero") else "zeroed"))):
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
        lines.append("(a) virtio_tballoon threads=%d (CPUs allocating an inflate's blocks), "
                     "skip_zero=%s (works only on a kernel with driver/patches/VERSION/)"
                     % (thr, (data["mechanisms"].get("tballoon") or {}).get("skip_zero")))
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
    lines.append(extras_table(data, summ))
    lines.append("")
    lines.append("ratios of medians (tballoon time / other time; < 1: tballoon is faster):")
    ratios = data.get("ratios") or {}
    for other, label in (("a0", "(a)/(a0)"), ("b", "(a)/(b) "), ("c", "(a)/(c) "),
                         ("d", "(a)/(d) "),
                         ("d-kernel", "(a)/(d\")"), ("d-kernel-mt", "(a)/(d\"')"),
                         ("d-kernel-blocks", "(a)/(d\"\")")):
        i = ratios.get("a/%s inflate" % other)
        d = ratios.get("a/%s deflate" % other)
        if i is None and d is None:
            continue
        lines.append("  %s  inflate %s   deflate %s" % (
            label, "%.3f" % i if i is not None else "-", "%.3f" % d if d is not None else "-"))
    for other, label in (("b", "(a)/(b) "), ("c", "(a)/(c) ")):
        parts = []
        for key, what in (("holes", "inflate after a deflate"),
                          ("work", "work lost per GiB"),
                          ("work-gentle", "gentle work lost per GiB")):
            v = ratios.get("a/%s %s" % (other, key))
            if v is not None:
                parts.append("%s %.3f" % (what, v))
        if parts:
            lines.append("  %s  %s" % (label, ", ".join(parts)))
    if ratios.get("a holes/a inflate") is not None:
        lines.append("  (a) inflate after a deflate / first inflate: %.3f"
                     % ratios["a holes/a inflate"])
    sc = data.get("scale")
    if sc and sc.get("summary"):
        lines.append("")
        lines.append("scale point: %d MiB of a %d MiB guest, %d round(s):"
                     % (sc["moved_bytes"] // MIB, sc["guest_ram_bytes"] // MIB, sc["reps"]))
        for name in ORDER:
            res = sc["mechanisms"].get(name)
            if res is None:
                continue
            ss = sc["summary"].get(name, {})
            if res.get("error"):
                lines.append("  %-44s FAILED: %s" % (res["label"], res["error"]))
                continue
            lines.append("  %-44s inflate %s s, deflate %s s" % (
                res["label"], _fmt_s(ss.get("inflate_s")), _fmt_s(ss.get("deflate_s"))))
        for other, label in (("b", "(a)/(b)"), ("c", "(a)/(c)")):
            i = ratios.get("scale a/%s inflate" % other)
            d = ratios.get("scale a/%s deflate" % other)
            if i is not None or d is not None:
                lines.append("  %s  inflate %s   deflate %s" % (
                    label, "%.3f" % i if i is not None else "-",
                    "%.3f" % d if d is not None else "-"))
    return "\n".join(lines)


def _fmt_med(st, fmt="%.2f"):
    return (fmt % st["median"]) if st else "-"


def extras_table(data, summ):
    """Inflate after a deflate, the workload's loss, CPU per GiB (medians)."""
    hdr = "%-46s %-10s %-12s %-12s %-12s %-12s" % (
        "medians", "after defl", "work lost/GiB", "lost share",
        "QEMU CPU/GiB", "backend CPU/GiB")
    rows = [hdr, "-" * len(hdr)]
    for name in ORDER[:4]:
        res = data["mechanisms"].get(name)
        s = summ.get(name) or {}
        if res is None or not s.get("inflate_s"):
            continue
        rows.append("%-46s %-10s %-13s %-12s %-12s %-12s" % (
            res["label"], _fmt_med(s.get("holes_inflate_s")) + " s",
            _fmt_med(s.get("workload_lost_s_per_gib")) + " s",
            _fmt_med(s.get("workload_lost_share")),
            _fmt_med(s.get("inflate_qemu_cpu_s_per_gib")) + " s",
            _fmt_med(s.get("inflate_backend_cpu_s_per_gib")) + " s"))
        if s.get("workload_gentle_lost_s_per_gib"):
            rows.append("%-46s %-10s %-13s %-12s   (inflate with the workload %s s, gentle %s s)"
                        % ("(a') the same, tballoon inflate --gentle", "",
                           _fmt_med(s.get("workload_gentle_lost_s_per_gib")) + " s",
                           _fmt_med(s.get("workload_gentle_lost_share")),
                           _fmt_med(s.get("workload_inflate_s")),
                           _fmt_med(s.get("workload_gentle_inflate_s"))))
    rows.append("after defl: inflate straight after a deflate (free pages are host holes). "
                "work lost: seconds of tbwork's work (%s read-modify-write loop) lost "
                "during an inflate, per GiB taken; lost share: that over the inflate's time."
                % "64 MiB")
    rows.append("CPU/GiB: CPU seconds per GiB inflated, QEMU's process (TCG: vCPUs too) and "
                "tballoon serve's.")
    return "\n".join(rows)


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
