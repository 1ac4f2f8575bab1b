//! `rafthttp bench`: the Go anchor's workloads (`shared/anchors/etcd-go`), with the same
//! semantics, on our transport: two members on loopback, one message per `send` from
//! one thread, a pacing window so that nothing drops (drops still counted), the same
//! rows, columns and JSON schema, so that `perf/compare.sh` reads both with one parser.

pub mod cpu_pair;
pub mod harness;
pub mod report;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rafthttp::io::{choose_backend, IoMode, IoThread, ThreadScheduling};
use rafthttp::workload::AppSource;

use harness::{
    latency, member, snapshots, throughput, url, wait_probed, wait_streams, LatencySample,
    MemberSetup, Source,
};
use rafthttp::transport::{QueueSizes, TransportError};
use report::{table, Report, Row, LEGEND};

/// Arguments of `rafthttp bench` (counts default to the anchor's).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// I/O backend: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    pub io: IoMode,
    /// Write the results as JSON (the anchor's schema) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Ten times fewer messages (a smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Run only the rows whose name contains this (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Most messages in flight (sent − processed) on streams; below the 4096-slot queues.
    #[arg(long, default_value_t = 3000)]
    pub window: u64,
    /// Messages for msgapp 1x64B.
    #[arg(long, default_value_t = 2_000_000)]
    pub n64: u64,
    /// Messages for msgapp 1x1KiB.
    #[arg(long, default_value_t = 1_000_000)]
    pub n1k: u64,
    /// Messages for msgapp 1x16KiB.
    #[arg(long, default_value_t = 200_000)]
    pub n16k: u64,
    /// Messages for msgapp 100x64B.
    #[arg(long, default_value_t = 100_000)]
    pub nbatch: u64,
    /// Messages for heartbeat.
    #[arg(long, default_value_t = 2_500_000)]
    pub nhb: u64,
    /// Round trips for each latency row.
    #[arg(long, default_value_t = 10_000)]
    pub nlat: u64,
    /// Messages for the pipeline row (0 skips it).
    #[arg(long, default_value_t = 60_000)]
    pub npipe: u64,
    /// Snapshots to send (0 skips the row).
    #[arg(long, default_value_t = 5)]
    pub nsnap: u64,
    /// Process received messages on the I/O thread (`Raft::inline`) instead of handing
    /// them to a worker thread, as an application whose `process` never blocks may.
    /// Off by default, which matches the anchor (etcd hands them to a goroutine).
    #[arg(long)]
    pub inline: bool,
    /// Scheduling policy of the transports' I/O threads: batch (the default: they do
    /// not preempt the thread that wakes them to send) or normal (the kernel's default).
    #[arg(long, default_value = "batch")]
    pub sched: ThreadScheduling,
    /// Microseconds a stream reader looks for the next message itself after a lone one
    /// before it waits through the driver (`Config::linger`; 0: it waits at once).
    /// Unset: the transport's default (`io::DEFAULT_LINGER`, 30)
    #[arg(long = "linger-us")]
    pub linger_us: Option<u64>,
    /// Never write a message from the sending thread: every message crosses to the I/O
    /// thread's writer (`Config::direct_send` off). By default a message sent on an idle
    /// stream is written by the sending thread itself.
    #[arg(long)]
    pub no_direct_send: bool,
    /// I/O threads: shared (the default: the members run on one I/O thread, as the
    /// anchor's two transports run on one Go runtime) or own (each member starts its
    /// own, as a transport does unless given one).
    #[arg(long, default_value = "shared")]
    pub io_threads: IoThreads,
    /// Snapshot size in MiB.
    #[arg(long, default_value_t = 64)]
    pub snapmib: u64,
    /// Write each latency row's samples to DIR/<row>.tsv: per measured message, the
    /// time it was sent (CLOCK_MONOTONIC ns, the clock `perf record -k CLOCK_MONOTONIC`
    /// stamps events with) and its latency in ns. `perf/latency_tail.sh` reads them.
    #[arg(long, value_name = "DIR")]
    pub latency_log: Option<PathBuf>,
    /// Warm-up messages before each throughput row is measured. Unset: the anchor's
    /// rule (a tenth of the row's messages, at most 2,000); more measures a longer
    /// steady state (a deep queue grows its pools for a while).
    #[arg(long)]
    pub warm: Option<u64>,
    /// Skip filling each stream row's receive queue to the window once before its
    /// warm-up. By default the receiver's worker is held while a window of messages
    /// arrives, so that its queue's pools grow to the deepest the row can reach before it
    /// is measured (their growth is then in the row's `prime_allocs`); with this flag they
    /// grow in the row whenever it reaches a new depth.
    #[arg(long)]
    pub no_prime: bool,
    /// Bytes of received messages waiting for a member's worker past which its stream
    /// readers stop reading until half are processed (`QueueSizes::recv_backlog`; 0:
    /// never, as etcd). Unset: the transport's default (64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub recv_backlog: Option<usize>,
    /// Socket options.
    #[command(flatten)]
    pub socket: crate::cli::SocketArgs,
}

