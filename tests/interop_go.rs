//! Interop with the real Go transport: etcd 3.4.23's `rafthttp.Transport` (Debian's
//! golang-etcd-server-dev) in `tests/interop/go/gopeer`, against ours, both ways.
//! Skipped (and said so) where Go or etcd's Go sources are not installed; `.ci/run`
//! installs them, and under `CI=true` their absence fails.

#[path = "common/transport.rs"]
mod tc;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rafthttp::io::IoMode;
use rafthttp::json::MessageJson;
use rafthttp::raftpb::{Entry, EntryType, Message, MessageType};
use rafthttp::transport::{SnapshotStatus, Transport};
use serde_json::{json, Value};
use tc::{start, url, wait_until, Recorder};

const GOPATH: &str = "/usr/share/gocode";

/// Builds the Go peer once per test binary; `None` (with a SKIPPED line) without Go.
fn gopeer() -> Option<PathBuf> {
    static BUILT: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if let Some(b) = built.as_ref() {
        return b.clone();
    }
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_src = std::path::Path::new(GOPATH)
        .join("src/go.etcd.io/etcd/etcdserver/api/rafthttp")
        .is_dir();
    if !have_go || !have_src {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have golang-go and golang-etcd-server-dev"
        );
        eprintln!("SKIPPED: Go interop needs golang-go and golang-etcd-server-dev (apt-get install -y golang-go golang-etcd-server-dev)");
        *built = Some(None);
        return None;
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("gopeer");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/go/gopeer/main.go");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "")
        .env("GOCACHE", tmp.join("gocache"))
        .status()
        .unwrap();
    assert!(status.success(), "building the Go peer failed");
    *built = Some(Some(out.clone()));
    Some(out)
}

struct GoPeer {
    child: Child,
    stdin: ChildStdin,
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    all_events: Arc<Mutex<Vec<Value>>>,
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoPeer {
    fn start(exe: &PathBuf, id: u64, peers: &[(u64, String)], extra: &[&str]) -> GoPeer {
        let mut cmd = Command::new(exe);
        cmd.args(["-id", &format!("{id:x}"), "-cluster-id", "c1a5"])
            .args(extra);
        for (pid, u) in peers {
            cmd.args(["-peer", &format!("{pid:x}={u}")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&line).unwrap());
            }
        });
        let (tx, first) = channel();
        let all_events = Arc::new(Mutex::new(Vec::new()));
        let all = all_events.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or(json!({"event": "log", "line": line}));
                all.lock().unwrap().push(v.clone());
                let _ = tx.send(v); // only the first is awaited; later sends may fail
            }
        });
        let started: Value = first
            .recv_timeout(Duration::from_secs(20))
            .expect("the Go peer started");
        assert_eq!(started["event"], "started", "{started}");
        let url = started["url"].as_str().unwrap().to_string();
        GoPeer {
            child,
            stdin,
            url,
            received,
            all_events,
        }
    }

    fn send_line(&mut self, v: &impl serde::Serialize) {
        serde_json::to_writer(&mut self.stdin, v).unwrap();
        self.stdin.write_all(b"\n").unwrap();
    }

    fn send(&mut self, m: &Message) {
        self.send_line(&MessageJson::from_message(m));
    }

    fn flush(&mut self) {
        self.stdin.flush().unwrap();
    }

    fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn wait_received(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.received() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.received()
    }

    fn wait_event(&self, want: &Value, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self
                .all_events
                .lock()
                .unwrap()
                .iter()
                .find(|v| want.as_object().unwrap().iter().all(|(k, w)| &v[k] == w))
            {
                return v.clone();
            }
            assert!(Instant::now() < deadline, "no event like {want}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn events_named(&self, name: &str) -> Vec<Value> {
        self.all_events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == name)
            .cloned()
            .collect()
    }
}

