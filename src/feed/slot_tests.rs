use super::*;

#[test]
fn slots_of_known_keys() {
    // The cluster specification's and redis-cli's CLUSTER KEYSLOT values.
    assert_eq!(slot(b"foo"), 12182);
    assert_eq!(slot(b"bar"), 5061);
    assert_eq!(slot(b"123456789"), 12739);
    assert_eq!(crc16(b"123456789"), 0x31c3);
}

#[test]
fn hash_tags_put_keys_on_one_slot() {
    assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
    assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
    // Only the first { and the first } after it count.
    assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
}

#[test]
fn edge_cases_of_the_hash_tag() {
    // The empty key, and an empty tag: the whole key is hashed.
    assert_eq!(slot(b""), 0);
    assert_eq!(hashed_part(b"{}"), b"{}");
    assert_eq!(hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
    // No closing brace, or a brace alone.
    assert_eq!(hashed_part(b"foo{bar"), b"foo{bar");
    assert_eq!(hashed_part(b"}foo{"), b"}foo{");
    assert_eq!(hashed_part(b"{a}"), b"a");
    assert!(slot(b"\xff{\x00}") < SLOTS);
}

fn config(streams: &[&str], results: &str) -> FeedConfig {
    FeedConfig {
        cluster: true,
        streams: streams.iter().map(|s| (*s).to_string()).collect(),
        results_stream: results.into(),
        ..FeedConfig::default()
    }
}

#[test]
fn tagged_streams_with_their_own_results_pass() {
    let ok = config(&["{s0}:jobs", "{s1}:jobs", "{s2}:jobs"], "$stream:results");
    assert_eq!(check_streams(&ok), Ok(()));
    // One stream, its shared results stream in its slot.
    let ok = config(&["{s0}:jobs"], "{s0}:results");
    assert_eq!(check_streams(&ok), Ok(()));
}

#[test]
fn a_stream_without_a_tag_is_refused() {
    let err = check_streams(&config(&["mailhop:jobs"], "$stream:results")).unwrap_err();
    assert!(err.contains("\"mailhop:jobs\""), "{err}");
    assert!(err.contains("hash tag"), "{err}");
    assert!(err.contains("{s0}:jobs"), "{err}");
}

#[test]
fn a_shared_results_stream_off_the_slot_is_refused() {
    let err = check_streams(&config(&["{s0}:jobs", "{s1}:jobs"], "mailhop:results")).unwrap_err();
    assert!(err.contains("results stream \"mailhop:results\""), "{err}");
    assert!(err.contains("$stream:results"), "{err}");
}

#[test]
fn limit_keys_of_one_destination_share_a_slot() {
    assert_eq!(
        check_limit_keys(
            "mailhop:limits:{smtp:example.com}:leases",
            "mailhop:limits:{smtp:example.com}:tat"
        ),
        Ok(())
    );
    assert!(check_limit_keys("a{}:leases", "a{}:tat").is_err());
}
