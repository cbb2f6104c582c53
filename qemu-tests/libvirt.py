#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The libvirt recipe of Documentation/host-tool.rst, against a real libvirtd.

On Debian 12 with libvirt 11.3 and QEMU 10.0 from bookworm-backports
(scripts/setup installs them):

1. the documented domain XML validates with virt-xml-validate;
2. libvirtd starts that domain with libvirt's stock balloon instead of ours
   (memballoon virtio, no <qemu:commandline>) on QEMU 10.0, and
   `virsh setmem` moves virtio_tballoon (standard mode) in the guest;
   then `tballoon serve --libvirt` drives that domain through libvirt's C
   API: a missing domain is refused, an inflate with a floor and a deflate
   end done, an abort ends a running inflate, and `virsh dommemstat`
   agrees with `tballoon status` afterwards;
3. QEMU 10.0 refuses the timed device (reported, not a failure: it is the
   documented limit);
4. libvirtd starts the documented timed domain as written when its
   <emulator> is QEMU 11.1 (the trixie root's, run through the root's own
   dynamic loader, so no chroot and no privileges are needed), QEMU runs as
   libvirt-qemu and connects to `tballoon serve --socket-group
   libvirt-qemu`, and a timed inflate and deflate end done.

libvirtd and virtlogd are started (and stopped again) if they are not
running. Prints TAP. Root.

Usage: libvirt.py
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tbtest import env as tbenv  # noqa: E402
from tbtest import initramfs as tbinitramfs  # noqa: E402

TOP = Path(__file__).resolve().parents[1]
DOC = TOP / "Documentation" / "host-tool.rst"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
URI = "qemu:///system"

n = 0
failed = 0


def tap(ok, name):
    global n, failed
    n += 1
    print(("ok %d - libvirt: %s" if ok else "not ok %d - libvirt: %s") % (n, name), flush=True)
    if not ok:
        failed += 1
    return ok


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


def virsh(*args, timeout=300):
    """virsh ARGS; a hang is an answer too (exit 124), not a crash of the lane."""
    try:
        return subprocess.run(["virsh", "-c", URI] + list(args), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "virsh %s: no answer in %d s"
                                           % (args[0], timeout))


def doc_xml():
    text = DOC.read_text()
    m = re.search(r"\.\. code-block:: xml\n\n((?:   .*\n|\n)+)", text)
    return "\n".join(line[3:] for line in m.group(1).splitlines()).strip() + "\n"


# QEMU of the trixie root, runnable by any user: the root's own ld.so and
# libraries, its modules and firmware.
EMULATOR = """#!/bin/sh
R=%(root)s
QEMU_MODULE_DIR=$R/usr/lib/x86_64-linux-gnu/qemu exec "$R/lib64/ld-linux-x86-64.so.2" \\
  --library-path "$R/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu" \\
  "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" \\
  -L "$R/usr/lib/ipxe/qemu" "$@"
"""


def guestify(xml_text, name, kernel, initrd, console, emulator=None, stock=False,
             sock=None):
    """The documented domain, made bootable here: TCG, our kernel and
    initramfs, a console file; stock=True swaps our device for libvirt's
    balloon."""
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.fromstring(xml_text)
    root.set("type", "qemu")
    root.find("name").text = name
    os_ = root.find("os")
    for tag, val in (("kernel", kernel), ("initrd", initrd),
                     ("cmdline", "console=ttyS0 panic=-1 tb.driver=tballoon")):
        ET.SubElement(os_, tag).text = str(val)
    ET.SubElement(root, "on_reboot").text = "destroy"
    devices = root.find("devices")
    if emulator:
        e = ET.Element("emulator")
        e.text = str(emulator)
        devices.insert(0, e)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console))
    ET.SubElement(serial, "target", port="0")
    cmdline = root.find("{%s}commandline" % QEMU_NS)
    if stock:
        mb = devices.find("memballoon")
        mb.set("model", "virtio")
        ET.SubElement(mb, "stats", period="1")
        root.remove(cmdline)
    elif sock:
        for arg in cmdline:
            arg.set("value", arg.get("value").replace("/run/tballoon/vm1.sock", str(sock)))
    return ET.tostring(root, encoding="unicode")


def libvirtd_up():
    return virsh("version").returncode == 0


