//! End-to-end DANE tests (issue 16): `mailhop send --direct --json` at TLS
//! levels `dane` and `dane-only` against real Postfix smtpd peers, with its
//! DNS from the DNSSEC lab (`common/dnssec_lab.rs`: nsd with a signed zone
//! `test.` and an unsigned child `insecure.test.`, behind a validating
//! unbound).
//!
//! Each test has its own lab, PKI and private Postfix (`common/postfix.rs`)
//! with two STARTTLS listeners on one port: `mx1.example.test` at
//! 127.0.0.1 and `mx2.example.test` at 127.0.0.2, each presenting a
//! certificate for its own name and the test CA (`common/certs.rs`). The
//! zone (see [`base_zones`]) points `example.test` at mx1, `two.example.test`
//! at mx1 (10) and mx2 (20), `bogus.example.test` and `second.example.test`
//! at mx2, and
//! `insecure.test` at `mx1.insecure.test` (127.0.0.1, unsigned); each test
//! adds its TLSA records at `_PORT._tcp.<mx host>`. mailhop is configured
//! as Postfix would be for DANE (`[dns] support = "dnssec"`, the resolver
//! trusted, `[tls] security_level = "dane"`, no CA file) and its results
//! are checked against Postfix's `dane_init()` (smtp_tls_policy.c): the
//! recipient's `status`, `dsn`, diagnostic, `tls` and `tls_policy`, and on
//! the server side the TLS session, the queue id and the discard agent's
//! `status=sent` (or that nothing was accepted).
//!
//! An MX RRset in the unsigned zone naming a signed host checks
//! `[tls] dane_insecure_mx_policy`. `dnssec_lab_answers_as_designed`
//! checks the lab itself with dig, `stub_resolver_reads_the_lab_as_designed`
//! mailhop's resolver against it, and
//! `lab_and_listeners_serve_plain_opportunistic_tls` the whole harness
//! without DANE. Without
//! nsd/unbound/ldns/dig or Postfix the tests print SKIPPED and pass, except
//! under `CI=true`, where they fail.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::certs::{Issued, Pki};
use common::dnssec_lab::{self, DnssecLab, Zones, a, cname, mx, query, tlsa};
use common::postfix::{Listener, Postfix, Session};
use common::{DEFAULT_TIMEOUTS, Delivery, Run, require_tool};
use mailhop::config::IpNetwork;
use mailhop::dns::stub::{StubResolver, StubSettings};
use mailhop::dns::{DnsErrorKind, DnsLookup};
use serde_json::Value;

const MX1_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const MX2_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const MX1: &str = "mx1.example.test";
const MX2: &str = "mx2.example.test";
/// A digest no certificate has.
const WRONG_DIGEST: &str = "abababababababababababababababababababababababababababababababab";

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

/// One of the two MX hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mx {
    One,
    Two,
}

impl Mx {
    fn name(self) -> &'static str {
        match self {
            Mx::One => MX1,
            Mx::Two => MX2,
        }
    }

    fn addr(self) -> Ipv4Addr {
        match self {
            Mx::One => MX1_ADDR,
            Mx::Two => MX2_ADDR,
        }
    }

    /// Its Postfix listener's program name in the maillog.
    fn program(self) -> &'static str {
        match self {
            Mx::One => "postfix/mx1/smtpd",
            Mx::Two => "postfix/mx2/smtpd",
        }
    }
}

/// The zone every test starts from (no TLSA records).
fn base_zones() -> Zones {
    Zones::new()
        .signed(&mx("example.test", 10, MX1))
        .signed(&mx("two.example.test", 10, MX1))
        .signed(&mx("two.example.test", 20, MX2))
        .signed(&mx("bogus.example.test", 10, MX2))
        .signed(&mx("second.example.test", 10, MX2))
        .signed(&a(MX1, MX1_ADDR))
        .signed(&a(MX2, MX2_ADDR))
        .insecure(&mx("insecure.test", 10, "mx1.insecure.test"))
        .insecure(&a("mx1.insecure.test", MX1_ADDR))
}

/// A PKI, the two MX hosts' certificates, Postfix and the DNSSEC lab.
struct Lab {
    /// The Postfix listeners' port: `[smtp] port` and the TLSA port.
    port: u16,
    // Dropped in this order: the servers, then the PKI's files.
    dns: DnssecLab,
    pf: Postfix,
    _pki: Pki,
}

/// What mx1's listener presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mx1Serves {
    /// Its own certificate and the CA.
    OwnChain,
    /// Its own certificate, without the CA.
    OwnLeafOnly,
    /// A certificate for another name (`other.example.test`) and the CA.
    OtherName,
}

