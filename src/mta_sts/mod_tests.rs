use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::*;
use crate::dns::{Answer, DnsError, MxRecord};

/// TXT answers by name; everything else does not exist.
struct FakeDns {
    txt: Mutex<Result<Vec<String>, DnsErrorKind>>,
}

impl FakeDns {
    fn set(&self, txt: Result<&[&str], DnsErrorKind>) {
        *self.txt.lock().unwrap() = txt.map(|list| list.iter().map(|s| s.to_string()).collect());
    }
}

impl DnsLookup for FakeDns {
    fn mx(&self, _: &str) -> Result<Answer<MxRecord>, DnsError> {
        Err(DnsError::new(DnsErrorKind::NotFound, "Host not found"))
    }
    fn a(&self, _: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        Err(DnsError::new(DnsErrorKind::NotFound, "Host not found"))
    }
    fn aaaa(&self, _: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        Err(DnsError::new(DnsErrorKind::NotFound, "Host not found"))
    }
    fn txt(&self, name: &str) -> Result<Answer<String>, DnsError> {
        assert_eq!(name, "_mta-sts.example.com");
        match &*self.txt.lock().unwrap() {
            Ok(records) => Ok(Answer {
                records: records.clone(),
                authenticated: false,
                canonical: None,
            }),
            Err(kind) => Err(DnsError::new(*kind, "failed")),
        }
    }
}

/// Serves a settable body (or fails), counting fetches.
#[derive(Default)]
struct FakeFetch {
    body: Mutex<Option<String>>,
    count: AtomicUsize,
}

impl PolicyFetcher for Arc<FakeFetch> {
    fn fetch(&self, domain: &str) -> Result<Vec<u8>, MtaStsError> {
        assert_eq!(domain, "example.com");
        self.count.fetch_add(1, Ordering::SeqCst);
        match &*self.body.lock().unwrap() {
            Some(body) => Ok(body.clone().into_bytes()),
            None => Err(MtaStsError::Fetch("connection refused".into())),
        }
    }
}

fn policy(mode: &str, mx: &str, max_age: u64) -> Option<String> {
    Some(format!(
        "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: {max_age}\n"
    ))
}

struct Lab {
    dns: Arc<FakeDns>,
    fetch: Arc<FakeFetch>,
    now: Arc<AtomicU64>,
    sts: MtaSts,
}

fn lab(cache_file: Option<PathBuf>) -> Lab {
    let dns = Arc::new(FakeDns {
        txt: Mutex::new(Ok(vec!["v=STSv1; id=1".into()])),
    });
    let fetch = Arc::new(FakeFetch::default());
    *fetch.body.lock().unwrap() = policy("enforce", "mx.example.com", 1000);
    let now = Arc::new(AtomicU64::new(10_000));
    let clock = Arc::clone(&now);
    let sts = MtaSts::new(
        Arc::clone(&dns) as Arc<dyn DnsLookup>,
        Box::new(Arc::clone(&fetch)),
        cache_file,
    )
    .with_clock(Box::new(move || clock.load(Ordering::SeqCst)));
    Lab {
        dns,
        fetch,
        now,
        sts,
    }
}

fn fetches(lab: &Lab) -> usize {
    lab.fetch.count.load(Ordering::SeqCst)
}

#[test]
fn a_policy_is_fetched_once_then_cached() {
    let lab = lab(None);
    let found = lab.sts.lookup("Example.COM.").unwrap();
    assert_eq!(
        (found.domain.as_str(), found.id.as_str()),
        ("example.com", "1")
    );
    assert_eq!(found.policy.mode, Mode::Enforce);
    assert!(lab.sts.lookup("example.com").is_some());
    assert_eq!(fetches(&lab), 1);
}

#[test]
fn no_record_and_nothing_cached_is_no_policy() {
    let lab = lab(None);
    lab.dns.set(Err(DnsErrorKind::NotFound));
    assert_eq!(lab.sts.lookup("example.com"), None);
    lab.dns.set(Ok(&["v=STSv1; id=1", "v=STSv1; id=2"]));
    assert_eq!(lab.sts.lookup("example.com"), None);
    lab.dns.set(Err(DnsErrorKind::Retry));
    assert_eq!(lab.sts.lookup("example.com"), None);
    assert_eq!(fetches(&lab), 0);
}

#[test]
fn a_new_id_refetches_and_a_failed_refetch_keeps_the_cached_policy() {
    let lab = lab(None);
    assert!(lab.sts.lookup("example.com").is_some());
    lab.dns.set(Ok(&["v=STSv1; id=2"]));
    *lab.fetch.body.lock().unwrap() = policy("testing", "*.example.com", 1000);
    let found = lab.sts.lookup("example.com").unwrap();
    assert_eq!((found.id.as_str(), found.policy.mode), ("2", Mode::Testing));
    // The fetch fails now: id 2 stays in force.
    lab.dns.set(Ok(&["v=STSv1; id=3"]));
    *lab.fetch.body.lock().unwrap() = None;
    let found = lab.sts.lookup("example.com").unwrap();
    assert_eq!(found.id, "2");
    // A malformed policy counts as a failed fetch (asked again after the
    // pause that follows a failure).
    lab.now.store(10_000 + FETCH_RETRY_SECS, Ordering::SeqCst);
    *lab.fetch.body.lock().unwrap() = Some("garbage".into());
    assert_eq!(lab.sts.lookup("example.com").unwrap().id, "2");
    assert_eq!(fetches(&lab), 4);
}

