//! etcd's peer handlers: `/raft` (pipeline), `/raft/stream/…` (streams), `/raft/snapshot`
//! and `/raft/probing`. The admission checks are in `checks.rs`; these do the work.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::checks::{check_post, check_stream, finish, post_base, stream_base};
use super::raft::ProcessError;
use super::stream_writer::StreamWriter;
use super::Shared;
use crate::codec::{SnapshotDecoder, SnapshotPart};
use crate::http::router::{
    BodyMode, PathPattern, Request, RequestBody, Response, ResponseBody, Router,
};
use crate::json::id_from_hex;
use crate::raftpb::{Message, MessageType};

/// The router for a member's peer port.
pub fn router(shared: Arc<Shared>) -> Router {
    let max = shared.config.limits.max_frame;
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    let mut router = Router::new();
    for (path, handler) in &shared.config.routes.0 {
        let handler = handler.clone();
        router = router.route(
            PathPattern::Exact(path.clone()),
            BodyMode::Buffered(0),
            move |req: Request| {
                let handler = handler.clone();
                async move { handler(&req) }
            },
        );
    }
    router
        .route(
            PathPattern::Exact("/raft".into()),
            BodyMode::Buffered(max),
            move |req| {
                let shared = s1.clone();
                async move {
                    pipeline(shared, req)
                        .await
                        .with_header(PIPELINING_HEADER, "1")
                }
            },
        )
        .route(
            PathPattern::Prefix("/raft/stream/".into()),
            BodyMode::Buffered(0),
            move |req| {
                let shared = s2.clone();
                async move { stream(&shared, req) }
            },
        )
        .route(
            PathPattern::Exact("/raft/snapshot".into()),
            BodyMode::Streamed,
            move |req| snapshot(s3.clone(), req),
        )
        .route(
            PathPattern::Exact("/raft/probing".into()),
            BodyMode::Buffered(0),
            |_req| async { probing() },
        )
}

/// Runs the application's `process` off the I/O thread (it may block): on the
/// transport's processor thread, in arrival order, or, for a MsgProp (which can block
/// while there is no leader), on the blocking pool. Right here when the application said
/// it never blocks (`Raft::inline`; MsgProp excepted).
async fn process(shared: &Shared, m: Message) -> Result<(), ProcessError> {
    let raft = shared.raft.clone();
    if m.msg_type != MessageType::MsgProp as i32 {
        if raft.inline() {
            return raft.process(m);
        }
        if let Some(p) = &shared.processor {
            return p.process(m).await;
        }
    }
    match tokio::task::spawn_blocking(move || raft.process(m)).await {
        Ok(r) => r,
        Err(e) => Err(ProcessError::Other(e.to_string())),
    }
}

/// Adds a remote for a sender we do not know, from its `X-Server-From`/`X-PeerURLs`.
fn add_remote_from(shared: &Arc<Shared>, req: &Request) {
    let from = req.head.header_str("x-server-from").and_then(id_from_hex);
    if let (Some(from), Some(urls)) = (from, req.head.header_str("x-peerurls")) {
        shared.add_remote_str(from, urls);
    }
}

/// Sent on every answer to `POST /raft`: this server answers pipelined requests
/// promptly, so the sender may pipeline (see `pipeline.rs`). etcd's server must not be
/// sent pipelined requests: its peer listener re-arms a 5 s read deadline on every read,
/// which races with net/http's abort of its background read and stalls the next
/// request for up to 5 s. etcd ignores the header.
pub const PIPELINING_HEADER: &str = "X-Rafthttp-Pipelining";

