//! The HTTP/1.1 client, generic over the I/O driver: dials `http://host:port` URLs,
//! keeps POST connections alive in a pool for reuse, and opens long-lived GET streams
//! whose body is read incrementally.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;

use super::body::{BodyDecoder, BodyEvent};
use super::head::{BodyFraming, Head, StartLine, DEFAULT_MAX_HEAD};
use super::io::{HeadKind, HttpError, HttpIo};
use super::write::{write_request_head, Framing, HeaderValue};
use crate::io::{Backend, BufferPool, SocketOptions, Timeouts};
use crate::limits::Limits;

/// A peer URL: `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerUrl {
    /// The URL as given.
    pub url: String,
    /// `host:port`, as the `Host` header carries it.
    pub authority: String,
    /// The host (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Only `http://` is supported.
    #[error("unsupported URL scheme in {0:?} (only http:// is supported)")]
    Scheme(String),
    /// No usable `host:port`.
    #[error("invalid host or port in {0:?}")]
    HostPort(String),
}

impl std::str::FromStr for PeerUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let bad = || UrlError::HostPort(url.to_string());
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once("]:").ok_or_else(bad)?;
            (h, p)
        } else {
            authority.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(PeerUrl {
            url: url.to_string(),
            authority: authority.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl PeerUrl {
    /// Resolves the host (an IP literal at once; a name through the resolver).
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("cannot resolve {}", self.host),
                )
            })
    }
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("dial {url}: {error}")]
    Dial {
        /// Where to.
        url: String,
        /// Why.
        error: std::io::Error,
    },
    /// Connecting took longer than the dial timeout.
    #[error("dial {0}: timed out")]
    DialTimeout(String),
    /// The exchange failed after connecting.
    #[error("{0}")]
    Http(#[from] HttpError),
}

/// Client settings.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// Dial, read and write timeouts.
    pub timeouts: Timeouts,
    /// Caps for body decoding.
    pub limits: Limits,
    /// Largest response head accepted.
    pub max_head: usize,
    /// Largest response body read whole.
    pub max_body: u64,
    /// Idle connections kept per host (etcd's pipeline: up to 1024).
    pub max_idle_per_host: usize,
    /// Options for the sockets it dials.
    pub socket: SocketOptions,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            max_head: DEFAULT_MAX_HEAD,
            max_body: 1024 * 1024,
            max_idle_per_host: 1024,
            socket: SocketOptions::default(),
        }
    }
}

/// A whole response.
#[derive(Debug)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// The head.
    pub head: Head,
    /// The body.
    pub body: Bytes,
}

/// An HTTP client for one I/O thread.
pub struct Client<B: Backend> {
    config: ClientConfig,
    pool: Rc<BufferPool>,
    idle: RefCell<HashMap<String, Vec<HttpIo<B::Conn>>>>,
}

fn status_of(head: &Head) -> u16 {
    match head.start {
        StartLine::Response { status, .. } => status,
        StartLine::Request { .. } => 0,
    }
}

impl<B: Backend> Client<B> {
    /// Reads a response head and its whole body (up to `max_body`) from `io`.
    async fn read_response(&self, io: &mut HttpIo<B::Conn>) -> Result<(Head, Bytes), ClientError> {
        let timeouts = io.timeouts();
        let head = io
            .read_head(HeadKind::Response, timeouts.read)
            .await?
            .ok_or(HttpError::Closed("response head"))?;
        let mut dec = BodyDecoder::new(
            head.body_framing().map_err(HttpError::from)?,
            &self.config.limits,
        );
        let body = io.read_body_to_end(&mut dec, self.config.max_body).await?;
        Ok((head, body))
    }

    /// A client with `config`, taking read buffers from `pool`.
    pub fn new(config: ClientConfig, pool: Rc<BufferPool>) -> Self {
        Client {
            config,
            pool,
            idle: RefCell::default(),
        }
    }

    /// Dials `url` within the dial timeout.
    pub async fn dial(&self, url: &PeerUrl) -> Result<HttpIo<B::Conn>, ClientError> {
        let t = self.config.timeouts;
        let connect = async {
            let addr = url.resolve().await?;
            B::connect(addr, &self.config.socket).await
        };
        match tokio::time::timeout(t.dial, connect).await {
            Err(_) => Err(ClientError::DialTimeout(url.url.clone())),
            Ok(Err(error)) => Err(ClientError::Dial {
                url: url.url.clone(),
                error,
            }),
            Ok(Ok(conn)) => Ok(HttpIo::new(
                conn,
                &self.pool,
                t,
                self.config.limits,
                self.config.max_head,
            )),
        }
    }

