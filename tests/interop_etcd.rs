//! A rafthttp member inside a real etcd 3.4.23 cluster (`etcd-foreign-member.md` §J):
//! two `etcd` processes from Debian's etcd-server plus `rafthttp etcd-member`, on the
//! ports and token of the golden capture, so every ID must equal the captured ones.
//!
//! 1. A leader is elected; both etcd members count our member as an active peer; the
//!    cluster version reaches 3.4 (our `/version` answered); our `/version` and
//!    `/members` bodies equal etcd's own.
//! 2. Ten puts (one of 2,000 bytes) reach our log at the leader's index and term.
//! 3. With the non-leader etcd member killed, puts and a linearizable get commit only
//!    with our acks; frozen (SIGSTOP), the same put times out and the leader steps down;
//!    resumed, puts commit again.
//! 4. `etcdctl move-leader <our id>` makes us leader; puts through etcd's client port
//!    commit through our appends.
//! 5. `member list` shows our client URL; no etcd process crashed; no prober or stream
//!    warnings about our member before the freeze.
//!
//! Needs `etcd` and `etcdctl` (apt-get install -y etcd-server etcd-client); without them
//! it says SKIPPED, except in CI, where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "rafthttp-interop";
const CLUSTER: &str =
    "m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803";
const M1: &str = "5f1298836671828d";
const M2: &str = "b09a17ddc8c72954";
const M3: &str = "caff9c7f440d9bc5";
const M3_DEC: u64 = 14627582185139182533;

fn have_etcd() -> bool {
    let ok = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("etcd", "--version") && ok("etcdctl", "version") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must have etcd-server and etcd-client installed"
    );
    eprintln!("SKIPPED: the etcd scenario needs etcd and etcdctl (apt-get install -y etcd-server etcd-client)");
    false
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe_signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

fn unsafe_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn etcd(dir: &Path, n: u32) -> Proc {
    let log = dir.join(format!("m{n}.log"));
    let child = Command::new("etcd")
        .args(["--name", &format!("m{n}")])
        .arg("--data-dir")
        .arg(dir.join(format!("m{n}.data")))
        .args([
            "--initial-cluster",
            CLUSTER,
            "--initial-cluster-token",
            TOKEN,
        ])
        .args(["--initial-cluster-state", "new"])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:2380{n}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:2380{n}"),
        ])
        .args(["--listen-client-urls", &format!("http://127.0.0.1:2379{n}")])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:2379{n}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start etcd");
    Proc { child, log }
}

/// Our member, with its stdout JSON lines collected.
fn member(dir: &Path) -> (Proc, Arc<Mutex<Vec<Value>>>) {
    let log = dir.join("m3.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rafthttp"))
        .args(["etcd-member", "--name", "m3", "--initial-cluster", CLUSTER])
        .args([
            "--initial-cluster-token",
            TOKEN,
            "--initial-cluster-state",
            "new",
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:23803"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:23803"])
        .args(["--advertise-client-urls", "http://127.0.0.1:23793"])
        .env("RUST_LOG", "info,raft=info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rafthttp etcd-member");
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = events.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    (Proc { child, log }, events)
}

