//! One remote member (etcd's `peer`): its send queues, status, URLs, receive queues and
//! counters, shared between the application's threads (which send) and the I/O thread
//! (which writes, reads and dials). `send` never blocks: a full queue drops the message
//! and reports the peer unreachable (etcd's `pick` and drop rules, spec §4.3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message_pool::MessagePool;
use super::peer_status::PeerStatus;
use super::queue::{Push, WriterQueue};
use super::raft::{Raft, SnapshotStatus};
use super::recv_queue::{Page, ReaderPages, RecvQueue};
use super::stream_queue::{self, StreamQueue};
use super::url_picker::UrlPicker;
use crate::http::client::PeerUrl;
use crate::raftpb::{message_type_name, Message, MessageType};
use crate::version::StreamType;

/// Queue sizes (etcd's constants by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSizes {
    /// Per stream writer (etcd `streamBufSize`: 4096).
    pub stream: usize,
    /// Pipeline (etcd `pipelineBufSize`: 64).
    pub pipeline: usize,
    /// Received messages, and received MsgProp (etcd: 4096 each).
    pub recv: usize,
    /// Bytes of received messages waiting for the worker past which the peer's stream
    /// readers stop reading until it has processed half of them (64 MiB; 0: never, as
    /// etcd, whose readers read on and drop what a full queue cannot take). What is not
    /// read waits in the socket's kernel buffer and then in the sender's queue (which
    /// drops and reports the peer unreachable when full), so a slow worker does not make
    /// this member hold a full queue of large messages: 4096 appends of 1 MiB would be
    /// 4 GiB. Not lower by default: on two cores, a receive queue of a few MiB let the
    /// worker run dry whenever the I/O thread waited for a CPU, and cost a quarter of the
    /// 100-entry stream's throughput (docs/performance.md). Not used with
    /// [`Raft::inline`].
    pub recv_backlog: usize,
}

impl Default for QueueSizes {
    fn default() -> Self {
        QueueSizes {
            stream: 4096,
            pipeline: 64,
            recv: 4096,
            recv_backlog: 64 << 20,
        }
    }
}

/// Sent messages' shells a peer keeps for the application to reuse.
const SEND_SHELLS: usize = 1024;

/// Where [`Peer::route_to_stream`] put a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Encoded on a stream (or deliberately not sent: the peer is paused or stopped,
    /// or a v1 stream skipped it).
    Queued,
    /// The stream's queue is full (named as etcd's logs name it): drop and report.
    Dropped(&'static str),
    /// A msgapp v1 stream of this term ended on a higher-term message: report.
    Ended(u64),
    /// The sending thread's own write of it was cut short by a new connection: lost
    /// with the old one, as queued messages are; report.
    Outdated,
    /// No stream takes it: the pipeline does.
    Pipeline,
}

/// Counters for one peer (etcd's `etcd_network_*` metrics).
#[derive(Debug)]
pub struct PeerCounters {
    /// Bytes sent to the peer (stream bytes counted when written, heartbeats included;
    /// shared with the stream queues, which count what sending threads write themselves).
    pub sent_bytes: Arc<AtomicU64>,
    /// Bytes received from it.
    pub received_bytes: AtomicU64,
    /// Messages that could not be sent (dropped or failed).
    pub sent_failures: AtomicU64,
    /// Received messages dropped because a receive queue was full.
    pub received_failures: AtomicU64,
    /// Messages sent by pipeline.
    pub pipeline_messages: AtomicU64,
    /// Times the peer went from active to inactive.
    pub disconnects: AtomicU64,
    /// Stream dials of ours that failed (unsupported stream types are not failures).
    pub dial_failures: AtomicU64,
    /// Stream connections the peer attached to our writers.
    pub stream_attaches: AtomicU64,
    /// Times a stream reader from the peer stopped reading until the worker caught up
    /// ([`QueueSizes::recv_backlog`]).
    pub receive_pauses: AtomicU64,
    /// Times a stream reader from the peer, lingering after a lone message, found the
    /// next one itself ([`Config::linger`](super::Config::linger)).
    pub linger_hits: AtomicU64,
    /// Times such a linger ran out, and the reader waited through the driver.
    pub linger_misses: AtomicU64,
    /// Probe round-trip times, buckets 0.1 ms · 2^k, k = 0..15.
    pub rtt: super::metrics::Histogram,
    /// Snapshots sent to the peer.
    pub snapshot_send: super::metrics::SnapshotMetrics,
    /// Snapshots received from it.
    pub snapshot_receive: super::metrics::SnapshotMetrics,
}

