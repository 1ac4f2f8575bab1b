#!/usr/bin/env bash
# What the slowest messages of the latency rows waited for: runs `rafthttp bench`'s two
# latency rows under a system-wide scheduler trace (perf's sched tracepoints, which work
# where hardware counters do not) and sorts the messages at or above p99 by cause
# (perf/latency_tail.py: a transport thread woken onto a busy CPU, onto an idle vCPU
# slow to come back, no wake-up at all, or none of these).
#
#   perf/latency_tail.sh                # default configuration
#   perf/latency_tail.sh --inline       # any further flags go to rafthttp bench
#   QUANTILE=0.98 perf/latency_tail.sh  # a wider tail
#
# Needs perf and the right to trace system-wide (root, or kernel.perf_event_paranoid
# <= -1). The trace itself costs some latency; compare the p50/p99 it prints with an
# untraced run before reading too much into absolute figures.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="$(mktemp -d "${TMPDIR:-/tmp}/rafthttp-latency-tail.XXXXXX")"
trap 'rm -rf "$work"' EXIT

command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 2; }
(cd "$root" && cargo build --release --quiet)
perf record -q -k CLOCK_MONOTONIC -e sched:sched_switch -e sched:sched_wakeup -a \
	-o "$work/sched.data" -- \
	"$root/target/release/rafthttp" bench --only latency --npipe 0 --nsnap 0 \
	--latency-log "$work/lat" "$@" >/dev/null
perf script -i "$work/sched.data" -F comm,pid,tid,cpu,time,event,trace --ns \
	>"$work/sched.txt" 2>/dev/null
python3 "$here/latency_tail.py" "$work/sched.txt" "$work"/lat/*.tsv \
	--quantile "${QUANTILE:-0.99}" --delay-us "${DELAY_US:-20}"
