//! The prober's cost in allocations: every 4 s each member probes each peer with
//! `GET /raft/probing` on a kept-alive connection; that exchange (client and server
//! side together) allocates a fixed few times, so a short latency row that a probe
//! lands in still reads 0.00 allocations per message.

#[path = "common/transport.rs"]
mod tc;

use std::time::{Duration, Instant};

use rafthttp::alloc_count::{thread_allocs, AllocTotals, CountingAlloc};
use rafthttp::transport::Transport;
use tc::{io_modes, start, streams_up, url, wait_until};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Probes answered so far, both ways.
fn probes(a: &Transport, b: &Transport) -> u64 {
    [a, b]
        .iter()
        .flat_map(|t| t.stats().peers)
        .map(|p| p.probes)
        .sum()
}

/// Allocations per probe (both members, client and server side) over `n` probes, after
/// the first few have opened the kept-alive connections. The test thread's own
/// allocations (reading the stats) are left out.
fn allocs_per_probe(a: &Transport, b: &Transport, n: u64) -> f64 {
    wait_until(Duration::from_secs(10), || probes(a, b) >= 6);
    let (start_total, start_mine, start_probes) =
        (AllocTotals::now(), thread_allocs(), probes(a, b));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now_probes = start_probes;
    while now_probes < start_probes + n {
        assert!(Instant::now() < deadline, "only {now_probes} probes");
        std::thread::sleep(Duration::from_millis(2));
        now_probes = probes(a, b);
    }
    let others = AllocTotals::now().since(start_total).allocs - (thread_allocs() - start_mine);
    others as f64 / (now_probes - start_probes) as f64
}

#[test]
fn a_probe_allocates_a_fixed_few_times() {
    for io in io_modes() {
        let fast = |c: &mut rafthttp::transport::Config| {
            c.probe_interval = Duration::from_millis(5);
        };
        let (a, _ra) = start(1, io, fast);
        let (b, _rb) = start(2, io, fast);
        a.add_peer(2, &[url(&b)]).unwrap();
        b.add_peer(1, &[url(&a)]).unwrap();
        wait_until(Duration::from_secs(10), || streams_up(&a) && streams_up(&b));
        let per_probe = allocs_per_probe(&a, &b, 400);
        eprintln!("{io:?}: {per_probe:.2} allocations per probe");
        // 7 now: the request head's copy, method and path; the handler's boxed future;
        // the answer's body; the response head's copy and reason. 25 before the
        // prober and the server stopped cloning URLs, routes and start lines.
        assert!(
            per_probe <= 8.0,
            "{io:?}: {per_probe:.2} allocations per probe"
        );
        a.stop();
        b.stop();
    }
}
