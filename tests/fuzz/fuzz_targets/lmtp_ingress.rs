//! Fuzz target: mailhop::fuzzing::lmtp_ingress (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::lmtp_ingress(data));
