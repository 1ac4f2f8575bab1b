//! A counting global allocator, for benchmarks and tests that prove a hot path allocates
//! nothing, and that no length read from the wire makes us allocate past a cap.
//!
//! Install it in a binary, bench or test with
//! `#[global_allocator] static A: rafthttp::alloc_count::CountingAlloc = rafthttp::alloc_count::CountingAlloc;`
//! It counts process-wide (for transports that span threads) and per thread (for tests
//! that run beside others), and remembers the largest single allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Delegates to the system allocator and counts every allocation and reallocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised with no destructor: reading these never allocates, so the
    // allocator can use them without recursing.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static THREAD_LARGEST: Cell<u64> = const { Cell::new(0) };
}

fn record(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
    // `try_with` fails only while the thread is being torn down; counts are then skipped.
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = THREAD_LARGEST.try_with(|c| c.set(c.get().max(size as u64)));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting around it touches only atomics and const thread
// locals, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same layout as we were given, which the caller guarantees is valid.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout, via the methods above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: `ptr`/`layout` came from `System` via this allocator; the caller
        // guarantees `new_size` is valid for `layout.align()`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Process-wide totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocTotals {
    /// Allocations and reallocations.
    pub allocs: u64,
    /// Bytes requested by them.
    pub bytes: u64,
}

impl AllocTotals {
    /// Totals now. All zero unless [`CountingAlloc`] is the global allocator.
    pub fn now() -> Self {
        AllocTotals {
            allocs: ALLOCS.load(Relaxed),
            bytes: BYTES.load(Relaxed),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: AllocTotals) -> AllocTotals {
        AllocTotals {
            allocs: self.allocs - earlier.allocs,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// Allocations made by this thread since it started.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.with(Cell::get)
}

/// The largest single allocation (or reallocation) this thread made since the last
/// [`reset_thread_largest`].
pub fn thread_largest() -> u64 {
    THREAD_LARGEST.with(Cell::get)
}

/// Starts a new measurement of [`thread_largest`].
pub fn reset_thread_largest() {
    THREAD_LARGEST.with(|c| c.set(0));
}
