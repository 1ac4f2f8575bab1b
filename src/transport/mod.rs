//! The rafthttp transport: peers, streams, pipeline and snapshots, as etcd's
//! `rafthttp.Transport` (spec §1, §3, §4), on an I/O thread of the chosen driver.
//!
//! The application's threads call [`Transport::send`], which only queues (and never
//! blocks); the I/O thread serves the peer port, writes the streams peers dial, dials
//! the peers' streams, and posts the pipeline. Received messages go to per-peer queues
//! drained by worker threads that call [`Raft::process`].

pub mod checks;
pub mod handlers;
pub mod message_pool;
pub mod metrics;
pub mod peer;
pub mod peer_status;
pub mod peers;
pub mod pipeline;
pub mod prober;
pub mod processor;
pub mod queue;
pub mod raft;
pub mod recv_queue;
pub mod snapshot_sender;
pub mod stream_queue;
pub mod stream_reader;
pub mod stream_writer;
pub mod url_picker;
pub mod worker_placement;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use checks::Profile;
pub use peer::QueueSizes;
pub use raft::{FatalError, ProcessError, Raft, SnapshotStatus};

use self::checks::Local;
use self::peer::Peer;
use crate::http::client::{PeerUrl, UrlError};
use crate::http::server::{listen_all, Server, ServerConfig};
use crate::http::write::HeaderValue;
use crate::io::{
    choose_backend, Backend, BufferPool, IoBackend, IoError, IoMode, IoTask, IoThread,
    SocketOptions, ThreadScheduling, Timeouts, DEFAULT_LINGER,
};
use crate::limits::Limits;
use crate::raftpb::Message;
use crate::version::{LocalVersions, StreamType};

/// Transport settings; the defaults are etcd's.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our member ID.
    pub id: u64,
    /// Our cluster ID.
    pub cluster_id: u64,
    /// Our advertised peer URLs (sent as `X-PeerURLs`).
    pub advertise_urls: Vec<String>,
    /// Addresses to listen on (port 0 picks one; see [`Transport::local_addrs`]).
    pub listen: Vec<SocketAddr>,
    /// Advertised server and minimum cluster versions (3.5.0 / 3.0.0).
    pub versions: LocalVersions,
    /// etcd 3 or etcd 2.1 behaviour.
    pub profile: Profile,
    /// The I/O driver.
    pub io: IoMode,
    /// Read, write, idle and dial timeouts (5 s, 5 s, 5 s, 2 s).
    pub timeouts: Timeouts,
    /// Caps on lengths from the wire (512 MiB frames).
    pub limits: Limits,
    /// Queue sizes (4096 / 64 / 4096).
    pub queues: QueueSizes,
    /// Least time between two dials of one stream (100 ms).
    pub dial_retry: Duration,
    /// Link heartbeat period (ConnReadTimeout / 3).
    pub heartbeat: Duration,
    /// Prober period (ConnReadTimeout − 1 s).
    pub probe_interval: Duration,
    /// More paths to serve on the peer port (etcd serves `/version` and `/members`).
    pub routes: ExtraRoutes,
    /// Scheduling policy of the I/O thread ([`ThreadScheduling::Batch`]: it does not
    /// preempt the application thread that wakes it to send; see [`crate::io::sched`]).
    pub scheduling: ThreadScheduling,
    /// How long a stream reader looks for the next message itself after a lone one,
    /// between the I/O thread's other tasks, before it waits through the driver
    /// ([`DEFAULT_LINGER`], 30 µs; zero: it waits at once). The answer to a message, or
    /// the next one, then finds the thread awake (see [`crate::io::linger`]). A receive
    /// worker running on another CPU than the I/O thread looks as long for its next
    /// message before it sleeps (`RecvQueue::set_linger`).
    pub linger: Duration,
    /// Whether a thread that sends a message on an idle stream writes it on the socket
    /// itself (one non-blocking `send`) instead of waking the I/O thread to (`true`, the
    /// default; see [`crate::http::direct`]). Only while the stream's writer has nothing
    /// queued or in flight, so that bytes keep their order; what the socket does not take
    /// is left to the I/O thread.
    pub direct_send: bool,
    /// An I/O thread to run on instead of starting one (`None`, the default: the
    /// transport starts its own). Transports in one process (raft groups, the members
    /// of a test cluster) may share one, as Go's transports share its runtime: a
    /// message between two of them is then written and read by the same thread. `io` and
    /// `scheduling` are then the thread's. The thread ends when its last holder lets it
    /// go; [`Transport::stop`] waits for the transport's own tasks on it to end.
    pub io_thread: Option<Arc<IoThread>>,
    /// Options for every TCP socket the transport dials or accepts on (`None` in each:
    /// the system's defaults, as etcd). Its congestion control is checked at
    /// [`Transport::start`]. On loopback, or a short fast link without an `fq` qdisc,
    /// BBR's pacing timers cap a stream's throughput; CUBIC does not pace (see
    /// [`crate::io::socket_options`]).
    pub socket: SocketOptions,
}

