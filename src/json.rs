//! The JSON-lines schema that `rafthttp decode` prints and `rafthttp peer` reads and
//! prints: one object per frame or message, IDs as lower-case hex strings (`"0"` for
//! zero), message and entry types by etcd's names (a number when the name is unknown),
//! byte fields as hex. A `data_hex` or `context_hex` that is absent means the field was
//! absent (nil) on the wire, which differs from present-but-empty (`""`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::raftpb::{
    entry_type_name, message_type_name, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot, SnapshotMetadata,
};

/// Errors turning JSON into a message.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not valid JSON for the schema.
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// A field has a value the schema does not allow.
    #[error("invalid {field}: {value}")]
    Field {
        /// The field's key.
        field: &'static str,
        /// What was there.
        value: String,
    },
}

/// One entry, as printed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EntryJson {
    /// etcd's name (`EntryNormal`…) or the number.
    #[serde(rename = "type", default = "zero")]
    pub entry_type: Value,
    /// Term.
    #[serde(default)]
    pub term: u64,
    /// Index.
    #[serde(default)]
    pub index: u64,
    /// Payload length (informational; `data_hex` is what counts on input).
    #[serde(default)]
    pub data_len: usize,
    /// Payload as hex; absent for a nil payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
}

/// A snapshot's metadata and data, as printed (only when non-empty).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct SnapshotJson {
    /// Snapshot index.
    #[serde(default)]
    pub index: u64,
    /// Snapshot term.
    #[serde(default)]
    pub term: u64,
    /// Voter IDs (hex).
    #[serde(default)]
    pub voters: Vec<String>,
    /// Learner IDs (hex).
    #[serde(default)]
    pub learners: Vec<String>,
    /// Outgoing voter IDs (hex).
    #[serde(default)]
    pub voters_outgoing: Vec<String>,
    /// Next learner IDs (hex).
    #[serde(default)]
    pub learners_next: Vec<String>,
    /// Joint-consensus auto leave.
    #[serde(default)]
    pub auto_leave: bool,
    /// Snapshot data length.
    #[serde(default)]
    pub data_len: usize,
    /// Snapshot data as hex; absent when nil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
}

/// One frame or message, as printed; key order is the schema's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageJson {
    /// The frame kind (`LinkHeartbeat`, `AppEntries`, `MsgApp`, `Message`, `Batch`);
    /// ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// etcd's message type name, or the number.
    #[serde(rename = "type", default = "zero")]
    pub msg_type: Value,
    /// Recipient, hex.
    #[serde(default = "zero_id")]
    pub to: String,
    /// Sender, hex.
    #[serde(default = "zero_id")]
    pub from: String,
    /// Term.
    #[serde(default)]
    pub term: u64,
    /// Log term.
    #[serde(rename = "logTerm", default)]
    pub log_term: u64,
    /// Index.
    #[serde(default)]
    pub index: u64,
    /// Commit index.
    #[serde(default)]
    pub commit: u64,
    /// Reject flag.
    #[serde(default)]
    pub reject: bool,
    /// Reject hint.
    #[serde(rename = "rejectHint", default)]
    pub reject_hint: u64,
    /// Entries.
    #[serde(default)]
    pub entries: Vec<EntryJson>,
    /// Context as hex; absent when nil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_hex: Option<String>,
    /// The snapshot, when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotJson>,
    /// raft v3.6's `vote` field, when it was on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<u64>,
    /// Offset of the frame in the decoded input (output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Length of the frame in bytes (output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
}

fn zero() -> Value {
    Value::from(0)
}

fn zero_id() -> String {
    "0".to_string()
}

/// An ID in etcd's text form: lower-case hex, no leading zeros.
pub fn id_to_hex(id: u64) -> String {
    format!("{id:x}")
}

/// Parses an ID in etcd's text form (hex, an optional `0x` allowed).
pub fn id_from_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn type_value(n: i32, name: Option<&'static str>) -> Value {
    name.map_or_else(|| Value::from(n), Value::from)
}

