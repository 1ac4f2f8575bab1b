//! Hand-written protobuf encoding and decoding of [`Entry`] and [`Message`], the two
//! types every stream frame carries.
//!
//! prost's generated code is exact but general: it writes varints a byte at a time with a
//! capacity check on each, computes lengths in a separate pass, and decodes `bytes` fields
//! through a `Buf` cursor that clones and drops a reference per field. On the stream hot
//! path that was the largest cost left in the codecs (docs/performance.md). Here:
//!
//! - **Encoding** writes etcd 3.4's bytes (every `nullable=false` field present, in tag
//!   order) in place, into room reserved at the end of the output with one capacity
//!   check; payloads are appended after. A framed message's length is written once the
//!   message is, not counted in a pass before. A [`Message`] whose snapshot is not
//!   empty, or that carries v3.6 `responses`, is left to prost (MsgSnap is rare and
//!   large; its cost is elsewhere).
//! - **Decoding** takes fields in increasing tag order, as every etcd era writes them
//!   (spec §2.2), slicing payloads out of the input with one reference each. Anything
//!   else (an unknown field, a repeated scalar, fields out of order, a malformed varint, a
//!   non-empty snapshot, `responses`) falls back to prost on the same bytes, so the result
//!   and every error are prost's.
//! - **Entries** in the shape etcd gives almost all of them (type and term below 128, an
//!   index below 2^35, a payload under 16 KiB) are written and read a word at a time
//!   (`encode_packed_entry_with_u64_len`, `entry_fields_packed`), with the byte-wise
//!   paths for every other shape.
//!
//! The property tests below hold every path to prost's bytes and values.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::{Entry, Message};

/// Where encoded frames go: a plain buffer that payloads are copied into, or one that
/// keeps large payloads by reference and writes them from where they are (a stream's
/// send batch). Framing always goes into [`buf`](FrameSink::buf).
pub trait FrameSink {
    /// The buffer framing bytes are appended to.
    fn buf(&mut self) -> &mut BytesMut;
    /// Appends a payload (an entry's data, a message's context): copied, unless the sink
    /// keeps it by reference.
    fn put_payload(&mut self, data: &Bytes);
    /// Bytes appended so far, payloads kept by reference included.
    fn written(&self) -> usize;
}

impl FrameSink for BytesMut {
    #[inline]
    fn buf(&mut self) -> &mut BytesMut {
        self
    }

    #[inline]
    fn put_payload(&mut self, data: &Bytes) {
        self.put_slice(data);
    }

    #[inline]
    fn written(&self) -> usize {
        self.len()
    }
}

/// etcd 3.4's encoding of an empty `Snapshot` body (field 9's contents): metadata with an
/// empty conf state (`auto_leave` false), index 0, term 0.
const EMPTY_SNAPSHOT_V34: [u8; 10] = [0x12, 0x08, 0x0a, 0x02, 0x28, 0x00, 0x10, 0x00, 0x18, 0x00];
/// etcd 3.3's, written before `ConfState` gained `auto_leave`.
const EMPTY_SNAPSHOT_V33: [u8; 8] = [0x12, 0x06, 0x0a, 0x00, 0x10, 0x00, 0x18, 0x00];

/// Bytes of a varint holding `v`.
#[inline]
pub fn varint_len(v: u64) -> usize {
    // ceil(bits / 7) without a division: (bits * 9 + 64) / 64 for 1..=64 bits, with
    // `| 1` counting 0 as one bit (prost's formula).
    ((((v | 1).leading_zeros() ^ 63) * 9 + 73) / 64) as usize
}

/// Tags and varints written in place into room at the end of an output buffer (see
/// [`Fields::room`]).
struct Fields<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Fields<'a> {
    /// Puts `N` zeroed bytes at the end of `dst` (a fill of constant length: a few vector
    /// stores and one capacity check) for fields to overwrite byte by byte. Returns them
    /// and where they start: truncating `dst` to that plus `len` then cuts off what the
    /// fields did not use.
    ///
    /// In place, not in a stack buffer copied over afterwards: that copy's wide loads,
    /// issued right after the byte stores they read, cannot be forwarded from the store
    /// buffer and stalled until the stores retired, about half of each encoder's time
    /// (docs/performance.md).
    #[inline(always)]
    fn room<const N: usize>(dst: &'a mut BytesMut) -> (Self, usize) {
        let start = dst.len();
        dst.put_bytes(0, N);
        (
            Fields {
                buf: &mut dst[start..],
                len: 0,
            },
            start,
        )
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline]
    fn field(&mut self, tag: u8, v: u64) {
        self.byte(tag);
        self.varint(v);
    }
}

/// Bytes of `e`'s protobuf encoding (what prost's `encoded_len` returns).
#[inline]
pub fn entry_len(e: &Entry) -> usize {
    3 + varint_len(e.entry_type as i64 as u64)
        + varint_len(e.term)
        + varint_len(e.index)
        + e.data
            .as_ref()
            .map_or(0, |d| 1 + varint_len(d.len() as u64) + d.len())
}

