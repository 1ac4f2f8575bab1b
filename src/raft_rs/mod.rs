//! Running raft-rs (crate `raft`) over rafthttp: conversions between our [`raftpb`]
//! messages and raft-rs's `eraftpb` ([`convert`]), the translation of etcd's
//! configuration changes into raft-rs's numbering ([`conf_change`]), the [`Inbox`] that
//! hands received messages to a raft loop, and a ready-loop [`node`] driver used by
//! `rafthttp demo` and `rafthttp etcd-member`.
//!
//! [`raftpb`]: crate::raftpb

pub mod conf_change;
pub mod convert;
pub mod inbox;
pub mod logger;
pub mod node;

pub use conf_change::{conf_change_from_etcd, ConfChangeError};
pub use convert::{message_from_raft_rs, message_to_raft_rs, ConvertError};
pub use inbox::{Inbox, Input};
pub use node::{NodeOptions, NodeStatus, RaftNode, Role};
