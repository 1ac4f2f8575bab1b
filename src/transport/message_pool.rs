//! Recycled shells of sent messages, and [`empty`]. An application that sends by value
//! (`Transport::send_message`) hands each message over; once a stream has encoded it,
//! its emptied shell (entry vector capacity kept) comes back here, and the application
//! takes shells with `Transport::recycle_into` to fill and send again, so sending
//! allocates nothing per message. (Sending by reference, `send_ref`, needs none of this.)
//! Received messages are recycled in their pages instead (`recv_queue`).

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
    use std::collections::VecDeque;

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
        pool.give_back_all(batch.drain(..));
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