fn etcdctl(endpoints: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET path` on `addr`: (status, body).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// (leader ID, raftIndex, raftTerm) as `endpoint status` reports on `endpoint`.
fn status(endpoint: &str) -> Option<(u64, u64, u64)> {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "json"]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    let s = &v[0]["Status"];
    Some((
        s["leader"].as_u64()?,
        s["raftIndex"].as_u64()?,
        s["raftTerm"].as_u64()?,
    ))
}

fn applied_put(events: &Mutex<Vec<Value>>, key: &str) -> Option<Value> {
    events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "applied" && e["type"] == "put" && e["key"] == key)
        .cloned()
}

fn warnings_about_us(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(M3))
        .filter(|l| {
            l.contains("prober detected unhealthy")
                || l.contains("lost TCP streaming connection")
                || l.contains("failed to read")
                || l.contains("panic")
        })
        .collect()
}

#[test]
fn rafthttp_member_in_a_real_etcd_cluster() {
    if !have_etcd() {
        return;
    }
    let vectors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/etcd-3.4.23");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("etcd-scenario");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // 1. Boot.
    let (mut m3, events) = member(&dir);
    let mut etcds = vec![etcd(&dir, 1), etcd(&dir, 2)];
    let both = "127.0.0.1:23791,127.0.0.1:23792";
    let leader = wait_for("a leader", 30, || {
        status("127.0.0.1:23791").filter(|s| s.0 != 0)
    })
    .0;
    for (n, local) in [(1, M1), (2, M2)] {
        let want = format!("etcd_network_active_peers{{Local=\"{local}\",Remote=\"{M3}\"}} 1");
        wait_for(&format!("m{n} to count m3 active"), 20, || {
            http_get(&format!("127.0.0.1:2379{n}"), "/metrics").filter(|(_, b)| b.contains(&want))
        });
    }
    wait_for("cluster version 3.4", 20, || {
        http_get("127.0.0.1:23791", "/version")
            .filter(|(_, b)| b.contains("\"etcdcluster\":\"3.4.0\""))
    });
    wait_for("m3 to publish its attributes", 20, || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "published")
            .then_some(())
    });
    let started = events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "started")
        .cloned()
        .unwrap();
    assert_eq!(started["id"], M3);
    assert_eq!(started["cluster_id"], "332b4329fb5bbb93");
    let (code, body) = http_get("127.0.0.1:23803", "/version").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}"#)
    );
    let (code, ours) = http_get("127.0.0.1:23803", "/members").unwrap();
    assert_eq!(code, 200);
    let theirs = http_get("127.0.0.1:23801", "/members").unwrap().1;
    assert_eq!(ours, theirs, "our /members body differs from etcd's");
    if vectors.is_dir() {
        let golden =
            std::fs::read_to_string(vectors.join("probe-leader/members.response.bin")).unwrap();
        assert_eq!(
            ours,
            golden.split_once("\r\n\r\n").unwrap().1,
            "differs from the captured /members"
        );
    }

    // 2. Replication: ten puts reach our log at etcd's index and term.
    let big = "X".repeat(2000);
    for i in 0..10 {
        let v = if i == 5 { big.clone() } else { format!("v{i}") };
        etcdctl(both, &["put", &format!("k{i}"), &v]).expect("put");
    }
    let (_, raft_index, raft_term) = status(&format!(
        "127.0.0.1:2379{}",
        if leader == 0x5f1298836671828d { 1 } else { 2 }
    ))
    .unwrap();
    let last = wait_for("k9 in our log", 10, || applied_put(&events, "k9"));
    assert_eq!(
        (last["index"].as_u64(), last["term"].as_u64()),
        (Some(raft_index), Some(raft_term))
    );
    let mut prev = 0;
    for i in 0..10 {
        let e =
            applied_put(&events, &format!("k{i}")).unwrap_or_else(|| panic!("k{i} not applied"));
        let idx = e["index"].as_u64().unwrap();
        assert!(idx > prev, "k{i} out of order");
        prev = idx;
        assert_eq!(e["term"].as_u64(), Some(raft_term));
        assert_eq!(e["value_len"].as_u64(), Some(if i == 5 { 2000 } else { 2 }));
    }

    // 3. Only the leader and our member: commits need our acks.
    let leader_n = if leader == 0x5f1298836671828d { 1 } else { 2 };
    let other_n = 3 - leader_n;
    let other = &mut etcds[other_n - 1];
    other.child.kill().unwrap();
    other.child.wait().unwrap();
    let leader_ep = format!("127.0.0.1:2379{leader_n}");
    let t = Instant::now();
    etcdctl(&leader_ep, &["put", "q1", "v1"]).expect("put with only the leader and m3");
    eprintln!("put with m3 as the only ack: {:?}", t.elapsed());
    let got = etcdctl(&leader_ep, &["get", "q1"]).expect("linearizable get");
    assert!(got.contains("v1"), "{got}");
    let leader_log_at_freeze = etcds[leader_n - 1].log_text().len();
    let before_freeze = [etcds[0].log_text(), etcds[1].log_text()];
    for log in &before_freeze {
        assert!(
            warnings_about_us(log).is_empty(),
            "{:?}",
            warnings_about_us(log)
        );
    }
    unsafe_signal(m3.child.id(), libc::SIGSTOP);
    let frozen = etcdctl(&leader_ep, &["put", "q2", "v2"]);
    assert!(frozen.is_err(), "a put committed without our member");
    wait_for("the leader to step down", 10, || {
        etcds[leader_n - 1].log_text()[leader_log_at_freeze..]
            .contains("stepped down to follower since quorum is not active")
            .then_some(())
    });
    unsafe_signal(m3.child.id(), libc::SIGCONT);
    wait_for("a put after resuming", 30, || {
        etcdctl(&leader_ep, &["put", "q3", "v3"]).ok()
    });

    // 4. Leadership: move it to us, then write through etcd's client port.
    let survivor = format!("127.0.0.1:2379{leader_n}");
    let (cur, _, _) = wait_for("a leader after resuming", 20, || {
        status(&survivor).filter(|s| s.0 != 0)
    });
    if cur == M3_DEC {
        // Already ours: hand it to etcd first so that the transfer below is exercised.
        let to = if leader_n == 1 { M1 } else { M2 };
        etcdctl(&survivor, &["move-leader", to]).expect("move-leader to etcd");
    }
    let moved = etcdctl(&survivor, &["move-leader", M3]).expect("move-leader to m3");
    assert!(moved.contains(M3), "{moved}");
    let (now, _, _) = status(&survivor).unwrap();
    assert_eq!(now, M3_DEC, "m3 is not the leader");
    etcdctl(&survivor, &["put", "led", "by-m3"]).expect("put while m3 leads");
    let got = etcdctl(&survivor, &["get", "led"]).expect("get while m3 leads");
    assert!(got.contains("by-m3"));
    let led = wait_for("the put in our log", 10, || applied_put(&events, "led"));
    assert_eq!(led["leader"], M3);

    // 5. Membership and health.
    let list: Value =
        serde_json::from_str(&etcdctl(&survivor, &["member", "list", "-w", "json"]).unwrap())
            .unwrap();
    let ours = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["ID"].as_u64() == Some(M3_DEC))
        .expect("m3 in member list")
        .clone();
    assert_eq!(
        ours["clientURLs"],
        serde_json::json!(["http://127.0.0.1:23793"])
    );
    assert!(
        etcds[leader_n - 1].alive(),
        "the surviving etcd member exited"
    );
    assert!(m3.alive(), "our member exited");
    for p in &etcds {
        let log = p.log_text();
        assert!(!log.contains("panic:"), "etcd panicked:\n{log}");
    }
}
