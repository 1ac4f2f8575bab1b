//! The counting allocator counts (the `unsafe` in `alloc_count` is exercised here).

use rafthttp::alloc_count::{
    reset_thread_largest, thread_allocs, thread_largest, AllocTotals, CountingAlloc,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn counts_allocations_reallocations_and_the_largest() {
    let before = thread_allocs();
    let totals = AllocTotals::now();
    reset_thread_largest();
    let mut v: Vec<u8> = Vec::with_capacity(1000);
    v.extend_from_slice(&[1; 1000]);
    v.reserve(5000); // a reallocation
    let z = vec![0u8; 300]; // alloc_zeroed
    assert_eq!(thread_allocs() - before, 3);
    assert!(thread_largest() >= 6000, "{}", thread_largest());
    let d = AllocTotals::now().since(totals);
    assert!(d.allocs >= 3 && d.bytes >= 7300, "{d:?}");
    drop((v, z));
    let b = thread_allocs();
    let x = [0u8; 64]; // the stack does not count
    std::hint::black_box(&x);
    assert_eq!(thread_allocs(), b);
}
