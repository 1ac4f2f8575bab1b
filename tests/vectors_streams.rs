//! The golden stream captures from etcd 3.4.23:
//! - every `streams/*.body.bin` decodes to the frame list in its `.json`, and the decoded
//!   messages re-encode to the identical bytes;
//! - every `*.response.raw.bin` de-chunks to its `.body.bin`, chunk for chunk.

mod common;

use std::path::Path;

use bytes::{Bytes, BytesMut};
use rafthttp::codec::{
    encode_message_frame, FrameKind, MessageStreamDecoder, MsgAppV2Decoder, MsgAppV2Encoder,
};
use rafthttp::http::chunked::{ChunkedDecoder, ChunkedEvent};
use rafthttp::http::head::Head;
use rafthttp::json::id_from_hex;
use rafthttp::raftpb::{entry_type_name, message_type_name, Message};
use rafthttp::Limits;
use serde_json::Value;

fn header<'a>(headers: &'a Value, name: &str) -> &'a str {
    headers
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .and_then(|h| h[1].as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// (json, body bytes, local ID, remote ID, frames) for one stream capture. The dialer is
/// the receiver: its `X-Server-From` is our local ID and its `X-Raft-To` the remote.
fn load(json_path: &Path) -> (Value, Bytes, u64, u64, Vec<Value>) {
    let json: Value = serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
    let dir = json_path.parent().unwrap().parent().unwrap();
    let body = Bytes::from(std::fs::read(dir.join(json["body_file"].as_str().unwrap())).unwrap());
    let headers = json
        .get("request_headers")
        .or_else(|| json.get("etcd_request_headers"))
        .unwrap();
    let local = id_from_hex(header(headers, "X-Server-From")).unwrap();
    let remote = id_from_hex(header(headers, "X-Raft-To")).unwrap();
    let frames = json
        .get("frames")
        .or_else(|| json.get("frames_first_60"))
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    (json, body, local, remote, frames)
}

fn is_msgapp(json: &Value, path: &Path) -> bool {
    json.get("codec")
        .map(|c| c == "msgappv2")
        .unwrap_or_else(|| path.to_str().unwrap().contains("-msgapp-"))
}

/// The frame names the captures use, mapped to ours.
fn kind_name(capture: &str) -> &'static str {
    match capture {
        "linkHeartbeat(0x00)" | "linkHeartbeat" => "LinkHeartbeat",
        "AppEntries(0x01)" => "AppEntries",
        "MsgApp(0x02)" => "MsgApp",
        "message" => "Message",
        other => panic!("unknown frame name {other}"),
    }
}

fn check_frame(want: &Value, kind: FrameKind, offset: u64, len: usize, m: &Message, ctx: &str) {
    assert_eq!(want["offset"].as_u64().unwrap(), offset, "{ctx}: offset");
    assert_eq!(want["len"].as_u64().unwrap() as usize, len, "{ctx}: len");
    assert_eq!(
        kind_name(want["frame"].as_str().unwrap()),
        kind.name(),
        "{ctx}: frame kind"
    );
    let w = &want["msg"];
    assert_eq!(
        w["type"].as_str().unwrap(),
        message_type_name(m.msg_type).unwrap(),
        "{ctx}: type"
    );
    assert_eq!(
        id_from_hex(w["to"].as_str().unwrap()).unwrap(),
        m.to,
        "{ctx}: to"
    );
    assert_eq!(
        id_from_hex(w["from"].as_str().unwrap()).unwrap(),
        m.from,
        "{ctx}: from"
    );
    for (key, got) in [
        ("term", m.term),
        ("logTerm", m.log_term),
        ("index", m.index),
        ("commit", m.commit),
    ] {
        assert_eq!(w[key].as_u64().unwrap(), got, "{ctx}: {key}");
    }
    assert_eq!(
        w.get("reject").and_then(Value::as_bool).unwrap_or(false),
        m.reject,
        "{ctx}: reject"
    );
    assert_eq!(
        w["entry_count"].as_u64().unwrap() as usize,
        m.entries.len(),
        "{ctx}: entry_count"
    );
    for (we, e) in w
        .get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .zip(&m.entries)
    {
        assert_eq!(
            we["type"].as_str().unwrap(),
            entry_type_name(e.entry_type).unwrap(),
            "{ctx}: entry type"
        );
        assert_eq!(we["term"].as_u64().unwrap(), e.term, "{ctx}: entry term");
        assert_eq!(we["index"].as_u64().unwrap(), e.index, "{ctx}: entry index");
        let data_len = e.data.as_ref().map_or(0, |d| d.len());
        assert_eq!(
            we["data_len"].as_u64().unwrap() as usize,
            data_len,
            "{ctx}: entry data_len"
        );
    }
}