impl Lab {
    /// Starts everything; `zones` gets the port and both certificates and
    /// returns the zones to serve. `None`: a tool is missing (skipped).
    fn start(zones: impl FnOnce(u16, &Issued, &Issued) -> Zones) -> Option<Lab> {
        Self::start_serving(Mx1Serves::OwnChain, zones)
    }

    /// [`Lab::start`] with mx1 presenting `mx1_serves`; `zones` gets the
    /// certificate mx1 presents.
    fn start_serving(
        mx1_serves: Mx1Serves,
        zones: impl FnOnce(u16, &Issued, &Issued) -> Zones,
    ) -> Option<Lab> {
        let pki = Pki::generate();
        let mx1 = match mx1_serves {
            Mx1Serves::OwnChain | Mx1Serves::OwnLeafOnly => pki.issue(MX1),
            Mx1Serves::OtherName => pki.issue("other.example.test"),
        };
        let mx1_file = match mx1_serves {
            Mx1Serves::OwnLeafOnly => &mx1.leaf_only,
            Mx1Serves::OwnChain | Mx1Serves::OtherName => &mx1.chain,
        };
        let mx2 = pki.issue(MX2);
        let pf = Postfix::start_with(
            &pki,
            &[
                Listener::new(MX1_ADDR, "mx1", mx1_file),
                Listener::new(MX2_ADDR, "mx2", &mx2.chain),
            ],
        )?;
        let port = pf.listener_port;
        let dns = DnssecLab::start(&zones(port, &mx1, &mx2))?;
        Some(Lab {
            port,
            dns,
            pf,
            _pki: pki,
        })
    }

    /// `mx1.example.test[127.0.0.1]:PORT`.
    fn relay(&self, mx: Mx) -> String {
        format!("{}[{}]:{}", mx.name(), mx.addr(), self.port)
    }

    /// The sessions of an MX host's listener so far.
    fn sessions(&self, mx: Mx) -> Vec<Session> {
        self.pf.sessions_of(mx.program())
    }
}

// ---------------------------------------------------------------------------
// Running mailhop
// ---------------------------------------------------------------------------

/// The settings a test varies; the defaults are the DANE configuration of
/// the issue.
#[derive(Clone, Debug)]
struct Conf {
    level: &'static str,
    support: &'static str,
    /// TOML array; `None`: the key is left out.
    trusted_resolvers: Option<&'static str>,
    /// `None`: the key is left out.
    insecure_mx_policy: Option<&'static str>,
    /// TOML after the `[tls]` keys (`[[tls.policy]]` tables).
    tls_tables: &'static str,
}

impl Default for Conf {
    fn default() -> Self {
        Self {
            level: "dane",
            support: "dnssec",
            trusted_resolvers: Some("[\"127.0.0.0/8\", \"::1\"]"),
            insecure_mx_policy: Some("dane"),
            tls_tables: "",
        }
    }
}

impl Conf {
    fn level(level: &'static str) -> Self {
        Self {
            level,
            ..Self::default()
        }
    }

    fn text(&self, lab: &Lab) -> String {
        let mut text = format!("[smtp]\nport = {}\n", lab.port);
        for (key, value) in DEFAULT_TIMEOUTS {
            text.push_str(&format!("{key} = {value:?}\n"));
        }
        text.push_str(&format!(
            "\n[dns]\nnameservers = [{:?}]\ntimeout = \"2s\"\nattempts = 2\nsupport = {:?}\n",
            lab.dns.nameserver(),
            self.support,
        ));
        if let Some(trusted) = self.trusted_resolvers {
            text.push_str(&format!("trusted_resolvers = {trusted}\n"));
        }
        text.push_str(&format!(
            "\n[tls]\nsecurity_level = {:?}\nca_file = \"\"\nstarttls_timeout = \"5s\"\n",
            self.level
        ));
        if let Some(policy) = self.insecure_mx_policy {
            text.push_str(&format!("dane_insecure_mx_policy = {policy:?}\n"));
        }
        text.push_str(self.tls_tables);
        text
    }
}

/// `mailhop send --direct --json --nexthop DOMAIN --to b@DOMAIN`.
fn send(lab: &Lab, conf: &Conf, domain: &str) -> Run {
    Delivery::to(domain)
        .raw_config(&conf.text(lab))
        .rcpt(&format!("b@{domain}"))
        .json()
        .run()
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The one recipient's JSON result, after checking the exit code.
fn recipient(run: &Run, code: i32) -> Value {
    // Visible with --nocapture: what mailhop answered.
    println!("{}", run.stdout.trim_end());
    assert_eq!(run.code, code, "exit code of {run:#?}");
    let json = run.json();
    let recipients = json["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {run:#?}"));
    assert_eq!(recipients.len(), 1, "{run:#?}");
    recipients[0].clone()
}