def start_daemons():
    """libvirtd and virtlogd, if they are not running; returns what we started."""
    started = []
    if libvirtd_up():
        return started
    for d in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", d], capture_output=True).returncode != 0:
            # The domains here are TCG. Where /dev/kvm exists but KVM does
            # not work (nested, as on the CI machines), libvirt finds its
            # capabilities cache stale on every use ("KVM was enabled when
            # probing ... but it is not available now") and probes QEMU
            # again: about 60 s per virsh create. Our libvirtd does not see
            # /dev/kvm (a private mount namespace, /dev/null over it).
            argv = [d, "-d"]
            if d == "libvirtd" and os.path.exists("/dev/kvm"):
                argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount --bind /dev/null /dev/kvm && exec libvirtd -d"]
            subprocess.run(argv, check=True, timeout=30)
            started.append(d)
    # the first start after /dev/kvm went away probes QEMU again: give it time
    end = time.monotonic() + 120
    while not libvirtd_up() and time.monotonic() < end:
        time.sleep(0.2)
    return started


def stop_daemons(started):
    for d in reversed(started):
        subprocess.run(["pkill", "-x", d], capture_output=True)


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    return None


def dommemstat(name):
    p = virsh("dommemstat", name)
    out = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


def tool(e, ctl, *args, timeout=120):
    try:
        return subprocess.run([str(e.tool), "-c", str(ctl)] + list(args),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "no answer in %d s" % timeout)


