//! `rafthttp decode` as a user runs it: golden captures in, JSON lines out; bad input
//! exits non-zero with one line naming the byte offset.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use bytes::BytesMut;
use rafthttp::codec::{encode_snapshot_envelope, MsgAppV1Encoder};
use rafthttp::raftpb::{Entry, Message, MessageType};
use serde_json::Value;

fn decode(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    sin.write_all(stdin.unwrap_or_default()).unwrap();
    drop(sin);
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const M3: &str = "caff9c7f440d9bc5";
const M2: &str = "b09a17ddc8c72954";

#[test]
fn msgappv2_capture_prints_every_frame_in_the_schema() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let body = dir.join("streams/leader-m2-msgapp-to-m3.body.bin");
    let out = decode(
        &[
            "--stream",
            "msgappv2",
            "--local",
            M3,
            "--remote",
            M2,
            body.to_str().unwrap(),
        ],
        None,
    );
    let got = lines(&out);
    let want: Value = serde_json::from_slice(
        &std::fs::read(dir.join("streams/leader-m2-msgapp-to-m3.json")).unwrap(),
    )
    .unwrap();
    let want = want["frames"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    let line = String::from_utf8(out.stdout.clone()).unwrap();
    let first_app = line
        .lines()
        .find(|l| l.contains(r#""frame":"AppEntries""#))
        .unwrap();
    assert!(
        first_app.starts_with(r#"{"frame":"AppEntries","type":"MsgApp","to":"caff9c7f440d9bc5","from":"b09a17ddc8c72954","term":2,"logTerm":2,"index":8,"commit":8,"reject":false,"rejectHint":0,"entries":[]"#),
        "{first_app}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["offset"], w["offset"]);
        assert_eq!(g["index"], w["msg"]["index"]);
        assert_eq!(g["commit"], w["msg"]["commit"]);
        assert_eq!(
            g["entries"].as_array().unwrap().len() as u64,
            w["msg"]["entry_count"].as_u64().unwrap()
        );
    }
    let entry = got
        .iter()
        .flat_map(|g| g["entries"].as_array().unwrap())
        .find(|e| e["data_len"] == 2023)
        .expect("the 2000-byte put");
    assert_eq!(entry["data_hex"].as_str().unwrap().len(), 2 * 2023);
    assert!(
        entry["data_hex"]
            .as_str()
            .unwrap()
            .contains(&"58".repeat(2000)),
        "2000 x the letter X"
    );
}

#[test]
fn raw_http_and_chunked_inputs_decode_alike() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let raw_path = dir.join("streams/leader-m2-message-to-m3.response.raw.bin");
    let via_http = lines(&decode(
        &["--http", "--stream", "message", raw_path.to_str().unwrap()],
        None,
    ));
    let raw = std::fs::read(&raw_path).unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let via_chunked = lines(&decode(
        &["--chunked", "--stream", "message", "-"],
        Some(&raw[head_end..]),
    ));
    let via_body = lines(&decode(
        &[
            "--stream",
            "message",
            dir.join("streams/leader-m2-message-to-m3.body.bin")
                .to_str()
                .unwrap(),
        ],
        None,
    ));
    assert_eq!(via_http.len(), 183);
    assert_eq!(via_http, via_chunked);
    assert_eq!(via_http, via_body);
    assert_eq!(via_http[0]["frame"], "LinkHeartbeat");
    assert_eq!(via_http[1]["frame"], "Message");
    assert_eq!(via_http[1]["type"], "MsgHeartbeat");
}

#[test]
fn a_pipeline_request_says_its_own_format() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let req = dir.join("pipeline/02-msgapp-first-probe.request.bin");
    let got = lines(&decode(&["--http", req.to_str().unwrap()], None));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["frame"], "Message");
    assert_eq!(got[0]["type"], "MsgApp");
    assert_eq!(got[0]["from"], M2);
    assert_eq!(got[0]["logTerm"], 1);
}

#[test]
fn msgapp_v1_and_snapshot_bodies() {
    let m = Message {
        msg_type: MessageType::MsgApp as i32,
        term: 7,
        log_term: 7,
        index: 41,
        entries: vec![Entry {
            term: 7,
            index: 42,
            data: Some(vec![0xab; 3].into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut v1 = BytesMut::new();
    let mut enc = MsgAppV1Encoder::new(7);
    enc.encode(&Message::link_heartbeat(), &mut v1);
    enc.encode(&m, &mut v1);
    let got = lines(&decode(
        &[
            "--stream",
            "msgapp-v1",
            "--term",
            "7",
            "--local",
            "2",
            "--remote",
            "1",
            "-",
        ],
        Some(&v1),
    ));
    assert_eq!(got[0]["frame"], "LinkHeartbeat");
    assert_eq!(got[1]["frame"], "Batch");
    assert_eq!(
        (
            got[1]["from"].as_str(),
            got[1]["to"].as_str(),
            got[1]["index"].as_u64()
        ),
        (Some("1"), Some("2"), Some(41))
    );
    assert_eq!(got[1]["entries"][0]["data_hex"], "ababab");

    let mut snap_msg = Message {
        msg_type: MessageType::MsgSnap as i32,
        to: 2,
        from: 1,
        ..Default::default()
    };
    snap_msg.snapshot.metadata.index = 99;
    snap_msg.snapshot.metadata.conf_state.voters = vec![1, 2];
    let mut body = BytesMut::new();
    encode_snapshot_envelope(&snap_msg, &mut body);
    body.extend_from_slice(&vec![0u8; 200_000]);
    let got = lines(&decode(&["--stream", "snapshot", "-"], Some(&body)));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["type"], "MsgSnap");
    assert_eq!(got[0]["snapshot"]["index"], 99);
    assert_eq!(got[0]["snapshot"]["voters"], serde_json::json!(["1", "2"]));
    assert_eq!(
        got[1],
        serde_json::json!({"frame": "SnapshotData", "data_len": 200_000})
    );
}

#[test]
fn bad_input_exits_non_zero_with_one_line_naming_the_offset() {
    let cases: &[(&[&str], &[u8], &str)] = &[
        (
            &["--stream", "msgappv2", "-"],
            b"\x00\x00\x09",
            "failed to parse type 9 in msgappv2 stream (at byte offset 2)",
        ),
        (
            &["--stream", "message", "-"],
            b"\x00\x00\x00\x00\x00\x00\x00\x05\x08",
            "at byte offset 0",
        ),
        (
            &["--stream", "message", "--max-frame", "100", "-"],
            &[0, 0, 0, 0, 0, 1, 0, 0],
            "exceeds the limit of 100 bytes (at byte offset 0)",
        ),
        (
            &["--stream", "message", "--chunked", "-"],
            b"zz\r\n",
            "invalid byte in chunk size (at byte offset 0)",
        ),
        (
            &["--stream", "message", "--chunked", "-"],
            b"4\r\nab",
            "body ended before the last chunk (at byte offset 5)",
        ),
        (
            &["--http", "--stream", "message", "-"],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Content-Length and Transfer-Encoding (at byte offset 66)",
        ),
        (
            &["--stream", "msgappv2", "-"],
            b"\x02\x00\x00\x00\x00\x00\x00\x00\x02\x08\xff",
            "failed to decode raft message",
        ),
        (
            &["--stream", "msgapp-v1", "-"],
            b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x04\x08\x00\x18\x00",
            "msgapp v1 batch starts with entry index 0",
        ),
    ];
    for (args, input, want) in cases {
        let out = decode(args, Some(input));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "{args:?}: succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("byte offset"), "{args:?}: {err}");
    }
    let out = decode(&["--stream", "message", "/nonexistent/file"], None);
    assert!(!out.status.success());
}
