//! Fuzz target: mailhop::fuzzing::lmtp_data (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::lmtp_data(data));
