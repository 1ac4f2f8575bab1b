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

/// Parses the `Now` of a probing answer: `{"OK":true,"Now":"<RFC 3339>"}`, as our handler
/// and Go's write it (Go writes the member's local offset, ours `Z`). Allocates nothing:
/// it runs on every probe.
fn parse_now(body: &[u8]) -> Option<SystemTime> {
    const KEY: &[u8] = b"\"Now\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = trim_start(&body[at + KEY.len()..]);
    let rest = trim_start(rest.strip_prefix(b":")?);
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    parse_rfc3339(&rest[..end])
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// The value of the ASCII digits `s` (all of them digits, at most 9).
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |v, &d| v * 10 + u64::from(d - b'0')))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (RFC 3339, as Go's `time.RFC3339Nano`).
fn parse_rfc3339(s: &[u8]) -> Option<SystemTime> {
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (y, m, day) = (digits(&s[..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (hh, mm, ss) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        // Nanoseconds: the first nine digits, right-padded with zeros.
        let v = digits(&frac[..n.min(9)])?;
        nanos = u32::try_from(v * 10u64.pow(9 - n.min(9) as u32)).ok()?;
        rest = &frac[n..];
    }
    // Seconds east of UTC.
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = (oh * 3600 + om * 60) as i64;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant), the inverse of handlers::rfc3339_nano.
    let (y, m, day) = (y as i64, m as i64, day as i64);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (hh * 3600 + mm * 60 + ss) as i64 - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
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
        let mut picked = None;
        while !peer.is_stopped() {
            tokio::time::sleep(cfg.probe_interval).await;
            if peer.is_stopped() {
                break;
            }
            peer.urls.pick_into(&mut picked);
            let Some(url) = &picked else {
                continue;
            };
            let sent = Instant::now();
            let outcome = client
                .request(url, "GET", "/raft/probing", &[], bytes::Bytes::new())
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
                peer.urls.unreachable(url);
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
        // Go writes the member's local offset.
        assert_eq!(
            parse_now(br#"{"OK":true,"Now":"2026-11-24T20:38:50.545229845+01:00"}"#),
            Some(t)
        );
        assert_eq!(
            parse_now(br#"{"OK":true, "Now" : "2026-11-24T14:08:50.545229845-05:30"}"#),
            Some(t)
        );
        assert_eq!(
            parse_now(br#"{"OK":true,"Now":"2026-11-24T19:38:50Z"}"#),
            Some(t - Duration::from_nanos(545_229_845))
        );
        assert_eq!(
            parse_now(br#"{"Now":"2026-11-24T19:38:50.5Z"}"#),
            Some(t - Duration::from_nanos(45_229_845))
        );
        // Digits past nanoseconds are dropped, as Go does.
        assert_eq!(
            parse_now(br#"{"Now":"2026-11-24T19:38:50.5452298459Z"}"#),
            Some(t)
        );
        for bad in [
            &b"garbage"[..],
            br#"{"Now":"x"}"#,
            br#"{"Now":"2026-11-24T19:38:50"}"#,
            br#"{"Now":"2026-13-24T19:38:50Z"}"#,
            br#"{"Now":"2026-11-24T19:38:50.Z"}"#,
            br#"{"Now":"2026-11-24T19:38:50+1:00"}"#,
            br#"{"Now":"2026-11-24 19:38:50Z"}"#,
            br#"{"Now":"+026-11-24T19:38:50Z"}"#,
            br#"{"Now":"1969-12-31T23:59:59Z"}"#,
            br#"{"Now": 5}"#,
            br#"{"Now":"2026-11-24T19:38:50Z"#,
        ] {
            assert_eq!(parse_now(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