async fn pipeline(shared: Arc<Shared>, req: Request) -> Response {
    let local = &shared.local;
    if let Err(r) = check_post(local, &req.method, &req.head) {
        return *r;
    }
    add_remote_from(&shared, &req);
    let RequestBody::Full(body) = req.body else {
        return finish(
            post_base(local),
            Response::error(400, "error reading raft message"),
        );
    };
    // The hand-written fast path (prost's result for anything it does not take), with
    // payloads sliced from the body rather than copied.
    let mut m = Message::default();
    let m = match crate::raftpb::wire::merge_message_at(&mut m, &body, 0..body.len()) {
        Ok(()) => m,
        Err(e) => {
            tracing::warn!(local_member_id = %format_args!("{:x}", local.id), error = %e, "failed to unmarshal Raft message");
            return finish(
                post_base(local),
                Response::error(400, "error unmarshalling raft message"),
            );
        }
    };
    if let Some(peer) = shared.peer(m.from) {
        peer.counters
            .received_bytes
            .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    match process(&shared, m).await {
        Ok(()) => finish(post_base(local), Response::empty(204)),
        // etcd ≥ 2.3 lets this 403 turn into a 500; senders detect removal by it, so we
        // send it, and only for a removed sender (spec §3.3).
        Err(ProcessError::RemovedMember) => {
            let mut r = Response::error(403, "");
            r.body = ResponseBody::Full(Bytes::from_static(
                b"{\"message\":\"cannot process message from removed member\"}",
            ));
            r.headers.retain(|h| h.0 != "Content-Type");
            finish(
                post_base(local),
                r.with_header("Content-Type", "application/json"),
            )
        }
        Err(ProcessError::Other(e)) => {
            tracing::warn!(local_member_id = %format_args!("{:x}", local.id), error = %e, "failed to process Raft message");
            finish(
                post_base(local),
                Response::error(500, "error processing raft message"),
            )
        }
    }
}

fn stream(shared: &Arc<Shared>, req: Request) -> Response {
    let local = &shared.local;
    let raft = shared.raft.clone();
    let accepted = check_stream(
        local,
        &req.method,
        &req.path,
        &req.head,
        |id| raft.is_id_removed(id),
        |id, urls| shared.add_remote_str(id, urls),
        |id| shared.peer(id).is_some_and(|p| !p.remote_only),
    );
    let accepted = match accepted {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(peer) = shared.peer(accepted.from) else {
        return finish(
            stream_base(local),
            Response::error(404, "error sender not found"),
        );
    };
    let writer = StreamWriter::attach(peer, accepted.kind, accepted.term, shared.config.heartbeat);
    let mut r = stream_base(local);
    r.body = ResponseBody::Stream(Box::new(writer));
    r
}

async fn snapshot(shared: Arc<Shared>, req: Request) -> Response {
    let local = &shared.local;
    if let Err(r) = check_post(local, &req.method, &req.head) {
        return *r;
    }
    let from = req.head.header_str("x-server-from").and_then(id_from_hex);
    let peer = from.and_then(|id| shared.peer(id));
    let started = std::time::Instant::now();
    if let Some(p) = &peer {
        p.counters
            .snapshot_receive
            .inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let response = receive_snapshot(&shared, req).await;
    if let Some(p) = &peer {
        let m = &p.counters.snapshot_receive;
        m.inflight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if response.status == 204 {
            m.success.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m.duration.observe(started.elapsed().as_secs_f64());
        } else {
            m.failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    response
}

async fn receive_snapshot(shared: &Arc<Shared>, req: Request) -> Response {
    let local = &shared.local;
    add_remote_from(shared, &req);
    let RequestBody::Stream(mut rx) = req.body else {
        return finish(
            post_base(local),
            Response::error(400, "error reading raft message"),
        );
    };
    let mut dec = SnapshotDecoder::new(&shared.config.limits);
    let mut envelope: Option<Message> = None;
    // The application's hook reads the data on a worker thread, fed from here.
    let mut hook: Option<SnapshotHook> = None;
    // Set only once the whole body has arrived: a hook whose feed ends without it sees an
    // error, never a clean end of a partial snapshot.
    let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bad = |e: String| {
        finish(
            post_base(local),
            Response::error(400, &format!("failed to decode raft message ({e})")),
        )
    };
    while let Some(piece) = rx.recv().await {
        let mut piece = match piece {
            Ok(p) => p,
            Err(e) => return bad(e),
        };
        loop {
            match dec.decode(&mut piece) {
                Ok(Some(SnapshotPart::Envelope(m))) => {
                    if m.msg_type != MessageType::MsgSnap as i32 {
                        tracing::warn!(local_member_id = %format_args!("{:x}", local.id), message_type = crate::raftpb::message_type_name(m.msg_type).unwrap_or("unknown"), "unexpected Raft message type");
                        return finish(
                            post_base(local),
                            Response::error(400, "wrong raft message type"),
                        );
                    }
                    let (tx, data_rx) = tokio::sync::mpsc::channel(16);
                    let (raft, env, complete) =
                        (shared.raft.clone(), (*m).clone(), complete.clone());
                    let job = tokio::task::spawn_blocking(move || {
                        let mut reader = ChannelReader {
                            rx: data_rx,
                            current: Bytes::new(),
                            complete,
                        };
                        raft.receive_snapshot(&env, &mut reader)
                    });
                    hook = Some((tx, job));
                    envelope = Some(*m);
                }
                Ok(Some(SnapshotPart::Data(d))) => {
                    if let Some((tx, _)) = &hook {
                        // If the hook stopped reading after an error, that is reported
                        // when it returns.
                        let _ = tx.send(d).await;
                    }
                }
                Ok(None) => break,
                Err(e) => return bad(e.to_string()),
            }
        }
    }
    let (Some(m), Ok(size)) = (envelope, dec.finish()) else {
        return bad("unexpected EOF".to_string());
    };
    if let Some((tx, job)) = hook {
        complete.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(tx);
        let saved = job.await.unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = saved {
            tracing::warn!(local_member_id = %format_args!("{:x}", local.id), error = %e, "failed to save KV snapshot");
            return finish(
                post_base(local),
                Response::error(500, &format!("failed to save KV snapshot ({e})")),
            );
        }
    }
    if let Some(peer) = shared.peer(m.from) {
        peer.counters
            .received_bytes
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!(local_member_id = %format_args!("{:x}", local.id), remote_snapshot_sender_id = %format_args!("{:x}", m.from), snapshot_index = m.snapshot.metadata.index, bytes = size, "received and saved database snapshot");
    match process(shared, m).await {
        Ok(()) => finish(post_base(local), Response::empty(204)),
        Err(e) => finish(
            post_base(local),
            Response::error(500, &format!("failed to process raft message ({e})")),
        ),
    }
}

/// The feed of the application's snapshot hook and the worker running it.
type SnapshotHook = (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Result<(), String>>,
);

/// A blocking `Read` over the snapshot data arriving on the I/O thread. It ends cleanly
/// only if the handler marked the body complete; otherwise the reader gets an error.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    complete: Arc<std::sync::atomic::AtomicBool>,
}

impl ChannelReader {
    /// Waits until a piece is at hand; `false` at the clean end of the body.
    fn await_piece(&mut self) -> std::io::Result<bool> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None if self.complete.load(std::sync::atomic::Ordering::SeqCst) => {
                    return Ok(false)
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "snapshot body ended early",
                    ));
                }
            }
        }
        Ok(true)
    }
}

