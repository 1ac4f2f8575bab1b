//! A batch of bytes to write as one vectored write: framing and small payloads copied
//! into one buffer, large payloads (≥ 16 KiB) kept as their own `Bytes` and written from
//! there, with no user-space copy.

use bytes::{Bytes, BytesMut};

use crate::raftpb::wire::FrameSink;

/// Payloads at least this large are not copied into the batch buffer.
pub const COPY_LIMIT: usize = 16 * 1024;

/// Copied payloads at least this large count as [`Batch::bulk_copied`]: one long copy,
/// written a whole line at a time.
pub const BULK_COPY: usize = 512;

/// Bytes to write together; see the module docs.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    /// Large payloads and the offset in `buf` they stand at. Reused: its capacity is kept.
    segments: Vec<(usize, Bytes)>,
    segment_bytes: usize,
    /// Bytes of the buffer copied from payloads of [`BULK_COPY`] bytes or more.
    bulk_copied: usize,
    /// Whoever writes the batch out should then evict its lines from the caches (see
    /// `cache_lines`): it was filled on another CPU, which will fill it again.
    evict_after_write: bool,
    /// Bytes to write before the batch's chunk, as they are: the rest of a chunk a
    /// sending thread began writing itself (see `http::direct`).
    unframed: Option<Bytes>,
}

impl Batch {
    /// An empty batch whose buffer has `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Batch {
            buf: BytesMut::with_capacity(capacity),
            segments: Vec::new(),
            segment_bytes: 0,
            bulk_copied: 0,
            evict_after_write: false,
            unframed: None,
        }
    }

    /// Asks whoever writes this batch out to write `bytes` first, as they are (not
    /// framed as part of the batch's chunk): the unsent rest of an earlier chunk.
    pub fn set_unframed(&mut self, bytes: Bytes) {
        self.unframed = Some(bytes);
    }

    /// What [`set_unframed`](Self::set_unframed) left, if anything; clears it.
    pub fn take_unframed(&mut self) -> Option<Bytes> {
        self.unframed.take()
    }

    /// Asks whoever writes this batch out to evict its copied bytes from the caches
    /// once written ([`crate::cache_lines::evict`]), or not.
    pub fn set_evict_after_write(&mut self, evict: bool) {
        self.evict_after_write = evict;
    }

    /// Whether the batch was marked by [`set_evict_after_write`](Self::set_evict_after_write);
    /// clears the mark.
    pub fn take_evict_mark(&mut self) -> bool {
        std::mem::take(&mut self.evict_after_write)
    }

    /// The buffer framing bytes are appended to.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends a payload: copied if small, referenced if large.
    pub fn put_payload(&mut self, data: &Bytes) {
        if data.len() >= COPY_LIMIT {
            self.segment_bytes += data.len();
            self.segments.push((self.buf.len(), data.clone()));
        } else {
            if data.len() >= BULK_COPY {
                self.bulk_copied += data.len();
            }
            self.buf.extend_from_slice(data);
        }
    }

    /// Appends `other`'s contents after its first `from` bytes (references stay
    /// references), and empties `other` down to those bytes.
    pub fn append_from(&mut self, other: &mut Batch, from: usize) {
        let from = from.min(other.buf.len());
        let base = self.buf.len();
        self.buf.extend_from_slice(&other.buf[from..]);
        self.bulk_copied += other.bulk_copied;
        for (at, payload) in other.segments.drain(..) {
            self.segment_bytes += payload.len();
            self.segments
                .push((base + at.saturating_sub(from), payload));
        }
        other.truncate(from);
    }

    /// Empties the batch down to the first `keep` bytes of its buffer (a chunk header's
    /// room), keeping its memory.
    pub fn truncate(&mut self, keep: usize) {
        self.buf.truncate(keep);
        self.segments.clear();
        self.segment_bytes = 0;
        self.bulk_copied = 0;
    }

    /// Bytes in the batch, referenced payloads included.
    pub fn len(&self) -> usize {
        self.buf.len() + self.segment_bytes
    }

    /// Whether nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by reference (not copied).
    pub fn referenced_len(&self) -> usize {
        self.segment_bytes
    }

    /// Bytes of the buffer that are copies of payloads of [`BULK_COPY`] bytes or more
    /// (the rest is framing and small payloads).
    pub fn bulk_copied(&self) -> usize {
        self.bulk_copied
    }

    /// Takes the batch's contents from `start` (of the buffer) on, in write order: one
    /// piece if nothing is referenced, else buffer pieces interleaved with the payloads.
    /// The batch is left empty with its memory ready for reuse.
    pub fn take_from(&mut self, start: usize, out: &mut Vec<Bytes>) {
        let mut frozen = self.buf.split().freeze();
        let mut consumed = 0;
        for (at, payload) in self.segments.drain(..) {
            let piece = frozen.split_to(at - consumed);
            consumed = at;
            if !piece.is_empty() {
                out.push(piece);
            }
            out.push(payload);
        }
        if !frozen.is_empty() {
            out.push(frozen);
        }
        self.segment_bytes = 0;
        self.bulk_copied = 0;
        if let Some(first) = out.first_mut() {
            bytes::Buf::advance(first, start.min(first.len()));
        }
    }
}

