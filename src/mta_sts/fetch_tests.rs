use super::*;

#[test]
fn content_type_must_be_text_plain() {
    for ok in [
        "text/plain",
        "TEXT/Plain",
        "text/plain; charset=utf-8",
        " text/plain ;x=y",
    ] {
        assert!(is_text_plain(ok), "{ok:?}");
    }
    for bad in ["", "text/html", "text/plainx", "application/octet-stream"] {
        assert!(!is_text_plain(bad), "{bad:?}");
    }
}

#[test]
fn the_policy_url_is_the_well_known_one() {
    assert_eq!(
        policy_url("example.com"),
        "https://mta-sts.example.com/.well-known/mta-sts.txt"
    );
}

#[test]
fn a_missing_or_empty_ca_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for path in [dir.path().join("missing.pem"), empty] {
        let settings = FetchSettings {
            timeout: Duration::from_secs(1),
            port: 443,
            ca_file: Some(path),
            ipv4: true,
            ipv6: true,
        };
        let dns: Arc<dyn DnsLookup> = Arc::new(crate::resolve::NoDns);
        assert!(matches!(
            HttpsFetcher::new(&settings, dns),
            Err(MtaStsError::Fetch(_))
        ));
    }
}
