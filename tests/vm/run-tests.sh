#!/bin/sh
# run-tests.sh - end-to-end checks of the real (static) memleak binary, run
# inside a vmtest guest (../shared/vmtest/run-in-vm.sh: busybox sh, cwd
# /vmtest, PATH=/vmtest:/bin, root). Needs ./memleak, ./leaker (a STATIC
# build of tests/fixtures/leaker.c), ./leaker.leaks (its expected leaks),
# ./deep (a static -O2 -fomit-frame-pointer build of tests/fixtures/deep.c)
# and ./deep.c next to this script; see vmtest.mk.
#
#   1. user mode: memleak -o 0 -T 50 -c "./leaker --exit 3" must exit 3 and its
#      final report must hold, for every leak_* function of leaker.c, exactly
#      one stack whose first frame is that function, with the documented
#      "B bytes in N allocations" and a main+0x... [leaker] frame; no stack
#      may start in churn or fail (everything they allocate is freed/failed).
#   1b. --unwind dwarf, --unwind cfi and no --unwind flag against ./deep
#      (static deep.c, -O2 without frame pointers): 144 bytes in 3
#      allocations from compare, each stack walking through qsort up to
#      main, each frame of the chain at its call's line of deep.c.
#   2. kernel mode: memleak -T 3 1 2 must exit 0 with 2 reports and at least
#      one [kernel] frame, through raw tracepoints (-v: tp_btf with BTF,
#      raw_tp without).
#   3. kernel mode's recursion misses while a loop runs `cat /proc/self/status`
#      STATUS_LOOPS times (default 3000): raw tracepoints, then
#      --fallback tracepoints; the first at most 1/20 of the second (+20).
#      Kernels before 6.7 do not count the fallback's misses: there the
#      check says SKIP.
#
# Prints one PASS/FAIL line per check (and memleak's full output when a check
# of that run fails); exits 1 if any check failed. Works on the host too:
# copy memleak, leaker, leaker.leaks, deep, deep.c and this script into one directory and run
# it as root.
# Env: RUN_TIMEOUT (seconds per memleak run, default 240), STATUS_LOOPS.

cd "$(dirname "$0")" || exit 1
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
STATUS_LOOPS=${STATUS_LOOPS:-3000}
OUT=${TMPDIR:-/tmp}/memleak-vmtest.$$
mkdir -p "$OUT" || exit 1
FAILS=0

# The documented outstanding allocations (tests/fixtures/leaker.leaks, copied
# in beside this script): function:bytes:count.
EXPECTED=$(sed -e 's/#.*//' ./leaker.leaks | awk 'NF == 3 { print $1 ":" $2 ":" $3 }')
[ -n "$EXPECTED" ] || { echo "FAIL: ./leaker.leaks missing or empty in $(pwd)"; exit 1; }
LEAKER_STATUS=3

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
# dump NAME: memleak's full stdout and stderr of run NAME, for the CI log
dump() {
	echo "----- memleak stdout ($1) -----"
	cat "$OUT/$1.out"
	echo "----- memleak stderr ($1) -----"
	cat "$OUT/$1.err"
	echo "----- end ($1) -----"
}

echo "== vmtest: $(uname -srm); BTF: $([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo hidden/none);" \
	"tracefs: $(grep -q ' tracefs ' /proc/mounts && echo mounted || echo not mounted)"
for f in memleak leaker; do
	[ -x "./$f" ] || { fail "./$f missing or not executable in $(pwd)"; exit 1; }
done

