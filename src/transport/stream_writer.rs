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
use crate::codec::{encode_message_frame, MsgAppV2Encoder};
use crate::http::batch::Batch;
use crate::http::router::StreamBody;
use crate::raftpb::Message;
use crate::version::StreamType;

/// Messages encoded into one batch at most before it is written (etcd flushes after 2048).
const MAX_BATCH: usize = 2048;

enum Encoder {
    MsgAppV2(MsgAppV2Encoder),
    Message,
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
}

impl StreamWriter {
    /// Attaches a writer of `kind` to `peer` (replacing any previous connection, whose
    /// queued messages are thrown away and reported). The peer becomes active.
    pub fn attach(peer: Arc<Peer>, kind: StreamType, heartbeat_every: Duration) -> StreamWriter {
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
        let encoder = match kind {
            StreamType::Message => Encoder::Message,
            // msgapp v1 writers are not built yet (profile etcd2.1); the handler does not
            // accept v1 streams without one.
            _ => Encoder::MsgAppV2(MsgAppV2Encoder::new()),
        };
        StreamWriter {
            peer,
            kind,
            generation,
            encoder,
            heartbeat_every,
            heartbeat: None,
            msgs: Vec::with_capacity(64),
        }
    }

    fn encode(&mut self, m: &Message, batch: &mut Batch) {
        match &mut self.encoder {
            Encoder::MsgAppV2(enc) => enc.encode(m, batch.buf()),
            Encoder::Message => encode_message_frame(m, batch.buf()),
        };
    }
}

impl StreamBody for StreamWriter {
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        if self.peer.is_stopped() {
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
                    self.encode(m, batch);
                }
                self.msgs = msgs;
                self.msgs.clear();
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
