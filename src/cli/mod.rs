//! The `rafthttp` command line.

pub mod bench;
pub mod decode;
pub mod demo;
pub mod etcd_member;
pub mod peer;

use clap::{Args, Parser, Subcommand};
use rafthttp::io::{CongestionName, SocketOptions};

/// rafthttp: etcd's Raft HTTP transport, and tools for it.
#[derive(Debug, Parser)]
#[command(name = "rafthttp", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a raft-rs cluster over rafthttp on loopback: replicate, fail over, catch up.
    Demo(demo::DemoArgs),
    /// Decode rafthttp stream, pipeline or snapshot bytes into JSON lines, one per frame.
    Decode(decode::DecodeArgs),
    /// Measure the transport on the Go anchor's workloads (two members on loopback).
    Bench(bench::BenchArgs),
    /// Run one standalone rafthttp endpoint: send JSON lines from stdin, print what
    /// arrives on stdout and peer events on stderr.
    Peer(peer::PeerArgs),
    /// Join a real etcd 3.4 cluster as a raft-rs member (in-memory, NOT durable), with
    /// etcd's own flags.
    EtcdMember(etcd_member::EtcdMemberArgs),
}

/// The transport's socket options, as flags (shared by the commands that start one).
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct SocketArgs {
    /// TCP congestion control for the transport's connections (e.g. cubic). Unset: the
    /// system's, as etcd, the Go anchor and iperf3 use. On loopback, BBR's pacing caps a
    /// stream (docs/performance.md; `perf/compare.sh` can change it for all sides with
    /// TCP_CC).
    #[arg(long, value_name = "NAME")]
    pub tcp_congestion: Option<CongestionName>,
}

impl SocketArgs {
    /// The options the flags ask for.
    pub fn options(&self) -> SocketOptions {
        SocketOptions {
            congestion: self.tcp_congestion,
        }
    }
}

/// Parses a member or cluster ID in etcd's hex form, for flags.
pub fn parse_hex_id(s: &str) -> Result<u64, String> {
    rafthttp::json::id_from_hex(s).ok_or_else(|| format!("{s:?} is not a hex member ID"))
}
