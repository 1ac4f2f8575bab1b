//! Replays every request etcd 3.4.23's leader answered in `probe-leader/` against our
//! transport configured as that leader (m2: ID, cluster ID, peers and `3.4.23` from
//! `ids.json`), and compares the status line, the body (ignoring Go's error text inside
//! parentheses) and the `X-Etcd-Cluster-Id`, `X-Server-Version` and `Allow` headers.
//!
//! Exceptions, where our answer differs on purpose:
//! - `pipeline_server_version_garbage`: etcd panics in the handler and drops the
//!   connection without an answer; we answer 412 `incompatible version`.
//! - `version`, `members`: served by etcd-server, not rafthttp; the transport answers 404
//!   (the embedding application registers those routes; see `etcd-member`).
//! - `probing`: the `Now` timestamp differs by nature; its shape is compared.

mod common;
#[path = "common/transport.rs"]
mod tc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rafthttp::http::head::Head;
use rafthttp::io::IoMode;
use rafthttp::transport::{Config, Transport};
use rafthttp::version::{LocalVersions, Version};
use serde_json::Value;

const M1: u64 = 0x5f1298836671828d;
const M2: u64 = 0xb09a17ddc8c72954;
const M3: u64 = 0xcaff9c7f440d9bc5;

fn header(h: &Head, name: &str) -> Option<String> {
    h.header_str(name).map(str::to_string)
}

/// Go's error bodies carry details in parentheses that vary (`(unexpected EOF)`).
fn without_parens(body: &str) -> String {
    match body.find(" (") {
        Some(i) => body[..i].to_string() + "\n",
        None => body.to_string(),
    }
}

/// Sends one raw request; returns the response head and what of the body arrived.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<(Head, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if let Ok(Some(head)) = Head::parse_response(&got, 64 * 1024) {
            if let Ok(rafthttp::http::head::BodyFraming::Length(n)) = head.body_framing() {
                if got.len() >= head.len + n as usize {
                    break;
                }
            }
            if head.header_str("transfer-encoding").is_some() {
                break; // a stream: the head is what we compare
            }
        }
    }
    let head = Head::parse_response(&got, 64 * 1024).ok()??;
    let body = got[head.len..].to_vec();
    Some((head, body))
}

#[test]
fn etcds_answers_to_good_and_bad_requests_are_reproduced() {
    let Some(dir) = common::vectors_dir() else {
        return;
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("probe-leader/index.json")).unwrap())
            .unwrap();
    for io in tc::io_modes() {
        let mut cfg = Config::new(M2, 0x332b4329fb5bbb93);
        cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.io = io;
        cfg.advertise_urls = vec!["http://127.0.0.1:23802".into()];
        cfg.versions = LocalVersions {
            server: Version::new(3, 4, 23),
            min_cluster: Version::new(3, 0, 0),
        };
        let rec = std::sync::Arc::new(tc::Recorder::default());
        let t = Transport::start(cfg, rec.clone()).unwrap();
        // The captured cluster's members; nothing listens there, which is fine.
        t.add_peer(M1, &["http://127.0.0.1:1"]).unwrap();
        t.add_peer(M3, &["http://127.0.0.1:1"]).unwrap();
        let addr = t.local_addrs()[0];
        let mut compared = 0;
        for case in index["cases"].as_array().unwrap() {
            let name = case["case"].as_str().unwrap();
            let request = std::fs::read(dir.join(case["request_file"].as_str().unwrap())).unwrap();
            let golden = std::fs::read(dir.join(case["response_file"].as_str().unwrap())).unwrap();
            let ctx = format!("{io:?} {name}");
            let ours = exchange(addr, &request);
            if name == "pipeline_server_version_garbage" {
                assert!(golden.is_empty(), "etcd dropped this one");
                let (h, body) = ours.expect("we answer");
                assert_eq!(
                    h.start,
                    Head::parse_response(b"HTTP/1.1 412 Precondition Failed\r\n\r\n", 99)
                        .unwrap()
                        .unwrap()
                        .start
                );
                assert_eq!(body, b"incompatible version\n", "{ctx}");
                continue;
            }
            let (want, want_body) = {
                let h = Head::parse_response(&golden, 64 * 1024).unwrap().unwrap();
                let b = golden[h.len..].to_vec();
                (h, b)
            };
            let (got, got_body) = ours.unwrap_or_else(|| panic!("{ctx}: no answer"));
            if name == "version" || name == "members" {
                assert!(
                    matches!(
                        got.start,
                        rafthttp::http::head::StartLine::Response { status: 404, .. }
                    ),
                    "{ctx}"
                );
                continue;
            }
            assert_eq!(got.start, want.start, "{ctx}: status line");
            for h in ["X-Etcd-Cluster-Id", "X-Server-Version", "Allow"] {
                assert_eq!(header(&got, h), header(&want, h), "{ctx}: {h}");
            }
            if name == "probing" {
                let v: Value = serde_json::from_slice(&got_body).unwrap();
                assert_eq!(v["OK"], true);
                assert!(v["Now"].as_str().unwrap().ends_with('Z'));
            } else if want.header_str("transfer-encoding").is_none() {
                let (g, w) = (
                    String::from_utf8_lossy(&got_body),
                    String::from_utf8_lossy(&want_body),
                );
                assert_eq!(without_parens(&g), without_parens(&w), "{ctx}: body");
            }
            compared += 1;
        }
        assert_eq!(compared, 32, "{io:?}");
        t.stop();
    }
    let _ = IoMode::Auto;
}
