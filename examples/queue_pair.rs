//! What a stream queue's sender pays when another CPU reads its frames: a sender
//! thread pinned to the first allowed CPU pushes 1x64B MsgApps into a `StreamQueue`
//! while a taker pinned to the second takes a segment every `gap` µs and, by `mode`:
//!
//! - `none`: drops it unread;
//! - `read`: copies it out, as the kernel's `send` does;
//! - `evict`: copies it out, then evicts its lines ([`rafthttp::cache_lines::evict`]),
//!   as the server does after writing frames filled on another CPU.
//!
//! Prints the round trip of a cache line between the two CPUs (before and after), the
//! sender's ns per message, and the taker's time spent copying and evicting.
//!
//! `cargo run --release --example queue_pair -- <none|read|evict> [gap_us] [messages]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut;
use rafthttp::http::batch::Batch;
use rafthttp::http::chunked::CHUNK_HEADER_ROOM;
use rafthttp::raftpb::Message;
use rafthttp::transport::stream_queue::{Push, StreamQueue, Taken};
use rafthttp::transport::worker_placement::{allowed_cpus, pin_to};
use rafthttp::version::StreamType;
use rafthttp::workload::AppSource;

/// ns per round trip of one cache line between threads pinned to `a` and `b`.
fn round_trip_ns(a: usize, b: usize) -> f64 {
    const TRIPS: u64 = 100_000;
    let line = Arc::new(AtomicU64::new(0));
    let answer = line.clone();
    let answerer = std::thread::spawn(move || {
        pin_to(b);
        for i in 0..TRIPS {
            while answer.load(Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            answer.store(2 * i + 2, Release);
        }
    });
    pin_to(a);
    let start = Instant::now();
    for i in 0..TRIPS {
        line.store(2 * i + 1, Release);
        while line.load(Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
    let _ = answerer.join();
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "read".into());
    let gap = Duration::from_micros(args.get(2).and_then(|g| g.parse().ok()).unwrap_or(20));
    let n: u64 = args
        .get(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000_000);
    if !["none", "read", "evict"].contains(&mode.as_str()) {
        eprintln!("mode must be none, read or evict");
        std::process::exit(2);
    }
    let cpus = allowed_cpus().unwrap_or_default();
    let [a, b, ..] = cpus[..] else {
        eprintln!("needs two CPUs (allowed: {cpus:?})");
        std::process::exit(2);
    };
    let before = round_trip_ns(a, b);
    // Unbounded, so that the sender never waits for room: its time is its own.
    let queue = Arc::new(StreamQueue::new(usize::MAX));
    let (generation, _) = queue.attach(StreamType::MsgAppV2, 0);
    let done = Arc::new(AtomicBool::new(false));
    let taker = {
        let (queue, done, mode) = (queue.clone(), done.clone(), mode.clone());
        std::thread::spawn(move || {
            pin_to(b);
            let mut batch = Batch::default();
            batch.buf().put_bytes(0, CHUNK_HEADER_ROOM);
            let mut copy = vec![0u8; 1 << 20];
            let (mut takes, mut busy) = (0u64, Duration::ZERO);
            loop {
                match queue.take(generation, &mut batch, std::task::Waker::noop()) {
                    Ok(Taken::Frames(_)) => {
                        takes += 1;
                        let t = Instant::now();
                        let frames = &batch.buf()[..];
                        if mode != "none" {
                            let len = frames.len().min(copy.len());
                            copy[..len].copy_from_slice(&frames[..len]);
                            std::hint::black_box(&copy);
                        }
                        if mode == "evict" {
                            rafthttp::cache_lines::evict(frames);
                        }
                        busy += t.elapsed();
                        batch.truncate(CHUNK_HEADER_ROOM);
                        let until = Instant::now() + gap;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    _ if done.load(Acquire) => break,
                    _ => std::hint::spin_loop(),
                }
            }
            (takes, busy)
        })
    };
    pin_to(a);
    let mut src = AppSource::new(1, 2, 1, 64);
    let mut m = Message::default();
    let start = Instant::now();
    for _ in 0..n {
        src.fill(&mut m);
        assert_eq!(queue.push(&m), Push::Queued);
    }
    let sent = start.elapsed();
    done.store(true, Release);
    let (takes, busy) = taker.join().unwrap_or_default();
    let after = round_trip_ns(a, b);
    println!(
        "{mode}: cpu pair {before:.0}/{after:.0} ns, sender {:.1} ns/msg, {takes} takes, taker copying{} {:.1} ms",
        sent.as_nanos() as f64 / n as f64,
        if mode == "evict" { " and evicting" } else { "" },
        busy.as_secs_f64() * 1e3
    );
}
