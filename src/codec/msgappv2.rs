//! The msgappv2 stream codec (spec §2.5), etcd's `msgappv2_codec.go`.
//!
//! Frames: `00` link heartbeat; `01 | u64 N | N × (u64 len | Entry) | u64 commit`
//! (AppEntries); `02 | u64 len | Message` (MsgApp). Both ends keep `(term, index)` for the
//! connection, starting at `(0, 0)`. AppEntries is used when the message continues
//! exactly where the previous one ended, in the same term.

use bytes::{BufMut, Bytes};
use prost::Message as _;

use super::assembler::{
    entry_at_into, read_u64, scan_len_prefixed, EntryListScan, FrameAssembler, Scan,
};
use super::deferred_payloads::{Deferred, PayloadRanges, DEFER_MIN_ENTRIES};
use super::{protobuf_error, FrameInfo, FrameKind};
use crate::error::{DecodeError, Part};
use crate::limits::Limits;
use crate::raftpb::wire::{self, FrameSink};
use crate::raftpb::{Message, MessageType};

const TAG_LINK_HEARTBEAT: u8 = 0;
const TAG_APP_ENTRIES: u8 = 1;
const TAG_MSG_APP: u8 = 2;

/// Encodes messages for one msgappv2 connection. Create a new one for every connection.
#[derive(Clone, Debug, Default)]
pub struct MsgAppV2Encoder {
    term: u64,
    index: u64,
}

impl MsgAppV2Encoder {
    /// An encoder with the fresh-connection state `(0, 0)`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `m`'s frame to `dst` and returns which frame it wrote. Allocates only
    /// when `dst` must grow.
    ///
    /// Like etcd, it writes AppEntries when `index == m.index` and
    /// `term == m.log_term == m.term`. Unlike etcd, it also requires the message to be one
    /// AppEntries can carry without loss (a MsgApp with no reject, hint, context or
    /// snapshot); anything else goes as a whole `02` frame, which every decoder accepts.
    pub fn encode<S: FrameSink + ?Sized>(&mut self, m: &Message, dst: &mut S) -> FrameKind {
        if m.is_link_heartbeat() {
            dst.buf().put_u8(TAG_LINK_HEARTBEAT);
            return FrameKind::LinkHeartbeat;
        }
        if self.index == m.index
            && self.term == m.log_term
            && m.log_term == m.term
            && fits_app_entries(m)
        {
            dst.buf().put_u8(TAG_APP_ENTRIES);
            dst.buf().put_u64(m.entries.len() as u64);
            for e in &m.entries {
                wire::encode_entry_with_u64_len(e, dst);
            }
            dst.buf().put_u64(m.commit);
            self.index = self.index.wrapping_add(m.entries.len() as u64);
            FrameKind::AppEntries
        } else {
            dst.buf().put_u8(TAG_MSG_APP);
            wire::encode_message_with_u64_len(m, dst);
            self.term = m.term;
            self.index = m.entries.last().map_or(m.index, |e| e.index);
            FrameKind::MsgApp
        }
    }
}

/// Whether AppEntries, which carries only entries and commit, reproduces `m` exactly.
fn fits_app_entries(m: &Message) -> bool {
    m.msg_type == MessageType::MsgApp as i32
        && !m.reject
        && m.reject_hint == 0
        && m.context.is_none()
        && m.vote.is_none()
        && m.responses.is_empty()
        && m.snapshot.is_default()
}

/// Resumable scanner for one msgappv2 frame.
#[derive(Clone, Debug, Default)]
struct Scanner {
    entries: EntryListScan,
}

impl Scanner {
    fn scan(&mut self, buf: &[u8], offset: u64, max: u64) -> Result<Scan, DecodeError> {
        let Some(&tag) = buf.first() else {
            return Ok(Scan::Need(1));
        };
        match tag {
            TAG_LINK_HEARTBEAT => Ok(Scan::Complete(1)),
            TAG_APP_ENTRIES => self.entries.scan(buf, 1, 8, max, offset),
            TAG_MSG_APP => scan_len_prefixed(buf, 1, max, Part::Frame, offset),
            other => Err(DecodeError::new(
                crate::error::DecodeErrorKind::UnknownMsgAppV2Tag(other),
                offset,
            )),
        }
    }
}

