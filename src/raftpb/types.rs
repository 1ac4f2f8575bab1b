//! raftpb's enumerations, with etcd's names. The message fields hold plain `i32` so that
//! numbers this crate does not know survive a round trip; these enums name the known ones.

/// Declares a `#[repr(i32)]` enum with etcd's names and lookups both ways.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:expr,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $num,)+
        }

        impl $name {
            /// Every known value, in number order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The known value with this number, if any.
            pub fn from_i32(n: i32) -> Option<Self> {
                match n {
                    $($num => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// etcd's name for this value, e.g. `MsgApp`.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }

            /// The value etcd calls `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $(stringify!($variant) => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                v as i32
            }
        }
    };
}

named_enum! {
    /// The kind of a raft [`Message`](super::Message) (field 1).
    MessageType {
        /// Local: start an election.
        MsgHup = 0,
        /// Local: leader should send heartbeats.
        MsgBeat = 1,
        /// A proposal, forwarded to the leader.
        MsgProp = 2,
        /// Append entries.
        MsgApp = 3,
        /// Answer to MsgApp.
        MsgAppResp = 4,
        /// Request a vote.
        MsgVote = 5,
        /// Answer to MsgVote.
        MsgVoteResp = 6,
        /// Install a snapshot.
        MsgSnap = 7,
        /// Leader heartbeat.
        MsgHeartbeat = 8,
        /// Answer to MsgHeartbeat.
        MsgHeartbeatResp = 9,
        /// Local: a peer is unreachable.
        MsgUnreachable = 10,
        /// Local: snapshot status report.
        MsgSnapStatus = 11,
        /// Local: leader checks its quorum (v2.3).
        MsgCheckQuorum = 12,
        /// Ask the leader to transfer leadership (v3.0).
        MsgTransferLeader = 13,
        /// Tell the target to campaign at once (v3.0).
        MsgTimeoutNow = 14,
        /// Linearizable read request (v3.1).
        MsgReadIndex = 15,
        /// Answer to MsgReadIndex.
        MsgReadIndexResp = 16,
        /// Pre-vote request (v3.1).
        MsgPreVote = 17,
        /// Answer to MsgPreVote.
        MsgPreVoteResp = 18,
        /// Local storage (raft v3.6).
        MsgStorageAppend = 19,
        /// Local storage (raft v3.6).
        MsgStorageAppendResp = 20,
        /// Local storage (raft v3.6).
        MsgStorageApply = 21,
        /// Local storage (raft v3.6).
        MsgStorageApplyResp = 22,
        /// Forget the current leader (raft v3.6).
        MsgForgetLeader = 23,
    }
}

named_enum! {
    /// The kind of a raft [`Entry`](super::Entry) (field 1).
    EntryType {
        /// Application data.
        EntryNormal = 0,
        /// A [`ConfChange`](super::ConfChange).
        EntryConfChange = 1,
        /// A [`ConfChangeV2`](super::ConfChangeV2) (v3.4).
        EntryConfChangeV2 = 2,
    }
}

named_enum! {
    /// etcd's membership change kinds. raft-rs numbers some of these differently, so
    /// conversions must go through the names, never the numbers.
    ConfChangeType {
        /// Add a voter.
        ConfChangeAddNode = 0,
        /// Remove a member.
        ConfChangeRemoveNode = 1,
        /// Update a member's attributes.
        ConfChangeUpdateNode = 2,
        /// Add a learner (v3.3).
        ConfChangeAddLearnerNode = 3,
    }
}

named_enum! {
    /// How a [`ConfChangeV2`](super::ConfChangeV2) enters and leaves joint consensus.
    ConfChangeTransition {
        /// Raft picks.
        ConfChangeTransitionAuto = 0,
        /// Joint, left automatically.
        ConfChangeTransitionJointImplicit = 1,
        /// Joint, left by an explicit empty change.
        ConfChangeTransitionJointExplicit = 2,
    }
}

/// etcd's name for a message type number, or `None` for a number it does not define.
pub fn message_type_name(n: i32) -> Option<&'static str> {
    MessageType::from_i32(n).map(MessageType::name)
}

/// etcd's name for an entry type number, or `None` for a number it does not define.
pub fn entry_type_name(n: i32) -> Option<&'static str> {
    EntryType::from_i32(n).map(EntryType::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_every_known_value() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_name(t.name()), Some(*t));
            assert_eq!(MessageType::from_i32(*t as i32), Some(*t));
        }
        for t in EntryType::ALL {
            assert_eq!(EntryType::from_name(t.name()), Some(*t));
        }
        assert_eq!(MessageType::ALL.len(), 24);
        assert_eq!(message_type_name(24), None);
        assert_eq!(message_type_name(-1), None);
        assert_eq!(entry_type_name(2), Some("EntryConfChangeV2"));
    }
}
