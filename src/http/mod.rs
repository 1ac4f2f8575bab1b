//! HTTP/1.1 framing for rafthttp, sans-IO: the chunked transfer coding that every stream
//! and snapshot body uses, and message heads.

pub mod chunked;
pub mod head;