/// Answers a request on a path the application adds to the peer port. Called on the
/// I/O thread: it must not block.
pub type ExtraHandler =
    Arc<dyn Fn(&crate::http::router::Request) -> crate::http::router::Response + Send + Sync>;

/// Exact paths and their handlers, served beside the raft endpoints (request bodies are
/// not read).
#[derive(Clone, Default)]
pub struct ExtraRoutes(pub Vec<(String, ExtraHandler)>);

impl ExtraRoutes {
    /// Adds `path`.
    pub fn add(
        mut self,
        path: &str,
        handler: impl Fn(&crate::http::router::Request) -> crate::http::router::Response
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.0.push((path.to_string(), Arc::new(handler)));
        self
    }
}

impl std::fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Config {
    /// etcd's defaults for member `id` of cluster `cluster_id`.
    pub fn new(id: u64, cluster_id: u64) -> Config {
        let timeouts = Timeouts::default();
        Config {
            id,
            cluster_id,
            advertise_urls: Vec::new(),
            listen: Vec::new(),
            versions: LocalVersions::default(),
            profile: Profile::Etcd3,
            io: IoMode::Auto,
            timeouts,
            limits: Limits::default(),
            queues: QueueSizes::default(),
            dial_retry: Duration::from_millis(100),
            heartbeat: timeouts.read / 3,
            probe_interval: timeouts.read.saturating_sub(Duration::from_secs(1)),
            routes: ExtraRoutes::default(),
            scheduling: ThreadScheduling::default(),
            linger: DEFAULT_LINGER,
            direct_send: true,
            io_thread: None,
            socket: SocketOptions::default(),
        }
    }
}

/// Why the transport could not do something.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The I/O driver could not start.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Binding a listener failed.
    #[error("listen on {addr}: {error}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// A peer URL is not `http://host:port`.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The transport has stopped.
    #[error("transport stopped")]
    Stopped,
    /// Started from a task or an inline callback on the I/O thread it was to run on,
    /// which cannot wait for itself.
    #[error("a transport cannot be started on its own I/O thread")]
    OnIoThread,
    /// A thread of the transport's could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// A socket option cannot be set here (a congestion control the kernel lacks).
    #[error("socket options: {0}")]
    SocketOptions(std::io::Error),
}

/// State shared by the application's threads and the I/O thread.
pub struct Shared {
    /// Our identity and versions, for the handlers' checks.
    pub local: Local,
    /// `X-Min-Cluster-Version` as sent.
    pub min_version_text: Arc<str>,
    /// `X-PeerURLs` as sent.
    pub advertise: Arc<str>,
    /// The application.
    pub raft: Arc<dyn Raft>,
    /// Settings.
    pub config: Config,
    /// Peers and remotes by ID, read without a lock on the sending path.
    peers: peers::Peers,
    /// Fatal errors for the application.
    pub fatal: SyncSender<FatalError>,
    /// Set once by [`Transport::stop`].
    pub stopped: AtomicBool,
    /// Tells the server to stop.
    stop_server: tokio::sync::Notify,
    /// The I/O thread, to start peer tasks on (taken at stop); maybe shared with other
    /// transports ([`Config::io_thread`]).
    io: Mutex<Option<Arc<IoThread>>>,
    /// Runs `process` for messages that came by POST (none when processing inline).
    pub processor: Option<processor::Processor>,
}

impl Shared {
    /// The peer (or remote) with `id`.
    pub fn peer(&self, id: u64) -> Option<Arc<Peer>> {
        self.peers.with(|m| m.get(&id).cloned())
    }

