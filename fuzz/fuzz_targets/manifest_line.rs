//! Arbitrary bytes as a manifest line → a change or an error, never a panic;
//! any path it yields resolves inside the root or is refused.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::manifest_line(data);
});