/// Appends `e`'s protobuf encoding to `dst`; the bytes equal prost's `encode_raw`.
#[inline]
pub fn encode_entry<S: FrameSink + ?Sized>(e: &Entry, dst: &mut S) {
    // Four tags and four varints of at most ten bytes each.
    let (mut f, start) = Fields::room::<44>(dst.buf());
    entry_head(e, &mut f);
    let end = start + f.len;
    dst.buf().truncate(end);
    if let Some(d) = &e.data {
        dst.put_payload(d);
    }
}

/// Appends `e` as msgappv2 and msgapp v1 frame it: a big-endian `u64` length, then the
/// protobuf encoding. Writes the length and the entry's fields in one copy, and the
/// payload in a second.
#[inline]
pub fn encode_entry_with_u64_len<S: FrameSink + ?Sized>(e: &Entry, dst: &mut S) {
    if encode_packed_entry_with_u64_len(e, dst) {
        return;
    }
    let (mut f, start) = Fields::room::<52>(dst.buf());
    for b in (entry_len(e) as u64).to_be_bytes() {
        f.byte(b);
    }
    entry_head(e, &mut f);
    let end = start + f.len;
    dst.buf().truncate(end);
    if let Some(d) = &e.data {
        dst.put_payload(d);
    }
}

/// [`encode_entry_with_u64_len`] for the shape etcd gives almost every entry (the one
/// [`entry_fields_packed`] reads): type and term below 128, an index below 2^35, a payload
/// shorter than 16 KiB. The frame's length and the entry's header go in as three 8-byte
/// stores into room reserved at once. `false`, with nothing written, for anything else.
///
/// Why: written a byte at a time, each with its bounds check, they were most of the
/// sending thread's encoding of an entry; this way a 100-entry append's encoding takes
/// 16,568 instructions instead of 21,268 (`perf/callgrind.sh`, with its source's filling).
#[inline(always)]
fn encode_packed_entry_with_u64_len<S: FrameSink + ?Sized>(e: &Entry, dst: &mut S) -> bool {
    let Some(data) = &e.data else {
        return false;
    };
    let (entry_type, term, index, len) = (e.entry_type, e.term, e.index, data.len());
    if !(0..128).contains(&entry_type) || term >= 128 || index >= 1 << 35 || len >= 1 << 14 {
        return false;
    }
    let index_len = varint_len(index);
    // 08 <type> 10 <term> 18 <index> 22 <length>
    let head = 5 + index_len + 1 + varint_len(len as u64);
    let buf = dst.buf();
    let start = buf.len();
    buf.put_bytes(0, 24);
    if let Some(room) = buf.get_mut(start..start + 24) {
        let frame_len = (head + len) as u64;
        let tags = 0x18_0010_0008 | (entry_type as u64) << 8 | term << 24;
        // The index's bytes, then the payload's tag and length (at most 64 bits: five
        // bytes and three).
        let rest = varint_bytes(index) | (0x22 | varint_bytes(len as u64) << 8) << (8 * index_len);
        room[..8].copy_from_slice(&frame_len.to_be_bytes());
        room[8..16].copy_from_slice(&tags.to_le_bytes());
        room[13..21].copy_from_slice(&rest.to_le_bytes());
    }
    buf.truncate(start + 8 + head);
    dst.put_payload(data);
    true
}

/// The varint of `v` (below 2^35), its bytes little-endian in a `u64`.
#[inline(always)]
fn varint_bytes(v: u64) -> u64 {
    let groups = (v & 0x7f)
        | (v << 1 & 0x7f00)
        | (v << 2 & 0x7f_0000)
        | (v << 3 & 0x7f00_0000)
        | (v << 4 & 0x7f_0000_0000);
    // The top bit of every byte but the last says another follows.
    groups | (0x80_8080_8080 & ((1u64 << (8 * (varint_len(v) - 1))) - 1))
}

/// `e`'s encoding up to its payload: type, term, index, and the payload's tag and length.
#[inline(always)]
fn entry_head(e: &Entry, f: &mut Fields<'_>) {
    f.field(0x08, e.entry_type as i64 as u64);
    f.field(0x10, e.term);
    f.field(0x18, e.index);
    if let Some(d) = &e.data {
        f.field(0x22, d.len() as u64);
    }
}

/// Whether the hand-written encoder covers `m` (else prost writes it).
#[inline]
fn encodes_by_hand(m: &Message) -> bool {
    m.responses.is_empty() && m.snapshot.is_default()
}

/// Bytes of `m`'s protobuf encoding (what prost's `encoded_len` returns).
pub fn message_len(m: &Message) -> usize {
    if !encodes_by_hand(m) {
        return m.encoded_len();
    }
    let mut n = 6 // tags of fields 1..=6
        + varint_len(m.msg_type as i64 as u64)
        + varint_len(m.to)
        + varint_len(m.from)
        + varint_len(m.term)
        + varint_len(m.log_term)
        + varint_len(m.index)
        + 1 + varint_len(m.commit)
        + 1 + EMPTY_SNAPSHOT_V34.len() + 1 // field 9: tag, length, body
        + 2 // reject
        + 1 + varint_len(m.reject_hint);
    for e in &m.entries {
        let l = entry_len(e);
        n += 1 + varint_len(l as u64) + l;
    }
    if let Some(c) = &m.context {
        n += 1 + varint_len(c.len() as u64) + c.len();
    }
    if let Some(v) = m.vote {
        n += 1 + varint_len(v);
    }
    n
}

