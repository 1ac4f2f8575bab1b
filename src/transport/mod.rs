//! The rafthttp transport: peers, streams, pipeline and snapshots, as etcd's
//! `rafthttp.Transport` (spec §1, §3, §4).

pub mod checks;
pub mod peer_status;
pub mod queue;
pub mod url_picker;
