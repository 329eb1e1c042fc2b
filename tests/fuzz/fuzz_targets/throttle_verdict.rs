//! Fuzz target: mailhop::fuzzing::throttle_verdict (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::throttle_verdict(data));
