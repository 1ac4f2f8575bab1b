//! etcd's `snapshotSender`: sends one snapshot as `POST /raft/snapshot`, the envelope
//! followed by exactly `size` bytes of database read from the application's reader, in
//! chunks, never gathered whole. A short or long reader fails the send, as etcd's does.

use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::peer::Peer;
use super::raft::{FatalError, SnapshotStatus};
use super::Shared;
use crate::codec::encode_snapshot_envelope;
use crate::http::client::Client;
use crate::http::write::HeaderValue;
use crate::io::thread::IoThread;
use crate::io::{Backend, BufferPool, IoBackend, IoTask, ThreadScheduling};
use crate::raftpb::Message;

/// Bytes read from the application's reader per chunk (one chunk and one vectored
/// write each: larger pieces mean fewer syscalls and wake-ups per snapshot).
const PIECE: usize = 256 * 1024;

/// One snapshot on its way to a peer. Its outcome is reported exactly once from the
/// moment it is made: dropped unrun (its thread would not start), it reports a failure.
pub struct SnapshotSend {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    envelope: Message,
    data: SnapshotData,
    outcome: Outcome,
}

impl SnapshotSend {
    /// A send of `envelope` and `data` to `peer`, counted in flight until reported.
    pub fn new(
        shared: Arc<Shared>,
        peer: Arc<Peer>,
        envelope: Message,
        data: SnapshotData,
    ) -> SnapshotSend {
        SnapshotSend {
            outcome: Outcome::new(peer.clone()),
            shared,
            peer,
            envelope,
            data,
        }
    }
}

/// Where a snapshot's database bytes come from.
pub enum SnapshotData {
    /// A reader that must yield exactly this many bytes; read on a blocking thread into
    /// pooled pieces.
    Reader(Box<dyn Read + Send>, u64),
    /// Bytes already in memory, written by reference (no copy before the socket).
    Bytes(Bytes),
}

impl SnapshotData {
    /// How many bytes the snapshot carries.
    pub fn size(&self) -> u64 {
        match self {
            SnapshotData::Reader(_, size) => *size,
            SnapshotData::Bytes(b) => b.len() as u64,
        }
    }
}

/// Feeds `data` to `tx` as slices of [`PIECE`] bytes.
async fn feed_bytes(data: Bytes, tx: tokio::sync::mpsc::Sender<Result<Bytes, String>>) {
    let mut at = 0;
    while at < data.len() {
        let end = (at + PIECE).min(data.len());
        if tx.send(Ok(data.slice(at..end))).await.is_err() {
            return;
        }
        at = end;
    }
}

/// Piece buffers kept for reuse: the channel's capacity plus the pieces the writer may
/// hold, so that a snapshot in steady state reuses memory that is already mapped instead
/// of faulting in fresh pages for every piece.
const SPARE_PIECES: usize = 12;

/// A buffer of at least `want` bytes' capacity: a spare whose pieces the writer has all
/// dropped, or a new one.
fn take_piece(spares: &mut Vec<BytesMut>, want: usize) -> BytesMut {
    match spares.iter_mut().position(|b| b.try_reclaim(want)) {
        Some(i) => spares.swap_remove(i),
        None => BytesMut::with_capacity(PIECE),
    }
}

/// Reads exactly `size` bytes from `data` into `tx`, then checks nothing is left.
fn pump(
    mut data: Box<dyn Read + Send>,
    size: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, String>>,
) {
    let mut left = size;
    let mut spares: Vec<BytesMut> = Vec::with_capacity(SPARE_PIECES);
    loop {
        let want = (left.min(PIECE as u64) as usize).max(1);
        let mut buf = take_piece(&mut spares, want);
        // `Read` needs initialised memory; zeroing reused pages costs far less than
        // faulting in new ones.
        buf.resize(want, 0);
        let n = match data.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.to_string()));
                return;
            }
        };
        if n == 0 {
            if left > 0 {
                let _ = tx.blocking_send(Err(format!(
                    "unexpected EOF: {left} of {size} snapshot bytes missing"
                )));
            }
            return;
        }
        if left == 0 {
            let _ = tx.blocking_send(Err(format!(
                "snapshot reader yields more than {size} bytes"
            )));
            return;
        }
        let n = n.min(left as usize);
        left -= n as u64;
        buf.truncate(n);
        let piece = buf.split().freeze();
        if spares.len() < SPARE_PIECES {
            // Empty now; its memory comes back once the writer drops `piece`.
            spares.push(buf);
        }
        if tx.blocking_send(Ok(piece)).is_err() {
            return;
        }
    }
}

