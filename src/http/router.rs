//! Routes requests to handlers by path, as etcd's peer mux does: exact paths (`/raft`,
//! `/raft/snapshot`, `/raft/probing`), subtrees (`/raft/stream/`), and whatever the
//! embedding application adds (etcd serves `/version` and `/members` on the same port).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::batch::Batch;
use super::head::Head;
use super::write::Headers;

/// A request as a handler sees it.
#[derive(Debug)]
pub struct Request {
    /// The parsed head (its start line's method and path are moved to the fields
    /// below, and read empty here).
    pub head: Head,
    /// The method.
    pub method: String,
    /// The path (request target).
    pub path: String,
    /// The body, per the route's [`BodyMode`].
    pub body: RequestBody,
    /// The client's address.
    pub remote: std::net::SocketAddr,
}

/// A request body.
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body, read before the handler ran (an empty one for no body).
    Full(Bytes),
    /// The body as it arrives; `Err` ends it when the connection fails.
    Stream(tokio::sync::mpsc::Receiver<Result<Bytes, String>>),
}

/// A source for a response body that stays open and is written as data are produced
/// (a rafthttp stream). Poll-based so that no future is boxed per batch.
pub trait StreamBody {
    /// Appends the next batch of body bytes to `batch` (framing into its buffer, large
    /// payloads by reference). `Ready(Ok(true))`: write what was appended, as one chunk
    /// and one (vectored) write, and poll again. `Ready(Ok(false))`: the body is over; the
    /// last chunk is written. `Ready(Err)`: drop the connection.
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<std::io::Result<bool>>;

    /// Called once when the connection ends, for whatever reason (the client went away,
    /// a write failed or timed out, or the body finished).
    fn closed(&mut self, _error: Option<&str>) {}

    /// Whether the source would use its connection's socket ([`lend_socket`](Self::lend_socket));
    /// `false` by default, and the server then makes no duplicate of it.
    fn wants_socket(&self) -> bool {
        false
    }

    /// The connection's socket, lent once the response head is written and before the
    /// first poll, if [`wants_socket`](Self::wants_socket): the source may let another
    /// thread write on it while nothing of the source's own is in flight, and hand back
    /// what the socket did not take as a batch's unframed bytes (see [`super::direct`]).
    fn lend_socket(&mut self, _socket: std::sync::Arc<dyn super::direct::SocketSend>) {}
}

/// A response body.
pub enum ResponseBody {
    /// No body (`Content-Length: 0`, or nothing at all for 204).
    Empty,
    /// A whole body with Content-Length.
    Full(Bytes),
    /// A chunked body that stays open.
    Stream(Box<dyn StreamBody>),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Full(b) => write!(f, "Full({} bytes)", b.len()),
            ResponseBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers to send (framing and `Date` are added by the server).
    pub headers: Headers,
    /// The body.
    pub body: ResponseBody,
}

impl Response {
    /// An empty response with `status`.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Headers::new(),
            body: ResponseBody::Empty,
        }
    }

    /// Go's `http.Error`: `text` plus a newline, as `text/plain; charset=utf-8`.
    pub fn error(status: u16, text: &str) -> Self {
        let mut body = BytesMut::with_capacity(text.len() + 1);
        body.extend_from_slice(text.as_bytes());
        body.extend_from_slice(b"\n");
        let mut headers = Headers::new();
        headers.push(("Content-Type", "text/plain; charset=utf-8".into()));
        headers.push(("X-Content-Type-Options", "nosniff".into()));
        Response {
            status,
            headers,
            body: ResponseBody::Full(body.freeze()),
        }
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: &'static str,
        value: impl Into<super::write::HeaderValue>,
    ) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A boxed, thread-local future.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Something that answers requests.
pub trait Handler {
    /// Answers `req`.
    fn call(&self, req: Request) -> LocalBoxFuture<'static, Response>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response> + 'static,
{
    fn call(&self, req: Request) -> LocalBoxFuture<'static, Response> {
        Box::pin(self(req))
    }
}

/// How a route wants its request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    /// Read it whole first, refusing more than this many bytes with 413.
    Buffered(u64),
    /// Hand it over as it arrives.
    Streamed,
}

/// Which paths a route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(String),
    /// This path and everything under it (it should end with `/`).
    Prefix(String),
}

/// One route.
#[derive(Clone)]
pub struct Route {
    /// The paths.
    pub pattern: PathPattern,
    /// How the body is delivered.
    pub body: BodyMode,
    /// The handler.
    pub handler: Rc<dyn Handler>,
}

/// Routes by path: an exact match wins, then the longest prefix; nothing: 404.
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// An empty router (every request gets 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route.
    pub fn route(
        mut self,
        pattern: PathPattern,
        body: BodyMode,
        handler: impl Handler + 'static,
    ) -> Self {
        self.routes.push(Route {
            pattern,
            body,
            handler: Rc::new(handler),
        });
        self
    }

    /// The route for `path`.
    pub fn find(&self, path: &str) -> Option<&Route> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes
            .iter()
            .find(|r| matches!(&r.pattern, PathPattern::Exact(p) if p == path))
            .or_else(|| {
                self.routes
                    .iter()
                    .filter(|r| matches!(&r.pattern, PathPattern::Prefix(p) if path.starts_with(p.as_str())))
                    .max_by_key(|r| match &r.pattern {
                        PathPattern::Prefix(p) | PathPattern::Exact(p) => p.len(),
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &'static str) -> impl Handler {
        move |_req: Request| async move { Response::error(200, name) }
    }

    #[test]
    fn exact_then_longest_prefix() {
        let r = Router::new()
            .route(
                PathPattern::Exact("/raft".into()),
                BodyMode::Buffered(10),
                named("pipeline"),
            )
            .route(
                PathPattern::Prefix("/raft/".into()),
                BodyMode::Streamed,
                named("raft"),
            )
            .route(
                PathPattern::Prefix("/raft/stream/".into()),
                BodyMode::Buffered(0),
                named("stream"),
            )
            .route(
                PathPattern::Exact("/raft/snapshot".into()),
                BodyMode::Streamed,
                named("snapshot"),
            );
        let body = |p: &str| r.find(p).map(|r| r.body);
        assert_eq!(body("/raft"), Some(BodyMode::Buffered(10)));
        assert_eq!(body("/raft/stream/msgapp/2"), Some(BodyMode::Buffered(0)));
        assert_eq!(body("/raft/snapshot"), Some(BodyMode::Streamed));
        assert_eq!(body("/raft/other"), Some(BodyMode::Streamed));
        assert_eq!(body("/version"), None);
        assert_eq!(body("/raft?x=1"), Some(BodyMode::Buffered(10)));
    }
}
