//! The raftpb protobuf messages, as etcd 3.4 declares them (`raft/raftpb/raft.proto`).
//!
//! Every field etcd marks `nullable=false` is declared `required` here, which makes prost
//! write it even when it is zero: that is gogoproto's "era A" encoding, byte for byte
//! (spec §2.2). Nullable bytes are `Option<Bytes>`: `None` is omitted, `Some(empty)` is
//! written as tag + `00`. Decoding accepts every era, because prost reads fields in any
//! order, treats missing ones as zero and skips unknown ones. Enumerations are kept as
//! open `i32` so that an unknown number survives a decode/encode round trip.

use bytes::Bytes;

/// One raft log entry.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Entry {
    /// [`EntryType`](super::EntryType) number (open: unknown values are kept).
    #[prost(int32, required, tag = "1")]
    pub entry_type: i32,
    /// The term the entry was proposed in.
    #[prost(uint64, required, tag = "2")]
    pub term: u64,
    /// The entry's log index.
    #[prost(uint64, required, tag = "3")]
    pub index: u64,
    /// The payload; `None` (omitted on the wire) differs from `Some(empty)`.
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub data: Option<Bytes>,
}

/// The cluster membership a snapshot was taken at (etcd 3.4 layout).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfState {
    /// Voting members (in v3.2 and earlier this field was called `nodes`).
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub voters: Vec<u64>,
    /// Non-voting learners.
    #[prost(uint64, repeated, packed = "false", tag = "2")]
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration in a joint consensus.
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub voters_outgoing: Vec<u64>,
    /// Learners that become members once the joint configuration is left.
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub learners_next: Vec<u64>,
    /// Whether the joint configuration is left automatically.
    #[prost(bool, required, tag = "5")]
    pub auto_leave: bool,
}

/// Where a snapshot sits in the log, and the membership at that point.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SnapshotMetadata {
    /// Membership at the snapshot's index.
    #[prost(message, required, tag = "1")]
    pub conf_state: ConfState,
    /// The last index the snapshot covers.
    #[prost(uint64, required, tag = "2")]
    pub index: u64,
    /// The term of that index.
    #[prost(uint64, required, tag = "3")]
    pub term: u64,
}

/// A raft snapshot. In etcd v3 `data` holds the v2 store, and the database travels after
/// the envelope on `POST /raft/snapshot`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Snapshot {
    /// The application's snapshot bytes, if any.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub data: Option<Bytes>,
    /// Index, term and membership.
    #[prost(message, required, tag = "2")]
    pub metadata: SnapshotMetadata,
}

/// A raft message: what every rafthttp channel carries.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Message {
    /// [`MessageType`](super::MessageType) number (open: unknown values are kept).
    #[prost(int32, required, tag = "1")]
    pub msg_type: i32,
    /// Recipient member ID.
    #[prost(uint64, required, tag = "2")]
    pub to: u64,
    /// Sender member ID.
    #[prost(uint64, required, tag = "3")]
    pub from: u64,
    /// The sender's current term.
    #[prost(uint64, required, tag = "4")]
    pub term: u64,
    /// The term of the entry at `index` (MsgApp), or the candidate's last log term (votes).
    #[prost(uint64, required, tag = "5")]
    pub log_term: u64,
    /// The log index this message refers to.
    #[prost(uint64, required, tag = "6")]
    pub index: u64,
    /// Entries to append.
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    #[prost(uint64, required, tag = "8")]
    pub commit: u64,
    /// Snapshot (MsgSnap); always written, empty when unused, as etcd 3.4 does.
    #[prost(message, required, tag = "9")]
    pub snapshot: Snapshot,
    /// Whether an append or vote was rejected.
    #[prost(bool, required, tag = "10")]
    pub reject: bool,
    /// The follower's hint for where the leader should probe next.
    #[prost(uint64, required, tag = "11")]
    pub reject_hint: u64,
    /// Opaque context, e.g. ReadIndex request IDs (etcd v3.1+).
    #[prost(bytes = "bytes", optional, tag = "12")]
    pub context: Option<Bytes>,
    /// raft v3.6 local-storage field; written only when a decoded message had it.
    #[prost(uint64, optional, tag = "13")]
    pub vote: Option<u64>,
    /// raft v3.6 local-storage responses; never sent by etcd over the network.
    #[prost(message, repeated, tag = "14")]
    pub responses: Vec<Message>,
}

/// The persistent raft state.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HardState {
    /// Current term.
    #[prost(uint64, required, tag = "1")]
    pub term: u64,
    /// Who we voted for in `term`.
    #[prost(uint64, required, tag = "2")]
    pub vote: u64,
    /// Highest known committed index.
    #[prost(uint64, required, tag = "3")]
    pub commit: u64,
}

/// A single membership change (carried inside an `EntryConfChange` entry's data).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfChange {
    /// Request ID chosen by the proposer.
    #[prost(uint64, required, tag = "1")]
    pub id: u64,
    /// [`ConfChangeType`](super::ConfChangeType) number.
    #[prost(int32, required, tag = "2")]
    pub change_type: i32,
    /// The member the change is about.
    #[prost(uint64, required, tag = "3")]
    pub node_id: u64,
    /// Application context (etcd puts the member's JSON here).
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub context: Option<Bytes>,
}

/// One change inside a [`ConfChangeV2`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfChangeSingle {
    /// [`ConfChangeType`](super::ConfChangeType) number.
    #[prost(int32, required, tag = "1")]
    pub change_type: i32,
    /// The member the change is about.
    #[prost(uint64, required, tag = "2")]
    pub node_id: u64,
}

/// A joint-consensus membership change (etcd v3.4+, `EntryConfChangeV2`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfChangeV2 {
    /// [`ConfChangeTransition`](super::ConfChangeTransition) number.
    #[prost(int32, required, tag = "1")]
    pub transition: i32,
    /// The changes, applied together.
    #[prost(message, repeated, tag = "2")]
    pub changes: Vec<ConfChangeSingle>,
    /// Application context.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub context: Option<Bytes>,
}
