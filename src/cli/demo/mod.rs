//! `rafthttp demo`: what the crate is for, in one command. A raft cluster of raft-rs
//! nodes in one process, each behind its own rafthttp transport on loopback, replicates
//! a key-value state machine: N proposals with a live progress bar, a summary table,
//! then the leader is cut off, a new leader takes over, and the old one catches up.

pub mod cluster;
pub mod metrics_server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rafthttp::alloc_count::AllocTotals;
use rafthttp::etcd::requests::put_request;
use rafthttp::io::IoMode;
use rafthttp::raft_rs::{Input, Role};
use rafthttp::transport::Transport;
use rafthttp::usage::cpu_time;
use rafthttp::workload::payload;

use cluster::{key, leader, Node, Progress};

/// Arguments of `rafthttp demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Raft nodes in the cluster (3 or more to see a failover).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Entries to propose.
    #[arg(long, default_value_t = 100_000)]
    pub entries: u64,
    /// Bytes of value per entry.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// I/O backend: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    pub io: IoMode,
    /// Socket options.
    #[command(flatten)]
    pub socket: crate::cli::SocketArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics while running.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Most proposals awaiting commit at once.
    #[arg(long, default_value_t = 2048)]
    pub window: u64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A flag is wrong.
    #[error("{0}")]
    Flag(String),
    /// A transport would not start.
    #[error(transparent)]
    Transport(#[from] rafthttp::transport::TransportError),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The replicas disagree.
    #[error("replicas differ: {0}")]
    Diverged(String),
    /// The metrics server could not bind.
    #[error("--metrics-addr: {0}")]
    Metrics(std::io::Error),
}

fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, DemoError> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            return Err(DemoError::Timeout(what.into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wire(nodes: &[Node]) -> u64 {
    nodes.iter().map(|n| n.transport.wire_bytes()).sum()
}

/// Proposes entries `from..to` through `via`, keeping at most `window` uncommitted, with
/// a progress bar. Returns when the leader has applied them all.
fn propose(
    via: &Node,
    from: u64,
    to: u64,
    size: usize,
    window: u64,
    progress: &Progress,
    label: &str,
) -> Result<(), DemoError> {
    let value = payload(size);
    let bar = ProgressBar::new(to - from);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} entries, {per_sec}, {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let base = progress.applied_by_leader.load(Relaxed);
    let mut last_progress = (Instant::now(), base);
    let mut seq = from;
    loop {
        let applied = progress.applied_by_leader.load(Relaxed) - base;
        bar.set_position(applied);
        if applied >= to - from {
            break;
        }
        if applied != last_progress.1 {
            last_progress = (Instant::now(), applied);
        } else if last_progress.0.elapsed() > Duration::from_secs(10) {
            bar.abandon();
            return Err(DemoError::Timeout(format!("{label}: no commit for 10 s")));
        }
        if seq < to && (seq - from) - applied < window {
            progress.proposed_at[seq as usize]
                .store(progress.epoch.elapsed().as_nanos() as u64, Relaxed);
            let data = put_request(&key(seq), &value);
            if via.inputs.send(Input::Propose(data)).is_err() {
                return Err(DemoError::Timeout("the leader's raft loop stopped".into()));
            }
            seq += 1;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    bar.finish();
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

/// Runs the demo; `Ok` means every phase happened and every replica agrees.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if args.nodes == 0 || args.entries == 0 || args.window == 0 {
        return Err(DemoError::Flag(
            "--nodes, --entries and --window must be positive".into(),
        ));
    }
    let failover_entries = if args.nodes >= 3 {
        (args.entries / 10).clamp(1, 10_000)
    } else {
        0
    };
    let total = args.entries + failover_entries;
    let progress = Arc::new(Progress {
        proposed_at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        latencies: Mutex::new(Vec::with_capacity(total as usize)),
        applied_by_leader: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let nodes = cluster::start(args.nodes, args.io, args.socket.options(), progress.clone())?;
    let io = nodes[0].transport.backend().name();
    println!("rafthttp demo: {} raft-rs nodes, each with its own rafthttp transport on 127.0.0.1 ({io} I/O)", args.nodes);
    println!("(raft logs are in memory: this shows the transport, it is not a durable store)");
    for n in &nodes {
        println!("  node {:x}: http://{}", n.id, n.transport.local_addrs()[0]);
    }
    if let Some(addr) = args.metrics_addr {
        let transports: Vec<Arc<Transport>> = nodes.iter().map(|n| n.transport.clone()).collect();
        let p = progress.clone();
        let render = Arc::new(move || {
            let refs: Vec<&Transport> = transports.iter().map(|t| t.as_ref()).collect();
            let mut s = Transport::metrics_text_all(&refs);
            s += "# HELP rafthttp_demo_committed_entries_total Demo entries applied by the leader.\n# TYPE rafthttp_demo_committed_entries_total counter\n";
            s += &format!(
                "rafthttp_demo_committed_entries_total {}\n",
                p.applied_by_leader.load(Relaxed)
            );
            s
        });
        let bound = metrics_server::serve(addr, render).map_err(DemoError::Metrics)?;
        println!("  metrics: http://{bound}/metrics");
    }

    let _ = nodes[0].inputs.send(Input::Campaign);
    let t = Instant::now();
    let first = wait_until("a first leader", Duration::from_secs(10), || {
        leader(&nodes).map(|n| n.id)
    })?;
    println!(
        "\nnode {first:x} elected leader in {} ms",
        t.elapsed().as_millis()
    );
    let lead = nodes
        .iter()
        .find(|n| n.id == first)
        .expect("leader is a node");

    // Phase 1: throughput.
    let (a0, w0, c0, t0) = (AllocTotals::now(), wire(&nodes), cpu_time(), Instant::now());
    propose(
        lead,
        0,
        args.entries,
        args.size,
        args.window,
        &progress,
        "replicate",
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let (allocs, wire_bytes, cpu) = (
        AllocTotals::now().since(a0),
        wire(&nodes) - w0,
        cpu_time() - c0,
    );
    let mut lat = progress
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    lat.sort_unstable();
    let n = args.entries as f64;
    println!("\n  {:<30} {:>14}", "entries", args.entries);
    println!("  {:<30} {:>14.0}", "entries/s", n / secs);
    println!(
        "  {:<30} {:>14.2}",
        "MB/s (values)",
        n * args.size as f64 / secs / 1e6
    );
    println!(
        "  {:<30} {:>14.3}",
        "commit latency p50 (ms)",
        percentile(&lat, 0.5)
    );
    println!(
        "  {:<30} {:>14.3}",
        "commit latency p99 (ms)",
        percentile(&lat, 0.99)
    );
    println!(
        "  {:<30} {:>14.1}",
        "wire bytes per entry",
        wire_bytes as f64 / n
    );
    println!(
        "  {:<30} {:>14.1}",
        "allocations per entry",
        allocs.allocs as f64 / n
    );
    println!(
        "  {:<30} {:>14.1}",
        "CPU µs per entry (process)",
        cpu.as_secs_f64() * 1e6 / n
    );
    println!("  {:<30} {:>14}", "I/O backend", io);
    println!(
        "  (per entry: the whole process, {} raft-rs nodes and their transports)",
        args.nodes
    );

    // Phase 2: failover.
    let old = first;
    if failover_entries > 0 {
        let old_node = nodes.iter().find(|n| n.id == old).expect("node");
        let old_term = old_node.status().term;
        println!("\ncutting node {old:x} (the leader) off the network ...");
        old_node.transport.pause();
        let t = Instant::now();
        let next = wait_until("a new leader", Duration::from_secs(15), || {
            nodes
                .iter()
                .find(|n| {
                    n.id != old && n.status().role == Role::Leader && n.status().term > old_term
                })
                .map(|n| n.id)
        })?;
        let next_node = nodes.iter().find(|n| n.id == next).expect("node");
        println!(
            "node {next:x} elected leader in {} ms (term {})",
            t.elapsed().as_millis(),
            next_node.status().term
        );
        propose(
            next_node,
            args.entries,
            total,
            args.size,
            args.window,
            &progress,
            "failover",
        )?;
        let behind = next_node
            .status()
            .commit
            .saturating_sub(old_node.status().applied);
        println!("node {old:x} is {behind} entries behind; mending it ...");
        old_node.transport.resume();
        let t = Instant::now();
        wait_until(
            "the old leader to catch up",
            Duration::from_secs(30),
            || (old_node.status().applied >= next_node.status().commit).then_some(()),
        )?;
        println!(
            "node {old:x} caught up in {} ms, now a {:?}",
            t.elapsed().as_millis(),
            old_node.status().role
        );
    }

    // Every replica applies everything, identically.
    let target = nodes.iter().map(|n| n.status().commit).max().unwrap_or(0);
    wait_until("every replica to apply", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| n.status().applied >= target)
            .then_some(())
    })?;
    println!(
        "\n  {:<6} {:<9} {:>5} {:>9} {:>8} {:>18}  streams to peers (msgapp/message)",
        "node", "role", "term", "applied", "keys", "state digest"
    );
    let mut digests = Vec::new();
    for n in &nodes {
        let s = n.status();
        let kv = n.kv.lock().unwrap_or_else(|p| p.into_inner());
        let peers: Vec<String> = n
            .transport
            .stats()
            .peers
            .iter()
            .map(|p| {
                let up = |b: bool| if b { "up" } else { "down" };
                format!(
                    "{:x}:{}/{}{}",
                    p.id,
                    up(p.streams_attached.0),
                    up(p.streams_attached.1),
                    if p.active { "" } else { " (inactive)" }
                )
            })
            .collect();
        println!(
            "  {:<6x} {:<9} {:>5} {:>9} {:>8} {:>18x}  {}",
            n.id,
            format!("{:?}", s.role),
            s.term,
            s.applied,
            kv.len(),
            kv.digest,
            peers.join("  ")
        );
        digests.push((kv.digest, kv.len()));
    }
    if digests.windows(2).any(|w| w[0] != w[1]) {
        return Err(DemoError::Diverged(format!("{digests:?}")));
    }
    if digests.first().is_some_and(|d| d.1 as u64 != total) {
        return Err(DemoError::Diverged(format!(
            "{} keys, expected {total}",
            digests[0].1
        )));
    }
    println!(
        "\nall {} replicas hold the same {total} keys. done.",
        nodes.len()
    );
    drop(nodes);
    Ok(())
}
