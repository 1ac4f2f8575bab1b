//! A recording `Raft` and a two-member loopback pair for transport tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rafthttp::io::IoMode;
use rafthttp::raftpb::Message;
use rafthttp::transport::{Config, ProcessError, Raft, SnapshotStatus, Transport, TransportError};

/// Records what the transport hands the application.
#[derive(Default)]
pub struct Recorder {
    pub got: Mutex<Vec<Message>>,
    pub unreachable: Mutex<Vec<u64>>,
    pub snapshots: Mutex<Vec<(u64, SnapshotStatus)>>,
    pub removed: Mutex<HashSet<u64>>,
    /// (snapshot index, bytes received, sum of the bytes) per received snapshot.
    pub snapshot_data: Mutex<Vec<(u64, u64, u64)>>,
    /// Process by reference (`Raft::borrows`), so the transport recycles messages.
    pub borrow: std::sync::atomic::AtomicBool,
    /// Process on the I/O thread (`Raft::inline`); read when a peer is added.
    pub inline: std::sync::atomic::AtomicBool,
    cv: Condvar,
}

impl Raft for Recorder {
    fn process(&self, m: Message) -> Result<(), ProcessError> {
        if self.removed.lock().unwrap().contains(&m.from) {
            return Err(ProcessError::RemovedMember);
        }
        self.got.lock().unwrap().push(m);
        self.cv.notify_all();
        Ok(())
    }
    fn borrows(&self) -> bool {
        self.borrow.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn inline(&self) -> bool {
        self.inline.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn is_id_removed(&self, id: u64) -> bool {
        self.removed.lock().unwrap().contains(&id)
    }
    fn report_unreachable(&self, id: u64) {
        self.unreachable.lock().unwrap().push(id);
    }
    fn report_snapshot(&self, id: u64, status: SnapshotStatus) {
        self.snapshots.lock().unwrap().push((id, status));
        self.cv.notify_all();
    }
    fn receive_snapshot(
        &self,
        envelope: &Message,
        data: &mut dyn std::io::BufRead,
    ) -> Result<(), String> {
        let (mut len, mut sum, mut buf) = (0u64, 0u64, vec![0u8; 65536]);
        let hash = |sum: u64, bytes: &[u8]| {
            bytes
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64))
        };
        // Odd indexes read the pieces in place (BufRead), even ones copy them out (Read).
        let in_place = envelope.snapshot.metadata.index % 2 == 1;
        loop {
            if in_place {
                let piece = data.fill_buf().map_err(|e| e.to_string())?;
                if piece.is_empty() {
                    break;
                }
                let n = piece.len();
                len += n as u64;
                sum = hash(sum, piece);
                data.consume(n);
                continue;
            }
            let n = data.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            len += n as u64;
            sum = hash(sum, &buf[..n]);
        }
        self.snapshot_data
            .lock()
            .unwrap()
            .push((envelope.snapshot.metadata.index, len, sum));
        Ok(())
    }
}

impl Recorder {
    /// Waits until `n` snapshot reports arrived (or `timeout`).
    pub fn wait_snapshots(&self, n: usize, timeout: Duration) -> Vec<(u64, SnapshotStatus)> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshots.lock().unwrap().clone();
            if s.len() >= n || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until at least `n` messages arrived (or `timeout`); returns how many did.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut got = self.got.lock().unwrap();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got = self.cv.wait_timeout(got, left).unwrap().0;
        }
        got.len()
    }
}

pub const CLUSTER: u64 = 0xc1a5;

/// Starts a transport for member `id` listening on a free loopback port.
pub fn start(id: u64, io: IoMode, tweak: impl FnOnce(&mut Config)) -> (Transport, Arc<Recorder>) {
    try_start(id, io, tweak).unwrap()
}

/// [`start`], with the transport's error if it would not start.
pub fn try_start(
    id: u64,
    io: IoMode,
    tweak: impl FnOnce(&mut Config),
) -> Result<(Transport, Arc<Recorder>), TransportError> {
    let rec = Arc::new(Recorder::default());
    start_app(id, io, rec.clone(), tweak).map(|t| (t, rec))
}

/// A member on 127.0.0.1 whose application is `app`, configured by `tweak`.
pub fn start_app<R: Raft + 'static>(
    id: u64,
    io: IoMode,
    app: Arc<R>,
    tweak: impl FnOnce(&mut Config),
) -> Result<Transport, TransportError> {
    let mut cfg = Config::new(id, CLUSTER);
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.io = io;
    tweak(&mut cfg);
    Transport::start(cfg, app)
}

pub fn url(t: &Transport) -> String {
    format!("http://{}", t.local_addrs()[0])
}

/// Two members that know each other, with both streams attached both ways.
pub fn pair(io: IoMode) -> (Transport, Arc<Recorder>, Transport, Arc<Recorder>) {
    pair_processing(io, false)
}

/// [`pair`], whose members process received messages on their I/O threads if `inline`.
pub fn pair_processing(
    io: IoMode,
    inline: bool,
) -> (Transport, Arc<Recorder>, Transport, Arc<Recorder>) {
    let started = |id| {
        let (t, rec) = start(id, io, |_| {});
        // Read when a peer is added, below.
        rec.inline
            .store(inline, std::sync::atomic::Ordering::Relaxed);
        (t, rec)
    };
    let (a, ra) = started(1);
    let (b, rb) = started(2);
    link(&a, &b);
    (a, ra, b, rb)
}

/// Makes members 1 (`a`) and 2 (`b`) each other's peer and waits until both streams
/// are attached both ways.
pub fn link(a: &Transport, b: &Transport) {
    a.add_peer(2, &[url(b)]).unwrap();
    b.add_peer(1, &[url(a)]).unwrap();
    wait_until(Duration::from_secs(10), || streams_up(a) && streams_up(b));
}

pub fn streams_up(t: &Transport) -> bool {
    t.stats()
        .peers
        .iter()
        .all(|p| p.active && p.streams_attached == (true, true))
}

/// Polls `cond` every 10 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The I/O modes to run a test on: epoll always, io_uring where the kernel allows it.
pub fn io_modes() -> Vec<IoMode> {
    let mut v = vec![IoMode::Epoll];
    if rafthttp::io::probe_uring().is_ok() {
        v.push(IoMode::Uring);
    } else {
        eprintln!("SKIPPED on io_uring: unavailable here");
    }
    v
}
