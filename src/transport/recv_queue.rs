//! A peer's receive queue (etcd's `recvc`/`propc`): bounded, filled by the I/O thread a
//! read's worth of messages at a time, drained by one worker thread all at once.
//!
//! One lock per read instead of per message, and a wake-up only when the worker sleeps:
//! under load the worker takes thousands of messages per wake. The two `VecDeque`s (the
//! queue's and the worker's) swap places on each drain, so steady state allocates
//! nothing. A full queue refuses what does not fit, as etcd drops on a full `recvc`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use crate::raftpb::Message;

#[derive(Default)]
struct State {
    items: VecDeque<Message>,
    closed: bool,
    waiting: bool,
}

/// A bounded multi-producer, single-consumer queue of received messages.
pub struct RecvQueue {
    state: Mutex<State>,
    cv: Condvar,
    capacity: usize,
}

impl RecvQueue {
    /// A queue holding at most `capacity` messages.
    pub fn new(capacity: usize) -> RecvQueue {
        RecvQueue {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `m`, or gives it back (`Some`) when the queue is full or closed.
    pub fn push(&self, m: Message) -> Option<Message> {
        let mut st = self.lock();
        if st.closed || st.items.len() >= self.capacity {
            return Some(m);
        }
        st.items.push_back(m);
        let wake = st.waiting;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
        None
    }

    /// Queues as much of `batch` as fits, in order, and calls `dropped` for the rest
    /// (after releasing the lock). `batch` is left empty, its capacity kept.
    pub fn push_batch(&self, batch: &mut Vec<Message>, mut dropped: impl FnMut(Message)) {
        if batch.is_empty() {
            return;
        }
        let mut st = self.lock();
        let room = if st.closed {
            0
        } else {
            self.capacity.saturating_sub(st.items.len())
        };
        let take = room.min(batch.len());
        st.items.extend(batch.drain(..take));
        let wake = st.waiting && take > 0;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
        for m in batch.drain(..) {
            dropped(m);
        }
    }

    /// Waits for messages and moves all of them into `out`, which must be empty (its
    /// buffer becomes the queue's). `false` once the queue is closed and drained.
    pub fn pop_all(&self, out: &mut VecDeque<Message>) -> bool {
        debug_assert!(out.is_empty());
        let mut st = self.lock();
        loop {
            if !st.items.is_empty() {
                std::mem::swap(&mut st.items, out);
                return true;
            }
            if st.closed {
                return false;
            }
            st.waiting = true;
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting = false;
        }
    }

    /// Refuses further messages; the worker ends after draining what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(i: u64) -> Message {
        Message {
            index: i,
            ..Default::default()
        }
    }

    #[test]
    fn batches_fill_to_capacity_and_drop_the_rest_in_order() {
        let q = RecvQueue::new(3);
        assert!(q.push(msg(0)).is_none());
        let mut batch: Vec<Message> = (1..5).map(msg).collect();
        let mut dropped = Vec::new();
        q.push_batch(&mut batch, |m| dropped.push(m.index));
        assert!(batch.is_empty());
        assert_eq!(dropped, vec![3, 4]);
        assert_eq!(q.push(msg(9)).map(|m| m.index), Some(9));
        let mut out = VecDeque::new();
        assert!(q.pop_all(&mut out));
        assert_eq!(
            out.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        out.clear();
        assert!(q.push(msg(5)).is_none());
        q.close();
        assert!(q.push(msg(6)).is_some());
        assert!(q.pop_all(&mut out), "queued messages survive close");
        out.clear();
        assert!(!q.pop_all(&mut out));
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_sees_everything_once() {
        let q = Arc::new(RecvQueue::new(4096));
        let w = {
            let q = q.clone();
            std::thread::spawn(move || {
                let (mut out, mut seen) = (VecDeque::new(), Vec::new());
                while q.pop_all(&mut out) {
                    seen.extend(out.drain(..).map(|m| m.index));
                }
                seen
            })
        };
        let mut batch = Vec::new();
        for i in 0..10_000u64 {
            if i % 7 == 0 {
                assert!(q.push(msg(i)).is_none(), "full");
            } else {
                batch.push(msg(i));
                if batch.len() == 50 {
                    q.push_batch(&mut batch, |_| panic!("full"));
                }
            }
            while q.len() > 2000 {
                std::thread::yield_now();
            }
        }
        q.push_batch(&mut batch, |_| panic!("full"));
        q.close();
        let seen = w.join().unwrap();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
    }
}