# ---- 1. user mode, -c, against the static leaker: frame-pointer stacks,
# then stacks unwound from stack copies with the leaker's .eh_frame
# user_mode NAME [FLAGS...]
user_mode() {
name=$1
shift
echo "== user mode: memleak $* -o 0 -T 50 -c \"./leaker --exit $LEAKER_STATUS\""
t0=$(date +%s)
timeout "$RUN_TIMEOUT" ./memleak "$@" -o 0 -T 50 -c "./leaker --exit $LEAKER_STATUS" >"$OUT/$name.out" 2>"$OUT/$name.err"
rc=$?
t1=$(date +%s)
sed 's/^/  memleak stderr: /' "$OUT/$name.err"
before=$FAILS
if [ "$rc" = "$LEAKER_STATUS" ]; then
	pass "memleak -c exit status $rc = the leaker's ($((t1 - t0)) s)"
else
	fail "memleak -c exit status $rc, expected the leaker's $LEAKER_STATUS ($((t1 - t0)) s; 124/143 = timeout)"
fi
# The last report (-c prints a final one when the command exits; slow guests
# may add interval reports before it).
awk -v expected="$EXPECTED" '
function reset() { split("", nstk); split("", bytes); split("", count); split("", frommain); nbad = 0; cur = "" }
BEGIN {
	ne = split(expected, E, "\n")
	n = 0
	for (i = 1; i <= ne; i++) {
		if (E[i] == "") continue
		split(E[i], parts, ":")
		n++; fn[n] = parts[1]; wb[n] = parts[2]; wc[n] = parts[3]
	}
	reports = 0; reset()
}
/ stacks with outstanding allocations:$/ { reports++; reset(); next }
reports && /^\t[0-9]+ bytes in [0-9]+ allocations from stack$/ { b = $1; c = $4; first = 1; next }
reports && /^\t\t/ {
	line = $0; sub(/^\t\t/, "", line)
	if (first) {
		first = 0
		cur = line; sub(/\+0x.*/, "", cur)
		nstk[cur]++; bytes[cur] += b; count[cur] += c
		if (cur == "churn" || cur == "fail")
			bad[++nbad] = b " bytes in " c " allocations from " line
	} else if (line ~ /^main\+0x[0-9a-f]+ \[leaker\]( |$)/)
		frommain[cur] = 1
	next
}
END {
	if (!reports) { print "FAIL: no report in memleak output"; exit 1 }
	fails = 0
	for (i = 1; i <= n; i++) {
		f = fn[i]; want = wb[i] " bytes in " wc[i] " allocations"
		got = (bytes[f] + 0) " bytes in " (count[f] + 0) " allocations"
		if (!(f in nstk)) { print "FAIL: " f ": no stack starting in " f "+0x..., expected " want; fails++ }
		else if (nstk[f] != 1) { print "FAIL: " f ": " nstk[f] " stacks start in it (together " got "), expected one with " want; fails++ }
		else if (got != want) { print "FAIL: " f ": " got ", expected " want; fails++ }
		else if (!(f in frommain)) { print "FAIL: " f ": " got " but no main+0x... [leaker] frame in its stack"; fails++ }
		else print "PASS: " f ": " got
	}
	if (nbad) { for (i = 1; i <= nbad; i++) print "FAIL: freed or failed allocation reported: " bad[i]; fails++ }
	else print "PASS: no stack starts in churn or fail (all freed/failed)"
	exit (fails ? 1 : 0)
}' "$OUT/$name.out" >"$OUT/$name.checks"
awk_rc=$?
cat "$OUT/$name.checks"
FAILS=$((FAILS + $(grep -c '^FAIL' "$OUT/$name.checks")))
[ "$awk_rc" = 0 ] || [ "$FAILS" -gt "$before" ] || fail "report check (awk) exited $awk_rc"
[ "$FAILS" = "$before" ] || dump "$name"
}
user_mode user -v
# The link path memleak probed for must be what this kernel has:
# uprobe_multi links from Linux 6.6, one link per function before.
release=$(uname -r)
major=${release%%.*}; rest=${release#*.}; minor=${rest%%[!0-9]*}
if [ "$major" -gt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -ge 6 ]; }; then
	want="with uprobe_multi links"
else
	want="no uprobe_multi links"
fi
if grep -q "$want" "$OUT/user.err"; then
	pass "links: '$want' on Linux $major.$minor"
else
	fail "links: no '$want' in memleak -v on Linux $major.$minor"
fi