/// Appends `m`'s protobuf encoding to `dst`; the bytes equal prost's `encode_raw`.
pub fn encode_message<S: FrameSink + ?Sized>(m: &Message, dst: &mut S) {
    if !encodes_by_hand(m) {
        m.encode_raw(dst.buf());
        return;
    }
    let (mut f, start) = Fields::room::<66>(dst.buf());
    f.field(0x08, m.msg_type as i64 as u64);
    f.field(0x10, m.to);
    f.field(0x18, m.from);
    f.field(0x20, m.term);
    f.field(0x28, m.log_term);
    f.field(0x30, m.index);
    let end = start + f.len;
    dst.buf().truncate(end);
    for e in &m.entries {
        let (mut f, start) = Fields::room::<11>(dst.buf());
        f.field(0x3a, entry_len(e) as u64);
        let end = start + f.len;
        dst.buf().truncate(end);
        encode_entry(e, dst);
    }
    // commit, the empty snapshot, reject, reject_hint, then the optional context and vote.
    let (mut f, start) = Fields::room::<58>(dst.buf());
    f.field(0x40, m.commit);
    f.field(0x4a, EMPTY_SNAPSHOT_V34.len() as u64);
    for b in EMPTY_SNAPSHOT_V34 {
        f.byte(b);
    }
    f.field(0x50, m.reject as u64);
    f.field(0x58, m.reject_hint);
    if let Some(c) = &m.context {
        f.field(0x62, c.len() as u64);
    }
    let end = start + f.len;
    dst.buf().truncate(end);
    if let Some(c) = &m.context {
        dst.put_payload(c);
    }
    if let Some(v) = m.vote {
        let (mut f, start) = Fields::room::<11>(dst.buf());
        f.field(0x68, v);
        let end = start + f.len;
        dst.buf().truncate(end);
    }
}

