//! The legacy msgapp v1 stream codec (spec §2.4), etcd 2.0's MsgApp stream, kept by etcd
//! 2.1–2.2 at `/raft/stream/<id>` for compatibility.
//!
//! Body: batches `u64 N | N × (u64 len | Entry)`; `N = 0` is the link heartbeat. No term
//! is on the wire: the receiver stamps `term` and `logTerm` with the term it sent in
//! `X-Raft-Term` when it dialed, so a connection is valid for exactly one term.

use bytes::{BufMut, Bytes};
use prost::Message as _;

use super::assembler::{entry_at, read_u64, EntryListScan, FrameAssembler};
use super::{FrameInfo, FrameKind};
use crate::error::{DecodeError, DecodeErrorKind, Part};
use crate::limits::Limits;
use crate::raftpb::wire::{self, FrameSink};
use crate::raftpb::{Message, MessageType};

/// What [`MsgAppV1Encoder::encode`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V1Write {
    /// A frame was written.
    Written,
    /// Nothing was written: not a MsgApp with `term == logTerm`, no entries, or a term
    /// below the stream's (etcd 2.1 drops those silently).
    Skipped,
    /// Nothing was written because the message's term is above the stream's: the caller
    /// must close the stream and report the peer unreachable, as etcd 2.1 does; the
    /// receiver then re-dials with the new term.
    TermAdvanced,
}

/// Encodes one msgapp v1 connection, valid for the one term it was dialed with.
#[derive(Clone, Debug)]
pub struct MsgAppV1Encoder {
    term: u64,
}

impl MsgAppV1Encoder {
    /// An encoder for a stream dialed with `X-Raft-Term: term`.
    pub fn new(term: u64) -> Self {
        MsgAppV1Encoder { term }
    }

    /// The stream's term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Appends `m` as one batch (or an 8-byte heartbeat for a link heartbeat) to `dst`,
    /// following etcd 2.1's writer rules.
    pub fn encode<S: FrameSink + ?Sized>(&mut self, m: &Message, dst: &mut S) -> V1Write {
        if m.is_link_heartbeat() {
            dst.buf().put_u64(0);
            return V1Write::Written;
        }
        if m.msg_type != MessageType::MsgApp as i32 || m.term != m.log_term {
            return V1Write::Skipped;
        }
        if m.term > self.term {
            return V1Write::TermAdvanced;
        }
        if m.term < self.term || m.entries.is_empty() {
            return V1Write::Skipped;
        }
        dst.buf().put_u64(m.entries.len() as u64);
        for e in &m.entries {
            wire::encode_entry_with_u64_len(e, dst);
        }
        V1Write::Written
    }
}

/// Decodes one msgapp v1 connection's body.
#[derive(Debug)]
pub struct MsgAppV1Decoder {
    local: u64,
    remote: u64,
    term: u64,
    max_frame: u64,
    asm: FrameAssembler,
    scanner: EntryListScan,
}

impl MsgAppV1Decoder {
    /// A decoder for a stream from `remote` to `local` dialed with `X-Raft-Term: term`.
    pub fn new(local: u64, remote: u64, term: u64, limits: &Limits) -> Self {
        MsgAppV1Decoder {
            local,
            remote,
            term,
            max_frame: limits.max_frame,
            asm: FrameAssembler::default(),
            scanner: EntryListScan::default(),
        }
    }

    /// Decodes the next batch into `out` as the MsgApp etcd rebuilds:
    /// `{MsgApp, from: remote, to: local, term = logTerm = stream term,
    /// index: first entry's index − 1, entries, commit: 0}`. `out` is cleared at the
    /// start of every call.
    pub fn decode(
        &mut self,
        input: &mut Bytes,
        out: &mut Message,
    ) -> Result<Option<FrameInfo>, DecodeError> {
        // Drop the previous frame's slices first, so that the buffers they point into
        // can be reused in place rather than reallocated.
        out.clear();
        let max = self.max_frame;
        let scanner = &mut self.scanner;
        let Some((frame, offset)) = self
            .asm
            .next_frame_in_place(input, |b, o| scanner.scan(b, 0, 0, max, o))?
        else {
            return Ok(None);
        };
        let (entries, len) = frame.parse(input, |frame, len| {
            (entries_into(frame, len, offset, &mut out.entries), len)
        });
        let n = entries.map_err(|e| self.asm.fail(e))?;
        if n == 0 {
            out.msg_type = MessageType::MsgHeartbeat as i32;
            return Ok(Some(FrameInfo {
                kind: FrameKind::LinkHeartbeat,
                offset,
                len,
            }));
        }
        let first = out.entries[0].index;
        if first == 0 {
            let e = DecodeError::new(DecodeErrorKind::ZeroEntryIndex, offset + 16);
            return Err(self.asm.fail(e));
        }
        out.msg_type = MessageType::MsgApp as i32;
        out.from = self.remote;
        out.to = self.local;
        out.term = self.term;
        out.log_term = self.term;
        out.index = first - 1;
        Ok(Some(FrameInfo {
            kind: FrameKind::Batch,
            offset,
            len,
        }))
    }