/// The thread a peer's snapshots are sent from: started with the first and kept for the
/// next, because a thread and an I/O runtime (an io_uring's setup and teardown) cost more
/// than a small snapshot takes to send, and let go (not waited for) with the peer.
/// Sends to one peer share it (raft sends a follower one snapshot at a time); sends to
/// different peers run on their own threads, as before.
#[derive(Debug, Default)]
pub struct SnapshotThread(std::sync::Mutex<Option<IoThread>>);

impl SnapshotThread {
    /// Runs `task` on the thread, starting it (named `name`) if it is not running. A
    /// task that cannot be run is dropped, which is how a [`SnapshotSend`] reports a
    /// failure.
    pub fn spawn<T: IoTask + Send + 'static>(
        &self,
        name: &str,
        backend: IoBackend,
        sched: ThreadScheduling,
        task: T,
    ) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            match IoThread::spawn(name, backend, sched) {
                Ok(thread) => *slot = Some(thread),
                Err(e) => {
                    tracing::warn!(thread = name, error = %e, "cannot start a snapshot thread");
                    return;
                }
            }
        }
        if let Some(thread) = slot.as_ref() {
            if thread.spawn_task(task).is_err() {
                // Gone (or, with a thousand sends queued, swamped): the next send starts
                // a new thread.
                if let Some(old) = slot.take() {
                    old.detach();
                }
            }
        }
    }
}

impl Drop for SnapshotThread {
    fn drop(&mut self) {
        let slot = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(thread) = slot.take() {
            thread.detach();
        }
    }
}

/// Reports a snapshot's outcome to the application exactly once: a send dropped before
/// it ended (its peer stopped, its thread's runtime would not start, no URL to send to)
/// reports a failure, as etcd's does when its request is cancelled.
struct Outcome {
    peer: Option<Arc<Peer>>,
}

impl Outcome {
    /// Counts a send to `peer` in flight.
    fn new(peer: Arc<Peer>) -> Outcome {
        peer.counters.snapshot_send.inflight.fetch_add(1, Relaxed);
        Outcome { peer: Some(peer) }
    }

    fn report(mut self, status: SnapshotStatus) {
        self.settle(status);
    }

    /// Reports `status` unless reported already.
    fn settle(&mut self, status: SnapshotStatus) {
        if let Some(peer) = self.peer.take() {
            peer.counters.snapshot_send.inflight.fetch_sub(1, Relaxed);
            peer.raft().report_snapshot(peer.id, status);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.settle(SnapshotStatus::Failure);
    }
}

impl IoTask for SnapshotSend {
    type Output = ();

