//! The bench's results, in the Go anchor's JSON schema (`{"meta":{…},"results":[…]}`,
//! the same keys per row) plus `peak_rss_kib`, `worker_moves`, `worker_sleeps`, `worker_looks`,
//! `receive_pauses`, `linger_hits`, `linger_misses` and `direct_writes`, and its table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One row, named and keyed as the anchor's `Result`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    /// The anchor's row name.
    pub name: String,
    /// msgappv2 / message / pipeline / snapshot.
    pub path: String,
    /// throughput / latency / snapshot.
    pub kind: String,
    /// Messages measured.
    pub msgs: u64,
    /// Entries per message.
    pub entries_per_msg: u64,
    /// Bytes per entry.
    pub entry_bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Messages delivered to `Raft::process` per second.
    pub msgs_per_sec: f64,
    /// Entries per second.
    pub entries_per_sec: f64,
    /// Entry data MB (1e6 B) per second.
    pub payload_mb_per_sec: f64,
    /// Allocations per message, both members (the harness's own excluded).
    pub allocs_per_msg: f64,
    /// Bytes allocated per message.
    pub alloc_bytes_per_msg: f64,
    /// User+system CPU of the process per message.
    pub cpu_us_per_msg: f64,
    /// CPU time / wall time.
    pub cpu_cores: f64,
    /// One-way latency percentiles (latency rows).
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// `report_unreachable` calls.
    pub report_unreachable: f64,
    /// Messages the sender could not send.
    pub send_failures: f64,
    /// Messages the receiver dropped.
    pub recv_failures: f64,
    /// TCP payload bytes per message, all connections, both directions.
    pub wire_bytes_per_msg: f64,
    /// Messages never delivered.
    pub missing: f64,
    /// Peak resident set during the row (VmHWM after resetting it), KiB.
    pub peak_rss_kib: u64,
    /// Times a receive worker moved to the CPU of the thread waking it during the row
    /// (`PeerStats::worker_moves`; not in the anchor's schema).
    #[serde(default)]
    pub worker_moves: u64,
    /// Times a receive worker slept for want of messages during the row
    /// (`PeerStats::worker_sleeps`; not in the anchor's schema).
    #[serde(default)]
    pub worker_sleeps: u64,
    /// Times a receive worker gave up its CPU to look for messages again during the row
    /// (`PeerStats::worker_looks`; not in the anchor's schema).
    #[serde(default)]
    pub worker_looks: u64,
    /// Times a stream reader stopped reading until the receive worker caught up during
    /// the row (`PeerStats::receive_pauses`; not in the anchor's schema).
    #[serde(default)]
    pub receive_pauses: u64,
    /// Times a stream reader lingering after a lone message found the next one itself
    /// during the row (`PeerStats::linger_hits`; not in the anchor's schema).
    #[serde(default)]
    pub linger_hits: u64,
    /// Messages the sending thread wrote on an idle stream itself during the row
    /// (`PeerStats::direct_writes`; not in the anchor's schema).
    #[serde(default)]
    pub direct_writes: u64,
    /// Times such a linger ran out during the row (`PeerStats::linger_misses`).
    #[serde(default)]
    pub linger_misses: u64,
    /// Allocations (both members) while the receiver's queue was filled to the window
    /// before the warm-up (`--no-prime` skips it: 0); not in the anchor's schema.
    #[serde(default)]
    pub prime_allocs: u64,
    /// A cache line's round trip between the first two CPUs right before and right
    /// after the row's measured part, ns (0: not measured; see `cpu_pair`); not in the
    /// anchor's schema.
    #[serde(default)]
    pub cpu_pair_ns: [f64; 2],
}

impl Row {
    /// An empty row named as the anchor names it.
    pub fn new(name: &str, path: &str, kind: &str, entries_per_msg: u64, entry_bytes: u64) -> Row {
        Row {
            name: name.into(),
            path: path.into(),
            kind: kind.into(),
            entries_per_msg,
            entry_bytes,
            ..Default::default()
        }
    }
}

/// A run: the anchor's report shape.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Machine and settings.
    pub meta: BTreeMap<String, String>,
    /// Rows in order.
    pub results: Vec<Row>,
}

fn f(v: f64, prec: usize) -> String {
    if v.is_nan() || v == 0.0 {
        "-".into()
    } else {
        format!("{v:.prec$}")
    }
}

/// The anchor's table, with a peak-RSS column.
pub fn table(title: &str, rows: &[Row]) -> String {
    let line = "-".repeat(142);
    let mut out = format!("\n{title}\n{line}\n");
    out += &format!(
        "{:<27} {:<8} {:>8} {:>10} {:>10} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {}\n{line}\n",
        "test", "path", "msgs", "msgs/s", "entries/s", "MB/s", "wireB", "allocs", "allocB", "cpu-us",
        "p50-us", "p99-us", "rss-MiB", "drops u/s/r/miss"
    );
    for r in rows {
        let (mut ents, mut mb) = (f(r.entries_per_sec, 0), f(r.payload_mb_per_sec, 1));
        let (mut p50, mut p99) = (f(r.p50_us, 1), f(r.p99_us, 1));
        match r.kind.as_str() {
            "latency" => (ents, mb) = ("-".into(), "-".into()),
            "snapshot" => (ents, p50, p99) = ("-".into(), "-".into(), "-".into()),
            _ => (p50, p99) = ("-".into(), "-".into()),
        }
        out += &format!(
            "{:<27} {:<8} {:>8} {:>10.0} {:>10} {:>8} {:>7.0} {:>7.2} {:>7.0} {:>7.2} {:>7} {:>7} {:>8.1} {:.0}/{:.0}/{:.0}/{:.0}\n",
            r.name, r.path, r.msgs, r.msgs_per_sec, ents, mb, r.wire_bytes_per_msg, r.allocs_per_msg,
            r.alloc_bytes_per_msg, r.cpu_us_per_msg, p50, p99, r.peak_rss_kib as f64 / 1024.0,
            r.report_unreachable, r.send_failures, r.recv_failures, r.missing
        );
    }
    out + &line + "\n"
}

/// What the columns mean.
pub const LEGEND: &str = "msgs/s: messages delivered to Raft::process per second (latency rows: 1 / mean time per message).
MB/s: entry data bytes delivered per second, 1 MB = 1e6 B (snapshot row: snapshot body bytes).
wireB: TCP payload bytes per message over all rafthttp connections, both directions (framing + HTTP).
allocs, allocB: allocations / bytes per message, sender and receiver together (counting allocator).
  The harness fills recycled messages (Transport::recycle_into); any allocation it makes itself
  is counted on its thread and left out of allocs. Rows start once each member's prober has
  made its first probe (4 s after the peers are added): its dial is set-up, as the streams' are.
cpu-us: user+sys CPU time of the whole process per message (getrusage; both members).
p50/p99: one-way send() -> Raft::process() latency in microseconds, one message in flight.
rss-MiB: peak resident set during the row.
drops: report_unreachable calls / sent failures / received failures / never delivered (all must be 0).";
