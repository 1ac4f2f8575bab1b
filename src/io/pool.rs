//! A pool of reusable I/O buffers for one I/O thread, with counters that other threads
//! can read (buffers in use and the high-water mark).
//!
//! Reads land in pooled `BytesMut`s; decoders slice frames out of them as `Bytes`, so a
//! buffer's memory is reused in place once every slice of it is gone (`BytesMut::reserve`
//! reclaims a uniquely owned allocation). Registered (fixed) io_uring buffers are not used
//! for reads: tokio-uring's `FixedBuf` cannot be frozen into `Bytes`, and entry payloads
//! must outlive the read as `Bytes` slices (see docs/performance.md).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::BytesMut;

/// Counters shared with other threads.
#[derive(Debug, Default)]
pub struct PoolCounters {
    in_use: AtomicUsize,
    high_water: AtomicUsize,
    created: AtomicUsize,
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out and not yet returned.
    pub in_use: usize,
    /// The most buffers in use at once.
    pub high_water: usize,
    /// Buffers allocated in all (the rest were reused).
    pub created: usize,
}

impl PoolCounters {
    /// The counters now.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            in_use: self.in_use.load(Relaxed),
            high_water: self.high_water.load(Relaxed),
            created: self.created.load(Relaxed),
        }
    }
}

/// Reusable buffers of one size, for one thread.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    max_free: usize,
    free: RefCell<Vec<BytesMut>>,
    counters: Arc<PoolCounters>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps at most `max_free` idle ones.
    pub fn new(size: usize, max_free: usize) -> Self {
        BufferPool {
            size,
            max_free,
            free: RefCell::new(Vec::with_capacity(max_free)),
            counters: Arc::default(),
        }
    }

    /// The buffer size.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// An empty buffer with at least `buffer_size` bytes of capacity.
    pub fn get(&self) -> BytesMut {
        let reused = self.free.borrow_mut().pop();
        let buf = reused.unwrap_or_else(|| {
            self.counters.created.fetch_add(1, Relaxed);
            BytesMut::with_capacity(self.size)
        });
        let n = self.counters.in_use.fetch_add(1, Relaxed) + 1;
        self.counters.high_water.fetch_max(n, Relaxed);
        buf
    }

    /// Returns a buffer from [`get`](Self::get). It is kept for reuse if its memory can
    /// still hold a full buffer.
    pub fn put(&self, mut buf: BytesMut) {
        self.counters.in_use.fetch_sub(1, Relaxed);
        buf.clear();
        // `try_reclaim` succeeds only when no `Bytes` slice still points into the buffer,
        // so a kept buffer never aliases data someone else holds.
        if buf.try_reclaim(self.size) {
            let mut free = self.free.borrow_mut();
            if free.len() < self.max_free {
                free.push(buf);
            }
        }
    }

    /// The counters, for stats readers on other threads.
    pub fn counters(&self) -> Arc<PoolCounters> {
        self.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_counted() {
        let pool = BufferPool::new(1024, 4);
        let a = pool.get();
        let b = pool.get();
        assert!(a.capacity() >= 1024);
        assert_eq!(
            pool.counters().stats(),
            PoolStats {
                in_use: 2,
                high_water: 2,
                created: 2
            }
        );
        pool.put(a);
        pool.put(b);
        let _c = pool.get();
        assert_eq!(
            pool.counters().stats(),
            PoolStats {
                in_use: 1,
                high_water: 2,
                created: 2
            }
        );
    }

    #[test]
    fn a_buffer_still_sliced_is_not_reused() {
        let pool = BufferPool::new(1024, 4);
        let mut a = pool.get();
        a.extend_from_slice(b"frame");
        let slice = a.split().freeze();
        pool.put(a);
        let b = pool.get();
        assert_eq!(
            pool.counters().stats().created,
            2,
            "the sliced buffer was not kept"
        );
        drop((slice, b));
    }
}
