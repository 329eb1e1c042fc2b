use super::checks::{check_helo_name, parse_inet_protocols, parse_nameserver, valid_hostname};
use super::settings::hostname_from_files;
use super::tables::{KeyDoc, secs};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

const CONF_FILE: &str = include_str!("../../conf/mailhop.toml");

fn err(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
        Err(err) => err,
    }
}

fn ok(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(err) => panic!("unexpected error for {text:?}: {err}"),
    }
}

/// Asserts the error's key and line, returning its message.
fn err_at(text: &str, key: &str, line: usize) -> String {
    let e = err(text);
    assert_eq!(e.key.as_deref(), Some(key), "key of {e} for {text:?}");
    assert_eq!(e.line, Some(line), "line of {e} for {text:?}");
    e.message
}

#[test]
fn defaults_mirror_postfix() {
    let c = Config::default();
    let s = &c.smtp;
    assert_eq!(s.helo_name, "");
    assert_eq!(s.port, 25);
    assert_eq!(s.connect_timeout, secs(30));
    assert_eq!(s.helo_timeout, secs(300));
    assert_eq!(s.mail_timeout, secs(300));
    assert_eq!(s.rcpt_timeout, secs(300));
    assert_eq!(s.data_init_timeout, secs(120));
    assert_eq!(s.data_xfer_timeout, secs(180));
    assert_eq!(s.data_done_timeout, secs(600));
    assert_eq!(s.quit_timeout, secs(300));
    assert_eq!(s.rset_timeout, secs(20));
    assert_eq!(s.mx_address_limit, 5);
    assert_eq!(s.mx_session_limit, 2);
    assert!(s.fallback_relay.is_empty());
    assert_eq!(s.relayhost, "");
    assert_eq!(s.inet_interfaces, "all");
    assert!(s.proxy_interfaces.is_empty());
    assert_eq!(s.bind_address, "");
    assert_eq!(s.bind_address6, "");
    assert!(!s.bind_address_enforce);
    assert!(s.skip_5xx_greeting);
    assert_eq!(s.line_length_limit, 998);
    assert_eq!(s.reply_length_limit, 2048);
    assert!(s.smtputf8_enable);
    let l = &c.lmtp;
    assert_eq!(l.port, 24);
    assert_eq!(l.lhlo_name, None);
    assert_eq!(l.connect_timeout, Duration::ZERO);
    assert_eq!(l.lhlo_timeout, None);
    assert_eq!(l.mail_timeout, None);
    assert_eq!(l.rcpt_timeout, None);
    assert_eq!(l.data_init_timeout, None);
    assert_eq!(l.data_xfer_timeout, None);
    assert_eq!(l.data_done_timeout, None);
    assert_eq!(l.quit_timeout, None);
    assert_eq!(l.rset_timeout, None);
    assert!(l.fallback_relay.is_empty());
    assert_eq!(l.skip_5xx_greeting, None);
    assert_eq!(l.line_length_limit, None);
    assert!(c.dns.nameservers.is_empty());
    assert_eq!(c.dns.inet_protocols, "all");
    assert_eq!(c.tls.security_level, "may");
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn empty_text_gives_defaults() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("# only a comment\n\n"), Config::default());
    assert_eq!(ok("[smtp]\n[lmtp]\n[dns]\n[tls]\n"), Config::default());
}

#[test]
fn defaults_toml_round_trips() {
    let text = Config::defaults_toml();
    assert_eq!(ok(&text), Config::default());
    // Every key appears, as an assignment or as a commented line.
    let tables: [(&str, &[KeyDoc]); 4] = [
        ("smtp", SmtpConfig::KEYS),
        ("lmtp", LmtpConfig::KEYS),
        ("dns", DnsConfig::KEYS),
        ("tls", TlsConfig::KEYS),
    ];
    for (table, keys) in tables {
        assert!(
            text.contains(&format!("\n[{table}]\n")),
            "[{table}] missing"
        );
        for key in keys {
            let assigned = format!("\n{} = ", key.name);
            let commented = format!("\n# {} = ", key.name);
            assert!(
                text.contains(&assigned) || text.contains(&commented),
                "{table}.{} missing from defaults_toml()",
                key.name
            );
            assert!(
                text.contains(&format!("# Mirrors Postfix: {}\n", key.postfix)),
                "{table}.{}: Postfix parameter missing",
                key.name
            );
        }
    }
    assert!(
        text.contains("\n# lhlo_timeout = \"300s\"  (default: the [smtp] helo_timeout value)\n")
    );
    assert!(text.contains("\nconnect_timeout = \"30s\"\n"));
    assert!(text.contains("\nconnect_timeout = \"0s\"\n"));
}

#[test]
fn serde_round_trip_of_non_default_config() {
    let mut c = Config::default();
    c.smtp.connect_timeout = Duration::from_millis(1500);
    c.smtp.fallback_relay = vec!["[relay.example]:587".into()];
    c.lmtp.lhlo_timeout = Some(secs(45));
    c.lmtp.skip_5xx_greeting = Some(false);
    c.lmtp.lhlo_name = Some("lmtp.example".into());
    let text = match toml::to_string(&c) {
        Ok(text) => text,
        Err(e) => panic!("serialize: {e}"),
    };
    assert!(text.contains("connect_timeout = \"1500ms\""), "{text}");
    assert!(text.contains("lhlo_timeout = \"45s\""), "{text}");
    assert_eq!(ok(&text), c);
}

