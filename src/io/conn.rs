//! The one small owned-buffer I/O trait that both drivers implement. Buffers move into
//! an operation and come back with its result, as io_uring requires (the kernel owns
//! the memory while the operation is in flight). Every method takes `&self`, so a
//! deadline watchdog can [`Conn::shutdown`] a connection while a read is pending: with
//! tokio-uring a dropped read is not cancelled, so a read is never abandoned; it is
//! ended by closing the socket under it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

/// A connected TCP stream.
pub trait Conn: 'static {
    /// Reads into `buf` after its current length, up to its capacity (reserving some
    /// room first if it has none). `Ok(0)` is EOF.
    fn read(&self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)>;

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
}

/// A bound TCP listener.
pub trait Listener: 'static {
    /// The connections it yields.
    type Conn: Conn;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>>;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
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

    /// Binds a listener (with `SO_REUSEADDR`, as Go does).
    fn bind(addr: SocketAddr) -> io::Result<Self::Listener>;

    /// Connects to `addr`, with `TCP_NODELAY` set.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Conn>>;
}

/// Builds a listening socket the way both drivers want it.
pub(crate) fn std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