/// Asserts `tls_policy.level`, and `source` and that `reason` contains the
/// text when given.
fn assert_policy(
    run: &Run,
    result: &Value,
    level: &str,
    source: Option<&str>,
    reason: Option<&str>,
) {
    let policy = &result["tls_policy"];
    assert_eq!(policy["level"], level, "tls_policy.level in {run:#?}");
    if let Some(source) = source {
        assert_eq!(policy["source"], source, "tls_policy.source in {run:#?}");
    }
    if let Some(reason) = reason {
        let got = policy["reason"].as_str().unwrap_or_default();
        assert!(
            got.contains(reason),
            "tls_policy.reason {got:?} lacks {reason:?} in {run:#?}"
        );
    }
}

/// Asserts a delivery over TLS to `mx` on both sides (`before`: that
/// listener's sessions before the run); returns the recipient's result.
fn assert_sent(lab: &Lab, run: &Run, mx: Mx, before: usize, trust: &str) -> Value {
    let result = recipient(run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["dsn"], "2.0.0", "{run:#?}");
    assert_eq!(result["relay"], lab.relay(mx).as_str(), "{run:#?}");
    let queue_id = result["diagnostic"]
        .as_str()
        .and_then(|d| d.strip_prefix("250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("Postfix's queued reply expected: {run:#?}"))
        .to_string();

    // mailhop's side.
    let tls = &result["tls"];
    let version = tls["version"].as_str().unwrap_or_default();
    let cipher = tls["cipher"].as_str().unwrap_or_default();
    assert!(version.starts_with("TLSv1."), "TLS version in {run:#?}");
    assert!(!cipher.is_empty(), "cipher in {run:#?}");
    assert_eq!(tls["trust"], trust, "{run:#?}");
    let word = format!("{}{}", trust[..1].to_ascii_uppercase(), &trust[1..]);
    let logged = format!(
        "{word} TLS connection established to {}: {version} with cipher {cipher} (",
        lab.relay(mx)
    );
    assert!(
        run.stderr.contains(&logged),
        "{logged:?} not logged: {run:#?}"
    );

    // Postfix's side: one new session, over TLS, that queued this message,
    // which the discard agent then "delivered".
    let sessions = lab.pf.wait_sessions_of(mx.program(), before + 1);
    assert_eq!(
        sessions.len(),
        before + 1,
        "one new {} session; maillog:\n{}",
        mx.program(),
        lab.pf.maillog()
    );
    let session = &sessions[before];
    let line = session
        .tls_line()
        .unwrap_or_else(|| panic!("no TLS line in {session:#?}"));
    assert!(
        line.contains(&format!("[127.0.0.1]: {version} with cipher {cipher} (")),
        "server TLS line {line:?} vs mailhop's {tls}"
    );
    assert_eq!(
        session.queue_id().as_deref(),
        Some(queue_id.as_str()),
        "{session:#?}"
    );
    let discarded = lab.pf.wait_discarded(&queue_id);
    assert!(
        discarded.contains(", dsn=2.0.0, status=sent "),
        "{discarded:?}"
    );
    result
}

/// Asserts a deferral with 4.7.5 whose diagnostic contains `text`; returns
/// the recipient's result.
fn assert_deferred(run: &Run, text: &str) -> Value {
    let result = recipient(run, 75);
    assert_eq!(result["status"], "deferred", "{run:#?}");
    assert_eq!(result["dsn"], "4.7.5", "{run:#?}");
    let diagnostic = result["diagnostic"].as_str().unwrap_or_default();
    assert!(
        diagnostic.contains(text),
        "diagnostic {diagnostic:?} lacks {text:?}: {run:#?}"
    );
    result
}

/// Asserts that Postfix accepted no message at all.
fn assert_nothing_accepted(lab: &Lab) {
    for mx in [Mx::One, Mx::Two] {
        for session in lab.sessions(mx) {
            assert_eq!(session.queue_id(), None, "queued a message: {session:#?}");
        }
    }
    assert!(lab.pf.discarded().is_empty(), "{}", lab.pf.maillog());
}

// ---------------------------------------------------------------------------
// The lab itself
// ---------------------------------------------------------------------------

/// `dig +dnssec @127.0.0.1 -p PORT NAME TYPE`: (status, flags, output).
fn dig(server: SocketAddr, name: &str, rtype: &str) -> (String, Vec<String>, String) {
    let out = Command::new("dig")
        .args([
            "+dnssec",
            "+nosplit",
            "+time=2",
            "+tries=1",
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            rtype,
        ])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_once("status: ")
        .and_then(|(_, rest)| rest.split(',').next())
        .unwrap_or_default()
        .to_string();
    let flags = text
        .split_once(";; flags: ")
        .and_then(|(_, rest)| rest.split(';').next())
        .map(|f| f.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    (status, flags, text)
}

#[test]
fn dnssec_lab_answers_as_designed() {
    if require_tool("dig", "bind9-dnsutils").is_none() {
        return;
    }
    let port = 25;
    let Some(lab) = DnssecLab::start(
        &base_zones()
            .signed(&tlsa(port, MX1, 3, 1, 1, WRONG_DIGEST))
            .signed(&cname("alias.example.test", MX1))
            .bogus(&tlsa(port, MX2, 3, 1, 1, WRONG_DIGEST)),
    ) else {
        return;
    };
    let resolver = lab.resolver();
    let tlsa1 = dnssec_lab::tlsa_name(port, MX1);
    let tlsa2 = dnssec_lab::tlsa_name(port, MX2);
    let cases: [(&str, &str, &str, bool); 7] = [
        // A signed name: validated.
        ("example.test", "MX", "NOERROR", true),
        ("alias.example.test", "A", "NOERROR", true),
        (&tlsa1, "TLSA", "NOERROR", true),
        // A name that does not exist in the signed zone: secure denial.
        ("_25._tcp.nosuch.example.test", "TLSA", "NXDOMAIN", true),
        // The record appended after signing: bogus.
        (&tlsa2, "TLSA", "SERVFAIL", false),
        // The unsigned delegation: answered, not validated.
        ("insecure.test", "MX", "NOERROR", false),
        ("mx1.insecure.test", "A", "NOERROR", false),
    ];
    for (name, rtype, status, ad) in cases {
        let (got_status, flags, text) = dig(resolver, name, rtype);
        assert_eq!(
            got_status,
            status,
            "{name} {rtype}:\n{text}\n{}",
            lab.logs()
        );
        assert_eq!(
            flags.iter().any(|f| f == "ad"),
            ad,
            "AD bit of {name} {rtype}:\n{text}\n{}",
            lab.logs()
        );
    }
    let (_, _, text) = dig(resolver, &tlsa1, "TLSA");
    assert!(
        text.contains(&format!(
            "TLSA\t3 1 1 {}",
            WRONG_DIGEST.to_ascii_uppercase()
        )),
        "{text}"
    );
    let (_, _, text) = dig(resolver, "alias.example.test", "A");
    assert!(
        text.contains("CNAME\tmx1.example.test.") && text.contains("A\t127.0.0.1"),
        "{text}"
    );
    let (_, _, text) = dig(resolver, "insecure.test", "MX");
    assert!(text.contains("MX\t10 mx1.insecure.test."), "{text}");

    // The lab's own query agrees; nsd answers authoritatively, unvalidated.
    let answer = query(resolver, "example.test", 15, Duration::from_secs(2)).expect("answer");
    // The MX record and its RRSIG.
    assert_eq!((answer.rcode, answer.ad, answer.answers), (0, true, 2));
    let answer = query(
        lab.authoritative(),
        "example.test",
        15,
        Duration::from_secs(2),
    )
    .expect("answer from nsd");
    assert_eq!((answer.rcode, answer.aa, answer.ad), (0, true, false));
}

/// mailhop's stub resolver against the lab: the AD bit is read as
/// `authenticated` from a trusted resolver only; a bogus RRset is a
/// temporary error; the TLSA RDATA comes back as published.
#[test]
fn stub_resolver_reads_the_lab_as_designed() {
    let port = 25;
    let Some(lab) = DnssecLab::start(
        &base_zones()
            .signed(&tlsa(port, MX1, 3, 1, 1, WRONG_DIGEST))
            .bogus(&tlsa(port, MX2, 3, 1, 1, WRONG_DIGEST)),
    ) else {
        return;
    };
    let resolver = |trusted: Vec<IpNetwork>| {
        StubResolver::new(StubSettings {
            timeout: Duration::from_secs(2),
            attempts: 1,
            trusted_resolvers: trusted,
            ..StubSettings::new(vec![lab.resolver()])
        })
        .expect("a stub resolver")
    };
    let r = resolver(StubSettings::new(Vec::new()).trusted_resolvers);
    let mx = r.mx("example.test").expect("MX example.test");
    assert!(mx.authenticated, "{mx:?}");
    assert!(r.a(MX1).expect("A").authenticated);
    let tlsa1 = r
        .tlsa(&dnssec_lab::tlsa_name(port, MX1))
        .expect("TLSA of mx1");
    assert!(tlsa1.authenticated, "{tlsa1:?}");
    assert_eq!(tlsa1.records.len(), 1, "{tlsa1:?}");
    let record = &tlsa1.records[0];
    assert_eq!(
        (
            record.usage,
            record.selector,
            record.matching,
            record.data.clone()
        ),
        (3, 1, 1, vec![0xab; 32])
    );
    let err = r
        .tlsa(&dnssec_lab::tlsa_name(port, MX2))
        .expect_err("the bogus TLSA RRset");
    assert_eq!(err.kind, DnsErrorKind::Retry, "{err:?}");
    let err = r
        .tlsa(&dnssec_lab::tlsa_name(port, "nosuch.example.test"))
        .expect_err("no such TLSA name");
    assert_eq!(err.kind, DnsErrorKind::NotFound, "{err:?}");
    let mx = r.mx("insecure.test").expect("MX insecure.test");
    assert!(!mx.authenticated, "{mx:?}");

    // The same resolver, not trusted: nothing is authenticated.
    let r = resolver(Vec::new());
    let mx = r.mx("example.test").expect("MX example.test");
    assert!(!mx.authenticated, "{mx:?}");
}

/// The harness without DANE (keys and levels mailhop had before issue
/// 16): the MX lookup through unbound, both listeners and the TLS checks.
#[test]
fn lab_and_listeners_serve_plain_opportunistic_tls() {
    let Some(lab) =
        Lab::start(|port, mx1, _| base_zones().signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256)))
    else {
        return;
    };
    let conf = Conf {
        level: "may",
        support: "enabled",
        trusted_resolvers: None,
        insecure_mx_policy: None,
        tls_tables: "",
    };
    let run = send(&lab, &conf, "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "untrusted");
    assert_policy(&run, &result, "may", Some("default"), None);
    let run = send(&lab, &conf, "bogus.example.test");
    assert_sent(&lab, &run, Mx::Two, 0, "untrusted");
    let run = send(&lab, &conf, "insecure.test");
    let result = recipient(&run, 0);
    assert_eq!(
        result["relay"],
        format!("mx1.insecure.test[127.0.0.1]:{}", lab.port),
        "{run:#?}"
    );
    // Each listener presents its own leaf and the CA (for DANE-TA).
    for mx in [Mx::One, Mx::Two] {
        let chain = presented_chain(SocketAddr::from((mx.addr(), lab.port)));
        assert_eq!(chain, [mx.name(), "mailhop test CA"], "{mx:?}");
    }
}

/// The common names of the chain a listener presents after STARTTLS
/// (nothing verified; bounded by read timeouts).
fn presented_chain(addr: SocketAddr) -> Vec<String> {
    use openssl::nid::Nid;
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    // The greeting, the EHLO reply and the STARTTLS reply: each ends with
    // a line "NNN " (bounded by the line count).
    let mut reply = |stream: &mut TcpStream, command: Option<&str>| {
        if let Some(command) = command {
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .expect("write a command");
        }
        for _ in 0..50 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("{addr} closed the connection after {command:?}");
            }
            if line.as_bytes().get(3) == Some(&b' ') {
                return line;
            }
        }
        panic!("{addr}: endless reply to {command:?}");
    };
    assert!(reply(&mut stream, None).starts_with("220 "));
    assert!(reply(&mut stream, Some("EHLO client.test")).starts_with("250 "));
    assert!(reply(&mut stream, Some("STARTTLS")).starts_with("220 "));
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    connector.set_verify(SslVerifyMode::NONE);
    let tls = connector
        .build()
        .configure()
        .expect("configure")
        .verify_hostname(false)
        .connect("unused", stream)
        .expect("TLS handshake");
    let chain = tls.ssl().peer_cert_chain().expect("a presented chain");
    chain
        .iter()
        .map(|cert| {
            cert.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
                .map(|cn| cn.to_string())
                .unwrap_or_default()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// DANE
// ---------------------------------------------------------------------------

/// A matching TLSA record for mx1: sent, verified, level dane.
fn matching_tlsa_is_verified(record: impl FnOnce(u16, &Issued) -> String) {
    let Some(lab) = Lab::start(|port, mx1, _| base_zones().signed(&record(port, mx1))) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "verified");
    assert_eq!(result["tls"]["verified"], true, "{run:#?}");
    assert_policy(&run, &result, "dane", Some("dane"), None);
}

#[test]
fn dane_ee_spki_sha256_match_sends_verified() {
    matching_tlsa_is_verified(|port, mx1| tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256));
}

#[test]
fn dane_ee_cert_sha256_match_sends_verified() {
    matching_tlsa_is_verified(|port, mx1| tlsa(port, MX1, 3, 0, 1, &mx1.cert_sha256));
}

#[test]
fn dane_ta_ca_sha256_match_with_the_ca_in_the_chain_sends_verified() {
    matching_tlsa_is_verified(|port, mx1| tlsa(port, MX1, 2, 0, 1, &mx1.ca_sha256));
}

#[test]
fn wrong_tlsa_data_defers_with_certificate_not_verified() {
    let Some(lab) = Lab::start(|port, _, mx2| {
        // Another host's key: a real digest, just not this server's.
        base_zones().signed(&tlsa(port, MX1, 3, 1, 1, &mx2.spki_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    let result = assert_deferred(&run, "Server certificate not verified");
    assert_eq!(result["relay"], lab.relay(Mx::One).as_str(), "{run:#?}");
    // The handshake happened (the check comes after it), nothing was queued.
    let sessions = lab.pf.wait_sessions_of(Mx::One.program(), 1);
    assert!(sessions[0].tls_line().is_some(), "{sessions:#?}");
    assert_nothing_accepted(&lab);
}

#[test]
fn unusable_tlsa_records_mean_encrypt_at_dane_and_defer_at_dane_only() {
    let Some(lab) = Lab::start(|port, mx1, _| {
        base_zones()
            // PKIX-TA and PKIX-EE: not for SMTP (RFC 7672 section 3.1.3).
            .signed(&tlsa(port, MX1, 0, 0, 1, &mx1.ca_sha256))
            .signed(&tlsa(port, MX1, 1, 1, 1, &mx1.spki_sha256))
            // SHA-256 with a 20-byte digest.
            .signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256[..40]))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::level("dane"), "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "untrusted");
    assert_policy(
        &run,
        &result,
        "encrypt",
        None,
        Some("TLSA records unusable"),
    );

    let run = send(&lab, &Conf::level("dane-only"), "example.test");
    assert_deferred(&run, "TLSA records unusable");
    assert_eq!(lab.pf.discarded().len(), 1, "{}", lab.pf.maillog());
}

#[test]
fn bogus_tlsa_signature_defers_with_tlsa_lookup_error() {
    let Some(lab) =
        Lab::start(|port, _, mx2| base_zones().bogus(&tlsa(port, MX2, 3, 1, 1, &mx2.spki_sha256)))
    else {
        return;
    };
    let run = send(&lab, &Conf::default(), "bogus.example.test");
    assert_deferred(&run, &format!("TLSA lookup error for {MX2}:{}", lab.port));
    // As in Postfix, the TLS policy fails before any connection.
    assert!(lab.sessions(Mx::Two).is_empty(), "{}", lab.pf.maillog());
    assert_nothing_accepted(&lab);
}

/// An MX in the unsigned zone (its host there too). At level dane with
/// `dane_insecure_mx_policy = "dane"` (Postfix's default since 3.6) the
/// insecure MX RRset does not stop DANE, but the insecure host has no TLSA
/// records that count: "no TLSA records found", level may. With the policy
/// "may" the MX RRset decides at once: "non DNSSEC destination". dane-only
/// needs a secure MX RRset: deferred.
#[test]
fn insecure_zone_means_may_at_dane_and_defers_at_dane_only() {
    let Some(lab) = Lab::start(|_, _, _| base_zones()) else {
        return;
    };
    let relay = format!("mx1.insecure.test[127.0.0.1]:{}", lab.port);
    let may_policy = Conf {
        insecure_mx_policy: Some("may"),
        ..Conf::default()
    };
    for (before, (conf, reason)) in [
        (Conf::default(), "no TLSA records found"),
        (may_policy, "non DNSSEC destination"),
    ]
    .into_iter()
    .enumerate()
    {
        let run = send(&lab, &conf, "insecure.test");
        let result = recipient(&run, 0);
        assert_eq!(result["relay"], relay.as_str(), "{run:#?}");
        assert_eq!(result["status"], "sent", "{run:#?}");
        assert_eq!(result["tls"]["trust"], "untrusted", "{run:#?}");
        assert_policy(&run, &result, "may", Some("dane"), Some(reason));
        let sessions = lab.pf.wait_sessions_of(Mx::One.program(), before + 1);
        assert!(sessions[before].tls_line().is_some(), "{sessions:#?}");
        assert!(sessions[before].queue_id().is_some(), "{sessions:#?}");
    }

    let run = send(&lab, &Conf::level("dane-only"), "insecure.test");
    assert_deferred(&run, "non DNSSEC destination");
    assert_eq!(lab.pf.discarded().len(), 2, "{}", lab.pf.maillog());
}

#[test]
fn wrong_tlsa_on_the_primary_mx_falls_back_to_a_backup_without_tlsa() {
    let Some(lab) =
        Lab::start(|port, _, _| base_zones().signed(&tlsa(port, MX1, 3, 1, 1, WRONG_DIGEST)))
    else {
        return;
    };
    let run = send(&lab, &Conf::default(), "two.example.test");
    let result = assert_sent(&lab, &run, Mx::Two, 0, "untrusted");
    assert_policy(
        &run,
        &result,
        "may",
        Some("dane"),
        Some("no TLSA records found"),
    );
    // mx1 was tried first: a TLS session that failed verification.
    let sessions = lab.pf.wait_sessions_of(Mx::One.program(), 1);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert!(sessions[0].tls_line().is_some(), "{sessions:#?}");
    assert_eq!(sessions[0].queue_id(), None, "{sessions:#?}");
    assert!(
        run.stderr.contains("Server certificate not verified"),
        "mx1's failure not logged: {run:#?}"
    );
}

/// `trusted_resolvers = []`: unbound's AD bit is not believed, so every
/// answer is insecure, as in the unsigned zone: "no TLSA records found"
/// with the insecure-MX policy "dane", "non DNSSEC destination" with "may".
#[test]
fn ad_bit_of_an_untrusted_resolver_is_ignored() {
    let Some(lab) =
        Lab::start(|port, mx1, _| base_zones().signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256)))
    else {
        return;
    };
    for (before, (policy, reason)) in [
        ("dane", "no TLSA records found"),
        ("may", "non DNSSEC destination"),
    ]
    .into_iter()
    .enumerate()
    {
        let conf = Conf {
            trusted_resolvers: Some("[]"),
            insecure_mx_policy: Some(policy),
            ..Conf::default()
        };
        let run = send(&lab, &conf, "example.test");
        let result = assert_sent(&lab, &run, Mx::One, before, "untrusted");
        assert_policy(&run, &result, "may", Some("dane"), Some(reason));
    }
}

#[test]
fn dane_without_dnssec_lookups_is_may_at_dane_and_a_config_problem_at_dane_only() {
    let Some(lab) =
        Lab::start(|port, mx1, _| base_zones().signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256)))
    else {
        return;
    };
    let conf = Conf {
        support: "enabled",
        ..Conf::default()
    };
    let run = send(&lab, &conf, "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "untrusted");
    assert_policy(&run, &result, "may", Some("dane"), None);
    assert!(
        run.stderr.contains("dnssec lookups disabled"),
        "no warning in mailhop's log: {run:#?}"
    );

    let conf = Conf {
        level: "dane-only",
        ..conf
    };
    let run = send(&lab, &conf, "example.test");
    assert_deferred(&run, "client TLS configuration problem");
    assert_eq!(lab.pf.discarded().len(), 1, "{}", lab.pf.maillog());
}

/// `smtp_tls_dane_insecure_mx_policy`: an MX RRset in the unsigned zone
/// naming a host in the signed zone with a matching TLSA record. At
/// "dane" the TLSA records apply, but the success is only "trusted" (the
/// MX name may have been forged); at "may" DANE does not apply; dane-only
/// always needs a secure MX RRset.
#[test]
fn insecure_mx_to_a_signed_host_follows_dane_insecure_mx_policy() {
    let Some(lab) = Lab::start(|port, mx1, _| {
        base_zones()
            .insecure(&mx("mixed.insecure.test", 10, MX1))
            .signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "mixed.insecure.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "trusted");
    assert_policy(&run, &result, "dane", Some("dane"), None);

    let conf = Conf {
        insecure_mx_policy: Some("may"),
        ..Conf::default()
    };
    let run = send(&lab, &conf, "mixed.insecure.test");
    let result = assert_sent(&lab, &run, Mx::One, 1, "untrusted");
    assert_policy(
        &run,
        &result,
        "may",
        Some("dane"),
        Some("non DNSSEC destination"),
    );

    let run = send(&lab, &Conf::level("dane-only"), "mixed.insecure.test");
    assert_deferred(&run, "non DNSSEC destination");
    assert_eq!(lab.pf.discarded().len(), 2, "{}", lab.pf.maillog());
}

/// DANE-TA needs the trust anchor in the presented chain, and a leaf
/// naming the MX host; DANE-EE ignores names (RFC 7672 section 3.1.1).
#[test]
fn dane_ta_needs_the_ca_in_the_chain() {
    let Some(lab) = Lab::start_serving(Mx1Serves::OwnLeafOnly, |port, mx1, _| {
        base_zones().signed(&tlsa(port, MX1, 2, 0, 1, &mx1.ca_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    assert_deferred(&run, "Server certificate not verified");
    assert_nothing_accepted(&lab);
}

#[test]
fn dane_ta_needs_the_mx_host_name_in_the_leaf_and_dane_ee_does_not() {
    let Some(lab) = Lab::start_serving(Mx1Serves::OtherName, |port, other, _| {
        base_zones().signed(&tlsa(port, MX1, 2, 0, 1, &other.ca_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    assert_deferred(&run, "Server certificate not verified");
    assert_nothing_accepted(&lab);

    let Some(lab) = Lab::start_serving(Mx1Serves::OtherName, |port, other, _| {
        base_zones().signed(&tlsa(port, MX1, 3, 1, 1, &other.spki_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    assert_sent(&lab, &run, Mx::One, 0, "verified");
}

/// One matching record decides: beside a wrong digest (a key rollover) on
/// mx1, beside unusable records on mx2.
#[test]
fn a_matching_record_beside_wrong_or_unusable_ones_verifies() {
    let Some(lab) = Lab::start(|port, mx1, mx2| {
        base_zones()
            .signed(&tlsa(port, MX1, 3, 1, 1, WRONG_DIGEST))
            .signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256))
            .signed(&tlsa(port, MX2, 0, 0, 1, &mx2.ca_sha256))
            .signed(&tlsa(port, MX2, 3, 1, 1, &mx2.spki_sha256[..40]))
            .signed(&tlsa(port, MX2, 2, 0, 1, &mx2.ca_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "verified");
    assert_policy(&run, &result, "dane", Some("dane"), None);
    let run = send(&lab, &Conf::level("dane-only"), "second.example.test");
    let result = assert_sent(&lab, &run, Mx::Two, 0, "verified");
    assert_policy(&run, &result, "dane", Some("dane"), None);
}

/// A `[[tls.policy]]` entry's level: "dane" for one destination under a
/// default of "may", and "may" for one destination under a default of
/// "dane".
#[test]
fn policy_table_entries_choose_dane_per_destination() {
    let Some(lab) = Lab::start(|port, mx1, _| {
        base_zones()
            .signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256))
            .signed(&mx("other.example.test", 10, MX1))
    }) else {
        return;
    };
    let conf = Conf {
        level: "may",
        tls_tables: "\n[[tls.policy]]\ndestination = \"example.test\"\nlevel = \"dane\"\n",
        ..Conf::default()
    };
    let run = send(&lab, &conf, "example.test");
    let result = assert_sent(&lab, &run, Mx::One, 0, "verified");
    assert_policy(&run, &result, "dane", Some("dane"), None);
    let run = send(&lab, &conf, "other.example.test");
    let result = assert_sent(&lab, &run, Mx::One, 1, "untrusted");
    assert_policy(&run, &result, "may", Some("default"), None);

    let conf = Conf {
        tls_tables: "\n[[tls.policy]]\ndestination = \"other.example.test\"\nlevel = \"may\"\n",
        ..Conf::default()
    };
    let run = send(&lab, &conf, "other.example.test");
    let result = assert_sent(&lab, &run, Mx::One, 2, "untrusted");
    assert_policy(&run, &result, "may", Some("policy-table"), None);
    let run = send(&lab, &conf, "example.test");
    assert_sent(&lab, &run, Mx::One, 3, "verified");
}

/// An MX host that is a CNAME (both names signed): the TLSA records are
/// looked up at the CNAME's target first (RFC 7672 section 2.2.2; Postfix's
/// tls_dane_resolve tries the expanded name, then the original).
#[test]
fn tlsa_at_the_target_of_a_cname_mx_host_verifies() {
    let Some(lab) = Lab::start(|port, mx1, _| {
        base_zones()
            .signed(&mx("cname.example.test", 10, "alias.example.test"))
            .signed(&cname("alias.example.test", MX1))
            .signed(&tlsa(port, MX1, 3, 1, 1, &mx1.spki_sha256))
    }) else {
        return;
    };
    let run = send(&lab, &Conf::default(), "cname.example.test");
    let result = recipient(&run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["tls"]["trust"], "verified", "{run:#?}");
    assert_policy(&run, &result, "dane", Some("dane"), None);
}
