//! Tests of [`super`]: table lookups, level rules and the parsers of
//! fingerprints and protocol lists.

use super::*;

fn entry(destination: &str, level: &str) -> TlsPolicyEntry {
    TlsPolicyEntry {
        destination: destination.into(),
        level: level.into(),
        ..Default::default()
    }
}

fn config(level: &str, table: Vec<TlsPolicyEntry>) -> TlsConfig {
    TlsConfig {
        security_level: level.into(),
        policy: table,
        ..Default::default()
    }
}

fn policy(config: &TlsConfig, destination: &str) -> Policy {
    match policy_for(config, destination, false) {
        Ok(policy) => policy,
        Err(e) => panic!("{destination}: {e}"),
    }
}

fn policy_error(config: &TlsConfig, destination: &str) -> String {
    match policy_for(config, destination, false) {
        Ok(policy) => panic!("{destination}: accepted {policy:?}"),
        Err(e) => e.to_string(),
    }
}

fn found<'a>(table: &'a [TlsPolicyEntry], destination: &str) -> Option<&'a str> {
    find_entry(table, destination).map(|e| e.destination.as_str())
}

const FP32: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

#[test]
fn find_entry_exact_keys() {
    let table = vec![
        entry("example.test", "verify"),
        entry("[mx.example.test]:587", "secure"),
        entry("[mx.example.test]", "encrypt"),
        entry("[192.0.2.1]", "none"),
        entry("mx.example.test:submission", "encrypt"),
    ];
    assert_eq!(found(&table, "example.test"), Some("example.test"));
    assert_eq!(found(&table, "EXAMPLE.Test"), Some("example.test"));
    assert_eq!(
        found(&table, "[mx.example.test]:587"),
        Some("[mx.example.test]:587")
    );
    assert_eq!(
        found(&table, "[MX.example.test]:587"),
        Some("[mx.example.test]:587")
    );
    assert_eq!(
        found(&table, "[mx.example.test]"),
        Some("[mx.example.test]")
    );
    assert_eq!(found(&table, "[192.0.2.1]"), Some("[192.0.2.1]"));
    assert_eq!(
        found(&table, "mx.example.test:submission"),
        Some("mx.example.test:submission")
    );
    // Forms are distinct keys.
    assert_eq!(found(&table, "[mx.example.test]:25"), None);
    assert_eq!(found(&table, "mx.example.test"), None);
    assert_eq!(found(&table, "[example.test]"), None);
    assert_eq!(found(&table, "other.test"), None);
    assert_eq!(found(&[], "example.test"), None);
}

#[test]
fn find_entry_parent_domains() {
    let table = vec![
        entry(".example.test", "verify"),
        entry(".b.example.test", "secure"),
        entry(".test", "encrypt"),
        entry("exact.b.example.test", "none"),
    ];
    // Nearest parent wins, whatever the table order.
    assert_eq!(found(&table, "a.b.example.test"), Some(".b.example.test"));
    assert_eq!(found(&table, "x.a.b.example.test"), Some(".b.example.test"));
    assert_eq!(found(&table, "b.example.test"), Some(".example.test"));
    assert_eq!(found(&table, "mx.example.test"), Some(".example.test"));
    assert_eq!(found(&table, "MX.EXAMPLE.TEST"), Some(".example.test"));
    // A ".parent" key covers subdomains only.
    assert_eq!(found(&table, "example.test"), Some(".test"));
    assert_eq!(found(&table, "test"), None);
    // Exact beats parent.
    assert_eq!(
        found(&table, "exact.b.example.test"),
        Some("exact.b.example.test")
    );
    // Not for bracketed or port forms.
    assert_eq!(found(&table, "[mx.example.test]"), None);
    assert_eq!(found(&table, "[mx.example.test]:587"), None);
    assert_eq!(found(&table, "mx.example.test:587"), None);
    assert_eq!(found(&table, "inet:mx.example.test"), None);
    assert_eq!(found(&table, "unix:/run/lmtp.example.test"), None);
    // ".com"-style top-level parents.
    let tld = vec![entry(".com", "encrypt")];
    assert_eq!(found(&tld, "a.b.example.com"), Some(".com"));
    assert_eq!(found(&tld, "com"), None);
}

