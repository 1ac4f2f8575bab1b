//! How far apart the machine's first two CPUs are: the round trip of one cache line
//! between two threads pinned to them, recorded with every bench run.
//!
//! Why: on a VM the host decides which physical cores the vCPUs run on, and changes it
//! while we run. On the 2-vCPU AMD EPYC VM of docs/performance.md (thirteenth session)
//! the round trip was 65–70 ns in some minutes and 320–340 ns in others, and the stream
//! rows, whose sender, I/O thread and worker hand every message's bytes from one CPU to
//! the other, ran 2.5–4 times slower per message in the far placement (batched 5.8–8 M
//! entries/s against 21–22 M), while the Go anchor, whose costs lie elsewhere, barely
//! moved. A table is only comparable with the placement it was measured in.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Arc;
use std::time::Instant;

use rafthttp::transport::worker_placement;

/// Round trips per measurement (about 7–35 ms).
pub const TRIPS: u64 = 100_000;

/// Two measurements as a row records them (0 for one not taken).
pub fn both(before: Option<f64>, after: Option<f64>) -> [f64; 2] {
    [before.unwrap_or(0.0), after.unwrap_or(0.0)]
}

/// One cache line, alone on it.
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// Both threads' pinning outcome: 0 not yet, 1 pinned, 2 failed.
#[derive(Default)]
struct Ready([AtomicU8; 2]);

impl Ready {
    /// Records this side's outcome and waits for the other's; true if both pinned.
    fn meet(&self, me: usize, pinned: bool) -> bool {
        self.0[me].store(if pinned { 1 } else { 2 }, Release);
        loop {
            match self.0[1 - me].load(Acquire) {
                0 => std::thread::yield_now(),
                other => return pinned && other == 1,
            }
        }
    }
}

/// The first two CPUs this process may run on.
fn first_two_cpus() -> Option<(usize, usize)> {
    let cpus = worker_placement::allowed_cpus()?;
    Some((*cpus.first()?, *cpus.get(1)?))
}

/// Bounces a cache line `trips` times between two threads pinned to the first two CPUs
/// allowed, and returns the mean round trip in ns. `None` with fewer than two CPUs or
/// when a thread cannot be pinned (two spinning threads on one CPU would take a time
/// slice per trip). The calling thread is not pinned.
pub fn round_trip_ns(trips: u64) -> Option<f64> {
    let (a, b) = first_two_cpus()?;
    let line = Arc::new(Line::default());
    let ready = Arc::new(Ready::default());
    let gave_up = Arc::new(AtomicBool::new(false));
    let (line2, ready2, gave_up2) = (line.clone(), ready.clone(), gave_up.clone());
    let answerer = std::thread::Builder::new()
        .name("rafthttp-cpu-pair".into())
        .spawn(move || {
            if !ready2.meet(1, worker_placement::pin_to(b)) {
                return;
            }
            for i in 0..trips {
                while line2.0.load(Acquire) != 2 * i + 1 {
                    if gave_up2.load(Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                line2.0.store(2 * i + 2, Release);
            }
        })
        .ok()?;
    let measured = std::thread::scope(|s| {
        s.spawn(|| {
            if !ready.meet(0, worker_placement::pin_to(a)) {
                gave_up.store(true, Relaxed);
                return None;
            }
            let start = Instant::now();
            for i in 0..trips {
                line.0.store(2 * i + 1, Release);
                while line.0.load(Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
            }
            Some(start.elapsed().as_nanos() as f64 / trips.max(1) as f64)
        })
        .join()
        .ok()
        .flatten()
    });
    let _ = answerer.join();
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_is_measured_wherever_two_cpus_are_allowed() {
        let two = first_two_cpus().is_some();
        let ns = round_trip_ns(20_000);
        assert_eq!(ns.is_some(), two, "{ns:?}");
        if let Some(ns) = ns {
            // A cache line's trip between two cores: tens to hundreds of ns, never 0
            // (which a loop that did not wait for the other side would give).
            assert!(ns > 5.0 && ns < 100_000.0, "{ns} ns");
        }
    }
}