#[test]
fn every_stream_body_decodes_to_its_frames_and_reencodes_identically() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let jsons = common::files(&dir, "streams", ".json");
    assert_eq!(jsons.len(), 8);
    let mut frames_checked = 0;
    for path in &jsons {
        let (json, body, local, remote, want) = load(path);
        let ctx = path.file_name().unwrap().to_str().unwrap();
        let msgapp = is_msgapp(&json, path);
        let mut v2 = MsgAppV2Decoder::new(local, remote, &Limits::default());
        let mut message = MessageStreamDecoder::new(&Limits::default());
        let mut encoder = MsgAppV2Encoder::new();
        let mut reencoded = BytesMut::new();
        let mut input = body.clone();
        let mut m = Message::default();
        let mut n = 0;
        loop {
            let info = if msgapp {
                v2.decode(&mut input, &mut m)
            } else {
                message.decode(&mut input, &mut m)
            };
            let Some(info) = info.unwrap_or_else(|e| panic!("{ctx}: {e}")) else {
                break;
            };
            if let Some(w) = want.get(n) {
                check_frame(
                    w,
                    info.kind,
                    info.offset,
                    info.len,
                    &m,
                    &format!("{ctx} frame {n}"),
                );
                frames_checked += 1;
            }
            let kind = if msgapp {
                encoder.encode(&m, &mut reencoded)
            } else {
                encode_message_frame(&m, &mut reencoded)
            };
            assert_eq!(
                kind, info.kind,
                "{ctx} frame {n}: re-encoded as another kind"
            );
            n += 1;
        }
        assert!(input.is_empty());
        if let Some(count) = json.get("frame_count") {
            assert_eq!(count.as_u64().unwrap() as usize, n, "{ctx}: frame count");
        }
        assert!(
            n >= want.len(),
            "{ctx}: decoded {n} frames, json lists {}",
            want.len()
        );
        assert_eq!(&reencoded[..], &body[..], "{ctx}: re-encoding differs");
    }
    assert!(
        frames_checked > 250,
        "only {frames_checked} frames compared"
    );
}

#[test]
fn every_raw_response_dechunks_to_its_body() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let raws = common::files(&dir, "streams", ".response.raw.bin");
    assert_eq!(raws.len(), 8);
    for raw_path in raws {
        let ctx = raw_path.file_name().unwrap().to_str().unwrap().to_string();
        let raw = std::fs::read(&raw_path).unwrap();
        let body_path = raw_path
            .to_str()
            .unwrap()
            .replace(".response.raw.bin", ".body.bin");
        let body = std::fs::read(body_path).unwrap();
        let json: Value = serde_json::from_slice(
            &std::fs::read(
                raw_path
                    .to_str()
                    .unwrap()
                    .replace(".response.raw.bin", ".json"),
            )
            .unwrap(),
        )
        .unwrap();
        let head = Head::parse_response(&raw, 16 * 1024)
            .unwrap()
            .expect("whole head");
        assert_eq!(
            head.header_str("transfer-encoding"),
            Some("chunked"),
            "{ctx}"
        );
        // In one piece, each chunk comes out as exactly one Data event: the sizes must be
        // etcd's chunk sizes. In awkward pieces, the bytes must still be the same.
        for piece in [raw.len(), 1, 7] {
            let mut dec = ChunkedDecoder::new(&Limits::default());
            let mut out = Vec::new();
            let mut sizes = Vec::new();
            let mut ended = false;
            for part in raw[head.len..].chunks(piece) {
                let mut input = Bytes::copy_from_slice(part);
                while let Some(ev) = dec
                    .decode(&mut input)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"))
                {
                    match ev {
                        ChunkedEvent::Data(d) => {
                            out.extend_from_slice(&d);
                            sizes.push(d.len());
                        }
                        ChunkedEvent::End => {
                            ended = true;
                            sizes.push(0); // the captures list the last chunk as size 0
                        }
                    }
                }
            }
            assert_eq!(out, body, "{ctx} in pieces of {piece}");
            assert!(
                ended || dec.at_chunk_boundary(),
                "{ctx}: cut inside a chunk"
            );
            if let Some(t) = json.get("chunked_terminated") {
                assert_eq!(t.as_bool().unwrap(), ended, "{ctx}: terminator");
            }
            if piece == raw.len() {
                let (want, whole) = match json.get("chunk_sizes") {
                    Some(w) => (w, true),
                    None => (&json["chunk_sizes_first_50"], false),
                };
                let want: Vec<usize> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                if whole {
                    assert_eq!(sizes, want, "{ctx}: chunk sizes");
                } else {
                    assert_eq!(&sizes[..want.len()], &want[..], "{ctx}: first chunk sizes");
                }
            }
        }
    }
}
