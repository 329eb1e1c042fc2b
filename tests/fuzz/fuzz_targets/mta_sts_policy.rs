//! Fuzz target: mailhop::fuzzing::mta_sts_policy (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::mta_sts_policy(data));
