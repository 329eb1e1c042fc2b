//! Replays every committed fuzz corpus file (tests/fuzz/corpus/<target>/)
//! through its entry point in `mailhop::fuzzing`: inputs the fuzzers once
//! found interesting, crashes included, stay regression tests without a
//! fuzzer. `make fuzz` (scripts/fuzz.sh) runs the fuzzers themselves.

use std::path::{Path, PathBuf};

use mailhop::fuzzing;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus files", dir.display());
    files
}

/// Runs each file of `target`'s corpus, naming the file that panics.
fn replay(target: &str, entry: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("{} panics", path.display());
        }
    }
}

#[test]
fn smtp_reply_corpus_replays_without_panic() {
    replay("smtp_reply", fuzzing::smtp_reply);
}

#[test]
fn job_line_corpus_replays_without_panic() {
    replay("job_line", fuzzing::job_line);
}

#[test]
fn nexthop_corpus_replays_without_panic() {
    replay("nexthop", fuzzing::nexthop);
}

#[test]
fn config_corpus_replays_without_panic() {
    replay("config", fuzzing::config);
}

#[test]
fn dns_mx_corpus_replays_without_panic() {
    replay("dns_mx", fuzzing::dns_mx);
}

#[test]
fn throttle_verdict_corpus_replays_without_panic() {
    replay("throttle_verdict", fuzzing::throttle_verdict);
}

#[test]
fn lmtp_ingress_corpus_replays_without_panic() {
    replay("lmtp_ingress", fuzzing::lmtp_ingress);
}

#[test]
fn lmtp_data_corpus_replays_without_panic() {
    replay("lmtp_data", fuzzing::lmtp_data);
}

#[test]
fn tlsa_corpus_replays_without_panic() {
    replay("tlsa", fuzzing::tlsa);
}

#[test]
fn message_facts_corpus_replays_without_panic() {
    replay("message_facts", fuzzing::message_facts);
}

#[test]
fn mta_sts_policy_corpus_replays_without_panic() {
    replay("mta_sts_policy", fuzzing::mta_sts_policy);
}

#[test]
fn tlsrpt_record_corpus_replays_without_panic() {
    replay("tlsrpt_record", fuzzing::tlsrpt_record);
}

#[test]
fn mime_downgrade_corpus_replays_without_panic() {
    replay("mime_downgrade", fuzzing::mime_downgrade);
}

#[test]
fn sasl_exchange_corpus_replays_without_panic() {
    replay("sasl_exchange", fuzzing::sasl_exchange);
}

#[test]
fn feed_replies_corpus_replays_without_panic() {
    replay("feed_replies", fuzzing::feed_replies);
}
