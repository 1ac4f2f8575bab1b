//! The epoll driver: plain tokio on a current-thread runtime. Reads and writes use
//! `readable()`/`try_read_buf` and `writable()`/`try_write`, which take `&self`, so the
//! connection can be shut down while an operation waits.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};

use super::conn::{consume_written, std_listener, write_slices, Backend, Conn, Listener};
use super::{IoBackend, SocketOptions};

/// The epoll (plain tokio) driver.
#[derive(Debug)]
pub struct Epoll;

/// A tokio TCP connection.
#[derive(Debug)]
pub struct EpollConn(TcpStream);

/// A tokio TCP listener.
#[derive(Debug)]
pub struct EpollListener(TcpListener);

impl Conn for EpollConn {
    async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            if let Err(e) = self.0.readable().await {
                return (Err(e), buf);
            }
            match self.0.try_read_buf(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return (r, buf),
            }
        }
    }

    fn try_read(&self, buf: &mut BytesMut) -> io::Result<usize> {
        self.0.try_read_buf(buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    async fn write_all(&self, buf: Bytes) -> (io::Result<()>, Bytes) {
        let mut rest = &buf[..];
        while !rest.is_empty() {
            if let Err(e) = self.0.writable().await {
                return (Err(e), buf);
            }
            match self.0.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        let mut first = 0;
        consume_written(&mut bufs, &mut first, 0);
        while first < bufs.len() {
            if let Err(e) = self.0.writable().await {
                return (Err(e), bufs);
            }
            let written = self.0.try_write_vectored(&write_slices(&bufs[first..]));
            match written {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), bufs),
                Ok(n) => consume_written(&mut bufs, &mut first, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Err(e), bufs),
            }
        }
        (Ok(()), bufs)
    }

    fn shutdown(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Both)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Listener for EpollListener {
    type Conn = EpollConn;

    async fn accept(&self) -> io::Result<(EpollConn, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        s.set_nodelay(true)?;
        Ok((EpollConn(s), addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn close(&self) -> io::Result<()> {
        super::conn::shutdown_listener(&self.0)
    }
}

impl Backend for Epoll {
    type Conn = EpollConn;
    type Listener = EpollListener;
    const KIND: IoBackend = IoBackend::Epoll;

    fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<EpollListener> {
        Ok(EpollListener(TcpListener::from_std(std_listener(
            addr, opts,
        )?)?))
    }

    async fn connect(addr: SocketAddr, opts: &SocketOptions) -> io::Result<EpollConn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        opts.apply(&s)?;
        Ok(EpollConn(s))
    }

    async fn turn() {
        // A yielded task makes the runtime poll its reactor without a timeout before it
        // runs the task again.
        tokio::task::yield_now().await;
    }
}
