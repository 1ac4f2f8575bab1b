//! Both drivers move bytes over loopback through the one owned-buffer trait.

use bytes::{Bytes, BytesMut};
use rafthttp::io::{block_on, Backend, Conn, IoBackend, IoTask, Listener};

struct Echo;

impl IoTask for Echo {
    type Output = (IoBackend, usize);

    async fn run<B: Backend>(self) -> (IoBackend, usize) {
        let listener = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::task::spawn_local(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                let (r, b) = conn.read(buf).await;
                buf = b;
                if r.unwrap() == 0 {
                    break;
                }
                let (r, _) = conn.write_all(buf.split().freeze()).await;
                r.unwrap();
                buf.reserve(64 * 1024);
            }
            conn.shutdown().unwrap();
        });
        let client = B::connect(addr, &Default::default()).await.unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        let data: Bytes = (0..1 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let writer = {
            let data = data.clone();
            let client = &client;
            async move {
                let (r, _) = client.write_all(data.slice(..1000)).await;
                r.unwrap();
                let parts = vec![
                    data.slice(1000..5000),
                    data.slice(5000..700_000),
                    data.slice(700_000..),
                ];
                let (r, _) = client.write_all_vectored(parts).await;
                r.unwrap();
            }
        };
        let reader = async {
            let mut got = BytesMut::with_capacity(2 << 20);
            while got.len() < data.len() {
                got.reserve(64 * 1024);
                let (r, b) = client.read(got).await;
                got = b;
                assert!(r.unwrap() > 0, "early EOF");
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got, data);
        client.shutdown().unwrap();
        server.await.unwrap();
        (B::KIND, got.len())
    }
}

#[test]
fn echo_over_loopback_on_epoll() {
    assert_eq!(
        block_on(IoBackend::Epoll, Echo).unwrap(),
        (IoBackend::Epoll, 1 << 20)
    );
}

#[test]
fn echo_over_loopback_on_uring() {
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here");
        return;
    }
    assert_eq!(
        block_on(IoBackend::Uring, Echo).unwrap(),
        (IoBackend::Uring, 1 << 20)
    );
}

/// A plain write, then a vectored write of many pieces (more than one write passes to
/// the kernel), some empty, each far more bytes than the socket buffers hold, to a peer
/// that pauses before each: both must wait for room part-way (io_uring takes over from
/// the non-blocking send there) and still deliver every byte in order.
struct ManyPiecesToASlowReader;

const SLOW_FIRST: usize = 16 << 20;
const SLOW_TOTAL: usize = 40 << 20;

impl IoTask for ManyPiecesToASlowReader {
    type Output = Vec<u8>;

    async fn run<B: Backend>(self) -> Vec<u8> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let pause = std::time::Duration::from_millis(200);
            std::thread::sleep(pause);
            let mut got = vec![0u8; SLOW_FIRST];
            std::io::Read::read_exact(&mut s, &mut got).unwrap();
            std::thread::sleep(pause);
            std::io::Read::read_to_end(&mut s, &mut got).unwrap();
            got
        });
        let client = B::connect(addr, &Default::default()).await.unwrap();
        let data: Bytes = (0..SLOW_TOTAL)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>()
            .into();
        let (r, _) = client.write_all(data.slice(..SLOW_FIRST)).await;
        r.unwrap();
        let mut parts = Vec::new();
        let mut at = SLOW_FIRST;
        let mut k = 0usize;
        while at < data.len() {
            // Sizes from 0 to about 190 KiB, so pieces straddle every partial write.
            let len = ((k * 7919) % 190_000).min(data.len() - at);
            parts.push(data.slice(at..at + len));
            at += len;
            k += 1;
        }
        assert!(parts.len() > 64, "more pieces than one write takes");
        assert!(parts.iter().any(Bytes::is_empty));
        let (r, _) = client.write_all_vectored(parts).await;
        r.unwrap();
        client.shutdown().unwrap();
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert!(got == data[..], "bytes arrived out of order or lost");
        got
    }
}

#[test]
fn many_pieces_to_a_slow_reader_on_epoll() {
    let got = block_on(IoBackend::Epoll, ManyPiecesToASlowReader).unwrap();
    assert_eq!(got.len(), SLOW_TOTAL);
}

#[test]
fn many_pieces_to_a_slow_reader_on_uring() {
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here");
        return;
    }
    let got = block_on(IoBackend::Uring, ManyPiecesToASlowReader).unwrap();
    assert_eq!(got.len(), SLOW_TOTAL);
}

