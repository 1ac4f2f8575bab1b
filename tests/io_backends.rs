//! Both drivers move bytes over loopback through the one owned-buffer trait.

use bytes::{Bytes, BytesMut};
use rafthttp::io::{block_on, Backend, Conn, IoBackend, IoTask, Listener};

struct Echo;

impl IoTask for Echo {
    type Output = (IoBackend, usize);

    async fn run<B: Backend>(self) -> (IoBackend, usize) {
        let listener = B::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
        let client = B::connect(addr).await.unwrap();
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
