//! Giving written-out buffers back to memory, so that the thread that refills them does
//! not wait on another CPU for each line.
//!
//! A stream's frames are written by the sending thread and read by the kernel's copy on
//! the I/O thread's CPU; then the sending thread writes the same buffer again. After the
//! copy, each line of it is held by both CPUs, and the sender's first store to a line
//! waits for the other CPU to let go of its copy: a round trip between the two CPUs per
//! 64 bytes, which the hardware's prefetchers do not start early (the line is already
//! in the sender's cache, only not exclusively), nor does `prefetchw` (measured). On
//! 1x64B that was most of the sender's time when the host put the two vCPUs on cores
//! that share no cache (docs/performance.md, seventeenth session). Flushing the lines
//! once the copy is done costs the I/O thread a few nanoseconds a line, and the
//! sender's stores then miss to memory, which its prefetchers do stream.
//!
//! Only x86-64 with `CLFLUSHOPT` flushes; elsewhere [`evict`] does nothing.

/// Bytes in a cache line, the step [`evict`] takes.
pub const LINE: usize = 64;

/// Writes back and drops from every CPU's caches the lines `bytes` lies on. Changes
/// nothing the program can read: memory keeps its contents, only where they are cached
/// moves. A no-op where `CLFLUSHOPT` is missing.
pub fn evict(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if !bytes.is_empty() && has_clflushopt() {
        let start = bytes.as_ptr() as usize & !(LINE - 1);
        let end = bytes.as_ptr() as usize + bytes.len();
        let mut line = start;
        while line < end {
            // SAFETY: `line` is on a line that holds at least one byte of `bytes`, a
            // live borrow, so its page is mapped and readable: CLFLUSHOPT faults only
            // on an address that is not. It writes no memory and reads none the
            // program sees; it only moves the line out of the caches (weakly ordered,
            // so the next locked instruction, such as the queue's lock, orders it).
            unsafe {
                std::arch::asm!(
                    "clflushopt [{line}]",
                    line = in(reg) line,
                    options(nostack, preserves_flags, readonly)
                );
            }
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Whether [`evict`] does anything on this CPU.
pub fn can_evict() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_clflushopt()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn has_clflushopt() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    // 0: not asked yet, 1: no, 2: yes.
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // CPUID leaf 7, sub-leaf 0: EBX bit 23 is CLFLUSHOPT (when the CPU has leaf 7).
            let max_leaf = std::arch::x86_64::__cpuid(0).eax;
            let has = max_leaf >= 7 && std::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 23) != 0;
            KNOWN.store(if has { 2 } else { 1 }, Relaxed);
            has
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicting_keeps_every_byte_at_any_alignment_and_length() {
        let data: Vec<u8> = (0..4 * LINE + 3).map(|i| (i * 7 + 1) as u8).collect();
        let copy = data.clone();
        for start in [0, 1, LINE - 1, LINE, LINE + 5] {
            for len in [0, 1, LINE - 1, LINE, LINE + 1, 2 * LINE + 7] {
                evict(&data[start..start + len]);
                assert_eq!(data, copy, "start {start} len {len}");
            }
        }
        // The empty slice of a Vec with no allocation: a dangling pointer (address 1),
        // on no line that may be flushed.
        evict(&Vec::<u8>::new());
        evict(&data[3..3]);
    }

    #[test]
    fn evicting_a_buffer_another_thread_writes_next_keeps_what_it_wrote() {
        let mut buf = vec![0u8; 64 * LINE];
        for round in 0..50u8 {
            buf.fill(round);
            evict(&buf);
            let b = std::thread::scope(|s| {
                s.spawn(|| {
                    buf.iter_mut().for_each(|x| *x = x.wrapping_add(1));
                    evict(&buf);
                    buf[..].to_vec()
                })
                .join()
                .unwrap()
            });
            assert!(b.iter().all(|&x| x == round.wrapping_add(1)));
            assert!(buf.iter().all(|&x| x == round.wrapping_add(1)));
        }
    }
}