#[test]
fn defaults_without_entry() {
    let c = TlsConfig::default();
    let p = policy(&c, "example.test");
    assert_eq!(
        p,
        Policy {
            level: Level::May,
            dane: None,
            tlsa: vec![],
            half_dane: false,
            source: PolicySource::Default,
            reason: "security_level may".into(),
            matches: vec![],
            fingerprints: vec![],
            digest: Digest::Sha256,
            servername: ServerName::Hostname,
            min_version: TlsVersion::Tls1_2,
            max_version: None,
            ca_file: None,
            ca_path: None,
            cert_file: None,
            key_file: None,
        }
    );
}

#[test]
fn entry_level_overrides_default() {
    let c = config(
        "may",
        vec![
            entry("example.test", "secure"),
            entry("[relay.example.test]:587", "encrypt"),
            entry(".example.test", "none"),
        ],
    );
    assert_eq!(policy(&c, "example.test").level, Level::Secure);
    assert_eq!(policy(&c, "[relay.example.test]:587").level, Level::Encrypt);
    assert_eq!(policy(&c, "sub.example.test").level, Level::None);
    assert_eq!(policy(&c, "other.test").level, Level::May);
    assert_eq!(
        policy(&config("verify", vec![]), "x.test").level,
        Level::Verify
    );
    assert_eq!(policy(&config("NONE", vec![]), "x.test").level, Level::None);
}

#[test]
fn levels_are_ordered() {
    assert!(Level::None < Level::May);
    assert!(Level::May < Level::Encrypt);
    assert!(Level::Encrypt < Level::Fingerprint);
    assert!(Level::Fingerprint < Level::Dane);
    assert!(Level::Dane < Level::Verify);
    assert!(Level::Verify < Level::Secure);
    assert_eq!(Level::Secure.to_string(), "secure");
    assert_eq!(Level::None.name(), "none");
}

#[test]
fn dane_levels() {
    let p = policy(&config("dane", vec![]), "x.test");
    assert_eq!(
        (p.level, p.dane),
        (Level::Dane, Some(DaneMode::Opportunistic))
    );
    assert_eq!(p.source, PolicySource::Default);
    let c = config("may", vec![entry("x.test", "dane-only")]);
    let p = policy(&c, "x.test");
    assert_eq!((p.level, p.dane), (Level::Dane, Some(DaneMode::Mandatory)));
    assert_eq!(p.source, PolicySource::PolicyTable);
    assert!(p.reason.contains("dane-only"), "{}", p.reason);
    assert_eq!(policy(&c, "y.test").level, Level::May);
    assert_eq!(policy(&c, "y.test").dane, None);
    let e = policy_for(&c, "x.test", true).unwrap_err().0;
    assert!(
        e.contains("invalid for delivery via unix-domain sockets"),
        "{e}"
    );
}

#[test]
fn bad_level() {
    let e = policy_error(&config("bogus", vec![]), "x.test");
    assert!(e.contains("\"bogus\""), "{e}");
    let c = config("may", vec![entry("x.test", "strict")]);
    assert!(policy_error(&c, "x.test").contains("\"strict\""));
}

#[test]
fn unix_socket_may_is_none() {
    let c = config("may", vec![entry("unix:/run/secure", "encrypt")]);
    let unix = |dest: &str| policy_for(&c, dest, true).map(|p| p.level);
    assert_eq!(unix("unix:/run/lmtp"), Ok(Level::None));
    assert_eq!(unix("unix:/run/secure"), Ok(Level::Encrypt));
    assert_eq!(
        policy_for(&config("dane", vec![]), "unix:/x", true).map(|p| p.level),
        Ok(Level::None)
    );
    assert_eq!(
        policy_for(&c, "inet:lmtp.example.test", false).map(|p| p.level),
        Ok(Level::May)
    );
}