impl Default for PeerCounters {
    fn default() -> Self {
        PeerCounters {
            sent_bytes: Arc::default(),
            received_bytes: AtomicU64::new(0),
            sent_failures: AtomicU64::new(0),
            received_failures: AtomicU64::new(0),
            pipeline_messages: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            dial_failures: AtomicU64::new(0),
            stream_attaches: AtomicU64::new(0),
            receive_pauses: AtomicU64::new(0),
            linger_hits: AtomicU64::new(0),
            linger_misses: AtomicU64::new(0),
            rtt: super::metrics::Histogram::exponential(0.0001, 16),
            snapshot_send: Default::default(),
            snapshot_receive: Default::default(),
        }
    }
}

/// A member we talk to.
pub struct Peer {
    /// Our ID.
    pub local: u64,
    /// Its ID.
    pub id: u64,
    /// A remote only has a pipeline: a member not yet in our membership.
    pub remote_only: bool,
    /// Active or not, since when.
    pub status: PeerStatus,
    /// Its URLs.
    pub urls: UrlPicker,
    /// The msgappv2 (or v1) stream writer's queue.
    pub msgapp: StreamQueue,
    /// The message stream writer's queue.
    pub message: StreamQueue,
    /// The pipeline's queue (always "working").
    pub pipeline: WriterQueue,
    pipeline_generation: super::queue::Generation,
    /// Counters.
    pub counters: PeerCounters,
    recvc: Arc<RecvQueue>,
    propc: Arc<RecvQueue>,
    /// Shells of sent messages, for the application to fill again.
    pub send_pool: MessagePool,
    /// Whether the application recycles sent messages (it has called
    /// `Transport::recycle_into`); until then writers simply drop them.
    pub send_recycling: AtomicBool,
    raft: Arc<dyn Raft>,
    paused: AtomicBool,
    stopped: AtomicBool,
    /// etcd 2.1 routing: only MsgApp with term == logTerm takes the msgapp stream.
    v21: bool,
    /// Received messages are processed on the I/O thread (`Raft::inline`).
    pub inline: bool,
    /// The highest term of any outgoing non-MsgProp message (etcd 2.1's `setTerm`).
    term: AtomicU64,
    /// Wakes a v1 reader when `term` rises, so it re-dials with the new `X-Raft-Term`.
    pub term_changed: tokio::sync::Notify,
    /// Wakes the peer's I/O tasks when it is stopped.
    pub stop_signal: tokio::sync::Notify,
    last_drop_log: std::sync::Mutex<Option<Instant>>,
    /// The thread its snapshots are sent from, once one has been.
    pub snapshot_thread: super::snapshot_sender::SnapshotThread,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Lets the worker threads end once they have drained what is queued.
        self.recvc.close();
        self.propc.close();
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({:x})", self.id)
    }
}

/// The receiving ends of a peer's receive queues, for its worker threads.
pub struct PeerReceivers {
    /// Everything but MsgProp.
    pub recv: Arc<RecvQueue>,
    /// MsgProp (kept apart because `process` can block on it while there is no leader).
    pub prop: Arc<RecvQueue>,
}

impl Peer {
    /// Times the peer's receive workers moved to the CPU of the thread waking them
    /// (see `worker_placement`).
    pub fn worker_moves(&self) -> u64 {
        self.recvc.worker_moves() + self.propc.worker_moves()
    }

    /// Whether a thread sending to the peer may write a lone message on an idle stream
    /// itself ([`StreamQueue::set_direct`]; the transport gives
    /// [`Config::direct_send`](super::Config::direct_send)).
    pub fn set_direct_send(&self, direct: bool) {
        let quiet = direct.then_some(stream_queue::DIRECT_QUIET);
        self.msgapp.set_direct(quiet);
        self.message.set_direct(quiet);
    }

    /// Sets how long the receive workers look for their next message themselves after
    /// a lone one ([`RecvQueue::set_linger`]; the transport gives them
    /// [`Config::linger`](super::Config::linger)).
    pub fn set_worker_linger(&self, linger: Duration) {
        self.recvc.set_linger(linger);
        self.propc.set_linger(linger);
    }

    /// Times the peer's receive workers gave up their CPU to look for messages again
    /// (in a flow, and lingering after a lone message).
    pub fn worker_looks(&self) -> u64 {
        self.recvc.worker_looks() + self.propc.worker_looks()
    }

    /// Messages to the peer that the sending thread wrote on an idle stream itself.
    pub fn direct_writes(&self) -> u64 {
        self.msgapp.direct_writes() + self.message.direct_writes()
    }

