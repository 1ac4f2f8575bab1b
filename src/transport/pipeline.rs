//! etcd's `pipeline`: messages that no stream can carry go by `POST /raft`, one message
//! per request, with up to 4 requests in flight on keep-alive connections.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;

use super::peer::Peer;
use super::raft::{FatalError, SnapshotStatus};
use super::Shared;
use crate::codec::encode_pipeline_body;
use crate::http::client::Client;
use crate::http::write::HeaderValue;
use crate::io::{Backend, BufferPool, IoTask};
use crate::raftpb::{Message, MessageType};

/// Requests in flight per peer (etcd `connPerPipeline`).
pub const CONNS_PER_PIPELINE: usize = 4;

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
        let generation = self.peer.pipeline_generation();
        let mut batch = Vec::with_capacity(1);
        loop {
            let popped = std::future::poll_fn(|cx| {
                match self
                    .peer
                    .pipeline
                    .pop_batch(generation, &mut batch, 1, cx.waker())
                {
                    Ok(0) => std::task::Poll::Pending,
                    other => std::task::Poll::Ready(other),
                }
            })
            .await;
            if popped.is_err() || self.peer.is_stopped() {
                return;
            }
            let Some(m) = batch.pop() else { continue };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (peer, shared, client, headers) = (
                self.peer.clone(),
                self.shared.clone(),
                client.clone(),
                headers.clone(),
            );
            tokio::task::spawn_local(async move {
                post(&peer, &shared, &client, &headers, m).await;
                drop(permit);
            });
        }
    }
}

async fn post<B: Backend>(
    peer: &Peer,
    shared: &Shared,
    client: &Client<B>,
    headers: &[(&'static str, HeaderValue)],
    m: Message,
) {
    let Some(url) = peer.urls.pick() else { return };
    let mut body = BytesMut::new();
    encode_pipeline_body(&m, &mut body);
    let len = body.len() as u64;
    let error = match client
        .request(&url, "POST", "/raft", headers, body.freeze())
        .await
    {
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
        Err(e) => e.to_string(),
    };
    peer.post_failed(&url, "pipeline", &error);
    if !peer.remote_only {
        peer.raft().report_unreachable(m.to);
        if m.msg_type == MessageType::MsgSnap as i32 {
            peer.raft().report_snapshot(m.to, SnapshotStatus::Failure);
        }
    }
}