/// A decoding connection's ends and `(term, index)` state.
#[derive(Debug)]
struct Conn {
    local: u64,
    remote: u64,
    term: u64,
    index: u64,
}

/// Decodes one msgappv2 connection's body. Create a new one for every connection.
#[derive(Debug)]
pub struct MsgAppV2Decoder {
    conn: Conn,
    max_frame: u64,
    asm: FrameAssembler,
    scanner: Scanner,
}

impl MsgAppV2Decoder {
    /// A decoder for a stream from `remote` to `local`; AppEntries frames are rebuilt with
    /// `from = remote` and `to = local`.
    pub fn new(local: u64, remote: u64, limits: &Limits) -> Self {
        MsgAppV2Decoder {
            conn: Conn {
                local,
                remote,
                term: 0,
                index: 0,
            },
            max_frame: limits.max_frame,
            asm: FrameAssembler::default(),
            scanner: Scanner::default(),
        }
    }

    /// Decodes the next frame from `input` into `out` (whose entry capacity is reused).
    /// Returns `None` once `input` is used up without completing a frame; feed more.
    /// Entry data in `out` are slices of the input, not copies; `out` is cleared at the
    /// start of every call, so take what you need from it before the next one.
    #[inline]
    pub fn decode(
        &mut self,
        input: &mut Bytes,
        out: &mut Message,
    ) -> Result<Option<FrameInfo>, DecodeError> {
        self.decode_into(input, out, None)
    }

    /// [`decode`](Self::decode), but an AppEntries frame of at least
    /// [`DEFER_MIN_ENTRIES`] entries leaves its payloads unsliced (`data` is `None`) and
    /// records them in `deferred`, their ranges appended to `ranges`: call
    /// [`Deferred::resolve`] before reading them. Errors are found exactly as by
    /// `decode`.
    #[inline]
    pub fn decode_deferring(
        &mut self,
        input: &mut Bytes,
        out: &mut Message,
        deferred: &mut Deferred,
        ranges: &mut PayloadRanges,
    ) -> Result<Option<FrameInfo>, DecodeError> {
        self.decode_into(input, out, Some((deferred, ranges)))
    }

    /// One copy of the decoder for both: two made the compiler outline its inner parts.
    fn decode_into(
        &mut self,
        input: &mut Bytes,
        out: &mut Message,
        deferred: Option<(&mut Deferred, &mut PayloadRanges)>,
    ) -> Result<Option<FrameInfo>, DecodeError> {
        // Drop the previous frame's slices first, so that the buffers they point into
        // can be reused in place rather than reallocated.
        out.clear();
        let max = self.max_frame;
        let scanner = &mut self.scanner;
        let Some((frame, offset)) = self
            .asm
            .next_frame_in_place(input, |b, o| scanner.scan(b, o, max))?
        else {
            return Ok(None);
        };
        let (kind, len) = frame.parse(input, |frame, len| {
            (
                Self::parse(&mut self.conn, frame, len, offset, out, deferred),
                len,
            )
        });
        let kind = kind.map_err(|e| self.asm.fail(*e))?;
        Ok(Some(FrameInfo { kind, offset, len }))
    }