    /// etcd's `AddRemote`: a pipeline-only peer for a member not in our membership;
    /// nothing if `id` is already known or the transport stopped.
    pub fn add_remote_str(self: &Arc<Self>, id: u64, urls: &str) {
        if id == self.local.id || self.stopped.load(Relaxed) || self.peer(id).is_some() {
            return;
        }
        let urls: Vec<PeerUrl> = urls
            .split(',')
            .filter_map(|u| u.trim().parse().ok())
            .collect();
        if urls.is_empty() {
            return;
        }
        let _ = self.start_peer(id, urls, true);
    }

    /// The client settings every peer connection uses (our timeouts and caps).
    pub fn client_config(&self) -> crate::http::client::ClientConfig {
        crate::http::client::ClientConfig {
            timeouts: self.config.timeouts,
            limits: self.config.limits,
            socket: self.config.socket,
            ..Default::default()
        }
    }

    /// The headers every request to a peer carries (etcd's `X-Server-From`,
    /// `X-Server-Version`, `X-Min-Cluster-Version`, `X-Etcd-Cluster-ID`, `X-PeerURLs`),
    /// after `first` (a `Content-Type`, say).
    pub fn request_headers(
        &self,
        first: Option<(&'static str, HeaderValue)>,
    ) -> Vec<(&'static str, HeaderValue)> {
        let local = &self.local;
        first
            .into_iter()
            .chain([
                ("X-Server-From", HeaderValue::Hex(local.id)),
                (
                    "X-Server-Version",
                    HeaderValue::Shared(local.server_version_text.clone()),
                ),
                (
                    "X-Min-Cluster-Version",
                    HeaderValue::Shared(self.min_version_text.clone()),
                ),
                (
                    "X-Etcd-Cluster-Id",
                    HeaderValue::Shared(local.cluster_text.clone()),
                ),
                ("X-Peerurls", HeaderValue::Shared(self.advertise.clone())),
            ])
            .collect()
    }

    fn start_peer(
        self: &Arc<Self>,
        id: u64,
        urls: Vec<PeerUrl>,
        remote_only: bool,
    ) -> Result<(), TransportError> {
        let (peer, receivers) = Peer::new(
            self.local.id,
            id,
            urls,
            self.config.queues,
            self.raft.clone(),
            remote_only,
        );
        let added = self.peers.change(|peers| {
            match peers.get(&id) {
                Some(existing) if !existing.remote_only || remote_only => return false,
                Some(remote) => remote.stop(), // a peer replaces a remote
                None => {}
            }
            peers.insert(id, peer.clone());
            true
        });
        if !added {
            return Ok(());
        }
        peer.set_worker_linger(self.config.linger);
        peer.set_direct_send(self.config.direct_send);
        peer::spawn_workers(id, receivers, self.raft.clone());
        let io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let io = io.as_ref().ok_or(TransportError::Stopped)?;
        let me = self.clone();
        if !remote_only {
            for kind in [StreamType::MsgAppV2, StreamType::Message] {
                let reader = stream_reader::StreamReader {
                    shared: me.clone(),
                    peer: peer.clone(),
                    kind,
                };
                io.spawn_task(reader).map_err(|_| TransportError::Stopped)?;
            }
            let prober = prober::Prober {
                shared: me.clone(),
                peer: peer.clone(),
            };
            io.spawn_task(prober).map_err(|_| TransportError::Stopped)?;
        }
        io.spawn_task(pipeline::Pipeline { shared: me, peer })
            .map_err(|_| TransportError::Stopped)?;
        tracing::info!(local_member_id = %format_args!("{:x}", self.local.id), remote_peer_id = %format_args!("{id:x}"), remote_only, "added peer");
        Ok(())
    }
}

/// Per-peer figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub id: u64,
    /// Active now.
    pub active: bool,
    /// Whether each stream writer has a connection: (msgapp, message).
    pub streams_attached: (bool, bool),
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Messages not sent.
    pub sent_failures: u64,
    /// Received messages dropped.
    pub received_failures: u64,
    /// Messages sent by pipeline.
    pub pipeline_messages: u64,
    /// Our stream dials that failed (an unsupported stream type is not a failure).
    pub dial_failures: u64,
    /// Stream connections the peer attached to our writers.
    pub stream_attaches: u64,
    /// Times a stream reader from the peer stopped reading until the receive worker had
    /// caught up (`QueueSizes::recv_backlog`).
    pub receive_pauses: u64,
    /// Bytes read from the peer's streams into messages now waiting for the receive
    /// worker (what `QueueSizes::recv_backlog` bounds).
    pub receive_queued_bytes: u64,
    /// Probes of the peer answered (the count of its round-trip-time histogram).
    pub probes: u64,
    /// Times the peer's receive workers moved to the CPU of the thread waking them,
    /// while messages came one at a time (`worker_placement`).
    pub worker_moves: u64,
    /// Times the peer's receive workers slept for want of messages (each costs the
    /// thread that wakes it a system call; `recv_queue::FLOW_YIELDS`).
    pub worker_sleeps: u64,
    /// Times the peer's receive workers gave up their CPU to look for messages again
    /// rather than sleep: a few times in a flow (`recv_queue::FLOW_YIELDS`), and for
    /// [`Config::linger`] after a lone message when apart from the I/O thread.
    pub worker_looks: u64,
    /// Times a stream reader from the peer, lingering after a lone message, found the
    /// next one itself ([`Config::linger`]).
    pub linger_hits: u64,
    /// Times such a linger ran out, and the reader waited through the driver.
    pub linger_misses: u64,
    /// Messages to the peer written by the sending thread itself, on an idle stream
    /// ([`Config::direct_send`]).
    pub direct_writes: u64,
}

