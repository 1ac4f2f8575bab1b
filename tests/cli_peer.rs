//! `rafthttp peer` as scripts use it: two endpoints, JSON lines in and out.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

struct PeerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: Receiver<Value>,
    stderr: Receiver<Value>,
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<Value> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let v =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[String]) -> PeerProc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .arg("peer")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    PeerProc {
        child,
        stdin,
        stdout,
        stderr,
    }
}

/// Waits for an event line whose fields include `want`.
fn expect_event(rx: &Receiver<Value>, want: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event like {want}"));
        if want.as_object().unwrap().iter().all(|(k, w)| &v[k] == w) {
            return v;
        }
    }
}

fn args(id: &str, port: u16, peer: (&str, u16), extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--id".into(),
        id.into(),
        "--cluster-id".into(),
        "c1a5".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--peer".into(),
        format!("{}=http://127.0.0.1:{}", peer.0, peer.1),
        "--io".into(),
        "epoll".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn two_peers_exchange_json_lines() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn(&args("1", pa, ("2", pb), &[]));
    let b = spawn(&args("2", pb, ("1", pa), &["--server-version", "3.4.23"]));
    expect_event(
        &a.stderr,
        &serde_json::json!({"event": "started", "id": "1", "io": "epoll"}),
    );
    expect_event(
        &a.stderr,
        &serde_json::json!({"event": "active", "peer": "2"}),
    );
    expect_event(
        &b.stderr,
        &serde_json::json!({"event": "active", "peer": "1"}),
    );
    let app = r#"{"type":"MsgApp","to":"2","from":"1","term":2,"logTerm":2,"index":7,"commit":7,"entries":[{"type":"EntryNormal","term":2,"index":8,"data_hex":"68656c6c6f"}]}"#;
    let hb =
        r#"{"type":"MsgHeartbeat","to":"2","from":"1","term":2,"commit":8,"context_hex":"0102"}"#;
    writeln!(a.stdin, "{app}\nnot json\n{hb}").unwrap();
    a.stdin.flush().unwrap();
    let mut got = [
        b.stdout.recv_timeout(Duration::from_secs(10)).unwrap(),
        b.stdout.recv_timeout(Duration::from_secs(10)).unwrap(),
    ];
    got.sort_by_key(|v| v["type"].as_str().unwrap().to_string());
    assert_eq!(got[0]["type"], "MsgApp");
    assert_eq!(got[0]["entries"][0]["data_hex"], "68656c6c6f");
    assert_eq!(got[0]["entries"][0]["index"], 8);
    assert_eq!(got[1]["type"], "MsgHeartbeat");
    assert_eq!(got[1]["context_hex"], "0102");
    let e = expect_event(&a.stderr, &serde_json::json!({"event": "error"}));
    assert!(
        e["error"].as_str().unwrap().starts_with("stdin line 2:"),
        "{e}"
    );
}

#[test]
fn a_removed_member_is_told_so_on_its_error_channel() {
    let (pa, pb) = (free_port(), free_port());
    let a = spawn(&args("1", pa, ("2", pb), &[]));
    let _b = spawn(&args("2", pb, ("1", pa), &["--removed", "1"]));
    let e = expect_event(&a.stderr, &serde_json::json!({"event": "error"}));
    assert_eq!(
        e["error"],
        "the member has been permanently removed from the cluster"
    );
}
