//! What the process has used, for benchmarks and reports: CPU time (getrusage) and
//! peak resident memory (VmHWM), whose peak can be reset between measurements; and
//! the monotonic clock that `perf` stamps its events with.

use std::time::Duration;

/// User plus system CPU time of the whole process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which is valid and zeroed;
    // RUSAGE_SELF is a valid target.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::new(
            t.tv_sec.max(0) as u64,
            (t.tv_usec.clamp(0, 999_999) as u32) * 1000,
        )
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CLOCK_MONOTONIC now, in ns: the clock `perf record -k CLOCK_MONOTONIC` stamps events
/// with, and the one `std::time::Instant` reads on Linux.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a pointer to a live, owned
    // one; CLOCK_MONOTONIC always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.max(0) as u64 * 1_000_000_000 + ts.tv_nsec.clamp(0, 999_999_999) as u64
}

/// Resets the kernel's peak-RSS mark, so that the next [`peak_rss_kib`] covers only
/// what follows (Linux `clear_refs` 5; a no-op where unsupported).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size in KiB (VmHWM), or 0 when unknown.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_rss_is_seen() {
        let before = cpu_time();
        let mut x = 0u64;
        let end = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < end {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_time() > before);
        reset_peak_rss();
        let v = vec![1u8; 32 << 20];
        std::hint::black_box(&v);
        assert!(peak_rss_kib() >= 32 * 1024, "{}", peak_rss_kib());
    }

    #[test]
    fn the_monotonic_clock_is_the_one_instant_reads() {
        let (a, i) = (monotonic_ns(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (b, elapsed) = (monotonic_ns(), i.elapsed());
        let (advanced, elapsed) = (b - a, elapsed.as_nanos() as u64);
        assert!(
            advanced >= 20_000_000,
            "advanced {advanced} ns over a 20 ms sleep"
        );
        // The same clock: the two spans differ by the few ns between the paired reads.
        assert!(
            advanced.abs_diff(elapsed) < 5_000_000,
            "{advanced} ns against {elapsed}"
        );
    }
}
