//! A buffered HTTP/1.1 connection over any [`Conn`]: reads heads and bodies through the
//! sans-IO parsers, writes whole buffers, and bounds every wait with a deadline that
//! closes the connection when it passes (see `io::deadline`).

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use super::body::{BodyDecoder, BodyEvent};
use super::head::Head;
use crate::error::DecodeError;
use crate::io::{BufferPool, Conn, Deadline, Timeouts};
use crate::limits::Limits;
use crate::recycle::Recycler;

/// What went wrong on an HTTP connection.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent something malformed.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed before the {0} was complete")]
    Closed(&'static str),
    /// A deadline passed; the connection was closed.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A head was larger than allowed.
    #[error("message head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// A body was larger than allowed.
    #[error("body larger than {0} bytes")]
    BodyTooLarge(u64),
}

/// Which kind of head to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// A request (server side).
    Request,
    /// A response (client side).
    Response,
}

/// One HTTP connection with its read buffer and deadline.
pub struct HttpIo<C: Conn> {
    conn: Rc<C>,
    deadline: Rc<Deadline>,
    /// Freshly read bytes land here (after its length).
    rbuf: BytesMut,
    /// Bytes read but not yet consumed, frozen so decoders can slice them.
    pending: Bytes,
    /// Heads (and small bodies) are written here; its memory is reused once the last
    /// write from it has completed, so writing a head allocates nothing.
    wbuf: BytesMut,
    read_size: usize,
    timeouts: Timeouts,
    limits: Limits,
    max_head: usize,
    /// Counts bytes read and written, when set (a server's wire-byte figure).
    wire: Option<Arc<AtomicU64>>,
    /// Retired read buffers, reused once nothing points into them.
    retired: Recycler,
    /// The vector of pieces for vectored writes, reused.
    iov: Vec<Bytes>,
}

/// Retired read buffers a connection tracks (each `read_size`, 64 KiB by default, or
/// twice that): most are still pinned by frames queued for the application, memory held
/// anyway; this bounds how many we wait for before letting go of the oldest.
const MAX_RETIRED_READ_BUFFERS: usize = 1024;

/// Free read buffers a connection keeps once the application has caught up.
const IDLE_READ_BUFFERS: usize = 64;

impl<C: Conn> HttpIo<C> {
    /// Wraps `conn`, taking a read buffer from `pool` and starting its deadline watchdog
    /// on the current thread's runtime.
    pub fn new(
        conn: C,
        pool: &BufferPool,
        timeouts: Timeouts,
        limits: Limits,
        max_head: usize,
    ) -> Self {
        let conn = Rc::new(conn);
        let deadline = Deadline::new();
        tokio::task::spawn_local(deadline.clone().watch(conn.clone()));
        HttpIo {
            conn,
            deadline,
            rbuf: pool.get(),
            pending: Bytes::new(),
            wbuf: BytesMut::with_capacity(4096),
            read_size: pool.buffer_size(),
            timeouts,
            limits,
            max_head,
            wire: None,
            retired: Recycler::new(MAX_RETIRED_READ_BUFFERS, IDLE_READ_BUFFERS),
            iov: Vec::new(),
        }
    }

    /// Bytes asked of each read.
    pub fn read_size(&self) -> usize {
        self.read_size
    }

    /// Asks `size` bytes of each read from now on (a streamed body reads more at a time
    /// than heads and small bodies need).
    pub fn set_read_size(&mut self, size: usize) {
        self.read_size = size.max(1);
    }

    /// Stops tracking retired read buffers: those come free are freed now, the others
    /// with their last slice. For after a large body, whose buffers a connection should
    /// not keep idle.
    pub fn release_retired(&mut self) {
        self.retired = Recycler::new(MAX_RETIRED_READ_BUFFERS, IDLE_READ_BUFFERS);
    }

    /// Adds every byte read or written from now on to `counter`.
    pub fn count_wire(&mut self, counter: Arc<AtomicU64>) {
        self.wire = Some(counter);
    }

    fn counted(&self, n: usize) {
        if let Some(w) = &self.wire {
            w.fetch_add(n as u64, Relaxed);
        }
    }