/// A deterministic mix of everything raft sends, `n` messages from `from` to `to`.
fn traffic(from: u64, to: u64, n: usize) -> Vec<Message> {
    let (mut term, mut index) = (1u64, 0u64);
    let payload = |len: usize, seed: u64| -> Option<Bytes> {
        Some(
            (0..len)
                .map(|i| (i as u64 * 31 + seed) as u8)
                .collect::<Vec<u8>>()
                .into(),
        )
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let base = Message {
            from,
            to,
            term,
            ..Default::default()
        };
        let m = match i % 20 {
            // Contiguous appends: msgappv2 sends these as AppEntries.
            0..=10 => {
                let size = match i {
                    _ if i % 10_000 == 5 => 1 << 20,
                    _ if i % 1000 == 7 => 64 << 10,
                    _ if i % 3 == 0 => 0,
                    _ => 64,
                };
                let data = if size == 0 && i % 2 == 0 {
                    None
                } else {
                    payload(size, i)
                };
                let m = Message {
                    msg_type: MessageType::MsgApp as i32,
                    log_term: term,
                    index,
                    commit: index,
                    entries: vec![Entry {
                        entry_type: EntryType::EntryNormal as i32,
                        term,
                        index: index + 1,
                        data,
                    }],
                    ..base
                };
                index += 1;
                m
            }
            11 => {
                index += 5; // a gap
                Message {
                    msg_type: MessageType::MsgApp as i32,
                    log_term: term,
                    index,
                    commit: index - 3,
                    entries: vec![Entry {
                        term,
                        index: index + 1,
                        data: payload(16, i),
                        ..Default::default()
                    }],
                    ..base
                }
            }
            12 if i % 1000 == 12 => {
                term += 1; // a term change: the first append of a term is a full MsgApp
                Message {
                    msg_type: MessageType::MsgApp as i32,
                    term,
                    log_term: term - 1,
                    index,
                    commit: index,
                    entries: vec![Entry {
                        term,
                        index: index + 1,
                        data: payload(8, i),
                        ..Default::default()
                    }],
                    ..base
                }
            }
            12 => Message {
                msg_type: MessageType::MsgApp as i32,
                log_term: term,
                index,
                commit: index,
                ..base
            }, // commit-only
            13 => Message {
                msg_type: MessageType::MsgAppResp as i32,
                index: index.saturating_sub(2),
                reject: true,
                reject_hint: index / 2,
                ..base
            },
            14 => Message {
                msg_type: MessageType::MsgAppResp as i32,
                index,
                ..base
            },
            15 => Message {
                msg_type: MessageType::MsgHeartbeat as i32,
                commit: index,
                context: (i % 40 == 15).then(|| payload(8, i).unwrap()),
                ..base
            },
            16 => Message {
                msg_type: MessageType::MsgHeartbeatResp as i32,
                context: (i % 40 == 16).then(|| payload(8, i).unwrap()),
                ..base
            },
            17 => Message {
                msg_type: [MessageType::MsgVote, MessageType::MsgPreVote][(i / 20 % 2) as usize]
                    as i32,
                log_term: term,
                index,
                ..base
            },
            18 => Message {
                msg_type: [MessageType::MsgVoteResp, MessageType::MsgPreVoteResp]
                    [(i / 20 % 2) as usize] as i32,
                reject: i % 3 == 0,
                ..base
            },
            _ if i % 100 == 19 => Message {
                msg_type: MessageType::MsgTimeoutNow as i32,
                ..base
            },
            _ => Message {
                msg_type: MessageType::MsgProp as i32,
                term: 0,
                entries: vec![Entry {
                    data: payload(32, i),
                    ..Default::default()
                }],
                ..base
            },
        };
        out.push(m);
    }
    out
}

/// Splits messages by the queue that keeps their order end to end: the msgapp stream,
/// MsgProp (its own receive queue), and everything else on the message stream.
fn by_order_class(msgs: &[Message]) -> [Vec<Message>; 3] {
    let mut out: [Vec<Message>; 3] = Default::default();
    for m in msgs {
        let class = match MessageType::from_i32(m.msg_type) {
            Some(MessageType::MsgApp) => 0,
            Some(MessageType::MsgProp) => 1,
            _ => 2,
        };
        out[class].push(m.clone());
    }
    out
}

fn pair(exe: &PathBuf, io: IoMode) -> (Transport, Arc<Recorder>, GoPeer) {
    let (rust, rec) = start(1, io, |_| {});
    let go = GoPeer::start(exe, 2, &[(1, url(&rust))], &[]);
    rust.add_peer(2, std::slice::from_ref(&go.url)).unwrap();
    wait_until(Duration::from_secs(20), || tc::streams_up(&rust));
    go.wait_event(
        &json!({"event": "active", "peer": "1"}),
        Duration::from_secs(20),
    );
    (rust, rec, go)
}

const N: usize = 100_000;

