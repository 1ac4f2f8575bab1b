//! Entry payloads decoded but not yet sliced out of their frame, so that another thread
//! can take (and later let go of) the slices.
//!
//! An entry's payload is a [`Bytes`] slice of the receive buffer, and every slice bumps
//! that buffer's reference count once when made and once when dropped: two locked
//! instructions per entry. On a 100-entry message those were over a quarter of the I/O
//! thread's time, the thread every stream of a transport shares, while the worker that
//! processes the message sat mostly idle. A decoder given a [`Deferred`] parses every
//! entry as before (errors are found, and the stream ended, exactly where they were) but
//! records where each payload lies, in a [`PayloadRanges`] that many messages share,
//! instead of slicing it; the worker [`resolve`](Deferred::resolve)s them before
//! processing and [`release`](Deferred::release)s them after, so both counts land on its
//! CPU and the I/O thread takes one reference per message. Messages with fewer than
//! [`DEFER_MIN_ENTRIES`] entries are sliced at once: for them the one reference handed
//! from thread to thread would cost more than it saves.

use bytes::Bytes;

use crate::raftpb::Message;

/// Fewest entries in a frame for its payloads to be deferred.
pub const DEFER_MIN_ENTRIES: u64 = 8;

/// Marks an entry whose `data` is already what it should be (absent, or decoded by the
/// slow path): resolving leaves it alone.
const KEEP: (usize, usize) = (1, 0);

/// Payload ranges of a run of decoded messages (a receive page's), appended as they
/// are decoded: one vector for them all, so that a message adds no allocation of its
/// own. Each message's [`Deferred`] says where its ranges start.
#[derive(Debug, Default)]
pub struct PayloadRanges {
    /// Per deferred entry, in decoding order: its payload's range in its frame, or
    /// [`KEEP`].
    ranges: Vec<(usize, usize)>,
}

impl PayloadRanges {
    /// Forgets every range (once none of the messages that recorded them needs them).
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Ranges recorded.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether none are recorded.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Copies the ranges `d` recorded in `from` to the end of these, and points `d` at
    /// them (its message moves to the messages these ranges serve).
    pub fn adopt(&mut self, from: &PayloadRanges, d: &mut Deferred) {
        if !d.is_deferred() {
            return;
        }
        let first = self.ranges.len();
        if let Some(theirs) = from.ranges.get(d.first..d.first + d.count) {
            self.ranges.extend_from_slice(theirs);
        }
        d.first = first;
    }
}

/// Where one decoded message's payloads lie in its frame, until resolved.
#[derive(Debug, Default)]
pub struct Deferred {
    /// The frame the ranges are in; `None` when nothing is deferred.
    frame: Option<Bytes>,
    /// The message's first range in its [`PayloadRanges`], and how many it has.
    first: usize,
    count: usize,
    /// Whether [`resolve`](Self::resolve) sliced the payloads, so that whoever resolved
    /// them also lets them go.
    resolved: bool,
}

impl Deferred {
    /// Whether the message has payloads not yet sliced, or sliced by
    /// [`resolve`](Self::resolve) and not yet let go of.
    #[inline]
    pub fn is_deferred(&self) -> bool {
        self.frame.is_some()
    }

    /// Starts recording a message of `entries` entries at the end of `ranges`.
    pub(crate) fn start(&mut self, ranges: &mut PayloadRanges, entries: usize) {
        self.clear();
        self.first = ranges.ranges.len();
        ranges.ranges.reserve(entries);
    }

    /// Records the next entry's payload range in the frame (`None`: leave its data).
    #[inline(always)]
    pub(crate) fn push(&mut self, ranges: &mut PayloadRanges, range: Option<(usize, usize)>) {
        ranges.ranges.push(range.unwrap_or(KEEP));
        self.count += 1;
    }

    /// The ranges recorded since [`start`](Self::start) belong to `frame` (one reference
    /// for them all).
    pub(crate) fn finish(&mut self, frame: &Bytes) {
        self.frame = Some(frame.clone());
    }

    /// Undoes a [`start`](Self::start) whose message failed to decode.
    pub(crate) fn abandon(&mut self, ranges: &mut PayloadRanges) {
        ranges.ranges.truncate(self.first);
        self.clear();
    }

    fn clear(&mut self) {
        self.frame = None;
        self.first = 0;
        self.count = 0;
        self.resolved = false;
    }