    /// Call at the end of the input: fails if it ended inside a batch.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        let max = self.max_frame;
        let scanner = &mut self.scanner;
        self.asm
            .finish(|b, o| scanner.scan(b, 0, 0, max, o), Part::Frame)
    }
}

/// Appends the entries of the whole batch `frame[..len]` (`u64 N | N × (u64 len |
/// Entry)`) to `entries` and returns N.
fn entries_into(
    frame: &Bytes,
    len: usize,
    offset: u64,
    entries: &mut Vec<crate::raftpb::Entry>,
) -> Result<u64, DecodeError> {
    let whole = &frame[..len];
    let n = read_u64(whole, 0).unwrap_or(0);
    let mut pos = 8;
    for _ in 0..n {
        pos = entry_at(frame, whole, pos, offset, entries)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::Entry;
    use bytes::BytesMut;

    fn app(term: u64, index: u64, n: u64) -> Message {
        Message {
            msg_type: MessageType::MsgApp as i32,
            from: 1,
            to: 2,
            term,
            log_term: term,
            index,
            entries: (1..=n)
                .map(|i| Entry {
                    term,
                    index: index + i,
                    data: Some(Bytes::from_static(b"d")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn batches_round_trip_with_the_connection_term() {
        let mut enc = MsgAppV1Encoder::new(5);
        let mut buf = BytesMut::new();
        assert_eq!(
            enc.encode(&Message::link_heartbeat(), &mut buf),
            V1Write::Written
        );
        assert_eq!(&buf[..], &[0u8; 8]);
        assert_eq!(enc.encode(&app(5, 10, 3), &mut buf), V1Write::Written);
        let mut dec = MsgAppV1Decoder::new(2, 1, 5, &Limits::default());
        let mut input = buf.freeze();
        let mut out = Message::default();
        assert_eq!(
            dec.decode(&mut input, &mut out).unwrap().unwrap().kind,
            FrameKind::LinkHeartbeat
        );
        assert_eq!(
            dec.decode(&mut input, &mut out).unwrap().unwrap().kind,
            FrameKind::Batch
        );
        assert_eq!(out, app(5, 10, 3), "commit is not carried, and is 0 here");
        dec.finish().unwrap();
    }

    #[test]
    fn writer_drops_lower_terms_and_stops_on_higher_terms() {
        let mut enc = MsgAppV1Encoder::new(5);
        let mut buf = BytesMut::new();
        assert_eq!(enc.encode(&app(4, 1, 1), &mut buf), V1Write::Skipped);
        assert_eq!(enc.encode(&app(6, 1, 1), &mut buf), V1Write::TermAdvanced);
        assert_eq!(
            enc.encode(&app(5, 1, 0), &mut buf),
            V1Write::Skipped,
            "no entries"
        );
        let mut not_same_term = app(5, 1, 1);
        not_same_term.log_term = 4;
        assert_eq!(enc.encode(&not_same_term, &mut buf), V1Write::Skipped);
        assert!(buf.is_empty());
    }

    #[test]
    fn entry_index_zero_is_an_error_not_an_underflow() {
        let mut enc = MsgAppV1Encoder::new(1);
        let mut buf = BytesMut::new();
        let mut m = app(1, 0, 1);
        m.entries[0].index = 0;
        enc.encode(&m, &mut buf);
        let mut dec = MsgAppV1Decoder::new(2, 1, 1, &Limits::default());
        let e = dec
            .decode(&mut buf.freeze(), &mut Message::default())
            .unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::ZeroEntryIndex);
    }
}
