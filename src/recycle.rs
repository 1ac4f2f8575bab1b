//! Buffers that are handed out as `Bytes` slices and reused once every slice is gone.
//!
//! Read buffers and frame-assembly buffers give their bytes away as `Bytes` slices (entry
//! payloads), and those slices may wait in a queue for the application. A buffer still
//! pointed into cannot be written again, so it is retired and a free one taken instead.
//! [`Recycler`] keeps the retired buffers in a FIFO: slices are consumed about in the
//! order they were cut, so the oldest retired buffer is the first to come free, and the
//! check per renewal is a few atomic loads. Those found free go on a stack, and the one
//! found last is reused: a pool that once grew deep (a slow worker, the bench's priming)
//! then keeps reusing the few buffers the flow needs, warm in the caches, rather than
//! cycling through all of them (which cost a 100-entry stream 12% and a 16 KiB one 22%
//! of their throughput). With a bounded number of messages in flight, a steady stream
//! allocates nothing, however many buffers the queue pins.
//! Memory we hold beyond what the slices pin anyway is bounded by `max_retired`, and once
//! the application has kept up for a while (many renewals in a row found nothing cut
//! earlier still held), free buffers beyond `keep_idle` are let go.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Retired buffers, oldest first, waiting for their slices to be dropped, and the ones
/// found free, most recently found last.
#[derive(Debug)]
pub(crate) struct Recycler {
    retired: VecDeque<BytesMut>,
    /// Retired buffers found free (no slice points into them), in the order they were
    /// found: the last came free most recently and is the one reused, so a pool grown
    /// larger than the flow needs (a deep queue once) keeps reusing the same few, warm
    /// buffers rather than cycling through all of them, oldest first.
    free: VecDeque<BytesMut>,
    /// Most buffers tracked, retired and free; past it the coldest free one, or else the
    /// oldest retired one, is let go (its memory is freed when its last slice is).
    max_retired: usize,
    /// Free buffers kept once the application has caught up.
    keep_idle: usize,
    /// Buffers allocated because no retired one was free.
    created: u64,
    /// Renewals in a row that found the application caught up.
    calm: u32,
}

/// Renewals in a row that must find the application caught up before free buffers are
/// let go: with 64 KiB buffers, 4 MiB read while it kept up.
const CALM_RENEWALS: u32 = 64;

/// Retired buffers looked at per renewal for ones that came free: a consumer frees about
/// one per renewal, so a few keep up with it at a few atomic loads.
const LOOKS_PER_RENEWAL: usize = 4;

impl Recycler {
    /// Tracks up to `max_retired` buffers and keeps `keep_idle` free ones when idle.
    pub(crate) const fn new(max_retired: usize, keep_idle: usize) -> Self {
        Recycler {
            retired: VecDeque::new(),
            free: VecDeque::new(),
            max_retired,
            keep_idle,
            created: 0,
            calm: 0,
        }
    }

    /// Makes room for `room` more bytes in `buf`, keeping its contents. In place if no
    /// slice points into it any more; otherwise `buf` is retired and replaced by the
    /// free buffer that came free last, or by a new one of `fresh` bytes (at least what
    /// is needed), with the contents copied over.
    pub(crate) fn renew(&mut self, buf: &mut BytesMut, room: usize, fresh: usize) {
        if buf.capacity() - buf.len() >= room {
            return;
        }
        if buf.try_reclaim(room) {
            // Nothing points into the buffer in use: the application has caught up.
            self.caught_up();
            return;
        }
        let need = buf.len() + room;
        let mut old = std::mem::take(buf);
        *buf = match self.take_free(need) {
            Some(free) => free,
            None => {
                self.created += 1;
                BytesMut::with_capacity(fresh.max(need))
            }
        };
        buf.extend_from_slice(&old);
        // Retired even with no capacity left: a buffer read full and cut up has none, and
        // its memory comes back whole once its slices are gone. (A buffer that never had
        // memory looks the same, and is let go at the first look that passes it over.)
        old.clear();
        if is_free(&mut old) {
            self.caught_up();
            self.free.push_back(old);
        } else {
            self.calm = 0;
            self.retired.push_back(old);
        }
        while self.retired.len() + self.free.len() > self.max_retired {
            if self.free.pop_front().is_none() {
                self.retired.pop_front();
            }
        }
    }

    /// Counts a renewal that found the application caught up (nothing cut earlier still
    /// held); after [`CALM_RENEWALS`] in a row, free buffers beyond `keep_idle` are let
    /// go, the coldest first. A consumer that catches up between bursts (a worker woken
    /// per batch) would otherwise lose at every catch-up the buffers its next burst needs
    /// again.
    fn caught_up(&mut self) {
        self.calm = self.calm.saturating_add(1);
        if self.calm >= CALM_RENEWALS {
            while self.free_oldest() {}
            while self.retired.len() + self.free.len() > self.keep_idle
                && self.free.pop_front().is_some()
            {}
        }
    }