/// A connection over loopback: (the dialing end, the accepted end).
async fn connected<B: Backend>() -> (B::Conn, B::Conn) {
    let listener = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = B::connect(addr, &Default::default()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Reads from `conn` into `got` until it holds at least `len` bytes.
async fn read_at_least<C: Conn>(conn: &C, mut got: BytesMut, len: usize) -> BytesMut {
    while got.len() < len {
        got.reserve(1 << 20);
        let (r, b) = conn.read(got).await;
        got = b;
        assert!(r.unwrap() > 0, "EOF before {len} bytes");
    }
    got
}

/// A read of what has already arrived: nothing yet is `WouldBlock`, bytes that came are
/// appended after what the buffer holds, and a closed peer is `Ok(0)`.
struct TryRead;

impl IoTask for TryRead {
    type Output = Vec<u8>;

    async fn run<B: Backend>(self) -> Vec<u8> {
        let (client, server) = connected::<B>().await;
        // Full, so that the read must make room rather than read nothing (EOF's answer).
        let mut buf = BytesMut::with_capacity(2);
        buf.extend_from_slice(b"ab");
        assert_eq!(buf.len(), buf.capacity());
        let e = server.try_read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        let (r, _) = client.write_all(Bytes::from_static(b"cdef")).await;
        r.unwrap();
        // Let the bytes cross (and, on epoll, the reactor see them).
        let mut n = 0;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            match server.try_read(&mut buf) {
                Ok(got) => {
                    n = got;
                    break;
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(n, 4);
        client.shutdown().unwrap();
        let mut eof = false;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            match server.try_read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(more) => panic!("{more} bytes after the peer closed"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
        }
        assert!(eof, "EOF seen");
        buf.to_vec()
    }
}

#[test]
fn try_read_takes_what_arrived_on_epoll() {
    assert_eq!(block_on(IoBackend::Epoll, TryRead).unwrap(), b"abcdef");
}

#[test]
fn try_read_takes_what_arrived_on_uring() {
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here");
        return;
    }
    assert_eq!(block_on(IoBackend::Uring, TryRead).unwrap(), b"abcdef");
}

/// A write of what the socket takes now: bytes go out at once, a full socket is
/// `WouldBlock` (with everything taken before it still arriving, in order), and a
/// write after the reader drained some room is taken again.
struct TryWrite;

impl IoTask for TryWrite {
    type Output = (usize, usize);

    async fn run<B: Backend>(self) -> (usize, usize) {
        let (client, server) = connected::<B>().await;
        // Small buffers on both sides, so that the socket fills long before the data ends.
        socket2::SockRef::from(&client.fd())
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        socket2::SockRef::from(&server.fd())
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        let data: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
        // No reader yet: the socket takes what its buffers (and the peer's) hold, then
        // nothing.
        let mut sent = 0;
        let full = loop {
            match client.try_write(&data[sent..]) {
                Ok(n) => {
                    assert!(n > 0, "a non-empty write took nothing without WouldBlock");
                    sent += n;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock);
        assert!(sent < data.len(), "16 MiB with no reader cannot all fit");
        let before = sent;
        // Read everything sent so far, then write again: the socket has room.
        let mut got = BytesMut::with_capacity(1 << 20);
        got = read_at_least(&server, got, sent).await;
        // epoll answers WouldBlock until its reactor has seen the socket writable again.
        let mut n = 0;
        for _ in 0..100 {
            match client.try_write(&data[sent..sent + 1000]) {
                Ok(took) => {
                    n = took;
                    break;
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(n, 1000);
        sent += n;
        got = read_at_least(&server, got, sent).await;
        assert!(got[..] == data[..sent], "bytes arrive as written, in order");
        (before, sent)
    }
}

#[test]
fn try_write_sends_what_the_socket_takes_on_epoll() {
    let (first, total) = block_on(IoBackend::Epoll, TryWrite).unwrap();
    assert_eq!(total, first + 1000);
}

#[test]
fn try_write_sends_what_the_socket_takes_on_uring() {
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here");
        return;
    }
    let (first, total) = block_on(IoBackend::Uring, TryWrite).unwrap();
    assert_eq!(total, first + 1000);
}

/// A task that lingers ([`Looks`]) for a long while must not hold back what the
/// thread's other tasks wait for: here a read queued just before the linger began (on
/// io_uring, queued for submission but not yet submitted, which only a driver turn
/// does), whose bytes arrive during it. Returns how long after the bytes were sent the
/// read ended, if it did before the linger ran out.
struct LingerHoldsNothingBack;

const LONG_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl IoTask for LingerHoldsNothingBack {
    type Output = Option<std::time::Duration>;

    async fn run<B: Backend>(self) -> Option<std::time::Duration> {
        use std::cell::Cell;
        use std::rc::Rc;
        use std::time::{Duration, Instant};
        let (client, server) = connected::<B>().await;
        let read_at: Rc<Cell<Option<Instant>>> = Rc::default();
        let reader = {
            let read_at = read_at.clone();
            tokio::task::spawn_local(async move {
                let (r, _) = server.read(BytesMut::with_capacity(64)).await;
                assert_eq!(r.unwrap(), 1);
                read_at.set(Some(Instant::now()));
            })
        };
        // The reader queues its read; a yield does not submit it on io_uring.
        tokio::task::yield_now().await;
        let mut looks = rafthttp::io::Looks::new(LONG_LINGER, Instant::now());
        let send_at = Instant::now() + Duration::from_millis(20);
        let mut sent_at = None;
        while read_at.get().is_none() && looks.again::<B>().await {
            if sent_at.is_none() && Instant::now() >= send_at {
                assert_eq!(client.try_write(b"x").unwrap(), 1);
                sent_at = Some(Instant::now());
            }
        }
        let took = match (sent_at, read_at.get()) {
            (Some(sent), Some(read)) => Some(read - sent),
            _ => None,
        };
        reader.abort();
        client.shutdown().unwrap();
        took
    }
}

fn linger_holds_nothing_back_on(backend: IoBackend) {
    let took = block_on(backend, LingerHoldsNothingBack).unwrap();
    let took =
        took.unwrap_or_else(|| panic!("{backend}: the read waited out the {LONG_LINGER:?} linger"));
    assert!(
        took < LONG_LINGER / 4,
        "{backend}: the read ended {took:?} after its bytes were sent"
    );
}

#[test]
fn a_linger_holds_nothing_back_on_epoll() {
    linger_holds_nothing_back_on(IoBackend::Epoll);
}

#[test]
fn a_linger_holds_nothing_back_on_uring() {
    if rafthttp::io::probe_uring().is_err() {
        eprintln!("SKIPPED: io_uring unavailable here");
        return;
    }
    linger_holds_nothing_back_on(IoBackend::Uring);
}