/// Appends `m` as the stream frames carry it: a big-endian `u64` length, then its
/// protobuf encoding (the message stream's frame, and msgappv2's MsgApp frame after its
/// tag). The length goes into the 8 bytes left for it once the message is written:
/// counting the message's bytes first was a second pass over it, a third of a
/// heartbeat's encoding time.
pub fn encode_message_with_u64_len<S: FrameSink + ?Sized>(m: &Message, dst: &mut S) {
    let at = dst.buf().len();
    dst.buf().put_u64(0);
    let start = dst.written();
    encode_message(m, dst);
    let len = (dst.written() - start) as u64;
    // Always there: encoding only appends after the 8 bytes put at `at`.
    if let Some(slot) = dst.buf().get_mut(at..at + 8) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// A cursor over a protobuf body, for the fast decoding path. Every method returns `None`
/// on anything the fast path does not take, and the caller falls back to prost.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// One varint, as prost reads it: at most ten bytes, the tenth at most 1.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        // Most values on the wire (types, terms, flags, lengths) fit one byte, and log
        // indexes up to 34 billion fit five: read those without a loop. (Indexes past two
        // million, four bytes, took the loop on the batched row: 3% of the reader.)
        let b = self.buf.get(self.pos..)?;
        match *b {
            [b0, ..] if b0 < 0x80 => {
                self.pos += 1;
                Some(u64::from(b0))
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.pos += 2;
                Some(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            [b0, b1, b2, ..] if b2 < 0x80 => {
                self.pos += 3;
                Some(u64::from(b0 & 0x7f) | u64::from(b1 & 0x7f) << 7 | u64::from(b2) << 14)
            }
            [b0, b1, b2, b3, ..] if b3 < 0x80 => {
                self.pos += 4;
                Some(
                    u64::from(b0 & 0x7f)
                        | u64::from(b1 & 0x7f) << 7
                        | u64::from(b2 & 0x7f) << 14
                        | u64::from(b3) << 21,
                )
            }
            [b0, b1, b2, b3, b4, ..] if b4 < 0x80 => {
                self.pos += 5;
                Some(
                    u64::from(b0 & 0x7f)
                        | u64::from(b1 & 0x7f) << 7
                        | u64::from(b2 & 0x7f) << 14
                        | u64::from(b3 & 0x7f) << 21
                        | u64::from(b4) << 28,
                )
            }
            _ => self.varint_slow(),
        }
    }

    #[cold]
    fn varint_slow(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// Steps over the next byte if it is `tag` (a one-byte tag: fields 1 to 15).
    #[inline(always)]
    fn eat(&mut self, tag: u8) -> bool {
        let hit = self.buf.get(self.pos) == Some(&tag);
        self.pos += usize::from(hit);
        hit
    }

    /// A length-delimited field's body, as a range of the buffer.
    #[inline]
    fn delimited(&mut self) -> Option<std::ops::Range<usize>> {
        let len = self.varint()?;
        let start = self.pos;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(start..end)
    }
}

/// An entry's fields as the fast path reads them: type, term, index, payload range.
type EntryFields = (i32, u64, u64, Option<(usize, usize)>);

/// Reads `buf` as an [`Entry`] by hand; `None` when the fast path does not take these
/// bytes. Tags are matched as whole bytes: each of the four fields at most once, in order,
/// read in straight-line code (a loop over a `match` paid a mispredicted jump per field).
#[inline(always)]
fn entry_fields(buf: &[u8]) -> Option<EntryFields> {
    if let Some(fields) = entry_fields_packed(buf) {
        return Some(fields);
    }
    entry_fields_general(buf)
}

/// The value of the varint at the bottom of `window` (bytes in little-endian order) and
/// its length, if it ends within the window's first five bytes (the rest are not read).
#[inline(always)]
fn varint5_in(window: u64) -> Option<(u64, usize)> {
    // The first byte whose top bit is clear ends the varint.
    let ends = !window & 0x80_8080_8080;
    if ends == 0 {
        return None;
    }
    let len = (ends.trailing_zeros() / 8) as usize + 1;
    // The low seven bits of each of the first five bytes, side by side.
    let v = (window & 0x7f)
        | (window >> 1 & 0x7f << 7)
        | (window >> 2 & 0x7f << 14)
        | (window >> 3 & 0x7f << 21)
        | (window >> 4 & 0x7f << 28);
    Some((v & ((1u64 << (7 * len)) - 1), len))
}

/// [`entry_fields`] for the shape etcd writes for almost every entry: `08 <type> 10
/// <term> 18 <index> 22 <length> <payload>` with type and term in one byte each (below
/// 128), the index in at most five, the payload's length in at most two, the payload
/// running to the end of `buf`, and `buf` at least 24 bytes long. `None` for anything
/// else; the general reader then takes it. Whatever it accepts it reads exactly as
/// prost does.
///
/// Why: through the cursor, with a bounds check at every byte, the header was a third of
/// the I/O thread's decoding of an entry; from these few loads, a 100-entry append's
/// decoding (payloads deferred, as with a receive worker) takes 18,160 instructions
/// instead of 25,027 (`perf/callgrind.sh`).
#[inline(always)]
fn entry_fields_packed(buf: &[u8]) -> Option<EntryFields> {
    let head: &[u8; 24] = buf.first_chunk()?;
    let w = u64::from_le_bytes(*head.first_chunk::<8>()?);
    // Bytes 0, 2 and 4 are the tags 08, 10 and 18; bytes 1 and 3 (type, term) are below 128.
    if w & 0xff_80ff_80ff != 0x18_0010_0008 {
        return None;
    }
    let (index, n) = varint5_in(w >> 40 | u64::from(head[8]) << 24 | u64::from(head[9]) << 32)?;
    // The payload's tag and length, from 5 + n (at most 10).
    let at = 5 + n;
    let tail = u32::from_le_bytes(*head.get(at..)?.first_chunk::<4>()?);
    if tail as u8 != 0x22 {
        return None;
    }
    let (len, start) = if tail & 0x8000 == 0 {
        ((tail >> 8) & 0x7f, at + 2)
    } else if tail & 0x80_0000 == 0 {
        ((tail >> 8) & 0x7f | (tail >> 9) & 0x3f80, at + 3)
    } else {
        return None;
    };
    let end = start + len as usize;
    (end == buf.len()).then_some((
        i32::from(head[1]),
        u64::from(head[3]),
        index,
        Some((start, end)),
    ))
}

/// [`entry_fields`] for any header shape, through a cursor.
#[inline(always)]
fn entry_fields_general(buf: &[u8]) -> Option<EntryFields> {
    let mut r = Reader { buf, pos: 0 };
    let ty = if r.eat(0x08) { r.varint()? as i32 } else { 0 };
    let term = if r.eat(0x10) { r.varint()? } else { 0 };
    let index = if r.eat(0x18) { r.varint()? } else { 0 };
    let data = if r.eat(0x22) {
        let d = r.delimited()?;
        Some((d.start, d.end))
    } else {
        None
    };
    r.at_end().then_some((ty, term, index, data))
}

/// The [`Entry`] whose fields the fast path read from `src[base..]`; its payload is a
/// slice of `src`.
#[inline(always)]
fn entry_from(src: &Bytes, base: usize, fields: EntryFields) -> Entry {
    let (entry_type, term, index, data) = fields;
    Entry {
        entry_type,
        term,
        index,
        data: data.map(|(a, b)| src.slice(base + a..base + b)),
    }
}

/// Decodes `src` as an [`Entry`]. The payload is a slice of `src`, not a copy. Results
/// and errors are prost's.
pub fn decode_entry(src: &Bytes) -> Result<Entry, prost::DecodeError> {
    match entry_fields(src) {
        Some(fields) => Ok(entry_from(src, 0, fields)),
        None => Entry::decode(src.clone()),
    }
}

/// Decodes `bytes[range]` as an [`Entry`] and appends it to `out`, building it in place;
/// `bytes` is `src`'s bytes or a start of them. Payloads are slices of `src`; results and
/// errors are prost's. `range` must lie within `bytes`: the frame decoders check it
/// against the frame before they call this.
#[inline]
pub(crate) fn push_entry(
    src: &Bytes,
    bytes: &[u8],
    range: std::ops::Range<usize>,
    out: &mut Vec<Entry>,
) -> Result<(), prost::DecodeError> {
    match bytes.get(range.clone()).and_then(entry_fields) {
        Some(fields) => out.push(entry_from(src, range.start, fields)),
        None => out.push(Entry::decode(src.slice(range))?),
    }
    Ok(())
}

/// [`push_entry`] that leaves the payload unsliced: the entry's `data` stays `None` and
/// its range in `src` goes to `deferred`, to be sliced later (on another thread). The
/// slow path (bytes the fast one does not take) slices at once and records nothing to do.
#[inline]
pub(crate) fn push_entry_deferred(
    src: &Bytes,
    bytes: &[u8],
    range: std::ops::Range<usize>,
    out: &mut Vec<Entry>,
    (deferred, ranges): (
        &mut crate::codec::Deferred,
        &mut crate::codec::PayloadRanges,
    ),
) -> Result<(), prost::DecodeError> {
    match bytes.get(range.clone()).and_then(entry_fields) {
        Some((entry_type, term, index, data)) => {
            out.push(Entry {
                entry_type,
                term,
                index,
                data: None,
            });
            deferred.push(
                ranges,
                data.map(|(a, b)| (range.start + a, range.start + b)),
            );
        }
        None => {
            out.push(Entry::decode(src.slice(range))?);
            deferred.push(ranges, None);
        }
    }
    Ok(())
}

/// Merges `src` into `out` as prost's `merge` would, for a cleared `out`: entries are
/// appended (reusing `out.entries`' capacity) and payloads are slices of `src`.
/// On failure `out` is left cleared or partly filled, as after a failed prost merge.
pub fn merge_message(out: &mut Message, src: Bytes) -> Result<(), prost::DecodeError> {
    let len = src.len();
    merge_message_at(out, &src, 0..len)
}

/// [`merge_message`] for the message in `src[range]` (a stream frame after its header,
/// where `src` may hold more frames after it), without taking a reference to a slice of
/// `src` first: a message with no payloads then touches `src`'s reference count not at
/// all. A range beyond `src` is cut to it.
pub fn merge_message_at(
    out: &mut Message,
    src: &Bytes,
    range: std::ops::Range<usize>,
) -> Result<(), prost::DecodeError> {
    let end = range.end.min(src.len());
    let start = range.start.min(end);
    if merge_fast(out, src, start, end).is_some() {
        return Ok(());
    }
    out.clear();
    out.merge(src.slice(start..end))
}

/// The fast path of [`merge_message_at`] over `src[start..end]`; `None` leaves `out` for
/// the caller to clear. Payloads are slices of `src`, at `src`'s own positions.
fn merge_fast(out: &mut Message, src: &Bytes, start: usize, end: usize) -> Option<()> {
    // The reader sees the message's end as the buffer's: nothing after it is read.
    let mut r = Reader {
        buf: &src[..end],
        pos: start,
    };
    // Each field at most once and in tag order (entries, 7, may repeat), read in
    // straight-line code: a loop over a `match` on the tag paid a mispredicted indirect
    // jump per field, half of a heartbeat's decoding. Anything else is left unread, and
    // the check at the end sends it to prost.
    if r.eat(0x08) {
        out.msg_type = r.varint()? as i32;
    }
    if r.eat(0x10) {
        out.to = r.varint()?;
    }
    if r.eat(0x18) {
        out.from = r.varint()?;
    }
    if r.eat(0x20) {
        out.term = r.varint()?;
    }
    if r.eat(0x28) {
        out.log_term = r.varint()?;
    }
    if r.eat(0x30) {
        out.index = r.varint()?;
    }
    while r.eat(0x3a) {
        let d = r.delimited()?;
        let fields = entry_fields(&src[d.clone()])?;
        out.entries.push(entry_from(src, d.start, fields));
    }
    if r.eat(0x40) {
        out.commit = r.varint()?;
    }
    if r.eat(0x4a) {
        let d = r.delimited()?;
        let body = &src[d];
        if body != EMPTY_SNAPSHOT_V34 && body != EMPTY_SNAPSHOT_V33 {
            return None;
        }
    }
    if r.eat(0x50) {
        out.reject = r.varint()? != 0;
    }
    if r.eat(0x58) {
        out.reject_hint = r.varint()?;
    }
    if r.eat(0x62) {
        let d = r.delimited()?;
        out.context = Some(src.slice(d));
    }
    if r.eat(0x68) {
        out.vote = Some(r.varint()?);
    }
    r.at_end().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::{ConfState, Snapshot, SnapshotMetadata};
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = Entry> {
        (
            prop_oneof![Just(0i32), Just(1), Just(2), any::<i32>()],
            prop_oneof![Just(0u64), Just(1), 1u64..300, any::<u64>()],
            prop_oneof![Just(0u64), 1u64..1_000_000, any::<u64>()],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        )
            .prop_map(|(t, term, index, data)| Entry {
                entry_type: t,
                term,
                index,
                data: data.map(Bytes::from),
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            (any::<i32>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()),
            proptest::collection::vec(entry(), 0..5),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
        )
            .prop_map(
                |(
                    (t, to, from, term),
                    (lt, idx, commit, reject),
                    entries,
                    hint,
                    ctx,
                    vote,
                    snap,
                )| {
                    let mut m = Message {
                        msg_type: t,
                        to,
                        from,
                        term,
                        log_term: lt,
                        index: idx,
                        entries,
                        commit,
                        reject,
                        reject_hint: hint,
                        context: ctx.map(Bytes::from),
                        vote,
                        ..Default::default()
                    };
                    if snap {
                        m.snapshot = Snapshot {
                            data: Some(Bytes::from_static(b"snap")),
                            metadata: SnapshotMetadata {
                                conf_state: ConfState {
                                    voters: vec![1, 2, 3],
                                    ..Default::default()
                                },
                                index: idx,
                                term,
                            },
                        };
                    }
                    m
                },
            )
    }

    /// Bodies made field by field in tag order with any values (bools of 2, type numbers
    /// past `i32`, entries with odd contents), which the fast path takes and must read
    /// exactly as prost does.
    fn fieldwise() -> impl Strategy<Value = Vec<u8>> {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let value = prop_oneof![0u64..4, any::<u64>()];
        let field = (
            1u32..=14,
            value,
            proptest::collection::vec(any::<u8>(), 0..12),
        );
        proptest::collection::vec(field, 0..12).prop_map(|mut fields| {
            fields.sort_by_key(|f| f.0);
            let mut out = Vec::new();
            for (n, v, bytes) in fields {
                match n {
                    7 => {
                        let mut e = Vec::new();
                        encode_key(1, WireType::Varint, &mut e);
                        encode_varint(v, &mut e);
                        encode_key(4, WireType::LengthDelimited, &mut e);
                        encode_varint(bytes.len() as u64, &mut e);
                        e.extend_from_slice(&bytes);
                        encode_key(7, WireType::LengthDelimited, &mut out);
                        encode_varint(e.len() as u64, &mut out);
                        out.extend_from_slice(&e);
                    }
                    9 | 12 | 14 => {
                        encode_key(n, WireType::LengthDelimited, &mut out);
                        encode_varint(bytes.len() as u64, &mut out);
                        out.extend_from_slice(&bytes);
                    }
                    _ => {
                        encode_key(n, WireType::Varint, &mut out);
                        encode_varint(v, &mut out);
                    }
                }
            }
            out
        })
    }

    fn ours(m: &Message) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_message(m, &mut b);
        b.to_vec()
    }

    /// Decodes `raw` as it stands after a frame header of 0 to 9 bytes and before 0 to 2
    /// bytes of what follows it in the stream (both chosen by its length), so that every
    /// property test covers `merge_message` and the range of `merge_message_at`. What
    /// follows is `68 01` (vote = 1), or its first byte: read by mistake, it would be
    /// taken as a field or as the rest of a cut-short one and change the answer.
    fn decoded(raw: &[u8]) -> Result<Message, prost::DecodeError> {
        let mut m = Message::default();
        let header = raw.len() % 10;
        let trailer = raw.len() % 3;
        if header == 0 && trailer == 0 {
            return merge_message(&mut m, Bytes::copy_from_slice(raw)).map(|()| m);
        }
        let mut frame = vec![0xff; header];
        frame.extend_from_slice(raw);
        frame.extend_from_slice(&[0x68, 0x01][..trailer]);
        let end = header + raw.len();
        merge_message_at(&mut m, &Bytes::from(frame), header..end).map(|()| m)
    }

    proptest! {
        #[test]
        fn entry_bytes_and_length_are_prosts(e in entry()) {
            let mut b = BytesMut::new();
            encode_entry(&e, &mut b);
            prop_assert_eq!(&b[..], &e.encode_to_vec()[..]);
            prop_assert_eq!(entry_len(&e), e.encoded_len());
            let src = Bytes::from(b.to_vec());
            prop_assert!(entry_fields(&src).is_some(), "etcd's own bytes take the fast path");
            prop_assert_eq!(decode_entry(&src).unwrap(), e.clone());
            let mut framed = BytesMut::new();
            encode_entry_with_u64_len(&e, &mut framed);
            prop_assert_eq!(&framed[..8], &(b.len() as u64).to_be_bytes()[..]);
            prop_assert_eq!(&framed[8..], &b[..]);
            let mut into = vec![Entry::default()];
            let framed = framed.freeze();
            push_entry(&framed, &framed, 8..framed.len(), &mut into).unwrap();
            prop_assert_eq!(&into[1], &e);
        }

        #[test]
        fn message_bytes_and_length_are_prosts(m in message()) {
            let want = m.encode_to_vec();
            prop_assert_eq!(ours(&m), want.clone());
            prop_assert_eq!(message_len(&m), m.encoded_len());
            prop_assert_eq!(decoded(&want).unwrap(), m);
        }

        /// Any bytes at all: the same message or the same failure as prost.
        #[test]
        fn arbitrary_bytes_decode_as_prost_does(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let want = Message::decode(&raw[..]);
            let got = decoded(&raw);
            match (want, got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
                (Err(w), Err(g)) => prop_assert_eq!(w.to_string(), g.to_string()),
                (w, g) => prop_assert!(false, "prost {:?}, ours {:?}", w, g),
            }
            entry_reads_as_prost(&raw)?;
        }

        #[test]
        fn fieldwise_bodies_decode_as_prost_does(raw in fieldwise()) {
            match (Message::decode(&raw[..]), decoded(&raw)) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
                (Err(w), Err(g)) => prop_assert_eq!(w.to_string(), g.to_string()),
                (w, g) => prop_assert!(false, "prost {:?}, ours {:?}", w, g),
            }
        }

        /// A valid message's bytes with one byte changed: still prost's answer.
        #[test]
        fn mutated_messages_decode_as_prost_does(m in message(), at in any::<usize>(), to in any::<u8>()) {
            let mut raw = m.encode_to_vec();
            let i = at % raw.len();
            raw[i] = to;
            let want = Message::decode(&raw[..]);
            match (want, decoded(&raw)) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
                (Err(w), Err(g)) => prop_assert_eq!(w.to_string(), g.to_string()),
                (w, g) => prop_assert!(false, "prost {:?}, ours {:?}", w, g),
            }
        }
    }

    /// `raw` decodes through [`decode_entry`] to prost's entry, or fails as prost does.
    fn entry_reads_as_prost(raw: &[u8]) -> Result<(), TestCaseError> {
        let src = Bytes::from(raw.to_vec());
        match (Entry::decode(raw), decode_entry(&src)) {
            (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
            (Err(w), Err(g)) => prop_assert_eq!(w.to_string(), g.to_string()),
            (w, g) => prop_assert!(false, "prost {:?}, ours {:?}", w, g),
        }
        Ok(())
    }

    /// Entries around the packed path's limits (one-byte type and term, five-byte
    /// index, two-byte payload length, 24 bytes), as prost writes them, then perhaps with
    /// one byte changed or one added.
    fn entry_bytes_near_the_packed_shape() -> impl Strategy<Value = Vec<u8>> {
        let entry = (
            prop_oneof![0i32..3, 120i32..136, any::<i32>()],
            prop_oneof![0u64..3, 120u64..136, Just(127), any::<u64>()],
            prop_oneof![
                0u64..300,
                (1u64 << 28) - 2..(1u64 << 28) + 2,
                (1u64 << 35) - 2..(1u64 << 35) + 2,
                any::<u64>()
            ],
            proptest::option::of(prop_oneof![0usize..40, 120usize..136, 16_380usize..16_390]),
        )
            .prop_map(|(entry_type, term, index, len)| Entry {
                entry_type,
                term,
                index,
                data: len.map(|n| Bytes::from(vec![0x80; n])),
            });
        let change = prop_oneof![
            3 => Just(None),
            1 => (0usize..24, any::<u8>()).prop_map(Some),
            1 => (0usize..24, prop_oneof![Just(0x80u8), Just(0x7f), Just(0x22), Just(0x18)])
                .prop_map(Some),
        ];
        (entry, change, any::<bool>()).prop_map(|(e, change, grow)| {
            let mut raw = e.encode_to_vec();
            if let Some((at, to)) = change {
                let i = at % raw.len().max(1);
                if let Some(b) = raw.get_mut(i) {
                    *b = to;
                }
            }
            if grow {
                raw.push(0x08);
            }
            raw
        })
    }

    proptest! {
        /// Whatever the packed path takes, it reads as the general one and as prost.
        #[test]
        fn packed_entries_read_as_prost_does(raw in entry_bytes_near_the_packed_shape()) {
            if let Some(fields) = entry_fields_packed(&raw) {
                prop_assert_eq!(Some(fields), entry_fields_general(&raw));
            }
            entry_reads_as_prost(&raw)?;
        }
    }

    /// The packed paths take etcd's usual entries and decline each shape past their
    /// limits; both paths of each direction agree with prost at every limit.
    #[test]
    fn the_packed_paths_take_usual_entries_only() {
        let entry = |entry_type, term, index, len: Option<usize>| {
            Entry {
                entry_type,
                term,
                index,
                data: len.map(|n| Bytes::from(vec![7u8; n])),
            }
            .encode_to_vec()
        };
        let max_index = (1u64 << 35) - 1;
        for (t, term, index, len) in [
            (0, 1, 2, Some(64)),
            (1, 127, max_index, Some(16_383)),
            (2, 0, 0, Some(127)),
            (0, 5, 1 << 21, Some(128)),
            (0, 5, 7, Some(16)), // 24 bytes in all
        ] {
            let raw = entry(t, term, index, len);
            let want = (t, term, index, Some((raw.len() - len.unwrap(), raw.len())));
            assert_eq!(entry_fields_packed(&raw), Some(want), "{raw:02x?}");
        }
        // Every combination of values at the limits: the packed path takes a shape or
        // leaves it, and what it takes it reads as the general path does.
        let types = [0, 1, 127, 128, -1];
        let terms = [0, 1, 127, 128, 16_383, 16_384];
        let indexes = [
            0,
            127,
            128,
            (1 << 14) - 1,
            1 << 21,
            (1 << 28) - 1,
            1 << 28,
            max_index,
            max_index + 1,
            u64::MAX,
        ];
        let lens = [
            None,
            Some(0),
            Some(15),
            Some(16),
            Some(64),
            Some(127),
            Some(128),
            Some(16_383),
            Some(16_384),
        ];
        let mut taken = 0;
        for t in types {
            for term in terms {
                for index in indexes {
                    for len in lens {
                        // Encoding, by whichever path takes the entry: prost's bytes.
                        let e = Entry {
                            entry_type: t,
                            term,
                            index,
                            data: len.map(|n| Bytes::from(vec![7u8; n])),
                        };
                        let (want, mut framed) = (e.encode_to_vec(), BytesMut::new());
                        encode_entry_with_u64_len(&e, &mut framed);
                        assert_eq!(framed[..8], (want.len() as u64).to_be_bytes());
                        assert!(framed[8..] == want[..], "{t} {term} {index} {len:?}");
                        for grow in [false, true] {
                            let mut raw = entry(t, term, index, len);
                            if grow {
                                // The type again, which prost takes (the last one wins).
                                raw.extend([0x08, 0x01]);
                            }
                            let general = entry_fields_general(&raw);
                            assert_eq!(general.is_some(), !grow, "{t} {term} {index} {len:?}");
                            if let Some(fields) = entry_fields_packed(&raw) {
                                assert_eq!(Some(fields), general, "{t} {term} {index} {len:?}");
                                taken += 1;
                            }
                        }
                    }
                }
            }
        }
        // Types 0, 1 and 127, terms 0, 1 and 127, the first eight indexes, with nothing
        // after the payload: payloads of 16 to 16,383 bytes, and of 15 where the index
        // takes two bytes or more (24 bytes in all).
        assert_eq!(taken, 3 * 3 * (8 * 5 + 6));
        for (t, term, index, len) in [
            (128, 1, 2, Some(64)),
            (-1, 1, 2, Some(64)),
            (0, 128, 2, Some(64)),
            (0, 1, max_index + 1, Some(64)),
            (0, 1, 2, Some(16_384)),
            (0, 1, 2, None),
            (0, 5, 7, Some(15)), // 23 bytes
        ] {
            let raw = entry(t, term, index, len);
            assert_eq!(entry_fields_packed(&raw), None, "{raw:02x?}");
            assert!(entry_fields_general(&raw).is_some(), "{raw:02x?}");
        }
        // A three-byte length, cut where its first two bytes would end the payload: the
        // packed path must not read it as a two-byte one.
        let raw = entry(0, 1, 2, Some(16_384 + 100 * 128));
        let cut = &raw[..9 + 100 * 128];
        assert_eq!(entry_fields_packed(cut), None);
        assert_eq!(entry_fields_general(cut), None);
        // A byte after the payload (a second field) is not the packed shape either.
        let mut raw = entry(0, 1, 2, Some(64));
        raw.push(0x08);
        assert_eq!(entry_fields_packed(&raw), None);
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
        }
    }

    /// The reader's varints at every length boundary, and padded (non-minimal) ones,
    /// read as prost reads them.
    #[test]
    fn varints_of_every_length_read_as_prosts() {
        let mut values = vec![0, u64::MAX];
        for k in 1..10 {
            let edge = 1u64 << (7 * k);
            values.extend([edge - 1, edge, edge + 1]);
        }
        for v in values {
            let mut raw = Vec::new();
            prost::encoding::encode_varint(v, &mut raw);
            raw.push(0x08); // what follows is not read
            let mut r = Reader { buf: &raw, pos: 0 };
            assert_eq!(r.varint(), Some(v), "{v}");
            assert_eq!(r.pos, varint_len(v), "{v}");
        }
        for padded in [
            &[0x80, 0x80, 0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0x7f],
            &[0x81, 0x00],
        ] {
            let want = prost::encoding::decode_varint(&mut &padded[..]).unwrap();
            let mut r = Reader {
                buf: padded,
                pos: 0,
            };
            assert_eq!((r.varint(), r.pos), (Some(want), padded.len()));
        }
        // Cut short: no value, as prost.
        let mut r = Reader {
            buf: &[0x80, 0x80, 0x80],
            pos: 0,
        };
        assert_eq!(r.varint(), None);
    }

    /// Every era's link heartbeat takes the fast path (spec §2.2), and a payload is a
    /// slice of the input rather than a copy.
    #[test]
    fn era_bytes_take_the_fast_path_and_payloads_are_slices() {
        let eras = [
            "08081000180020002800300040004a0812060a0010001800500058 00",
            "08081000180020002800300040004a0a12080a022800100018005000 5800",
            "0808100018002000280030004000500058006800",
            "0808",
        ];
        for h in eras {
            let raw = Bytes::from(hex::decode(h.replace(' ', "")).unwrap());
            let mut m = Message::default();
            assert!(merge_fast(&mut m, &raw, 0, raw.len()).is_some(), "{h}");
            assert!(m.is_link_heartbeat());
        }
        let m = Message {
            msg_type: 3,
            entries: vec![Entry {
                data: Some(Bytes::from_static(b"hello")),
                ..Default::default()
            }],
            context: Some(Bytes::from_static(b"ctx")),
            ..Default::default()
        };
        let raw = Bytes::from(m.encode_to_vec());
        let mut out = Message::default();
        merge_message(&mut out, raw.clone()).unwrap();
        let data = out.entries[0].data.as_ref().unwrap();
        let range = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
        assert!(range.contains(&(data.as_ptr() as usize)));
        assert!(range.contains(&(out.context.as_ref().unwrap().as_ptr() as usize)));
    }

    /// A field the fast path does not take (an unknown one) still decodes, through prost,
    /// into a message cleared of what the fast path had set.
    #[test]
    fn unknown_field_falls_back_cleanly() {
        let raw = Bytes::from(hex::decode("080310023a020801a00105").unwrap());
        let mut out = Message::default();
        merge_message(&mut out, raw).unwrap();
        assert_eq!((out.msg_type, out.to, out.entries.len()), (3, 2, 1));
    }
}
