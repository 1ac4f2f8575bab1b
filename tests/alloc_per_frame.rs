//! Allocation counts on the codec hot paths (counts, not times, so they are exact):
//! encoding allocates nothing once buffers are warm; decoding 100,000 single-entry
//! AppEntries frames read in 64 KiB pieces allocates under 0.1 times per frame, because
//! entry payloads are slices of the read buffer.

use bytes::BytesMut;
use rafthttp::alloc_count::{thread_allocs, CountingAlloc};
use rafthttp::codec::{
    encode_message_frame, FrameKind, MessageStreamDecoder, MsgAppV2Decoder, MsgAppV2Encoder,
};
use rafthttp::raftpb::Message;
use rafthttp::workload::{heartbeat, replay_reads, AppSource};
use rafthttp::Limits;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const FRAMES: u64 = 100_000;

/// Encodes FRAMES MsgApps the way a stream writer does (reused message; a reused buffer,
/// larger than one flush, written out once it holds 64 KiB); returns (allocations per
/// frame after warm-up, the stream).
fn encode_msgapps(per_msg: usize, entry_bytes: usize) -> (f64, Vec<u8>) {
    let mut src = AppSource::new(1, 2, per_msg, entry_bytes);
    let mut enc = MsgAppV2Encoder::new();
    let mut m = Message::default();
    let mut batch = BytesMut::with_capacity(256 * 1024);
    let mut stream =
        Vec::with_capacity((FRAMES as usize + 1) * (per_msg * (entry_bytes + 20) + 32));
    // Warm-up: the first message is a full MsgApp frame; one whole batch sizes the
    // buffers. The stream starts with these frames.
    for _ in 0..64 {
        src.fill(&mut m);
        enc.encode(&m, &mut batch);
    }
    stream.extend_from_slice(&batch);
    batch.clear();
    let before = thread_allocs();
    for i in 0..FRAMES {
        src.fill(&mut m);
        assert_eq!(enc.encode(&m, &mut batch), FrameKind::AppEntries);
        if batch.len() >= 64 * 1024 || i == FRAMES - 1 {
            stream.extend_from_slice(&batch); // stands in for the socket write
            batch.clear();
        }
    }
    ((thread_allocs() - before) as f64 / FRAMES as f64, stream)
}

fn decode_msgapps(stream: &[u8], per_msg: usize) -> f64 {
    let mut dec = MsgAppV2Decoder::new(2, 1, &Limits::default());
    let mut m = Message::default();
    let mut frames = 0u64;
    let before = thread_allocs();
    replay_reads(stream, 64 * 1024, |mut piece| {
        while dec.decode(&mut piece, &mut m).unwrap().is_some() {
            assert_eq!(m.entries.len(), per_msg);
            frames += 1;
        }
    });
    assert_eq!(frames, FRAMES + 64);
    (thread_allocs() - before) as f64 / frames as f64
}

#[test]
fn msgappv2_encode_allocates_nothing_and_decode_under_a_tenth() {
    for (per_msg, bytes) in [(1, 64), (1, 1024), (100, 64)] {
        let (enc, stream) = encode_msgapps(per_msg, bytes);
        let dec = decode_msgapps(&stream, per_msg);
        println!("msgappv2 {per_msg}x{bytes}B: encode {enc:.4} allocs/frame, decode {dec:.4} allocs/frame");
        assert_eq!(enc, 0.0, "{per_msg}x{bytes}B encode");
        assert!(dec < 0.1, "{per_msg}x{bytes}B decode: {dec}");
    }
}

#[test]
fn message_stream_heartbeats_allocate_nothing_per_frame() {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut stream = Vec::with_capacity(FRAMES as usize * 64);
    let before = thread_allocs();
    for k in 0..FRAMES {
        encode_message_frame(&heartbeat(1, 2, k), &mut buf);
        if buf.len() > 60 * 1024 {
            stream.extend_from_slice(&buf);
            buf.clear();
        }
    }
    let enc = (thread_allocs() - before) as f64 / FRAMES as f64;
    stream.extend_from_slice(&buf);
    let mut dec = MessageStreamDecoder::new(&Limits::default());
    let mut m = Message::default();
    let before = thread_allocs();
    let mut n = 0u64;
    replay_reads(&stream, 64 * 1024, |mut piece| {
        while dec.decode(&mut piece, &mut m).unwrap().is_some() {
            n += 1;
        }
    });
    let dec_per_frame = (thread_allocs() - before) as f64 / n as f64;
    println!("heartbeat: encode {enc:.4} allocs/frame, decode {dec_per_frame:.4} allocs/frame");
    assert_eq!(n, FRAMES);
    assert_eq!(enc, 0.0);
    assert!(dec_per_frame < 0.01, "{dec_per_frame}");
}

/// A parsed head copies its bytes once and keeps header ranges, rather than two owned
/// strings per header: etcd's stream request (nine headers) costs the copy and the
/// start line's two strings, and every header reads back as sent.
#[test]
fn parsing_a_head_allocates_a_fixed_few_times_not_per_header() {
    use rafthttp::http::head::{BodyFraming, Head, DEFAULT_MAX_HEAD};
    let request = b"GET /raft/stream/msgapp/caff9c7f440d9bc5 HTTP/1.1\r\nHost: 127.0.0.1:23803\r\n\
User-Agent: Go-http-client/1.1\r\nX-Etcd-Cluster-Id: 332b4329fb5bbb93\r\nX-Min-Cluster-Version: 3.0.0\r\n\
X-Peerurls: http://127.0.0.1:23802\r\nX-Raft-To: caff9c7f440d9bc5\r\nX-Server-From: b09a17ddc8c72954\r\n\
X-Server-Version: 3.4.23\r\nAccept-Encoding: gzip\r\n\r\n";
    let before = thread_allocs();
    let head = Head::parse_request(request, DEFAULT_MAX_HEAD)
        .unwrap()
        .unwrap();
    let framing = head.body_framing().unwrap();
    let found = head.header_str("x-etcd-cluster-id");
    let allocs = thread_allocs() - before;
    assert_eq!(framing, BodyFraming::Empty);
    assert_eq!(found, Some("332b4329fb5bbb93"));
    assert!(allocs <= 3, "{allocs} allocations for one head");
    let names: Vec<&str> = head.headers().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 9);
    assert_eq!(names[0], "Host");
    assert_eq!(names[8], "Accept-Encoding");
    assert_eq!(head.header("X-SERVER-VERSION"), Some(&b"3.4.23"[..]));
    assert_eq!(head.header("x-raft-term"), None);
}