    /// Times the peer's receive workers slept for want of messages.
    pub fn worker_sleeps(&self) -> u64 {
        self.recvc.worker_sleeps() + self.propc.worker_sleeps()
    }

    /// A peer `id` at `urls`, as seen by `local`, with etcd 3 routing.
    pub fn new(
        local: u64,
        id: u64,
        urls: Vec<PeerUrl>,
        sizes: QueueSizes,
        raft: Arc<dyn Raft>,
        remote_only: bool,
    ) -> (Arc<Peer>, PeerReceivers) {
        Self::with_profile(local, id, urls, sizes, raft, remote_only, false)
    }

    /// [`Peer::new`], with etcd 2.1's routing when `v21`.
    pub fn with_profile(
        local: u64,
        id: u64,
        urls: Vec<PeerUrl>,
        sizes: QueueSizes,
        raft: Arc<dyn Raft>,
        remote_only: bool,
        v21: bool,
    ) -> (Arc<Peer>, PeerReceivers) {
        let inline = raft.inline();
        let recvc = Arc::new(RecvQueue::with_backlog(sizes.recv, sizes.recv_backlog));
        let propc = Arc::new(RecvQueue::new(sizes.recv));
        let (recv, prop) = (recvc.clone(), propc.clone());
        let pipeline = WriterQueue::new(sizes.pipeline);
        let (pipeline_generation, _) = pipeline.attach();
        let counters = PeerCounters::default();
        let stream_queue =
            || StreamQueue::new(sizes.stream).counting_sent_in(counters.sent_bytes.clone());
        let peer = Arc::new(Peer {
            local,
            id,
            remote_only,
            status: PeerStatus::new(local, id),
            urls: UrlPicker::new(urls),
            msgapp: stream_queue(),
            message: stream_queue(),
            pipeline,
            pipeline_generation,
            counters,
            recvc,
            propc,
            send_pool: MessagePool::new(SEND_SHELLS),
            send_recycling: AtomicBool::new(false),
            raft,
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            v21,
            inline,
            term: AtomicU64::new(0),
            term_changed: tokio::sync::Notify::new(),
            stop_signal: tokio::sync::Notify::new(),
            last_drop_log: std::sync::Mutex::new(None),
            snapshot_thread: Default::default(),
        });
        (peer, PeerReceivers { recv, prop })
    }

    /// The pipeline queue's (only) generation, for its sender.
    pub fn pipeline_generation(&self) -> super::queue::Generation {
        self.pipeline_generation
    }

    /// The queue of the writer for `kind`.
    pub fn writer(&self, kind: StreamType) -> &StreamQueue {
        match kind {
            StreamType::MsgAppV1 | StreamType::MsgAppV2 => &self.msgapp,
            StreamType::Message => &self.message,
        }
    }

    /// Sends `m` by the first working channel, as etcd's `pick` chooses: MsgSnap by
    /// pipeline; MsgApp on the msgapp stream while it works; anything else on the
    /// message stream while it works; else the pipeline. Never blocks; a full queue
    /// drops the message and reports. A message encoded on a stream has its shell
    /// recycled (see `Transport::recycle_into`).
    pub fn send(&self, m: Message) {
        match self.route_to_stream(&m) {
            Routed::Queued => self.sent(m),
            Routed::Pipeline => self.send_by_pipeline(m),
            other => self.finish_send(&m, other),
        }
    }

    /// [`send`](Self::send) by reference: streams encode `m` where it is; only the
    /// pipeline, which needs a message of its own, copies it.
    pub fn send_ref(&self, m: &Message) {
        match self.route_to_stream(m) {
            Routed::Queued => {}
            other => self.finish_send(m, other),
        }
    }

    /// The first half of [`send`](Self::send): queues `m` on a stream if one takes it.
    /// Calls nothing of the application's, so it may run under the transport's peer
    /// lock; anything else is left to [`finish_send`](Self::finish_send).
    pub fn route_to_stream(&self, m: &Message) -> Routed {
        if self.paused.load(Relaxed) || self.stopped.load(Relaxed) {
            return Routed::Queued;
        }
        // A plain load first: the term rarely rises, and a read-modify-write per message
        // (a locked instruction) is dear on the sending thread's hot path.
        if m.msg_type != MessageType::MsgProp as i32
            && m.term > self.term.load(Relaxed)
            && m.term > self.term.fetch_max(m.term, Relaxed)
        {
            self.term_changed.notify_waiters();
        }
        // etcd 2.1 streams only MsgApp with term == logTerm (v1 can carry no other).
        let is_app =
            m.msg_type == MessageType::MsgApp as i32 && (!self.v21 || m.term == m.log_term);
        let is_snap = m.msg_type == MessageType::MsgSnap as i32;
        if self.remote_only || is_snap {
            return Routed::Pipeline;
        }
        let queues = [
            (&self.msgapp, "streamMsgAppV2"),
            (&self.message, "streamMsg"),
        ];
        for &(queue, channel) in &queues[usize::from(!is_app)..] {
            match queue.push(m) {
                stream_queue::Push::Queued => return Routed::Queued,
                stream_queue::Push::Full => return Routed::Dropped(channel),
                stream_queue::Push::Ended(stream_term) => return Routed::Ended(stream_term),
                stream_queue::Push::Outdated => return Routed::Outdated,
                stream_queue::Push::NotWorking => {}
            }
        }
        Routed::Pipeline
    }

