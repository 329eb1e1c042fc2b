//! Fuzz target: mailhop::fuzzing::message_facts (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::message_facts(data));
