//! etcd's `streamReader`: dials the peer's stream endpoint for one stream type, at most
//! once per retry interval, decodes what the peer writes and hands it to the application.
//! It decides support from the response's `X-Server-Version` before the status code
//! (spec §1.3), and reports a 410 (we were removed) on the fatal-error channel at once.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::peer::Peer;
use super::peer_status::{Change, FailureType};
use super::raft::FatalError;
use super::recv_queue::ReaderPages;
use super::Shared;
use crate::codec::{FrameKind, MessageStreamDecoder, MsgAppV1Decoder, MsgAppV2Decoder};
use crate::http::client::Client;
use crate::http::io::HttpError;
use crate::http::write::HeaderValue;
use crate::io::{linger, Backend, BufferPool, Conn, IoTask};
use crate::version::{StreamType, Version};

/// The reader of one stream type from one peer; runs until the peer stops.
pub struct StreamReader {
    /// The transport.
    pub shared: Arc<Shared>,
    /// The peer dialed.
    pub peer: Arc<Peer>,
    /// Which stream.
    pub kind: StreamType,
}

enum Decoder {
    V2(MsgAppV2Decoder),
    Message(MessageStreamDecoder),
    V1(MsgAppV1Decoder),
}

impl IoTask for StreamReader {
    type Output = ();

