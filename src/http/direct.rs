//! A stream connection's socket, lent to whatever fills its body so that a sending
//! thread may write a lone message on it itself, without waking the I/O thread.
//!
//! Why: a message sent on an idle stream otherwise crosses to the I/O thread (a wake-up
//! call, then a turn of its runtime before the writer task runs) only to be written with
//! one non-blocking `send`, which the sending thread can make as well. The body's source
//! decides when that is safe: only while the connection's writer has nothing in flight
//! and nothing queued, so that bytes never overtake each other (see `stream_queue`).
//! A write the socket does not take whole is left to the I/O thread
//! ([`Batch::set_unframed`](super::batch::Batch::set_unframed)).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A non-blocking write on a connection, from any thread.
pub trait SocketSend: Send + Sync + std::fmt::Debug {
    /// Writes what the socket takes of `buf` now, without waiting: the bytes written, or
    /// `WouldBlock` when it takes none.
    fn try_send(&self, buf: &[u8]) -> io::Result<usize>;
}

/// A duplicate of a connection's descriptor: it writes on the same socket, and keeps
/// that socket (not the connection's number, which may be reused) for as long as it
/// lives. Shutting the connection down ends its writes too.
#[derive(Debug)]
pub struct DupSocket {
    fd: OwnedFd,
    /// The server's wire-byte counter, as `HttpIo` counts its own writes.
    wire: Option<Arc<AtomicU64>>,
}

impl DupSocket {
    /// Duplicates `fd` (`F_DUPFD_CLOEXEC`); `wire` counts the bytes written.
    pub fn new(fd: BorrowedFd<'_>, wire: Option<Arc<AtomicU64>>) -> io::Result<DupSocket> {
        Ok(DupSocket {
            fd: fd.try_clone_to_owned()?,
            wire,
        })
    }
}

impl SocketSend for DupSocket {
    fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        let n = loop {
            match socket2::SockRef::from(&self.fd)
                .send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if let Some(w) = &self.wire {
            w.fetch_add(n as u64, Relaxed);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn a_duplicate_writes_on_the_same_socket_and_counts_what_it_wrote() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let wire = Arc::new(AtomicU64::new(0));
        let dup = DupSocket::new(client.as_fd(), Some(wire.clone())).unwrap();
        assert_eq!(dup.try_send(b"hello").unwrap(), 5);
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(wire.load(Relaxed), 5);
        // Shut down through the connection: the duplicate's writes end too.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let e = dup.try_send(b"late").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(wire.load(Relaxed), 5, "nothing counted for a failed write");
    }

    #[test]
    fn a_full_socket_takes_part_or_nothing_and_says_would_block() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let dup = DupSocket::new(client.as_fd(), None).unwrap();
        let block = vec![0u8; 1 << 20];
        let mut saw_would_block = false;
        for _ in 0..1024 {
            match dup.try_send(&block) {
                Ok(n) => assert!(n <= block.len()),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    saw_would_block = true;
                    break;
                }
            }
        }
        assert!(saw_would_block, "an unread socket fills up");
    }
}
