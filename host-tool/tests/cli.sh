#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# CLI contract tests for tballoon (TAP). Usage: TB=path/to/tballoon sh tests/cli.sh
TB=${TB:-./tballoon}
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
check() { if eval "$2"; then ok "$1"; else nok "$1"; fi; }

tmp=$(mktemp -d)
trap 'kill $spid 2>/dev/null; rm -rf "$tmp"' EXIT

out=$($TB --help); rc=$?
check "cli: --help exits 0" '[ $rc -eq 0 ]'
check "cli: --help lists every command" 'for c in serve inflate deflate status abort watch stats balance reclaim help; do echo "$out" | grep -q "^  $c " || exit 1; done'
out=$($TB -V); rc=$?
check "cli: -V prints the version" '[ $rc -eq 0 ] && echo "$out" | grep -q "^tballoon [0-9]"'
err=$($TB frobnicate 2>&1 >/dev/null); rc=$?
check "cli: unknown command exits 2" '[ $rc -eq 2 ]'
check "cli: unknown command says Try tballoon --help" 'echo "$err" | grep -q "Try '"'"'tballoon --help'"'"'"'
$TB infl >/dev/null 2>&1; rc=$?
check "cli: command prefixes are not accepted" '[ $rc -eq 2 ]'
$TB >/dev/null 2>&1; rc=$?
check "cli: missing command exits 2" '[ $rc -eq 2 ]'
$TB inflate --deadline 2s >/dev/null 2>&1; rc=$?
check "cli: inflate without --to exits 2" '[ $rc -eq 2 ]'
$TB inflate --to 1G >/dev/null 2>&1; rc=$?
check "cli: inflate without --deadline exits 2" '[ $rc -eq 2 ]'
$TB inflate --to 1000 --deadline 2s >/dev/null 2>&1; rc=$?
check "cli: size not a multiple of 4 KiB exits 2" '[ $rc -eq 2 ]'
err=$($TB inflate --to 99999999999999999999 --deadline 2s 2>&1); rc=$?
check "cli: a size beyond 64 bits is too large, naming the argument" '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--to 99999999999999999999: size too large"'
err=$($TB inflate --to 1x --deadline 2s 2>&1); rc=$?
check "cli: an unknown unit shows the accepted forms" '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--to 1x: unknown unit: .*1.5G.*0x100000.*262144p"'
err=$($TB inflate --to 1.5p --deadline 2s 2>&1); rc=$?
check "cli: a fraction of a page is refused" '[ $rc -eq 2 ] && echo "$err" | grep -q "whole number"'
err=$($TB inflate --to 12.125% --deadline 2s 2>&1); rc=$?
check "cli: a percentage with three decimals is refused" '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--to 12.125%: a percentage is 0% to 100% .*two"'
err=$($TB inflate --to 1G --deadline 1m30 2>&1); rc=$?
check "cli: a duration part without its unit is refused" '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--deadline 1m30: every part of a duration needs its unit"'
err=$($TB inflate --to 1.5G --deadline 1m30s -c "$tmp/none.ctl" 2>&1); rc=$?
check "cli: decimals, hex, compound durations parse (then no daemon: exit 1)" '[ $rc -eq 1 ] && echo "$err" | grep -q "cannot connect"'
err=$($TB inflate --to 0x100000 --deadline 1.5s -c "$tmp/none.ctl" 2>&1); rc=$?
check "cli: a hex size and a decimal duration parse" '[ $rc -eq 1 ] && echo "$err" | grep -q "cannot connect"'
err=$($TB serve --grace 1x --qmp x --control y 2>&1); rc=$?
check "cli: serve names the duration option it refuses" '[ $rc -eq 2 ] && echo "$err" | grep -q -- "serve: --grace 1x: unknown unit"'
err=$($TB serve --qmp x --libvirt y --control z 2>&1); rc=$?
check "cli: serve takes one kind of VM" '[ $rc -eq 2 ] && echo "$err" | grep -q "exactly one of --socket-path, --fd, --qmp and --libvirt"'
err=$($TB serve --qmp x --stats-interval 0 --control z 2>&1); rc=$?
check "cli: serve --qmp refuses statistics off" '[ $rc -eq 2 ] && echo "$err" | grep -q "at least 1s"'
err=$($TB serve --socket-path x --connect qemu:///system --control z 2>&1); rc=$?
check "cli: --connect is for --libvirt" '[ $rc -eq 2 ] && echo "$err" | grep -q "connect is for --libvirt"'
err=$($TB inflate --frob 2>&1); rc=$?
check "cli: an unknown option is one message naming it" '[ $rc -eq 2 ] && [ $(echo "$err" | grep -c "^tballoon: ") -eq 1 ] && echo "$err" | grep -q "inflate: --frob: unknown option"'
err=$($TB inflate --to 2>&1); rc=$?
check "cli: a missing argument names its option" '[ $rc -eq 2 ] && echo "$err" | grep -q "inflate: --to: unknown option, or its argument is missing"'
$TB inflate --to 1G --deadline 2h >/dev/null 2>&1; rc=$?
check "cli: deadline above 1h exits 2" '[ $rc -eq 2 ]'
$TB inflate --to 1G --deadline 0 >/dev/null 2>&1; rc=$?
check "cli: zero deadline exits 2" '[ $rc -eq 2 ]'
$TB --help >/dev/full 2>/dev/null; rc=$?
check "cli: a stdout write error exits 1" '[ $rc -eq 1 ]'
out=$($TB serve --print-capabilities); rc=$?
check "cli: serve --print-capabilities prints JSON" '[ $rc -eq 0 ] && echo "$out" | python3 -c "import json,sys; assert json.load(sys.stdin)[\"type\"]"'
$TB serve --fd 250 --control "$tmp/c" >/dev/null 2>&1; rc=$?
check "cli: serve --fd with a closed fd exits 2" '[ $rc -eq 2 ]'
out=$($TB inflate --help); rc=$?
check "cli: inflate --help exits 0 on stdout" '[ $rc -eq 0 ] && echo "$out" | grep -q -- "--deadline"'
if command -v man >/dev/null 2>&1 && [ -f "$(dirname "$0")/../tballoon.8" ]; then
	w=$(MANWIDTH=80 man --warnings -l "$(dirname "$0")/../tballoon.8" 2>&1 >/dev/null)
	check "doc: the man page renders without warnings" '[ -z "$w" ]'
fi
$TB inflate --to 101% --deadline 2s >/dev/null 2>&1; rc=$?
check "cli: a percentage above 100% exits 2" '[ $rc -eq 2 ]'
$TB inflate --to 25% --deadline 2s -c "$tmp/none.sock" >/dev/null 2>&1; rc=$?
check "cli: a percentage is resolved by the daemon (none here: exit 1)" '[ $rc -eq 1 ]'
$TB serve --socket-path "$tmp/x" --control "$tmp/y" --log-level loud >/dev/null 2>&1; rc=$?
check "cli: serve --log-level with an unknown level exits 2" '[ $rc -eq 2 ]'
$TB serve --socket-path "$tmp/x" --control "$tmp/y" --grace 2x >/dev/null 2>&1; rc=$?
check "cli: serve --grace with a bad duration exits 2" '[ $rc -eq 2 ]'
for c in watch stats; do
	out=$($TB $c --help); rc=$?
	check "cli: $c --help exits 0" '[ $rc -eq 0 ] && echo "$out" | grep -q "Usage"'
done
$TB -c "$tmp/none.sock" status >/dev/null 2>&1; rc=$?
check "cli: status without a server exits 1" '[ $rc -eq 1 ]'
$TB serve --control "$tmp/c" >/dev/null 2>&1; rc=$?
check "cli: serve without --socket-path exits 2" '[ $rc -eq 2 ]'

$TB serve --socket-path "$tmp/vu.sock" --control "$tmp/ctl.sock" 2>"$tmp/serve.log" &
spid=$!
i=0
while [ ! -S "$tmp/ctl.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
check "serve: control socket is mode 0600" '[ "$(stat -c %a "$tmp/ctl.sock")" = 600 ]'
out=$($TB -c "$tmp/ctl.sock" status -j); rc=$?
check "serve: status -j exits 0" '[ $rc -eq 0 ]'
check "serve: status -j is one JSON object with the contract keys" 'echo "$out" | python3 -c "
import json, sys
lines = sys.stdin.read().splitlines()
assert len(lines) == 1
s = json.loads(lines[0])
for k in (\"connected\", \"timed\", \"driver_ok\", \"guest_ram_bytes\", \"resident_bytes\",
          \"released_bytes\", \"actual_pages\", \"num_pages\", \"command\"):
    assert k in s, k
for k in (\"cmd_id\", \"op\", \"state\", \"reason\", \"target_pages\", \"start_pages\",
          \"deadline_ms\", \"floor_pages\", \"paced\", \"elapsed_ms\", \"host_elapsed_ms\",
          \"report_seq\", \"reports\"):
    assert k in s[\"command\"], k
assert s[\"connected\"] is False and s[\"command\"][\"state\"] == \"idle\"
"'
out=$(TBALLOON_CONTROL="$tmp/ctl.sock" $TB status); rc=$?
check "serve: TBALLOON_CONTROL selects the socket" '[ $rc -eq 0 ] && echo "$out" | grep -q "not connected"'
err=$($TB -c "$tmp/ctl.sock" inflate --to 1G --deadline 2s 2>&1); rc=$?
check "serve: inflate with no guest is refused as not ready yet (exit 8)" '[ $rc -eq 8 ] && echo "$err" | grep -q "no front-end.*worth retrying"'
err=$($TB -c "$tmp/ctl.sock" set --guest-size 512M --deadline 2s 2>&1); rc=$?
check "serve: set --guest-size with no guest: not ready yet (exit 8)" '[ $rc -eq 8 ] && echo "$err" | grep -q "guest RAM unknown"'
err=$($TB -c "$tmp/ctl.sock" abort 2>&1); rc=$?
check "serve: abort with nothing running exits 0 and says so" '[ $rc -eq 0 ] && echo "$err" | grep -q "nothing to abort"'
out=$($TB -c "$tmp/ctl.sock" wait --ready --timeout 300ms 2>&1); rc=$?
check "serve: wait --ready with no VM: exit 8 at the timeout, saying why" '[ $rc -eq 8 ] && echo "$out" | grep -q "not ready after 300 ms: no VM is connected"'
out=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"frobnicate","id":1}\n{"execute":"query-version","id":2}\n{"execute":"query-commands","id":3}\n' | python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')
f.readline(); f.write(sys.stdin.buffer.read()); f.flush()
for _ in range(4): print(f.readline().decode().strip())
" "$tmp/ctl.sock"); rc=$?
check "serve: an unknown command is CommandNotFound, as in QMP" '[ $rc -eq 0 ] && echo "$out" | grep -q "\"class\": *\"CommandNotFound\".*frobnicate has not been found"'
check "serve: query-version and query-commands answer" 'echo "$out" | grep -q "\"tballoon\": *{ *\"major\"" && echo "$out" | grep -q "\"name\": *\"query-commands\""'
out=$(printf 'garbage\n{"execute":"qmp_capabilities"}\n{"execute":"query-balloon","id":7}\n' | python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect('$tmp/ctl.sock')
s.sendall(sys.stdin.buffer.read()); f = s.makefile()
for _ in range(4): print(f.readline().strip())
")
check "serve: garbage gets an error, the client keeps its session" 'echo "$out" | sed -n 2p | grep -q GenericError && echo "$out" | sed -n 4p | grep -q "\"id\":7"'
python3 -c "
import socket
s = socket.socket(socket.AF_UNIX); s.connect('$tmp/ctl.sock')
s.sendall(b'{\"execute\":\"query-')
s.close()
"
$TB -c "$tmp/ctl.sock" status >/dev/null 2>&1; rc=$?
check "serve: survives a client leaving mid-line" '[ $rc -eq 0 ]'
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
	# bypass the 0600 mode to reach the SO_PEERCRED check itself
	chmod 755 "$tmp"; chmod 666 "$tmp/ctl.sock"
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c "
import socket
s = socket.socket(socket.AF_UNIX); s.connect('$tmp/ctl.sock'); s.settimeout(5)
print(repr(s.recv(100)))
" 2>&1)
	chmod 600 "$tmp/ctl.sock"
	check "serve: SO_PEERCRED turns away other users without a greeting" '[ "$out" = "b'"''"'" ]'
fi
out=$($TB -c "$tmp/ctl.sock" watch); rc=$?
check "serve: watch with no command exits 0" '[ $rc -eq 0 ] && echo "$out" | grep -q "no command"'
out=$($TB -c "$tmp/ctl.sock" stats -j); rc=$?
check "serve: stats -j is one JSON object (no front-end: no statistics)" '[ $rc -eq 0 ] && echo "$out" | python3 -c "
import json, sys
s = json.loads(sys.stdin.read())
assert s[\"stats_vq\"] is False and s[\"age_ms\"] == -1 and s[\"guest\"] == {}, s
"'
out=$($TB -c "$tmp/ctl.sock" stats); rc=$?
check "serve: stats (text) says there are no statistics" '[ $rc -eq 0 ] && echo "$out" | grep -q "no statistics"'
kill -HUP $spid; sleep 0.3
out=$($TB -c "$tmp/ctl.sock" status); rc=$?
check "serve: SIGHUP does not end the daemon (nothing to reload)" '[ $rc -eq 0 ] && kill -0 $spid'
kill -TERM $spid; wait $spid; rc=$?
check "serve: SIGTERM exits 0" '[ $rc -eq 0 ]'
check "serve: sockets removed on exit" '[ ! -e "$tmp/ctl.sock" ] && [ ! -e "$tmp/vu.sock" ]'
echo "1..$n"
exit $fail