    /// Parses the whole frame `frame[..len]` into `out`, following `conn`'s state. The
    /// error is boxed so that the result fits two registers: a 40-byte one went through
    /// the stack, with narrow stores read back by wide loads that stalled (a sixth of a
    /// small frame's decoding). An error ends the stream, so its allocation is once.
    fn parse(
        conn: &mut Conn,
        frame: &Bytes,
        len: usize,
        offset: u64,
        out: &mut Message,
        deferred: Option<(&mut Deferred, &mut PayloadRanges)>,
    ) -> Result<FrameKind, Box<DecodeError>> {
        let whole = &frame[..len];
        match whole.first() {
            Some(&TAG_LINK_HEARTBEAT) => {
                out.msg_type = MessageType::MsgHeartbeat as i32;
                Ok(FrameKind::LinkHeartbeat)
            }
            Some(&TAG_APP_ENTRIES) => {
                let n = read_u64(whole, 1).unwrap_or(0);
                // One reservation for the entries rather than a vector's doubling steps
                // (a slot's first use in a fresh receive page). The frame's scan found
                // all `n` entries in it, each with at least its 8-byte length, so `n`
                // is bounded by bytes in memory; the `min` keeps that true here too.
                let fit = (len.saturating_sub(9) / 8) as u64;
                out.entries.reserve(n.min(fit) as usize);
                let mut pos = 9usize;
                match deferred.filter(|_| n >= DEFER_MIN_ENTRIES) {
                    Some((d, ranges)) => {
                        pos =
                            Self::entries_deferred(frame, whole, offset, n, fit, out, (d, ranges))?;
                    }
                    None => {
                        for _ in 0..n {
                            pos = entry_at_into(frame, whole, pos, offset, &mut out.entries, None)
                                .map_err(Box::new)?;
                        }
                    }
                }
                out.msg_type = MessageType::MsgApp as i32;
                out.from = conn.remote;
                out.to = conn.local;
                out.term = conn.term;
                out.log_term = conn.term;
                out.index = conn.index;
                out.commit = read_u64(whole, pos).unwrap_or(0);
                conn.index = conn.index.wrapping_add(n);
                Ok(FrameKind::AppEntries)
            }
            _ => {
                wire::merge_message_at(out, frame, 9..len)
                    .map_err(|e| Box::new(protobuf_error(Part::Message, e, offset + 9)))?;
                conn.term = out.term;
                conn.index = out.entries.last().map_or(out.index, |e| e.index);
                Ok(FrameKind::MsgApp)
            }
        }
    }

    /// An AppEntries frame's `n` entries, from byte 9 of `whole`, with their payloads
    /// left to `d`; returns the position after them. Kept out of line: inlined, its
    /// second copy of the entry parser made the compiler outline the first, and every
    /// small frame paid for the calls (a fifth more instructions per 1x64B message).
    #[inline(never)]
    fn entries_deferred(
        frame: &Bytes,
        whole: &[u8],
        offset: u64,
        n: u64,
        fit: u64,
        out: &mut Message,
        (d, ranges): (&mut Deferred, &mut PayloadRanges),
    ) -> Result<usize, Box<DecodeError>> {
        d.start(ranges, n.min(fit) as usize);
        let mut pos = 9usize;
        for _ in 0..n {
            let at = entry_at_into(
                frame,
                whole,
                pos,
                offset,
                &mut out.entries,
                Some((&mut *d, &mut *ranges)),
            );
            match at {
                Ok(next) => pos = next,
                Err(e) => {
                    d.abandon(ranges);
                    return Err(Box::new(e));
                }
            }
        }
        d.finish(frame);
        Ok(pos)
    }

