//! HTTP/1.1 server and client over loopback, each test on both I/O drivers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rafthttp::http::batch::Batch;
use rafthttp::http::client::{Client, ClientConfig, ClientError, PeerUrl};
use rafthttp::http::router::{
    BodyMode, PathPattern, Request, RequestBody, Response, ResponseBody, Router, StreamBody,
};
use rafthttp::http::server::{listen_all, Server, ServerConfig, DEFAULT_STREAMED_BODY_READ};
use rafthttp::http::write::HeaderValue;
use rafthttp::io::{block_on, Backend, BufferPool, Conn, IoBackend, IoTask, Listener, Timeouts};

fn on_both<T: IoTask + Clone>(task: T) {
    block_on(IoBackend::Epoll, task.clone()).unwrap();
    if rafthttp::io::probe_uring().is_ok() {
        block_on(IoBackend::Uring, task).unwrap();
    } else {
        eprintln!("SKIPPED on io_uring: unavailable here");
    }
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        read: Duration::from_millis(300),
        write: Duration::from_millis(300),
        dial: Duration::from_secs(1),
        idle: Duration::from_millis(300),
    }
}

/// A stream body that yields `batches` then ends (or never ends if `None`).
struct Batches {
    left: Option<usize>,
    size: usize,
    closed: Rc<Cell<Option<bool>>>,
}

impl StreamBody for Batches {
    fn poll_batch(
        &mut self,
        _cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        match &mut self.left {
            Some(0) => Poll::Ready(Ok(false)),
            left => {
                if let Some(n) = left {
                    *n -= 1;
                }
                batch.buf().extend(std::iter::repeat_n(b'x', self.size));
                Poll::Ready(Ok(true))
            }
        }
    }

    fn closed(&mut self, error: Option<&str>) {
        self.closed.set(Some(error.is_some()));
    }
}

