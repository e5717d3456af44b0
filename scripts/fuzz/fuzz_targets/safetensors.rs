//! Fuzz target: `recur::fuzz::safetensors` on arbitrary bytes (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recur::fuzz::safetensors(data));