    /// The connection.
    pub fn conn(&self) -> &Rc<C> {
        &self.conn
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Reads more bytes into `rbuf` before the deadline at `by`. Returns 0 at EOF.
    async fn fill(&mut self, by: Instant, what: &'static str) -> Result<usize, HttpError> {
        if !self.wbuf.is_empty() {
            // Responses held back while pipelined requests were waiting go out before we
            // wait for more input.
            let held = self.wbuf.split().freeze();
            self.write(held).await?;
        }
        self.make_room();
        self.deadline.arm_at(by);
        let buf = std::mem::take(&mut self.rbuf);
        let (res, buf) = self.conn.read(buf).await;
        self.rbuf = buf;
        self.deadline.disarm();
        if self.deadline.expired() {
            return Err(HttpError::Timeout(what));
        }
        let n = res?;
        self.counted(n);
        Ok(n)
    }

    /// Reads what has already arrived, without waiting: `Ok(None)` when nothing has (or
    /// held responses must go out first, which needs the waiting path).
    fn try_fill(&mut self) -> Result<Option<usize>, HttpError> {
        if !self.wbuf.is_empty() {
            return Ok(None);
        }
        self.make_room();
        match self.conn.try_read(&mut self.rbuf) {
            Ok(n) => {
                self.counted(n);
                Ok(Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews the read buffer when less than a quarter of a read's room is left.
    fn make_room(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 4 {
            self.grow_read_buffer();
        }
    }

    /// Makes room for a read. Frames handed out are slices of earlier reads, so the old
    /// buffer is often still pointed into by frames queued for the application; it is
    /// then retired and a free one reused (see `recycle`), any partial frame at its end
    /// carried over. In steady state reads allocate nothing.
    fn grow_read_buffer(&mut self) {
        let size = self.read_size;
        self.retired.renew(&mut self.rbuf, size, 2 * size);
    }

    /// Moves unconsumed input back in front of `rbuf` so a head can be parsed from
    /// contiguous bytes (only after a body left bytes over, e.g. a pipelined request).
    fn unfreeze_pending(&mut self) {
        if !self.pending.is_empty() {
            let mut joined =
                BytesMut::with_capacity(self.pending.len() + self.rbuf.len() + self.read_size);
            joined.extend_from_slice(&self.pending);
            joined.extend_from_slice(&self.rbuf);
            self.pending = Bytes::new();
            self.rbuf = joined;
        }
    }

    /// Reads the next head. Waits up to `idle` for its first byte (a keep-alive
    /// connection between requests), then up to the read timeout for the whole head, so
    /// a client trickling bytes (slowloris) cannot hold the connection. `Ok(None)` means
    /// the peer closed cleanly before sending anything.
    pub async fn read_head(
        &mut self,
        kind: HeadKind,
        idle: Duration,
    ) -> Result<Option<Head>, HttpError> {
        self.unfreeze_pending();
        let mut by = Instant::now() + idle;
        let mut started = !self.rbuf.is_empty();
        if started {
            by = Instant::now() + self.timeouts.read;
        }
        loop {
            if !self.rbuf.is_empty() {
                if let Some(head) = self.try_read_head(kind)? {
                    return Ok(Some(head));
                }
            }
            let n = self.fill(by, "reading the message head").await?;
            if n == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(HttpError::Closed("message head"))
                };
            }
            if !started {
                started = true;
                by = Instant::now() + self.timeouts.read;
            }
        }
    }

    /// The next head if the bytes already read hold all of it; `Ok(None)` (having read
    /// nothing) if they do not. Errors are [`read_head`](Self::read_head)'s.
    pub fn try_read_head(&mut self, kind: HeadKind) -> Result<Option<Head>, HttpError> {
        self.unfreeze_pending();
        let parsed = match kind {
            HeadKind::Request => Head::parse_request(&self.rbuf, self.max_head),
            HeadKind::Response => Head::parse_response(&self.rbuf, self.max_head),
        };
        match parsed {
            Ok(Some(head)) => {
                self.rbuf.advance(head.len);
                Ok(Some(head))
            }
            Ok(None) => Ok(None),
            Err(_) if self.rbuf.len() >= self.max_head => {
                Err(HttpError::HeadTooLarge(self.max_head))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether at least `n` bytes are read and not yet consumed.
    pub fn has_buffered(&self, n: u64) -> bool {
        (self.pending.len() + self.rbuf.len()) as u64 >= n
    }

    /// The next body event from the bytes already read, if they hold one.
    fn decode_buffered(&mut self, dec: &mut BodyDecoder) -> Result<Option<BodyEvent>, HttpError> {
        if self.pending.is_empty() && !self.rbuf.is_empty() {
            // Hand the decoder only this body's bytes when the framing says how many, so
            // that a pipelined request after it stays in `rbuf`, ready to parse in place
            // (rather than frozen and copied back).
            let take = dec
                .bytes_wanted()
                .map_or(self.rbuf.len(), |w| w.min(self.rbuf.len() as u64) as usize);
            self.pending = self.rbuf.split_to(take).freeze();
        }
        Ok(dec.decode(&mut self.pending)?)
    }

    /// The next body event, reading as needed; each read waits up to the read timeout.
    /// Data are slices of the read buffer.
    pub async fn next_body_event(&mut self, dec: &mut BodyDecoder) -> Result<BodyEvent, HttpError> {
        loop {
            if let Some(ev) = self.decode_buffered(dec)? {
                return Ok(ev);
            }
            let by = Instant::now() + self.timeouts.read;
            if self.fill(by, "reading the body").await? == 0 {
                dec.eof()?;
                return Ok(BodyEvent::End);
            }
        }
    }

    /// [`next_body_event`](Self::next_body_event) from what has already arrived:
    /// `Ok(None)` where that would wait.
    pub fn try_next_body_event(
        &mut self,
        dec: &mut BodyDecoder,
    ) -> Result<Option<BodyEvent>, HttpError> {
        let mut read = false;
        loop {
            if let Some(ev) = self.decode_buffered(dec)? {
                return Ok(Some(ev));
            }
            // One read at most: what it brings is decoded, and the caller asks again.
            if read {
                return Ok(None);
            }
            match self.try_fill()? {
                None => return Ok(None),
                Some(0) => {
                    dec.eof()?;
                    return Ok(Some(BodyEvent::End));
                }
                Some(_) => read = true,
            }
        }
    }

    /// Reads a whole body of at most `max` bytes (413-worthy beyond that).
    pub async fn read_body_to_end(
        &mut self,
        dec: &mut BodyDecoder,
        max: u64,
    ) -> Result<Bytes, HttpError> {
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let mut total = 0u64;
        loop {
            match self.next_body_event(dec).await? {
                BodyEvent::End => break,
                BodyEvent::Data(d) => {
                    total += d.len() as u64;
                    if total > max {
                        return Err(HttpError::BodyTooLarge(max));
                    }
                    match first.take() {
                        None if joined.is_empty() => first = Some(d),
                        prev => {
                            if let Some(p) = prev {
                                joined.extend_from_slice(&p);
                            }
                            joined.extend_from_slice(&d);
                        }
                    }
                }
            }
        }
        Ok(first.unwrap_or_else(|| joined.freeze()))
    }

    /// The write buffer, for the next message's head (and small body): appended after
    /// any response a server left unflushed (see [`HttpIo::has_buffered_input`]).
    pub fn out(&mut self) -> &mut BytesMut {
        self.wbuf.reserve(4096);
        &mut self.wbuf
    }

    /// Whether input is already buffered: a pipelining client's next request. A server
    /// may then leave its response in [`out`](Self::out) unflushed, to go out with the
    /// next one in a single write; nothing unflushed is ever left behind a read that
    /// waits for input.
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty() || !self.pending.is_empty()
    }

    /// Writes what [`out`](Self::out) holds, then `payload` if any: as one write, or
    /// vectored when `payload` is large enough that copying it would cost more.
    pub async fn flush(&mut self, payload: Option<Bytes>) -> Result<(), HttpError> {
        match payload {
            Some(p) if p.len() >= super::batch::COPY_LIMIT => {
                let head = self.wbuf.split().freeze();
                self.write_vectored([head, p]).await
            }
            Some(p) => {
                self.wbuf.extend_from_slice(&p);
                let all = self.wbuf.split().freeze();
                self.write(all).await
            }
            None => {
                let head = self.wbuf.split().freeze();
                self.write(head).await
            }
        }
    }

    /// Writes `buf` within the write timeout.
    pub async fn write(&self, buf: Bytes) -> Result<(), HttpError> {
        self.counted(buf.len());
        self.deadline.arm(self.timeouts.write);
        let (res, _) = self.conn.write_all(buf).await;
        self.deadline.disarm();
        if self.deadline.expired() {
            return Err(HttpError::Timeout("writing"));
        }
        Ok(res?)
    }

    /// Writes `buf` within the write timeout, sending what the socket takes at once
    /// with a non-blocking send and handing only the rest to the driver. For a write
    /// after an idle spell (a lone message): io_uring would send it only when the
    /// runtime next parks, after every other ready task, and its completion costs the
    /// thread another turn. Back-to-back writes should use [`write`](Self::write), whose
    /// deferral lets the next batch grow while this one is in flight.
    pub async fn write_now(&self, mut buf: Bytes) -> Result<(), HttpError> {
        loop {
            match self.conn.try_write(&buf) {
                Ok(n) if n == buf.len() => {
                    self.counted(n);
                    return Ok(());
                }
                Ok(n) => {
                    self.counted(n);
                    buf.advance(n);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.write(buf).await
    }

    /// Writes `parts` in order, vectored, within the write timeout. The vector that
    /// carries them to the driver is the connection's own and comes back for the next
    /// write, so writing allocates nothing.
    pub async fn write_vectored(
        &mut self,
        parts: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), HttpError> {
        let mut bufs = std::mem::take(&mut self.iov);
        bufs.clear();
        bufs.extend(parts);
        self.counted(bufs.iter().map(Bytes::len).sum());
        self.deadline.arm(self.timeouts.write);
        let (res, mut back) = self.conn.write_all_vectored(bufs).await;
        back.clear();
        self.iov = back;
        self.deadline.disarm();
        if self.deadline.expired() {
            return Err(HttpError::Timeout("writing"));
        }
        Ok(res?)
    }

    /// The decode limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.conn.shutdown();
        self.deadline.finish();
    }

    /// Gives the read buffer back to `pool` and closes the connection.
    pub fn release(mut self, pool: &BufferPool) {
        self.close();
        pool.put(std::mem::take(&mut self.rbuf));
    }
}

impl<C: Conn> Drop for HttpIo<C> {
    fn drop(&mut self) {
        self.deadline.finish();
    }
}
