//! Fuzz target: mailhop::fuzzing::tlsrpt_record (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::tlsrpt_record(data));
