//! etcd's configuration changes, as raft-rs must apply them.
//!
//! etcd numbers `ConfChangeAddLearnerNode` 3 and has `ConfChangeUpdateNode` (2), which
//! changes no voting configuration; raft-rs numbers `AddLearnerNode` 2 and has no update.
//! Passing the numbers through would turn etcd's "update m1's URLs" into raft-rs's "make
//! m1 a learner". So the entries stay as etcd wrote them in the log (etcd members read
//! them back) and are translated, by name, only for `RawNode::apply_conf_change`.

use prost::Message as _;
use raft::eraftpb;

use crate::raftpb::{ConfChange, ConfChangeTransition, ConfChangeType, ConfChangeV2, EntryType};

/// A configuration-change entry that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// The entry data is not a ConfChange.
    #[error("undecodable {kind}: {error}")]
    Decode {
        /// ConfChange or ConfChangeV2.
        kind: &'static str,
        /// The decoder's message.
        error: String,
    },
    /// A change type neither etcd nor raft-rs knows.
    #[error("unknown ConfChangeType {0}")]
    Type(i32),
    /// An unknown joint-consensus transition.
    #[error("unknown ConfChangeTransition {0}")]
    Transition(i32),
}

/// The raft-rs change for one etcd change; `None` for `ConfChangeUpdateNode`, which
/// changes attributes only.
fn single(
    change_type: i32,
    node_id: u64,
) -> Result<Option<eraftpb::ConfChangeSingle>, ConfChangeError> {
    let t = match ConfChangeType::from_i32(change_type).ok_or(ConfChangeError::Type(change_type))? {
        ConfChangeType::ConfChangeAddNode => eraftpb::ConfChangeType::AddNode,
        ConfChangeType::ConfChangeRemoveNode => eraftpb::ConfChangeType::RemoveNode,
        ConfChangeType::ConfChangeAddLearnerNode => eraftpb::ConfChangeType::AddLearnerNode,
        ConfChangeType::ConfChangeUpdateNode => return Ok(None),
    };
    Ok(Some(eraftpb::ConfChangeSingle {
        change_type: t,
        node_id,
        ..Default::default()
    }))
}

/// Translates the data of a committed `EntryConfChange` or `EntryConfChangeV2`, as etcd
/// encoded it, into the change raft-rs should apply. `Ok(None)`: nothing for raft to
/// apply (an update, or not a configuration entry); advance past it.
pub fn conf_change_from_etcd(
    entry_type: EntryType,
    data: &[u8],
) -> Result<Option<eraftpb::ConfChangeV2>, ConfChangeError> {
    let mut out = eraftpb::ConfChangeV2::default();
    match entry_type {
        EntryType::EntryNormal => return Ok(None),
        EntryType::EntryConfChange => {
            let cc = ConfChange::decode(data).map_err(|e| ConfChangeError::Decode {
                kind: "ConfChange",
                error: e.to_string(),
            })?;
            match single(cc.change_type, cc.node_id)? {
                Some(s) => out.changes.push(s),
                None => return Ok(None),
            }
            out.context = cc.context.unwrap_or_default();
        }
        EntryType::EntryConfChangeV2 => {
            let cc = ConfChangeV2::decode(data).map_err(|e| ConfChangeError::Decode {
                kind: "ConfChangeV2",
                error: e.to_string(),
            })?;
            out.transition = match ConfChangeTransition::from_i32(cc.transition)
                .ok_or(ConfChangeError::Transition(cc.transition))?
            {
                ConfChangeTransition::ConfChangeTransitionAuto => {
                    eraftpb::ConfChangeTransition::Auto
                }
                ConfChangeTransition::ConfChangeTransitionJointImplicit => {
                    eraftpb::ConfChangeTransition::Implicit
                }
                ConfChangeTransition::ConfChangeTransitionJointExplicit => {
                    eraftpb::ConfChangeTransition::Explicit
                }
            };
            let had_changes = !cc.changes.is_empty();
            for c in cc.changes {
                if let Some(s) = single(c.change_type, c.node_id)? {
                    out.changes.push(s);
                }
            }
            // Only updates: nothing to apply. (An empty V2 means "leave joint
            // consensus", so it must not come from dropping updates.)
            if had_changes && out.changes.is_empty() {
                return Ok(None);
            }
            out.context = cc.context.unwrap_or_default();
        }
    }
    Ok(Some(out))
}