/// Transport-wide figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportStats {
    /// The I/O driver in use.
    pub io: IoBackend,
    /// Per peer.
    pub peers: Vec<PeerStats>,
}

/// A running transport.
pub struct Transport {
    shared: Arc<Shared>,
    backend: IoBackend,
    local_addrs: Vec<SocketAddr>,
    wire: Arc<AtomicU64>,
    fatal_rx: Mutex<Option<Receiver<FatalError>>>,
}

/// Starts the server on the I/O thread; it stops when `stop_server` is notified.
struct StartServer {
    shared: Arc<Shared>,
}

impl IoTask for StartServer {
    type Output = Result<(Vec<SocketAddr>, Arc<AtomicU64>), TransportError>;

    async fn run<B: Backend>(self) -> Self::Output {
        let cfg = &self.shared.config;
        let router = handlers::router(self.shared.clone());
        let server_cfg = ServerConfig {
            timeouts: cfg.timeouts,
            limits: cfg.limits,
            socket: cfg.socket,
            ..ServerConfig::default()
        };
        let server = Server::new(router, server_cfg, Rc::new(BufferPool::new(64 * 1024, 64)));
        let wire = server.wire_counter();
        let mut bound = Vec::new();
        for addr in &cfg.listen {
            let b = listen_all::<B>(&server, std::slice::from_ref(addr))
                .map_err(|error| TransportError::Listen { addr: *addr, error })?;
            bound.extend(b);
        }
        let shared = self.shared.clone();
        tokio::task::spawn_local(async move {
            let stop = shared.stop_server.notified();
            tokio::pin!(stop);
            stop.as_mut().enable();
            if !shared.stopped.load(Relaxed) {
                stop.await;
            }
            server.stop();
        });
        Ok((bound, wire))
    }
}

/// Tells the server to stop, on the I/O thread, and yields so that it does.
struct StopServer {
    shared: Arc<Shared>,
}

impl IoTask for StopServer {
    type Output = ();

    async fn run<B: Backend>(self) {
        self.shared.stop_server.notify_waiters();
        tokio::task::yield_now().await;
    }
}

fn parse_urls(urls: &[impl AsRef<str>]) -> Result<Vec<PeerUrl>, TransportError> {
    urls.iter()
        .map(|u| u.as_ref().parse::<PeerUrl>().map_err(TransportError::from))
        .collect()
}

