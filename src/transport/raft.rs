//! What the transport needs from the application: etcd's `Raft` interface, plus the
//! fatal-error channel (etcd's `ErrorC`).

use crate::raftpb::Message;

/// How a snapshot send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The peer received it.
    Finish,
    /// It was not delivered.
    Failure,
}

/// Why `process` refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The sender has been removed from the cluster (answered with 403 on the pipeline).
    #[error("cannot process message from removed member")]
    RemovedMember,
    /// Anything else (answered with 500).
    #[error("{0}")]
    Other(String),
}

/// The application's raft node, as the transport calls it. Called from the transport's
/// threads; `process` may block (the transport calls it from worker threads, never from
/// an I/O thread).
pub trait Raft: Send + Sync + 'static {
    /// Steps a received message into raft.
    fn process(&self, m: Message) -> Result<(), ProcessError>;

    /// Whether received messages should go to [`process_borrowed`](Self::process_borrowed)
    /// instead of [`process`](Self::process). A borrowing application lets the transport
    /// reuse each message's buffers for the next one, so that receiving allocates nothing
    /// per message; it must copy (or convert) what it keeps. Default: no.
    fn borrows(&self) -> bool {
        false
    }

    /// Whether `process` (or `process_borrowed`) returns at once, never waiting on a
    /// lock held for long, a full channel or I/O. The transport then calls it on its I/O
    /// thread as messages are decoded, instead of handing them to a worker thread: one
    /// thread wake-up less per message, which is most of a message's latency. MsgProp,
    /// on which etcd's raft may block while there is no leader, still goes through its
    /// worker. Default: no.
    fn inline(&self) -> bool {
        false
    }

    /// Steps a received message that stays the transport's (see [`borrows`](Self::borrows)).
    /// The default hands a copy to [`process`](Self::process).
    fn process_borrowed(&self, m: &Message) -> Result<(), ProcessError> {
        self.process(m.clone())
    }
    /// Whether `id` was removed from the cluster.
    fn is_id_removed(&self, id: u64) -> bool;
    /// A message to `id` could not be sent (raft should probe it).
    fn report_unreachable(&self, id: u64);
    /// How a snapshot to `id` ended.
    fn report_snapshot(&self, id: u64, status: SnapshotStatus);

    /// Receives a snapshot's database bytes (what followed the envelope on
    /// `POST /raft/snapshot`), before `process(envelope)` is called. Runs on a worker
    /// thread; `data` streams the bytes as they arrive and ends with the body. Read it
    /// with `read`, or with `fill_buf`/`consume` to write the pieces as they arrived
    /// without copying them first. An `Err` is answered with 500 `failed to save KV
    /// snapshot (…)`. The default discards them.
    fn receive_snapshot(
        &self,
        envelope: &Message,
        data: &mut dyn std::io::BufRead,
    ) -> Result<(), String> {
        let _ = envelope;
        std::io::copy(data, &mut std::io::sink())
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// A fatal error, delivered on the transport's error channel: the application should
/// stop, as etcd does when it reads `ErrorC`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// A peer told us we were removed (410 on a stream dial, or 403 on a POST).
    #[error("the member has been permanently removed from the cluster")]
    MemberRemoved,
}
