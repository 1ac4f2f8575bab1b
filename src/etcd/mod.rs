//! What a non-etcd member needs to know about etcd itself to join an etcd 3.4 cluster
//! (`etcd-foreign-member.md`): how member and cluster IDs are derived, the
//! `etcdserverpb` requests found in raft entries, and the member list etcd asks peers
//! for. No I/O here.

pub mod ids;
pub mod members;
pub mod requests;

pub use ids::{cluster_id, member_id, InitialCluster, InitialClusterError};
pub use members::{MemberAttributes, Membership};
pub use requests::{EntryData, V2Request};