#[test]
fn match_lists_by_level() {
    let c = config(
        "may",
        vec![
            entry("verify.test", "verify"),
            entry("secure.test", "secure"),
            entry("encrypt.test", "encrypt"),
            TlsPolicyEntry {
                matches: vec![
                    "nexthop".into(),
                    ".Example.test".into(),
                    "mx.example.test".into(),
                ],
                ..entry("custom.test", "secure")
            },
            TlsPolicyEntry {
                matches: vec!["hostname:nexthop".into()],
                ..entry("colon.test", "verify")
            },
        ],
    );
    assert_eq!(policy(&c, "verify.test").matches, vec![MatchRule::Hostname]);
    assert_eq!(
        policy(&c, "secure.test").matches,
        vec![MatchRule::Nexthop, MatchRule::DotNexthop]
    );
    assert!(policy(&c, "encrypt.test").matches.is_empty());
    assert!(policy(&c, "other.test").matches.is_empty());
    assert_eq!(
        policy(&c, "custom.test").matches,
        vec![
            MatchRule::Nexthop,
            MatchRule::Name(".example.test".into()),
            MatchRule::Name("mx.example.test".into())
        ]
    );
    assert_eq!(
        policy(&c, "colon.test").matches,
        vec![MatchRule::Hostname, MatchRule::Nexthop]
    );

    // Configured defaults.
    let mut c = config("verify", vec![]);
    c.verify_cert_match = vec!["nexthop".into(), "dot-nexthop".into()];
    c.secure_cert_match = vec!["hostname".into()];
    assert_eq!(
        policy(&c, "x.test").matches,
        vec![MatchRule::Nexthop, MatchRule::DotNexthop]
    );
    c.security_level = "secure".into();
    assert_eq!(policy(&c, "x.test").matches, vec![MatchRule::Hostname]);

    // Bad rules.
    for bad in ["bad!name", "a..b", ".", "*.example.test"] {
        let c = config(
            "may",
            vec![TlsPolicyEntry {
                matches: vec![bad.into()],
                ..entry("x.test", "verify")
            }],
        );
        assert!(
            policy_error(&c, "x.test").contains("certificate match rule"),
            "{bad}"
        );
    }
}

#[test]
fn fingerprints() {
    let fp_bytes = parse_fingerprint(FP32).ok();
    assert_eq!(fp_bytes.as_ref().map(Vec::len), Some(32));
    let mut c = config("fingerprint", vec![]);
    assert!(policy_error(&c, "x.test").contains("needs fingerprints"));
    c.fingerprint_cert_match = vec![FP32.into()];
    let p = policy(&c, "x.test");
    assert_eq!(p.level, Level::Fingerprint);
    assert_eq!(Some(p.fingerprints), fp_bytes.map(|fp| vec![fp]));
    assert_eq!(p.digest, Digest::Sha256);

    // The entry's list replaces the default one.
    let other = "00".repeat(32);
    c.policy = vec![TlsPolicyEntry {
        fingerprints: vec![other.clone()],
        ..entry("y.test", "fingerprint")
    }];
    assert_eq!(policy(&c, "y.test").fingerprints, vec![vec![0u8; 32]]);
    // An entry without a list takes the default one.
    c.policy = vec![entry("z.test", "fingerprint")];
    assert_eq!(policy(&c, "z.test").fingerprints.len(), 1);
    // An entry at level fingerprint with no list anywhere is an error.
    let c2 = config("may", vec![entry("z.test", "fingerprint")]);
    let e = policy_error(&c2, "z.test");
    assert!(
        e.contains("needs fingerprints") && e.contains("\"z.test\""),
        "{e}"
    );

    // Digest choice and length check.
    let mut c = config("fingerprint", vec![]);
    c.fingerprint_cert_match = vec!["11".repeat(64)];
    c.fingerprint_digest = "sha512".into();
    assert_eq!(policy(&c, "x.test").digest, Digest::Sha512);
    c.fingerprint_digest = "sha256".into();
    assert!(policy_error(&c, "x.test").contains("64 bytes"));
    c.fingerprint_digest = "SHA1".into();
    c.fingerprint_cert_match = vec!["11".repeat(20)];
    assert_eq!(policy(&c, "x.test").digest, Digest::Sha1);
    c.fingerprint_digest = "md5".into();
    assert!(policy_error(&c, "x.test").contains("\"md5\""));
    // Not checked against the digest below level fingerprint.
    let mut c = config("may", vec![]);
    c.fingerprint_cert_match = vec!["11".repeat(20)];
    assert_eq!(policy(&c, "x.test").fingerprints.len(), 1);
}