/// `MAILHOP_BLESS=1 cargo test` rewrites conf/mailhop.toml from
/// `Config::defaults_toml()`.
#[test]
fn conf_file_is_the_default_configuration() {
    if std::env::var_os("MAILHOP_BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/mailhop.toml");
        if let Err(e) = std::fs::write(path, Config::defaults_toml()) {
            panic!("writing {path}: {e}");
        }
        return;
    }
    assert_eq!(ok(CONF_FILE), Config::default());
    assert_eq!(
        CONF_FILE,
        Config::defaults_toml(),
        "conf/mailhop.toml is out of date: regenerate it with MAILHOP_BLESS=1 cargo test"
    );
}

/// docs/man/mailhop.toml.5 is `mailhop config man`, byte for byte
/// (`MAILHOP_BLESS=1 cargo test` rewrites it too).
#[test]
fn man_page_file_is_the_generated_man_page() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man/mailhop.toml.5");
    if std::env::var_os("MAILHOP_BLESS").is_some() {
        if let Err(e) = std::fs::write(path, Config::man_page()) {
            panic!("writing {path}: {e}");
        }
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("reading {path}: {e}; generate it with: cargo build && target/debug/mailhop config man > docs/man/mailhop.toml.5")
        });
    assert!(
        committed == Config::man_page(),
        "docs/man/mailhop.toml.5 is out of date: regenerate it with \
             `cargo build && target/debug/mailhop config man > docs/man/mailhop.toml.5`"
    );
}

/// Every key of every table is in the man page with a known type, its
/// default and its Postfix parameter.
#[test]
fn man_page_documents_every_key() {
    let page = Config::man_page();
    for table in document::tests_support::tables() {
        assert!(
            page.contains(&format!(".SH \"TABLE [{}]\"\n", table.0)),
            "{}",
            table.0
        );
        for key in table.1 {
            assert!(
                page.contains(&format!(".TP\n.B {}\n", key.name)),
                "{}",
                key.name
            );
            let kind = document::value_kind(key.rust_type);
            assert_ne!(kind, key.rust_type, "no man page type for {}", key.name);
            assert!(
                page.contains(&format!(".TP\n.B {}\n", key.name))
                    && page.contains(&format!("\n.br\nType: {kind}.\n.br\nDefault: ")),
                "{}",
                key.name
            );
            assert!(
                page.contains(&format!("Mirrors Postfix: {}.", key.postfix)),
                "{}",
                key.name
            );
        }
    }
    // The [[tls.policy]] keys documented are exactly those of an entry.
    let full = TlsPolicyEntry {
        destination: "d".into(),
        level: "may".into(),
        matches: vec!["hostname".into()],
        fingerprints: vec!["AB".into()],
        servername: Some("s".into()),
        protocols: Some(">=TLSv1.2".into()),
    };
    let fields = match toml::Table::try_from(&full) {
        Ok(table) => table
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        Err(e) => panic!("{e}"),
    };
    let documented = TlsPolicyEntry::KEYS
        .iter()
        .map(|(name, _, _)| name.to_string())
        .collect();
    assert_eq!(fields, documented);
    for (name, _, _) in TlsPolicyEntry::KEYS {
        assert!(page.contains(&format!(".TP\n.B {name}\n")), "{name}");
    }
    assert!(page.starts_with(".\\\" Generated by"));
    assert!(page.contains("\n.SH SEE ALSO\n.BR mailhop (8),\n.BR postconf (5),"));
}

/// The typed settings carry every word-valued key as an enum, made once;
/// values a validated file cannot hold fall back as delivery always did.
#[test]
fn settings_are_typed_once() {
    let c = ok("[smtp]\nrelayhost = \"[relay.test]:587\"\n\
                    [dns]\ninet_protocols = \"ipv6\"\naddress_preference = \"ipv4\"\n\
                    support = \"disabled\"\n[log]\nformat = \"json\"\n");
    let s = c.settings();
    assert_eq!(s.relayhost.as_deref(), Some("[relay.test]:587"));
    assert_eq!(
        s.inet_protocols,
        InetProtocols {
            ipv4: false,
            ipv6: true
        }
    );
    assert_eq!(s.address_preference, AddressPreference::Ipv4);
    assert_eq!(s.dns_support, DnsSupport::Disabled);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.smtp, c.protocol(false));
    assert_eq!(s.lmtp, c.protocol(true));

    let d = Config::default().settings();
    assert_eq!(d.relayhost, None);
    assert_eq!(
        d.inet_protocols,
        InetProtocols {
            ipv4: true,
            ipv6: true
        }
    );
    assert_eq!(d.address_preference, AddressPreference::Any);
    assert_eq!(d.dns_support, DnsSupport::Enabled);
    assert_eq!(d.log_format, LogFormat::Text);

    let mut bad = Config::default();
    bad.dns.inet_protocols = "ipx".into();
    bad.dns.address_preference = "ipx".into();
    bad.dns.support = "maybe".into();
    bad.log.format = "xml".into();
    let b = bad.settings();
    assert_eq!(
        b.inet_protocols,
        InetProtocols {
            ipv4: true,
            ipv6: true
        }
    );
    assert_eq!(b.address_preference, AddressPreference::Any);
    assert_eq!(b.dns_support, DnsSupport::Enabled);
    assert_eq!(b.log_format, LogFormat::Text);
    assert_eq!(
        "xml".parse::<LogFormat>(),
        Err(String::from(
            "invalid value \"xml\", expected one of text, json"
        ))
    );
    assert_eq!(
        "json".parse::<LogFormat>().map(|f| f.to_string()),
        Ok("json".into())
    );
}

