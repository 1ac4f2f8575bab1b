//! Every golden `messages/*.bin` from etcd 3.4.23 decodes and re-encodes byte for byte.

mod common;

use bytes::Bytes;
use prost::Message as _;
use rafthttp::raftpb::Message;

#[test]
fn every_golden_message_reencodes_identically() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let files = common::files(&dir, "messages", ".bin");
    assert_eq!(files.len(), 20, "expected the 20 message vectors");
    for path in files {
        let raw = Bytes::from(std::fs::read(&path).unwrap());
        let m = Message::decode(raw.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = m.encode_to_vec();
        assert_eq!(
            again,
            raw.as_ref(),
            "{} re-encodes differently",
            path.display()
        );
    }
}