impl FrameSink for Batch {
    #[inline]
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    #[inline]
    fn put_payload(&mut self, data: &Bytes) {
        Batch::put_payload(self, data);
    }

    #[inline]
    fn written(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_are_referenced_in_place_and_order_is_kept() {
        let big = Bytes::from(vec![7u8; COPY_LIMIT]);
        let mut b = Batch::with_capacity(1024);
        b.buf().extend_from_slice(b"....hdr1");
        b.put_payload(&big);
        b.buf().extend_from_slice(b"hdr2");
        b.put_payload(&Bytes::from_static(b"small"));
        b.put_payload(&big);
        assert_eq!(b.len(), 8 + 4 + 5 + 2 * COPY_LIMIT);
        assert_eq!(b.referenced_len(), 2 * COPY_LIMIT);
        let mut out = Vec::new();
        b.take_from(4, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(&out[0][..], b"hdr1");
        assert_eq!(out[1].as_ptr(), big.as_ptr(), "not copied");
        assert_eq!(&out[2][..], b"hdr2small");
        assert_eq!(out[3].as_ptr(), big.as_ptr());
        assert!(b.is_empty());
    }

    #[test]
    fn bulk_copies_are_counted_until_taken_and_the_eviction_mark_is_taken_once() {
        let mut b = Batch::with_capacity(64);
        b.put_payload(&Bytes::from(vec![1u8; BULK_COPY - 1]));
        assert_eq!(b.bulk_copied(), 0, "a small payload is not bulk");
        b.put_payload(&Bytes::from(vec![1u8; BULK_COPY]));
        b.put_payload(&Bytes::from(vec![1u8; COPY_LIMIT]));
        assert_eq!(
            b.bulk_copied(),
            BULK_COPY,
            "referenced payloads are not copies"
        );
        let mut into = Batch::with_capacity(64);
        into.append_from(&mut b, 0);
        assert_eq!((into.bulk_copied(), b.bulk_copied()), (BULK_COPY, 0));
        into.take_from(0, &mut Vec::new());
        assert_eq!(into.bulk_copied(), 0);

        assert!(!b.take_evict_mark());
        b.set_evict_after_write(true);
        assert!(b.take_evict_mark());
        assert!(!b.take_evict_mark(), "taken once");
    }

    #[test]
    fn appending_a_batch_keeps_its_references_in_place() {
        let big = Bytes::from(vec![7u8; COPY_LIMIT]);
        let mut other = Batch::with_capacity(64);
        other.buf().extend_from_slice(b"roomhdr1");
        other.put_payload(&big);
        other.buf().extend_from_slice(b"tail");
        let mut b = Batch::with_capacity(64);
        b.buf().extend_from_slice(b"x");
        b.append_from(&mut other, 4);
        assert_eq!(&other.buf()[..], b"room", "emptied down to its room");
        assert_eq!(other.referenced_len(), 0);
        let mut out = Vec::new();
        b.take_from(0, &mut out);
        assert_eq!(&out[0][..], b"xhdr1");
        assert_eq!(out[1].as_ptr(), big.as_ptr());
        assert_eq!(&out[2][..], b"tail");
    }
}
