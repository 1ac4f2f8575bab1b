//! The io_uring driver: tokio-uring. Buffers are owned by the operation while it is in
//! flight; a dropped read is not cancelled, so callers end reads by shutting the socket.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::conn::{std_listener, Backend, Conn, Listener};
use super::IoBackend;

/// The io_uring (tokio-uring) driver.
#[derive(Debug)]
pub struct Uring;

/// A tokio-uring TCP connection.
pub struct UringConn {
    stream: TcpStream,
    peer: SocketAddr,
}

/// A tokio-uring TCP listener.
pub struct UringListener(TcpListener);

impl Conn for UringConn {
    async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        // tokio-uring reads into a buffer from its start; read into a slice over the
        // spare capacity instead, so that the read appends as `Conn::read` promises.
        if buf.len() == buf.capacity() {
            buf.reserve(8 * 1024);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice(len..cap)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&self, buf: Bytes) -> (io::Result<()>, Bytes) {
        self.stream.write_all(buf).await
    }

    async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        // tokio-uring's writev may write part; resubmit what is left.
        loop {
            let total: usize = bufs.iter().map(Bytes::len).sum();
            if total == 0 {
                return (Ok(()), bufs);
            }
            let (res, back) = self.stream.writev(bufs).await;
            bufs = back;
            let mut n = match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), bufs),
                Ok(n) => n,
                Err(e) => return (Err(e), bufs),
            };
            if n == total {
                return (Ok(()), bufs);
            }
            let mut rest = Vec::with_capacity(bufs.len());
            for mut b in bufs.drain(..) {
                if n >= b.len() {
                    n -= b.len();
                } else {
                    b.advance(n);
                    n = 0;
                    rest.push(b);
                }
            }
            bufs = rest;
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl Listener for UringListener {
    type Conn = UringConn;

    async fn accept(&self) -> io::Result<(UringConn, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((UringConn { stream, peer }, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Backend for Uring {
    type Conn = UringConn;
    type Listener = UringListener;
    const KIND: IoBackend = IoBackend::Uring;

    fn bind(addr: SocketAddr) -> io::Result<UringListener> {
        Ok(UringListener(TcpListener::from_std(std_listener(addr)?)))
    }

    async fn connect(addr: SocketAddr) -> io::Result<UringConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(UringConn { stream, peer: addr })
    }
}