impl BenchArgs {
    /// The stream readers' linger: `--linger-us`, or the transport's default.
    pub fn linger(&self) -> Duration {
        self.linger_us
            .map_or(rafthttp::io::DEFAULT_LINGER, Duration::from_micros)
    }
}

/// Why the bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag is wrong.
    #[error("{0}")]
    Flag(String),
    /// A transport would not start.
    #[error(transparent)]
    Transport(#[from] rafthttp::transport::TransportError),
    /// Streams did not come up.
    #[error("streams between the members did not attach within 10 s")]
    Streams,
    /// The members' probers had no answer.
    #[error("the members' probers had no answer from each other within 10 s")]
    Probes,
    /// Writing the JSON failed.
    #[error("{0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Whether the bench's members share an I/O thread ([`BenchArgs::io_threads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoThreads {
    /// One I/O thread for all members ([`rafthttp::transport::Config::io_thread`]).
    Shared,
    /// One I/O thread per member.
    Own,
}

impl IoThreads {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            IoThreads::Shared => "shared",
            IoThreads::Own => "own",
        }
    }
}

impl FromStr for IoThreads {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(IoThreads::Shared),
            "own" => Ok(IoThreads::Own),
            other => Err(format!("unknown I/O threads {other:?} (shared or own)")),
        }
    }
}

/// The file name of a row's latency log: its name with spaces as underscores.
fn latency_log_name(row: &str) -> String {
    format!("{}.tsv", row.replace(' ', "_"))
}

/// Writes a row's samples to `dir`: a header, then `send_monotonic_ns<TAB>latency_ns`
/// per message.
fn write_latency_log(
    dir: &std::path::Path,
    row: &str,
    epoch_monotonic_ns: u64,
    samples: &[LatencySample],
) -> Result<(), BenchError> {
    use std::io::Write as _;
    let path = dir.join(latency_log_name(row));
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(f, "# send_monotonic_ns\tlatency_ns")?;
        for (sent, lat) in samples {
            writeln!(f, "{}\t{}", epoch_monotonic_ns + sent, lat)?;
        }
        f.flush()
    };
    write().map_err(|e| BenchError::Write(path.clone(), e))
}

/// The anchor's warm-up for a row of `n` messages.
fn anchor_warm(n: u64) -> u64 {
    (n / 10).min(2000)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.split_whitespace().collect::<Vec<_>>().join("_"))
        .unwrap_or_else(|| "unknown".into())
}

fn snap_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("rafthttp-bench-snap-{}", std::process::id()))
}

