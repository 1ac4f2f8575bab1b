//! Loopback streaming of chunked data in 64 KiB writes: a plain blocking std TCP
//! baseline, then our HTTP server/client on the epoll and io_uring drivers. Sender and
//! receiver run on their own threads (each with its own runtime), as two members would.
//! Prints payload MB/s and CPU time per MiB (getrusage, whole process, both sides), as
//! medians of interleaved rounds (`LOOPBACK_RUNS`, default 5).
//!
//! `cargo bench --bench loopback_stream` (`LOOPBACK_MIB` sets the size, default 4096;
//! `LOOPBACK_ONLY=std|epoll|io_uring` runs one row).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rafthttp::http::batch::Batch;
use rafthttp::http::chunked::{write_chunk, ChunkedDecoder, ChunkedEvent, LAST_CHUNK};
use rafthttp::http::client::{Client, ClientConfig, PeerUrl};
use rafthttp::http::router::{
    BodyMode, PathPattern, Request, Response, ResponseBody, Router, StreamBody,
};
use rafthttp::http::server::{listen_all, Server, ServerConfig};
use rafthttp::io::{block_on, probe_uring, Backend, BufferPool, IoBackend, IoTask};
use rafthttp::usage::cpu_time;
use rafthttp::Limits;

const CHUNK: usize = 64 * 1024;

struct Figures {
    mb_per_s: f64,
    cpu_us_per_mib: f64,
}

fn measure(total: usize, run: impl FnOnce()) -> Figures {
    let (t0, c0) = (Instant::now(), cpu_time());
    run();
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    let mib = (total / (1 << 20)) as f64;
    Figures {
        mb_per_s: total as f64 / wall.as_secs_f64() / 1e6,
        cpu_us_per_mib: cpu.as_secs_f64() * 1e6 / mib,
    }
}

fn std_baseline(total: usize) -> Figures {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    measure(total, || {
        let writer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let payload = vec![b'x'; CHUNK];
            let mut out = Vec::with_capacity(CHUNK + 32);
            for _ in 0..total / CHUNK {
                out.clear();
                write_chunk(&payload, &mut out);
                s.write_all(&out).unwrap();
            }
            s.write_all(LAST_CHUNK).unwrap();
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut buf = BytesMut::with_capacity(CHUNK * 2);
        let mut got = 0;
        'read: loop {
            buf.resize(CHUNK * 2, 0);
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let mut piece = buf.split().freeze();
            while let Some(ev) = dec.decode(&mut piece).unwrap() {
                match ev {
                    ChunkedEvent::Data(d) => got += d.len(),
                    ChunkedEvent::End => break 'read,
                }
            }
        }
        assert_eq!(got, total);
        writer.join().unwrap();
    })
}

/// Yields `left` bytes of payload in 64 KiB batches.
struct Payload {
    left: usize,
    src: Bytes,
}

impl StreamBody for Payload {
    fn poll_batch(
        &mut self,
        _cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>> {
        if self.left == 0 {
            return Poll::Ready(Ok(false));
        }
        batch.put_payload(&self.src);
        self.left -= CHUNK;
        Poll::Ready(Ok(true))
    }
}

struct Serve {
    total: usize,
    addr_tx: mpsc::Sender<SocketAddr>,
    done_rx: Option<std::sync::Arc<std::sync::Mutex<mpsc::Receiver<()>>>>,
}

impl IoTask for Serve {
    type Output = ();
    async fn run<B: Backend>(self) {
        let total = self.total;
        let router = Router::new().route(
            PathPattern::Prefix("/raft/stream/".into()),
            BodyMode::Buffered(0),
            move |_r: Request| async move {
                let body = Payload {
                    left: total,
                    src: Bytes::from(vec![b'x'; CHUNK]),
                };
                Response {
                    status: 200,
                    headers: Default::default(),
                    body: ResponseBody::Stream(Box::new(body)),
                }
            },
        );
        let server = Server::new(
            router,
            ServerConfig::default(),
            Rc::new(BufferPool::new(2 * CHUNK, 8)),
        );
        let addr = listen_all::<B>(&server, &["127.0.0.1:0".parse().unwrap()]).unwrap()[0];
        self.addr_tx.send(addr).unwrap();
        // Serve until the client says it is done.
        let done = self.done_rx.unwrap();
        loop {
            if done.lock().unwrap().try_recv().is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.stop();
    }
}

struct Fetch {
    addr: SocketAddr,
    total: usize,
}

impl IoTask for Fetch {
    type Output = ();
    async fn run<B: Backend>(self) {
        let client: Client<B> = Client::new(
            ClientConfig::default(),
            Rc::new(BufferPool::new(4 * CHUNK, 8)),
        );
        let url: PeerUrl = format!("http://{}", self.addr).parse().unwrap();
        let mut s = client
            .get_stream(&url, "/raft/stream/msgapp/1", &[])
            .await
            .unwrap();
        let mut got = 0;
        while let Some(piece) = s.next().await.unwrap() {
            got += piece.len();
        }
        assert_eq!(got, self.total);
        s.close();
    }
}

fn ours(backend: IoBackend, total: usize) -> Figures {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let done_rx = std::sync::Arc::new(std::sync::Mutex::new(done_rx));
    let server = std::thread::spawn(move || {
        block_on(
            backend,
            Serve {
                total,
                addr_tx,
                done_rx: Some(done_rx),
            },
        )
        .unwrap()
    });
    let addr = addr_rx.recv().unwrap();
    let figures = measure(total, || block_on(backend, Fetch { addr, total }).unwrap());
    done_tx.send(()).unwrap();
    server.join().unwrap();
    figures
}

/// One benchmark row: runs once and returns its figures.
type Row = Box<dyn Fn() -> Figures>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::var("LOOPBACK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let total = mib << 20;
    let runs: usize = std::env::var("LOOPBACK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "loopback chunked stream, {mib} MiB in 64 KiB chunks, median of {runs} interleaved rounds"
    );
    println!("{:<22} {:>10} {:>14}", "path", "MB/s", "CPU µs/MiB");
    let mut rows: Vec<(&str, Row)> = vec![(
        "std blocking (2 thr)",
        Box::new(move || std_baseline(total)),
    )];
    rows.push((
        "epoll (2 I/O thr)",
        Box::new(move || ours(IoBackend::Epoll, total)),
    ));
    if probe_uring().is_ok() {
        rows.push((
            "io_uring (2 I/O thr)",
            Box::new(move || ours(IoBackend::Uring, total)),
        ));
    } else {
        println!("io_uring: unavailable here, skipped");
    }
    // LOOPBACK_ONLY=std|epoll|io_uring keeps just the rows whose name starts with it.
    let only = std::env::var("LOOPBACK_ONLY").unwrap_or_default();
    rows.retain(|(name, _)| name.starts_with(only.as_str()));
    // Rounds interleave the rows, so that a noisy neighbour hurts them all alike.
    let mut figures: Vec<Vec<Figures>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (_, run)) in rows.iter().enumerate() {
            figures[i].push(run());
        }
    }
    for ((name, _), figs) in rows.iter().zip(figures) {
        let mb = median(figs.iter().map(|f| f.mb_per_s).collect());
        let cpu = median(figs.iter().map(|f| f.cpu_us_per_mib).collect());
        let (lo, hi) = min_max(figs.iter().map(|f| f.mb_per_s).collect());
        println!("{name:<22} {mb:>10.0} {cpu:>14.1}   (MB/s range {lo:.0}–{hi:.0})");
    }
}

fn min_max(v: Vec<f64>) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (min, max)
}
