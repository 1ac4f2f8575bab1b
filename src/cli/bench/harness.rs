//! The anchor's set-up, for our transport: two members in one process on loopback, a
//! receiving `Raft` that only counts, a sender that calls `send` once per message from
//! one thread and keeps at most `window` messages in flight, and the counters each row
//! is measured with.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rafthttp::alloc_count::{thread_allocs, AllocTotals};
use rafthttp::io::{IoMode, IoThread, SocketOptions, ThreadScheduling};
use rafthttp::raftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use rafthttp::transport::{
    Config, PeerStats, ProcessError, Raft, SnapshotStatus, Transport, TransportError,
};
use rafthttp::usage::{cpu_time, peak_rss_kib, reset_peak_rss};
use rafthttp::workload::{heartbeat, AppSource};

use super::cpu_pair;
use super::report::Row;

/// How long a waiting harness thread spins (yielding) before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// The receiving (and reporting) side of a member: counts what raft would see.
pub struct Counter {
    processed: AtomicU64,
    /// Wake the waiter when `processed` reaches this (0: nobody waits).
    wake_at: AtomicU64,
    /// When the armed message arrived, in ns since `epoch`.
    fired_at: AtomicU64,
    snapshots_done: AtomicU64,
    snapshots_failed: AtomicU64,
    unreachable: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
    /// Threads asleep on `cv`, or about to be: [`Counter::wake`] makes its system call
    /// only when there are some.
    sleepers: AtomicU32,
    /// Notifications sent to sleepers (each a system call), for tests.
    notified: AtomicU64,
    epoch: Instant,
    snap_dir: PathBuf,
    inline: bool,
    /// `process` waits while this is set ([`prime`]).
    held: AtomicBool,
}

impl Counter {
    fn new(epoch: Instant, snap_dir: PathBuf, inline: bool) -> Arc<Counter> {
        Arc::new(Counter {
            processed: AtomicU64::new(0),
            wake_at: AtomicU64::new(0),
            fired_at: AtomicU64::new(0),
            snapshots_done: AtomicU64::new(0),
            snapshots_failed: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            sleepers: AtomicU32::new(0),
            notified: AtomicU64::new(0),
            epoch,
            snap_dir,
            inline,
            held: AtomicBool::new(false),
        })
    }

