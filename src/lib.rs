//! rafthttp: etcd's Raft HTTP transport in Rust, wire-compatible with etcd members.
//!
//! The layers, from the bottom (see `docs/architecture.md`):
//! - [`raftpb`]: the raft protobuf messages, encoded as etcd 3.4 does;
//! - [`codec`]: the stream, pipeline and snapshot frame formats, sans-IO;
//! - [`http`]: HTTP/1.1 framing (chunked transfer coding, heads), sans-IO.
#![warn(missing_docs)]

pub mod alloc_count;
pub mod cache_lines;
pub mod codec;
pub mod error;
pub mod etcd;
pub mod http;
pub mod io;
pub mod json;
pub mod limits;
pub mod raft_rs;
pub mod raftpb;
mod recycle;
pub mod transport;
pub mod usage;
pub mod version;
pub mod workload;

pub use error::{DecodeError, DecodeErrorKind};
pub use limits::Limits;