#[test]
fn go_and_rust_exchange_every_kind_of_message_both_ways() {
    let Some(exe) = gopeer() else { return };
    for io in tc::io_modes() {
        let (rust, rec, mut go) = pair(&exe, io);

        // Rust → Go, paced so nothing has to drop.
        let sent = traffic(1, 2, N);
        for (i, m) in sent.iter().enumerate() {
            if i % 1000 == 999 {
                go.wait_received(i.saturating_sub(1500), Duration::from_secs(30));
            }
            rust.send_message(m.clone());
        }
        assert_eq!(
            go.wait_received(N, Duration::from_secs(60)),
            N,
            "{io:?}: Go received everything"
        );
        let got: Vec<Message> = go
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|v| MessageJson::parse_line(&v.to_string()).unwrap())
            .collect();
        for (class, (g, s)) in by_order_class(&got)
            .iter()
            .zip(by_order_class(&sent).iter())
            .enumerate()
        {
            assert_eq!(g.len(), s.len(), "{io:?}: class {class}");
            for (k, (a, b)) in g.iter().zip(s).enumerate() {
                assert_eq!(a, b, "{io:?}: class {class}, message {k}");
            }
        }

        // Go → Rust.
        let back = traffic(2, 1, N);
        for (i, m) in back.iter().enumerate() {
            if i % 1000 == 999 {
                go.flush();
                rec.wait_for(i.saturating_sub(1500), Duration::from_secs(30));
            }
            go.send(m);
        }
        go.flush();
        assert_eq!(
            rec.wait_for(N, Duration::from_secs(60)),
            N,
            "{io:?}: Rust received everything"
        );
        let got = rec.got.lock().unwrap().clone();
        for (class, (g, s)) in by_order_class(&got)
            .iter()
            .zip(by_order_class(&back).iter())
            .enumerate()
        {
            assert_eq!(g.len(), s.len(), "{io:?}: class {class}");
            for (k, (a, b)) in g.iter().zip(s).enumerate() {
                assert_eq!(a, b, "{io:?}: class {class}, message {k}");
            }
        }

        // Nothing dropped, nothing reported, all by stream.
        assert!(
            rec.unreachable.lock().unwrap().is_empty(),
            "{io:?}: Rust reported unreachable"
        );
        assert!(
            go.events_named("unreachable").is_empty(),
            "{io:?}: Go reported unreachable"
        );
        let s = rust.stats().peers[0].clone();
        assert_eq!(
            (s.sent_failures, s.received_failures, s.pipeline_messages),
            (0, 0, 0),
            "{io:?}"
        );
    }
}

fn pattern_sum(size: u64) -> u64 {
    (0..size).fold(0u64, |s, i| s.wrapping_mul(31).wrapping_add(i * 7 % 251))
}

fn heartbeat(from: u64, to: u64, commit: u64) -> Message {
    Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from,
        to,
        term: 9,
        commit,
        ..Default::default()
    }
}

