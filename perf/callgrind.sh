#!/usr/bin/env bash
# Instructions per message on the codec hot paths, from valgrind's callgrind (stable
# where timing is not: hardware counters are unavailable on these VMs).
#
#   perf/callgrind.sh            # every path
#   perf/callgrind.sh head-parse # one
#
# Each path runs at two counts; (Ir(2N) - Ir(N)) / N cancels start-up and set-up.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
N="${N:-20000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install -y valgrind)" >&2; exit 1; }
(cd "$root" && cargo build --release --quiet --example codec_loop)
exe="$root/target/release/examples/codec_loop"
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(msgappv2-encode-1x64B msgappv2-decode-1x64B msgappv2-encode-100x64B msgappv2-decode-100x64B msgappv2-decode-deferring-100x64B message-encode-heartbeat message-decode-heartbeat head-parse)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
ir() { # path count -> total instructions
	valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$exe" "$1" "$2" >/dev/null 2>&1
	awk '/^summary:/ {print $2}' "$out/cg.$1.$2"
}
printf '%-26s %14s\n' path instr/message
for p in "${paths[@]}"; do
	a="$(ir "$p" "$N")"
	b="$(ir "$p" $((2 * N)))"
	printf '%-26s %14.1f\n' "$p" "$(awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN{print (b-a)/n}')"
done
