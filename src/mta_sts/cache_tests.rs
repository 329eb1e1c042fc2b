use super::*;
use crate::mta_sts::policy::parse_policy;

fn entry(id: &str, fetched_at: u64, max_age: u64) -> Entry {
    let text = format!("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: {max_age}\n");
    Entry::new(
        id.into(),
        parse_policy(text.as_bytes()).unwrap(),
        fetched_at,
    )
}

fn id(text: &str) -> Txt {
    Txt::Id(text.into())
}

#[test]
fn nothing_cached_fetches_when_a_record_is_published() {
    assert_eq!(decide(None, &id("1"), 100), Action::Fetch);
    assert_eq!(decide(None, &Txt::NoRecord, 100), Action::NoPolicy);
    assert_eq!(decide(None, &Txt::Unavailable, 100), Action::NoPolicy);
}

#[test]
fn a_valid_entry_with_the_same_id_is_used() {
    let e = entry("1", 1000, 400);
    assert_eq!(decide(Some(&e), &id("1"), 1000), Action::Use);
    assert_eq!(decide(Some(&e), &id("1"), 1299), Action::Use);
}

#[test]
fn a_new_id_is_refetched() {
    let e = entry("1", 1000, 400);
    assert_eq!(decide(Some(&e), &id("2"), 1100), Action::Fetch);
}

#[test]
fn an_entry_near_its_expiry_is_refetched() {
    let e = entry("1", 1000, 400);
    // 100 s is a quarter of 400 s: from 1301 on less than that is left.
    assert_eq!(decide(Some(&e), &id("1"), 1300), Action::Use);
    assert_eq!(decide(Some(&e), &id("1"), 1301), Action::Fetch);
}

#[test]
fn a_valid_entry_survives_a_missing_or_failed_txt_lookup() {
    let e = entry("1", 1000, 400);
    assert_eq!(decide(Some(&e), &Txt::NoRecord, 1390), Action::Use);
    assert_eq!(decide(Some(&e), &Txt::Unavailable, 1390), Action::Use);
}

#[test]
fn an_expired_entry_counts_as_none() {
    let e = entry("1", 1000, 400);
    assert!(!e.is_valid(1400));
    assert_eq!(decide(Some(&e), &id("1"), 1400), Action::Fetch);
    assert_eq!(decide(Some(&e), &Txt::NoRecord, 1400), Action::NoPolicy);
}

#[test]
fn json_round_trip_and_case_insensitive_domains() {
    let mut cache = Cache::default();
    cache.insert("Example.COM", entry("1", 10, 60), 10);
    let back = Cache::from_json(&cache.to_json().unwrap()).unwrap();
    assert_eq!(back, cache);
    assert_eq!(back.get("example.com"), Some(&entry("1", 10, 60)));
}

#[test]
fn corrupt_files_are_errors() {
    for text in [
        "",
        "{",
        "[]",
        "{\"version\":2,\"policies\":{}}",
        "{\"version\":1,\"policies\":{\"a\":{\"id\":\"1\"}}}",
    ] {
        assert!(
            matches!(Cache::from_json(text), Err(MtaStsError::Cache(_))),
            "{text:?}"
        );
    }
}

#[test]
fn save_is_atomic_and_load_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mta-sts.json");
    assert!(Cache::load(&path).unwrap().is_empty());
    let mut cache = Cache::default();
    cache.insert("a.example", entry("x1", 5, 50), 5);
    cache.save(&path).unwrap();
    assert_eq!(Cache::load(&path).unwrap(), cache);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mta-sts.json"]);
    std::fs::write(&path, "not json").unwrap();
    assert!(Cache::load(&path).is_err());
}

#[test]
fn the_cache_is_bounded() {
    let mut cache = Cache::default();
    for n in 0..MAX_ENTRIES + 5 {
        let fetched = u64::try_from(n).unwrap();
        cache.insert(
            &format!("d{n}.example"),
            entry("1", fetched, 1_000_000),
            fetched,
        );
    }
    assert_eq!(cache.len(), MAX_ENTRIES);
    // The ones expiring soonest went first.
    assert!(cache.get("d0.example").is_none());
    assert!(
        cache
            .get(&format!("d{}.example", MAX_ENTRIES + 4))
            .is_some()
    );
    // Expired entries go before any valid one.
    let now = 2_000_000;
    cache.insert("new.example", entry("1", now, 10), now);
    assert_eq!(cache.len(), 1);
}
