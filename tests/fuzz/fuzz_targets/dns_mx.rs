//! Fuzz target: mailhop::fuzzing::dns_mx (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::dns_mx(data));
