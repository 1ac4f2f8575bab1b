//! A raft-rs ready loop over rafthttp: one thread owns the `RawNode` and its in-memory
//! storage, ticks it, steps what the [`Inbox`](super::Inbox) queued, sends what raft
//! produced through the [`Transport`], and hands committed entries to the application.
//!
//! Storage is raft-rs's `MemStorage`: **nothing is durable**; a restarted node has lost
//! its log and its vote, which a real deployment must never allow.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb;
use raft::prelude::ConfState;
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use super::conf_change::conf_change_from_etcd;
use super::convert::message_from_raft_rs;
use super::inbox::Input;
use crate::raftpb::EntryType;
use crate::transport::{SnapshotStatus, Transport};

/// Settings of a node; the defaults are etcd's (100 ms ticks, a 1 s election timeout,
/// CheckQuorum on, PreVote off, 1 MiB per append, 512 appends in flight).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Our ID.
    pub id: u64,
    /// The voters at start (us included).
    pub voters: Vec<u64>,
    /// Tick period.
    pub tick: Duration,
    /// Ticks without a leader before campaigning.
    pub election_tick: usize,
    /// Ticks between heartbeats.
    pub heartbeat_tick: usize,
    /// Step down when a quorum is not heard from.
    pub check_quorum: bool,
    /// Pre-vote before campaigning.
    pub pre_vote: bool,
    /// Largest append, in bytes.
    pub max_size_per_msg: u64,
    /// Appends in flight per follower.
    pub max_inflight_msgs: usize,
}

impl NodeOptions {
    /// etcd's defaults for member `id` of `voters`.
    pub fn new(id: u64, voters: Vec<u64>) -> NodeOptions {
        NodeOptions {
            id,
            voters,
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: false,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 512,
        }
    }
}

/// A node's raft role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    /// Follower.
    #[default]
    Follower,
    /// Candidate.
    Candidate,
    /// Pre-candidate.
    PreCandidate,
    /// Leader.
    Leader,
}

/// What a node looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// Our ID.
    pub id: u64,
    /// The leader we know of (0: none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Role.
    pub role: Role,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// raft-rs refused the configuration.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// A raft-rs node with in-memory storage.
pub struct RaftNode {
    raw: RawNode<MemStorage>,
    storage: MemStorage,
    tick: Duration,
    status: Arc<Mutex<NodeStatus>>,
}

impl RaftNode {
    /// A node with an empty log and `opts.voters` as its configuration; it is filled by
    /// the leader (from index 0, as etcd backfills a member that has nothing).
    pub fn new(opts: &NodeOptions) -> Result<RaftNode, NodeError> {
        let cfg = raft::Config {
            id: opts.id,
            election_tick: opts.election_tick,
            heartbeat_tick: opts.heartbeat_tick,
            check_quorum: opts.check_quorum,
            pre_vote: opts.pre_vote,
            max_size_per_msg: opts.max_size_per_msg,
            max_inflight_msgs: opts.max_inflight_msgs,
            ..Default::default()
        };
        cfg.validate()?;
        let storage =
            MemStorage::new_with_conf_state(ConfState::from((opts.voters.clone(), vec![])));
        let raw = RawNode::new(&cfg, storage.clone(), &super::logger::logger())?;
        Ok(RaftNode {
            raw,
            storage,
            tick: opts.tick,
            status: Arc::new(Mutex::new(NodeStatus {
                id: opts.id,
                ..Default::default()
            })),
        })
    }

    /// The status, updated by [`run`](Self::run) after every ready.
    pub fn status(&self) -> Arc<Mutex<NodeStatus>> {
        self.status.clone()
    }

