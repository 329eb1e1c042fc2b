//! Fuzz target: mailhop::fuzzing::feed_replies (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::feed_replies(data));
