//! etcd's prober: every `ConnReadTimeout − 1 s` (4 s) it GETs the peer's `/raft/probing`,
//! records the round trip in `etcd_network_peer_round_trip_time_seconds`, keeps a smoothed
//! RTT (EWMA, α = 0.125), and warns when the peer is unhealthy (every 30 s while healthy
//! checks pass, every 5 s after an error) or its clock drifts more than 1 s from ours.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::peer::Peer;
use super::Shared;
use crate::http::client::{Client, ClientConfig};
use crate::io::{Backend, BufferPool, IoTask};

/// A peer's prober; runs until the peer stops.
pub struct Prober {
    /// The transport.
    pub shared: Arc<Shared>,
    /// The peer probed.
    pub peer: Arc<Peer>,
}

/// Parses the `Now` of a probing answer (RFC 3339 in UTC, as our handler and Go write).
fn parse_now(body: &[u8]) -> Option<SystemTime> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let now = v.get("Now")?.as_str()?;
    let (date, time) = now.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant), the inverse of handlers::rfc3339_nano.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + hh * 3600 + mm * 60 + ss, nanos))
}

impl IoTask for Prober {
    type Output = ();

    async fn run<B: Backend>(self) {
        // Ends at the peer's stop, even in the middle of a sleep or a probe.
        tokio::select! {
            () = self.probe::<B>() => {}
            () = self.peer.stopped() => {}
        }
    }
}

impl Prober {
    async fn probe<B: Backend>(&self) {
        let cfg = &self.shared.config;
        let client: Client<B> = Client::new(
            ClientConfig {
                max_body: 4096,
                ..self.shared.client_config()
            },
            Rc::new(BufferPool::new(4096, 1)),
        );
        let peer = &self.peer;
        let mut srtt: Option<f64> = None;
        let mut last_report = Instant::now();
        let mut failing = false;
        while !peer.is_stopped() {
            tokio::time::sleep(cfg.probe_interval).await;
            if peer.is_stopped() {
                break;
            }
            let Some(url) = peer.urls.pick() else {
                continue;
            };
            let sent = Instant::now();
            let outcome = client
                .request(&url, "GET", "/raft/probing", &[], bytes::Bytes::new())
                .await;
            let rtt = sent.elapsed();
            let error = match outcome {
                Ok(r) if r.status == 200 => {
                    let secs = rtt.as_secs_f64();
                    peer.counters.rtt.observe(secs);
                    let s = srtt.map_or(secs, |s| 0.875 * s + 0.125 * secs);
                    srtt = Some(s);
                    if let Some(remote_now) = parse_now(&r.body) {
                        let local_now = SystemTime::now();
                        let skew = local_now
                            .duration_since(remote_now)
                            .or_else(|e| Ok::<_, ()>(e.duration()))
                            .unwrap_or_default();
                        let skew = skew.as_secs_f64() - s / 2.0;
                        if skew.abs() > 1.0 {
                            tracing::warn!(remote_peer_id = %format_args!("{:x}", peer.id), clock_drift_seconds = skew, round_trip_time_seconds = s, "prober found high clock drift");
                        }
                    }
                    None
                }
                Ok(r) => Some(format!("unexpected status {}", r.status)),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = &error {
                peer.urls.unreachable(&url);
                failing = true;
                if last_report.elapsed() >= Duration::from_secs(5) {
                    tracing::warn!(remote_peer_id = %format_args!("{:x}", peer.id), round_trip_time_seconds = srtt.unwrap_or(0.0), error = %e, "prober detected unhealthy status");
                    last_report = Instant::now();
                }
            } else if failing || last_report.elapsed() >= Duration::from_secs(30) {
                failing = false;
                last_report = Instant::now();
                tracing::debug!(remote_peer_id = %format_args!("{:x}", peer.id), round_trip_time_seconds = srtt.unwrap_or(0.0), "prober reports healthy status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_probing_handler_writes() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_549_130, 545_229_845);
        let body = format!(
            "{{\"OK\":true,\"Now\":\"{}\"}}\n",
            super::super::handlers::rfc3339_nano(t)
        );
        assert_eq!(parse_now(body.as_bytes()), Some(t));
        assert_eq!(
            parse_now(br#"{"OK":true,"Now":"2026-11-24T19:38:50.545229845Z"}"#),
            Some(t)
        );
        assert_eq!(parse_now(b"garbage"), None);
        assert_eq!(parse_now(br#"{"Now":"x"}"#), None);
    }
}