    /// Moves the retired buffers that came free to the free ones, looking at a few from
    /// the oldest. If the oldest is still pinned but the one behind it is free, slices
    /// were dropped out of turn: the oldest is held for long (an entry kept in the
    /// application's raft log), so it is let go (its memory is freed with its last slice)
    /// rather than left to block the buffers behind it.
    fn harvest(&mut self) {
        for _ in 0..LOOKS_PER_RENEWAL {
            if self.free_oldest() {
                continue;
            }
            if !self.retired.get_mut(1).is_some_and(is_free) {
                return;
            }
            self.retired.pop_front();
            if let Some(b) = self.retired.pop_front() {
                self.free.push_back(b);
            }
        }
    }

    /// Moves the oldest retired buffer to the free ones if no slice points into it.
    /// (A buffer is looked at once: [`is_free`] resets a free one to its whole memory,
    /// after which it no longer looks free.)
    fn free_oldest(&mut self) -> bool {
        if !self.retired.front_mut().is_some_and(is_free) {
            return false;
        }
        if let Some(b) = self.retired.pop_front() {
            self.free.push_back(b);
        }
        true
    }

    /// The buffer that came free last, if it has room for `need` bytes.
    fn take_free(&mut self, need: usize) -> Option<BytesMut> {
        self.harvest();
        if self.free.back_mut()?.try_reclaim(need) {
            return self.free.pop_back();
        }
        None
    }

    /// Buffers tracked now, retired and free.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.retired.len() + self.free.len()
    }

    /// Buffers allocated so far because no retired one was free.
    #[cfg(test)]
    pub(crate) fn created(&self) -> u64 {
        self.created
    }
}

