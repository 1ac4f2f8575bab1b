//! The demo's cluster: N raft-rs nodes in one process, each behind its own rafthttp
//! transport on a loopback port, each applying committed entries to a small key-value
//! state machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use raft::eraftpb;
use rafthttp::etcd::EntryData;
use rafthttp::io::{IoMode, SocketOptions};
use rafthttp::raft_rs::{Inbox, Input, NodeOptions, NodeStatus, RaftNode, Role};
use rafthttp::transport::{Config, Transport, TransportError};

/// The demo's cluster ID.
pub const CLUSTER_ID: u64 = 0xde70;

/// A key-value store fed by committed puts.
#[derive(Default)]
pub struct Kv {
    map: BTreeMap<Bytes, Bytes>,
    /// A running digest of every applied put, in order: equal digests on two nodes mean
    /// they applied the same puts in the same order.
    pub digest: u64,
}

impl Kv {
    fn apply(&mut self, key: Bytes, value: Bytes) {
        // FNV-1a over key and value, chained.
        let mut h = self.digest ^ 0xcbf2_9ce4_8422_2325;
        for b in key.iter().chain(value.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.digest = h;
        self.map.insert(key, value);
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// What the proposer and the report see of the demo's progress.
pub struct Progress {
    /// When each demo entry (by sequence number) was proposed, in ns since `epoch`.
    pub proposed_at: Vec<AtomicU64>,
    /// Commit latencies seen by the node that led when the entry was applied (ns).
    pub latencies: Mutex<Vec<u64>>,
    /// Demo entries applied by whichever node leads.
    pub applied_by_leader: AtomicU64,
    /// The clock.
    pub epoch: Instant,
}

/// One node: transport, raft thread, state machine.
pub struct Node {
    /// Member ID (1..=N).
    pub id: u64,
    /// Its transport.
    pub transport: Arc<Transport>,
    /// Inputs for its raft loop.
    pub inputs: SyncSender<Input>,
    /// Raft status.
    pub status: Arc<Mutex<NodeStatus>>,
    /// Its state machine.
    pub kv: Arc<Mutex<Kv>>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// The current raft status.
    pub fn status(&self) -> NodeStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.inputs.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The demo's key for entry `seq`: its sequence number, so the leader can time it.
pub fn key(seq: u64) -> Vec<u8> {
    format!("k{seq:012}").into_bytes()
}

fn seq_of(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(b"k")?)
        .ok()?
        .parse()
        .ok()
}

/// Starts `n` nodes on loopback, all voters, peers of each other.
pub fn start(
    n: u64,
    io: IoMode,
    socket: SocketOptions,
    progress: Arc<Progress>,
) -> Result<Vec<Node>, TransportError> {
    let ids: Vec<u64> = (1..=n).collect();
    let mut parts = Vec::new();
    for &id in &ids {
        let (inbox, rx) = Inbox::new(4096);
        let mut cfg = Config::new(id, CLUSTER_ID);
        cfg.listen = vec!["127.0.0.1:0".parse().expect("address")];
        cfg.io = io;
        cfg.socket = socket;
        let transport = Arc::new(Transport::start(cfg, inbox.clone())?);
        parts.push((id, inbox, rx, transport));
    }
    let urls: Vec<(u64, String)> = parts
        .iter()
        .map(|(id, _, _, t)| (*id, format!("http://{}", t.local_addrs()[0])))
        .collect();
    let mut nodes = Vec::new();
    for (id, inbox, rx, transport) in parts {
        for (peer, url) in urls.iter().filter(|(p, _)| *p != id) {
            transport.add_peer(*peer, &[url])?;
        }
        let mut node =
            RaftNode::new(&NodeOptions::new(id, ids.clone())).expect("valid raft options");
        let status = node.status();
        let kv = Arc::new(Mutex::new(Kv::default()));
        let (t, k, p) = (transport.clone(), kv.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || {
                node.run(&rx, &t, &mut |e: &eraftpb::Entry, s: &NodeStatus| {
                    apply(e, s, &k, &p)
                });
            })
            .expect("spawn raft thread");
        nodes.push(Node {
            id,
            transport,
            inputs: inbox.sender(),
            status,
            kv,
            thread: Some(thread),
        });
    }
    Ok(nodes)
}

fn apply(e: &eraftpb::Entry, s: &NodeStatus, kv: &Mutex<Kv>, p: &Progress) {
    if e.entry_type != eraftpb::EntryType::EntryNormal {
        return;
    }
    if let EntryData::Put { key, value } = EntryData::decode(&e.data) {
        let seq = seq_of(&key);
        kv.lock()
            .unwrap_or_else(|x| x.into_inner())
            .apply(key, value);
        if s.role == Role::Leader {
            if let Some(at) = seq.and_then(|q| p.proposed_at.get(q as usize)) {
                let now = p.epoch.elapsed().as_nanos() as u64;
                let t0 = at.load(Relaxed);
                if t0 != 0 {
                    p.latencies
                        .lock()
                        .unwrap_or_else(|x| x.into_inner())
                        .push(now.saturating_sub(t0));
                }
            }
            p.applied_by_leader.fetch_add(1, Relaxed);
        }
    }
}

/// The node that leads now, if any.
pub fn leader(nodes: &[Node]) -> Option<&Node> {
    nodes.iter().find(|n| n.status().role == Role::Leader)
}