/// A fingerprint that loading accepted but the TLS policy could not parse
/// ("ABC:DEF:...": colons in the wrong places) made every delivery fail
/// with 4.7.5; one grammar now refuses it when the file is loaded.
#[test]
fn fingerprint_with_misplaced_colons_is_refused_at_load() {
    let fp = "ABC:DEF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11";
    let m = err_at(
        &format!("[tls]\nfingerprint_cert_match = [\"{fp}\"]\n"),
        "tls.fingerprint_cert_match",
        2,
    );
    assert_eq!(
        m,
        format!("invalid fingerprint {fp:?}, expected hex bytes such as \"AB:CD:...\"")
    );
    let good = "AB:CD:EF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00";
    ok(&format!(
        "[tls]\nfingerprint_cert_match = [\"{good}\", \"{}\"]\n",
        good.replace(':', "")
    ));
    // Still at least 20 bytes, as before.
    err_at(
        "[tls]\nfingerprint_cert_match = [\"AB:CD\"]\n",
        "tls.fingerprint_cert_match",
        2,
    );
}

/// Loading keeps its stricter spelling rules over the shared TLS
/// grammar: lower-case levels and digests, exact protocol names without
/// colons, one match rule per element.
#[test]
fn tls_values_are_written_as_documented() {
    for (text, key) in [
        ("[tls]\nsecurity_level = \"MAY\"\n", "tls.security_level"),
        ("[tls]\nsecurity_level = \" may\"\n", "tls.security_level"),
        (
            "[tls]\nfingerprint_digest = \"SHA256\"\n",
            "tls.fingerprint_digest",
        ),
        ("[tls]\nprotocols = \"tlsv1.2\"\n", "tls.protocols"),
        ("[tls]\nprotocols = \"!SSLv2:!SSLv3\"\n", "tls.protocols"),
        (
            "[tls]\nverify_cert_match = [\"hostname:nexthop\"]\n",
            "tls.verify_cert_match",
        ),
        (
            "[tls]\nverify_cert_match = [\"example.test.\"]\n",
            "tls.verify_cert_match",
        ),
    ] {
        err_at(text, key, 2);
    }
    let c = ok(
        "[tls]\nsecurity_level = \"dane\"\nfingerprint_digest = \"sha1\"\n\
                    protocols = \"!SSLv2, !SSLv3 <=TLSv1.2\"\n\
                    verify_cert_match = [\"HOSTNAME\", \".Example.test\"]\n",
    );
    assert_eq!(c.tls.security_level.parse(), Ok(SecurityLevel::Dane));
}

