//! Replays every request etcd 3.4.23's leader answered in `probe-leader/` against
//! `rafthttp peer` configured as that leader (m2: ID, cluster ID, peers and `3.4.23` from
//! `ids.json`), on each I/O backend, and compares the status line, the body (ignoring Go's error text inside
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
            Ok(0) => break,
            // A signal (SIGCHLD from a reaped child) interrupts a read with a timeout.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let io_name = if io == IoMode::Epoll {
            "epoll"
        } else {
            "uring"
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rafthttp"))
            .args([
                "peer",
                "--id",
                &format!("{M2:x}"),
                "--cluster-id",
                "332b4329fb5bbb93",
                "--server-version",
                "3.4.23",
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--advertise",
                "http://127.0.0.1:23802",
                "--io",
                io_name,
            ])
            // The captured cluster's other members; nothing listens there, which is fine.
            .args([
                "--peer",
                &format!("{M1:x}=http://127.0.0.1:1"),
                "--peer",
                &format!("{M3:x}=http://127.0.0.1:1"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::BufRead;
            let mut first = String::new();
            std::io::BufReader::new(child.stderr.as_mut().unwrap())
                .read_line(&mut first)
                .unwrap();
            assert!(first.contains(r#""event":"started""#), "{first}");
        }
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
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
        let _ = child.kill();
        let _ = child.wait();
    }
}
