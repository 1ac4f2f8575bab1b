//! Runs one codec hot path `N` times, for `perf/callgrind.sh`, which runs it at two
//! counts and divides the difference in instructions by the difference in messages
//! (so that set-up cancels out).
//!
//! `cargo run --release --example codec_loop -- <path> <n>`, where path is one of
//! `msgappv2-encode-1x64B`, `msgappv2-decode-1x64B`, `msgappv2-encode-100x64B`,
//! `msgappv2-decode-100x64B`, `msgappv2-decode-deferring-100x64B`, `message-encode-heartbeat`, `message-decode-heartbeat`,
//! `head-parse`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use rafthttp::codec::{
    encode_message_frame, Deferred, MessageStreamDecoder, MsgAppV2Decoder, MsgAppV2Encoder,
    PayloadRanges,
};
use rafthttp::http::head::{Head, DEFAULT_MAX_HEAD};
use rafthttp::raftpb::Message;
use rafthttp::workload::{heartbeat, AppSource};
use rafthttp::Limits;

const HEAD: &[u8] = b"GET /raft/stream/msgapp/1 HTTP/1.1\r\nHost: 127.0.0.1:2380\r\nUser-Agent: Go-http-client/1.1\r\nX-Etcd-Cluster-Id: c1a5\r\nX-Min-Cluster-Version: 3.0.0\r\nX-Peerurls: http://127.0.0.1:2381\r\nX-Raft-To: 2\r\nX-Server-From: 1\r\nX-Server-Version: 3.4.23\r\nAccept-Encoding: gzip\r\n\r\n";

/// Frames per decoded stream; counts must be multiples of it.
const ROUND: usize = 1000;

fn msgapp_stream(per: usize, n: usize) -> Bytes {
    let mut src = AppSource::new(1, 2, per, 64);
    let mut enc = MsgAppV2Encoder::new();
    let (mut m, mut buf) = (Message::default(), BytesMut::new());
    for _ in 0..n {
        src.fill(&mut m);
        enc.encode(&m, &mut buf);
    }
    buf.freeze()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: codec_loop <path> <n>");
        std::process::exit(2);
    };
    let limits = Limits::default();
    let mut m = Message::default();
    let mut buf = BytesMut::with_capacity(1 << 20);
    match path.as_str() {
        "msgappv2-encode-1x64B" | "msgappv2-encode-100x64B" => {
            let per = if path.ends_with("100x64B") { 100 } else { 1 };
            let mut src = AppSource::new(1, 2, per, 64);
            let mut enc = MsgAppV2Encoder::new();
            for _ in 0..n {
                src.fill(&mut m);
                enc.encode(black_box(&m), &mut buf);
                buf.clear();
            }
        }
        "msgappv2-decode-1x64B" | "msgappv2-decode-100x64B" => {
            let per = if path.ends_with("100x64B") { 100 } else { 1 };
            // One stream of ROUND frames, decoded n / ROUND times: the stream's
            // encoding is set-up, the same at both counts.
            let stream = msgapp_stream(per, ROUND);
            for _ in 0..n / ROUND {
                let mut piece = stream.clone();
                let mut dec = MsgAppV2Decoder::new(2, 1, &limits);
                while dec.decode(&mut piece, &mut m).expect("decode").is_some() {
                    black_box(&m);
                }
            }
        }
        "msgappv2-decode-deferring-100x64B" => {
            // The I/O thread's part with a receive worker: payloads left unsliced.
            let stream = msgapp_stream(100, ROUND);
            let (mut deferred, mut ranges) = (Deferred::default(), PayloadRanges::default());
            for _ in 0..n / ROUND {
                let mut piece = stream.clone();
                let mut dec = MsgAppV2Decoder::new(2, 1, &limits);
                while dec
                    .decode_deferring(&mut piece, &mut m, &mut deferred, &mut ranges)
                    .expect("decode")
                    .is_some()
                {
                    black_box(&m);
                    ranges.clear();
                }
            }
        }
        "message-encode-heartbeat" => {
            let hb = heartbeat(1, 2, 7);
            for _ in 0..n {
                encode_message_frame(black_box(&hb), &mut buf);
                buf.clear();
            }
        }
        "message-decode-heartbeat" => {
            for k in 0..ROUND as u64 {
                encode_message_frame(&heartbeat(1, 2, k), &mut buf);
            }
            let stream = buf.split().freeze();
            for _ in 0..n / ROUND {
                let mut piece = stream.clone();
                let mut dec = MessageStreamDecoder::new(&limits);
                while dec.decode(&mut piece, &mut m).expect("decode").is_some() {
                    black_box(&m);
                }
            }
        }
        "head-parse" => {
            for _ in 0..n {
                black_box(Head::parse_request(black_box(HEAD), DEFAULT_MAX_HEAD).expect("head"));
            }
        }
        other => {
            eprintln!("unknown path {other}");
            std::process::exit(2);
        }
    }
}
