//! etcd's `pipeline`: messages that no stream can carry go by `POST /raft`, one message
//! per request, on up to 4 keep-alive connections at once (etcd's `connPerPipeline`).
//!
//! Towards a peer that announces it (our own server's `X-Rafthttp-Pipelining` header on
//! its answers), a connection takes every message queued when it becomes free (up to
//! [`PIPELINE_DEPTH`]) and sends their requests pipelined, in one write, then reads the
//! responses in order: a burst costs one write and one wake-up per batch instead of per
//! message. A failure fails every message of the batch not yet answered, each reported
//! unreachable as etcd reports a failed post. Towards etcd (no header) every request
//! waits for its answer, exactly as etcd's own pipeline does: etcd's peer listener
//! stalls pipelined requests (see [`PIPELINING_HEADER`]).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;

use super::handlers::PIPELINING_HEADER;
use super::peer::Peer;
use super::raft::{FatalError, SnapshotStatus};
use super::Shared;
use crate::codec::encode_pipeline_body;
use crate::http::client::{Client, ClientResponse, PeerUrl};
use crate::http::write::{write_request_head, Framing, HeaderValue};
use crate::io::{Backend, BufferPool, IoTask};
use crate::raftpb::{Message, MessageType};

/// Connections posting at once per peer (etcd `connPerPipeline`).
pub const CONNS_PER_PIPELINE: usize = 4;

/// Most requests one connection sends pipelined in one write: with
/// [`CONNS_PER_PIPELINE`] connections, the 64 messages of a full pipeline queue
/// (etcd's `pipelineBufSize`).
pub const PIPELINE_DEPTH: usize = 16;

/// A peer's pipeline sender; runs until the peer stops.
pub struct Pipeline {
    /// The transport.
    pub shared: Arc<Shared>,
    /// The peer posted to.
    pub peer: Arc<Peer>,
}

impl IoTask for Pipeline {
    type Output = ();

    async fn run<B: Backend>(self) {
        let client: Rc<Client<B>> = Rc::new(Client::new(
            self.shared.client_config(),
            Rc::new(BufferPool::new(16 * 1024, CONNS_PER_PIPELINE)),
        ));
        let headers = Rc::new(self.shared.request_headers(Some((
            "Content-Type",
            HeaderValue::Static("application/protobuf"),
        ))));
        let slots = Arc::new(tokio::sync::Semaphore::new(CONNS_PER_PIPELINE));
        // Learnt from the peer's answers; forgotten after any failure.
        let pipelining = Rc::new(Cell::new(false));
        let generation = self.peer.pipeline_generation();
        let mut batch = Vec::with_capacity(PIPELINE_DEPTH);
        loop {
            // Wait for a free connection first: meanwhile messages gather in the queue
            // and the next batch takes them all.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let popped = std::future::poll_fn(|cx| {
                let depth = if pipelining.get() { PIPELINE_DEPTH } else { 1 };
                match self
                    .peer
                    .pipeline
                    .pop_batch(generation, &mut batch, depth, cx.waker())
                {
                    Ok(0) => std::task::Poll::Pending,
                    other => std::task::Poll::Ready(other),
                }
            })
            .await;
            if popped.is_err() || self.peer.is_stopped() {
                return;
            }
            let msgs = std::mem::replace(&mut batch, Vec::with_capacity(PIPELINE_DEPTH));
            let (peer, shared, client, headers, pipelining) = (
                self.peer.clone(),
                self.shared.clone(),
                client.clone(),
                headers.clone(),
                pipelining.clone(),
            );
            tokio::task::spawn_local(async move {
                // A stopped peer's posts end at once (their messages are dropped, as
                // the queue's are).
                tokio::select! {
                    may_pipeline = post(&peer, &shared, &client, &headers, msgs) => {
                        pipelining.set(may_pipeline);
                    }
                    () = peer.stopped() => {}
                }
                drop(permit);
            });
        }
    }
}

/// Posts `msgs` pipelined on one connection and settles each by its response. Returns
/// whether every request was answered and the peer announced that it takes pipelined
/// requests.
async fn post<B: Backend>(
    peer: &Peer,
    shared: &Shared,
    client: &Client<B>,
    headers: &[(&'static str, HeaderValue)],
    msgs: Vec<Message>,
) -> bool {
    let Some(url) = peer.urls.pick() else {
        return false;
    };
    // Every request framed back to back, each body encoded right after its head.
    let mut wire = BytesMut::new();
    let mut lens = smallvec::SmallVec::<[u64; PIPELINE_DEPTH]>::new();
    for m in &msgs {
        let len = crate::raftpb::wire::message_len(m) as u64;
        write_request_head(
            &mut wire,
            "POST",
            "/raft",
            &url.authority,
            headers,
            Framing::Length(len),
        );
        encode_pipeline_body(m, &mut wire);
        lens.push(len);
    }
    let (responses, error) = client.pipelined(&url, wire.freeze(), msgs.len()).await;
    let may_pipeline = error.is_none()
        && responses
            .iter()
            .all(|r| r.head.header_str(PIPELINING_HEADER) == Some("1"));
    let error = error.map(|e| e.to_string());
    let mut responses = responses.into_iter();
    for (m, len) in msgs.into_iter().zip(lens) {
        let outcome = responses.next().ok_or_else(|| {
            error
                .clone()
                .unwrap_or_else(|| "no response to a pipelined request".to_string())
        });
        settle(peer, shared, &url, m, len, outcome);
    }
    may_pipeline
}

/// Accounts for one posted message by its response, or reports it failed.
fn settle(
    peer: &Peer,
    shared: &Shared,
    url: &PeerUrl,
    m: Message,
    len: u64,
    outcome: Result<ClientResponse, String>,
) {
    let error = match outcome {
        Ok(r) if r.status == 204 => {
            peer.status.activate();
            peer.counters.sent_bytes.fetch_add(len, Relaxed);
            peer.counters.pipeline_messages.fetch_add(1, Relaxed);
            return;
        }
        Ok(r) if r.status == 403 => {
            let _ = shared.fatal.try_send(FatalError::MemberRemoved);
            FatalError::MemberRemoved.to_string()
        }
        Ok(r) if r.status == 412 => {
            let text = String::from_utf8_lossy(&r.body);
            match text.trim_end_matches('\n') {
                t @ ("incompatible version" | "cluster ID mismatch") => t.to_string(),
                other => format!("unhandled error {other:?} when precondition failed"),
            }
        }
        Ok(r) => format!(
            "unexpected http status {} while posting to {:?}",
            r.status,
            format!("{url}/raft")
        ),
        Err(e) => e,
    };
    peer.post_failed(url, "pipeline", &error);
    if !peer.remote_only {
        peer.raft().report_unreachable(m.to);
        if m.msg_type == MessageType::MsgSnap as i32 {
            peer.raft().report_snapshot(m.to, SnapshotStatus::Failure);
        }
    }
}
