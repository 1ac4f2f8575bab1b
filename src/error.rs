//! Typed decode errors. Every error from wire input names the byte offset where it was
//! found, counted from the start of the input the decoder was given.

use std::fmt;

/// A decode failure at a byte offset of the input stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte offset {offset})")]
pub struct DecodeError {
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// Offset of the offending byte (or of the start of the offending frame) in the input.
    pub offset: u64,
}

impl DecodeError {
    /// A new error of `kind` at `offset`.
    pub fn new(kind: DecodeErrorKind, offset: u64) -> Self {
        DecodeError { kind, offset }
    }
}

/// Which part of the wire format a length or a protobuf belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A whole frame on a stream.
    Frame,
    /// A `raftpb.Message` protobuf.
    Message,
    /// A `raftpb.Entry` protobuf.
    Entry,
    /// The pipeline body.
    PipelineBody,
    /// The snapshot envelope.
    SnapshotEnvelope,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Frame => "frame",
            Part::Message => "raft message",
            Part::Entry => "raft entry",
            Part::PipelineBody => "pipeline body",
            Part::SnapshotEnvelope => "snapshot envelope",
        })
    }
}

/// The kinds of decode failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// A length read from the wire is above the configured cap; nothing was allocated for it.
    #[error("{part} length {len} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What the length was for.
        part: Part,
        /// The length (or the least total size it implies).
        len: u64,
        /// The configured cap.
        limit: u64,
    },
    /// A msgappv2 frame began with a tag other than 0, 1 or 2.
    #[error("failed to parse type {0} in msgappv2 stream")]
    UnknownMsgAppV2Tag(u8),
    /// A protobuf did not parse.
    #[error("failed to decode {part}: {reason}")]
    Protobuf {
        /// What was being decoded.
        part: Part,
        /// prost's description.
        reason: String,
    },
    /// The input ended inside a frame (the error's offset is where that frame starts).
    #[error(
        "input ended inside the {part} that starts here: at least {missing} more byte(s) needed"
    )]
    Truncated {
        /// What was cut short.
        part: Part,
        /// How many more bytes were needed at the least.
        missing: u64,
    },
    /// A msgapp v1 batch's first entry has index 0, so the message index would underflow.
    #[error("msgapp v1 batch starts with entry index 0")]
    ZeroEntryIndex,
    /// Bad HTTP/1.1 chunked transfer coding.
    #[error("malformed chunked encoding: {0}")]
    Chunked(&'static str),
    /// Bad or unsupported HTTP message head.
    #[error("malformed HTTP head: {0}")]
    Http(String),
}
