#!/usr/bin/env bash
# A flamegraph of `rafthttp bench` (or any rafthttp command) from perf's software
# cpu-clock event (hardware events are unavailable on these VMs), rendered with
# inferno (crates.io), which is installed with cargo if missing.
#
#   perf/flamegraph.sh                                   # msgapp 1x64B on io_uring
#   OUT=epoll.svg perf/flamegraph.sh bench --io epoll --only "msgapp 1x64B" --nsnap 0 --npipe 0
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
OUT="${OUT:-$root/target/flamegraph.svg}"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(bench --io uring --only "msgapp 1x64B" --nsnap 0 --npipe 0)
command -v perf >/dev/null || { echo "perf is needed (apt-get install -y linux-perf)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null; then
	cargo install --locked --quiet inferno
fi
(cd "$root" && cargo build --release --quiet)
data="$(mktemp)"
trap 'rm -f "$data"' EXIT
perf record -e cpu-clock -F 1999 --call-graph dwarf,16384 -o "$data" -- "$root/target/release/rafthttp" "${args[@]}" >/dev/null
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$OUT"
echo "flamegraph: $OUT"
