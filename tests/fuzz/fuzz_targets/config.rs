//! Fuzz target: mailhop::fuzzing::config (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::config(data));