    /// Wakes the threads asleep on the counter, if any. Call it after publishing what
    /// they wait for.
    ///
    /// Why the check: a condition variable's notify is a system call whether or not
    /// anyone sleeps (std's futex condvar keeps no count), and the latency rows' waiter
    /// spins rather than sleeps; a wake-up call after every message held the worker's
    /// CPU, where the I/O thread waited to write the next message (the anchor's
    /// `Process` readies a goroutine, which costs no system call when its waiter spins).
    fn wake(&self) {
        // Pairs with the fence in `sleep_until`: either this sees the sleeper, or the
        // sleeper's check sees what the caller published before calling.
        fence(SeqCst);
        if self.sleepers.load(Relaxed) == 0 {
            return;
        }
        // Taking the lock orders this wake after a waiter's check; notifying after
        // releasing it spares the woken thread from blocking on the lock at once.
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()));
        self.cv.notify_all();
        self.notified.fetch_add(1, Relaxed);
    }

    /// Sleeps on the counter until `cond` holds, re-checked on every wake-up; false
    /// once `deadline` passes (`None`: never).
    fn sleep_until(&self, deadline: Option<Instant>, cond: impl Fn() -> bool) -> bool {
        let mut g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, Relaxed);
        fence(SeqCst);
        let mut met = true;
        while !cond() {
            let left = match deadline {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => Duration::from_millis(50),
            };
            if left.is_zero() {
                met = false;
                break;
            }
            g = self
                .cv
                .wait_timeout(g, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.sleepers.fetch_sub(1, Relaxed);
        drop(g);
        met
    }

    /// Waits until `cond` holds, re-checked on every wake-up; false on timeout. Spins
    /// for `spin` first, yielding the CPU on every turn.
    ///
    /// Why yield: a waiter that holds its CPU with pauses starves a thread of the
    /// transport's woken on that same CPU. The I/O threads run as `SCHED_BATCH`, which
    /// does not preempt on wake-up, so an I/O thread the kernel had put beside the
    /// waiter wrote the next message only once the spin ran out (50 µs), and from
    /// there the waiter slept, was woken beside the I/O thread again, and the state
    /// kept itself up (575 of a latency row's 10,000 samples over 30 µs, most at
    /// 76–87, in a run under a scheduler trace). Go's spinning scheduler threads yield
    /// too (`osyield`) while they look for work.
    fn wait(&self, timeout: Duration, spin: Duration, cond: impl Fn() -> bool) -> bool {
        let spin_until = Instant::now() + spin;
        while Instant::now() < spin_until {
            if cond() {
                return true;
            }
            std::thread::yield_now();
        }
        self.sleep_until(Some(Instant::now() + timeout), cond)
    }

    /// Blocks the calling worker while the counter is held ([`prime`]).
    #[cold]
    fn wait_released(&self) {
        self.sleep_until(None, || !self.held.load(Acquire));
    }

    /// Lets a held worker go on.
    fn release(&self) {
        self.held.store(false, Release);
        self.wake();
    }

    /// Waits until `target` messages have been processed.
    fn wait_processed(&self, target: u64, timeout: Duration) -> bool {
        self.wake_at.store(target, Relaxed);
        // The sender waits for a third of the window to drain: a long wait, so it
        // sleeps at once, as the anchor's goroutine blocks on its channel.
        let ok = self.wait(timeout, Duration::ZERO, || {
            self.processed.load(Acquire) >= target
        });
        self.wake_at.store(0, Relaxed);
        ok
    }
}

impl Raft for Counter {
    fn process(&self, m: Message) -> Result<(), ProcessError> {
        self.process_borrowed(&m)
    }

    /// The counter keeps nothing, so it borrows: the transport recycles each message.
    fn borrows(&self) -> bool {
        true
    }

    /// Counting never blocks; when `inline` is set the transport calls it on its I/O
    /// thread (`--inline`).
    fn inline(&self) -> bool {
        self.inline
    }

    fn process_borrowed(&self, _m: &Message) -> Result<(), ProcessError> {
        if self.held.load(Acquire) {
            self.wait_released();
        }
        // The arrival time is stored before the count is published, so a waiter that
        // sees the count sees this message's time. (Pipeline messages are processed on
        // several threads at once; the count itself is an atomic add.)
        let w = self.wake_at.load(Acquire);
        if w != 0 && self.processed.load(Acquire) + 1 >= w {
            self.fired_at
                .store(self.epoch.elapsed().as_nanos() as u64, Release);
        }
        let n = self.processed.fetch_add(1, AcqRel) + 1;
        // Disarm only the target this message reached, as the anchor does: once the
        // count is out, the waiter may already have armed its next message's target,
        // which a plain store of 0 would wipe out; that message would then store no
        // arrival time and be measured against this one's (a latency of 0).
        if w != 0 && n >= w && self.wake_at.compare_exchange(w, 0, AcqRel, Relaxed).is_ok() {
            self.wake();
        }
        Ok(())
    }

    fn is_id_removed(&self, _id: u64) -> bool {
        false
    }

    fn report_unreachable(&self, _id: u64) {
        self.unreachable.fetch_add(1, Relaxed);
    }

    fn report_snapshot(&self, _id: u64, status: SnapshotStatus) {
        match status {
            SnapshotStatus::Finish => self.snapshots_done.fetch_add(1, Relaxed),
            SnapshotStatus::Failure => self.snapshots_failed.fetch_add(1, Relaxed),
        };
        self.wake();
    }