impl Transport {
    /// Starts a transport: chooses the I/O driver, starts its thread and listens.
    pub fn start(config: Config, raft: Arc<dyn Raft>) -> Result<Transport, TransportError> {
        config
            .socket
            .check()
            .map_err(TransportError::SocketOptions)?;
        let io = match &config.io_thread {
            Some(io) => io.clone(),
            None => Arc::new(IoThread::spawn(
                &format!("rafthttp-io-{:x}", config.id),
                choose_backend(config.io)?,
                config.scheduling,
            )?),
        };
        let backend = io.backend();
        let (fatal, fatal_rx) = sync_channel(1);
        let local = Local::new(
            config.id,
            config.cluster_id,
            config.versions.clone(),
            config.profile,
        );
        // Not needed when the application processes inline (it said process never blocks).
        let processor = if raft.inline() {
            None
        } else {
            let name = format!("rafthttp-post-{:x}", config.id);
            Some(processor::Processor::start(name, raft.clone()).map_err(TransportError::Thread)?)
        };
        let shared = Arc::new(Shared {
            min_version_text: config.versions.min_cluster.to_string().into(),
            advertise: config.advertise_urls.join(",").into(),
            local,
            raft,
            config,
            peers: peers::Peers::default(),
            fatal,
            stopped: AtomicBool::new(false),
            stop_server: tokio::sync::Notify::new(),
            io: Mutex::new(None),
            processor,
        });
        let (local_addrs, wire) = io
            .call(StartServer {
                shared: shared.clone(),
            })
            .map_err(|e| match e {
                crate::io::thread::Stopped::OnItself => TransportError::OnIoThread,
                _ => TransportError::Stopped,
            })??;
        *shared.io.lock().unwrap_or_else(|p| p.into_inner()) = Some(io);
        let congestion = shared.config.socket.congestion_in_effect();
        tracing::info!(local_member_id = %format_args!("{:x}", shared.local.id), io = backend.name(), addrs = ?local_addrs, tcp_congestion = %congestion, "rafthttp transport started");
        Ok(Transport {
            shared,
            backend,
            local_addrs,
            wire,
            fatal_rx: Mutex::new(Some(fatal_rx)),
        })
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The I/O driver in use.
    pub fn backend(&self) -> IoBackend {
        self.backend
    }

    /// TCP payload bytes read and written on the connections peers opened to us (every
    /// stream a peer dialed, every pipeline and snapshot POST it sent): summed over both
    /// members of a pair, each connection's traffic in both directions, once.
    pub fn wire_bytes(&self) -> u64 {
        self.wire.load(Relaxed)
    }

    /// The fatal-error channel (etcd's `ErrorC`); can be taken once.
    pub fn take_errors(&self) -> Option<Receiver<FatalError>> {
        self.fatal_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Adds peer `id` at `urls` and starts its streams and pipeline.
    pub fn add_peer(&self, id: u64, urls: &[impl AsRef<str>]) -> Result<(), TransportError> {
        if self.shared.stopped.load(Relaxed) {
            return Err(TransportError::Stopped);
        }
        self.shared.start_peer(id, parse_urls(urls)?, false)
    }

    /// Adds a remote: a pipeline to a member not in our membership.
    pub fn add_remote(&self, id: u64, urls: &[impl AsRef<str>]) -> Result<(), TransportError> {
        if self.shared.stopped.load(Relaxed) {
            return Err(TransportError::Stopped);
        }
        self.shared.start_peer(id, parse_urls(urls)?, true)
    }

    /// Removes peer `id` (logs and does nothing if unknown, as etcd 3.6 does).
    pub fn remove_peer(&self, id: u64) {
        let removed = self.shared.peers.change(|m| m.remove(&id));
        match removed {
            Some(p) => p.stop(),
            None => {
                tracing::warn!(remote_peer_id = %format_args!("{id:x}"), "skipped removing already removed peer")
            }
        }
    }

    /// Removes every peer.
    pub fn remove_all_peers(&self) {
        let all: Vec<_> = self.shared.peers.change(|m| m.drain().collect());
        for (_, p) in all {
            p.stop();
        }
    }

    /// Replaces peer `id`'s URLs.
    pub fn update_peer(&self, id: u64, urls: &[impl AsRef<str>]) -> Result<(), TransportError> {
        if let Some(p) = self.shared.peer(id) {
            p.urls.update(parse_urls(urls)?);
        }
        Ok(())
    }

    /// Sends messages; never blocks. Messages to ID 0 are skipped; to an unknown ID,
    /// dropped with a debug log.
    pub fn send(&self, msgs: &[Message]) {
        for m in msgs {
            self.send_ref(m);
        }
    }

    /// Sends one message by reference: a stream encodes it where it is (nothing is
    /// copied or moved), so the application may reuse it at once. Only a message that
    /// must go by pipeline is copied.
    pub fn send_ref(&self, m: &Message) {
        if m.to == 0 {
            return;
        }
        // The common case, queued on a stream, needs neither a reference count on the
        // peer nor anything of the application's, so it runs on this thread's copy of
        // the peers (no lock).
        let routed = self.shared.peers.with_copy(|peers| {
            let p = peers.get(&m.to)?;
            match p.route_to_stream(m) {
                peer::Routed::Queued => Some(None),
                routed => Some(Some((p.clone(), routed))),
            }
        });
        let peer = match routed {
            Some(Some(peer)) => peer,
            Some(None) => return,
            None => {
                tracing::debug!(to = %format_args!("{:x}", m.to), "ignored message (sent to unknown peer)");
                return;
            }
        };
        // Reports reach the application, which may change the peers: not under the lock.
        peer.0.finish_send(m, peer.1);
    }

    /// Adds up to `n` empty messages to `into`, recycled from those already sent to
    /// `to` on a stream (their entry vectors keep their capacity). Filling these instead
    /// of new messages makes sending allocate nothing per message. The first call opts
    /// in: from then on the peer's writers keep what they send (up to 1,024 shells)
    /// instead of dropping it.
    pub fn recycle_into(&self, to: u64, into: &mut Vec<Message>, n: usize) {
        if let Some(p) = self.shared.peer(to) {
            p.send_recycling.store(true, Relaxed);
            p.send_pool.take_many(into, n);
        }
    }

    /// Sends one message, taking ownership (no copy of its entries).
    pub fn send_message(&self, m: Message) {
        if m.to == 0 {
            return;
        }
        match self.shared.peer(m.to) {
            Some(p) => p.send(m),
            None => {
                tracing::debug!(to = %format_args!("{:x}", m.to), "ignored message (sent to unknown peer)")
            }
        }
    }

    /// Sends a snapshot to `m.to`: the MsgSnap envelope `m`, then exactly `size` bytes of
    /// database from `data`, streamed (etcd's `SendSnapshot`). Returns at once; the
    /// outcome comes through [`Raft::report_snapshot`].
    pub fn send_snapshot(&self, m: Message, data: impl std::io::Read + Send + 'static, size: u64) {
        self.send_snapshot_data(
            m,
            snapshot_sender::SnapshotData::Reader(Box::new(data), size),
        );
    }

    /// Sends a snapshot whose database is already in memory (as raft-rs's `MemStorage`
    /// keeps it): like [`Transport::send_snapshot`], but the bytes go to the socket by
    /// reference, with no copy and no reader thread.
    pub fn send_snapshot_bytes(&self, m: Message, data: bytes::Bytes) {
        self.send_snapshot_data(m, snapshot_sender::SnapshotData::Bytes(data));
    }

    fn send_snapshot_data(&self, m: Message, data: snapshot_sender::SnapshotData) {
        let to = m.to;
        let sent = self.shared.peer(to).filter(|p| !p.is_paused()).map(|peer| {
            let task =
                snapshot_sender::SnapshotSend::new(self.shared.clone(), peer.clone(), m, data);
            // The peer's snapshot thread, not the I/O thread: copying a database into
            // the socket would hold up the streams (heartbeats) there, and share its
            // CPU. If it cannot run, the dropped task reports the failure itself.
            peer.snapshot_thread.spawn(
                &format!("rafthttp-snap-{to:x}"),
                self.backend,
                self.shared.config.scheduling,
                task,
            );
        });
        if sent.is_none() {
            self.shared
                .raft
                .report_snapshot(to, SnapshotStatus::Failure);
        }
    }

    /// When peer `id` became active, if it is.
    pub fn active_since(&self, id: u64) -> Option<SystemTime> {
        self.shared.peer(id).and_then(|p| p.status.active_since())
    }

    /// How many peers are active.
    pub fn active_peers(&self) -> usize {
        self.shared
            .peers
            .current()
            .values()
            .filter(|p| !p.remote_only && p.status.is_active())
            .count()
    }

    fn for_each_peer(&self, f: impl Fn(&Peer)) {
        for p in self.shared.peers.current().values() {
            f(p);
        }
    }

    /// Drops all traffic to and from every peer (test control).
    pub fn pause(&self) {
        self.for_each_peer(Peer::pause);
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&self) {
        self.for_each_peer(Peer::resume);
    }

    /// Drops all traffic to and from peer `id` (test control).
    pub fn cut_peer(&self, id: u64) {
        if let Some(p) = self.shared.peer(id) {
            p.pause();
        }
    }

    /// Undoes [`cut_peer`](Self::cut_peer).
    pub fn mend_peer(&self, id: u64) {
        if let Some(p) = self.shared.peer(id) {
            p.resume();
        }
    }

    /// Figures for every peer.
    pub fn stats(&self) -> TransportStats {
        let mut peers: Vec<PeerStats> = self
            .shared
            .peers
            .current()
            .values()
            .map(|p| PeerStats {
                id: p.id,
                active: p.status.is_active(),
                streams_attached: (p.msgapp.is_working(), p.message.is_working()),
                sent_bytes: p.counters.sent_bytes.load(Relaxed),
                received_bytes: p.counters.received_bytes.load(Relaxed),
                sent_failures: p.counters.sent_failures.load(Relaxed),
                received_failures: p.counters.received_failures.load(Relaxed),
                pipeline_messages: p.counters.pipeline_messages.load(Relaxed),
                dial_failures: p.counters.dial_failures.load(Relaxed),
                stream_attaches: p.counters.stream_attaches.load(Relaxed),
                receive_pauses: p.counters.receive_pauses.load(Relaxed),
                receive_queued_bytes: p.receive_queued_bytes() as u64,
                probes: p.counters.rtt.count(),
                worker_moves: p.worker_moves(),
                worker_sleeps: p.worker_sleeps(),
                worker_looks: p.worker_looks(),
                linger_hits: p.counters.linger_hits.load(Relaxed),
                linger_misses: p.counters.linger_misses.load(Relaxed),
                direct_writes: p.direct_writes(),
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        TransportStats {
            io: self.backend,
            peers,
        }
    }

    /// etcd's `etcd_network_*` metrics in the Prometheus text format, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        Self::metrics_text_all(&[self])
    }

    /// The metrics of several transports in one process (a demo cluster), each metric
    /// family once, told apart by their `Local` and `To`/`From` labels.
    pub fn metrics_text_all(transports: &[&Transport]) -> String {
        let peers: Vec<Arc<Peer>> = transports
            .iter()
            .flat_map(|t| {
                let map = t.shared.peers.current();
                let mut v: Vec<_> = map.values().filter(|p| !p.remote_only).cloned().collect();
                v.sort_by_key(|p| p.id);
                v
            })
            .collect();
        let samples: Vec<metrics::PeerSample<'_>> = peers
            .iter()
            .map(|p| metrics::PeerSample {
                local: p.local,
                id: p.id,
                active: p.status.is_active(),
                counters: &p.counters,
            })
            .collect();
        metrics::render(&samples)
    }

    /// Stops: every peer, every connection, the I/O thread.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&self) {
        if self.shared.stopped.swap(true, Relaxed) {
            return;
        }
        self.remove_all_peers();
        // The peers are stopped; this thread's copy of them need not outlive the
        // transport (other threads let theirs go at their next send).
        self.shared.peers.forget_copy();
        let io = self
            .shared
            .io
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(io) = io {
            let on_it = io.is_current();
            if on_it {
                // Stopped by a task or an inline callback of the thread itself, which
                // cannot wait for itself: the server stops once this returns.
                self.shared.stop_server.notify_waiters();
            } else {
                // Stop the server on the I/O thread and let its stop run (it closes
                // every connection) before the thread, and with it every task, ends.
                let _ = io.call(StopServer {
                    shared: self.shared.clone(),
                });
            }
            if let Ok(own) = Arc::try_unwrap(io) {
                own.stop();
            }
            // Tasks on a shared I/O thread or a peer's snapshot thread run on: wait for
            // them (each holds `shared`) to see the stop and end, so that no call reaches
            // the application after `stop` returns.
            if !on_it {
                self.await_tasks();
            }
        }
    }

    /// Waits, up to the write timeout, until no task holds the shared state any more.
    fn await_tasks(&self) {
        let end = std::time::Instant::now() + self.shared.config.timeouts.write;
        while Arc::strong_count(&self.shared) > 1 {
            if std::time::Instant::now() >= end {
                tracing::warn!(
                    local_member_id = %format_args!("{:x}", self.shared.local.id),
                    tasks = Arc::strong_count(&self.shared) - 1,
                    "stopped rafthttp transport with tasks still running (on a shared I/O thread or a peer's snapshot thread)"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