#[test]
fn parse_fingerprint_forms() {
    assert_eq!(parse_fingerprint("AB:cd:01"), Ok(vec![0xab, 0xcd, 0x01]));
    assert_eq!(parse_fingerprint("abCD01"), Ok(vec![0xab, 0xcd, 0x01]));
    assert_eq!(parse_fingerprint(" ab:cd "), Ok(vec![0xab, 0xcd]));
    for bad in [
        "",
        "  ",
        "abc",
        "a:bc",
        "ab:cd:",
        ":ab",
        "ab::cd",
        "zz",
        "+f",
        "ab cd",
        "é1",
        "ab:c\u{e9}",
    ] {
        assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn protocols_forms() {
    use TlsVersion::*;
    let ok = |text: &str| match parse_protocols(text) {
        Ok(v) => v,
        Err(e) => panic!("{text}: {e}"),
    };
    assert_eq!(ok(">=TLSv1.2"), (Tls1_2, None));
    assert_eq!(ok(">=TLSv1.3"), (Tls1_3, None));
    assert_eq!(ok(">=TLSv1"), (Tls1_0, None));
    assert_eq!(ok(">=SSLv3"), (Tls1_0, None));
    assert_eq!(ok("<=TLSv1.2"), (Tls1_0, Some(Tls1_2)));
    assert_eq!(ok(">=TLSv1.2 <=TLSv1.2"), (Tls1_2, Some(Tls1_2)));
    assert_eq!(ok(">=TLSv1.2, <=TLSv1.3"), (Tls1_2, None));
    assert_eq!(ok("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"), (Tls1_2, None));
    assert_eq!(ok("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1"), (Tls1_2, None));
    assert_eq!(ok("!SSLv2, !SSLv3"), (Tls1_0, None));
    assert_eq!(ok("!TLSv1.3"), (Tls1_0, Some(Tls1_2)));
    assert_eq!(ok("!TLSv1 !TLSv1.1 !TLSv1.3"), (Tls1_2, Some(Tls1_2)));
    assert_eq!(ok("TLSv1.2 TLSv1.3"), (Tls1_2, None));
    assert_eq!(ok("TLSv1.2"), (Tls1_2, Some(Tls1_2)));
    assert_eq!(ok("SSLv3 TLSv1"), (Tls1_0, Some(Tls1_0)));
    assert_eq!(ok("tlsv1.3"), (Tls1_3, None));
    assert_eq!(ok(""), (Tls1_2, None));
    assert_eq!(ok(" , "), (Tls1_2, None));

    for bad in [
        "TLSv1.4",
        ">=TLSv1.0",
        "=TLSv1.2",
        "SSLv2",
        "<=SSLv3",
        "SSLv3",
        "!TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3",
        ">=TLSv1.3 <=TLSv1.2",
        "!TLSv1.2",
        "TLSv1 TLSv1.3",
        ">=",
        "!",
    ] {
        assert!(parse_protocols(bad).is_err(), "{bad:?}");
    }
    let e = parse_protocols("!TLSv1.2").err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("gap")));
}

#[test]
fn protocols_from_entry_or_default() {
    let mut c = config(
        "may",
        vec![
            TlsPolicyEntry {
                protocols: Some(">=TLSv1.3".into()),
                ..entry("new.test", "encrypt")
            },
            TlsPolicyEntry {
                protocols: Some("TLSv1.9".into()),
                ..entry("bad.test", "encrypt")
            },
        ],
    );
    c.protocols = "<=TLSv1.2".into();
    assert_eq!(
        (
            policy(&c, "new.test").min_version,
            policy(&c, "new.test").max_version
        ),
        (TlsVersion::Tls1_3, None)
    );
    let p = policy(&c, "old.test");
    assert_eq!(
        (p.min_version, p.max_version),
        (TlsVersion::Tls1_0, Some(TlsVersion::Tls1_2))
    );
    let e = policy_error(&c, "bad.test");
    assert!(e.contains("\"bad.test\"") && e.contains("TLSv1.9"), "{e}");
    c.protocols = "!TLSv1.2".into();
    assert!(policy_error(&c, "old.test").contains("gap"));
}

