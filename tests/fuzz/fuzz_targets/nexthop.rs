//! Fuzz target: mailhop::fuzzing::nexthop (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::nexthop(data));