#[test]
fn durations_good() {
    let cases = [
        ("0s", Duration::ZERO),
        ("0ms", Duration::ZERO),
        ("250ms", Duration::from_millis(250)),
        ("1500ms", Duration::from_millis(1500)),
        ("30s", secs(30)),
        ("5m", secs(300)),
        ("2h", secs(7200)),
        ("1d", secs(86_400)),
        ("2w", secs(1_209_600)),
        ("007s", secs(7)),
        ("18446744073709551615s", secs(u64::MAX)),
    ];
    for (text, want) in cases {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    let c =
        ok("[smtp]\nconnect_timeout = \"0s\"\nhelo_timeout = \"5m\"\nrset_timeout = \"1500ms\"\n");
    assert_eq!(c.smtp.connect_timeout, Duration::ZERO);
    assert_eq!(c.smtp.helo_timeout, secs(300));
    assert_eq!(c.smtp.rset_timeout, Duration::from_millis(1500));
}

#[test]
fn durations_bad() {
    let cases = [
        ("", "expected a duration"),
        ("30", "missing unit"),
        ("s", "expected a duration"),
        ("-5s", "negative"),
        ("5x", "unknown unit \"x\""),
        ("5S", "unknown unit \"S\""),
        ("5 s", "unknown unit \" s\""),
        (" 5s", "expected a duration"),
        ("+5s", "expected a duration"),
        ("1.5s", "unknown unit \".5s\""),
        ("5sec", "unknown unit \"sec\""),
        ("99999999999999999999s", "too large"),
        ("18446744073709551615m", "too large"),
        ("9999999999999999999w", "too large"),
    ];
    for (text, want) in cases {
        match parse_duration(text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(e) => assert!(e.contains(want), "{text:?}: {e}"),
        }
    }
    let m = err_at("[smtp]\n\nhelo_timeout = \"30\"\n", "smtp.helo_timeout", 3);
    assert!(m.contains("missing unit"), "{m}");
    let m = err_at("[smtp]\nhelo_timeout = 30\n", "smtp.helo_timeout", 2);
    assert!(m.contains("invalid type: integer `30`"), "{m}");
    assert!(m.contains("\"30s\""), "{m}");
    let m = err_at("[lmtp]\nrcpt_timeout = \"-1s\"\n", "lmtp.rcpt_timeout", 2);
    assert!(m.contains("negative"), "{m}");
    err_at("[smtp]\nquit_timeout = \"1y\"\n", "smtp.quit_timeout", 2);
}

#[test]
fn durations_format() {
    assert_eq!(format_duration(secs(300)).as_deref(), Ok("300s"));
    assert_eq!(format_duration(Duration::ZERO).as_deref(), Ok("0s"));
    assert_eq!(
        format_duration(Duration::from_millis(1500)).as_deref(),
        Ok("1500ms")
    );
    assert_eq!(
        format_duration(Duration::from_millis(20)).as_deref(),
        Ok("20ms")
    );
    assert!(format_duration(Duration::from_nanos(1_500)).is_err());
    assert!(format_duration(Duration::new(u64::MAX, 1_000_000)).is_err());
}

#[test]
fn zero_timeouts() {
    assert_eq!(
        ok("[smtp]\nconnect_timeout = \"0s\"\n")
            .smtp
            .connect_timeout,
        Duration::ZERO
    );
    assert_eq!(
        ok("[lmtp]\nconnect_timeout = \"0ms\"\n")
            .lmtp
            .connect_timeout,
        Duration::ZERO
    );
    let m = err_at(
        "[smtp]\nport = 25\nhelo_timeout = \"0s\"\n",
        "smtp.helo_timeout",
        3,
    );
    assert!(m.contains("greater than zero"), "{m}");
    err_at("[smtp]\nrset_timeout = \"0ms\"\n", "smtp.rset_timeout", 2);
    err_at(
        "[lmtp]\n\n\ndata_done_timeout = \"0s\"\n",
        "lmtp.data_done_timeout",
        4,
    );
}

#[test]
fn unknown_keys() {
    let m = err_at("[smtp]\nport = 25\n\n# typo\nprot = 26\n", "smtp.prot", 5);
    assert!(
        m.starts_with("unknown field `prot` in [smtp], expected one of"),
        "{m}"
    );
    assert!(m.contains("`port`"), "{m}");
    let m = err_at("[lmtp]\nlhlo_tmeout = \"5s\"\n", "lmtp.lhlo_tmeout", 2);
    assert!(
        m.starts_with("unknown field `lhlo_tmeout` in [lmtp]"),
        "{m}"
    );
    let m = err_at("\n[dns]\nnameserver = []\n", "dns.nameserver", 3);
    assert!(m.starts_with("unknown field `nameserver` in [dns]"), "{m}");
    let m = err_at("[tls]\nlevel = \"may\"\n", "tls.level", 2);
    assert!(m.starts_with("unknown field `level` in [tls]"), "{m}");
    let m = err_at("[smpt]\nport = 25\n", "smpt", 1);
    assert!(
        m.starts_with("unknown field `smpt` at the top level"),
        "{m}"
    );
    err_at("port = 25\n", "port", 1);
    err_at("smtp.prot = 1\n", "smtp.prot", 1);
    err_at("[smtp.extra]\nx = 1\n", "smtp.extra", 1);
    let e = err("[smtp]\nport = 25\n\n# typo\nprot = 26\n");
    assert!(
        e.to_string()
            .starts_with("line 5: smtp.prot: unknown field `prot` in [smtp]"),
        "{e}"
    );
}

#[test]
fn bad_values() {
    let m = err_at("# ports\n[smtp]\nport = 70000\n", "smtp.port", 3);
    assert_eq!(m, "invalid value: integer `70000`, expected u16");
    assert_eq!(
        err("# ports\n[smtp]\nport = 70000\n").to_string(),
        "line 3: smtp.port: invalid value: integer `70000`, expected u16"
    );
    err_at("[smtp]\nport = -1\n", "smtp.port", 2);
    let m = err_at("[smtp]\nport = 0\n", "smtp.port", 2);
    assert!(m.contains("1 to 65535"), "{m}");
    err_at("[lmtp]\nport = 0\n", "lmtp.port", 2);
    let m = err_at(
        "[tls]\nsecurity_level = \"bogus\"\n",
        "tls.security_level",
        2,
    );
    assert!(m.contains("\"bogus\"") && m.contains("dane-only"), "{m}");
    let m = err_at("[dns]\ninet_protocols = \"ipx\"\n", "dns.inet_protocols", 2);
    assert!(m.contains("\"ipx\""), "{m}");
    err_at("[dns]\ninet_protocols = \"\"\n", "dns.inet_protocols", 2);
    err_at(
        "[dns]\ninet_protocols = \"ipv4, ipx\"\n",
        "dns.inet_protocols",
        2,
    );
    err_at(
        "[smtp]\nbind_address = \"not-an-ip\"\n",
        "smtp.bind_address",
        2,
    );
    let m = err_at(
        "[smtp]\nbind_address = \"[2001:db8::1]\"\n",
        "smtp.bind_address",
        2,
    );
    assert!(m.contains("bind_address6"), "{m}");
    let c = ok("[smtp]\nbind_address6 = \"[2001:db8::1]\"\n");
    assert_eq!(c.smtp.bind_address6, "[2001:db8::1]");
    assert_eq!(
        c.smtp.parsed_bind_address6(),
        Ok(Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
    );
    assert_eq!(c.smtp.parsed_bind_address(), Ok(None));
    err_at(
        "[smtp]\nbind_address6 = \"192.0.2.1\"\n",
        "smtp.bind_address6",
        2,
    );
    err_at(
        "[smtp]\nbind_address6 = \"[nope]\"\n",
        "smtp.bind_address6",
        2,
    );
    let m = err_at(
        "[smtp]\nline_length_limit = 10\n",
        "smtp.line_length_limit",
        2,
    );
    assert!(m.contains("at least 40"), "{m}");
    err_at(
        "[lmtp]\nline_length_limit = 39\n",
        "lmtp.line_length_limit",
        2,
    );
    err_at(
        "[smtp]\nreply_length_limit = 100\n",
        "smtp.reply_length_limit",
        2,
    );
    err_at(
        "[smtp]\ninet_interfaces = \"\"\n",
        "smtp.inet_interfaces",
        2,
    );
    err_at(
        "[smtp]\ninet_interfaces = \"all, 127.0.0.1\"\n",
        "smtp.inet_interfaces",
        2,
    );
    err_at(
        "[smtp]\ninet_interfaces = \"127.0.0.1, bad!host\"\n",
        "smtp.inet_interfaces",
        2,
    );
    err_at(
        "[smtp]\nproxy_interfaces = [\"ok.example\",\n \"-bad\"]\n",
        "smtp.proxy_interfaces",
        3,
    );
    err_at("[smtp]\nhelo_name = \"bad name\"\n", "smtp.helo_name", 2);
    err_at("[lmtp]\nlhlo_name = \"-bad\"\n", "lmtp.lhlo_name", 2);
    // Values that are fine.
    let c = ok(
        "[smtp]\nline_length_limit = 0\nbind_address = \"[192.0.2.1]\"\n\
                    inet_interfaces = \"127.0.0.1, [::1] mail.example\"\n\
                    proxy_interfaces = [\"192.0.2.9\"]\n\
                    [lmtp]\nline_length_limit = 40\n\
                    [dns]\ninet_protocols = \"ipv4, ipv6\"\n\
                    [tls]\nsecurity_level = \"dane-only\"\n",
    );
    assert_eq!(
        c.smtp.parsed_bind_address(),
        Ok(Some(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert_eq!(
        ok("[smtp]\ninet_interfaces = \"loopback-only\"\n")
            .smtp
            .inet_interfaces,
        "loopback-only"
    );
}

#[test]
fn errors_in_dotted_keys_and_inline_tables() {
    err_at("smtp.port = 70000\n", "smtp.port", 1);
    err_at("\nsmtp = { port = 0 }\n", "smtp.port", 2);
    err_at("\nsmtp = { port = \"x\" }\n", "smtp.port", 2);
    err_at(
        "[smtp]\nfallback_relay = [\"a\",\n  1]\n",
        "smtp.fallback_relay",
        3,
    );
    err_at("smtp = 5\n", "smtp", 1);
    let m = err_at("\nsmtp = []\n", "smtp", 2);
    assert_eq!(m, "invalid type: array, expected a table");
    err_at("[[tls]]\nsecurity_level = \"may\"\n", "tls", 1);
    err_at("dns = [\"1.2.3.4\"]\n", "dns", 1);
}

#[test]
fn wrong_type() {
    let m = err_at("[smtp]\nport = \"x\"\n", "smtp.port", 2);
    assert_eq!(m, "invalid type: string \"x\", expected u16");
    let m = err_at(
        "[smtp]\nskip_5xx_greeting = \"yes\"\n",
        "smtp.skip_5xx_greeting",
        2,
    );
    assert!(m.contains("expected a boolean"), "{m}");
    err_at("[dns]\nnameservers = \"192.0.2.1\"\n", "dns.nameservers", 2);
}

#[test]
fn syntax_errors() {
    let e = err("[smtp]\nport = 25\nhelo_name = \n");
    assert_eq!(e.line, Some(3), "{e}");
    let e = err("[smtp]\nport = 25\n[smtp]\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");
    let e = err("[smtp\n");
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn lmtp_falls_back_to_smtp() {
    let c = ok(
        "[smtp]\nhelo_name = \"mx.example\"\nhelo_timeout = \"100s\"\nmail_timeout = \"101s\"\n\
                    rcpt_timeout = \"102s\"\ndata_init_timeout = \"103s\"\ndata_xfer_timeout = \"104s\"\n\
                    data_done_timeout = \"105s\"\nquit_timeout = \"106s\"\nrset_timeout = \"107s\"\n\
                    skip_5xx_greeting = false\nline_length_limit = 500\nfallback_relay = [\"[relay.example]\"]\n\
                    mx_address_limit = 7\nmx_session_limit = 3\nbind_address = \"192.0.2.1\"\n\
                    bind_address6 = \"2001:db8::1\"\nbind_address_enforce = true\n",
    );
    let smtp = c.protocol(false);
    let lmtp = c.protocol(true);
    assert_eq!(smtp.port, 25);
    assert_eq!(lmtp.port, 24);
    assert_eq!(smtp.timeouts.connect, secs(30));
    assert_eq!(lmtp.timeouts.connect, Duration::ZERO);
    let want = Timeouts {
        connect: Duration::ZERO,
        helo: secs(100),
        mail: secs(101),
        rcpt: secs(102),
        data_init: secs(103),
        data_xfer: secs(104),
        data_done: secs(105),
        quit: secs(106),
        rset: secs(107),
        starttls: secs(300),
        per_request_deadline: true,
        min_data_rate: 500,
    };
    assert_eq!(lmtp.timeouts, want);
    assert_eq!(
        smtp.timeouts,
        Timeouts {
            connect: secs(30),
            ..want
        }
    );
    assert!(!lmtp.skip_5xx_greeting);
    assert_eq!(lmtp.line_length_limit, 500);
    assert_eq!(lmtp.helo_name, "mx.example");
    assert_eq!(smtp.helo_name, "mx.example");
    assert_eq!(smtp.fallback_relay, vec!["[relay.example]".to_string()]);
    assert!(
        lmtp.fallback_relay.is_empty(),
        "lmtp_fallback_relay is not inherited"
    );
    assert_eq!(lmtp.mx_address_limit, 7);
    assert_eq!(lmtp.mx_session_limit, 3);
    assert_eq!(lmtp.bind_address, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        lmtp.bind_address6,
        Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    );
    assert!(lmtp.bind_address_enforce);

    let c = ok(
        "[lmtp]\nlhlo_name = \"lmtp.example\"\nlhlo_timeout = \"1s\"\nmail_timeout = \"2s\"\n\
                    rcpt_timeout = \"3s\"\ndata_init_timeout = \"4s\"\ndata_xfer_timeout = \"5s\"\n\
                    data_done_timeout = \"6s\"\nquit_timeout = \"7s\"\nrset_timeout = \"8s\"\n\
                    connect_timeout = \"9s\"\nport = 2424\nskip_5xx_greeting = false\n\
                    line_length_limit = 0\nfallback_relay = [\"inet:[192.0.2.7]:24\"]\n",
    );
    let lmtp = c.protocol(true);
    assert_eq!(
        lmtp.timeouts,
        Timeouts {
            connect: secs(9),
            helo: secs(1),
            mail: secs(2),
            rcpt: secs(3),
            data_init: secs(4),
            data_xfer: secs(5),
            data_done: secs(6),
            quit: secs(7),
            rset: secs(8),
            starttls: secs(300),
            per_request_deadline: true,
            min_data_rate: 500,
        }
    );
    assert_eq!(lmtp.port, 2424);
    assert_eq!(lmtp.helo_name, "lmtp.example");
    assert!(!lmtp.skip_5xx_greeting);
    assert_eq!(lmtp.line_length_limit, 0);
    assert_eq!(lmtp.fallback_relay, vec!["inet:[192.0.2.7]:24".to_string()]);
    let smtp = c.protocol(false);
    assert_eq!(smtp.timeouts.helo, secs(300));
    assert!(smtp.skip_5xx_greeting);
    assert!(smtp.fallback_relay.is_empty());
    assert_eq!(smtp.bind_address, None);

    // Defaults: LMTP takes the SMTP timeouts except connect.
    let d = Config::default();
    assert_eq!(d.protocol(true).timeouts.helo, secs(300));
    assert_eq!(d.protocol(true).timeouts.rset, secs(20));
    assert_eq!(d.protocol(true).line_length_limit, 998);
    assert!(d.protocol(true).skip_5xx_greeting);
}

#[test]
fn helo_names() {
    for good in [
        "mail.example.com",
        "localhost",
        "a-b.example",
        "under_score.example",
        "1host.example",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::1]",
    ] {
        assert!(check_helo_name(good).is_ok(), "{good}");
    }
    for bad in [
        "bad name",
        "-lead.example",
        "trail-.example",
        "a..b",
        ".lead",
        "trail.",
        "123.456",
        "[2001:db8::1]",
        "[192.0.2.300]",
        "[IPv6:192.0.2.1]",
        "exa\u{e9}mple.com",
        &"a".repeat(64),
    ] {
        assert!(check_helo_name(bad).is_err(), "{bad}");
    }
    let m = err_at(
        "[smtp]\nhelo_name = \"[2001:db8::1]\"\n",
        "smtp.helo_name",
        2,
    );
    assert!(m.contains("[IPv6:2001:db8::1]"), "{m}");

    let c = ok("[smtp]\nhelo_name = \"[192.0.2.1]\"\n");
    assert_eq!(c.helo_name(), "[192.0.2.1]");
    assert_eq!(c.protocol(false).helo_name, "[192.0.2.1]");
    let d = Config::default();
    assert_eq!(d.helo_name(), d.myhostname());
    assert!(valid_hostname(&d.myhostname()));
    assert_eq!(d.protocol(true).helo_name, d.myhostname());
    // An explicitly empty lhlo_name means $myhostname, not [smtp] helo_name.
    let c = ok("[smtp]\nhelo_name = \"mx.example\"\n[lmtp]\nlhlo_name = \"\"\n");
    assert_eq!(c.protocol(true).helo_name, c.myhostname());
    assert_eq!(c.myhostname(), Config::default().myhostname());
}

#[test]
fn hostname_lookup_order() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let missing = dir.path().join("missing");
    let garbage = dir.path().join("garbage");
    let good = dir.path().join("good");
    let write = |path: &Path, text: &str| {
        if let Err(e) = std::fs::write(path, text) {
            panic!("write {}: {e}", path.display());
        }
    };
    write(&garbage, "not a host name\n");
    write(&good, "host.example\n");
    assert_eq!(
        hostname_from_files(&[&missing, &garbage, &good]),
        "host.example"
    );
    assert_eq!(hostname_from_files(&[&missing, &garbage]), "localhost");
    assert_eq!(hostname_from_files(&[]), "localhost");
}

#[test]
fn nameservers() {
    let c = ok(
        "[dns]\nnameservers = [\"192.0.2.53\", \"192.0.2.54:5353\", \"2001:db8::53\",\n\
                    \"[2001:db8::54]:5353\", \"[2001:db8::55]\"]\n",
    );
    let want: Vec<SocketAddr> = [
        "192.0.2.53:53",
        "192.0.2.54:5353",
        "[2001:db8::53]:53",
        "[2001:db8::54]:5353",
        "[2001:db8::55]:53",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect();
    assert_eq!(want.len(), 5);
    assert_eq!(c.dns.parsed_nameservers(), Ok(want));
    for bad in [
        "ns.example",
        "192.0.2.1:0",
        "192.0.2.1:99999",
        "[192.0.2.1]:53",
        "2001:db8::1:53x",
        "",
    ] {
        assert!(parse_nameserver(bad).is_err(), "{bad:?}");
    }
    let m = err_at(
        "[dns]\nnameservers = [\n  \"192.0.2.53\",\n  \"ns.example\",\n]\n",
        "dns.nameservers",
        4,
    );
    assert!(m.contains("\"ns.example\""), "{m}");
}

#[test]
fn inet_protocols() {
    let parse = |text: &str| parse_inet_protocols(text).ok();
    let both = Some(InetProtocols {
        ipv4: true,
        ipv6: true,
    });
    assert_eq!(parse("all"), both);
    assert_eq!(parse("ipv4, ipv6"), both);
    assert_eq!(parse("ipv6,ipv4"), both);
    assert_eq!(
        parse("ipv4"),
        Some(InetProtocols {
            ipv4: true,
            ipv6: false
        })
    );
    assert_eq!(
        parse(" ipv6 "),
        Some(InetProtocols {
            ipv4: false,
            ipv6: true
        })
    );
    assert_eq!(parse("IPv4"), None);
    assert_eq!(parse(", ,"), None);
    assert_eq!(
        Config::default().dns.parsed_inet_protocols(),
        Ok(InetProtocols {
            ipv4: true,
            ipv6: true
        })
    );
}

#[test]
fn validate_programmatic_config() {
    let mut c = Config::default();
    c.smtp.port = 0;
    let e = match c.validate() {
        Err(e) => e,
        Ok(()) => panic!("port 0 accepted"),
    };
    assert_eq!(e.key.as_deref(), Some("smtp.port"));
    assert_eq!(e.line, None);
    assert!(
        e.to_string().starts_with("smtp.port: invalid value 0"),
        "{e}"
    );

    let mut c = Config::default();
    c.smtp.bind_address = "bogus".into();
    assert!(c.validate().is_err());
    assert!(c.smtp.parsed_bind_address().is_err());
    assert_eq!(c.protocol(false).bind_address, None);
    c.dns.nameservers = vec!["x".into()];
    let e = match c.dns.parsed_nameservers() {
        Err(e) => e,
        Ok(v) => panic!("parsed {v:?}"),
    };
    assert_eq!(e.key.as_deref(), Some("dns.nameservers"));
}

#[test]
fn error_display() {
    let full = ConfigError {
        line: Some(3),
        key: Some("smtp.port".into()),
        message: "bad".into(),
    };
    assert_eq!(full.to_string(), "line 3: smtp.port: bad");
    let no_line = ConfigError {
        line: None,
        key: Some("smtp.port".into()),
        message: "bad".into(),
    };
    assert_eq!(no_line.to_string(), "smtp.port: bad");
    let no_key = ConfigError {
        line: Some(1),
        key: None,
        message: "bad".into(),
    };
    assert_eq!(no_key.to_string(), "line 1: bad");
    let bare = ConfigError {
        line: None,
        key: None,
        message: "bad".into(),
    };
    assert_eq!(bare.to_string(), "bad");
    let boxed: Box<dyn std::error::Error> = Box::new(bare);
    assert_eq!(boxed.to_string(), "bad");
}

#[test]
fn load_files() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let missing = dir.path().join("nope.toml");
    let e = match Config::load(&missing) {
        Err(e) => e,
        Ok(c) => panic!("loaded {c:?}"),
    };
    assert!(e.message.contains(&missing.display().to_string()), "{e}");
    assert_eq!((e.line, e.key.as_deref()), (None, None));

    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    let empty = dir.path().join("empty.toml");
    for (path, text) in [
        (&good, "[smtp]\nport = 2525\n"),
        (&bad, "[smtp]\n\nport = 0\n"),
        (&empty, ""),
    ] {
        if let Err(e) = std::fs::write(path, text) {
            panic!("write: {e}");
        }
    }
    assert_eq!(Config::load(&good).map(|c| c.smtp.port), Ok(2525));
    assert_eq!(Config::load(&empty), Ok(Config::default()));
    let e = match Config::load(&bad) {
        Err(e) => e,
        Ok(c) => panic!("loaded {c:?}"),
    };
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("smtp.port")));
    // A directory cannot be read as a file.
    let e = match Config::load(dir.path()) {
        Err(e) => e,
        Ok(c) => panic!("loaded {c:?}"),
    };
    assert!(e.message.contains(&dir.path().display().to_string()), "{e}");
}

#[test]
fn per_request_deadline_is_on_by_default_and_lmtp_inherits_it() {
    let d = Config::default();
    assert!(d.protocol(false).timeouts.per_request_deadline);
    assert_eq!(d.protocol(false).timeouts.min_data_rate, 500);
    let c = Config::from_toml_str("[smtp]\nper_request_deadline = false\nmin_data_rate = 1000\n")
        .expect("valid");
    let lmtp = c.protocol(true).timeouts;
    assert!(!lmtp.per_request_deadline);
    assert_eq!(lmtp.min_data_rate, 1000);
    let c = Config::from_toml_str("[lmtp]\nper_request_deadline = false\nmin_data_rate = 7\n")
        .expect("valid");
    assert!(c.protocol(false).timeouts.per_request_deadline);
    assert_eq!(c.protocol(true).timeouts.min_data_rate, 7);
    assert!(!c.protocol(true).timeouts.per_request_deadline);
    for text in ["[smtp]\nmin_data_rate = 0\n", "[lmtp]\nmin_data_rate = 0\n"] {
        let err = Config::from_toml_str(text).expect_err("0 B/s is refused");
        assert!(err.to_string().contains("min_data_rate"), "{err}");
    }
}

#[test]
fn address_health_and_happy_eyeballs_are_on_by_default_and_lmtp_inherits_them() {
    let d = Config::default().settings();
    for p in [&d.smtp, &d.lmtp] {
        assert_eq!(p.address_health, Some(secs(300)));
        assert_eq!(p.happy_eyeballs, Some(Duration::from_millis(250)));
    }
    let c = ok("[smtp]\naddress_health = false\nhappy_eyeballs_delay = \"100ms\"\n").settings();
    assert_eq!(c.smtp.address_health, None);
    assert_eq!(c.lmtp.address_health, None);
    assert_eq!(c.lmtp.happy_eyeballs, Some(Duration::from_millis(100)));
    let c = ok("[lmtp]\nhappy_eyeballs = false\naddress_health_time = \"10s\"\n").settings();
    assert_eq!(c.smtp.happy_eyeballs, Some(Duration::from_millis(250)));
    assert_eq!(c.lmtp.happy_eyeballs, None);
    assert_eq!(c.smtp.address_health, Some(secs(300)));
    assert_eq!(c.lmtp.address_health, Some(secs(10)));
    for (text, key) in [
        (
            "[smtp]\naddress_health_time = \"0s\"\n",
            "smtp.address_health_time",
        ),
        (
            "[smtp]\nhappy_eyeballs_delay = \"0s\"\n",
            "smtp.happy_eyeballs_delay",
        ),
        (
            "[lmtp]\nhappy_eyeballs_delay = \"0ms\"\n",
            "lmtp.happy_eyeballs_delay",
        ),
    ] {
        let message = err_at(text, key, 2);
        assert!(message.contains("greater than zero"), "{message}");
    }
}

#[test]
fn sasl_keys_defaults_and_checks() {
    let c = ok("");
    assert!(!c.sasl.auth_enable);
    assert_eq!(c.sasl.security_options, ["noplaintext", "noanonymous"]);
    assert_eq!(c.sasl.tls_security_options, None);
    assert!(c.sasl.auth_soft_bounce);
    let c = ok(
        "[sasl]\nauth_enable = true\npassword_maps = \"/etc/mailhop/sasl_passwd\"\n\
                tls_security_options = [\"noanonymous\"]\nmechanism_filter = [\"PLAIN\", \"login\"]\n",
    );
    assert_eq!(
        c.sasl.tls_security_options.as_deref(),
        Some(&["noanonymous".to_string()][..])
    );
    let e = err("[sasl]\nauth_enable = true\n");
    assert_eq!(e.key.as_deref(), Some("sasl.password_maps"), "{e}");
    let e = err("[sasl]\nsecurity_options = [\"noplain\"]\n").to_string();
    assert!(
        e.contains("sasl.security_options") && e.contains("\"noplain\""),
        "{e}"
    );
    let e = err("[sasl]\ntls_verified_security_options = [\"x\"]\n").to_string();
    assert!(e.contains("sasl.tls_verified_security_options"), "{e}");
    let e = err("[sasl]\nmechanism_filter = [\"PLAIN LOGIN\"]\n").to_string();
    assert!(e.contains("invalid SASL mechanism name"), "{e}");
}
