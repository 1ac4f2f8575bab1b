//! HTTP/1.1 framing for rafthttp, sans-IO: the chunked transfer coding that every stream
//! and snapshot body uses, and message heads.

pub mod batch;
pub mod body;
pub mod chunked;
pub mod client;
pub mod direct;
pub mod head;
pub mod io;
pub mod pipelined;
pub mod router;
pub mod server;
pub mod write;