    async fn run<B: Backend>(self) {
        let SnapshotSend {
            shared,
            peer,
            envelope,
            data,
            outcome,
        } = self;
        let status = tokio::select! {
            status = send::<B>(shared, peer.clone(), envelope, data) => status,
            () = peer.stopped() => SnapshotStatus::Failure,
        };
        outcome.report(status);
    }
}

/// Sends the snapshot and says how it went (the caller reports it).
async fn send<B: Backend>(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    envelope: Message,
    data: SnapshotData,
) -> SnapshotStatus {
    // Nowhere to send it: no reader is started for it either.
    let Some(url) = peer.urls.pick() else {
        return SnapshotStatus::Failure;
    };
    let size = data.size();
    let client: Client<B> = Client::new(
        shared.client_config(),
        Rc::new(BufferPool::new(16 * 1024, 1)),
    );
    let headers = shared.request_headers(Some((
        "Content-Type",
        HeaderValue::Static("application/octet-stream"),
    )));
    let index = envelope.snapshot.metadata.index;
    let started = std::time::Instant::now();
    let metrics = &peer.counters.snapshot_send;
    tracing::info!(snapshot_index = index, remote_peer_id = %format_args!("{:x}", peer.id), bytes = size, "sending database snapshot");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut head = BytesMut::new();
    encode_snapshot_envelope(&envelope, &mut head);
    let _ = tx.send(Ok(head.freeze())).await;
    let feeder = match data {
        SnapshotData::Reader(data, size) => {
            let job = tokio::task::spawn_blocking(move || pump(data, size, tx));
            Box::pin(async move { drop(job.await) })
                as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        }
        SnapshotData::Bytes(data) => Box::pin(feed_bytes(data, tx)),
    };
    let feeder = tokio::task::spawn_local(feeder);
    let result = client
        .request_streamed(&url, "POST", "/raft/snapshot", &headers, &mut rx)
        .await;
    drop(rx);
    let _ = feeder.await;
    let error = match result {
        Ok(r) if r.status == 204 => {
            metrics.success.fetch_add(1, Relaxed);
            metrics.duration.observe(started.elapsed().as_secs_f64());
            peer.status.activate();
            peer.counters.sent_bytes.fetch_add(size, Relaxed);
            tracing::info!(snapshot_index = index, remote_peer_id = %format_args!("{:x}", peer.id), bytes = size, "sent database snapshot");
            return SnapshotStatus::Finish;
        }
        Ok(r) if r.status == 403 => {
            let _ = shared.fatal.try_send(FatalError::MemberRemoved);
            FatalError::MemberRemoved.to_string()
        }
        Ok(r) => format!(
            "unexpected http status {} while posting to {:?}: {}",
            r.status,
            format!("{url}/raft/snapshot"),
            String::from_utf8_lossy(&r.body).trim_end()
        ),
        Err(e) => e.to_string(),
    };
    tracing::warn!(snapshot_index = index, remote_peer_id = %format_args!("{:x}", peer.id), error = %error, "failed to send database snapshot");
    peer.post_failed(&url, "sendMsgSnap", &error);
    peer.raft().report_unreachable(peer.id);
    SnapshotStatus::Failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::peer::QueueSizes;
    use crate::transport::raft::{ProcessError, Raft};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Reports(Mutex<Vec<SnapshotStatus>>);
    impl Raft for Reports {
        fn process(&self, _: Message) -> Result<(), ProcessError> {
            Ok(())
        }
        fn is_id_removed(&self, _: u64) -> bool {
            false
        }
        fn report_unreachable(&self, _: u64) {}
        fn report_snapshot(&self, _: u64, status: SnapshotStatus) {
            self.0.lock().unwrap().push(status);
        }
    }

    /// Sends the thread it runs on, then holds `hold` until its runtime drops it.
    struct WhereAmI {
        at: std::sync::mpsc::Sender<std::thread::ThreadId>,
        hold: Option<std::sync::mpsc::Sender<()>>,
    }

    impl IoTask for WhereAmI {
        type Output = ();
        async fn run<B: Backend>(self) {
            let _ = self.at.send(std::thread::current().id());
            let _hold = self.hold;
            std::future::pending::<()>().await;
        }
    }

    #[test]
    fn a_peers_snapshots_share_one_thread_which_ends_with_it() {
        let thread = SnapshotThread::default();
        let (at, seen) = std::sync::mpsc::channel();
        let (hold, held) = std::sync::mpsc::channel::<()>();
        for _ in 0..2 {
            let task = WhereAmI {
                at: at.clone(),
                hold: Some(hold.clone()),
            };
            thread.spawn(
                "snap-test",
                IoBackend::Epoll,
                ThreadScheduling::Normal,
                task,
            );
        }
        drop(hold);
        let wait = std::time::Duration::from_secs(5);
        let first = seen.recv_timeout(wait).unwrap();
        let second = seen.recv_timeout(wait).unwrap();
        assert_eq!(first, second, "both sends ran on one thread");
        assert_ne!(first, std::thread::current().id());
        // Still running (pending for ever) until the owner lets the thread go: then its
        // runtime ends and drops them, without the owner waiting for it.
        assert_eq!(
            held.recv_timeout(std::time::Duration::from_millis(50)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        drop(thread);
        assert_eq!(
            held.recv_timeout(wait),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the tasks were dropped with the thread's runtime"
        );
    }

    #[test]
    fn an_outcome_is_reported_once_and_a_dropped_one_as_a_failure() {
        let raft = Arc::new(Reports::default());
        let (peer, _receivers) = Peer::new(
            1,
            2,
            vec!["http://127.0.0.1:1".parse().unwrap()],
            QueueSizes::default(),
            raft.clone(),
            false,
        );
        let in_flight = || peer.counters.snapshot_send.inflight.load(Relaxed);
        let reported = Outcome::new(peer.clone());
        let dropped = Outcome::new(peer.clone());
        assert_eq!(in_flight(), 2);
        reported.report(SnapshotStatus::Finish);
        assert_eq!(*raft.0.lock().unwrap(), vec![SnapshotStatus::Finish]);
        drop(dropped);
        assert_eq!(
            *raft.0.lock().unwrap(),
            vec![SnapshotStatus::Finish, SnapshotStatus::Failure]
        );
        assert_eq!(in_flight(), 0);
    }
}
