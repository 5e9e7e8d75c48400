#!/usr/bin/env bash
# `make bench`: what memleak costs the traced process, measured side by side in
# one run, next to the cost of the bare uprobes and next to the reference tools.
# It measures and prints; it never asserts a timing (timings depend on the
# machine, the kernel and how the CPU handles the probed instruction).
#
# Rows:
#   ns per free(malloc(64)) pair: untraced, probes with empty BPF programs (the
#   floor no BPF-side work can go below), memleak (-o 0), memleak -s 10, and, if
#   the anchors are installed, libbpf-tools' memleak and BCC's memleak.py;
#   a report of 1,000,000 outstanding allocations from 10 stacks;
#   memleak's peak RSS during that run; the time from starting a tracer to
#   its attached line, on a process that maps 50 more libraries; the pause
#   and rate of an --unreachable scan of 1,000,000 blocks in 256 MB; the size of
#   the memleak binaries; kernel mode's cost per kmalloc/kfree pair (a poll()
#   that kmallocs and kfrees once), untraced, through raw tracepoints and
#   through --fallback tracepoints. Then each goal of the performance work
#   (issues 8 and 15) with its measure from this run. The stack-walking rows
#   (issue 15) also run a copy of the workload built without frame pointers
#   (-fomit-frame-pointer, as Debian's libc is), where --unwind fp stops
#   short and every allocation costs --unwind dwarf a stack copy; the
#   default mode (walked in BPF with the objects' CFI) is measured against
#   --unwind fp with frame pointers and --unwind dwarf without, and its
#   attach time against --unwind fp's.
#
# Needs root (BPF). Environment knobs:
#   MEMLEAK=path              binary under test (default target/release/memleak)
#   BENCH_PAIRS_UNTRACED=N    pairs for the untraced runs (default 20,000,000)
#   BENCH_PAIRS_TRACED=N      pairs for traced runs (default 100,000: a traced
#                             pair costs 15-50 us on the 2-CPU dev VM, so 2-5 s)
#   ANCHORS=dir               reference tools (default /opt/anchors, made by
#                             ../shared/anchors/install-anchors.sh)
#   BENCH_KPAIRS_UNTRACED=N   poll() calls, untraced (default 2,000,000)
#   BENCH_KPAIRS_TRACED=N     poll() calls under kernel mode (default 200,000)
#   BENCH_ROUNDS=N            runs of each pairs configuration (default 3)
#   BENCH_SKIP_ANCHORS=1      do not run the reference tools even if installed
#   BENCH_ONLY=scan           only the --unreachable scan row (and its goals)
#   BENCH_BASELINE=path       another memleak binary (say, the build before a
#                             refactor) measured in the same rounds, side by
#                             side: pairs (-o 0, -s 10), kernel pairs, attach,
#                             the 1M report and its RSS, each beside this one's
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MEMLEAK=${MEMLEAK:-$ROOT/target/release/memleak}
PAIRS_UNTRACED=${BENCH_PAIRS_UNTRACED:-20000000}
PAIRS_TRACED=${BENCH_PAIRS_TRACED:-100000}
KPAIRS_UNTRACED=${BENCH_KPAIRS_UNTRACED:-2000000}
KPAIRS_TRACED=${BENCH_KPAIRS_TRACED:-200000}
ROUNDS=${BENCH_ROUNDS:-3}
ANCHORS=${ANCHORS:-/opt/anchors}
ENTER=$ANCHORS/enter.sh
OUT=$ROOT/target/bench          # build output, and the logs of the last run
HOLD_ALLOCS=1000000             # must match HOLD_SITES * HOLD_PER_SITE in bench.c
ATTACH_LIBS=50                  # libraries the attach-time workload maps

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "needs root (BPF, uprobes); try: sudo make bench"
[ -x "$MEMLEAK" ] || die "$MEMLEAK not found; run: cargo build --release"

mkdir -p "$OUT"
gcc -O2 -fno-omit-frame-pointer -fno-ipa-icf -Wall -Wextra -Werror \
	-o "$OUT/bench" tests/bench/bench.c
gcc -O2 -fomit-frame-pointer -fno-ipa-icf -Wall -Wextra -Werror \
	-o "$OUT/bench-nofp" tests/bench/bench.c

# Scratch space lives under /tmp because the anchor chroot bind-mounts the
# host's /tmp: a workload copied there runs inside the chroot at the same path.
WORK=$(mktemp -d /tmp/memleak-bench.XXXXXX)
cp "$OUT/bench" "$OUT/bench-nofp" "$WORK/"
# The workload pairs_run starts; the no-frame-pointer rows set it.
BENCH_BIN=$WORK/bench
mkdir "$WORK/libs"
for ((i = 0; i < ATTACH_LIBS; i++)); do
	printf -v lib 'lib%02d' "$i"
	echo "int f$i(int x) { return x + $i; }" > "$WORK/libs/$lib.c"
	gcc -shared -fPIC -O2 -o "$WORK/libs/$lib.so" "$WORK/libs/$lib.c"
done
# Run a private copy of memleak: others may rebuild target/release mid-run.
cp "$MEMLEAK" "$WORK/memleak"
MEMLEAK_RUN=$WORK/memleak
# The baseline runs under the same name (some steps find tracers by name).
BASELINE_RUN=
if [ -n "${BENCH_BASELINE:-}" ]; then
	[ -x "$BENCH_BASELINE" ] || die "BENCH_BASELINE=$BENCH_BASELINE is not an executable"
	mkdir "$WORK/baseline"
	cp "$BENCH_BASELINE" "$WORK/baseline/memleak"
	BASELINE_RUN=$WORK/baseline/memleak
fi