    /// The second half of [`send_ref`](Self::send_ref), for what no stream queued.
    pub fn finish_send(&self, m: &Message, routed: Routed) {
        match routed {
            Routed::Queued => {}
            Routed::Dropped(channel) => self.dropped(m, channel),
            Routed::Ended(stream_term) => {
                tracing::warn!(remote_peer_id = %format_args!("{:x}", self.id), stream_term, message_term = m.term, "closed msgapp v1 stream on a higher term");
                // The message is lost, as in etcd; raft resends after the report.
                self.raft.report_unreachable(self.id);
            }
            Routed::Outdated => {
                tracing::debug!(remote_peer_id = %format_args!("{:x}", self.id), "lost a message being written on a replaced stream connection");
                // As for the messages an attach finds queued: raft resends after it.
                self.raft.report_unreachable(self.id);
            }
            Routed::Pipeline => self.send_by_pipeline(m.clone()),
        }
    }

    fn send_by_pipeline(&self, m: Message) {
        match self.pipeline.push(m) {
            Push::Queued => {}
            Push::Full(back) | Push::NotWorking(back) => {
                if self.remote_only {
                    // etcd's remote drops without reporting.
                    self.counters.sent_failures.fetch_add(1, Relaxed);
                    self.log_drop(&back, "pipeline");
                } else {
                    self.dropped(&back, "pipeline");
                }
            }
        }
    }

    /// A message was encoded into a stream queue: its shell goes back for the application
    /// to reuse, if it reuses them.
    fn sent(&self, m: Message) {
        if self.send_recycling.load(Relaxed) {
            self.send_pool.give_back_all(std::iter::once(m));
        }
    }

    /// A message could not be queued: report, count, log (rate-limited).
    fn dropped(&self, m: &Message, channel: &'static str) {
        self.raft.report_unreachable(m.to);
        if m.msg_type == MessageType::MsgSnap as i32 {
            self.raft.report_snapshot(m.to, SnapshotStatus::Failure);
        }
        self.counters.sent_failures.fetch_add(1, Relaxed);
        self.log_drop(m, channel);
    }

