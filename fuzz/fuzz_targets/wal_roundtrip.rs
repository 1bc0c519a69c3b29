//! Records → encode → damage (cut, bit flip, zeroed range, garbage tail) →
//! recover: a prefix of what was written, or an error at the damaged record.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::wal_roundtrip(data);
});