# Every process we start is recorded here; on any exit (error, Ctrl+C) they
# are killed by pid, and the logs are kept in target/bench/last-run.
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null || true
	rm -rf "$OUT/last-run"
	cp -r "$WORK" "$OUT/last-run" 2>/dev/null || true
	rm -rf "$OUT/last-run/bench" "$OUT/last-run/bench-nofp" "$OUT/last-run/memleak" "$OUT/last-run/libs" "$OUT"/last-run/*.in   # fifos
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a - b }'; }

# wait_line FILE REGEX TIMEOUT_S PID: wait until FILE has a line matching
# REGEX; fail if PID dies first or the timeout passes.
wait_line() {
	local file=$1 re=$2 timeout=$3 pid=$4 deadline
	deadline=$(( ${EPOCHREALTIME%.*} + timeout ))
	until grep -Eq -- "$re" "$file" 2>/dev/null; do
		if ! alive "$pid"; then
			note "process $pid exited while waiting for /$re/ in $file:"
			sed 's/^/  | /' "$file" "${file%.out}.err" >&2 2>/dev/null || true
			return 1
		fi
		if [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
			note "timeout waiting for /$re/ in $file"
			return 1
		fi
		sleep 0.02
	done
}

# alive PID: running (a zombie child, not yet reaped, counts as exited).
alive() {
	local _pid _comm state
	{ read -r _pid _comm state _ < "/proc/$1/stat"; } 2>/dev/null || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# forget PID: drop a reaped pid from PIDS, so that cleanup never signals a
# recycled pid that is no longer ours.
forget() {
	local p keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# wait_exit PID TIMEOUT_S: wait for PID to exit, SIGKILL it after the timeout.
# Sets WAIT_RC. While waiting, samples VmHWM (peak RSS, kB) into HWM_KB,
# because after exit the process's memory statistics are gone.
wait_exit() {
	local pid=$1 timeout=$2 deadline k v _
	deadline=$(( ${EPOCHREALTIME%.*} + timeout ))
	while alive "$pid"; do
		{ while read -r k v _; do
			[ "$k" = VmHWM: ] && HWM_KB=$v
		done < "/proc/$pid/status"; } 2>/dev/null || true
		if [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
			note "pid $pid did not exit within ${timeout}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.01
	done
	WAIT_RC=0
	wait "$pid" 2>/dev/null || WAIT_RC=$?
	forget "$pid"
}

# start_workload NAME CMD...: start the workload with its stdin on a fifo whose
# write end we keep on fd WL_FD; wait for "ready <pid>". Sets WL_PID.
start_workload() {
	local name=$1; shift
	mkfifo "$WORK/$name.in"
	"$@" < "$WORK/$name.in" > "$WORK/$name.out" 2> "$WORK/$name.err" &
	WL_PID=$!
	PIDS+=("$WL_PID")
	exec {WL_FD}> "$WORK/$name.in"       # unblocks the workload's open
	wait_line "$WORK/$name.out" '^ready [0-9]+' 20 "$WL_PID"
	# Through enter.sh, the pid printed is still $! (enter.sh ends in exec).
	local printed; printed=$(awk '/^ready/ { print $2; exit }' "$WORK/$name.out")
	[ "$printed" = "$WL_PID" ] || die "$name: workload says pid $printed, expected $WL_PID"
}

# start_tracer NAME READY_REGEX CMD...: start a tracer (stdout NAME.tracer.out,
# stderr NAME.tracer.err) on workload WL_PID (the word PID in CMD is replaced
# by it) and wait until the tracer says it has attached. Sets TR_PID.
start_tracer() {
	local name=$1 re=$2 a; shift 2
	local argv=()
	for a in "$@"; do [ "$a" = PID ] && argv+=("$WL_PID") || argv+=("$a"); done
	"${argv[@]}" > "$WORK/$name.tracer.out" 2> "$WORK/$name.tracer.err" &
	TR_PID=$!
	PIDS+=("$TR_PID")
	wait_line "$WORK/$name.tracer.out" "$re" 60 "$TR_PID"
}

# BCC prints its banner *before* it attaches; each attached uprobe is a
# perf_event fd, so wait until their number stops growing.
wait_perf_fds_settle() {
	local pid=$1 last=-1 n stable=0 tries=0
	while [ $stable -lt 5 ] && [ $tries -lt 300 ]; do
		n=$(find "/proc/$pid/fd" -lname 'anon_inode:\[perf_event\]' 2>/dev/null | wc -l)
		if [ "$n" -gt 0 ] && [ "$n" -eq "$last" ]; then stable=$((stable + 1)); else stable=0; fi
		last=$n; tries=$((tries + 1))
		sleep 0.1
	done
	[ "$last" -gt 0 ] || { note "BCC attached no uprobes"; return 1; }
}

# abandon_run PID...: a run failed; close the go/EOF pipe and kill what it
# started (by pid), so the next run starts clean.
abandon_run() {
	local p
	exec {WL_FD}>&- 2>/dev/null || true
	for p in "$@"; do
		[ -n "$p" ] || continue
		alive "$p" && kill -KILL "$p" 2>/dev/null
		wait_exit "$p" 10
	done
}

# pairs_run NAME N WORKLOAD_PREFIX TRACER...: one `bench pairs N` run (or
# `bench $BENCH_MODE N`: kpairs for the kernel), traced by TRACER (none if empty). Sets NS (ns per pair); returns 1 if the run failed.
# WORKLOAD_PREFIX is "" or the chroot's enter.sh. The tracer's ready line is
# READY_RE (set by the caller). Results go through globals, not $(...): a
# subshell could not wait for or clean up the processes it started.
# Errors are checked by hand: callers use `pairs_run ... || ...`, and bash
# disables set -e inside a function called that way.
pairs_run() {
	local name=$1 n=$2 prefix=$3; shift 3
	NS=
	note "running $name"
	start_workload "$name" $prefix "$BENCH_BIN" "${BENCH_MODE:-pairs}" "$n" || { abandon_run "$WL_PID"; return 1; }
	local wl=$WL_PID tr=
	if [ $# -gt 0 ]; then
		start_tracer "$name" "$READY_RE" "$@" || { abandon_run "$wl" "$TR_PID"; return 1; }
		tr=$TR_PID
		if [ "$name" != "${name#bcc}" ]; then
			wait_perf_fds_settle "$tr" || { abandon_run "$wl" "$tr"; return 1; }
		fi
	fi
	echo go >&"$WL_FD"
	exec {WL_FD}>&-
	wait_exit "$wl" 300
	if [ -n "$tr" ]; then
		# memleak stops by itself when its target exits; the reference tools
		# keep running. SIGTERM for all: a backgrounded BCC ignores SIGINT.
		kill -TERM "$tr" 2>/dev/null || true
		wait_exit "$tr" 30
	fi
	NS=$(awk '/^ns_per_pair/ { print $2 }' "$WORK/$name.out")
	[ -n "$NS" ] || { note "$name: no result; see $WORK/$name.out / .err"; return 1; }
}

# hold_run NAME PREFIX STOP_SIGNAL TRACER...: `bench hold` (1M outstanding
# allocations from 10 stacks) under TRACER; once everything is allocated, send
# STOP_SIGNAL, which makes the tracer print its final report and exit.
# Sets HOLD_WALL (s, signal to exit), HOLD_HWM_BEFORE / HOLD_HWM (kB, peak RSS
# before the report / at exit), HOLD_ALLOC_NS (ns per traced malloc).
hold_run() {
	local name=$1 prefix=$2 sig=$3; shift 3
	note "running $name (1,000,000 allocations; takes a while when traced)"
	start_workload "$name" $prefix "$WORK/bench" hold || { abandon_run "$WL_PID"; return 1; }
	local wl=$WL_PID
	start_tracer "$name" "$READY_RE" "$@" || { abandon_run "$wl" "$TR_PID"; return 1; }
	local tr=$TR_PID
	echo go >&"$WL_FD"
	wait_line "$WORK/$name.out" '^held' 300 "$wl" || { abandon_run "$wl" "$tr"; return 1; }
	HOLD_ALLOC_NS=$(awk '/^held/ { print $2 }' "$WORK/$name.out")
	# The tracer's memory just before it is stopped; the report comes after.
	HOLD_HWM_BEFORE=$(awk '/^VmHWM:/ { print $2 }' "/proc/$tr/status")
	HWM_KB=$HOLD_HWM_BEFORE
	local t0=$EPOCHREALTIME
	kill -s "$sig" "$tr"
	wait_exit "$tr" 120                  # samples VmHWM during the report
	HOLD_WALL=$(fsub "$EPOCHREALTIME" "$t0")
	HOLD_HWM=$HWM_KB
	exec {WL_FD}>&-                      # EOF: the workload frees and exits
	wait_exit "$wl" 30
}

# stop_idle_run NAME PREFIX STOP_SIGNAL TRACER...: time from the stop signal
# to exit with nothing outstanding (detach + teardown), to tell apart from the
# cost of the report.
stop_idle_run() {
	local name=$1 prefix=$2 sig=$3; shift 3
	note "running $name"
	start_workload "$name" $prefix "$WORK/bench" hold || { abandon_run "$WL_PID"; return 1; }
	local wl=$WL_PID
	start_tracer "$name" "$READY_RE" "$@" || { abandon_run "$wl" "$TR_PID"; return 1; }
	local tr=$TR_PID t0=$EPOCHREALTIME
	kill -s "$sig" "$tr"
	wait_exit "$tr" 60
	STOP_WALL=$(fsub "$EPOCHREALTIME" "$t0")
	exec {WL_FD}>&-                      # no go line: the workload just exits
	wait_exit "$wl" 10
}

# attach_run NAME PREFIX READY_RE TRACER...: time from starting TRACER on
# `bench libs` (ATTACH_LIBS libraries mapped) to its READY_RE line, stamped
# as it is read. Sets ATTACH_S.
attach_run() {
	local name=$1 prefix=$2 re=${3#^} a; shift 3
	ATTACH_S=
	note "running $name"
	start_workload "$name" $prefix "$WORK/bench" libs "$WORK/libs" "$ATTACH_LIBS" || { abandon_run "$WL_PID"; return 1; }
	local wl=$WL_PID argv=()
	for a in "$@"; do [ "$a" = PID ] && argv+=("$WL_PID") || argv+=("$a"); done
	local t0=$EPOCHREALTIME
	"${argv[@]}" > >(while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done > "$WORK/$name.tracer.out") \
		2> "$WORK/$name.tracer.err" &
	local tr=$!
	PIDS+=("$tr")
	local deadline=$(( ${EPOCHREALTIME%.*} + 60 ))
	until grep -Eq -- "^[0-9.]+ $re" "$WORK/$name.tracer.out" 2>/dev/null; do
		if ! alive "$tr" || [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
			note "$name: no /$re/ line; see $WORK/$name.tracer.err"
			abandon_run "$wl" "$tr"
			return 1
		fi
		sleep 0.01
	done
	local t1; t1=$(awk -v re="^[0-9.]+ $re" '$0 ~ re { print $1; exit }' "$WORK/$name.tracer.out")
	ATTACH_S=$(fsub "$t1" "$t0")
	kill -TERM "$tr" 2>/dev/null || true
	wait_exit "$tr" 30
	exec {WL_FD}>&-
	wait_exit "$wl" 10
}

# scan_run NAME: `bench scan` (1,000,000 blocks of 256 bytes, half reachable
# only through the other half) under memleak --unreachable -v; once all is
# allocated, SIGTERM: the final report stops the process and scans it. Sets
# SCAN_PAUSE (s, process stopped), SCAN_CPU (s, memleak's CPU in that time),
# SCAN_BYTES (bytes read and scanned) and SCAN_UNREACHABLE (blocks it found
# unreachable: must be 0).
scan_run() {
	local name=$1
	note "running $name (1,000,000 blocks in 256 MB; takes a while when traced)"
	start_workload "$name" "$WORK/bench" scan || { abandon_run "$WL_PID"; return 1; }
	local wl=$WL_PID
	start_tracer "$name" "$MEMLEAK_READY" "$MEMLEAK_RUN" --unreachable -v -o 0 -p PID 3600 \
		|| { abandon_run "$wl" "$TR_PID"; return 1; }
	local tr=$TR_PID
	echo go >&"$WL_FD"
	wait_line "$WORK/$name.out" '^held' 300 "$wl" || { abandon_run "$wl" "$tr"; return 1; }
	kill -TERM "$tr"
	wait_exit "$tr" 120
	exec {WL_FD}>&-
	wait_exit "$wl" 30
	# -v: "scan of process P: T threads stopped for X ms (Y ms of CPU), B bytes scanned ..."
	read -r SCAN_PAUSE SCAN_CPU SCAN_BYTES < <(sed -nE \
		's/.*stopped for ([0-9.]+) ms \(([0-9.]+) ms of CPU\), ([0-9]+) bytes scanned.*/\1 \2 \3/p' \
		"$WORK/$name.tracer.err" | tail -1 | awk '{ print $1 / 1000, $2 / 1000, $3 }')
	SCAN_UNREACHABLE=$(sed -nE 's/.*unreachable: [0-9]+ bytes in ([0-9]+) allocations.*/\1/p' \
		"$WORK/$name.tracer.out" | awk '{ n += $1 } END { print n + 0 }')
	[ -n "${SCAN_PAUSE:-}" ] || { note "$name: no scan line; see $WORK/$name.tracer.err"; return 1; }
}

