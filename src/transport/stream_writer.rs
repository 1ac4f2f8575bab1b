//! etcd's `streamWriter`, as the body of a stream response: when a peer dials
//! `/raft/stream/<type>/<id>`, the handler attaches a writer to that peer's queue, and
//! the server writes whatever the writer yields as chunks into the never-ending response.
//!
//! Each poll takes everything queued (up to 2048 messages, etcd's batching bound), encodes
//! it into one batch and hands it over as one chunk and one write; with nothing queued it
//! waits, and sends a link heartbeat every ConnReadTimeout/3. When the connection ends for
//! any reason, what is still queued is outdated: it is thrown away, and the peer is
//! reported unreachable once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::peer::Peer;
use super::peer_status::FailureType;
use super::queue::{Generation, Stale};
use crate::codec::{encode_message_frame, MsgAppV1Encoder, MsgAppV2Encoder, V1Write};
use crate::http::batch::Batch;
use crate::http::router::StreamBody;
use crate::raftpb::Message;
use crate::version::StreamType;

/// Messages encoded into one batch at most before it is written (etcd flushes after 2048).
const MAX_BATCH: usize = 2048;

enum Encoder {
    MsgAppV2(MsgAppV2Encoder),
    Message,
    /// etcd 2.x's msgapp v1, valid for the one term it was dialed with.
    MsgAppV1(MsgAppV1Encoder),
}

/// One attached stream connection's writer.
pub struct StreamWriter {
    peer: Arc<Peer>,
    kind: StreamType,
    generation: Generation,
    encoder: Encoder,
    heartbeat_every: Duration,
    heartbeat: Option<tokio::time::Interval>,
    msgs: Vec<Message>,
    /// A v1 stream saw a higher term: it ends after this batch.
    ending: bool,
}

impl StreamWriter {
    /// Attaches a writer of `kind` to `peer` (replacing any previous connection, whose
    /// queued messages are thrown away and reported). The peer becomes active. `term` is
    /// a v1 stream's `X-Raft-Term`.
    pub fn attach(
        peer: Arc<Peer>,
        kind: StreamType,
        term: Option<u64>,
        heartbeat_every: Duration,
    ) -> StreamWriter {
        let (generation, outdated) = peer.writer(kind).attach();
        if outdated > 0 {
            peer.raft().report_unreachable(peer.id);
        }
        peer.status.activate();
        tracing::info!(
            stream_writer_type = kind.log_name(),
            local_member_id = %format_args!("{:x}", peer.local),
            remote_peer_id = %format_args!("{:x}", peer.id),
            "established TCP streaming connection with remote peer"
        );
        peer.counters.stream_attaches.fetch_add(1, Relaxed);
        let encoder = match kind {
            StreamType::Message => Encoder::Message,
            StreamType::MsgAppV2 => Encoder::MsgAppV2(MsgAppV2Encoder::new()),
            StreamType::MsgAppV1 => Encoder::MsgAppV1(MsgAppV1Encoder::new(term.unwrap_or(0))),
        };
        StreamWriter {
            peer,
            kind,
            generation,
            encoder,
            heartbeat_every,
            heartbeat: None,
            msgs: Vec::with_capacity(64),
            ending: false,
        }
    }

    /// Encodes `m`; false if a v1 stream must end (etcd 2.1's writer on a higher term).
    fn encode(&mut self, m: &Message, batch: &mut Batch) -> bool {
        match &mut self.encoder {
            Encoder::MsgAppV2(enc) => {
                enc.encode(m, batch.buf());
            }
            Encoder::Message => {
                encode_message_frame(m, batch.buf());
            }
            Encoder::MsgAppV1(enc) => match enc.encode(m, batch.buf()) {
                V1Write::Written | V1Write::Skipped => {}
                V1Write::TermAdvanced => {
                    tracing::warn!(remote_peer_id = %format_args!("{:x}", self.peer.id), stream_term = enc.term(), message_term = m.term, "closed msgapp v1 stream on a higher term");
                    return false;
                }
            },
        }
        true
    }
}

impl StreamBody for StreamWriter {
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        if self.peer.is_stopped() || self.ending {
            return Poll::Ready(Ok(false));
        }
        let before = batch.len();
        let queue = self.peer.writer(self.kind);
        match queue.pop_batch(self.generation, &mut self.msgs, MAX_BATCH, cx.waker()) {
            Err(Stale) => return Poll::Ready(Ok(false)),
            Ok(0) => {}
            Ok(_) => {
                let msgs = std::mem::take(&mut self.msgs);
                for m in &msgs {
                    if !self.encode(m, batch) {
                        // The message is lost, as in etcd; raft resends after the report.
                        self.ending = true;
                        self.peer.raft().report_unreachable(self.peer.id);
                        break;
                    }
                }
                self.msgs = msgs;
                // The encoded messages' shells go back for the application to reuse,
                // if it reuses them.
                if self.peer.send_recycling.load(Relaxed) {
                    self.peer.send_pool.give_back_all(self.msgs.drain(..));
                } else {
                    self.msgs.clear();
                }
                if batch.len() == before {
                    return Poll::Ready(Ok(!self.ending));
                }
                self.peer
                    .counters
                    .sent_bytes
                    .fetch_add((batch.len() - before) as u64, Relaxed);
                return Poll::Ready(Ok(true));
            }
        }
        let every = self.heartbeat_every;
        let interval = self.heartbeat.get_or_insert_with(|| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        if interval.poll_tick(cx).is_ready() {
            self.encode(&Message::link_heartbeat(), batch);
            self.peer
                .counters
                .sent_bytes
                .fetch_add((batch.len() - before) as u64, Relaxed);
            return Poll::Ready(Ok(true));
        }
        Poll::Pending
    }

    fn closed(&mut self, error: Option<&str>) {
        let outdated = self.peer.writer(self.kind).detach(self.generation);
        if let Some(e) = error {
            let failure = FailureType {
                source: self.kind.log_name(),
                action: "write",
            };
            if self.peer.status.deactivate(failure, e) == super::peer_status::Change::BecameInactive
            {
                self.peer.counters.disconnects.fetch_add(1, Relaxed);
            }
        }
        if outdated > 0 || error.is_some() {
            self.peer.raft().report_unreachable(self.peer.id);
        }
        tracing::warn!(
            stream_writer_type = self.kind.log_name(),
            local_member_id = %format_args!("{:x}", self.peer.local),
            remote_peer_id = %format_args!("{:x}", self.peer.id),
            "lost TCP streaming connection with remote peer"
        );
    }
}
