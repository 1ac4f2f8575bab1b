//! `rafthttp peer`: one standalone transport endpoint, a netcat for rafthttp. Messages to
//! send come as JSON lines on stdin (the schema `rafthttp decode` prints); every message
//! received is printed as a JSON line on stdout; peer events (active, inactive,
//! unreachable, snapshot, errors) go to stderr as JSON lines. It runs until killed.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use rafthttp::io::IoMode;
use rafthttp::json::{id_to_hex, MessageJson};
use rafthttp::raftpb::Message;
use rafthttp::transport::{Config, ProcessError, Profile, Raft, SnapshotStatus, Transport};
use rafthttp::version::{LocalVersions, Version};
use serde_json::json;

/// The behaviour profile, for the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// etcd 3.x.
    Etcd3,
    /// etcd 2.1 (msgapp v1).
    #[value(name = "etcd2.1")]
    Etcd21,
}

/// Arguments of `rafthttp peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// This member's ID (hex).
    #[arg(long, value_parser = super::parse_hex_id)]
    pub id: u64,
    /// The cluster ID (hex).
    #[arg(long, value_parser = super::parse_hex_id)]
    pub cluster_id: u64,
    /// Address to listen on (repeatable).
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// Advertised peer URL, sent as X-PeerURLs (repeatable; default: http://<listen>).
    #[arg(long)]
    pub advertise: Vec<String>,
    /// A peer, `ID=URL[,URL…]` with the ID in hex (repeatable).
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(u64, Vec<String>)>,
    /// Advertised server version (X-Server-Version).
    #[arg(long, default_value = "3.5.0")]
    pub server_version: Version,
    /// Advertised minimum cluster version (X-Min-Cluster-Version).
    #[arg(long, default_value = "3.0.0")]
    pub min_cluster_version: Version,
    /// A member ID (hex) to treat as removed: its stream dials get 410 (repeatable).
    #[arg(long, value_parser = super::parse_hex_id)]
    pub removed: Vec<u64>,
    /// Behaviour profile.
    #[arg(long, value_enum, default_value = "etcd3")]
    pub profile: ProfileArg,
    /// I/O backend: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    pub io: IoMode,
    /// Socket options.
    #[command(flatten)]
    pub socket: crate::cli::SocketArgs,
}

fn parse_peer(s: &str) -> Result<(u64, Vec<String>), String> {
    let (id, urls) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=URL"))?;
    let id = super::parse_hex_id(id)?;
    let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
    for u in &urls {
        u.parse::<rafthttp::http::client::PeerUrl>()
            .map_err(|e| e.to_string())?;
    }
    Ok((id, urls))
}

/// Writes one JSON line to stderr (peer events).
fn event(v: serde_json::Value) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{v}");
}

/// The application side: prints what arrives.
struct Printer {
    removed: HashSet<u64>,
    out: Mutex<std::io::Stdout>,
}

impl Raft for Printer {
    fn process(&self, m: Message) -> Result<(), ProcessError> {
        if self.removed.contains(&m.from) {
            return Err(ProcessError::RemovedMember);
        }
        let line = serde_json::to_string(&MessageJson::from_message(&m))
            .map_err(|e| ProcessError::Other(e.to_string()))?;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        Ok(())
    }
    fn is_id_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }
    fn report_unreachable(&self, id: u64) {
        event(json!({"event": "unreachable", "peer": id_to_hex(id)}));
    }
    fn report_snapshot(&self, id: u64, status: SnapshotStatus) {
        let status = match status {
            SnapshotStatus::Finish => "finish",
            SnapshotStatus::Failure => "failure",
        };
        event(json!({"event": "snapshot", "peer": id_to_hex(id), "status": status}));
    }
}

/// Runs the endpoint; returns only on a start-up error.
pub fn run(args: &PeerArgs) -> Result<(), String> {
    let mut cfg = Config::new(args.id, args.cluster_id);
    cfg.listen = args.listen.clone();
    cfg.socket = args.socket.options();
    cfg.advertise_urls = if args.advertise.is_empty() {
        args.listen.iter().map(|a| format!("http://{a}")).collect()
    } else {
        args.advertise.clone()
    };
    cfg.versions = LocalVersions {
        server: args.server_version.clone(),
        min_cluster: args.min_cluster_version.clone(),
    };
    cfg.profile = match args.profile {
        ProfileArg::Etcd3 => Profile::Etcd3,
        ProfileArg::Etcd21 => Profile::Etcd21,
    };
    cfg.io = args.io;
    let printer = Arc::new(Printer {
        removed: args.removed.iter().copied().collect(),
        out: Mutex::new(std::io::stdout()),
    });
    let transport = Arc::new(Transport::start(cfg, printer).map_err(|e| e.to_string())?);
    for (id, urls) in &args.peers {
        transport.add_peer(*id, urls).map_err(|e| e.to_string())?;
    }
    event(json!({
        "event": "started",
        "id": id_to_hex(args.id),
        "io": transport.backend().name(),
        "listen": transport.local_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    }));
    if let Some(errors) = transport.take_errors() {
        std::thread::spawn(move || {
            while let Ok(e) = errors.recv() {
                event(json!({"event": "error", "error": e.to_string()}));
            }
        });
    }
    let watcher = transport.clone();
    std::thread::spawn(move || {
        let mut last: HashMap<u64, bool> = HashMap::new();
        loop {
            for p in watcher.stats().peers {
                if last.insert(p.id, p.active) != Some(p.active) {
                    let kind = if p.active { "active" } else { "inactive" };
                    event(json!({"event": kind, "peer": id_to_hex(p.id)}));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match MessageJson::parse_line(&line) {
            Ok(m) => transport.send_message(m),
            Err(e) => {
                event(json!({"event": "error", "error": format!("stdin line {}: {e}", n + 1)}))
            }
        }
    }
    // Standard input is done; keep serving until killed.
    loop {
        std::thread::park();
    }
}