/// Whether no slice points into `buf` any more (it is then reset to its whole memory).
/// `try_reclaim` answers at once, without looking at other owners, when the buffer has
/// the room asked for; asking for one byte more than it has makes it look.
fn is_free(buf: &mut BytesMut) -> bool {
    let more = buf.capacity() + 1;
    buf.try_reclaim(more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Fills `buf` with `n` bytes of `b` and cuts them off as a slice.
    fn cut(buf: &mut BytesMut, r: &mut Recycler, n: usize, b: u8) -> Bytes {
        r.renew(buf, n, 64);
        buf.extend_from_slice(&vec![b; n]);
        buf.split().freeze()
    }

    #[test]
    fn a_free_buffer_is_reused_in_place() {
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::new();
        drop(cut(&mut buf, &mut r, 40, 1));
        let tracked = r.tracked();
        drop(cut(&mut buf, &mut r, 40, 2));
        assert_eq!((r.created(), r.tracked()), (1, tracked));
    }

    #[test]
    fn slices_cut_earlier_keep_their_bytes_while_buffers_are_reused() {
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::new();
        let mut queue = std::collections::VecDeque::new();
        for i in 0..200u32 {
            queue.push_back((i as u8, cut(&mut buf, &mut r, 40, i as u8)));
            if queue.len() > 5 {
                let (b, s) = queue.pop_front().unwrap();
                assert!(s.iter().all(|&x| x == b), "slice {b} was overwritten");
            }
        }
        for (b, s) in queue {
            assert!(s.iter().all(|&x| x == b), "slice {b} was overwritten");
        }
        assert!(r.created() < 20, "buffers were not reused: {}", r.created());
    }

    #[test]
    fn a_steady_queue_stops_allocating() {
        // Five slices in flight at once, consumed in order: once warm, every renewal
        // finds the oldest retired buffer free.
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::new();
        let mut queue = std::collections::VecDeque::new();
        for i in 0..100u32 {
            queue.push_back(cut(&mut buf, &mut r, 40, i as u8));
            if queue.len() > 5 {
                queue.pop_front();
            }
        }
        let warm = r.created();
        for i in 0..1000u32 {
            queue.push_back(cut(&mut buf, &mut r, 40, i as u8));
            queue.pop_front();
        }
        assert_eq!(r.created(), warm, "renewals allocated in steady state");
    }

    #[test]
    fn a_pool_grown_deep_reuses_the_buffers_that_came_free_last() {
        // Ten reads held at once (a deep queue, once), then a flow that holds one at a
        // time: the buffers it reads into should be the same few, not all ten in turn
        // (cycling through a pool larger than the flow needs keeps it cold in the caches).
        let mut r = Recycler::new(64, 16);
        let mut buf = BytesMut::new();
        let held: Vec<Bytes> = (0..10u8).map(|i| cut(&mut buf, &mut r, 64, i)).collect();
        drop(held);
        let mut in_flight = std::collections::VecDeque::new();
        let mut used = std::collections::HashSet::new();
        for i in 0..200u32 {
            in_flight.push_back(cut(&mut buf, &mut r, 64, i as u8));
            used.insert(in_flight.back().map(|s| s.as_ptr() as usize));
            if in_flight.len() > 1 {
                in_flight.pop_front();
            }
        }
        assert!(used.len() <= 3, "cycled through {} buffers", used.len());
        assert!(r.created() <= 12, "allocated {}", r.created());
    }

    #[test]
    fn a_buffer_cut_up_to_its_last_byte_is_reused() {
        // A read fills its buffer to capacity and every byte is cut off as slices: the
        // buffer has no capacity left, but its memory comes back once they are dropped.
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::with_capacity(64);
        let mut queue = std::collections::VecDeque::new();
        for i in 0..100u32 {
            r.renew(&mut buf, 64, 64);
            let room = buf.capacity() - buf.len();
            buf.extend_from_slice(&vec![i as u8; room]);
            queue.push_back(buf.split().freeze());
            if queue.len() > 3 {
                queue.pop_front();
            }
        }
        assert!(r.created() <= 6, "buffers were not reused: {}", r.created());
    }

    #[test]
    fn the_retired_check_looks_at_other_owners() {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[7; 8]);
        let held = buf.split().freeze();
        assert!(!is_free(&mut buf), "a slice still points into it");
        drop(held);
        assert!(is_free(&mut buf));
        assert!(buf.capacity() >= 64, "reset to its whole memory");
    }

    #[test]
    fn contents_are_carried_into_the_new_buffer() {
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(b"frame-");
        let held = buf.split_to(2).freeze();
        r.renew(&mut buf, 100, 64);
        assert_eq!(&buf[..], b"ame-");
        assert!(buf.capacity() - buf.len() >= 100);
        assert_eq!(&held[..], b"fr");
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn a_long_held_slice_does_not_block_the_buffers_behind_it() {
        let mut r = Recycler::new(64, 2);
        let mut buf = BytesMut::new();
        let kept = cut(&mut buf, &mut r, 40, 0xAA);
        r.renew(&mut buf, 40, 64);
        // From here on slices are dropped at once; the first retired buffer stays pinned.
        for i in 0..50u32 {
            drop(cut(&mut buf, &mut r, 40, i as u8));
            r.renew(&mut buf, 64, 64);
        }
        assert!(
            r.tracked() <= 4,
            "retired buffers piled up: {}",
            r.tracked()
        );
        assert!(kept.iter().all(|&x| x == 0xAA));
    }

    #[test]
    fn tracking_is_bounded_and_free_buffers_are_let_go_when_idle() {
        let mut r = Recycler::new(8, 2);
        let mut buf = BytesMut::new();
        let mut held = Vec::new();
        for i in 0..20u32 {
            held.push(cut(&mut buf, &mut r, 40, i as u8));
            r.renew(&mut buf, 64, 64);
        }
        assert_eq!(r.tracked(), 8, "at most max_retired are tracked");
        drop(held);
        // Caught up: once enough renewals in a row find nothing held, the free buffers
        // beyond `keep_idle` go.
        for i in 0..CALM_RENEWALS {
            assert_eq!(r.tracked(), 8, "let go too early, after {i} calm renewals");
            drop(cut(&mut buf, &mut r, 40, i as u8));
            r.renew(&mut buf, 64, 64);
        }
        assert!(r.tracked() <= 3, "free buffers kept: {}", r.tracked());
    }

    #[test]
    fn bursts_with_catch_ups_between_them_reuse_their_buffers() {
        // A worker woken per batch: ten slices held, then all dropped, again and again.
        let mut r = Recycler::new(64, 2);
        let mut buf = BytesMut::new();
        let mut created_after_first = 0;
        for burst in 0..50 {
            let mut held = Vec::new();
            for i in 0..10u32 {
                held.push(cut(&mut buf, &mut r, 40, i as u8));
                r.renew(&mut buf, 64, 64);
            }
            drop(held);
            // The next renewal finds nothing held: caught up, between two bursts.
            drop(cut(&mut buf, &mut r, 40, 0));
            r.renew(&mut buf, 64, 64);
            if burst == 0 {
                created_after_first = r.created();
            }
        }
        assert_eq!(
            r.created(),
            created_after_first,
            "later bursts allocated again"
        );
    }
}
