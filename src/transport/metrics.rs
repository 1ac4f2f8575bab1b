//! etcd's `etcd_network_*` metrics, in the Prometheus text format (0.0.4), so that
//! existing etcd dashboards work. Written out here rather than through a client crate:
//! prometheus-client encodes OpenMetrics and appends `_total` to every counter, but etcd
//! names some counters without it (`etcd_network_snapshot_send_success`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A histogram with fixed bucket bounds, updated with atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    /// Buckets `start · 2^k` for k = 0..n, as etcd's `prometheus.ExponentialBuckets`.
    pub fn exponential(start: f64, n: usize) -> Histogram {
        let bounds: Vec<f64> = (0..n).map(|k| start * 2f64.powi(k as i32)).collect();
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records `v`.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            f64::from_bits(self.sum.load(Relaxed))
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Snapshot figures per peer.
#[derive(Debug)]
pub struct SnapshotMetrics {
    /// Sends (or receives) that succeeded.
    pub success: AtomicU64,
    /// That failed.
    pub failures: AtomicU64,
    /// In flight now.
    pub inflight: AtomicU64,
    /// Durations, buckets 0.1 s · 2^k, k = 0..9.
    pub duration: Histogram,
}

impl Default for SnapshotMetrics {
    fn default() -> Self {
        SnapshotMetrics {
            success: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            duration: Histogram::exponential(0.1, 10),
        }
    }
}

/// One peer's metric values, as read for exposition.
pub struct PeerSample<'a> {
    /// Our ID.
    pub local: u64,
    /// The peer's.
    pub id: u64,
    /// Active now.
    pub active: bool,
    /// Its counters.
    pub counters: &'a super::peer::PeerCounters,
}

/// Writes one metric family: help, type, then a sample per peer.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, String)> + 'a,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The `etcd_network_*` metrics for `peers`, in the Prometheus text format.
pub fn render(peers: &[PeerSample<'_>]) -> String {
    let mut out = String::new();
    // Several members in one process (a demo cluster): their per-peer series would
    // collide on `To`/`From` alone, so they gain a `Local` label.
    let multi = peers.windows(2).any(|w| w[0].local != w[1].local);
    let local = move |p: &PeerSample<'_>| {
        if multi {
            format!("Local=\"{:x}\",", p.local)
        } else {
            String::new()
        }
    };
    let to = move |p: &PeerSample<'_>| format!("{}To=\"{:x}\"", local(p), p.id);
    let from = move |p: &PeerSample<'_>| format!("{}From=\"{:x}\"", local(p), p.id);
    let local_remote =
        |p: &PeerSample<'_>| format!("Local=\"{:x}\",Remote=\"{:x}\"", p.local, p.id);
    let load = |a: &AtomicU64| a.load(Relaxed).to_string();
    family(
        &mut out,
        "etcd_network_peer_sent_bytes_total",
        "counter",
        "The total number of bytes sent to peers.",
        peers.iter().map(|p| (to(p), load(&p.counters.sent_bytes))),
    );
    family(
        &mut out,
        "etcd_network_peer_received_bytes_total",
        "counter",
        "The total number of bytes received from peers.",
        peers
            .iter()
            .map(|p| (from(p), load(&p.counters.received_bytes))),
    );
    family(
        &mut out,
        "etcd_network_peer_sent_failures_total",
        "counter",
        "The total number of send failures from peers.",
        peers
            .iter()
            .map(|p| (to(p), load(&p.counters.sent_failures))),
    );
    family(
        &mut out,
        "etcd_network_peer_received_failures_total",
        "counter",
        "The total number of receive failures from peers.",
        peers
            .iter()
            .map(|p| (from(p), load(&p.counters.received_failures))),
    );
    family(
        &mut out,
        "etcd_network_active_peers",
        "gauge",
        "The current number of active peer connections.",
        peers
            .iter()
            .map(|p| (local_remote(p), u8::from(p.active).to_string())),
    );
    family(
        &mut out,
        "etcd_network_disconnected_peers_total",
        "counter",
        "The total number of disconnected peers.",
        peers
            .iter()
            .map(|p| (local_remote(p), load(&p.counters.disconnects))),
    );
    let rtt = "etcd_network_peer_round_trip_time_seconds";
    let _ = writeln!(
        out,
        "# HELP {rtt} Round-Trip-Time histogram between peers.\n# TYPE {rtt} histogram"
    );
    for p in peers {
        p.counters.rtt.write(&mut out, rtt, &to(p));
    }
    for (dir, label, pick) in [
        (
            "send",
            "To",
            (|c: &super::peer::PeerCounters| &c.snapshot_send)
                as fn(&super::peer::PeerCounters) -> &SnapshotMetrics,
        ),
        ("receive", "From", |c: &super::peer::PeerCounters| {
            &c.snapshot_receive
        }),
    ] {
        let l = |p: &PeerSample<'_>| format!("{}{label}=\"{:x}\"", local(p), p.id);
        family(
            &mut out,
            &format!("etcd_network_snapshot_{dir}_success"),
            "counter",
            &format!("Total number of successful snapshot {dir}s"),
            peers
                .iter()
                .map(|p| (l(p), load(&pick(p.counters).success))),
        );
        family(
            &mut out,
            &format!("etcd_network_snapshot_{dir}_failures"),
            "counter",
            &format!("Total number of snapshot {dir} failures"),
            peers
                .iter()
                .map(|p| (l(p), load(&pick(p.counters).failures))),
        );
        family(
            &mut out,
            &format!("etcd_network_snapshot_{dir}_inflights_total"),
            "gauge",
            &format!("Total number of inflight snapshot {dir}s"),
            peers
                .iter()
                .map(|p| (l(p), load(&pick(p.counters).inflight))),
        );
        let name = format!("etcd_network_snapshot_{dir}_total_duration_seconds");
        let _ = writeln!(out, "# HELP {name} Total latency distributions of v3 snapshot {dir}s\n# TYPE {name} histogram");
        for p in peers {
            pick(p.counters).duration.write(&mut out, &name, &l(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::exponential(0.0001, 16);
        h.observe(0.00005);
        h.observe(0.0003);
        h.observe(100.0);
        let mut out = String::new();
        h.write(&mut out, "x", "To=\"2\"");
        assert!(
            out.contains("x_bucket{To=\"2\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{To=\"2\",le=\"0.0004\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{To=\"2\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{To=\"2\"} 3\n"), "{out}");
        assert_eq!(out.lines().filter(|l| l.contains("_bucket")).count(), 17);
    }
}
