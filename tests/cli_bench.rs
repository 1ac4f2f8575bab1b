//! `rafthttp bench` end to end: its JSON report has the anchor's schema, nothing is
//! dropped, and in the default configuration (process on a worker thread, as etcd) the
//! stream rows allocate nothing per message in steady state on either driver: small and
//! large single entries (16 KiB payloads go out by reference, in vectored writes),
//! 100-entry batches (whose slices pin hundreds of read buffers in a deep queue), and
//! heartbeats; and the latency rows, one message at a time. Counts, not times: the
//! allocation figure is exact for a run.
//!
//! Steady state means once the pools have grown to what the row can need: each stream
//! row first fills the receiver's queue to the window once (the bench's priming, on by
//! default), then warms up for 300,000 messages. Without the priming the queue's pools
//! grow whenever a row first runs deeper than before, which on a busy machine happens
//! long after any fixed warm-up (batched: 0.002–0.012 per message after 300,000 messages
//! of warm-up, which failed this test's old 0.01 bound); with it, 0.0000–0.0012 over
//! eight runs of these rows. The bound is the target's 0.00 at two decimals.

use std::process::Command;

/// Runs `rafthttp bench` on `io` for the 1x64B, 1 KiB, 16 KiB, batched and heartbeat
/// rows, each primed and after 300,000 messages of warm-up, and the two latency rows (the anchor's
/// 10,000 round trips each, which a probe of the prober may land in), and returns the
/// JSON report.
fn bench(io: &str, dir: &std::path::Path) -> serde_json::Value {
    let json = dir.join(format!("bench-{io}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .args([
            "bench",
            "--io",
            io,
            "--only",
            "msgapp 1x64B",
            "--only",
            "1x1KiB",
            "--only",
            "1x16KiB",
            "--only",
            "batched",
            "--only",
            "heartbeat",
            "--only",
            "latency",
            "--n16k",
            "200000",
            "--nbatch",
            "100000",
            "--n64",
            "1000000",
            "--n1k",
            "300000",
            "--nhb",
            "1000000",
            "--warm",
            "300000",
            "--nlat",
            "10000",
            "--npipe",
            "0",
            "--nsnap",
            "0",
            "--json",
        ])
        .arg(&json)
        .env_remove("RAFTHTTP_IO")
        .output()
        .expect("run rafthttp bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    serde_json::from_str(&text).expect("valid JSON")
}

fn check(io: &str) {
    let dir = tempfile_dir(io);
    let report = bench(io, &dir);
    assert_eq!(report["meta"]["io"], io, "{report}");
    assert_eq!(report["meta"]["warm"], "300000", "{report}");
    assert_eq!(report["meta"]["prime"], "true", "{report}");
    let rows = report["results"].as_array().expect("results");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "msgapp 1x64B",
            "msgapp 1x1KiB",
            "msgapp 1x16KiB",
            "msgapp 100x64B (batched)",
            "heartbeat (message stream)",
            "latency msgapp 1x64B",
            "latency heartbeat"
        ]
    );
    for r in rows {
        let name = r["name"].as_str().unwrap_or("?");
        for key in [
            "msgs_per_sec",
            "entries_per_sec",
            "payload_mb_per_sec",
            "allocs_per_msg",
            "cpu_us_per_msg",
            "wire_bytes_per_msg",
            "peak_rss_kib",
        ] {
            assert!(r[key].is_number(), "{name}: {key} missing in {r}");
        }
        for key in [
            "report_unreachable",
            "send_failures",
            "recv_failures",
            "missing",
        ] {
            assert_eq!(r[key].as_f64(), Some(0.0), "{name}: {key} in {r}");
        }
        if name.starts_with("latency") {
            // One message at a time: between them the receive worker sleeps, or looks
            // for the next one itself (lingering, when apart from the I/O thread), and
            // every sleep and look is counted.
            let (sleeps, msgs) = (r["worker_sleeps"].as_u64(), r["msgs"].as_u64());
            let (sleeps, msgs) = (sleeps.unwrap_or(0), msgs.unwrap_or(0));
            let looks = r["worker_looks"].as_u64().unwrap_or(0);
            assert!(
                msgs > 0 && sleeps + looks >= msgs / 2,
                "{name} on {io}: the worker slept {sleeps} times and looked {looks} times for {msgs} lone messages"
            );
            // Each lone message makes its reader linger, and each linger ends in the
            // next message found or in a wait through the driver.
            let hits = r["linger_hits"].as_u64().unwrap_or(0);
            let misses = r["linger_misses"].as_u64().unwrap_or(0);
            assert!(
                hits + misses + 1 >= msgs,
                "{name} on {io}: {hits} lingers found the next message and {misses} ran out, for {msgs} lone messages"
            );
        }
        let allocs = r["allocs_per_msg"].as_f64().unwrap_or(f64::NAN);
        assert!(
            allocs < 0.005,
            "{name} on {io}: {allocs} allocations per message in steady state"
        );
    }
    // The first row's priming grew the receiver's pools (the ones after it may find
    // them grown already): a priming that filled nothing would leave this at 0.
    let primed = rows[0]["prime_allocs"].as_u64().unwrap_or(0);
    assert!(primed > 0, "{}: nothing grew while priming", names[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rafthttp-cli-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One test, the drivers one after the other: two benches at once on a small machine
/// would each see the other's noise (deeper queues, so more pages of shells to grow).
#[test]
fn stream_rows_allocate_nothing_per_message_by_default() {
    check("epoll");
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here (epoll was checked)");
        return;
    }
    check("uring");
}
