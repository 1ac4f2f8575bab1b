//! The HTTP/1.1 server, generic over the I/O driver: accept loops on one or more
//! listeners, then per connection read a request, route it, answer it, and keep the
//! connection for the next request unless either side asked to close. A streaming
//! response holds the connection until its source ends or the client goes away.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};

use super::batch::Batch;
use super::body::{BodyDecoder, BodyEvent};
use super::chunked::{begin_chunk, end_chunk, LAST_CHUNK};
use super::head::{BodyFraming, StartLine};
use super::io::{HeadKind, HttpError, HttpIo};
use super::pipelined::Pipelined;
use super::router::{BodyMode, Request, RequestBody, Response, ResponseBody, Router, StreamBody};
use super::write::{write_response_head, Framing};
use crate::io::{Backend, BufferPool, Conn, Listener, SocketOptions, Timeouts};
use crate::limits::Limits;

/// Server settings.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Read, write and idle timeouts (etcd: 5 s each).
    pub timeouts: Timeouts,
    /// Caps for body decoding.
    pub limits: Limits,
    /// Largest request head accepted (431 beyond it).
    pub max_head: usize,
    /// Bytes asked of each read while a streamed request body (a snapshot) is pumped to
    /// its handler, when more than the pool's buffer size. Larger reads mean fewer reads,
    /// hand-offs to the handler and writes by the application per snapshot. A piece is
    /// at most twice this (a fresh buffer holds two reads), and the body channel holds
    /// two pieces ahead of the handler.
    pub streamed_body_read: usize,
    /// Options for its listening sockets (which what they accept inherits).
    pub socket: SocketOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            max_head: super::head::DEFAULT_MAX_HEAD,
            streamed_body_read: DEFAULT_STREAMED_BODY_READ,
            socket: SocketOptions::default(),
        }
    }
}

/// [`ServerConfig::streamed_body_read`]'s default. With the pool's 64 KiB reads, a 64 MiB
/// snapshot from our sender took about 770 file writes and 570 wake-ups of the I/O thread
/// (under `strace`), with 512 KiB 340 and 210; the bench's snapshot row went from 1,767 to
/// 2,071 MB/s (medians of five interleaved runs; 256 KiB and 1 MiB were slower; see
/// docs/performance.md, tenth session).
pub const DEFAULT_STREAMED_BODY_READ: usize = 512 * 1024;

/// An HTTP server for one I/O thread.
pub struct Server {
    router: Router,
    config: ServerConfig,
    pool: Rc<BufferPool>,
    stop: Notify,
    stopped: Cell<bool>,
    next_id: Cell<u64>,
    /// Live connections, so that [`Server::stop`] can close them.
    active: RefCell<HashMap<u64, Rc<dyn Fn()>>>,
    /// Bytes read and written on accepted connections.
    wire: Arc<AtomicU64>,
}

impl Server {
    /// A server answering with `router`.
    pub fn new(router: Router, config: ServerConfig, pool: Rc<BufferPool>) -> Rc<Self> {
        Rc::new(Server {
            router,
            config,
            pool,
            stop: Notify::new(),
            stopped: Cell::new(false),
            next_id: Cell::new(0),
            active: RefCell::default(),
            wire: Arc::default(),
        })
    }

    /// Bytes read and written on every connection this server accepted (the TCP payload
    /// of each connection whose server side this is).
    pub fn wire_counter(&self) -> Arc<AtomicU64> {
        self.wire.clone()
    }