#[test]
fn servername_and_paths() {
    let mut c = config(
        "may",
        vec![
            TlsPolicyEntry {
                servername: Some("nexthop".into()),
                ..entry("a.test", "may")
            },
            TlsPolicyEntry {
                servername: Some("sni.example.test".into()),
                ..entry("b.test", "may")
            },
            TlsPolicyEntry {
                servername: Some(String::new()),
                ..entry("c.test", "may")
            },
        ],
    );
    assert_eq!(policy(&c, "x.test").servername, ServerName::Hostname);
    assert_eq!(policy(&c, "a.test").servername, ServerName::Nexthop);
    assert_eq!(
        policy(&c, "b.test").servername,
        ServerName::Fixed("sni.example.test".into())
    );
    c.servername = "hostname".into();
    assert_eq!(policy(&c, "x.test").servername, ServerName::Hostname);
    c.servername = "fixed.example.test".into();
    assert_eq!(
        policy(&c, "x.test").servername,
        ServerName::Fixed("fixed.example.test".into())
    );
    // An empty entry value means the host name, not the default.
    assert_eq!(policy(&c, "c.test").servername, ServerName::Hostname);

    c.ca_file = "/etc/ssl/ca.pem".into();
    c.ca_path = String::new();
    c.cert_file = "/etc/mailhop/cert.pem".into();
    c.key_file = " ".into();
    let p = policy(&c, "x.test");
    assert_eq!(p.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
    assert_eq!(p.ca_path, None);
    assert_eq!(p.cert_file, Some(PathBuf::from("/etc/mailhop/cert.pem")));
    assert_eq!(p.key_file, None);
}

#[test]
fn errors_display() {
    let e = PolicyError("x".into());
    assert_eq!(e.to_string(), "x");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert_eq!(boxed.to_string(), "x");
    assert_eq!(TlsVersion::Tls1_0.name(), "TLSv1");
    assert_eq!(TlsVersion::Tls1_3.name(), "TLSv1.3");
    assert_eq!(Digest::Sha512.output_len(), 64);
}

#[test]
fn defaults_toml_round_trip_policy_table() {
    // A table written in TOML resolves as the text says.
    let text = "[tls]\nsecurity_level = \"may\"\n\
                [[tls.policy]]\ndestination = \".example.test\"\nlevel = \"secure\"\n\
                match = [\"nexthop\"]\n\
                [[tls.policy]]\ndestination = \"[mx.example.test]:587\"\nlevel = \"encrypt\"\n\
                protocols = \">=TLSv1.3\"\n";
    let c = match crate::config::Config::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let p = policy(&c.tls, "mx.example.test");
    assert_eq!(
        (p.level, p.matches),
        (Level::Secure, vec![MatchRule::Nexthop])
    );
    let p = policy(&c.tls, "[mx.example.test]:587");
    assert_eq!(
        (p.level, p.min_version),
        (Level::Encrypt, TlsVersion::Tls1_3)
    );
    assert_eq!(policy(&c.tls, "[mx.example.test]").level, Level::May);
}

/// The policies built once per configuration are those `policy_for` gives
/// each destination, errors included, for TCP and UNIX sockets.
#[test]
fn policies_built_once_match_policy_for() {
    let mut c = config(
        "may",
        vec![
            entry("example.test", "secure"),
            entry(".example.test", "encrypt"),
            entry("[relay.example.test]:587", "verify"),
            entry("unix:/run/secure", "encrypt"),
            entry("dane.test", "dane-only"),
            TlsPolicyEntry {
                protocols: Some("!TLSv1.2".into()),
                ..entry("gap.test", "encrypt")
            },
            entry(" Dup.Test ", "none"),
            entry("dup.test", "secure"),
        ],
    );
    c.verify_cert_match = vec!["nexthop".into()];
    let policies = Policies::new(&c);
    for destination in [
        "example.test",
        "EXAMPLE.test",
        "a.b.example.test",
        "[relay.example.test]:587",
        "[relay.example.test]",
        "unix:/run/secure",
        "unix:/run/other",
        "dane.test",
        "gap.test",
        "dup.test",
        " other.test ",
        "",
    ] {
        for unix in [false, true] {
            assert_eq!(
                policies.lookup(destination, unix).map(|p| (*p).clone()),
                policy_for(&c, destination, unix),
                "{destination:?} unix={unix}"
            );
        }
    }
}