    fn log_drop(&self, m: &Message, channel: &'static str) {
        let now = Instant::now();
        {
            let mut last = self.last_drop_log.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t).as_secs() < 1) {
                return;
            }
            *last = Some(now);
        }
        let kind = message_type_name(m.msg_type).unwrap_or("unknown");
        let active = self.status.is_active();
        tracing::warn!(
            message_type = kind,
            local_member_id = %format_args!("{:x}", self.local),
            from = %format_args!("{:x}", m.from),
            remote_peer_id = %format_args!("{:x}", self.id),
            remote_peer_active = active,
            channel,
            "dropped internal Raft message since sending buffer is full (overloaded network)"
        );
    }

    /// A POST to the peer (pipeline or snapshot) failed: move to its next URL, mark it
    /// inactive with etcd's wording (`failed to post <id> on <source> (<error>)`), count.
    pub fn post_failed(&self, url: &PeerUrl, source: &'static str, error: &str) {
        self.urls.unreachable(url);
        let failure = super::peer_status::FailureType {
            source,
            action: "post",
        };
        if self.status.deactivate(failure, error) == super::peer_status::Change::BecameInactive {
            self.counters.disconnects.fetch_add(1, Relaxed);
        }
        self.counters.sent_failures.fetch_add(1, Relaxed);
    }

    /// Hands a received message to the application: MsgProp to its own queue. A full
    /// queue drops it with etcd 2.1's log line (`dropped MsgProp from 2 since receiving
    /// buffer is full`), at warn while the peer is active and debug otherwise.
    pub fn deliver(&self, m: Message) {
        if self.paused.load(Relaxed) {
            return;
        }
        let queue = if m.msg_type == MessageType::MsgProp as i32 {
            &self.propc
        } else {
            &self.recvc
        };
        if let Some(m) = queue.push(m) {
            self.dropped_received(&m);
        }
    }

    /// [`deliver`](Self::deliver) for every message of `page` (what one read decoded),
    /// with one lock for the whole page: MsgProp are moved out to their own queue first.
    /// With [`Raft::inline`], the messages are processed here, on the I/O thread.
    /// Leaves the reader's page empty (a fresh page, or the same one emptied).
    pub fn deliver_page(&self, reader: &mut ReaderPages) {
        let page = &mut reader.page;
        if self.paused.load(Relaxed) {
            page.clear();
            return;
        }
        let prop = MessageType::MsgProp as i32;
        if page.messages().iter().any(|m| m.msg_type == prop) {
            page.take_where(
                |m| m.msg_type == prop,
                |m| {
                    if let Some(m) = self.propc.push(m) {
                        self.dropped_received(&m);
                    }
                },
            );
        }
        if self.inline {
            process_page(self.id, &*self.raft, page);
            page.clear();
            return;
        }
        self.recvc.push_page(reader, |m| self.dropped_received(m));
    }

    /// A stream reader's end of the receive queue.
    pub fn reader_pages(&self) -> ReaderPages {
        self.recvc.reader_pages()
    }

    /// Bytes read from streams into messages waiting for the worker.
    pub fn receive_queued_bytes(&self) -> usize {
        self.recvc.queued_bytes()
    }

    /// Waits until the worker has processed half the backlog (or the queue is closed).
    pub async fn receive_drained(&self) {
        self.recvc.drained().await;
    }

    fn dropped_received(&self, m: &Message) {
        self.counters.received_failures.fetch_add(1, Relaxed);
        let kind = message_type_name(m.msg_type).unwrap_or("unknown");
        if self.status.is_active() {
            tracing::warn!(local_member_id = %format_args!("{:x}", self.local), "dropped {kind} from {:x} since receiving buffer is full", m.from);
        } else {
            tracing::debug!(local_member_id = %format_args!("{:x}", self.local), "dropped {kind} from {:x} since receiving buffer is full", m.from);
        }
    }

    /// The highest term seen in outgoing messages to the peer.
    pub fn term(&self) -> u64 {
        self.term.load(Relaxed)
    }

    /// Pauses (test control): messages to and from the peer are dropped.
    pub fn pause(&self) {
        self.paused.store(true, Relaxed);
    }

    /// Resumes after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.store(false, Relaxed);
    }

    /// Whether paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// Stops the peer: its tasks end and its queues close.
    pub fn stop(&self) {
        self.stopped.store(true, Relaxed);
        for q in [&self.msgapp, &self.message] {
            q.close();
        }
        self.pipeline.close();
        self.stop_signal.notify_waiters();
    }

    /// Whether stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    /// Resolves once the peer is stopped: a task selects on it to end at once, not at
    /// its next check (on a shared I/O thread, the transport's stop waits for that).
    pub async fn stopped(&self) {
        let stop = self.stop_signal.notified();
        tokio::pin!(stop);
        // Registered before the check, so a stop between the two is not missed.
        stop.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        stop.await;
    }

    /// The application.
    pub fn raft(&self) -> &Arc<dyn Raft> {
        &self.raft
    }
}

/// Hands every message of `page` to `raft` (by reference when it borrows), payloads the
/// reader left unsliced sliced here first. The messages stay in the page: whoever
/// decodes into it next empties it (but payloads sliced here are let go of here).
fn process_page(id: u64, raft: &dyn Raft, page: &mut Page) {
    let failed = |e: super::raft::ProcessError| {
        tracing::warn!(remote_peer_id = %format_args!("{id:x}"), error = %e, "failed to process Raft message");
    };
    if raft.borrows() {
        page.for_each_resolved(|m| {
            if let Err(e) = raft.process_borrowed(m) {
                failed(e);
            }
        });
    } else {
        page.take_each(|m| {
            if let Err(e) = raft.process(m) {
                failed(e);
            }
        });
    }
}

/// Starts the two worker threads that drain a peer's receive queues into `process`.
pub fn spawn_workers(id: u64, receivers: PeerReceivers, raft: Arc<dyn Raft>) {
    for (name, rx) in [("recv", receivers.recv), ("prop", receivers.prop)] {
        let raft = raft.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rafthttp-{name}-{id:x}"))
            .spawn(move || {
                // Ends when the peer is dropped (which closes the queue).
                let mut page = Page::default();
                while rx.pop_page(&mut page) {
                    process_page(id, &*raft, &mut page);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a receive worker");
        }
    }
}
