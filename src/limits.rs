//! Caps on lengths read from the wire. A decoder checks each declared length against
//! these before it keeps any bytes for it, so a peer can never make us allocate more than
//! a cap (plus one read buffer) by lying about a length.

/// Default cap on one stream frame, pipeline body or snapshot envelope: 512 MiB, etcd's
/// message-stream limit since v3.1.
pub const DEFAULT_MAX_FRAME: u64 = 512 * 1024 * 1024;

/// Default cap on a chunk-size line (size plus extensions), as Go's `maxLineLength`.
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4096;

/// Default cap on the trailer section of a chunked body.
pub const DEFAULT_MAX_TRAILERS: usize = 16 * 1024;

/// Length caps for the decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted on any stream (including its framing bytes), the largest
    /// pipeline body and the largest snapshot envelope.
    pub max_frame: u64,
    /// Longest chunk-size line in a chunked body, extensions included.
    pub max_chunk_line: usize,
    /// Largest trailer section of a chunked body.
    pub max_trailers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
            max_trailers: DEFAULT_MAX_TRAILERS,
        }
    }
}

impl Limits {
    /// These limits with a different frame cap.
    pub fn with_max_frame(self, max_frame: u64) -> Self {
        Limits { max_frame, ..self }
    }
}
