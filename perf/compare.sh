#!/usr/bin/env bash
# Runs the Go anchor (etcd 3.4.23's rafthttp, ../shared/anchors/etcd-go) and
# `rafthttp bench` on both I/O backends back to back on this machine, measures a
# single-stream iperf3 loopback ceiling in the same run, and prints a ratio table
# against the targets of issue #6.
#
#   perf/compare.sh                 # 3 runs of each side, medians (~4 min)
#   RUNS=1 QUICK=1 perf/compare.sh  # smoke test (~30 s)
#   KEEP_DIR=out perf/compare.sh    # keep every JSON report in ./out
#   TCP_CC=cubic perf/compare.sh    # everything under another TCP congestion control
#
# Environment: RUNS (3), QUICK (0), IPERF_PORT (5201), ANCHOR (path of the anchor),
# BENCH_ARGS (more flags for rafthttp bench, e.g. "--inline", or "--io-threads own"
# to give each member its own I/O thread instead of the shared one), TCP_CC (a TCP
# congestion control to set system-wide for the whole comparison, Go, rafthttp and iperf3
# alike, and to restore after; root only).
#
# The machine's congestion control matters on loopback: with BBR and no `fq` qdisc, TCP
# paces in the kernel with a timer per burst, and that caps one stream at a third of
# what it carries with CUBIC (docs/performance.md, ninth session). The machine line says
# which one the figures were measured under.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
anchor="${ANCHOR:-$root/../shared/anchors/etcd-go}"
RUNS="${RUNS:-3}"
QUICK="${QUICK:-0}"
IPERF_PORT="${IPERF_PORT:-5201}"
work="$(mktemp -d "${TMPDIR:-/tmp}/rafthttp-compare.XXXXXX")"
cc_was="$(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo unknown)"
cleanup() {
	rm -rf "$work"
	if [ -n "${TCP_CC:-}" ] && [ "$cc_was" != unknown ]; then
		sysctl -qw net.ipv4.tcp_congestion_control="$cc_was" || true
	fi
}
trap cleanup EXIT
if [ -n "${TCP_CC:-}" ]; then
	if ! sysctl -qw net.ipv4.tcp_congestion_control="$TCP_CC"; then
		echo "compare.sh: cannot set the TCP congestion control to $TCP_CC (root? available: $(sysctl -n net.ipv4.tcp_available_congestion_control 2>/dev/null))" >&2
		exit 2
	fi
fi

if ! command -v iperf3 >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	$sudo apt-get install -y -qq iperf3 >/dev/null
fi

echo "== building rafthttp (release)" >&2
(cd "$root" && cargo build --release --quiet)
bench="$root/target/release/rafthttp"
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)

# A VM whose balloon reports free memory to the host (the order printed; none: no page
# reporting in this kernel) faults on
# the host when that memory is touched again: what a row writes into new memory (the
# snapshot row's files in /dev/shm) depends on what ran before it (docs/performance.md).
reporting="$(cat /sys/module/page_reporting/parameters/page_reporting_order 2>/dev/null || echo none)"
echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), TCP congestion control $(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo unknown), loopback qdisc $(tc qdisc show dev lo 2>/dev/null | awk '{print $2; exit}'), free page reporting order $reporting" >&2
# Interleave the sides run by run, so that drift on a shared machine hits both.
for i in $(seq 1 "$RUNS"); do
	echo "== round $i/$RUNS: Go anchor" >&2
	(cd "$anchor" && QUICK="$QUICK" RUNS=1 IPERF=0 KEEP_DIR="$work/go$i" ./run.sh >/dev/null)
	mv "$work/go$i/run1.json" "$work/go-$i.json"
	for io in uring epoll; do
		echo "== round $i/$RUNS: rafthttp bench --io $io" >&2
		# shellcheck disable=SC2086
		"$bench" bench --io "$io" "${quick[@]}" ${BENCH_ARGS:-} --json "$work/$io-$i.json" >/dev/null
	done
done

echo "== iperf3 single-stream loopback ceiling" >&2
iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" >/dev/null 2>&1 &
sleep 1
gbps="$(iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t 5 -f g 2>&1 | awk '/receiver/ {print $(NF-2)}')"
wait || true

if [ -n "${KEEP_DIR:-}" ]; then
	mkdir -p "$KEEP_DIR"
	cp "$work"/*.json "$KEEP_DIR"/
fi

python3 "$here/ratios.py" --iperf-gbps "${gbps:-0}" \
	--tcp-cc "$(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo unknown)" "$work"