/// The etcd encoding of a raft-rs single change, for an application proposing one.
pub fn conf_change_to_etcd(
    id: u64,
    t: eraftpb::ConfChangeType,
    node_id: u64,
    context: bytes::Bytes,
) -> Vec<u8> {
    let change_type = match t {
        eraftpb::ConfChangeType::AddNode => ConfChangeType::ConfChangeAddNode,
        eraftpb::ConfChangeType::RemoveNode => ConfChangeType::ConfChangeRemoveNode,
        eraftpb::ConfChangeType::AddLearnerNode => ConfChangeType::ConfChangeAddLearnerNode,
    };
    ConfChange {
        id,
        change_type: change_type as i32,
        node_id,
        context: Some(context),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::ConfChangeSingle;
    use bytes::Bytes;

    fn cc(t: ConfChangeType, node: u64) -> Vec<u8> {
        ConfChange {
            id: 0,
            change_type: t as i32,
            node_id: node,
            context: Some(Bytes::from_static(b"{}")),
        }
        .encode_to_vec()
    }

    #[test]
    fn learner_is_translated_not_passed_through() {
        let v2 = conf_change_from_etcd(
            EntryType::EntryConfChange,
            &cc(ConfChangeType::ConfChangeAddLearnerNode, 9),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            v2.changes[0].change_type,
            eraftpb::ConfChangeType::AddLearnerNode
        );
        assert_eq!(v2.changes[0].node_id, 9);
        assert_eq!(&v2.context[..], b"{}");
        let add = conf_change_from_etcd(
            EntryType::EntryConfChange,
            &cc(ConfChangeType::ConfChangeAddNode, 1),
        )
        .unwrap()
        .unwrap();
        assert_eq!(add.changes[0].change_type, eraftpb::ConfChangeType::AddNode);
        let rm = conf_change_from_etcd(
            EntryType::EntryConfChange,
            &cc(ConfChangeType::ConfChangeRemoveNode, 1),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            rm.changes[0].change_type,
            eraftpb::ConfChangeType::RemoveNode
        );
    }

    #[test]
    fn update_node_changes_no_configuration() {
        // Number 2 is etcd's UpdateNode but raft-rs's AddLearnerNode.
        assert_eq!(
            conf_change_from_etcd(
                EntryType::EntryConfChange,
                &cc(ConfChangeType::ConfChangeUpdateNode, 1)
            ),
            Ok(None)
        );
        let v2 = ConfChangeV2 {
            transition: 0,
            changes: vec![ConfChangeSingle {
                change_type: 2,
                node_id: 1,
            }],
            context: None,
        };
        assert_eq!(
            conf_change_from_etcd(EntryType::EntryConfChangeV2, &v2.encode_to_vec()),
            Ok(None)
        );
    }

    #[test]
    fn v2_transitions_and_leave_joint() {
        let v2 = ConfChangeV2 {
            transition: ConfChangeTransition::ConfChangeTransitionJointExplicit as i32,
            changes: vec![
                ConfChangeSingle {
                    change_type: 3,
                    node_id: 4,
                },
                ConfChangeSingle {
                    change_type: 2,
                    node_id: 1,
                },
            ],
            context: None,
        };
        let r = conf_change_from_etcd(EntryType::EntryConfChangeV2, &v2.encode_to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(r.transition, eraftpb::ConfChangeTransition::Explicit);
        assert_eq!(r.changes.len(), 1);
        assert_eq!(
            r.changes[0].change_type,
            eraftpb::ConfChangeType::AddLearnerNode
        );
        // An empty V2 (leave joint) stays empty.
        let leave = ConfChangeV2::default().encode_to_vec();
        assert!(conf_change_from_etcd(EntryType::EntryConfChangeV2, &leave)
            .unwrap()
            .unwrap()
            .changes
            .is_empty());
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        assert!(matches!(
            conf_change_from_etcd(EntryType::EntryConfChange, &[0xff, 0xff, 0xff]),
            Err(ConfChangeError::Decode { .. })
        ));
        assert_eq!(
            conf_change_from_etcd(
                EntryType::EntryConfChange,
                &ConfChange {
                    change_type: 9,
                    ..Default::default()
                }
                .encode_to_vec()
            ),
            Err(ConfChangeError::Type(9))
        );
        let back = conf_change_to_etcd(1, eraftpb::ConfChangeType::AddLearnerNode, 5, Bytes::new());
        assert_eq!(ConfChange::decode(&back[..]).unwrap().change_type, 3);
    }
}