    /// Accepts connections on `listener` until [`stop`](Self::stop), serving each in its
    /// own task. Spawn one per listener.
    pub async fn serve<B: Backend>(self: Rc<Self>, listener: B::Listener) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => Some(r),
                () = self.stop.notified() => None,
            };
            let Some(accepted) = accepted.filter(|_| !self.stopped.get()) else {
                // A dropped accept may still be pending (io_uring): closing ends it.
                let _ = listener.close();
                return;
            };
            match accepted {
                Ok((conn, remote)) => {
                    tokio::task::spawn_local(self.clone().serve_conn(conn, remote));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Stops accepting and closes every connection (streams included).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.stop.notify_waiters();
        let closers: Vec<_> = self.active.borrow().values().cloned().collect();
        for close in closers {
            close();
        }
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.active.borrow().len()
    }

    /// Serves one connection until it closes.
    pub async fn serve_conn<C: Conn>(self: Rc<Self>, conn: C, remote: SocketAddr) {
        let cfg = self.config;
        let mut io = HttpIo::new(conn, &self.pool, cfg.timeouts, cfg.limits, cfg.max_head);
        io.count_wire(self.wire.clone());
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let closer = io.conn().clone();
        self.active
            .borrow_mut()
            .insert(id, Rc::new(move || drop(closer.shutdown())));
        if let Err(e) = self.requests(&mut io, remote).await {
            tracing::debug!(%remote, error = %e, "connection ended");
        }
        self.active.borrow_mut().remove(&id);
        io.release(&self.pool);
    }

    /// Answers requests on `io` until the connection should close. `POST`s with a whole
    /// body are answered pipelined (see [`Pipelined`]): while another request is already
    /// buffered, the server starts its handler before it writes earlier answers.
    async fn requests<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        remote: SocketAddr,
    ) -> Result<(), HttpError> {
        let mut pipelined = Pipelined::default();
        let result = self.requests_pipelined(io, remote, &mut pipelined).await;
        if result.is_ok() && !pipelined.is_empty() {
            // The client stopped sending: it still gets what it is owed.
            self.write_answers(io, &mut pipelined).await?;
        }
        result
    }

    /// Queues every answer owed in `pipelined` behind what [`HttpIo::out`] holds, waiting
    /// for each handler in turn, and writes them all.
    async fn write_answers<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        pipelined: &mut Pipelined,
    ) -> Result<(), HttpError> {
        while let Some(r) = pipelined.next().await {
            if let Some(body) = queue_answer(io, r) {
                // Only a streaming body cannot be queued; write what comes before it.
                io.flush(None).await?;
                return self.respond_now(io, body, true).await;
            }
        }
        io.flush(None).await
    }

    /// The request loop of [`requests`](Self::requests); answers still owed when it
    /// returns are left in `pipelined`.
    async fn requests_pipelined<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        remote: SocketAddr,
        pipelined: &mut Pipelined,
    ) -> Result<(), HttpError> {
        loop {
            // Queue the answers that are ready, in order; with no further request
            // buffered (or enough owed), wait for all of them and write them at once.
            while let Some(r) = pipelined.ready().await {
                if let Some(stream) = queue_answer(io, r) {
                    io.flush(None).await?;
                    return self.respond_now(io, stream, true).await;
                }
            }
            if !pipelined.is_empty() && (!io.has_buffered_input() || pipelined.is_full()) {
                self.write_answers(io, pipelined).await?;
            }
            // A request read ahead of owed answers must be whole in what was read: a
            // client may wait for the answers before it sends the rest.
            let buffered = if pipelined.is_empty() {
                Ok(None)
            } else {
                io.try_read_head(HeadKind::Request)
            };
            let head = match buffered {
                Ok(None) => {
                    if !pipelined.is_empty() {
                        self.write_answers(io, pipelined).await?;
                    }
                    io.read_head(HeadKind::Request, self.config.timeouts.idle)
                        .await
                }
                found => found,
            };
            let mut head = match head {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(()),
                Err(HttpError::HeadTooLarge(n)) => {
                    self.refuse(io, pipelined, 431, "Request Header Fields Too Large")
                        .await?;
                    return Err(HttpError::HeadTooLarge(n));
                }
                Err(HttpError::Decode(e)) => {
                    self.refuse(io, pipelined, 400, "Bad Request").await?;
                    return Err(e.into());
                }
                Err(e) => return Err(e),
            };
            let framing = match head.body_framing() {
                Ok(f) => f,
                Err(e) => {
                    self.refuse(io, pipelined, 400, "Bad Request").await?;
                    return Err(e.into());
                }
            };
            // Moved out rather than cloned: the request carries them beside its head.
            let StartLine::Request { method, path } = &mut head.start else {
                return Ok(());
            };
            let (method, path) = (std::mem::take(method), std::mem::take(path));
            let mut close = head.wants_close();
            let has_body = !matches!(framing, BodyFraming::Empty | BodyFraming::Length(0));
            let Some((body_mode, handler)) = self
                .router
                .find(&path)
                .map(|r| (r.body, Rc::clone(&r.handler)))
            else {
                // Go's NotFound; the unread body makes the connection unusable.
                self.respond(
                    io,
                    pipelined,
                    Response::error(404, "404 page not found"),
                    close || has_body,
                )
                .await?;
                if close || has_body {
                    return Ok(());
                }
                continue;
            };
            let mut dec = BodyDecoder::new(framing, &self.config.limits);
            let response = match body_mode {
                BodyMode::Buffered(max) => {
                    if matches!(framing, BodyFraming::Length(n) if n > max) {
                        self.refuse(io, pipelined, 413, "Request Entity Too Large")
                            .await?;
                        return Ok(());
                    }
                    let whole = match framing {
                        BodyFraming::Empty => true,
                        BodyFraming::Length(n) => io.has_buffered(n),
                        _ => false,
                    };
                    if !whole && !pipelined.is_empty() {
                        self.write_answers(io, pipelined).await?;
                    }
                    let body = match io.read_body_to_end(&mut dec, max).await {
                        Ok(b) => b,
                        Err(HttpError::BodyTooLarge(_)) => {
                            self.refuse(io, pipelined, 413, "Request Entity Too Large")
                                .await?;
                            return Ok(());
                        }
                        Err(HttpError::Decode(e)) => {
                            self.refuse(io, pipelined, 400, "Bad Request").await?;
                            return Err(e.into());
                        }
                        Err(e) => return Err(e),
                    };
                    let post = method == "POST";
                    let req = Request {
                        head,
                        method,
                        path,
                        body: RequestBody::Full(body),
                        remote,
                    };
                    if post && !close {
                        pipelined.start(handler.call(req)).await;
                        continue;
                    }
                    handler.call(req).await
                }
                BodyMode::Streamed => {
                    // The body is read as the handler goes, however long it takes:
                    // what is owed goes out first.
                    if !pipelined.is_empty() {
                        self.write_answers(io, pipelined).await?;
                    }
                    // Two pieces ahead of the handler: with large reads, more only holds
                    // memory (8 ran no faster on the snapshot row).
                    let (tx, rx) = mpsc::channel(2);
                    let req = Request {
                        head,
                        method,
                        path,
                        body: RequestBody::Stream(rx),
                        remote,
                    };
                    let answer = handler.call(req);
                    let small = io.read_size();
                    io.set_read_size(small.max(self.config.streamed_body_read));
                    let pump = pump_body(io, &mut dec, tx);
                    let (response, complete) = tokio::join!(answer, pump);
                    // Back to small reads; the body's large buffers are let go rather than
                    // kept idle for whatever the connection carries next.
                    io.set_read_size(small);
                    io.release_retired();
                    close |= !complete;
                    response
                }
            };
            let is_stream = matches!(response.body, ResponseBody::Stream(_));
            self.respond(io, pipelined, response, close).await?;
            if close || is_stream {
                return Ok(());
            }
        }
    }

    /// Answers a request the server itself refuses with Go's `http.Error` text, after
    /// every answer still owed, and has the connection closed.
    async fn refuse<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        pipelined: &mut Pipelined,
        status: u16,
        text: &str,
    ) -> Result<(), HttpError> {
        self.respond(io, pipelined, Response::error(status, text), true)
            .await
    }

    /// Writes `response`, after every answer still owed to pipelined requests; a
    /// streaming body is written until it ends.
    async fn respond<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        pipelined: &mut Pipelined,
        response: Response,
        close: bool,
    ) -> Result<(), HttpError> {
        if !pipelined.is_empty() {
            self.write_answers(io, pipelined).await?;
        }
        self.respond_now(io, response, close).await
    }

    /// Writes `response` with nothing owed before it.
    async fn respond_now<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        response: Response,
        close: bool,
    ) -> Result<(), HttpError> {
        let Response {
            status,
            headers,
            body,
        } = response;
        let framing = framing(status, &body);
        match body {
            ResponseBody::Empty => {
                write_response_head(io.out(), status, &headers, framing, close);
                if !close && io.has_buffered_input() {
                    // A pipelined request is waiting: answer it first and write both
                    // responses at once (HttpIo flushes before it waits for input).
                    return Ok(());
                }
                io.flush(None).await
            }
            ResponseBody::Full(body) => {
                write_response_head(io.out(), status, &headers, framing, close);
                io.flush(Some(body)).await
            }
            ResponseBody::Stream(mut source) => {
                write_response_head(io.out(), status, &headers, framing, false);
                let result = match io.flush(None).await {
                    Ok(()) => self.stream(io, source.as_mut()).await,
                    Err(e) => Err(e),
                };
                source.closed(result.as_ref().err().map(|e| e.to_string()).as_deref());
                result
            }
        }
    }

    /// Writes a streaming body as chunks, one write per batch, until the source ends,
    /// a write fails, or the client closes the connection.
    async fn stream<C: Conn>(
        &self,
        io: &mut HttpIo<C>,
        source: &mut dyn StreamBody,
    ) -> Result<(), HttpError> {
        // A read that completes only when the client closes (or sends something, which a
        // stream dialer never does): it ends the stream at once instead of at the next
        // failed write.
        let watcher = io.conn().clone();
        let client_gone = async move {
            let (r, _) = watcher.read(BytesMut::with_capacity(64)).await;
            r
        };
        tokio::pin!(client_gone);
        // Without a duplicate (out of descriptors), every write stays on this thread.
        if source.wants_socket() {
            if let Ok(dup) = super::direct::DupSocket::new(io.conn().fd(), Some(self.wire.clone()))
            {
                source.lend_socket(std::sync::Arc::new(dup));
            }
        }
        let mut batch = Batch::with_capacity(self.pool.buffer_size());
        let mut pieces: Vec<Bytes> = Vec::new();
        let result = loop {
            let slot = begin_chunk(batch.buf());
            // Whether the source had nothing at first: then this batch follows an idle
            // spell and is sent at once (`write_now`).
            let mut waited = false;
            let polled = tokio::select! {
                r = poll_fn(|cx| {
                    let r = source.poll_batch(cx, &mut batch);
                    waited |= r.is_pending();
                    r
                }) => r,
                _ = &mut client_gone => break Err(HttpError::Closed("stream")),
            };
            match polled {
                Ok(true) => {
                    // The rest of a chunk another thread began: written before this one.
                    let unframed = batch.take_unframed();
                    let referenced = batch.referenced_len();
                    let Some(start) = end_chunk(slot, batch.buf(), referenced) else {
                        if let Some(rest) = unframed {
                            if let Err(e) = io.write(rest).await {
                                break Err(e);
                            }
                        }
                        continue;
                    };
                    let evict = batch.take_evict_mark();
                    batch.take_from(start, &mut pieces);
                    if let Some(rest) = unframed {
                        pieces.insert(0, rest);
                    }
                    let written = if pieces.len() == 1 {
                        let piece = pieces.pop().unwrap_or_default();
                        // Kept until written: the lines are evicted once the kernel has
                        // copied them, not while it does.
                        let copied = evict.then(|| piece.clone());
                        let written = if waited {
                            io.write_now(piece).await
                        } else {
                            io.write(piece).await
                        };
                        if let (Ok(()), Some(copied)) = (&written, copied) {
                            crate::cache_lines::evict(&copied);
                        }
                        written
                    } else {
                        io.write_vectored(pieces.drain(..)).await
                    };
                    pieces.clear();
                    if let Err(e) = written {
                        break Err(e);
                    }
                }
                Ok(false) => break io.write(Bytes::from_static(LAST_CHUNK)).await,
                Err(e) => break Err(e.into()),
            }
        };
        // The watcher's read is ended by closing the socket, never abandoned.
        io.close();
        result
    }
}