# scan_lines: the scan row and its goals (after scan_run).
scan_lines() {
	local rate cpu_rate
	rate=$(awk -v b="$SCAN_BYTES" -v t="$SCAN_PAUSE" 'BEGIN { printf "%.2f", b / t / 1e9 }')
	cpu_rate=$(awk -v b="$SCAN_BYTES" -v t="$SCAN_CPU" 'BEGIN { printf "%.2f", b / t / 1e9 }')
	line "--unreachable scan, 1M blocks in 256 MB" \
		"pause $(secs "$SCAN_PAUSE") ($(secs "$SCAN_CPU") of CPU), $(mb "$SCAN_BYTES") scanned, $rate GB/s ($cpu_rate GB/s of CPU); $SCAN_UNREACHABLE blocks unreachable (expected 0)"
	SCAN_GOALS=(
		"  scan pause, 1M blocks in 256 MB (goal < 1 s)" "$(secs "$SCAN_PAUSE"): $(verdict "$SCAN_PAUSE" 0.999)"
		"  scan rate (goal >= 1 GB/s)" "$rate GB/s: $(awk -v r="$rate" 'BEGIN { print (r >= 1) ? "met" : "missed" }')"
	)
}

# Formatting for the table; a value that is not a number ("failed") passes
# through, and a ratio involving one is "-".
num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { num "$1" && num "$2" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }' || echo -; }
times() { num "$1" && num "$2" && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0fx", a / b; else printf "-" }' || echo -; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
ns() { num "$1" && awk -v v="$1" 'BEGIN { if (v < 100) printf "%.1f", v; else printf "%.0f", v }' || echo "$1"; }
secs() { num "$1" && awk -v v="$1" 'BEGIN { if (v < 1) printf "%.0f ms", v * 1000; else printf "%.2f s", v }' || echo "$1"; }


verdict() { awk -v v="$1" -v lim="$2" 'BEGIN { if (v == "" || v == "-" || v == "failed") print "not measured"; else if (v + 0 <= lim + 0) print "met"; else print "missed" }'; }

# ---------------------------------------------------------------- runs

unset MEMLEAK_BENCH_EMPTY_PROBES       # only the floor runs may set it
MEMLEAK_READY='^Attaching to pid'
line() { printf '%-46s %s\n' "$@"; }
if [ "${BENCH_ONLY:-}" = scan ]; then
	scan_run scan-memleak || die "memleak --unreachable scan run failed"
	echo
	scan_lines
	echo
	echo "goals (this run):"
	line "${SCAN_GOALS[@]:0:2}"
	line "${SCAN_GOALS[@]:2:2}"
	line "load average at start" "$(cut -d' ' -f1 /proc/loadavg)"
	exit 0
fi
LBT_READY='^(Attaching to pid|Tracing outstanding memory allocs)'
FAILED=()                              # runs that failed (reference tools only)

# Anything else tracing or loading the machine skews every number; say so.
LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
OTHER_TRACERS=$(ps -eo pid=,comm= | awk '$2 ~ /^(memleak|bpftrace)$|^memleak-/ { printf "%s%s(%s)", sep, $2, $1; sep = " " }')

# Traced timings on a small VM are noisy (uprobe traps are VM exits; other
# tenants), so every pairs configuration runs ROUNDS times, interleaved so that
# drift hits all of them alike; the table shows the median and the range.
declare -A RES=()                      # configuration -> "ns ns ns"
# measure NAME N PREFIX READY_RE TRACER...: one round of one configuration.
measure() {
	local name=$1 n=$2 prefix=$3; READY_RE=$4; shift 4
	if pairs_run "$name.$ROUND" "$n" "$prefix" "$@"; then
		RES[$name]+="$NS "
	else
		FAILED+=("$name.$ROUND")
		return 1
	fi
}
med() { local v=${RES[$1]:-}; [ -n "$v" ] || { echo failed; return; }
	printf '%s\n' $v | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { local v=${RES[$1]:-}; [ -n "$v" ] || return 0
	printf '%s\n' $v | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR > 1) printf "%s..%s", lo < 100 ? sprintf("%.1f", lo) : sprintf("%.0f", lo), hi < 100 ? sprintf("%.1f", hi) : sprintf("%.0f", hi) }'; }

# memleak's own runs must work: any failure ends the bench.
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	measure untraced "$PAIRS_UNTRACED" "" "" || die "untraced run failed"
	measure floor "$PAIRS_TRACED" "" "$MEMLEAK_READY" env MEMLEAK_BENCH_EMPTY_PROBES=1 "$MEMLEAK_RUN" -p PID -o 0 3600 \
		|| die "floor run failed"
	measure memleak "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 3600 || die "memleak run failed"
	# --unwind fp right after the default, and their ratio per round: one
	# run here differs from the next by up to 20% (the floor did, in one
	# bench), more than the 10% the default/fp goal allows, and the drift
	# is slow, so runs side by side cancel most of it where medians taken
	# apart do not.
	DEFAULT_NS=$NS
	measure fp "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 --unwind fp 3600 \
		|| die "memleak --unwind fp run failed"
	RES[default-over-fp]+="$(awk -v a="$DEFAULT_NS" -v b="$NS" 'BEGIN { printf "%.4f", a / b }') "
	measure memleak-s10 "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 -s 10 3600 \
		|| die "memleak -s 10 run failed"
	measure dwarf "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 --unwind dwarf 3600 \
		|| die "memleak --unwind dwarf run failed"
	measure dwarf-s10 "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 -s 10 --unwind dwarf 3600 \
		|| die "memleak -s 10 --unwind dwarf run failed"
	# The default mode (no --unwind flag) against the explicit ones.
	for mode in fp dwarf default; do
		flags=(--unwind "$mode"); [ "$mode" = default ] && flags=()
		BENCH_BIN=$WORK/bench-nofp measure "nofp-$mode" "$PAIRS_TRACED" "" "$MEMLEAK_READY" \
			"$MEMLEAK_RUN" -p PID -o 0 "${flags[@]}" 3600 || die "memleak ${flags[*]:-(default)} (no frame pointers) run failed"
	done
	attach_run "attach.$ROUND" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID 3600 || die "memleak attach run failed"
	RES[attach]+="$ATTACH_S "
	attach_run "attach-fp.$ROUND" "" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID --unwind fp 3600 \
		|| die "memleak --unwind fp attach run failed"
	RES[attach-fp]+="$ATTACH_S "
	if [ -n "$BASELINE_RUN" ]; then
		measure base-memleak "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$BASELINE_RUN" -p PID -o 0 3600 \
			|| die "baseline memleak run failed"
		measure base-memleak-s10 "$PAIRS_TRACED" "" "$MEMLEAK_READY" "$BASELINE_RUN" -p PID -o 0 -s 10 3600 \
			|| die "baseline memleak -s 10 run failed"
		attach_run "base-attach.$ROUND" "" "$MEMLEAK_READY" "$BASELINE_RUN" -p PID 3600 \
			|| die "baseline attach run failed"
		RES[base-attach]+="$ATTACH_S "
	fi
done

# Kernel mode: what tracing the kernel's allocators adds to one kmalloc/kfree
# pair, through raw tracepoints (the default) and the classic ones.
KERNEL_READY='^Attaching to kernel allocators'
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	BENCH_MODE=kpairs measure k-untraced "$KPAIRS_UNTRACED" "" "" || die "untraced poll run failed"
	BENCH_MODE=kpairs measure k-raw "$KPAIRS_TRACED" "" "$KERNEL_READY" "$MEMLEAK_RUN" -o 0 3600 \
		|| die "kernel mode run failed"
	BENCH_MODE=kpairs measure k-tracepoints "$KPAIRS_TRACED" "" "$KERNEL_READY" \
		"$MEMLEAK_RUN" -o 0 --fallback tracepoints 3600 || die "kernel mode --fallback tracepoints run failed"
	if [ -n "$BASELINE_RUN" ]; then
		BENCH_MODE=kpairs measure base-k-raw "$KPAIRS_TRACED" "" "$KERNEL_READY" "$BASELINE_RUN" -o 0 3600 \
			|| die "baseline kernel mode run failed"
	fi
done

# memleak stops on SIGINT or SIGTERM alike; SIGTERM, the same signal as for the
# pairs runs (where BCC needs it).
READY_RE=$MEMLEAK_READY
hold_run hold-memleak "" TERM "$MEMLEAK_RUN" -v -p PID -o 0 3600 || die "memleak 1M report run failed"
ML_REPORT_WALL=$HOLD_WALL ML_HWM=$HOLD_HWM ML_HWM_BEFORE=$HOLD_HWM_BEFORE ML_ALLOC_NS=$HOLD_ALLOC_NS
# -v: "memleak: report of N outstanding allocations took X ms"; keep the last.
read -r ML_REPORT_N ML_REPORT_MS < <(awk '/report of [0-9]+ outstanding allocations took/ { n = $4; ms = $(NF-1) } END { print n + 0, ms / 1000 }' "$WORK/hold-memleak.tracer.err")
ML_STACKS=$(grep -c 'allocations from stack' "$WORK/hold-memleak.tracer.out" || true)
if [ -n "$BASELINE_RUN" ]; then
	hold_run hold-baseline "" TERM "$BASELINE_RUN" -v -p PID -o 0 3600 || die "baseline 1M report run failed"
	BASE_REPORT_WALL=$HOLD_WALL BASE_HWM=$HOLD_HWM
fi
stop_idle_run stop-memleak "" TERM "$MEMLEAK_RUN" -p PID -o 0 3600 || die "memleak stop run failed"
ML_STOP=$STOP_WALL
scan_run scan-memleak || die "memleak --unreachable scan run failed"

# The reference tools, in the anchor chroot: libbpf-tools resolves libc.so.6 in
# its own filesystem, so the workload must run in there too. The chroot's glibc
# differs from the host's (and uprobe cost depends on the probed instruction),
# hence its own untraced/floor/memleak rows, and ratios only within the chroot.
# A failing reference tool is reported in the table, not fatal.
ANCHORS_OK=
if [ -z "${BENCH_SKIP_ANCHORS:-}" ] && [ -x "$ENTER" ]; then
	if "$ENTER" sh -c "test -x '$WORK/bench' && command -v memleak-libbpf && command -v memleak-bpfcc" >/dev/null 2>&1; then
		ANCHORS_OK=1
	else
		note "$ENTER exists but the chroot cannot see $WORK/bench or lacks the tools; skipping anchors"
	fi
fi
if [ -n "$ANCHORS_OK" ]; then
	C_GLIBC=$("$ENTER" dpkg-query -W -f '${Version}' libc6 2>/dev/null || echo '?')
	LBT_VER=$("$ENTER" dpkg-query -W -f '${Version}' libbpf-tools 2>/dev/null || echo '?')
	BCC_VER=$("$ENTER" dpkg-query -W -f '${Version}' bpfcc-tools 2>/dev/null || echo '?')
	for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
		measure c-untraced "$PAIRS_UNTRACED" "$ENTER" "" || true
		measure c-floor "$PAIRS_TRACED" "$ENTER" "$MEMLEAK_READY" \
			env MEMLEAK_BENCH_EMPTY_PROBES=1 "$MEMLEAK_RUN" -p PID -o 0 3600 || true
		measure c-memleak "$PAIRS_TRACED" "$ENTER" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 3600 || true
		measure c-memleak-s10 "$PAIRS_TRACED" "$ENTER" "$MEMLEAK_READY" "$MEMLEAK_RUN" -p PID -o 0 -s 10 3600 || true
		# stdbuf: libbpf-tools' banner would otherwise sit in a stdio buffer;
		# "Tracing outstanding ..." comes after the attach. No -o 0 (lbt wants
		# > 0); its default age filter is 500 ns, i.e. none.
		measure c-libbpf-tools "$PAIRS_TRACED" "$ENTER" "$LBT_READY" \
			"$ENTER" stdbuf -oL memleak-libbpf -p PID 3600 || true
		measure c-libbpf-tools-s10 "$PAIRS_TRACED" "$ENTER" "$LBT_READY" \
			"$ENTER" stdbuf -oL memleak-libbpf -p PID -s 10 3600 || true
		# Its "Tracing outstanding" line comes once its probes are attached.
		if attach_run "c-attach-libbpf-tools.$ROUND" "$ENTER" "Tracing outstanding" \
			"$ENTER" stdbuf -oL memleak-libbpf -p PID 3600; then
			RES[c-attach-libbpf-tools]+="$ATTACH_S "
		else
			FAILED+=("c-attach-libbpf-tools.$ROUND")
		fi
		# BCC compiles for a few seconds and prints its banner *before*
		# attaching; the name "bcc" makes pairs_run wait for its uprobe fds.
		measure bcc "$PAIRS_TRACED" "$ENTER" "$MEMLEAK_READY" \
			"$ENTER" env PYTHONUNBUFFERED=1 memleak-bpfcc -p PID -o 0 3600 || true
	done
	# libbpf-tools installs a SIGINT handler that prints a final report.
	READY_RE=$LBT_READY
	if hold_run hold-libbpf-tools "$ENTER" INT "$ENTER" stdbuf -oL memleak-libbpf -p PID 3600; then
		LBT_REPORT_WALL=$HOLD_WALL LBT_HWM=$HOLD_HWM LBT_ALLOC_NS=$HOLD_ALLOC_NS
		LBT_STACKS=$(grep -c 'allocations from stack' "$WORK/hold-libbpf-tools.tracer.out" || true)
	else
		LBT_REPORT_WALL=failed LBT_HWM=0 LBT_ALLOC_NS=failed LBT_STACKS=0; FAILED+=(hold-libbpf-tools)
	fi
	if stop_idle_run stop-libbpf-tools "$ENTER" INT "$ENTER" stdbuf -oL memleak-libbpf -p PID 3600; then
		LBT_STOP=$STOP_WALL
	else
		LBT_STOP=failed; FAILED+=(stop-libbpf-tools)
	fi
fi

# ---------------------------------------------------------------- table

HOST_GLIBC=$(ldd --version 2>/dev/null | awk 'NR == 1 { print $NF }')
UNTRACED=$(med untraced) FLOOR=$(med floor) ML=$(med memleak) MLS=$(med memleak-s10)
MLD=$(med dwarf) MLDS=$(med dwarf-s10)
row() { printf '%-46s %9s %12s %9s  %-15s %s\n' "$@"; }
echo
row "memleak bench ($(uname -m), $(uname -r), $(nproc) CPUs)" ns/pair "vs untraced" "vs floor" "range ($ROUNDS runs)" ""
row "untraced (host glibc $HOST_GLIBC)" "$(ns "$UNTRACED")" "" "" "$(range untraced)" ""
row "empty probes (floor)" "$(ns "$FLOOR")" "$(times "$FLOOR" "$UNTRACED")" "1.00" "$(range floor)" ""
row "memleak -o 0" "$(ns "$ML")" "$(times "$ML" "$UNTRACED")" "$(ratio "$ML" "$FLOOR")" "$(range memleak)" ""
row "memleak -o 0 -s 10" "$(ns "$MLS")" "$(times "$MLS" "$UNTRACED")" "$(ratio "$MLS" "$FLOOR")" "$(range memleak-s10)" \
	"-s 10/full = $(ratio "$MLS" "$ML")"
# The default's cost over --unwind fp, from runs side by side (see the
# rounds); "failed" when a round failed.
default_over_fp() { local m; m=$(med default-over-fp); if num "$m"; then printf '%.2f' "$m"; else echo failed; fi; }
# What a stack copy plus its unwinding costs per recorded allocation: the
# difference to the frame-pointer run, all of it at -s 1, a tenth at -s 10.
per_sample() { awk -v d="$1" -v f="$2" -v k="$3" 'BEGIN { if (d + 0 > 0 && f + 0 > 0) printf "%+.0f ns per recorded allocation", (d - f) * k; else print "n/a" }'; }
MLF=$(med fp)
row "memleak -o 0 --unwind fp" "$(ns "$MLF")" "$(times "$MLF" "$UNTRACED")" "$(ratio "$MLF" "$FLOOR")" "$(range fp)" \
	"default/fp = $(default_over_fp) (median of each round's pair)"
row "memleak -o 0 --unwind dwarf" "$(ns "$MLD")" "$(times "$MLD" "$UNTRACED")" "$(ratio "$MLD" "$FLOOR")" "$(range dwarf)" \
	"dwarf/fp = $(ratio "$MLD" "$MLF"), $(per_sample "$MLD" "$MLF" 1)"
row "memleak -o 0 -s 10 --unwind dwarf" "$(ns "$MLDS")" "$(times "$MLDS" "$UNTRACED")" "$(ratio "$MLDS" "$FLOOR")" "$(range dwarf-s10)" \
	"dwarf/default = $(ratio "$MLDS" "$MLS"), $(per_sample "$MLDS" "$MLS" 10) over the default"
NF_FP=$(med nofp-fp) NF_DWARF=$(med nofp-dwarf) NF_DEF=$(med nofp-default)
# Without frame pointers every pair is one recorded allocation whose stack
# fp cannot walk: dwarf copies and unwinds it, the default walks it in BPF
# with the objects' CFI.
row "no frame pointers: memleak --unwind fp" "$(ns "$NF_FP")" "$(times "$NF_FP" "$UNTRACED")" "$(ratio "$NF_FP" "$FLOOR")" "$(range nofp-fp)" \
	"(stacks stop short)"
row "  memleak --unwind dwarf" "$(ns "$NF_DWARF")" "$(times "$NF_DWARF" "$UNTRACED")" "$(ratio "$NF_DWARF" "$FLOOR")" "$(range nofp-dwarf)" \
	"$(per_sample "$NF_DWARF" "$NF_FP" 1) over fp"
row "  memleak (default)" "$(ns "$NF_DEF")" "$(times "$NF_DEF" "$UNTRACED")" "$(ratio "$NF_DEF" "$FLOOR")" "$(range nofp-default)" \
	"$(per_sample "$NF_DEF" "$NF_FP" 1) over fp; default/dwarf = $(ratio "$NF_DEF" "$NF_DWARF")"
if [ -n "$ANCHORS_OK" ]; then
	C_UNTRACED=$(med c-untraced) C_FLOOR=$(med c-floor) C_ML=$(med c-memleak) C_LBT=$(med c-libbpf-tools) C_BCC=$(med bcc)
	row "anchor chroot (glibc $C_GLIBC): untraced" "$(ns "$C_UNTRACED")" "" "" "$(range c-untraced)" ""
	row "  empty probes (floor)" "$(ns "$C_FLOOR")" "$(times "$C_FLOOR" "$C_UNTRACED")" "1.00" "$(range c-floor)" ""
	row "  memleak -o 0" "$(ns "$C_ML")" "$(times "$C_ML" "$C_UNTRACED")" "$(ratio "$C_ML" "$C_FLOOR")" "$(range c-memleak)" ""
	C_MLS=$(med c-memleak-s10) C_LBTS=$(med c-libbpf-tools-s10)
	row "  memleak -o 0 -s 10" "$(ns "$C_MLS")" "$(times "$C_MLS" "$C_UNTRACED")" "$(ratio "$C_MLS" "$C_FLOOR")" "$(range c-memleak-s10)" ""
	row "  libbpf-tools memleak $LBT_VER" "$(ns "$C_LBT")" "$(times "$C_LBT" "$C_UNTRACED")" "$(ratio "$C_LBT" "$C_FLOOR")" \
		"$(range c-libbpf-tools)" "memleak/libbpf-tools = $(ratio "$C_ML" "$C_LBT")"
	row "  libbpf-tools memleak -s 10" "$(ns "$C_LBTS")" "$(times "$C_LBTS" "$C_UNTRACED")" "$(ratio "$C_LBTS" "$C_FLOOR")" \
		"$(range c-libbpf-tools-s10)" "memleak/libbpf-tools = $(ratio "$C_MLS" "$C_LBTS")"
	row "  BCC memleak.py $BCC_VER -o 0" "$(ns "$C_BCC")" "$(times "$C_BCC" "$C_UNTRACED")" "$(ratio "$C_BCC" "$C_FLOOR")" \
		"$(range bcc)" "memleak/BCC = $(ratio "$C_ML" "$C_BCC")"
else
	echo "libbpf-tools: not installed (../shared/anchors/install-anchors.sh)"
	echo "BCC memleak.py: not installed (../shared/anchors/install-anchors.sh)"
fi
# Kernel mode: one kmalloc/kfree pair per poll(); the traced cost of a pair
# is the difference to the untraced call.
K_UNTRACED=$(med k-untraced) K_RAW=$(med k-raw) K_TP=$(med k-tracepoints)
per_pair() { num "$1" && num "$2" && awk -v t="$1" -v u="$2" 'BEGIN { printf "%+.0f ns per kmalloc/kfree pair", t - u }' || echo "n/a"; }
row "kernel mode: poll(), one kmalloc/kfree each" "" "" "" "" ""
row "  untraced" "$(ns "$K_UNTRACED")" "" "" "$(range k-untraced)" ""
row "  memleak -o 0 (raw tracepoints)" "$(ns "$K_RAW")" "$(times "$K_RAW" "$K_UNTRACED")" "" "$(range k-raw)" \
	"$(per_pair "$K_RAW" "$K_UNTRACED")"
row "  memleak -o 0 --fallback tracepoints" "$(ns "$K_TP")" "$(times "$K_TP" "$K_UNTRACED")" "" "$(range k-tracepoints)" \
	"$(per_pair "$K_TP" "$K_UNTRACED"), raw/fallback = $(ratio "$K_RAW" "$K_TP")"
if [ -n "$BASELINE_RUN" ]; then
	B_ML=$(med base-memleak) B_MLS=$(med base-memleak-s10) B_KRAW=$(med base-k-raw)
	row "baseline ($BENCH_BASELINE): memleak -o 0" "$(ns "$B_ML")" "$(times "$B_ML" "$UNTRACED")" "$(ratio "$B_ML" "$FLOOR")" \
		"$(range base-memleak)" "this/baseline = $(ratio "$ML" "$B_ML")"
	row "  baseline memleak -o 0 -s 10" "$(ns "$B_MLS")" "$(times "$B_MLS" "$UNTRACED")" "$(ratio "$B_MLS" "$FLOOR")" \
		"$(range base-memleak-s10)" "this/baseline = $(ratio "$MLS" "$B_MLS")"
	row "  baseline kernel mode -o 0 (raw tracepoints)" "$(ns "$B_KRAW")" "$(times "$B_KRAW" "$K_UNTRACED")" "" \
		"$(range base-k-raw)" "this/baseline = $(ratio "$K_RAW" "$B_KRAW")"
fi
echo
line "report of 1,000,000 allocations (10 stacks)" \
	"memleak $(secs "$ML_REPORT_WALL") signal to exit, report itself $(secs "$ML_REPORT_MS") (saw $ML_REPORT_N allocs, $ML_STACKS stacks)"
if [ -n "$ANCHORS_OK" ]; then
	line "" "libbpf-tools $(secs "$LBT_REPORT_WALL") signal to exit ($LBT_STACKS stacks); memleak/libbpf-tools = $(ratio "$ML_REPORT_WALL" "$LBT_REPORT_WALL")"
fi
line "stop, nothing outstanding (detach + exit)" "memleak $(secs "$ML_STOP")${ANCHORS_OK:+   libbpf-tools $(secs "$LBT_STOP")}"
ML_ATTACH=$(med attach)
line "attach, process mapping $ATTACH_LIBS more libraries" \
	"memleak $(secs "$ML_ATTACH") (start to 'Attaching to pid'; --unwind fp $(secs "$(med attach-fp)"))${ANCHORS_OK:+   libbpf-tools $(secs "$(med c-attach-libbpf-tools)") (start to 'Tracing outstanding', via the chroot)}"
if [ -n "$BASELINE_RUN" ]; then
	line "baseline: report of 1M, attach, peak RSS" \
		"$(secs "$BASE_REPORT_WALL") signal to exit, attach $(secs "$(med base-attach)") ($(range base-attach)), $(mb $((BASE_HWM * 1024)))"
fi
line "traced malloc, filling the 1M table" "memleak $(ns "$ML_ALLOC_NS") ns${ANCHORS_OK:+   libbpf-tools $(ns "$LBT_ALLOC_NS") ns}"
scan_lines
line "memleak peak RSS (VmHWM, 1M outstanding)" \
	"$(mb $((ML_HWM * 1024))) (before the report: $(mb $((ML_HWM_BEFORE * 1024))))${ANCHORS_OK:+   libbpf-tools $(mb $((LBT_HWM * 1024)))}"
for bin in "$MEMLEAK" target/x86_64-unknown-linux-musl/release/memleak target/aarch64-unknown-linux-musl/release/memleak; do
	[ -f "$bin" ] || continue
	bin=${bin#"$ROOT"/}
	if readelf -S "$bin" 2>/dev/null | grep -q '\.symtab'; then strip="not stripped"; else strip=stripped; fi
	line "binary size ${bin#target/}" "$(mb "$(stat -c %s "$bin")") ($strip)"
done
# The goals of the performance work (issues 8 and 18), each against this run.
echo
echo "goals (this run):"
if [ -n "$ANCHORS_OK" ]; then
	R_FULL=$(ratio "$C_ML" "$C_LBT") R_S10=$(ratio "$C_MLS" "$C_LBTS")
	line "  pair / libbpf-tools (goal <= 0.50)" "$R_FULL: $(verdict "$R_FULL" 0.50)"
	line "  pair, both -s 10 (goal <= 0.25)" "$R_S10: $(verdict "$R_S10" 0.25)"
else
	line "  per pair vs libbpf-tools" "not measured (anchors not installed)"
fi
line "  report of 1M allocations (goal <= 0.2 s)" "$(secs "$ML_REPORT_WALL") signal to exit: $(verdict "$ML_REPORT_WALL" 0.2)"
line "  RSS, 1M outstanding (goal < 16 MB)" "$(mb $((ML_HWM * 1024))): $(verdict "$ML_HWM" 16383)"
line "  attach, $ATTACH_LIBS more libraries (goal < 100 ms)" "$(secs "$ML_ATTACH"): $(verdict "$ML_ATTACH" 0.0999)"
line "${SCAN_GOALS[@]:0:2}"
line "${SCAN_GOALS[@]:2:2}"
R_DEF=$(default_over_fp)
line "  pair, default / fp, with fp (goal <= 1.10)" "$R_DEF: $(verdict "$R_DEF" 1.10)"
# Without frame pointers, what a recorded allocation costs each mode is,
# as in the table's "per recorded allocation" column, its pair's time over
# the same pair's under --unwind fp (the probes, the bookkeeping and the
# short walk every mode pays, recorded or not). Whole pairs are shown too.
over_fp() { num "$1" && num "$2" && awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f", a - b }' || echo -; }
NF_DEF_COST=$(over_fp "$NF_DEF" "$NF_FP") NF_DWARF_COST=$(over_fp "$NF_DWARF" "$NF_FP")
# (Signed: the default's walk can cost less than fp's.)
R_NOFP=$(awk -v a="$NF_DEF_COST" -v b="$NF_DWARF_COST" 'BEGIN { if (a != "-" && b + 0 > 0) printf "%.2f", a / b; else print "-" }')
line "  recorded alloc, default / dwarf, no fp (goal <= 0.50)" \
	"$R_NOFP: $(verdict "$R_NOFP" 0.50) ($NF_DEF_COST against $NF_DWARF_COST ns over fp; whole pairs $(ratio "$NF_DEF" "$NF_DWARF"))"
echo
line "load average at start" "$LOAD_AT_START${OTHER_TRACERS:+; other tracers running: $OTHER_TRACERS}"
[ ${#FAILED[@]} -eq 0 ] || echo "failed runs: ${FAILED[*]} (logs: target/bench/last-run/<run>.tracer.err)"
echo "(logs: target/bench/last-run/)"
