#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Every long option a --help shows is in the man page, and every long
option the man page names is one some --help shows. Prints TAP.

Usage: manpage.py PATH/TO/tballoon
"""
import os
import re
import subprocess
import sys

TB = sys.argv[1] if len(sys.argv) > 1 else "./tballoon"
MAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tballoon.8")
COMMANDS = ("serve", "inflate", "deflate", "set", "status", "abort", "watch", "stats",
            "wait", "balance", "reclaim")


def helps():
    out = {}
    for cmd in (None,) + COMMANDS:
        argv = [TB] + ([cmd] if cmd else []) + ["--help"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        out[cmd or "tballoon"] = (p.returncode, set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", p.stdout)))
    return out


def main():
    n = failed = 0

    def tap(ok, what):
        nonlocal n, failed
        n += 1
        print(("ok %d - manpage: %s" if ok else "not ok %d - manpage: %s") % (n, what))
        failed += not ok

    man = open(MAN).read().replace("\\-", "-").replace("\\f[BIR]", "")
    man = re.sub(r"\\f[BIRP]", "", man)
    in_man = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", man))
    h = helps()
    in_help = set()
    for cmd, (rc, opts) in h.items():
        tap(rc == 0 and opts, "%s --help exits 0 and shows its options" % cmd)
        missing = sorted(opts - in_man)
        tap(not missing, "%s --help: every option is in tballoon.8%s"
            % (cmd, " (missing: %s)" % ", ".join(missing) if missing else ""))
        in_help |= opts
    extra = sorted(in_man - in_help)
    tap(not extra, "every option tballoon.8 names is in some --help%s"
        % (" (only in the man page: %s)" % ", ".join(extra) if extra else ""))
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
