//! I/O threads: a server runs on one, a client on another; the test thread only queues
//! work and waits for answers.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use rafthttp::http::client::{Client, ClientConfig};
use rafthttp::http::router::{BodyMode, PathPattern, Request, RequestBody, Response, Router};
use rafthttp::http::server::{listen_all, Server, ServerConfig};
use rafthttp::io::{Backend, BufferPool, IoBackend, IoTask, IoThread};

struct StartServer;
impl IoTask for StartServer {
    type Output = (SocketAddr, IoBackend);
    async fn run<B: Backend>(self) -> (SocketAddr, IoBackend) {
        let router = Router::new().route(
            PathPattern::Exact("/raft".into()),
            BodyMode::Buffered(1024),
            |req: Request| async move {
                let RequestBody::Full(body) = req.body else {
                    unreachable!()
                };
                Response::error(
                    200,
                    &format!(
                        "{} bytes on {}",
                        body.len(),
                        std::thread::current().name().unwrap_or("?")
                    ),
                )
            },
        );
        let server = Server::new(
            router,
            ServerConfig::default(),
            Rc::new(BufferPool::new(16 * 1024, 4)),
        );
        (
            listen_all::<B>(&server, &["127.0.0.1:0".parse().unwrap()]).unwrap()[0],
            B::KIND,
        )
    }
}

struct Post(SocketAddr);
impl IoTask for Post {
    type Output = (u16, String);
    async fn run<B: Backend>(self) -> (u16, String) {
        let c: Client<B> = Client::new(
            ClientConfig::default(),
            Rc::new(BufferPool::new(16 * 1024, 4)),
        );
        let r = c
            .request(
                &format!("http://{}", self.0).parse().unwrap(),
                "POST",
                "/raft",
                &[],
                Bytes::from_static(b"abc"),
            )
            .await
            .unwrap();
        (r.status, String::from_utf8(r.body.to_vec()).unwrap())
    }
}

#[test]
fn work_is_queued_to_io_threads_on_each_backend() {
    let mut backends = vec![IoBackend::Epoll];
    if rafthttp::io::probe_uring().is_ok() {
        backends.push(IoBackend::Uring);
    }
    for backend in backends {
        let server = IoThread::spawn("rafthttp-io-server", backend, Default::default()).unwrap();
        let client = IoThread::spawn("rafthttp-io-client", backend, Default::default()).unwrap();
        let (addr, kind) = server.call(StartServer).unwrap();
        assert_eq!((kind, server.backend()), (backend, backend));
        for _ in 0..3 {
            assert_eq!(
                client.call(Post(addr)).unwrap(),
                (200, "3 bytes on rafthttp-io-server\n".to_string())
            );
        }
        server.stop();
        client.stop();
    }
}

/// The I/O thread runs under the configured scheduling policy (the default is
/// `SCHED_BATCH`: it must not preempt the application thread that wakes it), and only
/// the I/O thread does.
#[test]
fn io_thread_runs_under_the_configured_policy() {
    struct Policy;
    impl IoTask for Policy {
        type Output = i32;
        async fn run<B: Backend>(self) -> i32 {
            // SAFETY: a plain query of the calling thread's policy; no memory is passed.
            unsafe { libc::sched_getscheduler(0) }
        }
    }
    let backend = rafthttp::io::choose_backend(rafthttp::io::IoMode::Auto).unwrap();
    let cases = [
        (rafthttp::io::ThreadScheduling::default(), libc::SCHED_BATCH),
        (rafthttp::io::ThreadScheduling::Normal, libc::SCHED_OTHER),
    ];
    for (sched, want) in cases {
        let io = IoThread::spawn("rafthttp-io-sched", backend, sched).unwrap();
        assert_eq!(io.call(Policy).unwrap(), want, "{sched:?}");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
}
