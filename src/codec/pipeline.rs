//! The pipeline body (spec §2.3): one bare Message protobuf, `POST /raft`.

use bytes::{Bytes, BytesMut};

use super::protobuf_error;
use crate::error::{DecodeError, DecodeErrorKind, Part};
use crate::limits::Limits;
use crate::raftpb::{wire, Message};

/// Appends `m` as a pipeline body to `dst` (no length prefix; the HTTP request carries
/// Content-Length).
pub fn encode_pipeline_body(m: &Message, dst: &mut BytesMut) {
    dst.reserve(wire::message_len(m));
    wire::encode_message(m, dst);
}

/// Collects a pipeline body, refusing more than `limits.max_frame` bytes (etcd reads it
/// unbounded; we do not), then decodes it.
#[derive(Debug)]
pub struct PipelineBodyDecoder {
    max: u64,
    body: BytesMut,
    /// The body's only piece, kept uncopied while no second piece has come.
    single: Option<Bytes>,
}

impl PipelineBodyDecoder {
    /// A decoder for a body of `content_length` bytes if known; fails at once when that
    /// is over the cap, before anything is read.
    pub fn new(content_length: Option<u64>, limits: &Limits) -> Result<Self, DecodeError> {
        if let Some(len) = content_length {
            if len > limits.max_frame {
                return Err(DecodeError::new(
                    DecodeErrorKind::TooLarge {
                        part: Part::PipelineBody,
                        len,
                        limit: limits.max_frame,
                    },
                    0,
                ));
            }
        }
        Ok(PipelineBodyDecoder {
            max: limits.max_frame,
            body: BytesMut::new(),
            single: None,
        })
    }

    fn len(&self) -> u64 {
        self.body.len() as u64 + self.single.as_ref().map_or(0, |b| b.len() as u64)
    }

    /// Adds the next piece of the body.
    pub fn push(&mut self, piece: Bytes) -> Result<(), DecodeError> {
        let total = self.len() + piece.len() as u64;
        if total > self.max {
            return Err(DecodeError::new(
                DecodeErrorKind::TooLarge {
                    part: Part::PipelineBody,
                    len: total,
                    limit: self.max,
                },
                self.len(),
            ));
        }
        if self.body.is_empty() && self.single.is_none() {
            self.single = Some(piece);
        } else {
            if let Some(first) = self.single.take() {
                self.body.extend_from_slice(&first);
            }
            self.body.extend_from_slice(&piece);
        }
        Ok(())
    }

    /// Decodes the whole body as one Message.
    pub fn finish(self) -> Result<Message, DecodeError> {
        let body = match self.single {
            Some(b) => b,
            None => self.body.freeze(),
        };
        let mut m = Message::default();
        wire::merge_message(&mut m, body).map_err(|e| protobuf_error(Part::Message, e, 0))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::MessageType;

    #[test]
    fn body_round_trips_in_pieces() {
        let m = Message {
            msg_type: MessageType::MsgVote as i32,
            to: 2,
            from: 1,
            term: 9,
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        encode_pipeline_body(&m, &mut buf);
        let bytes = buf.freeze();
        let mut dec =
            PipelineBodyDecoder::new(Some(bytes.len() as u64), &Limits::default()).unwrap();
        for b in bytes.iter() {
            dec.push(Bytes::copy_from_slice(&[*b])).unwrap();
        }
        assert_eq!(dec.finish().unwrap(), m);
    }

    #[test]
    fn oversized_bodies_are_refused_before_and_while_reading() {
        let limits = Limits::default().with_max_frame(10);
        assert!(PipelineBodyDecoder::new(Some(11), &limits).is_err());
        let mut dec = PipelineBodyDecoder::new(None, &limits).unwrap();
        dec.push(Bytes::from_static(&[0; 6])).unwrap();
        let e = dec.push(Bytes::from_static(&[0; 6])).unwrap_err();
        assert_eq!(e.offset, 6);
    }
}