/// Puts the answer to a pipelined request into [`HttpIo::out`], to be flushed with the
/// others; hands back a response with a streaming body, which cannot wait there.
fn queue_answer<C: Conn>(io: &mut HttpIo<C>, response: Response) -> Option<Response> {
    if matches!(response.body, ResponseBody::Stream(_)) {
        return Some(response);
    }
    let framing = framing(response.status, &response.body);
    write_response_head(io.out(), response.status, &response.headers, framing, false);
    if let ResponseBody::Full(body) = &response.body {
        io.out().extend_from_slice(body);
    }
    None
}

/// How a response with `status` and `body` is framed: no body at all for 1xx, 204 and
/// 304 (RFC 9112 §6.3), else its length, or chunks for a stream.
fn framing(status: u16, body: &ResponseBody) -> Framing {
    match body {
        ResponseBody::Empty if status == 204 || status == 304 || status < 200 => Framing::None,
        ResponseBody::Empty => Framing::Length(0),
        ResponseBody::Full(b) => Framing::Length(b.len() as u64),
        ResponseBody::Stream(_) => Framing::Chunked,
    }
}

/// Feeds a request body into the handler's channel; returns whether it was read whole.
async fn pump_body<C: Conn>(
    io: &mut HttpIo<C>,
    dec: &mut BodyDecoder,
    tx: mpsc::Sender<Result<Bytes, String>>,
) -> bool {
    loop {
        match io.next_body_event(dec).await {
            Ok(BodyEvent::Data(d)) => {
                if tx.send(Ok(d)).await.is_err() {
                    return false;
                }
            }
            Ok(BodyEvent::End) => return true,
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return false;
            }
        }
    }
}

/// Binds every address in `addrs` and serves them all on the current thread's runtime.
/// Returns the bound addresses (useful with port 0).
pub fn listen_all<B: Backend>(
    server: &Rc<Server>,
    addrs: &[SocketAddr],
) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = B::bind(*addr, &server.config.socket)?;
        bound.push(listener.local_addr()?);
        tokio::task::spawn_local(server.clone().serve::<B>(listener));
    }
    Ok(bound)
}
