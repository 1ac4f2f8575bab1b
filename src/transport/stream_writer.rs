//! etcd's `streamWriter`, as the body of a stream response: when a peer dials
//! `/raft/stream/<type>/<id>`, the handler attaches a writer to that peer's queue, and
//! the server writes whatever the writer yields as chunks into the never-ending response.
//!
//! Messages are encoded as they are sent, into the queue (see `stream_queue`); each poll
//! swaps everything queued into the server's chunk buffer and hands it over as one chunk
//! and one write. With nothing queued it waits, and sends a link heartbeat every
//! ConnReadTimeout/3. When the connection ends for any reason, what is still queued is
//! outdated: it is thrown away, and the peer is reported unreachable once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BufMut;

use super::peer::Peer;
use super::peer_status::FailureType;
use super::queue::{Generation, Stale};
use super::stream_queue::Taken;
use crate::http::batch::Batch;
use crate::http::chunked::CHUNK_HEADER_ROOM;
use crate::http::router::StreamBody;
use crate::version::StreamType;

/// One attached stream connection's writer.
pub struct StreamWriter {
    peer: Arc<Peer>,
    kind: StreamType,
    generation: Generation,
    heartbeat_every: Duration,
    heartbeat: Option<tokio::time::Interval>,
    /// For a caller whose batch does not start with just the chunk header's room: the
    /// frames are taken here, then appended.
    spare: Batch,
    /// Whether messages were written since the last heartbeat tick; a tick that finds
    /// none means the stream is idle.
    busy_since_tick: bool,
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
        let (generation, outdated) = peer.writer(kind).attach(kind, term.unwrap_or(0));
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
        let mut spare = Batch::default();
        spare.buf().put_bytes(0, CHUNK_HEADER_ROOM);
        StreamWriter {
            peer,
            kind,
            generation,
            heartbeat_every,
            heartbeat: None,
            spare,
            busy_since_tick: false,
        }
    }

    /// Moves what is queued into `batch`: by swapping batches when `batch` holds just
    /// the room for a chunk header (as the server's does), else by appending.
    fn take(&mut self, cx: &mut Context<'_>, batch: &mut Batch) -> Result<Taken, Stale> {
        let queue = self.peer.writer(self.kind);
        let before = batch.len();
        let taken = if batch.buf().len() == CHUNK_HEADER_ROOM && batch.referenced_len() == 0 {
            queue.take(self.generation, batch, cx.waker())?
        } else {
            let taken = queue.take(self.generation, &mut self.spare, cx.waker())?;
            batch.append_from(&mut self.spare, CHUNK_HEADER_ROOM);
            if let Some(rest) = self.spare.take_unframed() {
                batch.set_unframed(rest);
            }
            taken
        };
        if let Taken::Frames(_) = taken {
            self.peer
                .counters
                .sent_bytes
                .fetch_add((batch.len() - before) as u64, Relaxed);
        }
        Ok(taken)
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
        match self.take(cx, batch) {
            Err(Stale) | Ok(Taken::Ended) => return Poll::Ready(Ok(false)),
            Ok(Taken::Frames(_)) => {
                self.busy_since_tick = true;
                return Poll::Ready(Ok(true));
            }
            Ok(Taken::Nothing) => {}
        }
        let every = self.heartbeat_every;
        let interval = self.heartbeat.get_or_insert_with(|| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        if interval.poll_tick(cx).is_ready() {
            let queue = self.peer.writer(self.kind);
            if !std::mem::take(&mut self.busy_since_tick) {
                queue.trim_spares();
            }
            if queue.push_link_heartbeat(self.generation).is_err() {
                return Poll::Ready(Ok(false));
            }
            return match self.take(cx, batch) {
                Err(Stale) | Ok(Taken::Ended) => Poll::Ready(Ok(false)),
                // A v1 stream writes its heartbeat; every type does, so this is data.
                Ok(_) => Poll::Ready(Ok(true)),
            };
        }
        Poll::Pending
    }

    /// Only when the peer's queues take direct writes (`Config::direct_send`).
    fn wants_socket(&self) -> bool {
        self.peer.writer(self.kind).is_direct()
    }

    /// Lends the socket to the queue, for senders to write a lone message on it while
    /// this writer is idle (the server polls with an emptied batch each time, after its
    /// write completed, so idle means nothing in flight).
    fn lend_socket(&mut self, socket: Arc<dyn crate::http::direct::SocketSend>) {
        self.peer
            .writer(self.kind)
            .lend_socket(self.generation, socket);
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
