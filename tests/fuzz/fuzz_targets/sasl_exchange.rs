//! Fuzz target: mailhop::fuzzing::sasl_exchange (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::sasl_exchange(data));