# ---- 1b. deep (static, -O2 -fomit-frame-pointer), stacks unwound from
# stack copies (dwarf) and in BPF from unwind rows (cfi, and the default):
# the stacks from compare hold 144 bytes in 3 allocations, and each one
# walks up through qsort to sort_pair, level3, level2, level1 and main,
# every one of those frames (compare's too) with the file and line of its
# call in deep.c (copied in beside this script).
# deep_line TEXT: the line of deep.c that holds TEXT
deep_line() { grep -n -F "$1" deep.c | head -n 1 | cut -d: -f1; }
DEEP_LINES="$(deep_line 'sink = malloc(48);') $(deep_line 'qsort(v, 2,') $(deep_line 'sort_pair();')"
DEEP_LINES="$DEEP_LINES $(deep_line 'level3();') $(deep_line 'level2();') $(deep_line 'level1();')"
# deep_check MODE
deep_check() {
mode=$1
# "default": no --unwind flag
if [ "$mode" = default ]; then flags=; else flags="--unwind $mode"; fi
echo "== user mode: memleak $flags -o 0 -c ./deep"
timeout "$RUN_TIMEOUT" ./memleak $flags -o 0 -c ./deep >"$OUT/$mode.out" 2>"$OUT/$mode.err"
rc=$?
before=$FAILS
if [ "$rc" = 0 ]; then pass "memleak --unwind $mode exit status 0"; else fail "memleak --unwind $mode exit status $rc"; fi
awk -v mode="$mode" -v lines="$DEEP_LINES" '
/ stacks with outstanding allocations:$/ { reports++; n = 0; b = 0; c = 0; bad = 0; next }
/^\t[0-9]+ bytes in [0-9]+ allocations from stack/ { sb = $1; sc = $4; depth = 0; inside = 0; next }
/^\t\t/ {
	f = $0; sub(/^\t\t/, "", f); sub(/\+0x.*/, "", f)
	if (depth == 0) inside = (f == "compare")
	if (inside && depth == 0) { n++; b += sb; c += sc; next_want = 1 }
	if (inside && next_want <= 6 && f == want[next_want]) {
		# The frame names its call: " [deep] deep.c:LINE" at the end.
		tail = " [deep] deep.c:" line[next_want]
		if (substr($0, length($0) - length(tail) + 1) != tail) {
			print "  " mode ": " f " is not at deep.c:" line[next_want] ": " $0
			lineless++
		}
		next_want++
	}
	depth++
	next
}
/^$/ { if (inside && next_want <= 6) bad++; inside = 0; next }
BEGIN { split("compare sort_pair level3 level2 level1 main", want, " "); split(lines, line, " ") }
END {
	if (!reports) { print "FAIL: " mode ": no report"; exit 1 }
	if (b == 144 && c == 3) print "PASS: " mode ": compare: 144 bytes in 3 allocations"
	else print "FAIL: " mode ": compare: " b " bytes in " c " allocations, expected 144 in 3"
	if (n > 0 && !bad) print "PASS: " mode ": every stack from compare reaches main through sort_pair and level1-3"
	else print "FAIL: " mode ": " bad " of " n " stacks from compare do not reach main"
	if (n > 0 && !lineless) print "PASS: " mode ": each of those frames at its call in deep.c (lines " lines ")"
	else print "FAIL: " mode ": " lineless " frames from compare to main without their deep.c line"
}' "$OUT/$mode.out" >"$OUT/$mode.checks"
cat "$OUT/$mode.checks"
FAILS=$((FAILS + $(grep -c '^FAIL' "$OUT/$mode.checks")))
[ "$FAILS" = "$before" ] || dump "$mode"
}
deep_check dwarf
deep_check cfi
deep_check default

