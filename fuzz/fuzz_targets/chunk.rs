//! Arbitrary bytes as a file at an arbitrary chunk size → objects that pass
//! every chunk invariant and concatenate to the file, never a panic.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::chunk(data);
});
