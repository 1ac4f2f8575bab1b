//! Keeps a receive worker beside the thread that wakes it while messages come one at a
//! time.
//!
//! Why: a worker woken for one message at a time runs where the kernel last ran it. If
//! that is not the waking I/O thread's CPU but one that another thread holds (on a
//! small machine, the application thread that sent a message and waits for the
//! answer), the worker waits for that CPU, and the I/O thread, with nothing left to do,
//! sleeps; each message then pays a wake-up of a sleeping CPU as well (on a VM, tens of
//! µs). The placement keeps itself up: the kernel wakes the worker where it ran last.
//! Measured on the 2-vCPU VM of docs/performance.md: `rafthttp bench`'s latency msgapp
//! row at 40–56 µs p50 instead of 8–9 in about a third of the runs after a throughput
//! row. Moving the worker once to the waker's CPU ends it; from there the kernel keeps
//! it there by itself.
//!
//! [`Placement`] decides when (plain state, no clocks or system calls): after
//! [`STREAK`] wake-ups in a row that each found one lone message after a wait of at
//! least [`LONG_WAIT`], so never while messages flow faster (a worker moved beside a
//! busy I/O thread would take that thread's CPU from it). [`current_cpu`] and
//! [`move_to`] are the system calls it makes ([`allowed_cpus`] and [`pin_to`], for tests
//! and the bench, read and set a thread's CPUs the same way).

use std::time::Duration;

/// Wake-ups in a row, each for one lone message after a long wait, before a worker
/// not on its waker's CPU is moved there.
pub const STREAK: u32 = 16;

/// A wait for messages at least this long counts as messages coming one at a time
/// (a flowing stream hands the worker its next page within a few µs).
pub const LONG_WAIT: Duration = Duration::from_micros(20);

/// Counts the worker's one-at-a-time wake-ups and says when to check its placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    streak: u32,
}

impl Placement {
    /// The worker took a page: it had waited `waited` for it (`None`: it did not
    /// wait), and `lone` if the page held one message with nothing queued behind it.
    /// True when the worker should now check that it runs on its waker's CPU (once
    /// every [`STREAK`] such wake-ups in a row).
    pub fn took(&mut self, waited: Option<Duration>, lone: bool) -> bool {
        if lone && waited.is_some_and(|w| w >= LONG_WAIT) {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        if self.streak >= STREAK {
            self.streak = 0;
            return true;
        }
        false
    }
}

/// The CPU the calling thread runs on now, if the kernel says.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes nothing and returns a number (−1 on error).
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Bytes of a CPU set, as the affinity calls take it.
const CPU_SET_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

/// Moves the calling thread to `cpu`, then gives it back the CPUs it was allowed
/// before, so the kernel places it as it did from there on. False (and nothing
/// changed) if `cpu` is not one of those or the kernel refuses.
pub fn move_to(cpu: usize) -> bool {
    // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed; the calls read or
    // write only the sets passed, of the size passed; `CPU_SET`/`CPU_ISSET` check
    // `cpu` against the set's size.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, CPU_SET_SIZE, &mut allowed) != 0
            || cpu >= libc::CPU_SETSIZE as usize
            || !libc::CPU_ISSET(cpu, &allowed)
        {
            return false;
        }
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        if libc::sched_setaffinity(0, CPU_SET_SIZE, &only) != 0 {
            return false;
        }
        // The thread is on `cpu` now; allowing the rest again does not move it.
        libc::sched_setaffinity(0, CPU_SET_SIZE, &allowed) == 0
    }
}

/// The CPUs the calling thread may run on, in order (`None` if the kernel will not say).
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain data, valid zeroed; the call writes only the set
    // passed, of the size passed; `CPU_ISSET` checks its index against the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, CPU_SET_SIZE, &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

/// Keeps the calling thread on `cpu` alone, for good (unlike [`move_to`]). False if the
/// kernel refuses.
pub fn pin_to(cpu: usize) -> bool {
    // SAFETY: as in `allowed_cpus`; `CPU_SET` checks `cpu` against the set's size.
    unsafe {
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        libc::sched_setaffinity(0, CPU_SET_SIZE, &only) == 0
    }
}

/// Test helpers for threads' CPU sets, failing the test where the kernel refuses.
#[cfg(test)]
pub(crate) mod test_cpus {
    /// The CPUs the calling thread may run on.
    pub fn allowed() -> Vec<usize> {
        super::allowed_cpus().expect("sched_getaffinity")
    }

    /// Keeps the calling thread on `cpu` alone.
    pub fn pin(cpu: usize) {
        assert!(super::pin_to(cpu), "sched_setaffinity to CPU {cpu}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Option<Duration> = Some(LONG_WAIT);

    #[test]
    fn a_streak_of_lone_long_waits_asks_once() {
        let mut p = Placement::default();
        for _ in 0..STREAK - 1 {
            assert!(!p.took(LONG, true));
        }
        assert!(p.took(LONG, true), "the STREAK-th asks");
        // And starts over.
        for _ in 0..STREAK - 1 {
            assert!(!p.took(Some(Duration::from_millis(5)), true));
        }
        assert!(p.took(LONG, true));
    }

    #[test]
    fn flowing_messages_never_ask() {
        let mut p = Placement::default();
        for i in 0..10 * STREAK {
            // Short waits, no wait, or several messages per page: a stream that flows.
            let (waited, lone) = match i % 3 {
                0 => (Some(LONG_WAIT - Duration::from_nanos(1)), true),
                1 => (None, true),
                _ => (LONG, false),
            };
            assert!(!p.took(waited, lone), "asked at {i}");
        }
    }

    #[test]
    fn one_busy_wake_up_breaks_the_streak() {
        let mut p = Placement::default();
        for _ in 0..STREAK - 1 {
            assert!(!p.took(LONG, true));
        }
        assert!(!p.took(LONG, false));
        for _ in 0..STREAK - 1 {
            assert!(!p.took(LONG, true));
        }
        assert!(p.took(LONG, true));
    }

    #[test]
    fn moving_keeps_the_allowed_cpus_and_refuses_others() {
        // On a thread of its own: the affinity set here must not leak into other tests.
        std::thread::spawn(|| {
            let allowed = test_cpus::allowed;
            let before = allowed();
            let last = *before.last().expect("some CPU is allowed");
            assert!(move_to(last));
            assert_eq!(current_cpu(), Some(last), "runs where it was moved");
            assert_eq!(allowed(), before, "and may run anywhere again");
            assert!(!move_to(libc::CPU_SETSIZE as usize));
            if let Some(outside) = (0..libc::CPU_SETSIZE as usize).find(|c| !before.contains(c)) {
                assert!(!move_to(outside));
                assert_eq!(allowed(), before);
            }
        })
        .join()
        .unwrap();
    }
}
