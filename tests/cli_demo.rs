//! `rafthttp demo`, run as a newcomer would: it must elect a leader, replicate, fail
//! over, let the old leader catch up, agree on every replica, exit 0, and serve
//! `/metrics` while it runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn demo_replicates_fails_over_and_serves_metrics() {
    for io in ["epoll", "uring"] {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
            .args([
                "demo",
                "--entries",
                "20000",
                "--size",
                "100",
                "--io",
                io,
                "--metrics-addr",
                &addr,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Scrape while it runs (the failover alone takes over a second), until a page
        // shows node 1's stream to node 2 up: the first pages can come before the
        // members have dialed each other (all counters 0, no peer active yet).
        let active = "etcd_network_active_peers{Local=\"1\",Remote=\"2\"} 1";
        let end = Instant::now() + Duration::from_secs(20);
        let (mut metrics, mut last) = (None, None);
        while metrics.is_none() && Instant::now() < end {
            last = scrape(&addr).filter(|m| m.contains("rafthttp_demo_committed_entries_total"));
            metrics = last.clone().filter(|m| m.contains(active));
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{io}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = metrics.unwrap_or_else(|| match last {
            None => panic!("{io}: /metrics never answered"),
            Some(page) => panic!("{io}: /metrics never showed node 2 active: {page}"),
        });
        assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
        assert!(
            m.contains("etcd_network_peer_sent_bytes_total{Local=\"1\",To=\"2\"}"),
            "{m}"
        );
        assert!(stdout.contains(&format!("({io} I/O)")), "{stdout}");
        assert!(stdout.contains("elected leader in"), "{stdout}");
        assert!(stdout.contains("caught up in"), "{stdout}");
        assert!(
            stdout.contains("all 3 replicas hold the same 22000 keys"),
            "{stdout}"
        );
        for row in [
            "entries/s",
            "commit latency p99 (ms)",
            "wire bytes per entry",
            "allocations per entry",
        ] {
            assert!(stdout.contains(row), "{row} missing:\n{stdout}");
        }
    }
}

#[test]
fn demo_refuses_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .args(["demo", "--nodes", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be positive"));
}

#[path = "../examples/embed_raft_rs.rs"]
mod embed_raft_rs;

/// The embedding example (`examples/embed_raft_rs.rs`, compiled in here): three
/// hand-written raft-rs loops over rafthttp must each apply the leader's ten entries.
#[test]
fn embedding_example_commits_on_every_node() {
    let nodes = embed_raft_rs::three_nodes(10).unwrap();
    assert_eq!(nodes.len(), 3);
    let first = &nodes[0].1;
    assert_eq!(first.len(), 10);
    for (id, applied) in &nodes {
        assert_eq!(applied, first, "node {id} applied something else");
    }
    assert!(first[0].starts_with("entry 0 from "), "{first:?}");
}
