//! [`raftpb::Message`](crate::raftpb::Message) ⇄ raft-rs `eraftpb::Message`.
//!
//! Message and entry types are mapped by name, never by number, though today's numbers
//! agree. Entry data and contexts are `Bytes` on both sides and move without copying.
//! etcd has no field for raft-rs's `commit_term`, `priority` and `request_snapshot`;
//! they are dropped on the way out and zero on the way in.

use bytes::Bytes;
use raft::eraftpb;

use crate::raftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

/// A message raft-rs cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A message type raft-rs lacks (etcd 3.6's storage messages, unknown numbers).
    #[error("message type {0} has no raft-rs equivalent")]
    MessageType(i32),
    /// An entry type raft-rs lacks.
    #[error("entry type {0} has no raft-rs equivalent")]
    EntryType(i32),
}

fn message_type_to_raft_rs(t: i32) -> Result<eraftpb::MessageType, ConvertError> {
    use eraftpb::MessageType as R;
    use MessageType as E;
    Ok(match E::from_i32(t).ok_or(ConvertError::MessageType(t))? {
        E::MsgHup => R::MsgHup,
        E::MsgBeat => R::MsgBeat,
        E::MsgProp => R::MsgPropose,
        E::MsgApp => R::MsgAppend,
        E::MsgAppResp => R::MsgAppendResponse,
        E::MsgVote => R::MsgRequestVote,
        E::MsgVoteResp => R::MsgRequestVoteResponse,
        E::MsgSnap => R::MsgSnapshot,
        E::MsgHeartbeat => R::MsgHeartbeat,
        E::MsgHeartbeatResp => R::MsgHeartbeatResponse,
        E::MsgUnreachable => R::MsgUnreachable,
        E::MsgSnapStatus => R::MsgSnapStatus,
        E::MsgCheckQuorum => R::MsgCheckQuorum,
        E::MsgTransferLeader => R::MsgTransferLeader,
        E::MsgTimeoutNow => R::MsgTimeoutNow,
        E::MsgReadIndex => R::MsgReadIndex,
        E::MsgReadIndexResp => R::MsgReadIndexResp,
        E::MsgPreVote => R::MsgRequestPreVote,
        E::MsgPreVoteResp => R::MsgRequestPreVoteResponse,
        E::MsgStorageAppend
        | E::MsgStorageAppendResp
        | E::MsgStorageApply
        | E::MsgStorageApplyResp
        | E::MsgForgetLeader => return Err(ConvertError::MessageType(t)),
    })
}

fn message_type_from_raft_rs(t: eraftpb::MessageType) -> MessageType {
    use eraftpb::MessageType as R;
    use MessageType as E;
    match t {
        R::MsgHup => E::MsgHup,
        R::MsgBeat => E::MsgBeat,
        R::MsgPropose => E::MsgProp,
        R::MsgAppend => E::MsgApp,
        R::MsgAppendResponse => E::MsgAppResp,
        R::MsgRequestVote => E::MsgVote,
        R::MsgRequestVoteResponse => E::MsgVoteResp,
        R::MsgSnapshot => E::MsgSnap,
        R::MsgHeartbeat => E::MsgHeartbeat,
        R::MsgHeartbeatResponse => E::MsgHeartbeatResp,
        R::MsgUnreachable => E::MsgUnreachable,
        R::MsgSnapStatus => E::MsgSnapStatus,
        R::MsgCheckQuorum => E::MsgCheckQuorum,
        R::MsgTransferLeader => E::MsgTransferLeader,
        R::MsgTimeoutNow => E::MsgTimeoutNow,
        R::MsgReadIndex => E::MsgReadIndex,
        R::MsgReadIndexResp => E::MsgReadIndexResp,
        R::MsgRequestPreVote => E::MsgPreVote,
        R::MsgRequestPreVoteResponse => E::MsgPreVoteResp,
    }
}

fn entry_type_to_raft_rs(t: i32) -> Result<eraftpb::EntryType, ConvertError> {
    Ok(
        match EntryType::from_i32(t).ok_or(ConvertError::EntryType(t))? {
            EntryType::EntryNormal => eraftpb::EntryType::EntryNormal,
            EntryType::EntryConfChange => eraftpb::EntryType::EntryConfChange,
            EntryType::EntryConfChangeV2 => eraftpb::EntryType::EntryConfChangeV2,
        },
    )
}

fn entry_type_from_raft_rs(t: eraftpb::EntryType) -> EntryType {
    match t {
        eraftpb::EntryType::EntryNormal => EntryType::EntryNormal,
        eraftpb::EntryType::EntryConfChange => EntryType::EntryConfChange,
        eraftpb::EntryType::EntryConfChangeV2 => EntryType::EntryConfChangeV2,
    }
}

/// An entry for raft-rs. The data (an etcd request, or an etcd-encoded ConfChange) is
/// carried unchanged: it is replicated to etcd members, which must read it as they
/// wrote it. ConfChanges are translated only when applied ([`conf_change_from_etcd`]).
///
/// [`conf_change_from_etcd`]: super::conf_change_from_etcd
pub fn entry_to_raft_rs(e: Entry) -> Result<eraftpb::Entry, ConvertError> {
    Ok(eraftpb::Entry {
        entry_type: entry_type_to_raft_rs(e.entry_type)?,
        term: e.term,
        index: e.index,
        data: e.data.unwrap_or_default(),
        ..Default::default()
    })
}