/// Pieces as they arrived (slices of the connection's read buffers): a hook that saves
/// them with `fill_buf`/`consume` writes straight from them, with no copy of its own.
impl std::io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.await_piece()?;
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.current.len());
        bytes::Buf::advance(&mut self.current, n);
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.await_piece()? {
            return Ok(0);
        }
        // Fill `buf` from every piece already here, so that a large read gets a large
        // answer (fewer, larger writes for whoever saves the snapshot).
        let mut n = 0;
        loop {
            let k = (buf.len() - n).min(self.current.len());
            buf[n..n + k].copy_from_slice(&self.current[..k]);
            bytes::Buf::advance(&mut self.current, k);
            n += k;
            if n == buf.len() {
                break;
            }
            match self.rx.try_recv() {
                Ok(b) => self.current = b,
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// `/raft/probing`: `{"OK":true,"Now":"<RFC 3339 with nanoseconds>"}`, as Go's prober.
/// Every peer's prober asks every 4 s, so the answer is built with one allocation.
fn probing() -> Response {
    let now = Rfc3339Nano::new(SystemTime::now());
    // `concat` allocates exactly the length, so the vector becomes `Bytes` as it is.
    let body = [
        &b"{\"OK\":true,\"Now\":\""[..],
        now.as_str().as_bytes(),
        b"\"}\n",
    ]
    .concat();
    Response {
        status: 200,
        headers: Default::default(),
        body: ResponseBody::Full(body.into()),
    }
    .with_header("Content-Type", "application/json")
}

/// `t` as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction dropped).
pub fn rfc3339_nano(t: SystemTime) -> String {
    Rfc3339Nano::new(t).as_str().to_string()
}

/// A time written as Go's `time.RFC3339Nano` in UTC, held without allocating.
pub struct Rfc3339Nano {
    buf: [u8; Rfc3339Nano::MAX],
    len: usize,
}

impl Rfc3339Nano {
    /// The longest form: a 12-digit year (the furthest a `SystemTime`
    /// reaches in `i64` seconds), `-MM-DDTHH:MM:SS`, nine fraction digits and `Z`.
    const MAX: usize = 40;

    /// Writes `t` (times before 1970 as 1970).
    pub fn new(t: SystemTime) -> Self {
        use std::fmt::Write;
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = Rfc3339Nano {
            buf: [0; Self::MAX],
            len: 0,
        };
        // Cannot fail: MAX holds the longest form.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        let mut nanos = d.subsec_nanos();
        if nanos > 0 {
            let mut width = 9;
            while nanos % 10 == 0 {
                nanos /= 10;
                width -= 1;
            }
            let _ = write!(out, ".{nanos:0width$}");
        }
        let _ = out.write_str("Z");
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for Rfc3339Nano {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_nano_matches_go() {
        let t = UNIX_EPOCH + Duration::new(1_795_549_130, 545_229_845);
        assert_eq!(rfc3339_nano(t), "2026-11-24T19:38:50.545229845Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(0, 10)),
            "1970-01-01T00:00:00.00000001Z"
        );
        // The furthest time there is still fits.
        let far = UNIX_EPOCH + Duration::new(i64::MAX as u64, 999_999_999);
        assert!(
            rfc3339_nano(far).ends_with(".999999999Z"),
            "{}",
            rfc3339_nano(far)
        );
    }
}