fn type_number(
    v: &Value,
    field: &'static str,
    by_name: impl Fn(&str) -> Option<i32>,
) -> Result<i32, JsonError> {
    let bad = || JsonError::Field {
        field,
        value: v.to_string(),
    };
    match v {
        Value::String(s) => by_name(s).or_else(|| s.parse().ok()).ok_or_else(bad),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn hex_field(s: &Option<String>, field: &'static str) -> Result<Option<Bytes>, JsonError> {
    s.as_ref()
        .map(|h| {
            hex::decode(h)
                .map(Bytes::from)
                .map_err(|_| JsonError::Field {
                    field,
                    value: h.clone(),
                })
        })
        .transpose()
}

fn ids_from_hex(ids: &[String], field: &'static str) -> Result<Vec<u64>, JsonError> {
    ids.iter()
        .map(|s| {
            id_from_hex(s).ok_or_else(|| JsonError::Field {
                field,
                value: s.clone(),
            })
        })
        .collect()
}

impl MessageJson {
    /// The JSON form of `m`.
    pub fn from_message(m: &Message) -> MessageJson {
        let snapshot = (!m.snapshot.is_default()).then(|| {
            let md = &m.snapshot.metadata;
            let cs = &md.conf_state;
            let hexes = |ids: &[u64]| ids.iter().map(|&i| id_to_hex(i)).collect();
            SnapshotJson {
                index: md.index,
                term: md.term,
                voters: hexes(&cs.voters),
                learners: hexes(&cs.learners),
                voters_outgoing: hexes(&cs.voters_outgoing),
                learners_next: hexes(&cs.learners_next),
                auto_leave: cs.auto_leave,
                data_len: m.snapshot.data.as_ref().map_or(0, |d| d.len()),
                data_hex: m.snapshot.data.as_ref().map(hex::encode),
            }
        });
        MessageJson {
            frame: None,
            msg_type: type_value(m.msg_type, message_type_name(m.msg_type)),
            to: id_to_hex(m.to),
            from: id_to_hex(m.from),
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            commit: m.commit,
            reject: m.reject,
            reject_hint: m.reject_hint,
            entries: m
                .entries
                .iter()
                .map(|e| EntryJson {
                    entry_type: type_value(e.entry_type, entry_type_name(e.entry_type)),
                    term: e.term,
                    index: e.index,
                    data_len: e.data.as_ref().map_or(0, |d| d.len()),
                    data_hex: e.data.as_ref().map(hex::encode),
                })
                .collect(),
            context_hex: m.context.as_ref().map(hex::encode),
            snapshot,
            vote: m.vote,
            offset: None,
            len: None,
        }
    }

    /// The message this JSON describes.
    pub fn to_message(&self) -> Result<Message, JsonError> {
        let msg_type = type_number(&self.msg_type, "type", |s| {
            MessageType::from_name(s).map(i32::from)
        })?;
        let id = |s: &String, field| {
            id_from_hex(s).ok_or_else(|| JsonError::Field {
                field,
                value: s.clone(),
            })
        };
        let entries = self
            .entries
            .iter()
            .map(|e| {
                Ok(Entry {
                    entry_type: type_number(&e.entry_type, "entries.type", |s| {
                        EntryType::from_name(s).map(i32::from)
                    })?,
                    term: e.term,
                    index: e.index,
                    data: hex_field(&e.data_hex, "entries.data_hex")?,
                })
            })
            .collect::<Result<Vec<_>, JsonError>>()?;
        let snapshot = match &self.snapshot {
            None => Snapshot::default(),
            Some(s) => Snapshot {
                data: hex_field(&s.data_hex, "snapshot.data_hex")?,
                metadata: SnapshotMetadata {
                    conf_state: ConfState {
                        voters: ids_from_hex(&s.voters, "snapshot.voters")?,
                        learners: ids_from_hex(&s.learners, "snapshot.learners")?,
                        voters_outgoing: ids_from_hex(
                            &s.voters_outgoing,
                            "snapshot.voters_outgoing",
                        )?,
                        learners_next: ids_from_hex(&s.learners_next, "snapshot.learners_next")?,
                        auto_leave: s.auto_leave,
                    },
                    index: s.index,
                    term: s.term,
                },
            },
        };
        Ok(Message {
            msg_type,
            to: id(&self.to, "to")?,
            from: id(&self.from, "from")?,
            term: self.term,
            log_term: self.log_term,
            index: self.index,
            entries,
            commit: self.commit,
            snapshot,
            reject: self.reject,
            reject_hint: self.reject_hint,
            context: hex_field(&self.context_hex, "context_hex")?,
            vote: self.vote,
            responses: Vec::new(),
        })
    }

    /// Parses one JSON line into a message.
    pub fn parse_line(line: &str) -> Result<Message, JsonError> {
        serde_json::from_str::<MessageJson>(line)?.to_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_through_json() {
        let mut m = Message {
            msg_type: MessageType::MsgApp as i32,
            to: 0x8e9e05c52164694d,
            from: 2,
            term: 3,
            log_term: 2,
            index: 9,
            commit: 8,
            reject: true,
            reject_hint: 4,
            context: Some(Bytes::from_static(b"")),
            entries: vec![
                Entry {
                    entry_type: 1,
                    term: 3,
                    index: 10,
                    data: Some(Bytes::from_static(b"\x01\xff")),
                },
                Entry {
                    entry_type: 77,
                    term: 3,
                    index: 11,
                    data: None,
                },
            ],
            ..Default::default()
        };
        m.snapshot.metadata.index = 5;
        m.snapshot.metadata.conf_state.voters = vec![1, 0xabc];
        let j = MessageJson::from_message(&m);
        let line = serde_json::to_string(&j).unwrap();
        assert!(
            line.starts_with(
                r#"{"type":"MsgApp","to":"8e9e05c52164694d","from":"2","term":3,"logTerm":2"#
            ),
            "{line}"
        );
        assert!(line.contains(r#""context_hex":"""#));
        assert_eq!(MessageJson::parse_line(&line).unwrap(), m);
    }

    #[test]
    fn unknown_types_print_as_numbers_and_bad_fields_are_named() {
        let m = Message {
            msg_type: 99,
            ..Default::default()
        };
        let line = serde_json::to_string(&MessageJson::from_message(&m)).unwrap();
        assert!(line.starts_with(r#"{"type":99,"#), "{line}");
        assert_eq!(MessageJson::parse_line(&line).unwrap(), m);
        let e = MessageJson::parse_line(r#"{"type":"MsgNope"}"#).unwrap_err();
        assert_eq!(e.to_string(), r#"invalid type: "MsgNope""#);
        let e = MessageJson::parse_line(r#"{"type":"MsgApp","to":"xyz"}"#).unwrap_err();
        assert_eq!(e.to_string(), "invalid to: xyz");
    }
}
