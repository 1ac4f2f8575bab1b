//! The snapshot body (spec §2.7), `POST /raft/snapshot`: `u64 len | Message (MsgSnap)`,
//! then the raw database bytes until the end of the body. The data are passed on in the
//! pieces they arrive in, never gathered whole.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::assembler::{scan_len_prefixed, FrameAssembler};
use super::protobuf_error;
use crate::error::{DecodeError, Part};
use crate::limits::Limits;
use crate::raftpb::Message;

/// Appends the snapshot envelope `u64 len | m` to `dst`; the data follow it on the wire.
pub fn encode_snapshot_envelope(m: &Message, dst: &mut BytesMut) {
    let len = m.encoded_len();
    dst.reserve(8 + len);
    dst.put_u64(len as u64);
    m.encode_raw(dst);
}

/// One part of a decoded snapshot body.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotPart {
    /// The envelope message (etcd requires it to be MsgSnap; the handler checks).
    Envelope(Box<Message>),
    /// The next piece of database bytes, a slice of the input.
    Data(Bytes),
}

/// Decodes a snapshot body: the envelope (capped by `limits.max_frame`), then the data.
#[derive(Debug)]
pub struct SnapshotDecoder {
    max_frame: u64,
    asm: FrameAssembler,
    envelope_seen: bool,
    data_len: u64,
}

impl SnapshotDecoder {
    /// A decoder for one snapshot body.
    pub fn new(limits: &Limits) -> Self {
        SnapshotDecoder {
            max_frame: limits.max_frame,
            asm: FrameAssembler::default(),
            envelope_seen: false,
            data_len: 0,
        }
    }

    /// The next part from `input`, or `None` when `input` is used up.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<SnapshotPart>, DecodeError> {
        if self.envelope_seen {
            if input.is_empty() {
                return Ok(None);
            }
            self.data_len += input.len() as u64;
            return Ok(Some(SnapshotPart::Data(std::mem::take(input))));
        }
        let max = self.max_frame;
        let Some((frame, offset)) = self.asm.next_frame(input, |b, o| {
            scan_len_prefixed(b, 0, max, Part::SnapshotEnvelope, o)
        })?
        else {
            return Ok(None);
        };
        let m = Message::decode(frame.slice(8..)).map_err(|e| {
            self.asm
                .fail(protobuf_error(Part::SnapshotEnvelope, e, offset + 8))
        })?;
        self.envelope_seen = true;
        Ok(Some(SnapshotPart::Envelope(Box::new(m))))
    }

    /// Call at the end of the body: fails if the envelope was incomplete; otherwise
    /// returns how many data bytes followed it.
    pub fn finish(&mut self) -> Result<u64, DecodeError> {
        if !self.envelope_seen {
            let max = self.max_frame;
            self.asm.finish(
                |b, o| scan_len_prefixed(b, 0, max, Part::SnapshotEnvelope, o),
                Part::SnapshotEnvelope,
            )?;
            return Err(DecodeError::new(
                crate::error::DecodeErrorKind::Truncated {
                    part: Part::SnapshotEnvelope,
                    missing: 8,
                },
                0,
            ));
        }
        Ok(self.data_len)
    }

    /// Bytes of data seen so far after the envelope.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::MessageType;

    #[test]
    fn envelope_then_data_slices() {
        let mut m = Message {
            msg_type: MessageType::MsgSnap as i32,
            to: 2,
            from: 1,
            ..Default::default()
        };
        m.snapshot.metadata.index = 42;
        let mut buf = BytesMut::new();
        encode_snapshot_envelope(&m, &mut buf);
        buf.extend_from_slice(b"DATA");
        let mut input = buf.freeze();
        let mut dec = SnapshotDecoder::new(&Limits::default());
        assert_eq!(
            dec.decode(&mut input).unwrap(),
            Some(SnapshotPart::Envelope(Box::new(m)))
        );
        assert_eq!(
            dec.decode(&mut input).unwrap(),
            Some(SnapshotPart::Data(Bytes::from_static(b"DATA")))
        );
        assert_eq!(dec.decode(&mut input).unwrap(), None);
        assert_eq!(dec.finish().unwrap(), 4);
    }

    #[test]
    fn empty_body_is_a_truncated_envelope() {
        let mut dec = SnapshotDecoder::new(&Limits::default());
        assert!(dec.decode(&mut Bytes::new()).unwrap().is_none());
        assert!(dec
            .finish()
            .unwrap_err()
            .to_string()
            .contains("snapshot envelope"));
    }
}
