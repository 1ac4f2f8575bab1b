//! The latency-tail tooling: `rafthttp bench --latency-log` writes one sample per
//! measured message, on the clock perf stamps its events with, consistent with the
//! row's reported quantiles; and `perf/latency_tail.py` sorts a tail by cause.

use std::path::{Path, PathBuf};
use std::process::Command;

use rafthttp::usage::monotonic_ns;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rafthttp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn samples(path: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# send_monotonic_ns\tlatency_ns"));
    lines
        .map(|l| {
            let (a, b) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (a.parse().expect("send time"), b.parse().expect("latency"))
        })
        .collect()
}

#[test]
fn the_latency_log_has_every_measured_message_on_the_monotonic_clock() {
    let dir = temp_dir("latency-log");
    let json = dir.join("bench.json");
    let before = monotonic_ns();
    let out = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .args([
            "bench", "--io", "epoll", "--only", "latency", "--nlat", "1500",
        ])
        .args(["--npipe", "0", "--nsnap", "0", "--latency-log"])
        .arg(dir.join("lat"))
        .arg("--json")
        .arg(&json)
        .env_remove("RAFTHTTP_IO")
        .output()
        .expect("run rafthttp bench");
    let after = monotonic_ns();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON")).expect("JSON");
    for (row, file) in [
        ("latency msgapp 1x64B", "latency_msgapp_1x64B.tsv"),
        ("latency heartbeat", "latency_heartbeat.tsv"),
    ] {
        let s = samples(&dir.join("lat").join(file));
        assert_eq!(s.len(), 1500, "{row}: one sample per measured message");
        assert!(
            s.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
            "{row}: each message is sent after the previous one arrived"
        );
        let (first, last) = (s[0].0, s[s.len() - 1].0);
        assert!(
            before < first && last < after,
            "{row}: send times {first}..{last} not within the run {before}..{after}"
        );
        assert!(s.iter().all(|&(_, lat)| lat > 0), "{row}: a zero latency");
        // The row's p50 is the same sample, by the anchor's quantile rule.
        let mut lat: Vec<u64> = s.iter().map(|x| x.1).collect();
        lat.sort_unstable();
        let p50 = lat[lat.len().div_ceil(2) - 1] as f64 / 1e3;
        let r = report["results"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == row))
            .unwrap_or_else(|| panic!("{row} missing in {report}"));
        let reported = r["p50_us"].as_f64().expect("p50_us");
        assert!(
            (p50 - reported).abs() < 1e-6,
            "{row}: log p50 {p50} µs, report {reported}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A perf script line, as `perf script -F comm,pid,tid,cpu,time,event,trace --ns`
/// prints it.
fn event(comm: &str, tid: u32, cpu: u32, t_ns: u64, what: &str) -> String {
    format!(
        "{comm:>16} 10/{tid} [{cpu:03}] {}.{:09}:         sched:{what}\n",
        t_ns / 1_000_000_000,
        t_ns % 1_000_000_000
    )
}

fn switch(cpu: u32, t: u64, prev: (&str, u32, &str), next: (&str, u32)) -> String {
    event(
        prev.0,
        prev.1,
        cpu,
        t,
        &format!(
            "sched_switch: prev_comm={} prev_pid={} prev_prio=120 prev_state={} ==> next_comm={} next_pid={} next_prio=120",
            prev.0, prev.1, prev.2, next.0, next.1
        ),
    )
}

fn wakeup(by: (&str, u32), cpu: u32, t: u64, comm: &str, tid: u32, target: u32) -> String {
    event(
        by.0,
        by.1,
        cpu,
        t,
        &format!("sched_wakeup: comm={comm} pid={tid} prio=120 target_cpu={target:03}"),
    )
}

#[test]
fn the_tail_is_sorted_by_what_the_transport_threads_waited_for() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: python3 is not installed (perf/latency_tail.py needs it)");
        return;
    }
    let dir = temp_dir("latency-tail");
    const US: u64 = 1000;
    let sender = ("rafthttp", 10);
    // 96 fast messages, then four slow ones, one of each kind, 1 ms apart.
    let mut log = String::from("# send_monotonic_ns\tlatency_ns\n");
    let base = 5_000_000_000u64;
    for i in 0..96 {
        log += &format!("{}\t{}\n", base + i * 10 * US, 5 * US);
    }
    let (busy, quiet, idle, prompt) = (
        base + 1000 * US,
        base + 2000 * US,
        base + 3000 * US,
        base + 4000 * US,
    );
    log += &format!("{busy}\t{}\n{quiet}\t{}\n", 80 * US, 70 * US);
    log += &format!("{idle}\t{}\n{prompt}\t{}\n", 75 * US, 60 * US);
    let mut trace = String::new();
    // CPU 1 runs the sender; CPU 0 is idle.
    trace += &switch(1, base - 10 * US, ("swapper/1", 0, "R"), sender);
    trace += &switch(0, base - 10 * US, ("swapper/0", 0, "R"), ("swapper/0", 0));
    // Busy: the I/O thread is woken onto the sender's CPU and runs 54 µs later.
    trace += &wakeup(sender, 1, busy + US, "rafthttp-io", 11, 1);
    trace += &switch(
        1,
        busy + 55 * US,
        ("rafthttp", 10, "S"),
        ("rafthttp-io", 11),
    );
    trace += &switch(1, busy + 79 * US, ("rafthttp-io", 11, "S"), sender);
    // Idle: woken onto idle CPU 0, which takes 40 µs to run it.
    trace += &wakeup(sender, 1, idle + US, "rafthttp-io", 11, 0);
    trace += &switch(
        0,
        idle + 41 * US,
        ("swapper/0", 0, "R"),
        ("rafthttp-io", 11),
    );
    trace += &switch(
        0,
        idle + 74 * US,
        ("rafthttp-io", 11, "S"),
        ("swapper/0", 0),
    );
    // Prompt: woken onto CPU 0 and running 2 µs later.
    trace += &wakeup(sender, 1, prompt + US, "rafthttp-io", 11, 0);
    trace += &switch(
        0,
        prompt + 3 * US,
        ("swapper/0", 0, "R"),
        ("rafthttp-io", 11),
    );
    std::fs::write(dir.join("sched.txt"), trace).expect("write trace");
    std::fs::write(dir.join("row.tsv"), log).expect("write log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/latency_tail.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.join("sched.txt"))
        .arg(dir.join("row.tsv"))
        .args(["--quantile", "0.97"])
        .output()
        .expect("run latency_tail.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |kind: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(kind))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(text.contains("4 at or above the 0.97 quantile"), "{text}");
    for kind in ["busy CPU", "idle CPU", "no wake-up", "prompt"] {
        assert_eq!(count(kind), 1, "{kind}:\n{text}");
    }
    assert!(text.contains("running: rafthttp (woken) 1"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