/// An entry from raft-rs (empty data is written as absent, as etcd writes a nil slice).
pub fn entry_from_raft_rs(e: eraftpb::Entry) -> Entry {
    Entry {
        entry_type: entry_type_from_raft_rs(e.entry_type) as i32,
        term: e.term,
        index: e.index,
        data: non_empty(e.data),
    }
}

fn non_empty(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

fn conf_state_to_raft_rs(c: ConfState) -> eraftpb::ConfState {
    eraftpb::ConfState {
        voters: c.voters,
        learners: c.learners,
        voters_outgoing: c.voters_outgoing,
        learners_next: c.learners_next,
        auto_leave: c.auto_leave,
        ..Default::default()
    }
}

fn conf_state_from_raft_rs(c: eraftpb::ConfState) -> ConfState {
    ConfState {
        voters: c.voters,
        learners: c.learners,
        voters_outgoing: c.voters_outgoing,
        learners_next: c.learners_next,
        auto_leave: c.auto_leave,
    }
}

/// A snapshot for raft-rs.
pub fn snapshot_to_raft_rs(s: Snapshot) -> eraftpb::Snapshot {
    let mut md = eraftpb::SnapshotMetadata {
        index: s.metadata.index,
        term: s.metadata.term,
        ..Default::default()
    };
    md.set_conf_state(conf_state_to_raft_rs(s.metadata.conf_state));
    let mut r = eraftpb::Snapshot {
        data: s.data.unwrap_or_default(),
        ..Default::default()
    };
    r.set_metadata(md);
    r
}

/// A snapshot from raft-rs.
pub fn snapshot_from_raft_rs(mut s: eraftpb::Snapshot) -> Snapshot {
    let mut md = s.take_metadata();
    Snapshot {
        data: non_empty(std::mem::take(&mut s.data)),
        metadata: SnapshotMetadata {
            conf_state: conf_state_from_raft_rs(md.take_conf_state()),
            index: md.index,
            term: md.term,
        },
    }
}

/// A received message, for `RawNode::step`.
pub fn message_to_raft_rs(m: Message) -> Result<eraftpb::Message, ConvertError> {
    let entries = m
        .entries
        .into_iter()
        .map(entry_to_raft_rs)
        .collect::<Result<Vec<_>, _>>()?;
    let mut r = eraftpb::Message {
        msg_type: message_type_to_raft_rs(m.msg_type)?,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        commit: m.commit,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.unwrap_or_default(),
        entries: entries.into(),
        ..Default::default()
    };
    if !m.snapshot.is_default() {
        r.set_snapshot(snapshot_to_raft_rs(m.snapshot));
    }
    Ok(r)
}

/// A message raft-rs produced, for [`Transport::send_message`].
///
/// [`Transport::send_message`]: crate::transport::Transport::send_message
pub fn message_from_raft_rs(mut m: eraftpb::Message) -> Message {
    let snapshot = if m.has_snapshot() {
        snapshot_from_raft_rs(m.take_snapshot())
    } else {
        Snapshot::default()
    };
    Message {
        msg_type: message_type_from_raft_rs(m.msg_type) as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m
            .entries
            .into_vec()
            .into_iter()
            .map(entry_from_raft_rs)
            .collect(),
        commit: m.commit,
        snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: non_empty(std::mem::take(&mut m.context)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_message_type_maps_by_name() {
        for &t in MessageType::ALL {
            match message_type_to_raft_rs(t as i32) {
                Ok(r) => {
                    assert_eq!(message_type_from_raft_rs(r), t);
                    // raft-rs calls some of them differently; the names still agree in meaning.
                    assert_eq!(r as i32, t as i32, "{t:?}");
                }
                Err(e) => assert!(t as i32 >= 19, "{t:?}: {e}"),
            }
        }
        assert_eq!(
            message_type_to_raft_rs(99),
            Err(ConvertError::MessageType(99))
        );
    }

    #[test]
    fn messages_round_trip_without_copying_data() {
        let data = Bytes::from_static(b"payload");
        let m = Message {
            msg_type: MessageType::MsgApp as i32,
            to: 2,
            from: 1,
            term: 5,
            log_term: 4,
            index: 10,
            commit: 9,
            entries: vec![
                Entry {
                    entry_type: 0,
                    term: 5,
                    index: 11,
                    data: Some(data.clone()),
                },
                Entry {
                    entry_type: 1,
                    term: 5,
                    index: 12,
                    data: None,
                },
            ],
            reject: true,
            reject_hint: 3,
            context: Some(Bytes::from_static(b"ctx")),
            snapshot: Snapshot {
                data: Some(Bytes::from_static(b"db")),
                metadata: SnapshotMetadata {
                    index: 7,
                    term: 2,
                    conf_state: ConfState {
                        voters: vec![1, 2, 3],
                        learners: vec![4],
                        ..Default::default()
                    },
                },
            },
            ..Default::default()
        };
        let r = message_to_raft_rs(m.clone()).unwrap();
        assert_eq!(r.entries[0].data.as_ptr(), data.as_ptr());
        assert_eq!(
            r.get_snapshot().get_metadata().get_conf_state().voters,
            vec![1, 2, 3]
        );
        assert_eq!(message_from_raft_rs(r), m);
    }

    #[test]
    fn unknown_entry_type_is_an_error() {
        let m = Message {
            msg_type: MessageType::MsgApp as i32,
            entries: vec![Entry {
                entry_type: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(message_to_raft_rs(m), Err(ConvertError::EntryType(7)));
    }
}