#[test]
fn snapshots_pipeline_reconnects_and_version_checks_with_go() {
    let Some(exe) = gopeer() else { return };
    for io in tc::io_modes() {
        let (rust, rec, mut go) = pair(&exe, io);
        let size = 16u64 << 20;

        // A 16 MiB snapshot each way, through POST /raft/snapshot.
        let mut envelope = Message {
            msg_type: MessageType::MsgSnap as i32,
            from: 1,
            to: 2,
            term: 2,
            ..Default::default()
        };
        envelope.snapshot.metadata.index = 100;
        envelope.snapshot.metadata.term = 2;
        envelope.snapshot.metadata.conf_state.voters = vec![1, 2];
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        rust.send_snapshot(envelope.clone(), std::io::Cursor::new(data), size);
        assert_eq!(
            rec.wait_snapshots(1, Duration::from_secs(30)),
            vec![(2, SnapshotStatus::Finish)],
            "{io:?}"
        );
        go.wait_received(1, Duration::from_secs(10));
        let snap_line = go
            .received
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["type"] == "MsgSnap")
            .cloned()
            .expect("Go processed the MsgSnap");
        assert_eq!(snap_line["db_bytes"], size, "{io:?}: Go saved every byte");
        assert_eq!(
            MessageJson::parse_line(&snap_line.to_string()).unwrap(),
            envelope
        );
        go.send_line(&json!({"cmd": "snapshot", "to": "1", "index": 200, "term": 3, "size": size}));
        go.flush();
        go.wait_event(
            &json!({"event": "snapshot_sent", "ok": true}),
            Duration::from_secs(30),
        );
        assert_eq!(
            *rec.snapshot_data.lock().unwrap(),
            vec![(200, size, pattern_sum(size))],
            "{io:?}"
        );

        // Pipeline while streams are cut: Go forgets us, so our streams go down and our
        // messages go by POST /raft, which Go's handler takes from anyone.
        go.send_line(&json!({"cmd": "remove", "peer": "1"}));
        go.flush();
        wait_until(Duration::from_secs(10), || {
            rust.stats().peers[0].streams_attached == (false, false)
        });
        let before = go.received();
        // Paced in groups of 20: the pipeline queue holds 64 (and drops beyond, as it should).
        for i in 0..100u64 {
            if i % 20 == 19 {
                go.wait_received(before + i as usize - 10, Duration::from_secs(10));
            }
            rust.send_message(heartbeat(1, 2, i));
        }
        assert_eq!(
            go.wait_received(before + 100, Duration::from_secs(20)),
            before + 100,
            "{io:?}"
        );
        assert!(rust.stats().peers[0].pipeline_messages >= 100);
        go.send_line(&json!({"cmd": "add", "peer": "1", "url": url(&rust)}));
        go.flush();
        wait_until(Duration::from_secs(20), || tc::streams_up(&rust));
        // And the other way: we forget Go, so Go's messages come by pipeline.
        rust.remove_peer(2);
        std::thread::sleep(Duration::from_millis(300));
        let before = rec.got.lock().unwrap().len();
        for i in 0..100u64 {
            if i % 20 == 19 {
                go.flush();
                rec.wait_for(before + i as usize - 10, Duration::from_secs(10));
            }
            go.send(&heartbeat(2, 1, i));
        }
        go.flush();
        assert_eq!(
            rec.wait_for(before + 100, Duration::from_secs(20)),
            before + 100,
            "{io:?}"
        );
        rust.add_peer(2, std::slice::from_ref(&go.url)).unwrap();
        wait_until(Duration::from_secs(20), || tc::streams_up(&rust));

        // cut_peer drops traffic; mend_peer heals it, on either side.
        rust.cut_peer(2);
        let before = go.received();
        rust.send_message(heartbeat(1, 2, 1));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(go.received(), before, "{io:?}: cut drops");
        rust.mend_peer(2);
        rust.send_message(heartbeat(1, 2, 2));
        assert_eq!(
            go.wait_received(before + 1, Duration::from_secs(10)),
            before + 1,
            "{io:?}: mended"
        );
        go.send_line(&json!({"cmd": "cut", "peer": "1"}));
        go.flush();
        let before = rec.got.lock().unwrap().len();
        go.send(&heartbeat(2, 1, 3));
        go.flush();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            rec.got.lock().unwrap().len(),
            before,
            "{io:?}: Go's cut drops"
        );
        go.send_line(&json!({"cmd": "mend", "peer": "1"}));
        go.send(&heartbeat(2, 1, 4));
        go.flush();
        assert_eq!(
            rec.wait_for(before + 1, Duration::from_secs(10)),
            before + 1,
            "{io:?}: Go mended"
        );

        // Versions: a member of ours advertising 2.3 is refused by Go (412 to its dials),
        // and it refuses Go (whose minimum cluster version, 3.0.0, is above its 2.3).
        let (old, _rold) = start(3, io, |c| {
            c.versions = rafthttp::version::LocalVersions {
                server: rafthttp::version::Version::new(2, 3, 0),
                min_cluster: rafthttp::version::Version::new(2, 2, 0),
            }
        });
        go.send_line(&json!({"cmd": "add", "peer": "3", "url": url(&old)}));
        go.flush();
        old.add_peer(2, std::slice::from_ref(&go.url)).unwrap();
        wait_until(Duration::from_secs(10), || {
            old.stats().peers[0].dial_failures >= 2
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !old.stats().peers[0].active,
            "{io:?}: Go refused the 2.3 member"
        );
        assert_eq!(
            old.stats().peers[0].stream_attaches,
            0,
            "{io:?}: and it refused Go"
        );
        assert!(
            go.events_named("active").iter().all(|e| e["peer"] != "3"),
            "{io:?}"
        );
        assert!(rec.unreachable.lock().unwrap().iter().all(|&id| id == 2));
    }
}