    async fn run<B: Backend>(self) {
        let shared = &self.shared;
        let peer = &self.peer;
        let cfg = &shared.config;
        let client: Client<B> = Client::new(
            shared.client_config(),
            Rc::new(BufferPool::new(64 * 1024, 2)),
        );
        let local = &shared.local;
        let mut headers = shared.request_headers(None);
        headers.push(("X-Raft-To", HeaderValue::Hex(peer.id)));
        let v1_allowed = local.profile == super::checks::Profile::Etcd21;
        let mut next_dial = Instant::now();
        // etcd 2.1 falls back to msgapp v1 at once when a peer lacks msgappv2.
        let mut fallback_to_v1 = false;
        while !peer.is_stopped() && !shared.stopped.load(Relaxed) {
            if !fallback_to_v1 {
                tokio::time::sleep_until(next_dial).await;
                next_dial = Instant::now() + cfg.dial_retry;
            }
            if peer.is_stopped() {
                break;
            }
            let kind = if std::mem::take(&mut fallback_to_v1) {
                StreamType::MsgAppV1
            } else {
                self.kind
            };
            let failure = |action| FailureType {
                source: kind.log_name(),
                action,
            };
            let path = kind.endpoint(local.id);
            // A v1 stream is valid for the term it is dialed with (spec §2.4).
            let dial_term = peer.term();
            let mut dial_headers = headers.clone();
            if kind == StreamType::MsgAppV1 {
                dial_headers.push(("X-Raft-Term", HeaderValue::Dec(dial_term)));
            }
            let Some(url) = peer.urls.pick() else {
                continue;
            };
            // A dial, or a request awaiting its answer, ends at the peer's stop (a stream
            // that is up is closed by its watcher below, off the read path).
            let dialed = tokio::select! {
                biased;
                r = client.get_stream(&url, &path, &dial_headers) => r,
                () = peer.stopped() => break,
            };
            let mut resp = match dialed {
                Ok(r) => r,
                Err(e) => {
                    peer.counters.dial_failures.fetch_add(1, Relaxed);
                    deactivate(peer, failure("dial"), &e.to_string());
                    peer.urls.unreachable(&url);
                    continue;
                }
            };
            // Support first, from the version header (spec §1.3); never logged or counted.
            let remote = match resp.head.header_str("x-server-version") {
                None => Ok(Version::v2_0_0()),
                Some(v) => v.parse::<Version>(),
            };
            let remote = match remote {
                Ok(v) => v,
                Err(e) => {
                    // Go's dialer panics the whole member here.
                    tracing::warn!(remote_peer_id = %format_args!("{:x}", peer.id), error = %e, "ignored stream response with an invalid X-Server-Version");
                    resp.close();
                    peer.urls.unreachable(&url);
                    continue;
                }
            };
            let ours = &local.versions.server;
            if remote.major_minor() < ours.major_minor()
                && !kind.supported_by(&remote, ours, v1_allowed)
            {
                resp.close();
                fallback_to_v1 = kind == StreamType::MsgAppV2
                    && StreamType::MsgAppV1.supported_by(&remote, ours, v1_allowed);
                if !fallback_to_v1 {
                    peer.urls.unreachable(&url);
                }
                continue;
            }
            match resp.status {
                200 => {}
                status => {
                    let body = resp.read_to_end(4096).await.unwrap_or_default();
                    peer.counters.dial_failures.fetch_add(1, Relaxed);
                    self.refused(kind, status, &body);
                    peer.urls.unreachable(&url);
                    continue;
                }
            }
            if peer.status.activate() == Change::BecameActive {
                tracing::info!(stream_reader_type = kind.log_name(), local_member_id = %format_args!("{:x}", local.id), remote_peer_id = %format_args!("{:x}", peer.id), "established TCP streaming connection with remote peer");
            }
            // Closing the socket is how a pending read ends; a stop must do that.
            let closer = resp.closer();
            let stop_peer = peer.clone();
            let v1 = kind == StreamType::MsgAppV1;
            let watcher = tokio::task::spawn_local(async move {
                loop {
                    let stop = stop_peer.stop_signal.notified();
                    let term = stop_peer.term_changed.notified();
                    tokio::pin!(stop, term);
                    stop.as_mut().enable();
                    term.as_mut().enable();
                    // Only the v1 stream is reset by a new term: msgappv2 and message
                    // carry their terms inside the messages (spec §5.3).
                    if stop_peer.is_stopped() || (v1 && stop_peer.term() > dial_term) {
                        break;
                    }
                    tokio::select! {
                        () = stop => break,
                        () = term, if v1 => {}
                    }
                }
                let _ = closer.shutdown();
            });
            let mut decoder = match kind {
                StreamType::Message => Decoder::Message(MessageStreamDecoder::new(&cfg.limits)),
                StreamType::MsgAppV2 => {
                    Decoder::V2(MsgAppV2Decoder::new(local.id, peer.id, &cfg.limits))
                }
                StreamType::MsgAppV1 => Decoder::V1(MsgAppV1Decoder::new(
                    local.id,
                    peer.id,
                    dial_term,
                    &cfg.limits,
                )),
            };
            let mut pages = peer.reader_pages();
            // Closed by us (the peer stopped, or a v1 stream's term is over) is no failure.
            let failed = |e: HttpError| {
                (!(peer.is_stopped() || (v1 && peer.term() > dial_term))).then(|| e.to_string())
            };
            // What the last burst carried: large messages make the next read eager.
            let mut burst = Burst::default();
            let ended = 'read: loop {
                let waiting = if burst.next_read_eager() {
                    // The thread's other tasks still get their turn once a burst, as a
                    // wait would give them: a bulk stream must not keep the thread.
                    tokio::task::yield_now().await;
                    match resp.try_next() {
                        Ok(Some(Some(piece))) => Ok(Some(piece)),
                        Ok(Some(None)) => Ok(None),
                        Ok(None) => resp.next().await,
                        Err(e) => Err(e),
                    }
                } else if burst.lone() && !cfg.linger.is_zero() {
                    // After a lone message the next one is looked for between the
                    // thread's other tasks for a while (see `io::linger`): it is then read
                    // as soon as it is there, with neither a wake-up nor the driver's
                    // round trip to report it.
                    let mut looks = linger::Looks::new(cfg.linger, std::time::Instant::now());
                    loop {
                        match resp.try_next() {
                            Ok(Some(Some(piece))) => {
                                peer.counters.linger_hits.fetch_add(1, Relaxed);
                                break Ok(Some(piece));
                            }
                            Ok(Some(None)) => break Ok(None),
                            Ok(None) if looks.again::<B>().await => {}
                            Ok(None) => {
                                peer.counters.linger_misses.fetch_add(1, Relaxed);
                                break resp.next().await;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                } else {
                    resp.next().await
                };
                let piece = match waiting {
                    Ok(Some(piece)) => piece,
                    Ok(None) => break None,
                    Err(e) => break failed(e),
                };
                // A long read means a burst, whose rest is likely there already; a short
                // one, a lone message, which must not wait for a read that fails.
                let read_ahead = if piece.len() >= BURST_READ {
                    READ_AHEAD
                } else {
                    0
                };
                burst = Burst {
                    bytes: piece.len(),
                    read_ahead: read_ahead > 0,
                    messages: 0,
                };
                let mut outcome = decode_piece(peer, &mut decoder, piece, &mut pages);
                burst.messages += *outcome.as_ref().unwrap_or(&0);
                // In a burst, what has arrived meanwhile is decoded too before the worker
                // is woken: one hand-over (and wake-up) per burst, not per read. A few
                // reads at most, so that the thread's other connections get their turn.
                // When processing inline, what was read is processed first, and the
                // reads go on without a round trip through the driver.
                for _ in 0..read_ahead {
                    if outcome.is_err() {
                        break;
                    }
                    if peer.inline {
                        peer.deliver_page(&mut pages);
                    }
                    match resp.try_next() {
                        Ok(Some(Some(piece))) => {
                            burst.bytes += piece.len();
                            outcome = decode_piece(peer, &mut decoder, piece, &mut pages);
                            burst.messages += *outcome.as_ref().unwrap_or(&0);
                        }
                        Ok(Some(None)) => {
                            peer.deliver_page(&mut pages);
                            break 'read None;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            peer.deliver_page(&mut pages);
                            break 'read failed(e);
                        }
                    }
                }
                peer.deliver_page(&mut pages);
                if let Err(e) = outcome {
                    break Some(e);
                }
                // The worker is far behind: leave the rest in the socket until it catches
                // up half way, rather than hold it here (see `QueueSizes::recv_backlog`).
                if pages.backlogged() {
                    peer.counters.receive_pauses.fetch_add(1, Relaxed);
                    tokio::select! {
                        biased;
                        () = peer.stopped() => break None,
                        () = peer.receive_drained() => {}
                    }
                }
            };
            watcher.abort();
            resp.close();
            if let Some(e) = ended {
                deactivate(peer, failure("read"), &e);
            }
            tracing::warn!(stream_reader_type = kind.log_name(), local_member_id = %format_args!("{:x}", local.id), remote_peer_id = %format_args!("{:x}", peer.id), "lost TCP streaming connection with remote peer");
        }
    }
}

impl StreamReader {
    /// A non-200 answer to our dial (spec §3.4).
    fn refused(&self, kind: StreamType, status: u16, body: &Bytes) {
        let peer = &self.peer;
        let text = String::from_utf8_lossy(body);
        let text = text.trim_end_matches('\n');
        let failure = FailureType {
            source: self.kind.log_name(),
            action: "dial",
        };
        let why = match status {
            404 => format!(
                "peer {:x} failed to find local node {:x}",
                peer.id, peer.local
            ),
            410 => {
                let _ = self.shared.fatal.try_send(FatalError::MemberRemoved);
                tracing::error!(local_member_id = %format_args!("{:x}", peer.local), remote_peer_id = %format_args!("{:x}", peer.id), "the member has been permanently removed from the cluster");
                FatalError::MemberRemoved.to_string()
            }
            412 => match text {
                "incompatible version" => "incompatible version".to_string(),
                "cluster ID mismatch" => "cluster ID mismatch".to_string(),
                other => format!("unhandled error {other:?} when precondition failed"),
            },
            other => format!("unhandled http status {other}"),
        };
        tracing::warn!(remote_peer_id = %format_args!("{:x}", peer.id), stream_type = kind.log_name(), status, error = %why, "stream dial refused");
        deactivate(peer, failure, &why);
    }
}

fn deactivate(peer: &Peer, failure: FailureType, error: &str) {
    if peer.status.deactivate(failure, error) == Change::BecameInactive {
        peer.counters.disconnects.fetch_add(1, Relaxed);
    }
}

/// Reads a stream ahead by at most this many more reads, of what has already arrived,
/// before handing the messages decoded over.
const READ_AHEAD: usize = 8;

/// A read of at least this many bytes is taken for part of a burst, and read ahead of.
const BURST_READ: usize = 4096;

/// After a burst whose messages averaged at least this many bytes, the next read is
/// tried at once (see [`Burst::next_read_eager`]).
///
/// Above the 100-entry appends of 64 bytes (about 8.2 KB encoded), whose reader is bound
/// by per-entry work, not by the socket.
const EAGER_MESSAGE_BYTES: usize = 12 * 1024;

/// What one burst of reads (a read and the reads ahead of it) carried.
#[derive(Clone, Copy, Debug, Default)]
struct Burst {
    /// Bytes read.
    bytes: usize,
    /// Messages decoded from them.
    messages: usize,
    /// Whether the first read was long enough to read ahead of (`BURST_READ`).
    read_ahead: bool,
}

impl Burst {
    /// Whether the next read is tried at once, before waiting through the driver: after
    /// a burst of large messages (a bulk stream), whose next bytes are likely there. On
    /// io_uring a read waits in the submission queue until the thread's other ready
    /// tasks have run, and the acknowledgements of what it reads wait with it; under BBR,
    /// which measures its bandwidth from them, a 16 KiB stream then never left its slow
    /// mode, as described in docs/performance.md. Small messages keep the plain read:
    /// reading them sooner made their batches smaller.
    fn next_read_eager(&self) -> bool {
        self.read_ahead && self.bytes >= EAGER_MESSAGE_BYTES * self.messages.max(1)
    }

    /// Whether it was one message, read alone: no flow, whose next read should wait for
    /// the driver to gather more, and no idle link's heartbeat (see the linger in `run`).
    fn lone(&self) -> bool {
        !self.read_ahead && self.messages == 1
    }
}

/// Counts `piece` and decodes every frame in it, each in place into the next slot of the
/// reader's page (link heartbeats are dropped). Full pages are handed on; the caller hands
/// on the last one. Returns how many messages it decoded.
fn decode_piece(
    peer: &Peer,
    decoder: &mut Decoder,
    mut piece: Bytes,
    pages: &mut ReaderPages,
) -> Result<usize, String> {
    peer.counters
        .received_bytes
        .fetch_add(piece.len() as u64, Relaxed);
    let mut before = piece.len();
    // With a worker to process them, many-entry messages leave their payloads for it to
    // slice (see `codec::Deferred`); inline, this thread would slice them anyway.
    let defer = !peer.inline;
    let mut decoded = 0;
    loop {
        let (slot, deferred, ranges) = pages.page.next_slot_deferring();
        let frame = match decoder {
            Decoder::V2(d) if defer => d.decode_deferring(&mut piece, slot, deferred, ranges),
            Decoder::V2(d) => d.decode(&mut piece, slot),
            Decoder::Message(d) => d.decode(&mut piece, slot),
            Decoder::V1(d) => d.decode(&mut piece, slot),
        };
        pages.page.add_bytes(before - piece.len());
        before = piece.len();
        match frame {
            Ok(Some(info)) if info.kind == FrameKind::LinkHeartbeat => {}
            Ok(Some(_)) => {
                decoded += 1;
                pages.page.commit();
                if pages.page.is_full() {
                    peer.deliver_page(pages);
                }
            }
            Ok(None) => return Ok(decoded),
            Err(e) => {
                tracing::warn!(remote_peer_id = %format_args!("{:x}", peer.id), error = %e, "failed to read Raft message");
                return Err(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_burst_of_large_messages_makes_the_next_read_eager() {
        let burst = |bytes, messages, read_ahead| Burst {
            bytes,
            messages,
            read_ahead,
        };
        // 16 KiB appends, four reads of 64 KiB.
        assert!(burst(4 * 65536, 16, true).next_read_eager());
        // A frame split across reads: bytes, no whole message yet.
        assert!(burst(65536, 0, true).next_read_eager());
        // 100-entry appends of 64 bytes, 1 KiB and 64-byte appends in the same reads.
        assert!(!burst(4 * 65536, 32, true).next_read_eager());
        assert!(!burst(4 * 65536, 256, true).next_read_eager());
        assert!(!burst(4 * 65536, 3000, true).next_read_eager());
        // Just under and at the line.
        assert!(!burst(8 * 12287, 8, true).next_read_eager());
        assert!(burst(8 * 12288, 8, true).next_read_eager());
        // A short read (a lone message) is not a burst.
        assert!(!burst(2000, 0, false).next_read_eager());
        assert!(!Burst::default().next_read_eager());
    }
}
