//! Fuzz target: `recur::fuzz::snapshot` on arbitrary bytes (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recur::fuzz::snapshot(data));
