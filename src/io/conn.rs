//! The one small owned-buffer I/O trait that both drivers implement. Buffers move into
//! an operation and come back with its result, as io_uring requires (the kernel owns
//! the memory while the operation is in flight). Every method takes `&self`, so a
//! deadline watchdog can [`Conn::shutdown`] a connection while a read is pending: with
//! tokio-uring a dropped read is not cancelled, so a read is never abandoned; it is
//! ended by closing the socket under it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use std::io::IoSlice;
use std::os::fd::BorrowedFd;

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use super::SocketOptions;

/// A connected TCP stream.
pub trait Conn: 'static {
    /// Reads into `buf` after its current length, up to its capacity (reserving some
    /// room first if it has none). `Ok(0)` is EOF.
    fn read(&self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)>;

    /// Reads what has already arrived into `buf` after its current length, up to its
    /// capacity (reserving some room first if it has none), without waiting:
    /// `Err(WouldBlock)` when nothing has. `Ok(0)` is EOF.
    fn try_read(&self, buf: &mut BytesMut) -> io::Result<usize>;

    /// Writes what the socket takes of `buf` now, without waiting: `Err(WouldBlock)`
    /// when it takes nothing (on epoll, also until the reactor has seen the socket
    /// writable again after a full one). For a write that should leave at once rather
    /// than when the driver next submits (io_uring queues operations until the runtime
    /// parks).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

    /// Writes all of `buf`.
    fn write_all(&self, buf: Bytes) -> impl Future<Output = (io::Result<()>, Bytes)>;

    /// Writes all of `bufs`, in order, with vectored writes: large payloads go out from
    /// their own buffers, with no copy into a staging buffer.
    fn write_all_vectored(
        &self,
        bufs: Vec<Bytes>,
    ) -> impl Future<Output = (io::Result<()>, Vec<Bytes>)>;

    /// Shuts both directions down: a pending read returns EOF or an error, and the peer
    /// sees the connection close.
    fn shutdown(&self) -> io::Result<()>;

    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// The socket's descriptor, for socket options and non-blocking calls beside the
    /// driver's own (`TCP_CONGESTION`, `TCP_INFO`, a `recv` with `MSG_DONTWAIT`).
    fn fd(&self) -> BorrowedFd<'_>;
}

/// A bound TCP listener.
pub trait Listener: 'static {
    /// The connections it yields.
    type Conn: Conn;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>>;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Stops listening: shuts the socket down, so that a pending accept ends (io_uring
    /// does not cancel a dropped one, whose socket would otherwise stay open, and the
    /// port taken, as long as its thread runs) and the port is free at once.
    fn close(&self) -> io::Result<()>;
}

/// An I/O driver: how to listen and connect. All protocol code is generic over this,
/// so it is compiled once per driver and shared.
pub trait Backend: 'static {
    /// Its connections.
    type Conn: Conn;
    /// Its listeners.
    type Listener: Listener<Conn = Self::Conn>;

    /// Which driver this is.
    const KIND: super::IoBackend;

    /// Binds a listener (with `SO_REUSEADDR`, as Go does) with `opts` set, which the
    /// connections it accepts inherit.
    fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<Self::Listener>;

    /// Connects to `addr`, with `TCP_NODELAY` and `opts` set.
    fn connect(
        addr: SocketAddr,
        opts: &SocketOptions,
    ) -> impl Future<Output = io::Result<Self::Conn>>;

    /// One pass through the driver that never sleeps: the thread's other ready tasks run,
    /// operations queued for the kernel are submitted and what has completed or become
    /// ready is collected, then the caller goes on (see [`super::linger`]).
    fn turn() -> impl Future<Output = ()>;
}

/// Builds a listening socket the way both drivers want it, with `opts` set before it
/// listens, so that what it accepts inherits them.
pub(crate) fn std_listener(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    opts.apply(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The most pieces one vectored write passes to the kernel: enough for a full batch of
/// large payloads with their heads, and few enough that the slice array lives on the
/// stack (a longer list goes out over several writes).
pub(crate) const MAX_WRITE_PIECES: usize = 64;

/// The first [`MAX_WRITE_PIECES`] of `bufs` as slices for a vectored write, on the stack.
pub(crate) fn write_slices(bufs: &[Bytes]) -> SmallVec<[IoSlice<'_>; MAX_WRITE_PIECES]> {
    bufs.iter()
        .take(MAX_WRITE_PIECES)
        .map(|b| IoSlice::new(b))
        .collect()
}

/// Consumes `n` written bytes from `bufs[*first..]`: whole pieces move `first` on, a part
/// of one is advanced past, and empty pieces after them are skipped.
pub(crate) fn consume_written(bufs: &mut [Bytes], first: &mut usize, mut n: usize) {
    while n > 0 && *first < bufs.len() {
        let len = bufs[*first].len();
        if n >= len {
            n -= len;
            *first += 1;
        } else {
            bufs[*first].advance(n);
            n = 0;
        }
    }
    while *first < bufs.len() && bufs[*first].is_empty() {
        *first += 1;
    }
}

/// Shuts a listening socket down: a pending accept fails (`EINVAL`) and the port is
/// given back, though the descriptor stays open until its last holder closes it.
pub(super) fn shutdown_listener(listener: &impl std::os::fd::AsFd) -> io::Result<()> {
    socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_are_consumed_across_pieces() {
        let mut bufs = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
            Bytes::from_static(b"f"),
        ];
        let mut first = 0;
        consume_written(&mut bufs, &mut first, 3);
        assert_eq!((first, &bufs[first][..]), (2, &b"de"[..]));
        consume_written(&mut bufs, &mut first, 2);
        assert_eq!((first, &bufs[first][..]), (3, &b"f"[..]));
        consume_written(&mut bufs, &mut first, 1);
        assert_eq!(first, 4);
    }

    #[test]
    fn a_long_list_of_pieces_is_cut_to_the_stack_array() {
        let bufs = vec![Bytes::from_static(b"x"); MAX_WRITE_PIECES + 5];
        let slices = write_slices(&bufs);
        assert_eq!(slices.len(), MAX_WRITE_PIECES);
        assert!(!slices.spilled(), "the slices stayed on the stack");
    }
}
