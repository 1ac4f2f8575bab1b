//! Codec benchmarks: msgappv2 AppEntries encode/decode for the anchor's shapes
//! (1×64 B, 1×1 KiB, 100×64 B), the message-stream heartbeat, chunked decoding and
//! HTTP head parsing. Before timing, it prints allocations per frame (counting
//! allocator) for each codec path, so `cargo bench --bench codec` shows both.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rafthttp::alloc_count::{thread_allocs, CountingAlloc};
use rafthttp::codec::{
    encode_message_frame, MessageStreamDecoder, MsgAppV2Decoder, MsgAppV2Encoder,
};
use rafthttp::http::chunked::{write_chunk, ChunkedDecoder, LAST_CHUNK};
use rafthttp::http::head::{Head, DEFAULT_MAX_HEAD};
use rafthttp::raftpb::Message;
use rafthttp::workload::{heartbeat, replay_reads, AppSource};
use rafthttp::Limits;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SHAPES: [(&str, usize, usize); 3] =
    [("1x64B", 1, 64), ("1x1KiB", 1, 1024), ("100x64B", 100, 64)];
const STREAM_FRAMES: usize = 10_000;

/// A msgappv2 stream of `n` contiguous MsgApps (one MsgApp frame, then AppEntries).
fn msgapp_stream(per_msg: usize, entry_bytes: usize, n: usize) -> Bytes {
    let mut src = AppSource::new(1, 2, per_msg, entry_bytes);
    let mut enc = MsgAppV2Encoder::new();
    let mut m = Message::default();
    let mut buf = BytesMut::new();
    for _ in 0..n {
        src.fill(&mut m);
        enc.encode(&m, &mut buf);
    }
    buf.freeze()
}

fn heartbeat_stream(n: usize) -> Bytes {
    let mut buf = BytesMut::new();
    for k in 0..n as u64 {
        encode_message_frame(&heartbeat(1, 2, k), &mut buf);
    }
    buf.freeze()
}

/// Decodes `stream` as a receiver reads it (64 KiB reads); returns frames decoded.
fn decode_msgapp(stream: &[u8]) -> usize {
    let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
    let mut m = Message::default();
    let mut n = 0;
    replay_reads(stream, 64 * 1024, |mut piece| {
        while dec.decode(&mut piece, &mut m).unwrap().is_some() {
            n += 1;
        }
    });
    n
}

fn decode_heartbeats(stream: &[u8]) -> usize {
    let mut dec = MessageStreamDecoder::new(&Limits::default());
    let mut m = Message::default();
    let mut n = 0;
    replay_reads(stream, 64 * 1024, |mut piece| {
        while dec.decode(&mut piece, &mut m).unwrap().is_some() {
            n += 1;
        }
    });
    n
}

/// Prints allocations per frame for each path over 100,000 frames.
fn report_allocations() {
    const N: usize = 100_000;
    println!("allocations per frame over {N} frames (counting allocator):");
    for (name, per_msg, bytes) in SHAPES {
        let mut src = AppSource::new(1, 2, per_msg, bytes);
        let mut enc = MsgAppV2Encoder::new();
        let mut m = Message::default();
        let mut buf = BytesMut::with_capacity(256 * 1024);
        for _ in 0..64 {
            src.fill(&mut m);
            enc.encode(&m, &mut buf);
        }
        buf.clear();
        let before = thread_allocs();
        for _ in 0..N {
            src.fill(&mut m);
            enc.encode(&m, &mut buf);
            if buf.len() >= 64 * 1024 {
                buf.clear();
            }
        }
        let enc_allocs = (thread_allocs() - before) as f64 / N as f64;
        let stream = msgapp_stream(per_msg, bytes, N);
        let before = thread_allocs();
        let frames = decode_msgapp(&stream);
        let dec_allocs = (thread_allocs() - before) as f64 / frames as f64;
        println!("  msgappv2 {name:8} encode {enc_allocs:.4}  decode {dec_allocs:.4}");
    }
    let stream = heartbeat_stream(N);
    let before = thread_allocs();
    let frames = decode_heartbeats(&stream);
    println!(
        "  heartbeat         decode {:.4}",
        (thread_allocs() - before) as f64 / frames as f64
    );
}

fn msgappv2(c: &mut Criterion) {
    report_allocations();
    let mut g = c.benchmark_group("msgappv2_encode");
    for (name, per_msg, bytes) in SHAPES {
        g.throughput(Throughput::Elements(1));
        let mut src = AppSource::new(1, 2, per_msg, bytes);
        let mut enc = MsgAppV2Encoder::new();
        let mut m = Message::default();
        let mut buf = BytesMut::with_capacity(256 * 1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                src.fill(&mut m);
                black_box(enc.encode(&m, &mut buf));
                if buf.len() >= 64 * 1024 {
                    buf.clear();
                }
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("msgappv2_decode");
    for (name, per_msg, bytes) in SHAPES {
        let stream = msgapp_stream(per_msg, bytes, STREAM_FRAMES);
        g.throughput(Throughput::Elements(STREAM_FRAMES as u64));
        g.bench_function(name, |b| b.iter(|| black_box(decode_msgapp(&stream))));
    }
    g.finish();
}

fn message_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("message_heartbeat");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut k = 0;
    g.bench_function("encode", |b| {
        b.iter(|| {
            k += 1;
            black_box(encode_message_frame(&heartbeat(1, 2, k), &mut buf));
            if buf.len() >= 64 * 1024 {
                buf.clear();
            }
        })
    });
    let stream = heartbeat_stream(STREAM_FRAMES);
    g.throughput(Throughput::Elements(STREAM_FRAMES as u64));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode_heartbeats(&stream)))
    });
    g.finish();
}

fn http(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    // A 1 MiB stream body in 2 KiB chunks, as Go's chunk writer produces.
    let body = msgapp_stream(1, 64, 11_000);
    let mut wire = BytesMut::new();
    for piece in body.chunks(2048) {
        write_chunk(piece, &mut wire);
    }
    wire.extend_from_slice(LAST_CHUNK);
    let wire = wire.freeze();
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("chunked_decode_2KiB_chunks", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new(&Limits::default());
            let mut input = wire.clone();
            let mut n = 0;
            while let Some(ev) = dec.decode(&mut input).unwrap() {
                black_box(&ev);
                n += 1;
            }
            n
        })
    });
    let request = b"GET /raft/stream/msgapp/caff9c7f440d9bc5 HTTP/1.1\r\nHost: 127.0.0.1:23803\r\n\
User-Agent: Go-http-client/1.1\r\nX-Etcd-Cluster-Id: 332b4329fb5bbb93\r\nX-Min-Cluster-Version: 3.0.0\r\n\
X-Peerurls: http://127.0.0.1:23802\r\nX-Raft-To: caff9c7f440d9bc5\r\nX-Server-From: b09a17ddc8c72954\r\n\
X-Server-Version: 3.4.23\r\nAccept-Encoding: gzip\r\n\r\n";
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_stream_request_head", |b| {
        b.iter(|| black_box(Head::parse_request(black_box(request), DEFAULT_MAX_HEAD).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = msgappv2, message_stream, http
}
criterion_main!(benches);
