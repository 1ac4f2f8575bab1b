//! Recycled message shells, for both directions. Receiving: When the application processes
//! messages by reference ([`Raft::borrows`](super::Raft::borrows)), the worker hands each
//! processed message back here, emptied but with its entry vector's capacity, and the
//! stream reader decodes into it again: receiving then allocates nothing per message.
//! Sending: a stream writer hands each encoded message's shell back to its peer's pool,
//! and the application takes them with `Transport::recycle_into` to fill and send again,
//! so sending allocates nothing per message either. Shells move in batches, one lock per
//! batch on each side.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::raftpb::Message;

/// A bounded pile of empty messages.
pub struct MessagePool {
    shells: Mutex<Vec<Message>>,
    capacity: usize,
}

/// Makes `m` an empty message (`Message::default()`, every field reset, so nothing
/// of what it carried leaks into its next use) that keeps its vectors' capacity. Its
/// entries and context may hold slices of a receive buffer; dropping them lets that
/// buffer be reused.
pub fn empty(m: &mut Message) {
    let mut entries = std::mem::take(&mut m.entries);
    let mut responses = std::mem::take(&mut m.responses);
    entries.clear();
    responses.clear();
    *m = Message {
        entries,
        responses,
        ..Message::default()
    };
}

impl MessagePool {
    /// A pool of at most `capacity` shells.
    pub fn new(capacity: usize) -> MessagePool {
        MessagePool {
            shells: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// Empties every message of `batch` into the pool (those beyond its capacity are
    /// dropped). Leaves `batch` empty.
    pub fn give_back(&self, batch: &mut VecDeque<Message>) {
        self.give_back_all(batch.drain(..));
    }

    /// Empties `msgs` into the pool, as many as it has room for; the rest are dropped.
    pub fn give_back_all(&self, msgs: impl Iterator<Item = Message>) {
        let mut shells = self.shells.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(shells.len());
        let mut msgs = msgs;
        for mut m in msgs.by_ref().take(room) {
            empty(&mut m);
            shells.push(m);
        }
        drop(shells);
        msgs.for_each(drop);
    }

    /// Moves up to `n` shells into `into`.
    pub fn take_many(&self, into: &mut Vec<Message>, n: usize) {
        let mut shells = self.shells.lock().unwrap_or_else(|p| p.into_inner());
        let k = n.min(shells.len());
        let from = shells.len() - k;
        into.extend(shells.drain(from..));
    }

    /// Shells held now.
    pub fn len(&self) -> usize {
        self.shells.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no shells are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::Entry;
    use bytes::Bytes;

    #[test]
    fn shells_come_back_empty_with_capacity_and_the_pool_is_bounded() {
        let pool = MessagePool::new(2);
        let data = Bytes::from(vec![7u8; 100]);
        let mut batch: VecDeque<Message> = (0..3)
            .map(|i| Message {
                index: i,
                entries: vec![
                    Entry {
                        data: Some(data.clone()),
                        ..Default::default()
                    };
                    8
                ],
                context: Some(data.clone()),
                ..Default::default()
            })
            .collect();
        pool.give_back(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(pool.len(), 2);
        // Only the original reference remains: the shells let go of the data.
        assert!(data.is_unique());
        let mut got = Vec::new();
        pool.take_many(&mut got, 5);
        assert_eq!(got.len(), 2);
        assert!(pool.is_empty());
        for m in &got {
            assert!(m.entries.is_empty() && m.entries.capacity() >= 8 && m.context.is_none());
        }
    }
}
