//! Fuzz target: mailhop::fuzzing::mime_downgrade (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::mime_downgrade(data));
