//! The io_uring driver: tokio-uring. Buffers are owned by the operation while it is in
//! flight; a dropped read is not cancelled, so callers end reads by shutting the socket.

use std::io;
use std::net::SocketAddr;

use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::{Bytes, BytesMut};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::conn::{consume_written, std_listener, write_slices, Backend, Conn, Listener};
use super::{IoBackend, SocketOptions};

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

    fn try_read(&self, buf: &mut BytesMut) -> io::Result<usize> {
        // A full buffer would read nothing, which is EOF's answer.
        if buf.len() == buf.capacity() {
            buf.reserve(8 * 1024);
        }
        let n = socket2::SockRef::from(&self.fd())
            .recv_with_flags(buf.spare_capacity_mut(), libc::MSG_DONTWAIT)?;
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity it was
        // given (and `n` is at most its length).
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(&self.fd())
            .send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    async fn write_all(&self, buf: Bytes) -> (io::Result<()>, Bytes) {
        self.stream.write_all(buf).await
    }

    async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        // tokio-uring's `writev` allocates its iovec array on every call. While the socket
        // has room, a non-blocking `sendmsg` from the stack does the same copy into the
        // socket that io_uring would do at submission, and allocates nothing; once it is
        // full, io_uring waits for room while it writes the next piece.
        let mut first = 0;
        consume_written(&mut bufs, &mut first, 0);
        while first < bufs.len() {
            let written = match self.try_send_vectored(&bufs[first..]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let piece = std::mem::take(&mut bufs[first]);
                    let (res, piece) = self.stream.write(piece).submit().await;
                    bufs[first] = piece;
                    res
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other,
            };
            match written {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), bufs),
                Ok(n) => consume_written(&mut bufs, &mut first, n),
                Err(e) => return (Err(e), bufs),
            }
        }
        (Ok(()), bufs)
    }

    fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is `self.stream`'s, and the borrow lives no longer than
        // `&self`: the stream closes it on drop, which cannot happen while `self` is
        // borrowed, so it stays open (and the same socket) for the borrow's length.
        unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) }
    }
}

impl UringConn {
    /// One non-blocking vectored send of the first pieces of `bufs` (as many as
    /// `write_slices` passes to one write).
    fn try_send_vectored(&self, bufs: &[Bytes]) -> io::Result<usize> {
        socket2::SockRef::from(&self.fd())
            .send_vectored_with_flags(&write_slices(bufs), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
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

    fn close(&self) -> io::Result<()> {
        // SAFETY: the descriptor is the listener's, borrowed for this call only; the
        // listener closes it on drop, which cannot happen while `self` is borrowed.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) };
        super::conn::shutdown_listener(&fd)
    }
}

impl Backend for Uring {
    type Conn = UringConn;
    type Listener = UringListener;
    const KIND: IoBackend = IoBackend::Uring;

    fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UringListener> {
        Ok(UringListener(TcpListener::from_std(std_listener(
            addr, opts,
        )?)))
    }

    async fn connect(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UringConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let conn = UringConn { stream, peer: addr };
        opts.apply(&conn.fd())?;
        Ok(conn)
    }

    async fn turn() {
        // A task's yield would not do: tokio-uring submits queued operations only when
        // the runtime is about to sleep, and a runtime with a yielded task polls its
        // reactor without that step. A no-op operation lets it go that far: its submission
        // submits everything queued, and its completion, posted at once, makes the ring
        // readable, so the reactor's wait returns without sleeping.
        let _ = tokio_uring::no_op().await;
    }
}
