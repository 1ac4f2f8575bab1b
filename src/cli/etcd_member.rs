//! `rafthttp etcd-member`: a raft-rs member that joins a real etcd 3.4 cluster over
//! rafthttp (`etcd-foreign-member.md`). It takes etcd's own flags, derives the same IDs,
//! serves `/version`, `/members` and `/raft/probing` beside the raft endpoints, is
//! backfilled from index 0, publishes its attributes, votes, campaigns on MsgTimeoutNow
//! and leads.
//!
//! Its log lives in memory only: it is **not durable**, and a restarted member has lost
//! its vote and log; run it for tests and demonstrations, never for data.
//!
//! stdout carries one JSON line per event (`started`, `status` on leader/term/role
//! changes, `applied` per committed entry, `published`); logs go to stderr.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use raft::eraftpb;
use rafthttp::etcd::members::version_json;
use rafthttp::etcd::requests::publish_attributes;
use rafthttp::etcd::{EntryData, InitialCluster, Membership};
use rafthttp::http::client::PeerUrl;
use rafthttp::http::router::{Request, Response, ResponseBody};
use rafthttp::io::IoMode;
use rafthttp::json::id_to_hex;
use rafthttp::raft_rs::{Inbox, Input, NodeOptions, NodeStatus, RaftNode};
use rafthttp::transport::{Config, ExtraRoutes, Transport};
use rafthttp::version::{LocalVersions, Version};
use serde_json::json;

/// The server version this member claims: an etcd 3.4 member's.
const SERVER_VERSION: &str = "3.4.23";
/// The cluster version it reports on `/version`.
const CLUSTER_VERSION: &str = "3.4.0";

/// Arguments of `rafthttp etcd-member`: etcd's flags of the same names.
#[derive(Debug, Args)]
pub struct EtcdMemberArgs {
    /// Human-readable name for this member (must appear in --initial-cluster).
    #[arg(long)]
    pub name: String,
    /// Initial cluster configuration: `name=peerURL,…`.
    #[arg(long)]
    pub initial_cluster: String,
    /// Initial cluster token (part of every member ID).
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Initial cluster state; only `new` is supported.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// URLs to listen on for peer traffic (comma-separated).
    #[arg(long, default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise (comma-separated).
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Client URLs to publish (comma-separated; not served).
    #[arg(long, default_value = "")]
    pub advertise_client_urls: String,
    /// Time (ms) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (ms) for an election to time out.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// I/O backend: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    pub io: IoMode,
    /// Socket options.
    #[command(flatten)]
    pub socket: crate::cli::SocketArgs,
}