    /// Call at the end of the input: fails if it ended inside a frame.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        let max = self.max_frame;
        let scanner = &mut self.scanner;
        self.asm.finish(|b, o| scanner.scan(b, o, max), Part::Frame)
    }

    /// The connection state `(term, index)` after the frames decoded so far.
    pub fn state(&self) -> (u64, u64) {
        (self.conn.term, self.conn.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::Entry;
    use bytes::BytesMut;

    fn app(term: u64, log_term: u64, index: u64, entries: &[u64]) -> Message {
        Message {
            msg_type: MessageType::MsgApp as i32,
            from: 1,
            to: 2,
            term,
            log_term,
            index,
            commit: index,
            entries: entries
                .iter()
                .map(|&i| Entry {
                    term,
                    index: i,
                    data: Some(Bytes::from_static(b"x")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Spec §5.6: etcd's own msgappv2 test sequence, with its frame tags.
    #[test]
    fn etcd_sequence_round_trips_with_tags_0_2_1_0_1_2_0_2_2_0() {
        let hb = Message::link_heartbeat();
        let msgs = vec![
            hb.clone(),
            app(1, 1, 0, &[1, 2, 3]),
            app(1, 1, 3, &[4]),
            hb.clone(),
            app(1, 1, 4, &[5]),
            app(3, 1, 5, &[6]),
            hb.clone(),
            app(3, 2, 6, &[7]),
            app(3, 2, 7, &[]),
            hb,
        ];
        let mut enc = MsgAppV2Encoder::new();
        let mut buf = BytesMut::new();
        let mut tags = Vec::new();
        for m in &msgs {
            let start = buf.len();
            enc.encode(m, &mut buf);
            tags.push(buf[start]);
        }
        assert_eq!(tags, [0, 2, 1, 0, 1, 2, 0, 2, 2, 0]);

        let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
        let mut input = buf.freeze();
        let mut out = Message::default();
        for want in &msgs {
            dec.decode(&mut input, &mut out).unwrap().expect("a frame");
            assert_eq!(&out, want);
        }
        assert!(input.is_empty());
        dec.finish().unwrap();
    }

    /// Spec §2.5's worked example: the 38-byte AppEntries after the 45-byte MsgApp.
    #[test]
    fn spec_example_encodes_to_the_documented_bytes() {
        let mut first = app(5, 5, 10, &[]);
        first.commit = 9;
        first.entries = vec![Entry {
            term: 5,
            index: 11,
            data: Some(Bytes::from_static(b"hello")),
            ..Default::default()
        }];
        let mut second = app(5, 5, 11, &[]);
        second.commit = 11;
        second.entries = vec![Entry {
            term: 5,
            index: 12,
            data: Some(Bytes::from_static(b"hello")),
            ..Default::default()
        }];
        let mut enc = MsgAppV2Encoder::new();
        let mut buf = BytesMut::new();
        assert_eq!(enc.encode(&first, &mut buf), FrameKind::MsgApp);
        assert_eq!(&buf[..9], &[2, 0, 0, 0, 0, 0, 0, 0, 0x2d]);
        assert_eq!(buf.len(), 9 + 45);
        buf.clear();
        assert_eq!(enc.encode(&second, &mut buf), FrameKind::AppEntries);
        let want = hex::decode(
            "01000000000000000100000000000000\
            0d08001005180c220568656c6c6f000000000000000b",
        )
        .unwrap();
        assert_eq!(&buf[..], &want[..]);
    }

    #[test]
    fn a_lossy_message_is_never_compacted() {
        let mut enc = MsgAppV2Encoder::new();
        let mut buf = BytesMut::new();
        enc.encode(&app(1, 1, 0, &[1]), &mut buf);
        let mut m = app(1, 1, 1, &[2]);
        m.context = Some(Bytes::from_static(b"ctx"));
        assert_eq!(enc.encode(&m, &mut buf), FrameKind::MsgApp);
        let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
        let mut input = buf.freeze();
        let mut out = Message::default();
        dec.decode(&mut input, &mut out).unwrap();
        dec.decode(&mut input, &mut out).unwrap();
        assert_eq!(out, m);
    }

    #[test]
    fn unknown_tag_is_an_error_at_its_offset() {
        let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
        let mut out = Message::default();
        let mut input = Bytes::from_static(&[0, 0, 7]);
        dec.decode(&mut input, &mut out).unwrap();
        dec.decode(&mut input, &mut out).unwrap();
        let e = dec.decode(&mut input, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to parse type 7 in msgappv2 stream (at byte offset 2)"
        );
    }

    #[test]
    fn corrupt_entry_protobuf_is_an_error_not_a_panic() {
        // AppEntries with one 2-byte entry whose bytes are an invalid varint field.
        let mut raw = vec![1];
        raw.extend_from_slice(&1u64.to_be_bytes());
        raw.extend_from_slice(&2u64.to_be_bytes());
        raw.extend_from_slice(&[0x08, 0xff]);
        raw.extend_from_slice(&0u64.to_be_bytes());
        let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
        let e = dec
            .decode(&mut Bytes::from(raw), &mut Message::default())
            .unwrap_err();
        assert_eq!(e.offset, 17);
        assert!(e.to_string().contains("raft entry"), "{e}");
    }

    #[test]
    fn huge_entry_count_is_refused_by_the_cap() {
        let mut raw = vec![1];
        raw.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
        let e = dec
            .decode(&mut Bytes::from(raw), &mut Message::default())
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        assert_eq!(e.offset, 1);
    }
}