    /// Runs until [`Input::Stop`] or until every sender is gone. `apply` sees each
    /// committed entry, in order, after configuration changes have been applied to raft.
    pub fn run(
        &mut self,
        inputs: &Receiver<Input>,
        transport: &Transport,
        apply: &mut dyn FnMut(&eraftpb::Entry, &NodeStatus),
    ) {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(wait) {
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => {
                    self.input(input);
                    // Drain what else is queued before one ready: batches appends.
                    while let Ok(input) = inputs.try_recv() {
                        if matches!(input, Input::Stop) {
                            return;
                        }
                        self.input(input);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += self.tick;
                // After a stall (the process was stopped), tick once, not a burst.
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
            }
            if self.raw.has_ready() {
                self.ready(transport, apply);
            }
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Message(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft step");
                }
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::Snapshot(id, status) => self.raw.report_snapshot(
                id,
                match status {
                    SnapshotStatus::Finish => raft::SnapshotStatus::Finish,
                    SnapshotStatus::Failure => raft::SnapshotStatus::Failure,
                },
            ),
            Input::Propose(data) => {
                if let Err(e) = self.raw.propose(vec![], data.to_vec()) {
                    tracing::debug!(error = %e, "proposal dropped");
                }
            }
            Input::TransferLeader(id) => self.raw.transfer_leader(id),
            Input::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::debug!(error = %e, "campaign");
                }
            }
            Input::Stop => {}
        }
    }

    fn send(transport: &Transport, msgs: Vec<eraftpb::Message>) {
        for m in msgs {
            transport.send_message(message_from_raft_rs(m));
        }
    }

    fn ready(
        &mut self,
        transport: &Transport,
        apply: &mut dyn FnMut(&eraftpb::Entry, &NodeStatus),
    ) {
        let mut ready = self.raw.ready();
        Self::send(transport, ready.take_messages());
        if !ready.snapshot().is_empty() {
            // An etcd leader's snapshot carries its bolt database, which this node cannot
            // use; raft's log position still moves to it.
            tracing::warn!(
                index = ready.snapshot().get_metadata().index,
                "applied a raft snapshot (its data is ignored)"
            );
            if let Err(e) = self.storage.wl().apply_snapshot(ready.snapshot().clone()) {
                tracing::error!(error = %e, "apply snapshot");
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, apply);
        if !ready.entries().is_empty() {
            if let Err(e) = self.storage.wl().append(ready.entries()) {
                tracing::error!(error = %e, "append to memory storage");
            }
        }
        if let Some(hs) = ready.hs() {
            self.storage.wl().set_hardstate(hs.clone());
        }
        Self::send(transport, ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.wl().mut_hard_state().commit = commit;
        }
        Self::send(transport, light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, apply);
        self.raw.advance_apply();
        self.publish_status();
    }

    fn apply_entries(
        &mut self,
        entries: Vec<eraftpb::Entry>,
        apply: &mut dyn FnMut(&eraftpb::Entry, &NodeStatus),
    ) {
        if entries.is_empty() {
            return;
        }
        for e in &entries {
            let kind = match e.entry_type {
                eraftpb::EntryType::EntryNormal => EntryType::EntryNormal,
                eraftpb::EntryType::EntryConfChange => EntryType::EntryConfChange,
                eraftpb::EntryType::EntryConfChangeV2 => EntryType::EntryConfChangeV2,
            };
            match conf_change_from_etcd(kind, &e.data) {
                Ok(Some(cc)) => match self.raw.apply_conf_change(&cc) {
                    Ok(cs) => {
                        self.storage.wl().set_conf_state(cs);
                    }
                    Err(err) => {
                        tracing::warn!(index = e.index, error = %err, "configuration change not applied")
                    }
                },
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(index = e.index, error = %err, "configuration change not applied")
                }
            }
            let status = self.snapshot_status(e.index);
            apply(e, &status);
        }
    }

    fn snapshot_status(&self, applied: u64) -> NodeStatus {
        let r = &self.raw.raft;
        NodeStatus {
            id: r.id,
            leader: r.leader_id,
            term: r.term,
            role: match r.state {
                StateRole::Follower => Role::Follower,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Leader => Role::Leader,
            },
            commit: r.raft_log.committed,
            applied,
            last_index: r.raft_log.last_index(),
        }
    }

    fn publish_status(&self) {
        let s = self.snapshot_status(self.raw.raft.raft_log.applied);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}