    /// Sends a request with a whole body and reads the whole response, reusing an idle
    /// connection to the host when there is one (and retrying once on a fresh connection
    /// if the reused one turns out to be closed).
    pub async fn request(
        &self,
        url: &PeerUrl,
        method: &str,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError> {
        let reused = self.take_idle(url);
        if let Some(io) = reused {
            match self
                .exchange(io, url, method, path, headers, body.clone())
                .await
            {
                Ok(r) => return Ok(r),
                // A stale keep-alive connection fails before any response byte: retry.
                Err(ClientError::Http(HttpError::Io(_) | HttpError::Closed(_))) => {}
                Err(e) => return Err(e),
            }
        }
        let io = self.dial(url).await?;
        self.exchange(io, url, method, path, headers, body).await
    }

    async fn exchange(
        &self,
        mut io: HttpIo<B::Conn>,
        url: &PeerUrl,
        method: &str,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError> {
        let framing = if method == "GET" && body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        };
        write_request_head(io.out(), method, path, &url.authority, headers, framing);
        io.flush((!body.is_empty()).then_some(body)).await?;
        let (head, body) = self.read_response(&mut io).await?;
        let keep =
            !head.wants_close() && !matches!(head.body_framing(), Ok(BodyFraming::UntilClose));
        let status = status_of(&head);
        if keep {
            self.keep_idle(url, io);
        } else {
            io.release(&self.pool);
        }
        Ok(ClientResponse { status, head, body })
    }

    /// Sends `n` requests already framed back to back in `wire` (heads and bodies) on
    /// one connection to `url`'s host, pipelined, and reads their `n` responses in
    /// order. Returns the responses read and, when there are fewer than `n`, the error
    /// that ended the exchange. A reused idle connection that fails before any response
    /// is retried once on a fresh one, as [`Client::request`] does.
    pub async fn pipelined(
        &self,
        url: &PeerUrl,
        wire: Bytes,
        n: usize,
    ) -> (Vec<ClientResponse>, Option<ClientError>) {
        let reused = self.take_idle(url);
        if let Some(io) = reused {
            match self.exchange_pipelined(io, url, wire.clone(), n).await {
                (got, Some(ClientError::Http(HttpError::Io(_) | HttpError::Closed(_))))
                    if got.is_empty() => {}
                done => return done,
            }
        }
        match self.dial(url).await {
            Ok(io) => self.exchange_pipelined(io, url, wire, n).await,
            Err(e) => (Vec::new(), Some(e)),
        }
    }

    async fn exchange_pipelined(
        &self,
        mut io: HttpIo<B::Conn>,
        url: &PeerUrl,
        wire: Bytes,
        n: usize,
    ) -> (Vec<ClientResponse>, Option<ClientError>) {
        let mut got = Vec::with_capacity(n);
        if let Err(e) = io.write(wire).await {
            io.release(&self.pool);
            return (got, Some(e.into()));
        }
        while got.len() < n {
            let (head, body) = match self.read_response(&mut io).await {
                Ok(r) => r,
                Err(e) => {
                    io.release(&self.pool);
                    return (got, Some(e));
                }
            };
            let keep =
                !head.wants_close() && !matches!(head.body_framing(), Ok(BodyFraming::UntilClose));
            got.push(ClientResponse {
                status: status_of(&head),
                head,
                body,
            });
            if !keep {
                io.release(&self.pool);
                let cut = (got.len() < n).then_some(ClientError::Http(HttpError::Closed(
                    "connection closed with pipelined requests unanswered",
                )));
                return (got, cut);
            }
        }
        self.keep_idle(url, io);
        (got, None)
    }

    /// An idle keep-alive connection to `url`'s host, if one is kept.
    fn take_idle(&self, url: &PeerUrl) -> Option<HttpIo<B::Conn>> {
        self.idle
            .borrow_mut()
            .get_mut(&url.authority)
            .and_then(Vec::pop)
    }

    /// Keeps `io` for reuse, up to the idle limit per host.
    fn keep_idle(&self, url: &PeerUrl, io: HttpIo<B::Conn>) {
        let mut idle = self.idle.borrow_mut();
        // Looked up before `entry`, which would take an owned key each time.
        let conns = match idle.get_mut(&url.authority) {
            Some(conns) => conns,
            None => idle.entry(url.authority.clone()).or_default(),
        };
        if conns.len() < self.config.max_idle_per_host {
            conns.push(io);
        } else {
            io.release(&self.pool);
        }
    }

    /// Sends a request whose body is produced as it goes (chunked), on a new connection:
    /// each piece from `body` is written as one chunk; `Err` from it aborts the request.
    /// Reads the whole response.
    pub async fn request_streamed(
        &self,
        url: &PeerUrl,
        method: &str,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        body: &mut tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    ) -> Result<ClientResponse, ClientError> {
        let mut io = self.dial(url).await?;
        write_request_head(
            io.out(),
            method,
            path,
            &url.authority,
            headers,
            Framing::Chunked,
        );
        io.flush(None).await?;
        while let Some(piece) = body.recv().await {
            let piece = piece.map_err(|e| HttpError::Io(std::io::Error::other(e)))?;
            if piece.is_empty() {
                continue;
            }
            io.write_vectored([
                super::chunked::chunk_header(piece.len()),
                piece,
                Bytes::from_static(b"\r\n"),
            ])
            .await?;
        }
        io.write(Bytes::from_static(super::chunked::LAST_CHUNK))
            .await?;
        let (head, body) = self.read_response(&mut io).await?;
        let status = status_of(&head);
        io.release(&self.pool);
        Ok(ClientResponse { status, head, body })
    }

    /// Opens a GET stream: sends the request on a new connection and returns once the
    /// response head has arrived; the body is then read with [`StreamResponse::next`].
    pub async fn get_stream(
        &self,
        url: &PeerUrl,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
    ) -> Result<StreamResponse<B>, ClientError> {
        let mut io = self.dial(url).await?;
        write_request_head(
            io.out(),
            "GET",
            path,
            &url.authority,
            headers,
            Framing::None,
        );
        io.flush(None).await?;
        let timeouts = io.timeouts();
        let head = io
            .read_head(HeadKind::Response, timeouts.read)
            .await?
            .ok_or(HttpError::Closed("response head"))?;
        let dec = BodyDecoder::new(
            head.body_framing().map_err(HttpError::from)?,
            &self.config.limits,
        );
        Ok(StreamResponse {
            status: status_of(&head),
            head,
            io,
            dec,
            pool: self.pool.clone(),
        })
    }

    /// Closes every idle connection.
    pub fn close_idle(&self) {
        for (_, conns) in self.idle.borrow_mut().drain() {
            for io in conns {
                io.release(&self.pool);
            }
        }
    }
}

/// A response whose body is read as it arrives.
pub struct StreamResponse<B: Backend> {
    /// Status code.
    pub status: u16,
    /// The head.
    pub head: Head,
    io: HttpIo<B::Conn>,
    dec: BodyDecoder,
    pool: Rc<BufferPool>,
}

impl<B: Backend> StreamResponse<B> {
    /// The next piece of the body (a slice of the read buffer), or `None` at its end.
    /// Each wait is bounded by the read timeout.
    pub async fn next(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self.io.next_body_event(&mut self.dec).await? {
            BodyEvent::Data(d) => Ok(Some(d)),
            BodyEvent::End => Ok(None),
        }
    }

