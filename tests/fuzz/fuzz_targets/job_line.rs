//! Fuzz target: mailhop::fuzzing::job_line (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailhop::fuzzing::job_line(data));