#[test]
fn the_cached_policy_expires() {
    let lab = lab(None);
    assert!(lab.sts.lookup("example.com").is_some());
    *lab.fetch.body.lock().unwrap() = None;
    lab.now.store(10_800, Ordering::SeqCst);
    // Near expiry: refetched, failed, still valid.
    assert!(lab.sts.lookup("example.com").is_some());
    lab.now.store(11_000, Ordering::SeqCst);
    assert_eq!(lab.sts.lookup("example.com"), None);
}

#[test]
fn the_cache_file_is_written_and_read_by_the_next_instance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.json");
    let first = lab(Some(path.clone()));
    assert!(first.sts.lookup("example.com").is_some());
    assert!(path.exists());
    let second = lab(Some(path.clone()));
    *second.fetch.body.lock().unwrap() = None;
    assert_eq!(second.sts.lookup("example.com").unwrap().id, "1");
    assert_eq!(fetches(&second), 0);
}

#[test]
fn a_corrupt_cache_file_is_an_empty_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.json");
    std::fs::write(&path, "{ not json").unwrap();
    let lab = lab(Some(path.clone()));
    assert_eq!(lab.sts.cached("example.com"), None);
    assert!(lab.sts.lookup("example.com").is_some());
    // Rewritten whole.
    assert!(Cache::load(&path).unwrap().get("example.com").is_some());
}

#[test]
fn disabled_is_none() {
    let config = MtaStsConfig {
        enabled: false,
        ..MtaStsConfig::default()
    };
    let dns: Arc<dyn DnsLookup> = Arc::new(crate::resolve::NoDns);
    assert!(
        MtaSts::from_config(
            &config,
            crate::config::InetProtocols {
                ipv4: true,
                ipv6: true
            },
            dns
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn a_failed_fetch_is_not_retried_for_a_while() {
    let lab = lab(None);
    *lab.fetch.body.lock().unwrap() = None;
    assert_eq!(lab.sts.lookup("example.com"), None);
    assert_eq!(lab.sts.lookup("example.com"), None);
    assert_eq!(fetches(&lab), 1);
    // A new id is fetched at once.
    lab.dns.set(Ok(&["v=STSv1; id=2"]));
    assert_eq!(lab.sts.lookup("example.com"), None);
    assert_eq!(fetches(&lab), 2);
    // After the pause, the host is asked again.
    *lab.fetch.body.lock().unwrap() = policy("enforce", "mx.example.com", 1000);
    lab.now.store(10_000 + FETCH_RETRY_SECS, Ordering::SeqCst);
    assert_eq!(lab.sts.lookup("example.com").unwrap().id, "2");
    assert_eq!(fetches(&lab), 3);
}

#[test]
fn failed_fetches_are_reported_with_their_kind() {
    let lab = lab(None);
    let mut seen = Vec::new();
    *lab.fetch.body.lock().unwrap() = None;
    assert!(
        lab.sts
            .lookup_reporting("example.com", |e| seen
                .push(matches!(e, MtaStsError::Fetch(_))))
            .is_none()
    );
    lab.now.store(10_000 + FETCH_RETRY_SECS, Ordering::SeqCst);
    *lab.fetch.body.lock().unwrap() = Some("garbage".into());
    assert!(
        lab.sts
            .lookup_reporting("example.com", |e| seen
                .push(matches!(e, MtaStsError::Fetch(_))))
            .is_none()
    );
    // A good policy reports nothing.
    lab.now
        .store(10_000 + 2 * FETCH_RETRY_SECS, Ordering::SeqCst);
    *lab.fetch.body.lock().unwrap() = policy("enforce", "mx.example.com", 1000);
    assert!(
        lab.sts
            .lookup_reporting("example.com", |_| seen.push(true))
            .is_some()
    );
    assert_eq!(seen, [true, false]);
}

/// A fetcher that takes a while, counting fetches.
struct SlowFetch(Arc<AtomicUsize>);

impl PolicyFetcher for SlowFetch {
    fn fetch(&self, _domain: &str) -> Result<Vec<u8>, MtaStsError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(policy("enforce", "mx.example.com", 1000)
            .unwrap_or_default()
            .into_bytes())
    }
}

#[test]
fn workers_that_need_the_same_policy_at_once_share_one_fetch() {
    let dns = Arc::new(FakeDns {
        txt: Mutex::new(Ok(vec!["v=STSv1; id=1".into()])),
    });
    let count = Arc::new(AtomicUsize::new(0));
    let sts = MtaSts::new(dns, Box::new(SlowFetch(Arc::clone(&count))), None);
    let found: Vec<Option<Found>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| sts.lookup("example.com")))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        found
            .iter()
            .all(|f| f.as_ref().is_some_and(|f| f.id == "1"))
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(
        sts.fetching.lock().unwrap().is_empty(),
        "a gate was left behind"
    );
}