# ---- 2. kernel mode smoke: 2 reports one second apart
echo "== kernel mode: memleak -v -T 3 1 2"
t0=$(date +%s)
timeout "$RUN_TIMEOUT" ./memleak -v -T 3 1 2 >"$OUT/kernel.out" 2>"$OUT/kernel.err"
rc=$?
t1=$(date +%s)
sed 's/^/  memleak stderr: /' "$OUT/kernel.err"
before=$FAILS
if [ "$rc" = 0 ]; then pass "kernel mode exit status 0 ($((t1 - t0)) s)"
else fail "kernel mode exit status $rc, expected 0 ($((t1 - t0)) s; 124/143 = timeout)"; fi
n=$(grep -c '^\[[0-9:]*\] Top 3 stacks with outstanding allocations:$' "$OUT/kernel.out")
if [ "$n" = 2 ]; then pass "kernel mode: 2 reports"; else fail "kernel mode: $n reports, expected 2"; fi
k=$(grep -c ' \[kernel\]$' "$OUT/kernel.out")
if [ "$k" -gt 0 ]; then pass "kernel mode: $k [kernel] frames"; else fail "kernel mode: no [kernel] frame"; fi
# A raw tracepoint program's stack starts inside it: those frames must be
# left out, so that each stack starts in the allocator.
b=$(awk '/allocations from stack$/ { getline; print }' "$OUT/kernel.out" | grep -cE '\[bpf\]$|bpf_trace_run|__bpf_trace_|__traceiter_')
if [ "$b" = 0 ]; then pass "kernel mode: no stack starts in BPF or tracing frames"
else fail "kernel mode: $b stacks start in BPF or tracing frames"; fi
# Raw tracepoints: typed by BTF where the kernel has it, else raw_tp with
# argument positions from memleak's table checked against tracefs.
if [ -e /sys/kernel/btf/vmlinux ]; then path=tp_btf; else path=raw_tp; fi
if grep -q "kernel mode through $path raw tracepoints" "$OUT/kernel.err"; then
	pass "kernel mode: through $path raw tracepoints"
else
	fail "kernel mode: not through $path raw tracepoints (memleak -v)"
fi
[ "$FAILS" = "$before" ] || dump kernel

# ---- 3. recursion misses under load, raw tracepoints vs the fallback
# status_misses NAME [FLAGS...]: prints the `lost:` line's recursion misses
# of one run that covers STATUS_LOOPS runs of cat (Ctrl+C after them).
status_misses() {
	name=$1
	shift
	timeout "$RUN_TIMEOUT" ./memleak -T 1 "$@" 3600 1 >"$OUT/$name.out" 2>"$OUT/$name.err" &
	pid=$!
	i=0
	until grep -q '^Attaching to kernel allocators' "$OUT/$name.out"; do
		i=$((i + 1))
		[ "$i" -le "$RUN_TIMEOUT" ] && kill -0 "$pid" 2>/dev/null || break
		sleep 1
	done
	n=0
	while [ "$n" -lt "$STATUS_LOOPS" ]; do
		cat /proc/self/status >/dev/null
		n=$((n + 1))
	done
	kill -INT "$pid"
	wait "$pid"
	echo "exit $?" >>"$OUT/$name.err"
	m=$(grep '^lost: ' "$OUT/$name.out" | grep -o '[0-9]* probe hits (BPF recursion)' | cut -d' ' -f1)
	echo "${m:-0}"
}
echo "== kernel mode: recursion misses over $STATUS_LOOPS x cat /proc/self/status"
before=$FAILS
raw=$(status_misses raw)
fallback=$(status_misses fallback --fallback tracepoints)
for name in raw fallback; do
	grep -q '^exit 0$' "$OUT/$name.err" || fail "kernel mode ($name) did not exit 0"
	grep -q ' stacks with outstanding allocations:$' "$OUT/$name.out" || fail "kernel mode ($name): no report"
done
echo "  recursion misses: raw tracepoints $raw, --fallback tracepoints $fallback"
if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 7 ]; }; then
	# The kernel counts a classic tracepoint program's misses from 6.7 on
	# (raw tracepoints' from 6.1, with their guard): nothing to compare.
	echo "SKIP: recursion misses: Linux $major.$minor does not count the fallback's (6.7+)"
elif [ "$raw" -le $((fallback / 20 + 20)) ]; then
	pass "recursion misses: raw $raw <= fallback $fallback / 20 + 20"
else
	fail "recursion misses: raw $raw > fallback $fallback / 20 + 20"
fi
[ "$FAILS" = "$before" ] || { dump raw; dump fallback; }

rm -rf "$OUT"
if [ "$FAILS" = 0 ]; then
	echo "== ALL PASSED on $(uname -rm)"
	exit 0
fi
echo "== $FAILS FAILED on $(uname -rm)"
exit 1
