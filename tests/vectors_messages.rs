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

/// Every golden pipeline request: the head says Content-Length, the body is the
/// `.body.bin` beside it, and it decodes and re-encodes byte for byte.
#[test]
fn every_pipeline_request_body_decodes_and_reencodes() {
    use rafthttp::codec::{encode_pipeline_body, PipelineBodyDecoder};
    use rafthttp::http::head::{BodyFraming, Head};
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let requests = common::files(&dir, "pipeline", ".request.bin");
    assert_eq!(requests.len(), 14);
    for path in requests {
        let raw = std::fs::read(&path).unwrap();
        let head = Head::parse_request(&raw, 16 * 1024)
            .unwrap()
            .expect("whole head");
        assert_eq!(
            head.header_str("content-type"),
            Some("application/protobuf")
        );
        let BodyFraming::Length(n) = head.body_framing().unwrap() else {
            panic!("{}: no length", path.display())
        };
        let body = Bytes::copy_from_slice(&raw[head.len..]);
        assert_eq!(body.len() as u64, n, "{}", path.display());
        let body_file = path.to_str().unwrap().replace(".request.bin", ".body.bin");
        if let Ok(want) = std::fs::read(body_file) {
            assert_eq!(&body[..], &want[..]);
        }
        let mut dec = PipelineBodyDecoder::new(Some(n), &rafthttp::Limits::default()).unwrap();
        dec.push(body.clone()).unwrap();
        let m = dec.finish().unwrap();
        let mut again = bytes::BytesMut::new();
        encode_pipeline_body(&m, &mut again);
        assert_eq!(
            &again[..],
            &body[..],
            "{} re-encodes differently",
            path.display()
        );
    }
}

/// Entry data decoded from a `Bytes` buffer point into that buffer: no copy.
#[test]
fn decoding_from_bytes_slices_entry_data() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let raw =
        Bytes::from(std::fs::read(dir.join("messages/09-msgapp-2000-byte-value.bin")).unwrap());
    let m = Message::decode(raw.clone()).unwrap();
    let data = m
        .entries
        .iter()
        .filter_map(|e| e.data.as_ref())
        .max_by_key(|d| d.len())
        .unwrap();
    let range = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
    assert!(data.len() > 2000);
    assert!(
        range.contains(&(data.as_ptr() as usize)),
        "entry data was copied"
    );
}
