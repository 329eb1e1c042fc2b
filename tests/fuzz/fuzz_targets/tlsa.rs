//! Fuzz target: mailhop::fuzzing::tlsa (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::tlsa(data));