/// Why the member could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// A flag is wrong.
    #[error("{0}")]
    Flag(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] rafthttp::transport::TransportError),
    /// raft-rs refused to start.
    #[error(transparent)]
    Node(#[from] rafthttp::raft_rs::node::NodeError),
    /// A peer said we were removed.
    #[error(transparent)]
    Fatal(#[from] rafthttp::transport::FatalError),
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

fn listen_addrs(urls: &[String]) -> Result<Vec<SocketAddr>, MemberError> {
    let mut out = Vec::new();
    for u in urls {
        let p: PeerUrl = u
            .parse()
            .map_err(|e| MemberError::Flag(format!("--listen-peer-urls: {e}")))?;
        let addrs = (p.host.as_str(), p.port)
            .to_socket_addrs()
            .map_err(|e| MemberError::Flag(format!("--listen-peer-urls {u}: {e}")))?;
        // Listen where the name resolves first, as etcd does (one listener per URL).
        out.extend(addrs.take(1));
    }
    Ok(out)
}

fn line(v: serde_json::Value) {
    println!("{v}");
}

/// Runs the member until it is killed or removed.
pub fn run(args: &EtcdMemberArgs) -> Result<(), MemberError> {
    if args.initial_cluster_state != "new" {
        return Err(MemberError::Flag(format!(
            "--initial-cluster-state {:?} is not supported (only \"new\": a member added at runtime has an unpredictable ID)",
            args.initial_cluster_state
        )));
    }
    if args.heartbeat_interval == 0 || args.election_timeout < 5 * args.heartbeat_interval {
        return Err(MemberError::Flag(
            "--election-timeout must be at least 5 times --heartbeat-interval".into(),
        ));
    }
    let cluster = InitialCluster::parse(&args.initial_cluster, &args.initial_cluster_token)
        .map_err(|e| MemberError::Flag(e.to_string()))?;
    let me = cluster.member(&args.name).ok_or_else(|| {
        MemberError::Flag(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            args.name
        ))
    })?;
    let mut advertised = split_urls(&args.initial_advertise_peer_urls);
    let mut expected = me.peer_urls.clone();
    advertised.sort();
    expected.sort();
    if advertised != expected {
        return Err(MemberError::Flag(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            args.name,
            expected.join(","),
            advertised.join(",")
        )));
    }
    let client_urls = split_urls(&args.advertise_client_urls);
    let (id, cluster_id) = (me.id, cluster.cluster_id);
    tracing::warn!("rafthttp etcd-member keeps its raft log in memory only: it is NOT durable; a restart loses its log and vote");

    let membership = Arc::new(Mutex::new(Membership::from_initial(&cluster)));
    let mut cfg = Config::new(id, cluster_id);
    cfg.advertise_urls = me.peer_urls.clone();
    cfg.listen = listen_addrs(&split_urls(&args.listen_peer_urls))?;
    cfg.io = args.io;
    cfg.socket = args.socket.options();
    cfg.versions = LocalVersions {
        server: SERVER_VERSION
            .parse::<Version>()
            .map_err(|e| MemberError::Flag(e.to_string()))?,
        min_cluster: Version::new(3, 0, 0),
    };
    let members_view = membership.clone();
    cfg.routes = ExtraRoutes::default()
        .add("/version", |req: &Request| {
            get_only(req)
                .unwrap_or_else(|| json_response(version_json(SERVER_VERSION, CLUSTER_VERSION)))
        })
        .add("/members", move |req: &Request| {
            get_only(req).unwrap_or_else(|| {
                let body = members_view
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .to_json();
                json_response(body).with_header(
                    "X-Etcd-Cluster-Id",
                    rafthttp::http::write::HeaderValue::Hex(cluster_id),
                )
            })
        });

    let (inbox, inputs) = Inbox::new(4096);
    let transport = Transport::start(cfg, inbox.clone())?;
    for m in cluster.members.iter().filter(|m| m.id != id) {
        transport.add_peer(m.id, &m.peer_urls)?;
    }
    line(json!({
        "event": "started",
        "name": args.name,
        "id": id_to_hex(id),
        "cluster_id": id_to_hex(cluster_id),
        "io": transport.backend().name(),
        "peer_addrs": transport.local_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "durable": false,
    }));

    let mut opts = NodeOptions::new(id, cluster.members.iter().map(|m| m.id).collect());
    opts.tick = Duration::from_millis(args.heartbeat_interval);
    opts.election_tick = (args.election_timeout / args.heartbeat_interval) as usize;
    let mut node = RaftNode::new(&opts)?;
    let status = node.status();
    let published = Arc::new(AtomicBool::new(false));
    let errors = transport.take_errors();

    // The watcher: reports status changes, publishes our attributes once a leader is
    // known (retrying, as etcd's publish does), and stops on a fatal transport error.
    let proposals = inbox.sender();
    let watcher_published = published.clone();
    let publish_data = {
        let name = args.name.clone();
        move || publish_attributes(rand_id(), id, &name, &client_urls)
    };
    std::thread::Builder::new()
        .name("etcd-member-watch".into())
        .spawn(move || {
            let mut last = NodeStatus::default();
            let mut last_publish: Option<Instant> = None;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(Ok(e)) = errors.as_ref().map(|r| r.try_recv()) {
                    tracing::error!(error = %e, "stopping");
                    line(json!({"event": "fatal", "error": e.to_string()}));
                    let _ = proposals.send(Input::Stop);
                    return;
                }
                let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if (s.leader, s.term, s.role) != (last.leader, last.term, last.role) {
                    line(json!({"event": "status", "leader": id_to_hex(s.leader), "term": s.term, "role": s.role, "commit": s.commit}));
                }
                last = s.clone();
                let due = last_publish.is_none_or(|t| t.elapsed() > Duration::from_secs(2));
                if s.leader != 0 && !watcher_published.load(Relaxed) && due {
                    last_publish = Some(Instant::now());
                    let _ = proposals.try_send(Input::Propose(publish_data()));
                }
            }
        })
        .map_err(|e| MemberError::Flag(format!("spawn: {e}")))?;

    node.run(
        &inputs,
        &transport,
        &mut |entry: &eraftpb::Entry, s: &NodeStatus| {
            applied(entry, s, id, &membership, &published);
        },
    );
    transport.stop();
    Err(MemberError::Fatal(
        rafthttp::transport::FatalError::MemberRemoved,
    ))
}

/// Prints a committed entry and applies what a follower must (member attributes).
fn applied(
    e: &eraftpb::Entry,
    s: &NodeStatus,
    me: u64,
    ms: &Mutex<Membership>,
    published: &AtomicBool,
) {
    let mut v = json!({"event": "applied", "index": e.index, "term": e.term, "leader": id_to_hex(s.leader)});
    match e.entry_type {
        eraftpb::EntryType::EntryConfChange | eraftpb::EntryType::EntryConfChangeV2 => {
            v["type"] = "conf_change".into();
        }
        eraftpb::EntryType::EntryNormal => match EntryData::decode(&e.data) {
            EntryData::Empty => v["type"] = "empty".into(),
            EntryData::Put { key, value } => {
                v["type"] = "put".into();
                v["key"] = String::from_utf8_lossy(&key).into();
                v["value_len"] = value.len().into();
            }
            EntryData::V2(r) => {
                v["type"] = "v2".into();
                v["method"] = r.method.clone().into();
                v["path"] = r.path.clone().into();
                let changed = ms.lock().unwrap_or_else(|p| p.into_inner()).apply_v2(&r);
                if changed == Some(me) && !published.swap(true, Relaxed) {
                    line(json!({"event": "published", "index": e.index}));
                }
            }
            EntryData::OtherV3 => v["type"] = "v3".into(),
            EntryData::Unknown => v["type"] = "unknown".into(),
        },
    }
    line(v);
}

/// etcd's member-handler method check: anything but GET is 405 with `Allow: GET`.
fn get_only(req: &Request) -> Option<Response> {
    (req.method != "GET")
        .then(|| Response::error(405, "Method Not Allowed").with_header("Allow", "GET"))
}

fn json_response(body: String) -> Response {
    Response {
        status: 200,
        headers: Default::default(),
        body: ResponseBody::Full(body.into()),
    }
    .with_header("Content-Type", "application/json")
}

/// A request ID that does not repeat across runs (etcd uses its ID generator; any
/// unique value will do for the one request this member proposes).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
