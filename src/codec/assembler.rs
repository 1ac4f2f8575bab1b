//! Gathers whole frames out of input that arrives in arbitrary pieces.
//!
//! A frame that lies wholly inside the piece being decoded is returned as a slice of that
//! piece, with no copy. Only a frame that straddles pieces is copied into `pending`, and
//! only as its bytes arrive: nothing is reserved from a length read off the wire. Each
//! codec supplies a resumable scanner that checks every declared length against the cap
//! before asking for more bytes, so the work per arriving byte stays constant even when a
//! frame with many entries is fed one byte at a time.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, Part};
use crate::recycle::Recycler;

/// The outcome of scanning the start of a buffer for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The buffer starts with a whole frame of this many bytes.
    Complete(usize),
    /// The frame needs at least this many bytes in total; fewer are present.
    Need(u64),
}

/// Reads a big-endian u64 at `pos`, or `None` if the buffer is too short.
pub(crate) fn read_u64(buf: &[u8], pos: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(pos..pos.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Decodes the `u64 len | Entry` at `pos` of the whole frame `whole` (the start of
/// `frame`'s bytes, `&frame[..n]`) into `out`, slicing (not copying) the entry's data out
/// of `frame`; nothing after `whole` is read. Returns the position after it.
#[inline]
pub(crate) fn entry_at(
    frame: &Bytes,
    whole: &[u8],
    pos: usize,
    frame_offset: u64,
    out: &mut Vec<crate::raftpb::Entry>,
) -> Result<usize, DecodeError> {
    entry_at_into(frame, whole, pos, frame_offset, out, None)
}

/// [`entry_at`], leaving the payload's slice to `deferred` when given.
#[inline(always)]
pub(crate) fn entry_at_into(
    frame: &Bytes,
    whole: &[u8],
    pos: usize,
    frame_offset: u64,
    out: &mut Vec<crate::raftpb::Entry>,
    deferred: Option<(&mut super::Deferred, &mut super::PayloadRanges)>,
) -> Result<usize, DecodeError> {
    let truncated = || {
        DecodeError::new(
            DecodeErrorKind::Truncated {
                part: Part::Entry,
                missing: 0,
            },
            frame_offset + pos as u64,
        )
    };
    let len = read_u64(whole, pos).ok_or_else(truncated)?;
    let start = pos + 8;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .filter(|&e| e <= whole.len())
        .ok_or_else(truncated)?;
    match deferred {
        None => crate::raftpb::wire::push_entry(frame, whole, start..end, out),
        Some(d) => crate::raftpb::wire::push_entry_deferred(frame, whole, start..end, out, d),
    }
    .map_err(|e| {
        DecodeError::new(
            DecodeErrorKind::Protobuf {
                part: Part::Entry,
                reason: e.to_string(),
            },
            frame_offset + start as u64,
        )
    })?;
    Ok(end)
}

/// Fails with [`DecodeErrorKind::TooLarge`] when a frame would need more than `max` bytes.
pub(crate) fn check_cap(total: u64, max: u64, part: Part, offset: u64) -> Result<(), DecodeError> {
    if total > max {
        return Err(DecodeError::new(
            DecodeErrorKind::TooLarge {
                part,
                len: total,
                limit: max,
            },
            offset,
        ));
    }
    Ok(())
}

/// Scans `u64 len | len bytes` at `start`: the message-stream frame, msgappv2's MsgApp
/// frame and the snapshot envelope. `prefix` is the fixed part before `start`.
pub(crate) fn scan_len_prefixed(
    buf: &[u8],
    start: usize,
    max: u64,
    part: Part,
    frame_offset: u64,
) -> Result<Scan, DecodeError> {
    let Some(len) = read_u64(buf, start) else {
        return Ok(Scan::Need(start as u64 + 8));
    };
    let total = (start as u64 + 8).saturating_add(len);
    check_cap(total, max, part, frame_offset + start as u64)?;
    if (buf.len() as u64) < total {
        return Ok(Scan::Need(total));
    }
    Ok(Scan::Complete(total as usize))
}

/// Resumable scanner for `u64 N | N × (u64 len | len bytes) | trailer`, the body of a
/// msgappv2 AppEntries frame (trailer = the u64 commit) and of a msgapp v1 batch
/// (no trailer). It remembers how far it got, so a resumed scan costs O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryListScan {
    /// Start of the next unscanned entry (or of N, before it is read).
    pos: usize,
    /// Entries still to scan; `None` until N has been read.
    left: Option<u64>,
}

impl EntryListScan {
    /// Scans the list that begins at `start`; `trailer` bytes follow the last entry.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        start: usize,
        trailer: u64,
        max: u64,
        frame_offset: u64,
    ) -> Result<Scan, DecodeError> {
        let mut left = match self.left {
            Some(left) => left,
            None => {
                let Some(n) = read_u64(buf, start) else {
                    return Ok(Scan::Need(start as u64 + 8));
                };
                // Each entry takes at least its 8-byte length: a count the cap could never
                // hold is refused before anything is kept for it.
                let least = (start as u64 + 8)
                    .saturating_add(n.saturating_mul(8))
                    .saturating_add(trailer);
                check_cap(least, max, Part::Frame, frame_offset + start as u64)?;
                self.pos = start + 8;
                n
            }
        };
        while left > 0 {
            let Some(len) = read_u64(buf, self.pos) else {
                self.left = Some(left);
                return Ok(Scan::Need(self.pos as u64 + 8));
            };
            let entry_end = (self.pos as u64 + 8).saturating_add(len);
            let least = entry_end
                .saturating_add((left - 1).saturating_mul(8))
                .saturating_add(trailer);
            check_cap(least, max, Part::Entry, frame_offset + self.pos as u64)?;
            if (buf.len() as u64) < entry_end {
                self.left = Some(left);
                return Ok(Scan::Need(least));
            }
            self.pos = entry_end as usize;
            left -= 1;
        }
        self.left = Some(0);
        let end = self.pos as u64 + trailer;
        if (buf.len() as u64) < end {
            return Ok(Scan::Need(end));
        }
        *self = EntryListScan::default();
        Ok(Scan::Complete(end as usize))
    }
}

/// Where [`FrameAssembler::next_frame_in_place`] found a whole frame.
#[derive(Debug)]
pub(crate) enum Whole {
    /// It is `input[..n]`, still in the input: parse it there, then `advance(n)` past it.
    /// No reference to the input's buffer is taken for it.
    InInput(usize),
    /// It straddled pieces and was gathered into this buffer, all of it the frame.
    Gathered(Bytes),
}

impl Whole {
    /// Runs `parse` on the frame as `(buffer, end)`, where the frame is `buffer[..end]`,
    /// then consumes it from `input` if it lay there.
    #[inline]
    pub(crate) fn parse<R>(self, input: &mut Bytes, parse: impl FnOnce(&Bytes, usize) -> R) -> R {
        // One call of `parse` for both cases, so that it is inlined here: called from two
        // arms it was not, and its result (a `Result` with a 40-byte error) went through
        // the stack, its narrow stores read back by wide loads that stalled.
        let gathered;
        let (frame, len, consumed) = match self {
            Whole::InInput(n) => {
                // `n` was checked against the input when the frame was found.
                let n = n.min(input.len());
                (&*input, n, n)
            }
            Whole::Gathered(frame) => {
                gathered = frame;
                (&gathered, gathered.len(), 0)
            }
        };
        let r = parse(frame, len);
        input.advance(consumed);
        r
    }
}

/// Collects whole frames from a sequence of input pieces; see the module docs.
#[derive(Debug)]
pub(crate) struct FrameAssembler {
    /// The start of a frame that did not fit in one piece.
    pending: BytesMut,
    /// Stream offset of the first byte not yet returned as part of a frame.
    offset: u64,
    /// The first error; once failed, the stream stays failed.
    failed: Option<DecodeError>,
    /// Retired assembly buffers, reused once the frames sliced from them are dropped.
    spares: Recycler,
}

impl Default for FrameAssembler {
    fn default() -> Self {
        FrameAssembler {
            pending: BytesMut::new(),
            offset: 0,
            failed: None,
            spares: Recycler::new(MAX_RETIRED, IDLE_SPARES),
        }
    }
}

/// Capacity aimed for when a new assembly buffer must be allocated.
const SPARE_ASSEMBLY: usize = 64 * 1024;
/// Largest capacity taken up front for a frame that straddles pieces.
const MAX_ASSEMBLY: usize = 1024 * 1024;
/// Retired assembly buffers tracked while frames sliced from them are queued.
const MAX_RETIRED: usize = 256;
/// Free assembly buffers kept once the application has caught up.
const IDLE_SPARES: usize = 16;

impl FrameAssembler {
    /// Returns the next whole frame and its stream offset, consuming from `input`. `None`
    /// means `input` is used up and the frame so far waits in `pending`.
    pub(crate) fn next_frame(
        &mut self,
        input: &mut Bytes,
        scan: impl FnMut(&[u8], u64) -> Result<Scan, DecodeError>,
    ) -> Result<Option<(Bytes, u64)>, DecodeError> {
        Ok(self
            .next_frame_in_place(input, scan)?
            .map(|(whole, offset)| match whole {
                Whole::InInput(n) => (input.split_to(n), offset),
                Whole::Gathered(frame) => (frame, offset),
            }))
    }

    /// [`next_frame`](Self::next_frame) that leaves a frame lying wholly in `input` where
    /// it is ([`Whole::InInput`]) rather than splitting it off: splitting takes a
    /// reference to the input's buffer and lets go of it again, two atomic operations per
    /// frame that a frame with no payload slices need not pay.
    pub(crate) fn next_frame_in_place(
        &mut self,
        input: &mut Bytes,
        mut scan: impl FnMut(&[u8], u64) -> Result<Scan, DecodeError>,
    ) -> Result<Option<(Whole, u64)>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.next_frame_inner(input, &mut scan);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn next_frame_inner(
        &mut self,
        input: &mut Bytes,
        scan: &mut impl FnMut(&[u8], u64) -> Result<Scan, DecodeError>,
    ) -> Result<Option<(Whole, u64)>, DecodeError> {
        let offset = self.offset;
        if self.pending.is_empty() {
            if input.is_empty() {
                return Ok(None);
            }
            match scan(input, offset)? {
                Scan::Complete(n) if n <= input.len() => {
                    self.offset += n as u64;
                    return Ok(Some((Whole::InInput(n), offset)));
                }
                Scan::Complete(_) => return Err(self.internal(offset)),
                Scan::Need(total) => {
                    // The whole piece belongs to this frame: keep it and wait for more.
                    // Room for twice what arrived (most frames then need no second
                    // allocation), never more than the frame needs: memory follows the
                    // bytes received, not a length a peer declared.
                    let need = usize::try_from(total).unwrap_or(usize::MAX);
                    let want = (2 * input.len())
                        .min(MAX_ASSEMBLY)
                        .min(need)
                        .max(input.len());
                    self.make_room(want);
                    self.pending.extend_from_slice(input);
                    input.clear();
                    return Ok(None);
                }
            }
        }
        loop {
            match scan(&self.pending, offset)? {
                Scan::Complete(n) if n <= self.pending.len() => {
                    self.offset += n as u64;
                    let frame = self.pending.split_to(n).freeze();
                    return Ok(Some((Whole::Gathered(frame), offset)));
                }
                Scan::Complete(_) => return Err(self.internal(offset)),
                Scan::Need(total) => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let missing = total.saturating_sub(self.pending.len() as u64);
                    let take = missing.clamp(1, input.len() as u64) as usize;
                    if self.pending.capacity() - self.pending.len() < take {
                        // Room for at least what is gathered already (doubling, as a
                        // `Vec` grows), never more than the frame still lacks.
                        let more = missing.min(self.pending.len() as u64) as usize;
                        self.make_room(take.max(more));
                    }
                    self.pending.extend_from_slice(&input[..take]);
                    input.advance(take);
                }
            }
        }
    }

    /// Makes room in `pending` for `room` more bytes, keeping what it holds, without
    /// allocating when an earlier buffer is free again: frames handed out are slices of
    /// it, so it is reusable only once they are all dropped (see `recycle`). A new buffer
    /// gets some room beyond this frame so that later straddling frames can share it, at
    /// most 16 times what is needed (a peer that declares a large frame and sends little
    /// gets little).
    fn make_room(&mut self, room: usize) {
        let need = self.pending.len() + room;
        let fresh = need.saturating_mul(16).min(SPARE_ASSEMBLY);
        self.spares.renew(&mut self.pending, room, fresh);
    }

    fn internal(&self, offset: u64) -> DecodeError {
        DecodeError::new(
            DecodeErrorKind::Truncated {
                part: Part::Frame,
                missing: 0,
            },
            offset,
        )
    }

    /// Call at end of input: fails if a frame was left incomplete, naming the offset where
    /// it starts; `scan` says how much was missing.
    pub(crate) fn finish(
        &mut self,
        scan: impl FnOnce(&[u8], u64) -> Result<Scan, DecodeError>,
        part: Part,
    ) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let missing = match scan(&self.pending, self.offset)? {
            Scan::Need(total) => total.saturating_sub(self.pending.len() as u64),
            Scan::Complete(_) => 0,
        };
        // Name the frame that was cut short by where it starts.
        let e = DecodeError::new(DecodeErrorKind::Truncated { part, missing }, self.offset);
        self.failed = Some(e.clone());
        Err(e)
    }

    /// Marks the stream failed with `e` (a parse error found after assembly) and returns it.
    pub(crate) fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_prefixed(buf: &[u8], off: u64) -> Result<Scan, DecodeError> {
        scan_len_prefixed(buf, 0, 1 << 20, Part::Frame, off)
    }

    #[test]
    fn whole_frames_in_one_piece_are_slices_of_it() {
        let mut input = Bytes::from_static(b"\0\0\0\0\0\0\0\x02ab\0\0\0\0\0\0\0\x01c");
        let base = input.as_ptr();
        let mut asm = FrameAssembler::default();
        let (f, off) = asm.next_frame(&mut input, len_prefixed).unwrap().unwrap();
        assert_eq!((&f[..], off), (&b"\0\0\0\0\0\0\0\x02ab"[..], 0));
        assert_eq!(f.as_ptr(), base, "no copy");
        let (f, off) = asm.next_frame(&mut input, len_prefixed).unwrap().unwrap();
        assert_eq!((&f[8..], off), (&b"c"[..], 10));
        assert!(asm.next_frame(&mut input, len_prefixed).unwrap().is_none());
        asm.finish(len_prefixed, Part::Frame).unwrap();
    }

    #[test]
    fn a_whole_frame_in_the_piece_is_parsed_where_it_lies() {
        let mut input = Bytes::from_static(b"\0\0\0\0\0\0\0\x02ab\0\0\0\0\0\0\0\x01c");
        let base = input.as_ptr();
        let mut asm = FrameAssembler::default();
        let (whole, off) = asm
            .next_frame_in_place(&mut input, len_prefixed)
            .unwrap()
            .unwrap();
        assert!(matches!(whole, Whole::InInput(10)), "{whole:?}");
        assert_eq!(
            (off, input.len()),
            (0, 19),
            "nothing consumed before the parse"
        );
        let seen = whole.parse(&mut input, |frame, len| {
            assert_eq!(frame.as_ptr(), base, "the input itself, not a slice of it");
            frame[..len].to_vec()
        });
        assert_eq!(seen, b"\0\0\0\0\0\0\0\x02ab");
        assert_eq!(&input[..], b"\0\0\0\0\0\0\0\x01c", "consumed after it");
        // A frame that straddles pieces comes back gathered, all of it the frame.
        let mut first = input.slice(..5);
        let mut rest = input.slice(5..);
        assert!(asm
            .next_frame_in_place(&mut first, len_prefixed)
            .unwrap()
            .is_none());
        let (whole, off) = asm
            .next_frame_in_place(&mut rest, len_prefixed)
            .unwrap()
            .unwrap();
        assert_eq!(off, 10);
        let seen = whole.parse(&mut rest, |frame, len| (frame.len(), len));
        assert_eq!(seen, (9, 9));
        assert!(rest.is_empty());
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_come_out_whole() {
        let data = b"\0\0\0\0\0\0\0\x03xyz\0\0\0\0\0\0\0\0";
        let mut asm = FrameAssembler::default();
        let mut got = Vec::new();
        for b in data.iter() {
            let mut piece = Bytes::copy_from_slice(&[*b]);
            while let Some((f, off)) = asm.next_frame(&mut piece, len_prefixed).unwrap() {
                got.push((f, off));
            }
            assert!(piece.is_empty());
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].0[8..], b"xyz");
        assert_eq!((got[1].0.len(), got[1].1), (8, 11));
    }

    #[test]
    fn truncated_input_reports_what_is_missing() {
        let mut asm = FrameAssembler::default();
        let mut piece = Bytes::from_static(b"\0\0\0\0\0\0\0\x05ab");
        assert!(asm.next_frame(&mut piece, len_prefixed).unwrap().is_none());
        let e = asm.finish(len_prefixed, Part::Frame).unwrap_err();
        assert_eq!(
            e.kind,
            DecodeErrorKind::Truncated {
                part: Part::Frame,
                missing: 3
            }
        );
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn a_length_over_the_cap_fails_before_anything_is_kept() {
        let mut asm = FrameAssembler::default();
        let mut piece = Bytes::from_static(b"\xff\xff\xff\xff\xff\xff\xff\xff");
        let e = asm.next_frame(&mut piece, len_prefixed).unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::TooLarge { .. }), "{e}");
        assert!(asm.pending.capacity() == 0);
        // The stream stays failed.
        let mut more = Bytes::from_static(b"\0");
        assert_eq!(asm.next_frame(&mut more, len_prefixed).unwrap_err(), e);
    }

    #[test]
    fn entry_list_scan_resumes_and_checks_the_count() {
        // N=2: entries "a" and "bc", then an 8-byte trailer.
        let mut frame = Vec::new();
        frame.extend_from_slice(&2u64.to_be_bytes());
        frame.extend_from_slice(&1u64.to_be_bytes());
        frame.push(b'a');
        frame.extend_from_slice(&2u64.to_be_bytes());
        frame.extend_from_slice(b"bc");
        frame.extend_from_slice(&7u64.to_be_bytes());
        let mut s = EntryListScan::default();
        for cut in 0..frame.len() {
            assert!(matches!(
                s.scan(&frame[..cut], 0, 8, 1 << 20, 0).unwrap(),
                Scan::Need(_)
            ));
        }
        assert_eq!(
            s.scan(&frame, 0, 8, 1 << 20, 0).unwrap(),
            Scan::Complete(frame.len())
        );
        let mut s = EntryListScan::default();
        let e = s
            .scan(&u64::MAX.to_be_bytes(), 0, 8, 1 << 20, 5)
            .unwrap_err();
        assert_eq!(e.offset, 5);
    }
}
