#!/usr/bin/env python3
"""Sorts the slowest messages of `rafthttp bench`'s latency rows by what they waited for.

Input: the text of `perf script -F comm,pid,tid,cpu,time,event,trace --ns` over a
system-wide `perf record -k CLOCK_MONOTONIC -e sched:sched_switch -e sched:sched_wakeup`
of the run, and the run's latency logs (`rafthttp bench --latency-log DIR`: one line
per message, `send_monotonic_ns<TAB>latency_ns`). perf/latency_tail.sh makes both.

For each message at or above the row's quantile (`--quantile`, default 0.99), it looks
at what the transport's threads (named `rafthttp-…`) did between the send and the
arrival: each time one of them became ready to run (woken, or preempted while still
runnable), how long it then waited to run, and what its CPU ran instead. A message is put under the first of:

  busy CPU      a transport thread made ready to run in the window (woken, or
                preempted while runnable) waited >= --delay-us to run, on a CPU that
                ran another thread (named, with how it became ready) meanwhile
  idle CPU      ... woken onto a CPU that was idle: the vCPU was slow to come back
  no wake-up    no transport thread was woken or preempted in the window: they were
                running all along (a stall the guest's scheduler did not see: host
                preemption of the vCPU, interrupts)
  prompt        every such thread ran within --delay-us; the time went elsewhere

Usage: latency_tail.py SCHED_TXT LOG.tsv... [--quantile Q] [--delay-us D]
"""

import argparse
import bisect
import collections
import os
import re
import sys

EVENT = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<sec>\d+)\.(?P<ns>\d+):\s+sched:(?P<event>sched_\w+):\s+(?P<rest>.*)$"
)
FIELD = re.compile(r"(\w+)=(\S+)")


def parse_events(path):
    """Wake-ups and switches, in time order: (t_ns, cpu, kind, fields)."""
    events = []
    with open(path) as f:
        for line in f:
            m = EVENT.match(line)
            if not m:
                continue
            t = int(m["sec"]) * 1_000_000_000 + int(m["ns"].ljust(9, "0")[:9])
            fields = dict(FIELD.findall(m["rest"]))
            events.append((t, int(m["cpu"]), m["event"], fields))
    events.sort(key=lambda e: e[0])
    return events


def transport_thread(comm):
    return comm.startswith("rafthttp-")


def waits_to_run(events):
    """Each time a transport thread became ready to run: woken (sched_wakeup), or
    preempted while runnable (switched out in state R). Returns (t, tid, comm, cpu,
    delay_ns, running_comm, how): running_comm is what the CPU ran instead at that
    moment ("idle" for the idle task, "?" if unknown), delay_ns the time until the
    thread was switched in (None if not within the trace), how "woken" or "preempted"."""
    current = {}  # cpu -> comm running, from the switches seen so far
    pending = {}  # tid -> index in out, for waits not yet ended
    out = []
    for t, cpu, kind, f in events:
        if kind == "sched_switch":
            nxt = "idle" if f.get("next_pid") == "0" else f.get("next_comm", "?")
            current[cpu] = nxt
            tid = f.get("next_pid")
            if tid in pending:
                i = pending.pop(tid)
                w = out[i]
                out[i] = w[:4] + (t - w[0],) + w[5:]
            prev = f.get("prev_comm", "")
            if transport_thread(prev) and f.get("prev_state", "").startswith("R"):
                pending[f.get("prev_pid")] = len(out)
                out.append((t, f.get("prev_pid"), prev, cpu, None, nxt, "preempted"))
        elif kind == "sched_wakeup":
            comm = f.get("comm", "")
            if not transport_thread(comm):
                continue
            target = int(f.get("target_cpu", "-1"))
            tid = f.get("pid")
            pending[tid] = len(out)
            out.append((t, tid, comm, target, None, current.get(target, "?"), "woken"))
    return out


def load_log(path):
    samples = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            sent, lat = line.split()
            samples.append((int(sent), int(lat)))
    return samples


def quantile(sorted_vals, q):
    i = max(1, min(len(sorted_vals), int(-(-q * len(sorted_vals) // 1)))) - 1
    return sorted_vals[i]


def classify(samples, wakeups, q, delay_ns):
    times = [w[0] for w in wakeups]
    lat_sorted = sorted(s[1] for s in samples)
    cut = quantile(lat_sorted, q)
    tail = [s for s in samples if s[1] >= cut]
    kinds = collections.Counter()
    lat_by_kind = collections.defaultdict(list)
    busy_with = collections.Counter()
    for sent, lat in tail:
        i, j = bisect.bisect_left(times, sent), bisect.bisect_right(times, sent + lat)
        window = wakeups[i:j]
        slow = [w for w in window if w[4] is not None and w[4] >= delay_ns]
        if not window:
            kind = "no wake-up"
        elif slow:
            worst = max(slow, key=lambda w: w[4])
            if worst[5] == "idle":
                kind = "idle CPU"
            else:
                kind = "busy CPU"
                busy_with[f"{worst[5]} ({worst[6]})"] += 1
        else:
            kind = "prompt"
        kinds[kind] += 1
        lat_by_kind[kind].append(lat)
    return lat_sorted, cut, tail, kinds, lat_by_kind, busy_with


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sched")
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--quantile", type=float, default=0.99)
    ap.add_argument("--delay-us", type=float, default=20.0)
    a = ap.parse_args()
    wakeups = waits_to_run(parse_events(a.sched))
    if not wakeups:
        sys.exit("no wake-ups of rafthttp-* threads in the trace (was it system-wide, "
                 "with sched:sched_wakeup and sched:sched_switch?)")
    delay_ns = int(a.delay_us * 1000)
    for path in a.logs:
        samples = load_log(path)
        if not samples:
            print(f"{os.path.basename(path)}: no samples")
            continue
        lat_sorted, cut, tail, kinds, lat_by_kind, busy_with = classify(
            samples, wakeups, a.quantile, delay_ns)
        us = lambda ns: ns / 1000
        print(f"{os.path.basename(path)}: {len(samples)} messages, p50 "
              f"{us(quantile(lat_sorted, 0.5)):.1f} us, p90 {us(quantile(lat_sorted, 0.9)):.1f}, "
              f"p99 {us(quantile(lat_sorted, 0.99)):.1f}; "
              f"{len(tail)} at or above the {a.quantile:g} quantile ({us(cut):.1f} us):")
        for kind in ("busy CPU", "idle CPU", "no wake-up", "prompt"):
            n = kinds.get(kind, 0)
            if n == 0:
                continue
            lats = sorted(lat_by_kind[kind])
            line = (f"  {kind:<11} {n:>5} ({100 * n / len(tail):5.1f}%)  median "
                    f"{us(lats[len(lats) // 2]):7.1f} us")
            if kind == "busy CPU":
                line += "  running: " + ", ".join(f"{c} {k}" for c, k in busy_with.most_common(3))
            print(line)
    late = [w for w in wakeups if w[4] is not None and w[4] >= delay_ns]
    print(f"whole trace: transport threads made ready to run {len(wakeups)} times "
          f"({sum(1 for w in wakeups if w[6] == 'preempted')} of them preempted); "
          f"{len(late)} waited >= {a.delay_us:g} us to run, "
          f"{sum(1 for w in late if w[5] != 'idle')} of them on a busy CPU")


if __name__ == "__main__":
    main()
