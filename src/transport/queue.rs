//! The pipeline's send queue (etcd's `pipeline.msgc`), a queue of whole messages; the
//! streams queue encoded bytes instead (`stream_queue`), and share its [`Generation`].
//! Bounded, so `send` never blocks: a full queue drops the message. The flag, the
//! queue and the consumer's waker live under one short lock, never held across I/O, so
//! that a sender can never push into a queue that a closing connection is about to throw
//! away (spec §5.7: queued messages are outdated once their connection dies).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;

use crate::raftpb::Message;

/// What happened to a pushed message.
#[derive(Debug)]
pub enum Push {
    /// Queued for the current connection.
    Queued,
    /// The queue is full: the message was not queued (drop and report it).
    Full(Message),
    /// No connection is attached: try the next channel.
    NotWorking(Message),
}

#[derive(Debug, Default)]
struct State {
    working: bool,
    /// Bumped by every attach, so that a replaced connection's writer sees it is stale.
    generation: u64,
    queue: VecDeque<Message>,
    waker: Option<Waker>,
}

/// One stream writer's queue.
#[derive(Debug)]
pub struct WriterQueue {
    capacity: usize,
    state: Mutex<State>,
}

/// A connection's claim on the queue, from [`WriterQueue::attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl Generation {
    /// The generation numbered `n` (queues number their attaches from 1).
    pub(crate) fn new(n: u64) -> Generation {
        Generation(n)
    }

    /// Its number.
    pub(crate) fn get(self) -> u64 {
        self.0
    }
}

/// The queue was re-attached to a newer connection (or detached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale;

impl WriterQueue {
    /// A queue of `capacity` messages (etcd: 4096), with its memory reserved up front.
    pub fn new(capacity: usize) -> Self {
        WriterQueue {
            capacity,
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `m` if a connection is attached and there is room. Wakes the writer only
    /// when the queue goes from empty to not empty.
    pub fn push(&self, m: Message) -> Push {
        let waker = {
            let mut s = self.lock();
            if !s.working {
                return Push::NotWorking(m);
            }
            if s.queue.len() >= self.capacity {
                return Push::Full(m);
            }
            s.queue.push_back(m);
            if s.queue.len() == 1 {
                s.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Push::Queued
    }

    /// Whether a connection is attached.
    pub fn is_working(&self) -> bool {
        self.lock().working
    }

    /// Attaches a new connection. Whatever the previous connection left queued is thrown
    /// away (returned as a count, so the caller reports the peer unreachable once), and
    /// the previous connection's writer becomes stale and ends.
    pub fn attach(&self) -> (Generation, usize) {
        let (discarded, waker, generation) = {
            let mut s = self.lock();
            let discarded = s.queue.len();
            s.queue.clear();
            s.generation += 1;
            s.working = true;
            (discarded, s.waker.take(), s.generation)
        };
        if let Some(w) = waker {
            w.wake();
        }
        (Generation(generation), discarded)
    }

    /// The connection of `generation` closed: if it is still the current one, the queue
    /// stops taking messages and its contents are thrown away (returned as a count).
    pub fn detach(&self, generation: Generation) -> usize {
        let waker = {
            let mut s = self.lock();
            if s.generation != generation.0 || !s.working {
                return 0;
            }
            s.working = false;
            let n = s.queue.len();
            s.queue.clear();
            (n, s.waker.take())
        };
        if let Some(w) = waker.1 {
            w.wake();
        }
        waker.0
    }

    /// Ends every connection's claim (transport stop): like [`detach`](Self::detach)
    /// for the current one.
    pub fn close(&self) -> usize {
        let g = Generation(self.lock().generation);
        let n = self.detach(g);
        self.lock().generation += 1;
        n
    }

    /// Moves up to `max` queued messages into `out`. With none queued, registers
    /// `waker` to be woken by the next push. `Err(Stale)` once `generation` has been
    /// replaced or detached: that connection must end.
    pub fn pop_batch(
        &self,
        generation: Generation,
        out: &mut Vec<Message>,
        max: usize,
        waker: &Waker,
    ) -> Result<usize, Stale> {
        let mut s = self.lock();
        if s.generation != generation.0 || !s.working {
            return Err(Stale);
        }
        let n = s.queue.len().min(max);
        if n == 0 {
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                s.waker = Some(waker.clone());
            }
            return Ok(0);
        }
        out.extend(s.queue.drain(..n));
        Ok(n)
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn msg(i: u64) -> Message {
        Message {
            index: i,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_queued_without_a_connection_and_a_full_queue_drops() {
        let q = WriterQueue::new(2);
        assert!(matches!(q.push(msg(1)), Push::NotWorking(_)));
        q.attach();
        assert!(matches!(q.push(msg(1)), Push::Queued));
        assert!(matches!(q.push(msg(2)), Push::Queued));
        assert!(matches!(q.push(msg(3)), Push::Full(m) if m.index == 3));
    }

    #[test]
    fn a_new_connection_outdates_what_was_queued_for_the_old_one() {
        let q = WriterQueue::new(8);
        let (old, discarded) = q.attach();
        assert_eq!(discarded, 0);
        q.push(msg(1));
        q.push(msg(2));
        let (new, discarded) = q.attach();
        assert_eq!(discarded, 2, "the old connection's queue is thrown away");
        let waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(old, &mut out, 10, &waker), Err(Stale));
        assert_eq!(q.pop_batch(new, &mut out, 10, &waker), Ok(0));
        assert_eq!(q.detach(old), 0, "a stale detach changes nothing");
        q.push(msg(3));
        assert_eq!(q.detach(new), 1);
        assert!(matches!(q.push(msg(4)), Push::NotWorking(_)));
    }

    #[test]
    fn the_writer_is_woken_once_per_empty_to_non_empty() {
        let q = WriterQueue::new(8);
        let (g, _) = q.attach();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = count.clone().into();
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(g, &mut out, 10, &waker), Ok(0));
        q.push(msg(1));
        q.push(msg(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(q.pop_batch(g, &mut out, 1, &waker), Ok(1));
        assert_eq!(q.pop_batch(g, &mut out, 10, &waker), Ok(1));
        assert_eq!(out.iter().map(|m| m.index).collect::<Vec<_>>(), [1, 2]);
    }
}
