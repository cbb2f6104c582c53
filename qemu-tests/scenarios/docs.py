# SPDX-License-Identifier: GPL-2.0
"""The documentation's examples, run as written against a real guest.

Documentation/host-tool.rst promises that every `$ tballoon ...` line of its
console block runs, in order, against a 1 GiB guest with virtio_tballoon;
this scenario runs them and checks each exits 0. It also checks that the
QEMU device line and the libvirt <qemu:commandline> example name exactly the
device arguments the harness boots with.
"""

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

from . import group, scenario

group("docs", driver="tballoon", device="tballoon", mem="1G")

TOP = Path(__file__).resolve().parents[2]
DOC = TOP / "Documentation" / "host-tool.rst"


def doc_commands(text):
    """The `$ tballoon ...` lines of the document, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^\s+\$ (tballoon .*)$", text, re.M)]


def device_args(argv):
    """The value after each -device of a QEMU argv, by driver name."""
    out = {}
    for i, a in enumerate(argv[:-1]):
        if a == "-device":
            out[argv[i + 1].split(",")[0]] = argv[i + 1]
    return out


def run_examples(ctx, text=None):
    """Run every `$ tballoon` line of host-tool.rst on ctx's guest, in order;
    each must exit 0."""
    cmds = doc_commands(text or DOC.read_text())
    ctx.require(len(cmds) >= 5, "host-tool.rst has %d `$ tballoon` examples" % len(cmds))
    for line in cmds:
        res = ctx.guest.tool(*shlex.split(line)[1:], timeout=180)
        last = (res.stdout.strip().splitlines() or [""])[-1].replace("\r", " ")
        ctx.diag("$ %s -> exit %d: %s", line, res.returncode, last[-160:])
        ctx.expect(res.returncode == 0, "`%s` exits 0 (got %d: %s)"
                   % (line, res.returncode, res.stderr.strip()[-200:]))


@scenario("docs-examples", "docs")
def docs_examples(ctx):
    """Documentation/host-tool.rst: every `$ tballoon` example exits 0 on a real guest"""
    g = ctx.guest
    ctx.require_timed_device()
    text = DOC.read_text()
    run_examples(ctx, text)
    st = ctx.status()
    ctx.expect(st.get("actual_pages") == 0, "balloon empty after the examples (actual %s)"
               % st.get("actual_pages"))

    # The QEMU example and the libvirt example use the harness's device line.
    ours = device_args(g.qemu_argv()).get("vhost-user-test-device-pci")
    ctx.require(ours, "harness boots vhost-user-test-device-pci")
    ctx.expect("-device %s" % ours in " ".join(text.split()),
               "host-tool.rst QEMU example uses `-device %s`" % ours)
    xml = re.search(r"\.\. code-block:: xml\n\n((?:   .*\n|\n)+)", text)
    ctx.require(xml, "host-tool.rst has a libvirt XML example")
    body = "\n".join(l[3:] for l in xml.group(1).splitlines())
    body = body.replace("     ...\n", "")
    ns = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise AssertionError("libvirt example is not well-formed XML: %s" % err)
    args = [a.get("value") for a in root.iter(ns + "arg")]
    lv = device_args(args).get("vhost-user-test-device-pci") or ""
    ctx.expect(lv == ours or lv.startswith(ours + ",bus="),
               "libvirt example passes `-device %s` (plus a PCI address; got %s)" % (ours, args))
    mb = root.find("devices/memballoon")
    ctx.expect(mb is not None and mb.get("model") == "none",
               "libvirt example turns libvirt's own balloon off (<memballoon model='none'/>)")
    ctx.expect(root.find("memoryBacking/access").get("mode") == "shared",
               "libvirt example shares guest memory")
    ctx.check_healthy()
