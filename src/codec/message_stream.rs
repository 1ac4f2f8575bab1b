//! The message stream codec (spec §2.6): `u64 len | Message`, etcd's `message.go`.
//! Carries everything but MsgSnap; the link heartbeat is `Message{Type: MsgHeartbeat}`.

use bytes::Bytes;
use prost::Message as _;

use super::assembler::{scan_len_prefixed, FrameAssembler};
use super::{protobuf_error, FrameInfo, FrameKind};
use crate::error::{DecodeError, Part};
use crate::limits::Limits;
use crate::raftpb::wire::{self, FrameSink};
use crate::raftpb::Message;

/// Appends `m` as one message-stream frame to `dst`. Allocates only when `dst` must grow.
pub fn encode_message_frame<S: FrameSink + ?Sized>(m: &Message, dst: &mut S) -> FrameKind {
    wire::encode_message_with_u64_len(m, dst);
    if m.is_link_heartbeat() {
        FrameKind::LinkHeartbeat
    } else {
        FrameKind::Message
    }
}

/// Decodes one message-stream connection's body.
#[derive(Debug)]
pub struct MessageStreamDecoder {
    max_frame: u64,
    asm: FrameAssembler,
}

impl MessageStreamDecoder {
    /// A decoder that refuses frames over `limits.max_frame` (etcd: 512 MiB).
    pub fn new(limits: &Limits) -> Self {
        MessageStreamDecoder {
            max_frame: limits.max_frame,
            asm: FrameAssembler::default(),
        }
    }

    /// Decodes the next frame from `input` into `out`; `None` when `input` is used up
    /// first. Entry data and context in `out` are slices of the input; `out` is cleared at
    /// the start of every call.
    pub fn decode(
        &mut self,
        input: &mut Bytes,
        out: &mut Message,
    ) -> Result<Option<FrameInfo>, DecodeError> {
        // Drop the previous frame's slices first, so that the buffers they point into
        // can be reused in place rather than reallocated.
        out.clear();
        let max = self.max_frame;
        let Some((frame, offset)) = self
            .asm
            .next_frame_in_place(input, |b, o| scan_len_prefixed(b, 0, max, Part::Message, o))?
        else {
            return Ok(None);
        };
        let (merged, len) = frame.parse(input, |frame, len| {
            (wire::merge_message_at(out, frame, 8..len), len)
        });
        merged.map_err(|e| self.asm.fail(protobuf_error(Part::Message, e, offset + 8)))?;
        let kind = if out.is_link_heartbeat() {
            FrameKind::LinkHeartbeat
        } else {
            FrameKind::Message
        };
        Ok(Some(FrameInfo { kind, offset, len }))
    }

    /// Call at the end of the input: fails if it ended inside a frame.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        let max = self.max_frame;
        self.asm.finish(
            |b, o| scan_len_prefixed(b, 0, max, Part::Message, o),
            Part::Message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn link_heartbeat_is_the_38_byte_etcd_frame() {
        let mut buf = BytesMut::new();
        assert_eq!(
            encode_message_frame(&Message::link_heartbeat(), &mut buf),
            FrameKind::LinkHeartbeat
        );
        let want = hex::decode(
            "000000000000001e0808100018002000280030004000\
             4a0a12080a02280010001800500058 00"
                .replace(' ', ""),
        )
        .unwrap();
        assert_eq!(&buf[..], &want[..]);
        let mut dec = MessageStreamDecoder::new(&Limits::default());
        let mut out = Message::default();
        let info = dec.decode(&mut buf.freeze(), &mut out).unwrap().unwrap();
        assert_eq!((info.kind, info.len), (FrameKind::LinkHeartbeat, 38));
    }

    /// The length is written after the message: it must count the payloads a send
    /// batch keeps by reference as well as the bytes copied into its buffer.
    #[test]
    fn frame_length_counts_payloads_kept_by_reference() {
        use crate::http::batch::{Batch, COPY_LIMIT};
        use crate::raftpb::{wire, Entry, MessageType};
        let big = Bytes::from(vec![5u8; COPY_LIMIT + 3]);
        let m = Message {
            msg_type: MessageType::MsgApp as i32,
            to: 2,
            from: 1,
            term: 7,
            entries: vec![
                Entry {
                    index: 1,
                    data: Some(big.clone()),
                    ..Default::default()
                },
                Entry {
                    index: 2,
                    data: Some(Bytes::from_static(b"small")),
                    ..Default::default()
                },
            ],
            context: Some(big.clone()),
            ..Default::default()
        };
        let mut batch = Batch::with_capacity(64);
        batch.buf().extend_from_slice(b"ahead");
        encode_message_frame(&m, &mut batch);
        assert_eq!(batch.referenced_len(), 2 * big.len(), "kept by reference");
        let mut pieces = Vec::new();
        batch.take_from(5, &mut pieces);
        let mut whole = BytesMut::new();
        for p in &pieces {
            whole.extend_from_slice(p);
        }
        let len = u64::from_be_bytes(whole[..8].try_into().unwrap());
        assert_eq!(len as usize, wire::message_len(&m));
        assert_eq!(whole.len(), 8 + wire::message_len(&m));
        let mut dec = MessageStreamDecoder::new(&Limits::default());
        let mut out = Message::default();
        dec.decode(&mut whole.freeze(), &mut out).unwrap().unwrap();
        assert_eq!(out, m);
    }

    #[test]
    fn length_over_the_cap_is_refused_before_reading_on() {
        let mut dec = MessageStreamDecoder::new(&Limits::default().with_max_frame(1024));
        let mut input = Bytes::copy_from_slice(&2000u64.to_be_bytes());
        let e = dec.decode(&mut input, &mut Message::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "raft message length 2008 exceeds the limit of 1024 bytes (at byte offset 0)"
        );
    }
}