    /// Slices each deferred payload out of the frame into `m`'s entries (`ranges` are
    /// the ones this was recorded in). The frame is kept until
    /// [`release`](Self::release), which then lets these go as well.
    pub fn resolve(&mut self, m: &mut Message, ranges: &PayloadRanges) {
        let Some(frame) = &self.frame else {
            return;
        };
        if self.resolved {
            return;
        }
        let len = frame.len();
        let mine = ranges
            .ranges
            .get(self.first..self.first + self.count)
            .unwrap_or_default();
        for (e, &(a, b)) in m.entries.iter_mut().zip(mine) {
            // The decoder checked every range against the frame; the guard keeps a
            // mismatched pair from panicking all the same.
            if a <= b && b <= len {
                e.data = Some(frame.slice(a..b));
            }
        }
        self.resolved = true;
    }

    /// Lets go of the frame and of the payloads [`resolve`](Self::resolve) sliced into
    /// `m` (keeping its entry vector's capacity), on the thread that resolved them.
    pub fn release(&mut self, m: &mut Message) {
        if self.resolved {
            m.entries.clear();
        }
        self.clear();
    }

    /// Lets go of the frame only (the message was moved out, or is being emptied by
    /// whoever empties it).
    #[inline]
    pub fn forget(&mut self) {
        if self.is_deferred() {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::Entry;

    /// A message's payload ranges recorded in `ranges` as a decoder records them; `None`
    /// is an entry whose data is left as it is.
    fn recorded(
        ranges: &mut PayloadRanges,
        frame: &Bytes,
        payloads: &[Option<(usize, usize)>],
    ) -> Deferred {
        let mut d = Deferred::default();
        d.start(ranges, payloads.len());
        for &p in payloads {
            d.push(ranges, p);
        }
        d.finish(frame);
        d
    }

    fn entries(n: usize) -> Message {
        Message {
            entries: vec![Entry::default(); n],
            ..Default::default()
        }
    }

    #[test]
    fn resolve_slices_recorded_ranges_and_keeps_the_rest() {
        let frame = Bytes::from_static(b"0123456789");
        let mut ranges = PayloadRanges::default();
        // Another message's ranges come first in the shared vector.
        let mut other = recorded(&mut ranges, &frame, &[Some((0, 1))]);
        // The last is out of the frame: left alone, no panic.
        let mut d = recorded(
            &mut ranges,
            &frame,
            &[Some((2, 5)), None, Some((7, 7)), Some((8, 99))],
        );
        let kept = Bytes::from_static(b"slow path");
        let mut m = entries(4);
        m.entries[1].data = Some(kept.clone());
        assert!(d.is_deferred());
        d.resolve(&mut m, &ranges);
        d.resolve(&mut m, &ranges); // twice is once
        let data: Vec<_> = m.entries.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data,
            [
                Some(Bytes::from_static(b"234")),
                Some(kept),
                Some(Bytes::new()),
                None
            ]
        );
        let cap = m.entries.capacity();
        d.release(&mut m);
        assert!(m.entries.is_empty() && m.entries.capacity() == cap);
        assert!(!d.is_deferred());
        let mut first = entries(1);
        other.resolve(&mut first, &ranges);
        assert_eq!(first.entries[0].data.as_deref(), Some(&b"0"[..]));
    }

    #[test]
    fn releasing_unresolved_payloads_leaves_the_message_alone() {
        let mut ranges = PayloadRanges::default();
        let mut d = recorded(&mut ranges, &Bytes::from_static(b"x"), &[Some((0, 1))]);
        let mut m = entries(1);
        d.release(&mut m);
        assert_eq!(m.entries.len(), 1, "not resolved here: not ours to clear");
        assert!(!d.is_deferred());
    }

    #[test]
    fn adopted_ranges_move_with_their_message_and_an_abandoned_start_leaves_none() {
        let frame = Bytes::from_static(b"abcdef");
        let mut from = PayloadRanges::default();
        let mut d = recorded(&mut from, &frame, &[Some((0, 2)), Some((4, 6))]);
        let mut failed = Deferred::default();
        failed.start(&mut from, 3);
        failed.push(&mut from, Some((0, 1)));
        failed.abandon(&mut from);
        assert_eq!(from.len(), 2, "a failed message's ranges are taken back");
        let mut to = PayloadRanges::default();
        to.ranges.push((0, 0)); // someone else's
        to.adopt(&from, &mut d);
        from.clear();
        let mut m = entries(2);
        d.resolve(&mut m, &to);
        let data: Vec<_> = m.entries.iter().map(|e| e.data.clone().unwrap()).collect();
        assert_eq!(data, [&b"ab"[..], &b"ef"[..]]);
    }
}
