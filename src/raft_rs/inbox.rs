//! The transport's side of a raft-rs loop: an implementation of the transport's
//! [`Raft`] trait that converts each received message and queues it, with the
//! unreachable and snapshot reports, for the thread that owns the `RawNode`.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;
use raft::eraftpb;

use super::convert::message_to_raft_rs;
use crate::raftpb::Message;
use crate::transport::{ProcessError, Raft, SnapshotStatus};

/// What a raft loop is told.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer, to step.
    Message(Box<eraftpb::Message>),
    /// The transport could not reach this peer.
    Unreachable(u64),
    /// How a snapshot send ended.
    Snapshot(u64, SnapshotStatus),
    /// Propose this entry data (forwarded to the leader if we are not it).
    Propose(Bytes),
    /// Transfer leadership to this member.
    TransferLeader(u64),
    /// Campaign now (to elect a first leader without waiting for a timeout).
    Campaign,
    /// Stop the loop.
    Stop,
}

/// Queues received messages and reports for a raft loop.
pub struct Inbox {
    tx: SyncSender<Input>,
}

impl Inbox {
    /// An inbox holding up to `capacity` inputs; `process` blocks while it is full, which
    /// pushes back on the transport's receive queues.
    pub fn new(capacity: usize) -> (Arc<Inbox>, Receiver<Input>) {
        let (tx, rx) = sync_channel(capacity);
        (Arc::new(Inbox { tx }), rx)
    }

    /// A sender for the application's own inputs (proposals, stop).
    pub fn sender(&self) -> SyncSender<Input> {
        self.tx.clone()
    }

    fn report(&self, input: Input) {
        // Reports are hints; dropping one when the loop is busy is harmless, and the
        // transport's thread must not wait on the raft loop.
        if let Err(TrySendError::Full(i)) = self.tx.try_send(input) {
            tracing::debug!(input = ?i, "raft inbox full; dropped report");
        }
    }
}

impl Raft for Inbox {
    fn process(&self, m: Message) -> Result<(), ProcessError> {
        let m = message_to_raft_rs(m).map_err(|e| ProcessError::Other(e.to_string()))?;
        self.tx
            .send(Input::Message(Box::new(m)))
            .map_err(|_| ProcessError::Other("raft node stopped".into()))
    }

    fn is_id_removed(&self, _id: u64) -> bool {
        false
    }

    fn report_unreachable(&self, id: u64) {
        self.report(Input::Unreachable(id));
    }

    fn report_snapshot(&self, id: u64, status: SnapshotStatus) {
        self.report(Input::Snapshot(id, status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::MessageType;

    #[test]
    fn process_converts_and_queues() {
        let (inbox, rx) = Inbox::new(2);
        let m = Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 2,
            to: 1,
            ..Default::default()
        };
        inbox.process(m).unwrap();
        inbox.report_unreachable(3);
        inbox.report_unreachable(4); // full: dropped, not blocking
        match rx.recv().unwrap() {
            Input::Message(m) => assert_eq!(m.msg_type, eraftpb::MessageType::MsgHeartbeat),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.recv().unwrap(), Input::Unreachable(3)));
        assert!(rx.try_recv().is_err());
        let bad = Message {
            msg_type: 19,
            ..Default::default()
        };
        assert!(inbox.process(bad).is_err());
        drop(rx);
        assert!(inbox.process(Message::default()).is_err());
    }
}