/// Runs the suite and prints the table (and JSON if asked).
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    if args.window == 0 || args.window >= 4096 {
        return Err(BenchError::Flag(
            "--window must be in 1..4095 (the queues hold 4096)".into(),
        ));
    }
    let div = if args.quick { 10 } else { 1 };
    let warm = |n: u64| args.warm.unwrap_or_else(|| anchor_warm(n));
    let wanted =
        |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()));
    let dir = snap_dir();
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Write(dir.clone(), e))?;
    let epoch = Instant::now();
    // `Instant` is CLOCK_MONOTONIC on Linux: the epoch read twice, back to back, lets a
    // latency log give send times on the clock perf stamps its events with.
    let epoch_monotonic_ns = rafthttp::usage::monotonic_ns();
    if let Some(d) = &args.latency_log {
        std::fs::create_dir_all(d).map_err(|e| BenchError::Write(d.clone(), e))?;
    }
    let log_latency = |(row, samples): (Row, Vec<LatencySample>)| -> Result<Row, BenchError> {
        if let Some(d) = &args.latency_log {
            write_latency_log(d, &row.name, epoch_monotonic_ns, &samples)?;
        }
        Ok(row)
    };
    let mut rows: Vec<Row> = Vec::new();
    let add = |rows: &mut Vec<Row>, r: Row| {
        if r.msgs == 0 {
            return; // a row given no messages (--nlat 0, say) measures nothing
        }
        eprintln!(
            "  {:<27} {:>10.0} msg/s {:>8.1} MB/s {:>7.2} allocs/msg {:>7.2} cpu-us/msg{}  drops {}/{}/{}/{}  cpu pair {:.0}/{:.0} ns",
            r.name, r.msgs_per_sec, r.payload_mb_per_sec, r.allocs_per_msg, r.cpu_us_per_msg,
            if r.kind == "latency" { format!("  p50 {:.1}us p99 {:.1}us", r.p50_us, r.p99_us) } else { String::new() },
            r.report_unreachable, r.send_failures, r.recv_failures, r.missing,
            r.cpu_pair_ns[0], r.cpu_pair_ns[1]
        );
        rows.push(r);
    };

    let io_thread = match args.io_threads {
        IoThreads::Shared => Some(Arc::new(
            IoThread::spawn(
                "rafthttp-io",
                choose_backend(args.io).map_err(TransportError::from)?,
                args.sched,
            )
            .map_err(TransportError::from)?,
        )),
        IoThreads::Own => None,
    };
    // Where the host has placed the CPUs now, and again at the end (see `cpu_pair`).
    let cpu_pair_before = cpu_pair::round_trip_ns(cpu_pair::TRIPS);
    let setup = MemberSetup {
        io: args.io,
        io_thread,
        inline: args.inline,
        sched: args.sched,
        linger: args.linger(),
        direct_send: !args.no_direct_send,
        epoch,
        snap_dir: dir.clone(),
        socket: args.socket.options(),
        recv_backlog: args.recv_backlog,
    };
    let n1 = member(1, &setup)?;
    let n2 = member(2, &setup)?;
    let io = n1.transport.backend().name();
    let congestion = setup.socket.congestion_in_effect();
    eprintln!(
        "rafthttp bench: {} I/O, {} I/O threads, window {}{}, {} thread scheduling, linger {} us, direct send {}, TCP congestion control {}{}",
        io,
        args.io_threads.name(),
        args.window,
        if args.no_prime || args.inline { "" } else { " (primed)" },
        args.sched.name(),
        args.linger().as_micros(),
        if args.no_direct_send { "off" } else { "on" },
        congestion,
        if args.inline { ", inline" } else { "" }
    );
    n1.transport.add_peer(2, &[url(&n2)])?;
    n2.transport.add_peer(1, &[url(&n1)])?;
    if !wait_streams(&n1, 2, Duration::from_secs(10))
        || !wait_streams(&n2, 1, Duration::from_secs(10))
    {
        return Err(BenchError::Streams);
    }
    if !wait_probed(&n1, 2, Duration::from_secs(10))
        || !wait_probed(&n2, 1, Duration::from_secs(10))
    {
        return Err(BenchError::Probes);
    }
    // One AppSource per link keeps MsgApps contiguous across rows, as the anchor's
    // shared index does: each row continues where the last left off.
    let index_source = |per: usize, size: usize, last: &u64| {
        let mut s = AppSource::new(1, 2, per, size);
        s.set_index(*last);
        s
    };
    let mut last_index = 0u64;
    for (name, n, per, size) in [
        ("msgapp 1x64B", args.n64, 1usize, 64usize),
        ("msgapp 1x1KiB", args.n1k, 1, 1024),
        ("msgapp 1x16KiB", args.n16k, 1, 16 << 10),
        ("msgapp 100x64B (batched)", args.nbatch, 100, 64),
    ] {
        if !wanted(name) {
            continue;
        }
        let n = n / div;
        let src = index_source(per, size, &last_index);
        let mut src = Source::App(src);
        add(
            &mut rows,
            throughput(
                name,
                "msgappv2",
                &n1,
                &n2,
                &mut src,
                n,
                warm(n),
                args.window,
                per as u64,
                size as u64,
                !args.no_prime,
            ),
        );
        if let Source::App(s) = &src {
            last_index = s.index();
        }
    }
    let name = "heartbeat (message stream)";
    if wanted(name) {
        let n = args.nhb / div;
        add(
            &mut rows,
            throughput(
                name,
                "message",
                &n1,
                &n2,
                &mut Source::Heartbeat(1, 2),
                n,
                warm(n),
                args.window,
                0,
                0,
                !args.no_prime,
            ),
        );
    }
    let nlat = args.nlat / div;
    if wanted("latency msgapp 1x64B") {
        let mut src = Source::App(index_source(1, 64, &last_index));
        add(
            &mut rows,
            log_latency(latency(
                "latency msgapp 1x64B",
                "msgappv2",
                &n1,
                &n2,
                &mut src,
                nlat,
                500,
                1,
                64,
            ))?,
        );
        if let Source::App(s) = &src {
            last_index = s.index();
        }
    }
    if wanted("latency heartbeat") {
        add(
            &mut rows,
            log_latency(latency(
                "latency heartbeat",
                "message",
                &n1,
                &n2,
                &mut Source::Heartbeat(1, 2),
                nlat,
                500,
                0,
                0,
            ))?,
        );
    }
    let _ = last_index;
    if args.nsnap > 0 && wanted("snapshot") {
        add(
            &mut rows,
            snapshots(&n1, &n2, 2, args.nsnap, args.snapmib << 20),
        );
    }
    drop((n1, n2));

    if args.npipe > 0 && wanted("pipeline msgapp 1x64B") {
        // Member 4 never adds member 3, so it refuses 3's stream dials and 3's writers
        // never attach: everything goes by pipeline (one POST /raft per message).
        let n3 = member(3, &setup)?;
        let n4 = member(4, &setup)?;
        n3.transport.add_peer(4, &[url(&n4)])?;
        std::thread::sleep(Duration::from_millis(200));
        let n = args.npipe / div;
        let mut src = Source::App(AppSource::new(3, 4, 1, 64));
        add(
            &mut rows,
            throughput(
                "pipeline msgapp 1x64B",
                "pipeline",
                &n3,
                &n4,
                &mut src,
                n,
                warm(n),
                32,
                1,
                64,
                false,
            ),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    let cpu_pair_after = cpu_pair::round_trip_ns(cpu_pair::TRIPS);
    let trip = |ns: Option<f64>| ns.map_or_else(|| "-".to_string(), |ns| format!("{ns:.0}"));
    let cpu_pair = format!("{}/{}", trip(cpu_pair_before), trip(cpu_pair_after));
    eprintln!(
        "rafthttp bench: a cache line's round trip between the first two CPUs: {} ns before the rows, {} ns after",
        trip(cpu_pair_before),
        trip(cpu_pair_after)
    );
    let mut report = Report::default();
    for (k, v) in [
        ("impl", "rafthttp".to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "etcd_version",
            format!("rafthttp {}", env!("CARGO_PKG_VERSION")),
        ),
        ("io", io.to_string()),
        (
            "numcpu",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
                .to_string(),
        ),
        ("window", args.window.to_string()),
        (
            "warm",
            args.warm
                .map_or_else(|| "anchor".to_string(), |w| w.to_string()),
        ),
        ("inline", args.inline.to_string()),
        ("prime", (!args.no_prime).to_string()),
        ("cpu_pair_rtt_ns", cpu_pair),
        ("sched", args.sched.name().to_string()),
        ("linger_us", args.linger().as_micros().to_string()),
        ("direct_send", (!args.no_direct_send).to_string()),
        ("io_threads", args.io_threads.name().to_string()),
        ("tcp_congestion", congestion.clone()),
        (
            "recv_backlog",
            setup
                .recv_backlog
                .unwrap_or(QueueSizes::default().recv_backlog)
                .to_string(),
        ),
        ("kernel", read_trim("/proc/sys/kernel/osrelease")),
        ("cpu", cpu_model()),
        (
            "started",
            rafthttp::transport::handlers::rfc3339_nano(std::time::SystemTime::now()),
        ),
    ] {
        report.meta.insert(k.to_string(), v);
    }
    report.results = rows;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| BenchError::Write(path.clone(), e))?;
    }
    println!(
        "{}",
        table(
            &format!(
                "rafthttp {} ({io}) on loopback -- single run",
                env!("CARGO_PKG_VERSION")
            ),
            &report.results
        )
    );
    println!("{LEGEND}");
    for r in &report.results {
        if r.report_unreachable + r.send_failures + r.recv_failures + r.missing > 0.0 {
            eprintln!(
                "rafthttp bench: WARNING: drops or missing messages in {}",
                r.name
            );
        }
    }
    Ok(())
}