    /// Saves the database into the snapshot directory, as etcd's `SaveDBFrom` does
    /// (the anchor saves into /dev/shm, so no disk is measured). The files stay until the
    /// row is over, as the anchor's do ([`Counter::remove_snapshots`]).
    fn receive_snapshot(
        &self,
        env: &Message,
        data: &mut dyn std::io::BufRead,
    ) -> Result<(), String> {
        let path = self
            .snap_dir
            .join(format!("{:016x}.snap.db", env.snapshot.metadata.index));
        let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        // Straight from the pieces as they arrived (etcd's snapshotter copies through a
        // 32 KiB buffer; writing from the pieces saves that copy).
        loop {
            let piece = match data.fill_buf() {
                Ok([]) => break,
                Ok(piece) => piece,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            f.write_all(piece).map_err(|e| e.to_string())?;
            let n = piece.len();
            data.consume(n);
        }
        f.flush().map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Counter {
    /// Removes the snapshots saved so far, once a row is measured (the anchor empties
    /// its snapshot directory after the row, outside the timed part).
    pub fn remove_snapshots(&self) {
        if let Ok(dir) = std::fs::read_dir(&self.snap_dir) {
            for entry in dir.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A member: its transport and counter.
pub struct Member {
    /// The transport.
    pub transport: Transport,
    /// What it received.
    pub counter: Arc<Counter>,
}

/// Starts member `id` on 127.0.0.1 with etcd's defaults.
pub fn member(id: u64, setup: &MemberSetup) -> Result<Member, TransportError> {
    let counter = Counter::new(setup.epoch, setup.snap_dir.clone(), setup.inline);
    let mut cfg = Config::new(id, 0xbe4c);
    cfg.listen = vec!["127.0.0.1:0".parse().expect("address")];
    cfg.io = setup.io;
    cfg.scheduling = setup.sched;
    cfg.linger = setup.linger;
    cfg.direct_send = setup.direct_send;
    cfg.io_thread = setup.io_thread.clone();
    cfg.socket = setup.socket;
    if let Some(bytes) = setup.recv_backlog {
        cfg.queues.recv_backlog = bytes;
    }
    let transport = Transport::start(cfg, counter.clone())?;
    Ok(Member { transport, counter })
}

/// How the bench's members are set up.
pub struct MemberSetup {
    /// The I/O backend.
    pub io: IoMode,
    /// The I/O thread they share, if they do.
    pub io_thread: Option<Arc<IoThread>>,
    /// Whether they process inline.
    pub inline: bool,
    /// Their I/O threads' scheduling (when they start their own).
    pub sched: ThreadScheduling,
    /// Their stream readers' linger.
    pub linger: Duration,
    /// Whether their senders write a lone message on an idle stream themselves.
    pub direct_send: bool,
    /// The time latencies are measured from.
    pub epoch: Instant,
    /// Where received snapshots are saved.
    pub snap_dir: PathBuf,
    /// Options for the members' sockets.
    pub socket: SocketOptions,
    /// The members' `QueueSizes::recv_backlog`, if not the default.
    pub recv_backlog: Option<usize>,
}

/// The URL of `m`'s peer port.
pub fn url(m: &Member) -> String {
    format!("http://{}", m.transport.local_addrs()[0])
}

/// Polls `m`'s figures for `peer` every 10 ms until `ready` holds; false after `timeout`.
fn wait_peer(m: &Member, peer: u64, timeout: Duration, ready: impl Fn(&PeerStats) -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if m.transport
            .stats()
            .peers
            .iter()
            .any(|p| p.id == peer && ready(p))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Waits until `m`'s writers towards `peer` have both streams attached and the peer is
/// active, then 300 ms more, as the anchor does.
pub fn wait_streams(m: &Member, peer: u64, timeout: Duration) -> bool {
    let up = wait_peer(m, peer, timeout, |p| {
        p.active && p.streams_attached == (true, true)
    });
    if up {
        std::thread::sleep(Duration::from_millis(300));
    }
    up
}

/// Waits until `m`'s prober has had an answer from `peer`. The first probe comes one
/// probe interval (4 s) after the peer is added and dials a connection that later probes
/// reuse: set-up, like the streams' dials, kept out of the measured rows (it allocates
/// about 30 times on each member, once).
pub fn wait_probed(m: &Member, peer: u64, timeout: Duration) -> bool {
    wait_peer(m, peer, timeout, |p| p.probes > 0)
}

/// What a message source is.
pub enum Source {
    /// Contiguous MsgApps.
    App(AppSource),
    /// Heartbeats.
    Heartbeat(u64, u64),
}

impl Source {
    /// Overwrites `m` with message `k`, reusing its entry capacity: the harness sends
    /// one message by reference and fills it again (as the anchor's harness reuses a
    /// ring of entries), so building messages allocates nothing per message.
    fn fill(&mut self, k: u64, m: &mut Message) {
        match self {
            Source::App(s) => s.fill(m),
            Source::Heartbeat(from, to) => {
                let next = heartbeat(*from, *to, k);
                if m.msg_type == next.msg_type && m.from == next.from && m.to == next.to {
                    // The previous heartbeat: only the commit index changes (building and
                    // moving a whole message was 8% of the sending thread).
                    m.commit = next.commit;
                } else {
                    *m = next;
                }
            }
        }
    }
}

/// Figures sampled at both ends of a row.
#[derive(Clone, Copy)]
struct Sample {
    t: Instant,
    allocs: AllocTotals,
    cpu: Duration,
    unreachable: u64,
    send_failures: u64,
    recv_failures: u64,
    wire: u64,
    worker_moves: u64,
    worker_sleeps: u64,
    worker_looks: u64,
    receive_pauses: u64,
    linger_hits: u64,
    linger_misses: u64,
    direct_writes: u64,
}

fn sample(tx: &Member, rx: &Member) -> Sample {
    let (mut sf, mut rf, mut moves, mut sleeps, mut pauses) = (0, 0, 0, 0, 0);
    let (mut hits, mut misses, mut looks, mut direct) = (0, 0, 0, 0);
    for m in [tx, rx] {
        for p in m.transport.stats().peers {
            sf += p.sent_failures;
            rf += p.received_failures;
            moves += p.worker_moves;
            sleeps += p.worker_sleeps;
            looks += p.worker_looks;
            pauses += p.receive_pauses;
            hits += p.linger_hits;
            misses += p.linger_misses;
            direct += p.direct_writes;
        }
    }
    Sample {
        t: Instant::now(),
        allocs: AllocTotals::now(),
        cpu: cpu_time(),
        unreachable: tx.counter.unreachable.load(Relaxed),
        send_failures: sf,
        recv_failures: rf,
        wire: tx.transport.wire_bytes() + rx.transport.wire_bytes(),
        worker_moves: moves,
        worker_sleeps: sleeps,
        worker_looks: looks,
        receive_pauses: pauses,
        linger_hits: hits,
        linger_misses: misses,
        direct_writes: direct,
    }
}

fn fill(row: &mut Row, a: Sample, b: Sample, msgs: u64, harness_allocs: u64) {
    let wall = (b.t - a.t).as_secs_f64();
    let n = msgs as f64;
    let cpu = (b.cpu - a.cpu).as_secs_f64();
    let allocs = b.allocs.since(a.allocs);
    row.msgs = msgs;
    row.seconds = wall;
    row.msgs_per_sec = n / wall;
    row.entries_per_sec = n * row.entries_per_msg as f64 / wall;
    row.payload_mb_per_sec = n * (row.entries_per_msg * row.entry_bytes) as f64 / wall / 1e6;
    row.allocs_per_msg = allocs.allocs.saturating_sub(harness_allocs) as f64 / n;
    row.alloc_bytes_per_msg = allocs.bytes as f64 / n;
    row.cpu_us_per_msg = cpu * 1e6 / n;
    row.cpu_cores = cpu / wall;
    row.report_unreachable = (b.unreachable - a.unreachable) as f64;
    row.send_failures = (b.send_failures - a.send_failures) as f64;
    row.recv_failures = (b.recv_failures - a.recv_failures) as f64;
    row.wire_bytes_per_msg = (b.wire - a.wire) as f64 / n;
    row.worker_moves = b.worker_moves - a.worker_moves;
    row.worker_sleeps = b.worker_sleeps - a.worker_sleeps;
    row.worker_looks = b.worker_looks - a.worker_looks;
    row.receive_pauses = b.receive_pauses - a.receive_pauses;
    row.direct_writes = b.direct_writes - a.direct_writes;
    row.linger_hits = b.linger_hits - a.linger_hits;
    row.linger_misses = b.linger_misses - a.linger_misses;
}

/// Sends `n` messages one per call, keeping `sent − processed` under `window` (resuming
/// at two thirds of it). Returns how many were never delivered and the allocations the
/// harness itself made building messages.
fn pump(
    tx: &Member,
    rx: &Member,
    src: &mut Source,
    n: u64,
    window: u64,
    timeout: Duration,
) -> (u64, u64) {
    let base = rx.counter.processed.load(Relaxed);
    let resume = window * 2 / 3;
    let mut harness = 0;
    let mut m = Message::default();
    for k in 0..n {
        if k - (rx.counter.processed.load(Relaxed) - base) >= window
            && !rx.counter.wait_processed(base + k - resume, timeout)
        {
            return (n - (rx.counter.processed.load(Relaxed) - base), harness);
        }
        let before = thread_allocs();
        src.fill(k, &mut m);
        harness += thread_allocs() - before;
        tx.transport.send_ref(&m);
    }
    if !rx.counter.wait_processed(base + n, timeout) {
        return (n - (rx.counter.processed.load(Relaxed) - base), harness);
    }
    (0, harness)
}

/// Fills the receiver's queue to the window once, before a row's warm-up: its worker is
/// held at its first message while `window − 1` messages are sent (the most the pump
/// ever has in flight), until they have all arrived, then let go. The receive queue's
/// pages and shells and the readers' buffers then grow, here, to the deepest queue the
/// row can reach; without it they grow whenever the row reaches a new depth, which on a
/// busy machine happens long after any fixed warm-up (docs/performance.md). Returns the
/// allocations it took (both members), and 0 when the receiver processes inline (it has
/// no receive queue, and holding its I/O thread would stall the reads instead).
fn prime(tx: &Member, rx: &Member, src: &mut Source, window: u64) -> u64 {
    if rx.counter.inline || window < 2 {
        return 0;
    }
    let before = AllocTotals::now();
    let base = rx.counter.processed.load(Relaxed);
    rx.counter.held.store(true, Release);
    let mut m = Message::default();
    for k in 0..window - 1 {
        src.fill(k, &mut m);
        tx.transport.send_ref(&m);
    }
    // Arrived: what the receiver read and queued has stopped changing (its worker is held,
    // the sender has nothing left in its window). Loopback moves the window in
    // milliseconds; 100 ms of no change is all of it.
    let received = || {
        rx.transport.stats().peers.iter().fold((0, 0), |(b, q), p| {
            (b + p.received_bytes, q + p.receive_queued_bytes)
        })
    };
    let end = Instant::now() + Duration::from_secs(10);
    let (mut last, mut still) = (received(), 0);
    while still < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        let now = received();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    rx.counter.release();
    if !rx
        .counter
        .wait_processed(base + window - 1, Duration::from_secs(30))
    {
        // Not fatal: the row is measured from where the count stands, and a loss shows
        // in its own drop counters if it goes on.
        eprintln!(
            "rafthttp bench: WARNING: priming: {} of {} messages arrived",
            rx.counter.processed.load(Relaxed) - base,
            window - 1
        );
    }
    drop(m);
    AllocTotals::now().since(before).allocs
}

/// A throughput row. With `prime`, the receiver's queue is first filled to the window
/// once ([`prime`]).
#[allow(clippy::too_many_arguments)]
pub fn throughput(
    name: &str,
    path: &str,
    tx: &Member,
    rx: &Member,
    src: &mut Source,
    n: u64,
    warm: u64,
    window: u64,
    per: u64,
    size: u64,
    prime_queue: bool,
) -> Row {
    let mut row = Row::new(name, path, "throughput", per, size);
    if prime_queue {
        row.prime_allocs = prime(tx, rx, src, window);
    }
    if warm > 0 {
        pump(tx, rx, src, warm, window, Duration::from_secs(30));
    }
    let pair_before = cpu_pair::round_trip_ns(cpu_pair::TRIPS);
    reset_peak_rss();
    let a = sample(tx, rx);
    let (missing, harness) = pump(tx, rx, src, n, window, Duration::from_secs(30));
    let b = sample(tx, rx);
    row.cpu_pair_ns = cpu_pair::both(pair_before, cpu_pair::round_trip_ns(cpu_pair::TRIPS));
    fill(&mut row, a, b, n, harness);
    row.missing = missing as f64;
    row.peak_rss_kib = peak_rss_kib();
    row
}

/// One latency sample: when the message was sent (ns since the members' epoch) and how
/// long it took to reach `process` (ns).
pub type LatencySample = (u64, u64);

/// A latency row: one message in flight, `send` to `process` time. Also returns each
/// measured message's sample, in sending order.
#[allow(clippy::too_many_arguments)]
pub fn latency(
    name: &str,
    path: &str,
    tx: &Member,
    rx: &Member,
    src: &mut Source,
    n: u64,
    warm: u64,
    per: u64,
    size: u64,
) -> (Row, Vec<LatencySample>) {
    let mut row = Row::new(name, path, "latency", per, size);
    let mut samples: Vec<LatencySample> = Vec::with_capacity(n as usize);
    let mut m = Message::default();
    let (mut missing, mut harness) = (0u64, 0u64);
    let pair_before = cpu_pair::round_trip_ns(cpu_pair::TRIPS);
    reset_peak_rss();
    let mut a = sample(tx, rx);
    let epoch = rx.counter.epoch;
    for k in 0..warm + n {
        if k == warm {
            a = sample(tx, rx);
            harness = 0;
        }
        let target = rx.counter.processed.load(Relaxed) + 1;
        let before = thread_allocs();
        src.fill(k, &mut m);
        harness += thread_allocs() - before;
        rx.counter.wake_at.store(target, Relaxed);
        let t0 = epoch.elapsed().as_nanos() as u64;
        tx.transport.send_ref(&m);
        // One message in flight: spin briefly (yielding) before sleeping, as Go's
        // scheduler does before parking an idle thread (the anchor's waiting goroutine
        // gets that).
        if !rx.counter.wait(Duration::from_secs(5), SPIN, || {
            rx.counter.processed.load(Acquire) >= target
        }) {
            missing += 1;
            continue;
        }
        if k >= warm {
            samples.push((t0, rx.counter.fired_at.load(Acquire).saturating_sub(t0)));
        }
    }
    let b = sample(tx, rx);
    row.cpu_pair_ns = cpu_pair::both(pair_before, cpu_pair::round_trip_ns(cpu_pair::TRIPS));
    fill(&mut row, a, b, n, harness);
    row.missing = missing as f64;
    let mut lat: Vec<u64> = samples.iter().map(|s| s.1).collect();
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e3
    };
    (row.p50_us, row.p90_us, row.p99_us, row.p999_us, row.max_us) =
        (q(0.5), q(0.9), q(0.99), q(0.999), q(1.0));
    row.peak_rss_kib = peak_rss_kib();
    (row, samples)
}

/// `count` snapshots of `size` bytes through `POST /raft/snapshot`, one at a time.
pub fn snapshots(tx: &Member, rx: &Member, rx_id: u64, count: u64, size: u64) -> Row {
    let mut row = Row::new(
        &format!("snapshot {} MiB", size >> 20),
        "snapshot",
        "snapshot",
        1,
        size,
    );
    let body: Bytes = (0..size).map(|i| (i * 7) as u8).collect::<Vec<u8>>().into();
    let pair_before = cpu_pair::round_trip_ns(cpu_pair::TRIPS);
    reset_peak_rss();
    let a = sample(tx, rx);
    let mut missing = 0;
    let c = &tx.counter;
    for k in 0..count {
        let (ok, failed) = (
            c.snapshots_done.load(Relaxed),
            c.snapshots_failed.load(Relaxed),
        );
        let m = Message {
            msg_type: MessageType::MsgSnap as i32,
            from: 1,
            to: rx_id,
            term: 1,
            snapshot: Snapshot {
                data: Some(Bytes::from_static(b"anchor")),
                metadata: SnapshotMetadata {
                    index: 1_000_000 + k,
                    term: 1,
                    ..Default::default()
                },
            },
            ..Default::default()
        };
        // The database is in memory, as the anchor's `bytes.NewReader(body)` is: it goes
        // to the socket by reference, as Go's chunked writer sends a bytes.Reader.
        tx.transport.send_snapshot_bytes(m, body.clone());
        c.wait(Duration::from_secs(60), Duration::ZERO, || {
            c.snapshots_done.load(Relaxed) > ok || c.snapshots_failed.load(Relaxed) > failed
        });
        if c.snapshots_done.load(Relaxed) <= ok {
            missing += 1;
        }
    }
    let b = sample(tx, rx);
    row.cpu_pair_ns = cpu_pair::both(pair_before, cpu_pair::round_trip_ns(cpu_pair::TRIPS));
    rx.counter.remove_snapshots();
    fill(&mut row, a, b, count, 0);
    row.missing = missing as f64;
    row.peak_rss_kib = peak_rss_kib();
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> Arc<Counter> {
        Counter::new(Instant::now(), std::env::temp_dir(), false)
    }

    #[test]
    fn a_message_nobody_sleeps_for_wakes_nobody() {
        let c = counter();
        c.wake_at.store(1, Relaxed);
        c.process_borrowed(&Message::default()).unwrap();
        assert_eq!(c.processed.load(Relaxed), 1);
        assert_ne!(
            c.fired_at.load(Relaxed),
            0,
            "the armed message's time is kept"
        );
        assert_eq!(c.wake_at.load(Relaxed), 0, "the target is disarmed");
        assert_eq!(c.notified.load(Relaxed), 0, "no system call for nobody");
    }

    #[test]
    fn a_sleeping_waiter_is_notified_by_the_message_it_waits_for() {
        let c = counter();
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.wait_processed(1, Duration::from_secs(10)))
        };
        // The waiter counts itself under the lock before its check, so once it is
        // counted, the wake must reach it.
        let end = Instant::now() + Duration::from_secs(10);
        while c.sleepers.load(SeqCst) == 0 {
            assert!(Instant::now() < end, "the waiter never went to sleep");
            std::thread::yield_now();
        }
        c.process_borrowed(&Message::default()).unwrap();
        assert!(waiter.join().unwrap(), "the waiter saw its message");
        assert_eq!(c.notified.load(Relaxed), 1);
        assert_eq!(c.sleepers.load(Relaxed), 0);
    }

    #[test]
    fn a_held_worker_sleeps_until_released() {
        let c = counter();
        c.held.store(true, Release);
        let worker = {
            let c = c.clone();
            std::thread::spawn(move || c.process_borrowed(&Message::default()))
        };
        let end = Instant::now() + Duration::from_secs(10);
        while c.sleepers.load(SeqCst) == 0 {
            assert!(Instant::now() < end, "the worker never went to sleep");
            std::thread::yield_now();
        }
        assert_eq!(c.processed.load(Relaxed), 0, "held: nothing processed");
        c.release();
        worker.join().unwrap().unwrap();
        assert_eq!(c.processed.load(Relaxed), 1);
        assert_eq!(c.notified.load(Relaxed), 1);
    }
}
