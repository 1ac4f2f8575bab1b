#!/usr/bin/env python3
"""Reads the JSON reports perf/compare.sh collected (go-N.json, uring-N.json,
epoll-N.json; the anchor's schema on both sides), takes medians per row, and prints
our figures as ratios of Go's with the issue #6 targets."""
import argparse
import glob
import json
import os
import statistics

TARGETS = {
    # row: (metric, wanted ratio ours/go, or a description)
    "msgapp 1x64B": [("msgs_per_sec", 10.0), ("cpu_us_per_msg", 0.1)],
    "heartbeat (message stream)": [("msgs_per_sec", 8.0)],
    "msgapp 1x1KiB": [("msgs_per_sec", 3.0)],
    "msgapp 100x64B (batched)": [("entries_per_sec", 5.0)],
    "latency msgapp 1x64B": [("p50_us", 1.0), ("p99_us", 0.4)],
    "latency heartbeat": [("p50_us", 1.0), ("p99_us", 0.4)],
    "snapshot 64 MiB": [("payload_mb_per_sec", 1.4)],
    "pipeline msgapp 1x64B": [("msgs_per_sec", 3.0)],
}
LOWER_IS_BETTER = {"cpu_us_per_msg", "p50_us", "p99_us"}
STREAM_ROWS = ("msgapp", "heartbeat", "latency")
# A CPU pair whose cache-line round trip is over this is "far" (on the AMD EPYC VM of
# docs/performance.md: 30-80 ns near, 310-440 ns far).
FAR_NS = 150.0


def load(d, side):
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, f"{side}-*.json")))]
    rows = {}
    for r in runs:
        for row in r["results"]:
            rows.setdefault(row["name"], []).append(row)
    med = {}
    for name, rs in rows.items():
        m = dict(rs[0])
        for k, v in rs[0].items():
            if isinstance(v, (int, float)):
                m[k] = statistics.median(x.get(k, 0) for x in rs)
        for k in ("report_unreachable", "send_failures", "recv_failures", "missing"):
            m[k] = max(x.get(k, 0) for x in rs)
        # Runs of this row measured while the host had the two CPUs far apart (a cache
        # line's round trip over FAR_NS before or after it; rafthttp bench's cpu_pair_ns).
        m["far_runs"] = sum(1 for x in rs if max(x.get("cpu_pair_ns", [0, 0])) > FAR_NS)
        m["runs"] = len(rs)
        med[name] = m
    return med, len(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--iperf-gbps", type=float, default=0.0)
    ap.add_argument("--tcp-cc", default="unknown", help="the TCP congestion control measured under")
    a = ap.parse_args()
    go, n = load(a.dir, "go")
    sides = {io: load(a.dir, io)[0] for io in ("uring", "epoll")}
    ceiling = a.iperf_gbps * 1000 / 8  # MB/s
    print(f"\nMedians of {n} interleaved runs per side; loopback iperf3 ceiling {ceiling:.0f} MB/s "
          f"({a.iperf_gbps} Gbit/s, one stream); TCP congestion control {a.tcp_cc}\n")
    # Where the host had placed the two CPUs during each of our runs (rafthttp bench's
    # cpu_pair_rtt_ns, before/after its rows): our stream rows run 2.5-4x slower per
    # message when a cache line takes ~330 ns between them than at ~65 ns.
    for io in ("uring", "epoll"):
        trips = [json.load(open(f))["meta"].get("cpu_pair_rtt_ns", "?")
                 for f in sorted(glob.glob(os.path.join(a.dir, f"{io}-*.json")))]
        print(f"CPU-pair cache-line round trip, ns, before/after each {io} run: {', '.join(trips)}")
    print()
    hdr = f"{'row':<27} {'metric':<19} {'Go':>10} {'uring':>10} {'x Go':>6} {'epoll':>10} {'x Go':>6}  target        uring"
    print(hdr)
    print("-" * len(hdr))
    for name, g in go.items():
        checks = list(TARGETS.get(name, []))
        if name == "msgapp 1x16KiB":
            checks = [("payload_mb_per_sec", None)]
        for metric, want in checks:
            gv = g.get(metric, 0) or float("nan")
            vals = [s.get(name, {}).get(metric, float("nan")) for s in sides.values()]
            ratios = [v / gv if gv else float("nan") for v in vals]
            if want is None:  # 16 KiB: against the iperf3 ceiling
                frac = vals[0] / ceiling if ceiling else float("nan")
                verdict = "ok" if frac >= 0.9 else "MISS"
                tgt = ">= 90% iperf3"
                extra = f"{frac*100:.0f}% of ceiling"
            elif metric in LOWER_IS_BETTER:
                verdict = "ok" if ratios[0] <= want else "MISS"
                tgt = f"<= {want:g}x Go"
                extra = ""
            else:
                verdict = "ok" if ratios[0] >= want else "MISS"
                tgt = f">= {want:g}x Go"
                extra = ""
            print(f"{name:<27} {metric:<19} {gv:>10.1f} {vals[0]:>10.1f} {ratios[0]:>6.2f} {vals[1]:>10.1f} {ratios[1]:>6.2f}  {tgt:<13} {verdict} {extra}")
    print()
    print(f"{'row':<27} {'allocs/msg Go':>13} {'uring':>7} {'epoll':>7} {'rss MiB uring':>14} {'epoll':>7}  {'far runs u/e':>12}  drops(u/s/r/miss) uring, epoll")
    for name, g in go.items():
        u, e = sides["uring"].get(name, {}), sides["epoll"].get(name, {})
        drops = lambda r: "/".join(str(int(r.get(k, 0))) for k in ("report_unreachable", "send_failures", "recv_failures", "missing"))
        zero = "" if not name.startswith(STREAM_ROWS) else (" ok" if u.get("allocs_per_msg", 1) < 0.005 else " MISS (target 0.00)")
        print(f"{name:<27} {g.get('allocs_per_msg', 0):>13.2f} {u.get('allocs_per_msg', 0):>7.2f} {e.get('allocs_per_msg', 0):>7.2f} "
              f"{u.get('peak_rss_kib', 0)/1024:>14.1f} {e.get('peak_rss_kib', 0)/1024:>7.1f}  "
              f"{str(u.get('far_runs', 0)) + '/' + str(e.get('far_runs', 0)):>12}  {drops(u)}, {drops(e)}{zero}")
    print(f"\nfar runs: our runs of the row measured while a cache line took over {FAR_NS:.0f} ns between the two CPUs "
          "(the host had moved them apart); those run 2.5-4x slower per message (docs/performance.md)")


if __name__ == "__main__":
    main()
