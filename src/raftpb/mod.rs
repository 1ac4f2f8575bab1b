//! raftpb: the raft protobuf messages that rafthttp carries (spec §2.1–2.2).
//!
//! Encoding is etcd 3.4's gogoproto output byte for byte; decoding accepts the v3.6
//! (`go.etcd.io/raft` v3.6) and protobuf-go (v3.7+) encodings too. Decoding from a
//! [`bytes::Bytes`] buffer slices entry data and contexts out of it without copying.

mod messages;
mod types;

pub use messages::{
    ConfChange, ConfChangeSingle, ConfChangeV2, ConfState, Entry, HardState, Message, Snapshot,
    SnapshotMetadata,
};
pub use types::{
    entry_type_name, message_type_name, ConfChangeTransition, ConfChangeType, EntryType,
    MessageType,
};

impl Message {
    /// The link heartbeat that stream writers send to keep a connection alive:
    /// `Message{Type: MsgHeartbeat}` with everything else zero.
    pub fn link_heartbeat() -> Message {
        Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            ..Default::default()
        }
    }

    /// Whether this is a link heartbeat (etcd's `isLinkHeartbeatMessage`): a MsgHeartbeat
    /// with `from` and `to` both zero. Receivers drop these before raft sees them.
    pub fn is_link_heartbeat(&self) -> bool {
        self.msg_type == MessageType::MsgHeartbeat as i32 && self.from == 0 && self.to == 0
    }

    /// The known [`MessageType`], or `None` when the number is one this crate lacks.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_i32(self.msg_type)
    }
}

impl Snapshot {
    /// Whether the snapshot is empty, i.e. absent in etcd's sense (`IsEmptySnap`: index 0).
    /// Absent (v3.6+) and empty (v3.4) snapshots decode to the same value.
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}
