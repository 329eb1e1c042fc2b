//! Fuzz target: mailhop::fuzzing::smtp_reply (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::smtp_reply(data));
