//! The rafthttp frame codecs (spec §2.3–2.7), sans-IO: encoders write into a caller's
//! reusable [`BytesMut`](bytes::BytesMut); decoders are fed input in pieces of any size and
//! yield one frame at a time into a caller's reusable [`Message`](crate::raftpb::Message).
//!
//! | stream | encoder | decoder |
//! |---|---|---|
//! | msgappv2 (`/raft/stream/msgapp/<id>`) | [`MsgAppV2Encoder`] | [`MsgAppV2Decoder`] |
//! | message (`/raft/stream/message/<id>`) | [`encode_message_frame`] | [`MessageStreamDecoder`] |
//! | msgapp v1 (`/raft/stream/<id>`, etcd 2.x) | [`MsgAppV1Encoder`] | [`MsgAppV1Decoder`] |
//! | pipeline body (`POST /raft`) | [`encode_pipeline_body`] | [`PipelineBodyDecoder`] |
//! | snapshot (`POST /raft/snapshot`) | [`encode_snapshot_envelope`] | [`SnapshotDecoder`] |

mod assembler;
mod deferred_payloads;
mod message_stream;
mod msgapp_v1;
mod msgappv2;
mod pipeline;
mod snapshot;

pub use deferred_payloads::{Deferred, PayloadRanges, DEFER_MIN_ENTRIES};
pub use message_stream::{encode_message_frame, MessageStreamDecoder};
pub use msgapp_v1::{MsgAppV1Decoder, MsgAppV1Encoder, V1Write};
pub use msgappv2::{MsgAppV2Decoder, MsgAppV2Encoder};
pub use pipeline::{encode_pipeline_body, PipelineBodyDecoder};
pub use snapshot::{encode_snapshot_envelope, SnapshotDecoder, SnapshotPart};

use crate::error::{DecodeError, DecodeErrorKind, Part};

/// The kind of a decoded (or encoded) frame, named as `rafthttp decode` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A keep-alive: msgappv2 `0x00`, the message-stream heartbeat message, or an empty v1
    /// batch. Receivers drop it.
    LinkHeartbeat,
    /// msgappv2 `0x01`: entries appended right after the previous MsgApp.
    AppEntries,
    /// msgappv2 `0x02`: a whole MsgApp protobuf.
    MsgApp,
    /// A length-prefixed (or, in a pipeline body, bare) Message protobuf.
    Message,
    /// A msgapp v1 batch of entries.
    Batch,
}

impl FrameKind {
    /// The name `rafthttp decode` prints.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::LinkHeartbeat => "LinkHeartbeat",
            FrameKind::AppEntries => "AppEntries",
            FrameKind::MsgApp => "MsgApp",
            FrameKind::Message => "Message",
            FrameKind::Batch => "Batch",
        }
    }
}

/// Where a decoded frame was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Offset of its first byte in the decoder's input.
    pub offset: u64,
    /// Its length in bytes, framing included.
    pub len: usize,
}

/// Wraps a prost error as ours, at `offset`.
fn protobuf_error(part: Part, e: prost::DecodeError, offset: u64) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::Protobuf {
            part,
            reason: e.to_string(),
        },
        offset,
    )
}
