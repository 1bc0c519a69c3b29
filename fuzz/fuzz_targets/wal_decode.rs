//! Arbitrary bytes → WAL records or a positioned error; never a panic, and
//! allocation bounded by the input's size (checked by a counting allocator).
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: harness::alloc::Counting = harness::alloc::Counting;

fuzz_target!(|data: &[u8]| {
    harness::alloc::reset();
    harness::wal_decode(data);
    let peak = harness::alloc::peak();
    let bound = harness::wal_decode_alloc_bound(data.len());
    assert!(
        peak <= bound,
        "decoding {} bytes allocated {peak} bytes at peak (bound {bound})",
        data.len()
    );
});