    /// The next piece of the body if it has already arrived: `Ok(None)` where
    /// [`next`](Self::next) would wait, `Ok(Some(None))` at the body's end.
    pub fn try_next(&mut self) -> Result<Option<Option<Bytes>>, HttpError> {
        Ok(match self.io.try_next_body_event(&mut self.dec)? {
            None => None,
            Some(BodyEvent::Data(d)) => Some(Some(d)),
            Some(BodyEvent::End) => Some(None),
        })
    }

    /// Reads the whole (finite) body, up to `max` bytes.
    pub async fn read_to_end(mut self, max: u64) -> Result<Bytes, HttpError> {
        let body = self.io.read_body_to_end(&mut self.dec, max).await;
        self.close();
        body
    }

    /// Closes the connection.
    pub fn close(self) {
        self.io.release(&self.pool);
    }

    /// A handle that closes the connection from elsewhere (ends a pending `next`).
    pub fn closer(&self) -> Rc<B::Conn> {
        self.io.conn().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: PeerUrl = "http://127.0.0.1:2380".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("127.0.0.1", 2380, "127.0.0.1:2380")
        );
        let u: PeerUrl = "http://[::1]:2380/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2380));
        assert!(matches!(
            "https://a:1".parse::<PeerUrl>(),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            "http://a".parse::<PeerUrl>(),
            Err(UrlError::HostPort(_))
        ));
        assert!(matches!(
            "http://:5".parse::<PeerUrl>(),
            Err(UrlError::HostPort(_))
        ));
        assert!(matches!(
            "http://a:99999".parse::<PeerUrl>(),
            Err(UrlError::HostPort(_))
        ));
    }
}
