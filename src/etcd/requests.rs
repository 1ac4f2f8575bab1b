//! The `etcdserverpb` requests etcd puts in raft entries: the v2 `Request` (member
//! attributes, cluster version) and the v3 `InternalRaftRequest` (puts and the rest),
//! told apart as etcd's apply loop does, by trying the v3 form first.

use bytes::Bytes;
use prost::Message as _;

/// etcd's v2 `etcdserverpb.Request`. Fields are `required` so that prost writes every
/// non-nullable field, as gogoproto does; the bytes then equal etcd's own.
#[derive(Clone, PartialEq, prost::Message)]
pub struct V2Request {
    /// Request ID.
    #[prost(uint64, required, tag = "1")]
    pub id: u64,
    /// `PUT`, `GET`, …
    #[prost(string, required, tag = "2")]
    pub method: String,
    /// Key path, such as `/0/members/<hex>/attributes`.
    #[prost(string, required, tag = "3")]
    pub path: String,
    /// Value.
    #[prost(string, required, tag = "4")]
    pub val: String,
    /// Dir.
    #[prost(bool, required, tag = "5")]
    pub dir: bool,
    /// PrevValue.
    #[prost(string, required, tag = "6")]
    pub prev_value: String,
    /// PrevIndex.
    #[prost(uint64, required, tag = "7")]
    pub prev_index: u64,
    /// PrevExist (nullable in etcd: written only when set).
    #[prost(bool, optional, tag = "8")]
    pub prev_exist: Option<bool>,
    /// Expiration.
    #[prost(int64, required, tag = "9")]
    pub expiration: i64,
    /// Wait.
    #[prost(bool, required, tag = "10")]
    pub wait: bool,
    /// Since.
    #[prost(uint64, required, tag = "11")]
    pub since: u64,
    /// Recursive.
    #[prost(bool, required, tag = "12")]
    pub recursive: bool,
    /// Sorted.
    #[prost(bool, required, tag = "13")]
    pub sorted: bool,
    /// Quorum.
    #[prost(bool, required, tag = "14")]
    pub quorum: bool,
    /// Time.
    #[prost(int64, required, tag = "15")]
    pub time: i64,
    /// Stream.
    #[prost(bool, required, tag = "16")]
    pub stream: bool,
    /// Refresh (nullable).
    #[prost(bool, optional, tag = "17")]
    pub refresh: Option<bool>,
}

/// A v3 `PutRequest` (only what a follower shows).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// Key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// Value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// Lease.
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// A message whose content we do not read; declared so that decoding checks its wire
/// type as gogoproto does (which is how etcd tells v2 from v3 entries).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Opaque {}

/// A v3 `InternalRaftRequest`: the fields a follower needs to tell it apart and show it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternalRaftRequest {
    /// Request ID (older form; newer requests carry `header`).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// A v2 request wrapped in v3 form.
    #[prost(message, optional, tag = "2")]
    pub v2: Option<V2Request>,
    /// Range.
    #[prost(message, optional, tag = "3")]
    pub range: Option<Opaque>,
    /// Put.
    #[prost(message, optional, tag = "4")]
    pub put: Option<PutRequest>,
    /// DeleteRange.
    #[prost(message, optional, tag = "5")]
    pub delete_range: Option<Opaque>,
    /// Txn.
    #[prost(message, optional, tag = "6")]
    pub txn: Option<Opaque>,
    /// Compaction.
    #[prost(message, optional, tag = "7")]
    pub compaction: Option<Opaque>,
    /// LeaseGrant.
    #[prost(message, optional, tag = "8")]
    pub lease_grant: Option<Opaque>,
    /// LeaseRevoke.
    #[prost(message, optional, tag = "9")]
    pub lease_revoke: Option<Opaque>,
    /// Header.
    #[prost(message, optional, tag = "100")]
    pub header: Option<Opaque>,
}

/// What a normal entry's data holds.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryData {
    /// No data (a new leader's no-op).
    Empty,
    /// A v2 request (member attributes, cluster version, v2 keys).
    V2(V2Request),
    /// A v3 put.
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
    },
    /// Another v3 request.
    OtherV3,
    /// Neither form decodes.
    Unknown,
}

impl EntryData {
    /// Decodes a normal entry's data as etcd's apply loop does: v3 first, then v2.
    pub fn decode(data: &[u8]) -> EntryData {
        if data.is_empty() {
            return EntryData::Empty;
        }
        if let Ok(r) = InternalRaftRequest::decode(data) {
            if let Some(v2) = r.v2 {
                return EntryData::V2(v2);
            }
            if let Some(p) = r.put {
                return EntryData::Put {
                    key: p.key,
                    value: p.value,
                };
            }
            return EntryData::OtherV3;
        }
        match V2Request::decode(data) {
            Ok(r) => EntryData::V2(r),
            Err(_) => EntryData::Unknown,
        }
    }
}

/// The v2 `PUT /0/members/<id>/attributes` a member proposes to publish its name and
/// client URLs (etcd's `publish`), encoded as etcd encodes it.
pub fn publish_attributes(
    request_id: u64,
    member: u64,
    name: &str,
    client_urls: &[String],
) -> Bytes {
    // Field order matters for byte equality: etcd's struct has name, then clientURLs.
    let val = serde_json::to_string(&super::members::MemberAttributes {
        name: name.to_string(),
        client_urls: client_urls.to_vec(),
    })
    .unwrap_or_default();
    V2Request {
        id: request_id,
        method: "PUT".into(),
        path: format!("/0/members/{member:x}/attributes"),
        val,
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// A v3 put, as `InternalRaftRequest{put}` (for tests and tools).
pub fn put_request(key: &[u8], value: &[u8]) -> Bytes {
    #[derive(Clone, PartialEq, prost::Message)]
    struct PutOnly {
        #[prost(message, optional, tag = "4")]
        put: Option<PutRequest>,
    }
    PutOnly {
        put: Some(PutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            lease: 0,
        }),
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Entry data of the golden `18-m3-MsgProp.bin`: m3 publishing its attributes.
    const PUBLISH_HEX: &str = "08bdac839db490e7de4f12035055541a262f302f6d656d626572732f636166663963376634343064396263352f6174747269627574657322357b226e616d65223a226d33222c22636c69656e7455524c73223a5b22687474703a2f2f3132372e302e302e313a3233373933225d7d2800320038004800500058006000680070007800800100";

    #[test]
    fn publish_matches_etcd_bytes() {
        let golden = hex::decode(PUBLISH_HEX).unwrap();
        let ours = publish_attributes(
            0x4fbd9c8343a0d63d,
            0xcaff9c7f440d9bc5,
            "m3",
            &["http://127.0.0.1:23793".to_string()],
        );
        assert_eq!(&ours[..], &golden[..]);
        match EntryData::decode(&golden) {
            EntryData::V2(r) => {
                assert_eq!(r.path, "/0/members/caff9c7f440d9bc5/attributes");
                assert_eq!(r.method, "PUT");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v3_put_is_told_from_v2() {
        let put = put_request(b"k", b"value");
        assert_eq!(
            EntryData::decode(&put),
            EntryData::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value")
            }
        );
        assert_eq!(EntryData::decode(&[]), EntryData::Empty);
        assert_eq!(EntryData::decode(&[0xff, 0xff]), EntryData::Unknown);
    }
}