def serve_libvirt(e, work, name):
    """`tballoon serve --libvirt` on the running stock domain NAME: the
    documented CLI through libvirt's C API, host-enforced."""
    import json
    bad = subprocess.run([str(e.tool), "serve", "--libvirt", "no-such-domain-%d" % os.getpid(),
                          "--connect", URI, "--control", str(work / "bad.ctl")],
                         capture_output=True, text=True, timeout=60)
    tap(bad.returncode == 1 and "no such domain" in bad.stderr.lower(),
        "serve --libvirt on a domain that does not exist: exit %d, %s"
        % (bad.returncode, bad.stderr.strip()[-120:]))
    ctl = work / "lv.ctl"
    log = open(str(work / "serve-libvirt.log"), "w")
    srv = subprocess.Popen([str(e.tool), "serve", "--libvirt", name, "--connect", URI,
                            "--control", str(ctl), "-v"], stdout=log, stderr=log)
    log.close()
    try:
        up = wait_for(lambda: ctl.exists() or srv.poll() is not None, 30) and srv.poll() is None
        st = {}
        if up:
            r = tool(e, ctl, "status", "-j")
            st = json.loads(r.stdout) if r.returncode == 0 else {}
        tap(up and st.get("kind") == "libvirt" and st.get("enforced_by") == "host" and
            st.get("connected"),
            "serve --libvirt %s: kind %s, enforced by %s, guest RAM %s bytes"
            % (name, st.get("kind"), st.get("enforced_by"), st.get("guest_ram_bytes")))
        if not up:
            return
        # statistics arrive once the guest has sent a sample (period 1 s);
        # wait for a second one: the first can be from the guest's boot
        # (336 MiB available of 1 GiB, against 766 MiB a second later), and
        # the documented floor example then stops, rightly, at the floor
        wait_for(lambda: json.loads(tool(e, ctl, "stats", "-j").stdout or "{}")
                 .get("updates", 0) > 1, 30)
        # the documented examples, as written, through libvirt
        import shlex
        sys.path.insert(0, str(TOP / "qemu-tests"))
        from scenarios.docs import doc_commands
        cmds = doc_commands(DOC.read_text())
        bad = []
        for line in cmds:
            r = tool(e, ctl, *shlex.split(line)[1:], timeout=180)
            if r.returncode:
                bad.append("%s -> %d: %s" % (line, r.returncode, r.stderr.strip()[-100:]))
        tap(cmds and not bad, "the %d `$ tballoon` examples of host-tool.rst exit 0 through "
            "serve --libvirt%s" % (len(cmds), ("; " + "; ".join(bad)) if bad else ""))
        for args, want in ((("inflate", "--to", "256M", "--deadline", "30s",
                             "--floor", "128M", "--wait"), "done"),
                           (("deflate", "--to", "64M", "--deadline", "30s", "--wait"), "done")):
            r = tool(e, ctl, *args)
            last = (r.stdout.strip().splitlines() or [""])[-1]
            tap(r.returncode == 0 and (": %s," % want) in last,
                "tballoon %s through libvirt: exit %d, %s" % (" ".join(args[:3]), r.returncode,
                                                              (last or r.stderr)[-140:]))
        # abort: a long inflate stopped where it is
        w = subprocess.Popen([str(e.tool), "-c", str(ctl), "inflate", "--to", "900M",
                              "--deadline", "60s", "--wait"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        a = tool(e, ctl, "abort")
        try:
            out, _ = w.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            out, _ = w.communicate()
        last = (out.strip().splitlines() or [""])[-1]
        tap(a.returncode == 0 and "aborted (host-abort)" in last,
            "tballoon abort through libvirt ends the running inflate: exit %d, %s"
            % (w.returncode, last[-140:]))
        time.sleep(3)   # the guest settles at the stop; libvirt's view follows
        st = json.loads(tool(e, ctl, "status", "-j").stdout or "{}")
        ms = dommemstat(name)
        want_kib = st.get("guest_ram_bytes", 0) // 1024 - st.get("actual_pages", 0) * 4
        tap(ms.get("actual") == want_kib,
            "virsh dommemstat agrees with tballoon status: actual %s KiB, tballoon "
            "%s KiB (RAM %s KiB - balloon %s pages)" % (
                ms.get("actual"), want_kib, st.get("guest_ram_bytes", 0) // 1024,
                st.get("actual_pages")))
        tap(srv.poll() is None, "serve --libvirt is still running")
        # the domain goes away mid-command: aborted (removed), serve lives
        tool(e, ctl, "deflate", "--to", "0", "--deadline", "30s", "--wait")
        r = tool(e, ctl, "inflate", "--to", "600M", "--deadline", "30s", "--paced")
        time.sleep(1.0)
        virsh("destroy", name)
        gone = wait_for(lambda: json.loads(tool(e, ctl, "status", "-j").stdout or "{}")
                        .get("connected") is False, 30)
        cmd = json.loads(tool(e, ctl, "status", "-j").stdout or "{}").get("command", {})
        tap(r.returncode == 0 and gone and cmd.get("state") == "aborted" and
            cmd.get("reason") == "removed" and srv.poll() is None,
            "virsh destroy mid-command: the command ends %s (%s), serve --libvirt lives "
            "and shows the domain disconnected" % (cmd.get("state"), cmd.get("reason")))
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()


def main():
    e = tbenv.load()
    work = Path(tempfile.mkdtemp(prefix="tballoon-libvirt-", dir="/var/tmp"))
    os.chmod(str(work), 0o755)
    started = []
    domains = []
    serve = None
    try:
        text = doc_xml()
        xml_path = work / "doc.xml"
        xml_path.write_text(text)
        v = subprocess.run(["virt-xml-validate", str(xml_path), "domain"],
                           capture_output=True, text=True)
        tap(v.returncode == 0, "the documented domain XML validates (virt-xml-validate)")
        if v.returncode:
            diag(v.stdout + v.stderr)

        # kernel and initramfs where libvirt-qemu can read them
        ird = tbinitramfs.build(e)
        kernel = tbinitramfs.pvh_kernel(e)
        for src in (kernel, ird.path):
            shutil.copyfile(str(src), str(work / src.name))
            os.chmod(str(work / src.name), 0o644)
        kernel, initrd = work / kernel.name, work / ird.path.name

        t0 = time.monotonic()
        started = start_daemons()
        diag("libvirtd up after %.1f s" % (time.monotonic() - t0))
        ver = virsh("version").stdout
        diag(" ".join(line.strip() for line in ver.splitlines() if line.strip()))
        if not tap(libvirtd_up(), "libvirtd answers on %s%s" % (
                URI, " (started here: %s)" % ",".join(started) if started else "")):
            return

        # 2. the stock balloon on QEMU 10.0
        name = "tballoon-stock-%d" % os.getpid()
        dom = work / "stock.xml"
        dom.write_text(guestify(text, name, kernel, initrd, work / "stock-console.log",
                                stock=True))
        t0 = time.monotonic()
        p = virsh("create", str(dom))
        if tap(p.returncode == 0, "libvirtd starts the domain with the stock balloon in "
               "%.1f s (%s)" % (time.monotonic() - t0, (p.stdout.strip() or p.stderr.strip())[-120:])):
            domains.append(name)
            ok = wait_for(lambda: dommemstat(name).get("available"), 120)
            p = virsh("setmem", name, "512M", "--live")
            got = wait_for(lambda: dommemstat(name).get("actual") == 512 * 1024, 120)
            tap(ok and p.returncode == 0 and got,
                "virsh setmem 512M: virtio_tballoon (standard mode) brings actual to "
                "524288 KiB (%s)" % dommemstat(name).get("actual"))
            virsh("setmem", name, "1G", "--live")
            wait_for(lambda: dommemstat(name).get("actual") == 1024 * 1024, 120)
            serve_libvirt(e, work, name)
            virsh("destroy", name)
            domains.remove(name)

        # 3. the timed device on QEMU 10.0: the documented limit
        q10 = subprocess.run(["qemu-system-x86_64", "-nodefaults", "-display", "none",
                              "-machine", "none", "-device",
                              "vhost-user-device-pci,chardev=tb,virtio-id=5"],
                             capture_output=True, text=True, timeout=30)
        qver = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True).stdout.split("\n")[0].split("version ")[-1]
        tap(q10.returncode != 0 and "pluggable device type" in q10.stderr,
            "QEMU %s refuses the generic vhost-user device, as documented (%s)"
            % (qver, q10.stderr.strip()[-80:]))

        # 4. the timed device with QEMU 11.1 as <emulator>
        emu = work / "qemu-system-x86_64-11"
        emu.write_text(EMULATOR % {"root": e.qroot})
        os.chmod(str(emu), 0o755)
        rund = work / "run"
        rund.mkdir()
        os.chmod(str(rund), 0o755)
        sock, ctl = rund / "vm1.sock", rund / "vm1.ctl"
        log = open(str(work / "serve.log"), "w")
        serve = subprocess.Popen([str(e.tool), "serve", "--socket-path", str(sock),
                                  "--control", str(ctl), "--socket-group", "libvirt-qemu",
                                  "-v"], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: sock.exists() and ctl.exists(), 10)
        name = "tballoon-timed-%d" % os.getpid()
        dom = work / "timed.xml"
        dom.write_text(guestify(text, name, kernel, initrd, work / "timed-console.log",
                                emulator=emu, sock=sock))
        t0 = time.monotonic()
        p = virsh("create", str(dom))
        if tap(p.returncode == 0, "libvirtd starts the documented timed domain with QEMU 11.1 "
               "as <emulator> in %.1f s (%s)" % (time.monotonic() - t0,
                                                 (p.stdout.strip() or p.stderr.strip())[-160:])):
            domains.append(name)

            def ready():
                r = subprocess.run([str(e.tool), "-c", str(ctl), "status", "-j"],
                                   capture_output=True, text=True)
                return r.returncode == 0 and '"driver_ok":true' in r.stdout.replace(" ", "")
            up = wait_for(ready, 120)
            users = subprocess.run(["ps", "-o", "user=", "-C", "ld-linux-x86-64.so.2"],
                                   capture_output=True, text=True).stdout.split()
            tap(up and "libvirt-qemu" in users,
                "QEMU runs as libvirt-qemu and reaches the driver through the group's socket")
            # this domain has <memballoon model='none'/>: nothing to drive
            nb = subprocess.run([str(e.tool), "serve", "--libvirt", name, "--connect", URI,
                                 "--control", str(work / "nb.ctl")], capture_output=True,
                                text=True, timeout=60)
            tap(nb.returncode == 1 and "no memory balloon" in nb.stderr,
                "serve --libvirt on a domain without a balloon: exit %d, %s"
                % (nb.returncode, nb.stderr.strip()[-120:]))
            for op, to in (("inflate", "256M"), ("deflate", "0")):
                r = subprocess.run([str(e.tool), "-c", str(ctl), op, "--to", to, "--deadline",
                                    "30s", "--wait"], capture_output=True, text=True,
                                   timeout=120)
                last = (r.stdout.strip().splitlines() or [""])[-1]
                tap(r.returncode == 0 and ": done," in last,
                    "tballoon %s --to %s on the libvirt domain: %s" % (op, to, last[-140:]))
            virsh("destroy", name)
            domains.remove(name)
    finally:
        for d in domains:
            virsh("destroy", d)
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(10)
            except subprocess.TimeoutExpired:
                serve.kill()
        stop_daemons(started)
        if failed:
            for f in sorted(work.glob("*.log")):
                diag("--- %s\n%s" % (f.name, f.read_text(errors="replace")[-2000:]))
        shutil.rmtree(str(work), ignore_errors=True)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