thread_local! {
    /// `/raft` handlers running on this thread now, and the most at once.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
    static MOST_RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// Starts a server with a pipeline-like route, a stream route and a streamed-body route.
fn start_server<B: Backend>(
    cfg: ServerConfig,
    stream_closed: Rc<Cell<Option<bool>>>,
    endless: bool,
) -> (Rc<Server>, PeerUrl, Rc<RefCell<Vec<String>>>) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let seen_pipe = seen.clone();
    let seen_snap = seen.clone();
    let router = Router::new()
        .route(
            PathPattern::Exact("/raft".into()),
            BodyMode::Buffered(1 << 20),
            move |req: Request| {
                let seen = seen_pipe.clone();
                async move {
                    let RequestBody::Full(body) = req.body else {
                        unreachable!()
                    };
                    seen.borrow_mut()
                        .push(format!("{} {}", req.remote.port(), body.len()));
                    // Done a moment later, as a handler that waits for the processor
                    // thread: an answer the server holds back while it waits for
                    // input would show.
                    RUNNING.with(|r| {
                        r.set(r.get() + 1);
                        MOST_RUNNING.with(|m| m.set(m.get().max(r.get())));
                    });
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    RUNNING.with(|r| r.set(r.get() - 1));
                    Response::empty(204)
                }
            },
        )
        .route(
            PathPattern::Prefix("/raft/stream/".into()),
            BodyMode::Buffered(0),
            move |_req: Request| {
                let closed = stream_closed.clone();
                async move {
                    let body = Batches {
                        left: if endless { None } else { Some(5) },
                        size: if endless { 1 << 20 } else { 1000 },
                        closed,
                    };
                    Response {
                        status: 200,
                        headers: Default::default(),
                        body: ResponseBody::Stream(Box::new(body)),
                    }
                    .with_header("X-Server-Version", "3.5.0")
                }
            },
        )
        .route(
            PathPattern::Exact("/raft/snapshot".into()),
            BodyMode::Streamed,
            move |req: Request| {
                let seen = seen_snap.clone();
                async move {
                    let RequestBody::Stream(mut rx) = req.body else {
                        unreachable!()
                    };
                    if req.head.header("x-test-slow").is_some() {
                        // A slow reader: the body piles up in the socket meanwhile.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let (mut total, mut largest) = (0, 0);
                    while let Some(piece) = rx.recv().await {
                        match piece {
                            Ok(p) => {
                                total += p.len();
                                largest = largest.max(p.len());
                            }
                            Err(e) => {
                                seen.borrow_mut().push(format!("snapshot error {e}"));
                                return Response::error(400, "bad body");
                            }
                        }
                    }
                    seen.borrow_mut().push(format!("largest piece {largest}"));
                    seen.borrow_mut().push(format!("snapshot {total}"));
                    Response::empty(204)
                }
            },
        );
    let server = Server::new(router, cfg, Rc::new(BufferPool::new(64 * 1024, 16)));
    let addr = listen_all::<B>(&server, &["127.0.0.1:0".parse().unwrap()]).unwrap()[0];
    (server, format!("http://{addr}").parse().unwrap(), seen)
}

fn client<B: Backend>(timeouts: Timeouts) -> Client<B> {
    Client::new(
        ClientConfig {
            timeouts,
            ..ClientConfig::default()
        },
        Rc::new(BufferPool::new(64 * 1024, 16)),
    )
}

/// Sends raw bytes on a fresh connection and reads until the server closes (or 3 s).
async fn raw_exchange<B: Backend>(url: &PeerUrl, send: &[u8]) -> (String, Duration) {
    let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
        .await
        .unwrap();
    let start = Instant::now();
    let (r, _) = conn.write_all(Bytes::copy_from_slice(send)).await;
    r.unwrap();
    let mut got = BytesMut::with_capacity(4096);
    loop {
        got.reserve(4096);
        let read = tokio::time::timeout(Duration::from_secs(3), conn.read(got)).await;
        let Ok((r, b)) = read else {
            panic!("server did not close within 3 s")
        };
        got = b;
        match r {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[derive(Clone)]
struct KeepAlive;
impl IoTask for KeepAlive {
    type Output = ();
    async fn run<B: Backend>(self) {
        let (server, url, seen) = start_server::<B>(ServerConfig::default(), Rc::default(), false);
        let c = client::<B>(Timeouts::default());
        for size in [10usize, 100_000, 0] {
            let r = c
                .request(
                    &url,
                    "POST",
                    "/raft",
                    &[("X-Server-From", HeaderValue::Hex(2))],
                    Bytes::from(vec![1u8; size]),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 204);
        }
        let seen = seen.borrow().clone();
        let ports: Vec<&str> = seen.iter().map(|s| s.split(' ').next().unwrap()).collect();
        assert_eq!(seen.len(), 3);
        assert!(
            ports.iter().all(|p| *p == ports[0]),
            "one connection reused: {seen:?}"
        );
        assert!(seen[1].ends_with(" 100000"));
        assert_eq!(server.open_connections(), 1);
        server.stop();
    }
}

#[test]
fn keep_alive_posts_reuse_one_connection() {
    on_both(KeepAlive);
}

/// Reads a stream response with `next`, or (`try_next`) its first piece with `next` and
/// the rest, after a pause, with `try_next` only.
#[derive(Clone)]
struct Streaming {
    try_next: bool,
}
impl IoTask for Streaming {
    type Output = ();
    async fn run<B: Backend>(self) {
        let closed = Rc::new(Cell::new(None));
        let (server, url, _) = start_server::<B>(ServerConfig::default(), closed.clone(), false);
        let c = client::<B>(Timeouts::default());
        let mut s = c
            .get_stream(&url, "/raft/stream/message/2", &[])
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        assert_eq!(s.head.header_str("x-server-version"), Some("3.5.0"));
        assert_eq!(s.head.header_str("transfer-encoding"), Some("chunked"));
        if self.try_next {
            let mut total = s.next().await.unwrap().map_or(0, |p| p.len());
            // The server writes the rest and ends the body meanwhile.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut ended = false;
            for _ in 0..1000 {
                match s.try_next().unwrap() {
                    Some(Some(piece)) => {
                        assert!(piece.iter().all(|&b| b == b'x'));
                        total += piece.len();
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            assert!(ended, "the end was seen without waiting in `next`");
            assert_eq!(total, 5000);
            server.stop();
            return;
        }
        let mut total = 0;
        while let Some(piece) = s.next().await.unwrap() {
            assert!(piece.iter().all(|&b| b == b'x'));
            total += piece.len();
        }
        assert_eq!(total, 5000);
        assert_eq!(
            closed.get(),
            Some(false),
            "the source heard the stream end cleanly"
        );
        server.stop();
    }
}

#[test]
fn a_streaming_response_is_read_incrementally() {
    on_both(Streaming { try_next: false });
}

#[derive(Clone)]
struct StreamedRequestBody;
impl IoTask for StreamedRequestBody {
    type Output = ();
    async fn run<B: Backend>(self) {
        let (server, url, seen) = start_server::<B>(ServerConfig::default(), Rc::default(), false);
        let body = vec![7u8; 3 << 20];
        let mut req = b"POST /raft/snapshot HTTP/1.1
Host: x
Transfer-Encoding: chunked

"
        .to_vec();
        for piece in body.chunks(100_000) {
            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
            .await
            .unwrap();
        expect_204(&conn, Bytes::from(req)).await;
        assert_eq!(
            seen.borrow().last().unwrap(),
            &format!("snapshot {}", 3 << 20)
        );
        server.stop();
    }
}

/// Writes `req` on `conn` and expects a 204 answer.
async fn expect_204<C: Conn>(conn: &C, req: Bytes) {
    let (r, _) = conn.write_all(req).await;
    r.unwrap();
    let (r, got) = conn.read(BytesMut::with_capacity(1024)).await;
    r.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 204 No Content\r\n"), "{got:?}");
}

#[test]
fn a_streamed_request_body_reaches_the_handler_in_pieces() {
    on_both(StreamedRequestBody);
}

/// A streamed body is read in `streamed_body_read` pieces, more than the pool's buffers
/// hold (64 KiB reads into 128 KiB buffers), and the connection goes back to serving
/// small requests afterwards.
#[derive(Clone)]
struct StreamedBodyReadsLarge;
impl IoTask for StreamedBodyReadsLarge {
    type Output = ();
    async fn run<B: Backend>(self) {
        let (server, url, seen) = start_server::<B>(ServerConfig::default(), Rc::default(), false);
        let size = 3usize << 20;
        let mut req = format!(
            "POST /raft/snapshot HTTP/1.1\r\nHost: x\r\nX-Test-Slow: 1\r\n\
             Transfer-Encoding: chunked\r\n\r\n{size:x}\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&vec![7u8; size]);
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
            .await
            .unwrap();
        expect_204(&conn, Bytes::from(req)).await;
        let largest: usize = {
            let seen = seen.borrow();
            assert_eq!(seen.last().unwrap(), &format!("snapshot {size}"));
            let line = &seen[seen.len() - 2];
            line.strip_prefix("largest piece ")
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            largest > 128 * 1024 && largest <= 2 * DEFAULT_STREAMED_BODY_READ,
            "largest piece {largest}"
        );
        // The same connection, a small body next.
        let small =
            b"POST /raft/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
        expect_204(&conn, Bytes::from_static(small)).await;
        assert_eq!(seen.borrow().last().unwrap(), "snapshot 10");
        server.stop();
    }
}

#[test]
fn a_streamed_body_is_read_in_large_pieces() {
    on_both(StreamedBodyReadsLarge);
}

#[derive(Clone)]
struct Adversarial;
impl IoTask for Adversarial {
    type Output = ();
    async fn run<B: Backend>(self) {
        let cfg = ServerConfig {
            timeouts: short_timeouts(),
            max_head: 1024,
            ..ServerConfig::default()
        };
        let (server, url, seen) = start_server::<B>(cfg, Rc::default(), false);

        // Oversized head: 431, then closed.
        let big = format!("GET /raft HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
        let (resp, _) = raw_exchange::<B>(&url, big.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");

        // Smuggling pairs: 400, then closed.
        for req in [
            "POST /raft HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            "POST /raft HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ] {
            let (resp, _) = raw_exchange::<B>(&url, req.as_bytes()).await;
            assert!(resp.starts_with("HTTP/1.1 400 "), "{req:?}: {resp}");
        }

        // A chunk size that overflows, and one that is not hex: 400.
        for size in ["11111111111111111", "zz"] {
            let req =
                format!("POST /raft HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n");
            let (resp, _) = raw_exchange::<B>(&url, req.as_bytes()).await;
            assert!(resp.starts_with("HTTP/1.1 400 "), "{size}: {resp}");
        }

        // A body over the route's cap: 413.
        let (resp, _) = raw_exchange::<B>(
            &url,
            b"POST /raft HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 413 "), "{resp}");

        // Early EOF inside each body kind: the handler never runs.
        let before = seen.borrow().len();
        for req in [
            &b"POST /raft HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..],
            &b"POST /raft HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"[..],
        ] {
            let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
                .await
                .unwrap();
            let (r, _) = conn.write_all(Bytes::copy_from_slice(req)).await;
            r.unwrap();
            conn.shutdown().unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            seen.borrow().len(),
            before,
            "no handler ran on a truncated body"
        );

        // Slowloris: one byte every 100 ms never completes a head within the deadline.
        let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
            .await
            .unwrap();
        let start = Instant::now();
        let mut closed_after = None;
        for b in b"GET /raft HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            let (r, _) = conn.write_all(Bytes::copy_from_slice(&[*b])).await;
            if r.is_err() {
                closed_after = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (r, got) = conn.read(BytesMut::with_capacity(64)).await;
        assert!(
            matches!(r, Ok(0) | Err(_)) && got.is_empty(),
            "a slow head got an answer: {got:?}"
        );
        assert!(closed_after.is_none_or(|t| t < Duration::from_secs(3)));
        assert!(start.elapsed() < Duration::from_secs(8));

        // Connection: close is honoured.
        let (resp, _) = raw_exchange::<B>(
            &url,
            b"POST /raft HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 204 ") && resp.contains("Connection: close\r\n"),
            "{resp}"
        );

        // Unknown path: Go's 404 text.
        let (resp, _) =
            raw_exchange::<B>(&url, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(
            resp.starts_with("HTTP/1.1 404 ") && resp.ends_with("404 page not found\n"),
            "{resp}"
        );
        server.stop();
    }
}

#[test]
fn adversarial_requests_get_clear_answers_and_cannot_hold_a_connection() {
    on_both(Adversarial);
}

#[derive(Clone)]
struct ClientSideErrors;
impl IoTask for ClientSideErrors {
    type Output = ();
    async fn run<B: Backend>(self) {
        // A raw server: answers each connection with a canned response, then closes.
        let listener = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
        let url: PeerUrl = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            b"HTTP/1.1 200 OK\r\n\r\nuntil close body",
        ];
        tokio::task::spawn_local(async move {
            for answer in answers {
                let (conn, _) = listener.accept().await.unwrap();
                let (r, _) = conn.read(BytesMut::with_capacity(4096)).await;
                r.unwrap();
                let (r, _) = conn.write_all(Bytes::from_static(answer)).await;
                r.unwrap();
                conn.shutdown().unwrap();
            }
        });
        let c = client::<B>(short_timeouts());
        for _ in 0..2 {
            let e = c
                .request(&url, "POST", "/raft", &[], Bytes::from_static(b"x"))
                .await
                .unwrap_err();
            assert!(matches!(e, ClientError::Http(_)), "{e}");
        }
        let r = c
            .request(&url, "POST", "/raft", &[], Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"until close body");

        // Nothing listens here: a dial error, not a hang.
        let dead: PeerUrl = "http://127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            c.request(&dead, "GET", "/", &[], Bytes::new()).await,
            Err(ClientError::Dial { .. })
        ));
    }
}

#[test]
fn client_reports_early_eof_in_each_body_kind() {
    on_both(ClientSideErrors);
}

#[derive(Clone)]
struct Deadlines;
impl IoTask for Deadlines {
    type Output = ();
    async fn run<B: Backend>(self) {
        // A stream whose client never reads: the server's writes stall, and the write
        // deadline closes the connection.
        let closed = Rc::new(Cell::new(None));
        let cfg = ServerConfig {
            timeouts: short_timeouts(),
            ..ServerConfig::default()
        };
        let (server, url, _) = start_server::<B>(cfg, closed.clone(), true);
        let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
            .await
            .unwrap();
        let (r, _) = conn
            .write_all(Bytes::from_static(
                b"GET /raft/stream/message/2 HTTP/1.1\r\n\r\n",
            ))
            .await;
        r.unwrap();
        let start = Instant::now();
        while closed.get().is_none() && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            closed.get(),
            Some(true),
            "the stalled stream ended with an error"
        );
        drop(conn);

        // stop() ends a live stream at once.
        let closed = Rc::new(Cell::new(None));
        let (server2, url2, _) = start_server::<B>(ServerConfig::default(), closed.clone(), true);
        let c = client::<B>(Timeouts::default());
        let mut s = c
            .get_stream(&url2, "/raft/stream/msgapp/2", &[])
            .await
            .unwrap();
        assert!(s.next().await.unwrap().is_some());
        server2.stop();
        let end = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match s.next().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the stream did not end after stop()");
        server.stop();
    }
}

#[test]
fn write_deadline_and_stop_end_streams() {
    on_both(Deadlines);
}

/// Framing plus a large payload per batch: the payload is written from its own buffer
/// (vectored), and the chunk counts it.
struct Mixed {
    left: usize,
    payload: Bytes,
}

impl StreamBody for Mixed {
    fn poll_batch(
        &mut self,
        _cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        if self.left == 0 {
            return Poll::Ready(Ok(false));
        }
        self.left -= 1;
        batch.buf().extend_from_slice(b"<head>");
        batch.put_payload(&self.payload);
        batch.buf().extend_from_slice(b"<tail>");
        batch.put_payload(&Bytes::from_static(b"small"));
        Poll::Ready(Ok(true))
    }
}

/// A server whose stream route answers every dial with a body from `body`.
fn stream_server(body: impl Fn() -> Box<dyn StreamBody> + 'static) -> Rc<Server> {
    let body = Rc::new(body);
    let router = Router::new().route(
        PathPattern::Prefix("/raft/stream/".into()),
        BodyMode::Buffered(0),
        move |_r: Request| {
            let body = body();
            async move {
                Response {
                    status: 200,
                    headers: Default::default(),
                    body: ResponseBody::Stream(body),
                }
            }
        },
    );
    Server::new(
        router,
        ServerConfig::default(),
        Rc::new(BufferPool::new(64 * 1024, 4)),
    )
}

/// Dials a stream at `addr` and reads its body to the end (at most `limit` bytes).
async fn read_stream<B: Backend>(addr: std::net::SocketAddr, limit: u64) -> Vec<u8> {
    let c = client::<B>(Timeouts::default());
    let s = c
        .get_stream(
            &format!("http://{addr}").parse().unwrap(),
            "/raft/stream/msgapp/1",
            &[],
        )
        .await
        .unwrap();
    s.read_to_end(limit).await.unwrap().to_vec()
}

#[derive(Clone)]
struct LargePayloads;
impl IoTask for LargePayloads {
    type Output = ();
    async fn run<B: Backend>(self) {
        let payload: Bytes = (0..100_000u32)
            .map(|i| (i % 241) as u8)
            .collect::<Vec<u8>>()
            .into();
        let p2 = payload.clone();
        let server = stream_server(move || {
            Box::new(Mixed {
                left: 3,
                payload: p2.clone(),
            })
        });
        let addr = listen_all::<B>(&server, &["127.0.0.1:0".parse().unwrap()]).unwrap()[0];
        let body = read_stream::<B>(addr, 10 << 20).await;
        let mut want = Vec::new();
        for _ in 0..3 {
            want.extend_from_slice(b"<head>");
            want.extend_from_slice(&payload);
            want.extend_from_slice(b"<tail>small");
        }
        assert_eq!(body.len(), want.len());
        assert!(body == want, "bytes differ");
        server.stop();
    }
}

#[test]
fn large_stream_payloads_are_written_by_reference_and_arrive_intact() {
    on_both(LargePayloads);
}

#[derive(Clone)]
struct SeveralListeners;
impl IoTask for SeveralListeners {
    type Output = ();
    async fn run<B: Backend>(self) {
        let router = Router::new().route(
            PathPattern::Exact("/raft/probing".into()),
            BodyMode::Buffered(0),
            |_r: Request| async { Response::error(200, "ok") },
        );
        let server = Server::new(
            router,
            ServerConfig::default(),
            Rc::new(BufferPool::new(16 * 1024, 4)),
        );
        let addrs = listen_all::<B>(
            &server,
            &[
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.2:0".parse().unwrap(),
            ],
        )
        .unwrap();
        let c = client::<B>(Timeouts::default());
        for addr in &addrs {
            let r = c
                .request(
                    &format!("http://{addr}").parse().unwrap(),
                    "GET",
                    "/raft/probing",
                    &[],
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
        }
        assert_ne!(addrs[0].ip(), addrs[1].ip());
        server.stop();
    }
}

#[test]
fn one_server_listens_on_several_addresses() {
    on_both(SeveralListeners);
}

/// `n` POST /raft requests framed back to back, with bodies of `sizes`; the request at
/// `close_at` (if any) asks the server to close after answering it.
fn pipelined_wire(url: &PeerUrl, sizes: &[usize], close_at: Option<usize>) -> Bytes {
    use rafthttp::http::write::{write_request_head, Framing};
    let mut wire = BytesMut::new();
    for (i, &size) in sizes.iter().enumerate() {
        let mut headers = vec![("X-Server-From", HeaderValue::Hex(2))];
        if close_at == Some(i) {
            headers.push(("Connection", HeaderValue::Static("close")));
        }
        write_request_head(
            &mut wire,
            "POST",
            "/raft",
            &url.authority,
            &headers,
            Framing::Length(size as u64),
        );
        wire.extend(std::iter::repeat_n(i as u8, size));
    }
    wire.freeze()
}

/// Sends `first` (a whole request and part of the next) on a new connection, expects
/// the first answer within 2 s, without the rest, then sends `rest` and expects the
/// second answer: 204 both times.
async fn answered_before_the_rest<B: Backend>(url: &PeerUrl, first: Bytes, rest: Bytes) {
    let conn = B::connect(url.resolve().await.unwrap(), &Default::default())
        .await
        .unwrap();
    let (r, _) = conn.write_all(first).await;
    r.unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        conn.read(BytesMut::with_capacity(4096)),
    )
    .await;
    let Ok((Ok(n), answer)) = read else {
        panic!("the first answer was held back behind a partial request")
    };
    assert!(answer[..n].starts_with(b"HTTP/1.1 204"));
    let (r, _) = conn.write_all(rest).await;
    r.unwrap();
    let (r, answer) = conn.read(BytesMut::with_capacity(4096)).await;
    assert!(answer[..r.unwrap()].starts_with(b"HTTP/1.1 204"));
}

#[derive(Clone)]
struct Pipelined;
impl IoTask for Pipelined {
    type Output = ();
    async fn run<B: Backend>(self) {
        let (server, url, seen) = start_server::<B>(ServerConfig::default(), Rc::default(), false);
        let c = client::<B>(Timeouts::default());

        // Three requests in one write, one of them larger than a read: three answers, in
        // order, from one connection, which stays open for reuse.
        let sizes = [10usize, 100_000, 0];
        let (got, error) = c
            .pipelined(&url, pipelined_wire(&url, &sizes, None), 3)
            .await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [204; 3]);
        let seen_now = seen.borrow().clone();
        let bodies: Vec<&str> = seen_now
            .iter()
            .map(|s| s.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(bodies, ["10", "100000", "0"], "handled in order");
        let port = seen_now[0].split(' ').next().unwrap().to_string();
        assert!(
            seen_now.iter().all(|s| s.starts_with(&port)),
            "{seen_now:?}"
        );

        // The idle connection is reused for the next batch, whose requests arrive whole
        // in one read: each handler starts before the earlier ones are answered.
        MOST_RUNNING.with(|m| m.set(0));
        let (got, error) = c
            .pipelined(&url, pipelined_wire(&url, &[1, 2, 3, 4], None), 4)
            .await;
        assert!(error.is_none() && got.len() == 4, "{error:?}");
        assert_eq!(MOST_RUNNING.with(Cell::get), 4, "handlers ran side by side");
        assert!(
            seen.borrow()[3].starts_with(&port),
            "reused: {:?}",
            seen.borrow()
        );
        assert_eq!(server.open_connections(), 1);

        // The server closes after the request that asked it to: the answers before and
        // at it arrive, the one after it fails, and nothing hangs.
        let (got, error) = c
            .pipelined(&url, pipelined_wire(&url, &[5, 6, 7], Some(1)), 3)
            .await;
        assert_eq!(got.len(), 2);
        assert!(
            matches!(error, Some(ClientError::Http(_))),
            "the third was never answered: {error:?}"
        );

        // A response held back while the next request was already arriving goes out
        // before the server waits for the rest of that request: a client may wait for
        // the first answer before it sends more. The second request is cut inside its
        // body, then inside its head.
        let wire = pipelined_wire(&url, &[3, 50], None);
        let first_len = pipelined_wire(&url, &[3], None).len();
        for cut in [wire.len() - 20, first_len + 10] {
            answered_before_the_rest::<B>(&url, wire.slice(..cut), wire.slice(cut..)).await;
        }

        // A streamed body (a snapshot) after a pipelined POST: the POST's answer goes out
        // before the server waits for the snapshot's body.
        {
            use rafthttp::http::write::{write_request_head, Framing};
            let mut wire = BytesMut::from(&pipelined_wire(&url, &[3], None)[..]);
            write_request_head(
                &mut wire,
                "POST",
                "/raft/snapshot",
                &url.authority,
                &[],
                Framing::Length(10),
            );
            wire.extend_from_slice(b"0123");
            answered_before_the_rest::<B>(&url, wire.freeze(), Bytes::from_static(b"456789")).await;
            assert!(
                seen.borrow().iter().any(|s| s == "snapshot 10"),
                "{:?}",
                seen.borrow()
            );
        }

        // Raw bytes: the answers to pipelined requests all arrive before the close.
        let (text, took) =
            raw_exchange::<B>(&url, &pipelined_wire(&url, &[3, 4, 0, 9], Some(2))).await;
        assert_eq!(
            text.matches("HTTP/1.1 204 No Content\r\n").count(),
            3,
            "{text}"
        );
        assert!(
            took < Duration::from_secs(2),
            "answered at once, not at a timeout"
        );
        server.stop();
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    on_both(Pipelined);
}

/// `try_next` hands out, without waiting, what has already arrived of a stream body,
/// chunk framing and its end included.
#[test]
fn try_next_takes_what_arrived_of_a_stream() {
    on_both(Streaming { try_next: true });
}

/// A connection that logs each write as it is made: `now` (what a non-blocking send
/// took) or `driver` (handed to the driver to write whole), with its bytes.
struct Recording<C> {
    inner: C,
    log: Rc<RefCell<Vec<(&'static str, Bytes)>>>,
}

impl<C: Conn> Conn for Recording<C> {
    async fn read(&self, buf: BytesMut) -> (std::io::Result<usize>, BytesMut) {
        self.inner.read(buf).await
    }

    fn try_read(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.inner.try_read(buf)
    }

    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.try_write(buf);
        if let Ok(n) = r {
            let took = Bytes::copy_from_slice(&buf[..n]);
            self.log.borrow_mut().push(("now", took));
        }
        r
    }

    async fn write_all(&self, buf: Bytes) -> (std::io::Result<()>, Bytes) {
        self.log.borrow_mut().push(("driver", buf.clone()));
        self.inner.write_all(buf).await
    }

    async fn write_all_vectored(&self, bufs: Vec<Bytes>) -> (std::io::Result<()>, Vec<Bytes>) {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.log.borrow_mut().push(("driver", all.into()));
        self.inner.write_all_vectored(bufs).await
    }

    fn shutdown(&self) -> std::io::Result<()> {
        self.inner.shutdown()
    }

    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.fd()
    }
}

/// Nothing for a moment, then `idle_batch` bytes of `x`, then at once 2,000 of `y`,
/// then the end. Neither byte is a hex digit, so the chunk framing never adds to a
/// count of them.
struct IdleThenBusy {
    wait: std::pin::Pin<Box<tokio::time::Sleep>>,
    step: usize,
    idle_batch: usize,
}

impl StreamBody for IdleThenBusy {
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        self.step += 1;
        match self.step {
            1 => {
                if std::future::Future::poll(self.wait.as_mut(), cx).is_pending() {
                    self.step = 0;
                    return Poll::Pending;
                }
                batch
                    .buf()
                    .extend(std::iter::repeat_n(b'x', self.idle_batch));
                Poll::Ready(Ok(true))
            }
            2 => {
                batch.buf().extend(std::iter::repeat_n(b'y', 2000));
                Poll::Ready(Ok(true))
            }
            _ => Poll::Ready(Ok(false)),
        }
    }
}

/// A stream's batch that follows a wait is sent at once (a non-blocking send, the rest
/// through the driver if the socket does not take it all); one that was ready at once
/// goes through the driver, whose deferral lets the next batch grow.
#[derive(Clone)]
struct WriteAfterIdle {
    idle_batch: usize,
}
impl IoTask for WriteAfterIdle {
    type Output = ();
    async fn run<B: Backend>(self) {
        let idle_batch = self.idle_batch;
        let server = stream_server(move || {
            Box::new(IdleThenBusy {
                wait: Box::pin(tokio::time::sleep(Duration::from_millis(30))),
                step: 0,
                idle_batch,
            })
        });
        let listener = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let served = {
            let (server, log) = (server.clone(), log.clone());
            tokio::task::spawn_local(async move {
                let (conn, remote) = listener.accept().await.unwrap();
                // A small send buffer: a large batch cannot all go in one send.
                socket2::SockRef::from(&conn.fd())
                    .set_send_buffer_size(64 * 1024)
                    .unwrap();
                server
                    .serve_conn(Recording { inner: conn, log }, remote)
                    .await;
            })
        };
        let body = read_stream::<B>(addr, 64 << 20).await;
        let mut want = vec![b'x'; idle_batch];
        want.extend_from_slice(&[b'y'; 2000]);
        assert!(body == want, "the body arrives whole and in order");
        served.await.unwrap();
        let log = log.borrow();
        // A run of the batch's byte, which the response head and chunk framing lack.
        let has = |bytes: &Bytes, byte: u8| bytes.windows(16).any(|w| w == [byte; 16]);
        let x_writes: Vec<_> = log.iter().filter(|(_, b)| has(b, b'x')).collect();
        assert_eq!(
            x_writes[0].0, "now",
            "the batch after a wait is sent at once"
        );
        let x_sent: usize = x_writes
            .iter()
            .map(|(_, b)| b.iter().filter(|&&x| x == b'x').count())
            .sum();
        let sizes: Vec<_> = log.iter().map(|(how, b)| (*how, b.len())).collect();
        assert_eq!(x_sent, idle_batch, "each byte written once: {sizes:?}");
        if idle_batch > 1 << 20 {
            assert_eq!(
                x_writes.iter().map(|(how, _)| *how).collect::<Vec<_>>(),
                ["now", "driver"],
                "what the socket did not take goes through the driver"
            );
        }
        let y_writes: Vec<_> = log.iter().filter(|(_, b)| has(b, b'y')).collect();
        assert_eq!(y_writes.len(), 1);
        assert_eq!(y_writes[0].0, "driver", "a batch ready at once is not");
        server.stop();
    }
}

/// A body that writes part of each chunk itself, on the socket the server lends it, and
/// leaves the rest to the server as unframed bytes: first "hello" (the server's batch
/// then carries "world" too), then "abc" alone, then the end.
struct WritesItself {
    socket: Option<std::sync::Arc<dyn rafthttp::http::direct::SocketSend>>,
    step: usize,
}

impl StreamBody for WritesItself {
    fn poll_batch(
        &mut self,
        _cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        self.step += 1;
        let socket = self.socket.as_ref().expect("lent before the first poll");
        let (begun, rest): (&[u8], &'static [u8]) = match self.step {
            1 => (b"5\r\nhe", b"llo\r\n"),
            2 => (b"3\r\nab", b"c\r\n"),
            _ => return Poll::Ready(Ok(false)),
        };
        assert_eq!(socket.try_send(begun).unwrap(), begun.len());
        batch.set_unframed(Bytes::from_static(rest));
        if self.step == 1 {
            batch.buf().extend_from_slice(b"world");
        }
        Poll::Ready(Ok(true))
    }

    fn wants_socket(&self) -> bool {
        true
    }

    fn lend_socket(&mut self, socket: std::sync::Arc<dyn rafthttp::http::direct::SocketSend>) {
        self.socket = Some(socket);
    }
}

/// The server lends a stream body its socket once the head is out, and writes a batch's
/// unframed bytes (the rest of a chunk the body began itself) before the batch's own
/// chunk, or alone.
#[derive(Clone)]
struct LentSocket;
impl IoTask for LentSocket {
    type Output = ();
    async fn run<B: Backend>(self) {
        let server = stream_server(|| {
            Box::new(WritesItself {
                socket: None,
                step: 0,
            })
        });
        let listener = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = {
            let server = server.clone();
            tokio::task::spawn_local(async move {
                let (conn, remote) = listener.accept().await.unwrap();
                server.serve_conn(conn, remote).await;
            })
        };
        let body = read_stream::<B>(addr, 1 << 20).await;
        assert_eq!(body, b"helloworldabc", "whole chunks, in order");
        served.await.unwrap();
        server.stop();
    }
}

#[test]
fn a_stream_body_may_write_on_the_lent_socket_and_leave_the_rest_to_the_server() {
    on_both(LentSocket);
}

#[test]
fn a_stream_batch_after_a_wait_is_sent_at_once() {
    on_both(WriteAfterIdle { idle_batch: 1000 });
}

#[test]
fn a_large_batch_after_a_wait_is_sent_in_part_then_through_the_driver() {
    on_both(WriteAfterIdle {
        idle_batch: 8 << 20,
    });
}
