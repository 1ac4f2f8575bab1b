//! raftpb: the raft protobuf messages that rafthttp carries (spec §2.1–2.2).
//!
//! Encoding is etcd 3.4's gogoproto output byte for byte; decoding accepts the v3.6
//! (`go.etcd.io/raft` v3.6) and protobuf-go (v3.7+) encodings too. Decoding from a
//! [`bytes::Bytes`] buffer slices entry data and contexts out of it without copying.

mod messages;
mod types;
pub mod wire;

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
    /// Whether every field is zero or absent, so that leaving the snapshot off loses
    /// nothing. Written out field by field: comparing with `Snapshot::default()` compares
    /// empty vectors, and glibc's AVX-512 `memcmp` reads through their dangling pointers
    /// with masked loads that cost ~130 ns each on AMD (see docs/performance.md).
    pub fn is_default(&self) -> bool {
        let md = &self.metadata;
        let cs = &md.conf_state;
        self.data.is_none()
            && md.index == 0
            && md.term == 0
            && cs.voters.is_empty()
            && cs.learners.is_empty()
            && cs.voters_outgoing.is_empty()
            && cs.learners_next.is_empty()
            && !cs.auto_leave
    }

    /// Whether the snapshot is empty, i.e. absent in etcd's sense (`IsEmptySnap`: index 0).
    /// Absent (v3.6+) and empty (v3.4) snapshots decode to the same value.
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message as _;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// Spec §2.2: the link heartbeat in each era decodes to the same message, and we
    /// write etcd 3.4's 30 bytes.
    #[test]
    fn link_heartbeat_in_every_era() {
        let era_a_33 = unhex(
            "08 08 10 00 18 00 20 00 28 00 30 00 40 00 4a 08 12 06 0a 00 10 00 18 00 50 00 58 00",
        );
        let era_a_34 = unhex("08 08 10 00 18 00 20 00 28 00 30 00 40 00 4a 0a 12 08 0a 02 28 00 10 00 18 00 50 00 58 00");
        let era_b = unhex("08 08 10 00 18 00 20 00 28 00 30 00 40 00 50 00 58 00 68 00");
        let era_c = unhex("08 08");
        for raw in [&era_a_33, &era_a_34, &era_c] {
            let m = Message::decode(&raw[..]).unwrap();
            assert!(m.is_link_heartbeat());
            assert_eq!(m, Message::link_heartbeat());
        }
        let b = Message::decode(&era_b[..]).unwrap();
        assert_eq!(b.vote, Some(0), "v3.6's vote field is kept");
        assert!(b.is_link_heartbeat());
        assert_eq!(Message::link_heartbeat().encode_to_vec(), era_a_34);
    }

    /// Spec §2.2's MsgApp example, in etcd 3.4 bytes, and the v3.6 form decoding alike.
    #[test]
    fn msgapp_example_bytes() {
        let m = Message {
            msg_type: MessageType::MsgApp as i32,
            to: 2,
            from: 1,
            term: 5,
            log_term: 5,
            index: 10,
            commit: 9,
            entries: vec![Entry {
                term: 5,
                index: 11,
                data: Some(Bytes::from_static(b"hello")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v34 = unhex("08 03 10 02 18 01 20 05 28 05 30 0a 3a 0d 08 00 10 05 18 0b 22 05 68 65 6c 6c 6f 40 09 4a 0a 12 08 0a 02 28 00 10 00 18 00 50 00 58 00");
        assert_eq!(m.encode_to_vec(), v34);
        let v36 = unhex("08 03 10 02 18 01 20 05 28 05 30 0a 3a 0d 08 00 10 05 18 0b 22 05 68 65 6c 6c 6f 40 09 50 00 58 00 68 00");
        let mut from36 = Message::decode(&v36[..]).unwrap();
        assert_eq!(from36.vote.take(), Some(0));
        assert_eq!(from36, m);
    }

    #[test]
    fn nil_and_empty_entry_data_stay_distinct() {
        let nil = Entry {
            term: 5,
            index: 12,
            ..Default::default()
        };
        let empty = Entry {
            data: Some(Bytes::new()),
            ..nil.clone()
        };
        assert_eq!(nil.encode_to_vec(), unhex("08 00 10 05 18 0c"));
        assert_eq!(empty.encode_to_vec(), unhex("08 00 10 05 18 0c 22 00"));
        assert_eq!(
            Entry::decode(&unhex("08 00 10 05 18 0c 22 00")[..]).unwrap(),
            empty
        );
    }

    #[test]
    fn unknown_numbers_and_fields_out_of_order_are_accepted() {
        // type 99, then fields in reverse order, plus an unknown field 20 (varint).
        let raw = unhex("58 07 20 03 a0 01 05 08 63");
        let m = Message::decode(&raw[..]).unwrap();
        assert_eq!((m.msg_type, m.term, m.reject_hint), (99, 3, 7));
        assert_eq!(m.message_type(), None);
        let again = Message::decode(&m.encode_to_vec()[..]).unwrap();
        assert_eq!(again.msg_type, 99, "an unknown type survives a round trip");
    }

    #[test]
    fn is_default_agrees_with_equality() {
        let mut s = Snapshot::default();
        assert!(s.is_default() && s == Snapshot::default());
        s.metadata.conf_state.learners_next.push(1);
        assert!(!s.is_default());
        let s = Snapshot {
            data: Some(Bytes::new()),
            ..Default::default()
        };
        assert!(!s.is_default());
    }

    #[test]
    fn packed_repeated_ids_decode_too() {
        // ConfState voters [1, 2] packed (field 1, wire type 2), as protobuf-go may write.
        let cs = ConfState::decode(&unhex("0a 02 01 02")[..]).unwrap();
        assert_eq!(cs.voters, vec![1, 2]);
        assert_eq!(
            cs.encode_to_vec(),
            unhex("08 01 08 02 28 00"),
            "written unpacked, as gogoproto"
        );
    }
}
