//! Tests of the TLS edge against in-process OpenSSL servers on 127.0.0.1,
//! with certificates generated here.

use super::*;

use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{NameType, SslAcceptor, SslAcceptorBuilder};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use tempfile::TempDir;

use crate::tls_policy::{Digest, Level, MatchRule, Policy, ServerName, TlsVersion};
use crate::transport::script::{Scripted, Step, say};

// ---------------------------------------------------------------------------
// Certificates.
// ---------------------------------------------------------------------------

struct Identity {
    cert: X509,
    key: PKey<Private>,
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    PKey::from_ec_key(EcKey::generate(&group).expect("ec key")).expect("pkey")
}

/// A certificate for `cn` with `sans` as dNSNames, signed by `issuer` (or
/// self-signed), a CA when `ca`.
fn make_cert(cn: &str, sans: &[&str], issuer: Option<&Identity>, ca: bool) -> Identity {
    let key = new_key();
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "mailhop tests")
        .expect("O");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("version");
    let mut serial = BigNum::new().expect("bn");
    serial
        .rand(64, MsbOption::MAYBE_ZERO, false)
        .expect("serial");
    b.set_serial_number(&serial.to_asn1_integer().expect("int"))
        .expect("set serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    let yesterday = Asn1Time::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 - 86400)
            .unwrap_or(0),
    )
    .expect("time");
    b.set_not_before(&yesterday).expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(30).expect("time"))
        .expect("not after");
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
    } else {
        b.append_extension(BasicConstraints::new().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .expect("ku"),
        )
        .expect("ext");
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()
                .expect("eku"),
        )
        .expect("ext");
    }
    let skid = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))
        .expect("skid");
    b.append_extension(skid).expect("ext");
    if let Some(issuer) = issuer {
        let akid = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&issuer.cert), None))
            .expect("akid");
        b.append_extension(akid).expect("ext");
    }
    if !sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for dns in sans {
            san.dns(dns);
        }
        let san = san
            .build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))
            .expect("san");
        b.append_extension(san).expect("ext");
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, MessageDigest::sha256()).expect("sign");
    Identity {
        cert: b.build(),
        key,
    }
}

struct Fixtures {
    ca: Identity,
    /// mx.example.test, SAN mx.example.test, by `ca`.
    server: Identity,
    /// *.example.test, SAN *.example.test, by `ca`.
    wildcard: Identity,
    /// CN mx.example.test without subjectAltName, by `ca`.
    cn_only: Identity,
    /// mx.example.test by another CA.
    untrusted: Identity,
    /// mx.example.test, self-signed.
    self_signed: Identity,
    /// client.example.test, by `ca`.
    client: Identity,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let ca = make_cert("mailhop test CA", &[], None, true);
        let other_ca = make_cert("other test CA", &[], None, true);
        Fixtures {
            server: make_cert("mx.example.test", &["mx.example.test"], Some(&ca), false),
            wildcard: make_cert("*.example.test", &["*.example.test"], Some(&ca), false),
            cn_only: make_cert("mx.example.test", &[], Some(&ca), false),
            untrusted: make_cert(
                "mx.example.test",
                &["mx.example.test"],
                Some(&other_ca),
                false,
            ),
            self_signed: make_cert("mx.example.test", &["mx.example.test"], None, false),
            client: make_cert(
                "client.example.test",
                &["client.example.test"],
                Some(&ca),
                false,
            ),
            ca,
        }
    })
}

/// A temporary directory holding the test CA (ca.pem), the client
/// certificate (client.pem), its key (client.key) and both in one file
/// (client-combined.pem).
fn files() -> TempDir {
    let f = fixtures();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = f.client.cert.to_pem().expect("pem");
    let key = f.client.key.private_key_to_pem_pkcs8().expect("pem");
    std::fs::write(dir.path().join("ca.pem"), f.ca.cert.to_pem().expect("pem")).expect("write");
    std::fs::write(dir.path().join("client.pem"), &cert).expect("write");
    std::fs::write(dir.path().join("client.key"), &key).expect("write");
    std::fs::write(
        dir.path().join("client-combined.pem"),
        [cert.as_slice(), key.as_slice()].concat(),
    )
    .expect("write");
    dir
}

fn sha256_hex(cert: &X509) -> String {
    colon_hex(&cert.digest(MessageDigest::sha256()).expect("digest"))
}

// ---------------------------------------------------------------------------
// Servers and clients.
// ---------------------------------------------------------------------------

/// What the test server saw.
#[derive(Debug, Default)]
struct Seen {
    sni: Option<String>,
    client_cn: Option<String>,
    version: String,
}

/// A TLS server for one connection: `setup` adjusts the acceptor, `serve`
/// runs after the handshake.
fn spawn_tls(
    identity: &Identity,
    setup: impl FnOnce(&mut SslAcceptorBuilder),
    serve: impl FnOnce(&mut openssl::ssl::SslStream<TcpStream>) + Send + 'static,
) -> (u16, JoinHandle<Result<Seen, String>>) {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    builder.set_private_key(&identity.key).expect("key");
    builder.set_certificate(&identity.cert).expect("cert");
    setup(&mut builder);
    let acceptor = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(stream).map_err(|e| e.to_string())?;
        let seen = Seen {
            sni: tls
                .ssl()
                .servername(NameType::HOST_NAME)
                .map(str::to_string),
            client_cn: tls
                .ssl()
                .peer_certificate()
                .and_then(|cert| common_name(&cert)),
            version: tls.ssl().version_str().to_string(),
        };
        serve(&mut tls);
        Ok(seen)
    });
    (port, handle)
}

/// The default serve: nothing; the connection closes.
fn idle(_: &mut openssl::ssl::SslStream<TcpStream>) {}

/// A plain TCP server for one connection.
fn spawn_raw(serve: impl FnOnce(TcpStream) + Send + 'static) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream);
        }
    });
    (port, handle)
}

/// Reads until the peer closes (or 10 s pass).
fn drain(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn connect(port: u16) -> Box<dyn Transport> {
    Box::new(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
}

fn policy(level: Level) -> Policy {
    Policy {
        level,
        dane: None,
        tlsa: vec![],
        half_dane: false,
        source: crate::tls_policy::PolicySource::Default,
        reason: String::new(),
        matches: match level {
            Level::Verify => vec![MatchRule::Hostname],
            Level::Secure => vec![MatchRule::Nexthop, MatchRule::DotNexthop],
            _ => vec![],
        },
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
}

fn with_ca(level: Level, dir: &TempDir) -> Policy {
    Policy {
        ca_file: Some(dir.path().join("ca.pem")),
        ..policy(level)
    }
}

const MX: PeerNames<'static> = PeerNames {
    hostname: "mx.example.test",
    nexthop: "example.test",
    hostname_is_ip: false,
};

const SECS: Duration = Duration::from_secs(10);

/// Handshake with `identity`'s server; the server's view comes back too.
fn run(
    identity: &Identity,
    policy: &Policy,
    peer: &PeerNames<'_>,
) -> (
    Result<(TlsTransport, TlsInfo), TlsFailure>,
    Result<Seen, String>,
) {
    let (port, server) = spawn_tls(identity, |_| {}, idle);
    let result = handshake(connect(port), policy, peer, SECS);
    // Close our side so the server thread ends.
    let result = result.map(|(mut tls, info)| {
        let _ = tls.shutdown();
        (tls, info)
    });
    let seen = server
        .join()
        .unwrap_or_else(|_| Err("server panicked".into()));
    (result, seen)
}

fn info_of(identity: &Identity, policy: &Policy, peer: &PeerNames<'_>) -> TlsInfo {
    match run(identity, policy, peer).0 {
        Ok((_, info)) => info,
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn failure_of(identity: &Identity, policy: &Policy, peer: &PeerNames<'_>) -> TlsFailure {
    match run(identity, policy, peer).0 {
        Ok((_, info)) => panic!("handshake succeeded: {info:?}"),
        Err(e) => e,
    }
}

fn not_verified(identity: &Identity, policy: &Policy, peer: &PeerNames<'_>) -> String {
    match failure_of(identity, policy, peer) {
        TlsFailure::NotVerified(_, text) => text,
        other => panic!("expected NotVerified, got {other:?}"),
    }
}

fn handshake_failure_text(failure: TlsFailure) -> String {
    match failure {
        TlsFailure::Handshake(text) => text,
        other => panic!("expected Handshake, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Levels may and encrypt.
// ---------------------------------------------------------------------------

#[test]
fn may_with_self_signed_is_untrusted() {
    let f = fixtures();
    let (port, server) = spawn_tls(&f.self_signed, |_| {}, idle);
    let (mut tls, info) =
        handshake(connect(port), &policy(Level::May), &MX, SECS).expect("handshake");
    let _ = tls.shutdown();
    let seen = server.join().expect("join").expect("server");
    assert_eq!(info.trust, Trust::Untrusted);
    assert_eq!(info.version, "TLSv1.3");
    assert_eq!(seen.version, "TLSv1.3");
    assert_eq!(info.cipher, "TLS_AES_256_GCM_SHA384");
    assert_eq!(info.cipher_bits, (256, 256));
    assert_eq!(
        info.summary(),
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    );
    assert_eq!(info.peer_name.as_deref(), Some("mx.example.test"));
    assert_eq!(info.fingerprint, Some(sha256_hex(&f.self_signed.cert)));
    assert_eq!(
        info.established_line(&format!("mx.example.test[127.0.0.1]:{port}")),
        format!(
            "Untrusted TLS connection established to mx.example.test[127.0.0.1]:{port}: \
             TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
        )
    );
    assert_eq!(seen.sni.as_deref(), Some("mx.example.test"));
}

#[test]
fn encrypt_accepts_any_certificate() {
    let f = fixtures();
    for identity in [&f.self_signed, &f.untrusted, &f.wildcard] {
        let info = info_of(identity, &policy(Level::Encrypt), &MX);
        assert_eq!(info.trust, Trust::Untrusted);
    }
}

#[test]
fn may_with_trusted_chain_is_trusted_not_verified() {
    let f = fixtures();
    let dir = files();
    // No name check below level verify: "Trusted", even though it matches.
    let info = info_of(&f.server, &with_ca(Level::May, &dir), &MX);
    assert_eq!(info.trust, Trust::Trusted);
    let info = info_of(&f.server, &with_ca(Level::Encrypt, &dir), &MX);
    assert_eq!(info.trust, Trust::Trusted);
    assert!(
        info.established_line("h[a]:25")
            .starts_with("Trusted TLS connection")
    );
}

// ---------------------------------------------------------------------------
// Levels verify and secure.
// ---------------------------------------------------------------------------

#[test]
fn verify_with_ca_file() {
    let f = fixtures();
    let dir = files();
    let (result, seen) = run(&f.server, &with_ca(Level::Verify, &dir), &MX);
    let (_, info) = result.expect("verified");
    assert_eq!(info.trust, Trust::Verified);
    assert!(
        info.established_line("mx.example.test[127.0.0.1]:25")
            .starts_with("Verified TLS connection established to mx.example.test[127.0.0.1]:25: TLSv1.3 with cipher ")
    );
    assert_eq!(
        seen.expect("server").sni.as_deref(),
        Some("mx.example.test")
    );
}

#[test]
fn verify_with_ca_path() {
    let f = fixtures();
    let dir = files();
    // A c_rehash-style directory: <subject hash>.0
    let hash = f.ca.cert.subject_name_hash();
    std::fs::write(
        dir.path().join(format!("{hash:08x}.0")),
        f.ca.cert.to_pem().expect("pem"),
    )
    .expect("write");
    let p = Policy {
        ca_path: Some(dir.path().to_path_buf()),
        ..policy(Level::Verify)
    };
    assert_eq!(info_of(&f.server, &p, &MX).trust, Trust::Verified);
}

#[test]
fn verify_wrong_name() {
    let f = fixtures();
    let dir = files();
    let peer = PeerNames {
        hostname: "other.example.test",
        ..MX
    };
    let text = not_verified(&f.server, &with_ca(Level::Verify, &dir), &peer);
    assert!(text.contains("name mismatch"), "{text}");
    assert!(text.contains("mx.example.test"), "{text}");
    assert!(text.contains("hostname other.example.test"), "{text}");
}

#[test]
fn verify_untrusted_ca_and_self_signed() {
    let f = fixtures();
    let dir = files();
    let text = not_verified(&f.untrusted, &with_ca(Level::Verify, &dir), &MX);
    assert!(text.contains("not trusted"), "{text}");
    assert!(text.contains("issuer"), "{text}");
    let text = not_verified(&f.self_signed, &with_ca(Level::Verify, &dir), &MX);
    assert!(text.contains("self-signed"), "{text}");
    // The system trust store does not know the test CA.
    let text = not_verified(&f.server, &policy(Level::Verify), &MX);
    assert!(text.contains("not trusted"), "{text}");
    let failure = failure_of(&f.server, &policy(Level::Secure), &MX);
    assert_eq!(failure.dsn_text(), "Server certificate not verified");
}

#[test]
fn verify_uses_cn_without_subject_alt_names() {
    let f = fixtures();
    let dir = files();
    let info = info_of(&f.cn_only, &with_ca(Level::Verify, &dir), &MX);
    assert_eq!(info.trust, Trust::Verified);
    assert_eq!(info.peer_name.as_deref(), Some("mx.example.test"));
}

#[test]
fn secure_nexthop_rules() {
    let f = fixtures();
    let dir = files();
    // mx.example.test for nexthop example.test: dot-nexthop matches.
    let info = info_of(&f.server, &with_ca(Level::Secure, &dir), &MX);
    assert_eq!(info.trust, Trust::Verified);
    // nexthop alone does not.
    let p = Policy {
        matches: vec![MatchRule::Nexthop],
        ..with_ca(Level::Secure, &dir)
    };
    assert!(not_verified(&f.server, &p, &MX).contains("nexthop example.test"));
    // nexthop alone does when the nexthop is the MX name itself.
    let peer = PeerNames {
        nexthop: "mx.example.test",
        ..MX
    };
    assert_eq!(info_of(&f.server, &p, &peer).trust, Trust::Verified);
    // The MX host name is not enough at level secure by default.
    let peer = PeerNames {
        nexthop: "other.test",
        ..MX
    };
    not_verified(&f.server, &with_ca(Level::Secure, &dir), &peer);
    // Literal names.
    for (rule, ok) in [
        (".example.test", true),
        ("mx.example.test", true),
        ("MX.Example.Test", true),
        (".mx.example.test", false),
        ("example.test", false),
        ("other.test", false),
    ] {
        let p = Policy {
            matches: vec![MatchRule::Name(rule.into())],
            ..with_ca(Level::Secure, &dir)
        };
        let result = run(&f.server, &p, &MX).0;
        assert_eq!(result.is_ok(), ok, "{rule}: {result:?}");
    }
}

#[test]
fn wildcard_certificate() {
    let f = fixtures();
    let dir = files();
    let info = info_of(&f.wildcard, &with_ca(Level::Verify, &dir), &MX);
    assert_eq!(info.trust, Trust::Verified);
    assert_eq!(info.peer_name.as_deref(), Some("*.example.test"));
    // One label only.
    let deep = PeerNames {
        hostname: "a.mx.example.test",
        ..MX
    };
    not_verified(&f.wildcard, &with_ca(Level::Verify, &dir), &deep);
    // The domain itself is not covered.
    let apex = PeerNames {
        hostname: "example.test",
        ..MX
    };
    not_verified(&f.wildcard, &with_ca(Level::Verify, &dir), &apex);
    // Secure: dot-nexthop counts a wildcard below the nexthop; nexthop alone does not.
    let info = info_of(&f.wildcard, &with_ca(Level::Secure, &dir), &MX);
    assert_eq!(info.trust, Trust::Verified);
    let p = Policy {
        matches: vec![MatchRule::Nexthop],
        ..with_ca(Level::Secure, &dir)
    };
    not_verified(&f.wildcard, &p, &MX);
}

// ---------------------------------------------------------------------------
// Level fingerprint.
// ---------------------------------------------------------------------------

fn fingerprint_policy(digest: Digest, fingerprints: Vec<Vec<u8>>) -> Policy {
    Policy {
        digest,
        fingerprints,
        ..policy(Level::Fingerprint)
    }
}

fn pubkey_digest(identity: &Identity, md: MessageDigest) -> Vec<u8> {
    let der = identity
        .cert
        .public_key()
        .expect("key")
        .public_key_to_der()
        .expect("der");
    hash(md, &der).expect("hash").to_vec()
}

#[test]
fn fingerprint_of_certificate_and_public_key() {
    let f = fixtures();
    let id = &f.self_signed;
    let cert256 = id.cert.digest(MessageDigest::sha256()).expect("d").to_vec();
    let wrong = vec![0u8; 32];

    let info = info_of(
        id,
        &fingerprint_policy(Digest::Sha256, vec![wrong.clone(), cert256]),
        &MX,
    );
    assert_eq!(info.trust, Trust::Verified);
    assert_eq!(info.fingerprint, Some(sha256_hex(&id.cert)));

    let key256 = pubkey_digest(id, MessageDigest::sha256());
    let info = info_of(id, &fingerprint_policy(Digest::Sha256, vec![key256]), &MX);
    assert_eq!(info.trust, Trust::Verified);

    let text = not_verified(id, &fingerprint_policy(Digest::Sha256, vec![wrong]), &MX);
    assert!(text.contains(&sha256_hex(&id.cert)), "{text}");

    // Another certificate's fingerprint does not match.
    let other = f
        .server
        .cert
        .digest(MessageDigest::sha256())
        .expect("d")
        .to_vec();
    not_verified(id, &fingerprint_policy(Digest::Sha256, vec![other]), &MX);
}

#[test]
fn fingerprint_sha512_and_sha1() {
    let f = fixtures();
    let id = &f.untrusted;
    let cert512 = id.cert.digest(MessageDigest::sha512()).expect("d").to_vec();
    let key512 = pubkey_digest(id, MessageDigest::sha512());
    assert_eq!(cert512.len(), 64);
    for fp in [cert512.clone(), key512] {
        let info = info_of(id, &fingerprint_policy(Digest::Sha512, vec![fp]), &MX);
        assert_eq!(info.trust, Trust::Verified);
    }
    // The SHA-256 value does not match under sha512.
    let cert256 = id.cert.digest(MessageDigest::sha256()).expect("d").to_vec();
    not_verified(id, &fingerprint_policy(Digest::Sha512, vec![cert256]), &MX);
    let cert1 = id.cert.digest(MessageDigest::sha1()).expect("d").to_vec();
    let info = info_of(id, &fingerprint_policy(Digest::Sha1, vec![cert1]), &MX);
    assert_eq!(info.trust, Trust::Verified);
}

// ---------------------------------------------------------------------------
// Misbehaving peers and timeouts.
// ---------------------------------------------------------------------------

#[test]
fn plaintext_reply_instead_of_server_hello() {
    let (port, server) = spawn_raw(|mut stream| {
        let _ = stream.write_all(b"220 hello\r\n");
        drain(stream);
    });
    let start = Instant::now();
    let failure =
        handshake(connect(port), &policy(Level::Encrypt), &MX, SECS).expect_err("junk accepted");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(failure.dsn_text(), "Cannot start TLS: handshake failure");
    let text = handshake_failure_text(failure);
    assert!(!text.is_empty());
    let _ = server.join();
}

#[test]
fn peer_closes_during_handshake() {
    let (port, server) = spawn_raw(drop);
    let failure = handshake(connect(port), &policy(Level::May), &MX, SECS).expect_err("closed");
    let text = handshake_failure_text(failure);
    assert!(
        text.contains("lost connection")
            || text.contains("unexpected eof")
            || text.contains("reset"),
        "{text}"
    );
    let _ = server.join();
}

#[test]
fn stalled_server_times_out() {
    let (port, server) = spawn_raw(drain);
    let start = Instant::now();
    let failure = handshake(
        connect(port),
        &policy(Level::May),
        &MX,
        Duration::from_millis(300),
    )
    .expect_err("stall");
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(handshake_failure_text(failure), "timed out");
    let _ = server.join();
}

#[test]
fn trickling_server_is_bounded_by_the_deadline() {
    // A TLS record header announcing 16 KiB, then one byte every 50 ms:
    // each read succeeds, only the overall deadline stops it.
    let (port, server) = spawn_raw(|mut stream| {
        let _ = stream.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        for _ in 0..100 {
            thread::sleep(Duration::from_millis(50));
            if stream.write_all(&[0]).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let failure = handshake(
        connect(port),
        &policy(Level::May),
        &MX,
        Duration::from_millis(500),
    )
    .expect_err("trickle");
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(handshake_failure_text(failure), "timed out");
    let _ = server.join();
}

#[test]
fn scripted_peers() {
    let scripted = |steps: Vec<Step>| -> Box<dyn Transport> { Box::new(Scripted::new(steps)) };
    let p = policy(Level::May);
    let text = |steps| {
        handshake_failure_text(
            handshake(scripted(steps), &p, &MX, SECS).expect_err("scripted peer accepted"),
        )
    };
    assert_eq!(text(vec![Step::Stall]), "timed out");
    assert!(!text(vec![Step::Hangup]).is_empty());
    assert!(!text(vec![say("220 hello\r\n"), Step::Stall]).is_empty());
    assert!(
        !text(vec![Step::Say(vec![
            0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28
        ])])
        .is_empty()
    );
    // Random garbage of every length never panics.
    for n in 0..64u8 {
        let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
        let _ = handshake(scripted(vec![Step::Say(junk)]), &p, &MX, SECS);
    }
}

#[test]
fn tls13_only_server_and_tls12_client() {
    let f = fixtures();
    let (port, server) = spawn_tls(
        &f.server,
        |b| {
            b.set_min_proto_version(Some(SslVersion::TLS1_3))
                .expect("min");
        },
        idle,
    );
    let p = Policy {
        max_version: Some(TlsVersion::Tls1_2),
        ..policy(Level::Encrypt)
    };
    let failure = handshake(connect(port), &p, &MX, SECS).expect_err("version");
    handshake_failure_text(failure);
    assert!(server.join().expect("join").is_err());
}

#[test]
fn tls12_when_capped() {
    let f = fixtures();
    let p = Policy {
        max_version: Some(TlsVersion::Tls1_2),
        ..policy(Level::May)
    };
    let info = info_of(&f.server, &p, &MX);
    assert_eq!(info.version, "TLSv1.2");
    assert!(info.cipher.starts_with("ECDHE-ECDSA-"), "{}", info.cipher);
    assert!(
        info.summary()
            .starts_with("TLSv1.2 with cipher ECDHE-ECDSA-")
    );
}

#[test]
fn tls13_minimum_against_tls12_server() {
    let f = fixtures();
    let (port, server) = spawn_tls(
        &f.server,
        |b| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2))
                .expect("max");
        },
        idle,
    );
    let p = Policy {
        min_version: TlsVersion::Tls1_3,
        ..policy(Level::May)
    };
    handshake_failure_text(handshake(connect(port), &p, &MX, SECS).expect_err("version"));
    let _ = server.join();
}

// ---------------------------------------------------------------------------
// Client certificates, SNI, data.
// ---------------------------------------------------------------------------

fn request_client_cert(b: &mut SslAcceptorBuilder) {
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
}

#[test]
fn client_certificate_presented_when_configured() {
    let f = fixtures();
    let dir = files();
    let cases = [
        (
            Some("client.pem"),
            Some("client.key"),
            Some("client.example.test"),
        ),
        (
            Some("client-combined.pem"),
            None,
            Some("client.example.test"),
        ),
        (None, None, None),
    ];
    for (cert, key, want) in cases {
        let (port, server) = spawn_tls(&f.server, request_client_cert, idle);
        let p = Policy {
            cert_file: cert.map(|c| dir.path().join(c)),
            key_file: key.map(|k| dir.path().join(k)),
            ..policy(Level::Encrypt)
        };
        let (mut tls, _) = handshake(connect(port), &p, &MX, SECS).expect("handshake");
        let _ = tls.shutdown();
        let seen = server.join().expect("join").expect("server");
        assert_eq!(seen.client_cn.as_deref(), want, "{cert:?}");
    }
}

#[test]
fn sni_choices() {
    let f = fixtures();
    let sni = |servername: ServerName, peer: &PeerNames<'_>| {
        let p = Policy {
            servername,
            ..policy(Level::May)
        };
        run(&f.server, &p, peer).1.expect("server").sni
    };
    assert_eq!(
        sni(ServerName::Hostname, &MX).as_deref(),
        Some("mx.example.test")
    );
    assert_eq!(
        sni(ServerName::Nexthop, &MX).as_deref(),
        Some("example.test")
    );
    assert_eq!(
        sni(ServerName::Fixed("sni.example.test".into()), &MX).as_deref(),
        Some("sni.example.test")
    );
    let literal = PeerNames {
        hostname: "127.0.0.1",
        nexthop: "127.0.0.1",
        hostname_is_ip: true,
    };
    assert_eq!(sni(ServerName::Hostname, &literal), None);
}

#[test]
fn data_round_trips_and_timeouts_apply_after_handshake() {
    let f = fixtures();
    let (port, server) = spawn_tls(
        &f.server,
        |_| {},
        |tls| {
            let mut buf = [0u8; 64];
            let n = tls.read(&mut buf).unwrap_or(0);
            let _ = tls.write_all(b"250 echo ");
            let _ = tls.write_all(buf.get(..n).unwrap_or(&[]));
            let _ = tls.flush();
            // Then stall until the client leaves.
            let _ = tls.read(&mut buf);
        },
    );
    let (mut tls, _) = handshake(connect(port), &policy(Level::May), &MX, SECS).expect("handshake");
    tls.write_all(b"NOOP\r\n").expect("write");
    tls.flush().expect("flush");
    let want = b"250 echo NOOP\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < want.len() {
        let n = tls.read(&mut buf).expect("read");
        assert!(n > 0, "eof after {got:?}");
        got.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    assert_eq!(got, want);
    // The server now stalls: our timeout applies to reads through TLS.
    tls.set_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let error = tls.read(&mut buf).expect_err("stall");
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{error:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        crate::transport::classify(&error),
        crate::smtp::client::IoFailure::Timeout
    );
    assert!(format!("{tls:?}").contains("TLSv1.3"));
    drop(tls);
    let _ = server.join();
}

#[test]
fn boxed_tls_transport_is_a_transport() {
    let f = fixtures();
    let (port, server) = spawn_tls(
        &f.server,
        |_| {},
        |tls| {
            let _ = tls.write_all(b"220 ready\r\n");
            let _ = tls.flush();
        },
    );
    let (tls, _) = handshake(connect(port), &policy(Level::May), &MX, SECS).expect("handshake");
    let boxed: Box<dyn Transport> = Box::new(tls);
    let mut conn = crate::transport::Connection::new(boxed, 2048);
    let reply = conn.read_reply(SECS).expect("reply");
    assert_eq!(reply.code, 220);
    let _ = server.join();
}

// ---------------------------------------------------------------------------
// Configuration problems (no network: they fail before any I/O).
// ---------------------------------------------------------------------------

fn config_failure(p: &Policy) -> String {
    let stream: Box<dyn Transport> = Box::new(Scripted::new(vec![]));
    match handshake(stream, p, &MX, SECS) {
        Err(TlsFailure::Config(text)) => text,
        other => panic!("expected Config, got {other:?}"),
    }
}

#[test]
fn configuration_problems() {
    let dir = files();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");

    let text = config_failure(&Policy {
        ca_file: Some(missing.clone()),
        ..policy(Level::Verify)
    });
    assert!(
        text.contains("missing.pem") && text.contains("No such file"),
        "{text}"
    );
    let text = config_failure(&Policy {
        ca_file: Some(garbage.clone()),
        ..policy(Level::Verify)
    });
    assert!(text.contains("garbage.pem"), "{text}");
    let text = config_failure(&Policy {
        ca_file: Some(dir.path().to_path_buf()),
        ..policy(Level::Verify)
    });
    assert!(text.contains("not a regular file"), "{text}");
    let text = config_failure(&Policy {
        ca_path: Some(missing.clone()),
        ..policy(Level::Verify)
    });
    assert!(text.contains("CA path"), "{text}");
    let text = config_failure(&Policy {
        ca_path: Some(dir.path().join("ca.pem")),
        ..policy(Level::Verify)
    });
    assert!(text.contains("not a directory"), "{text}");
    let text = config_failure(&Policy {
        cert_file: Some(missing.clone()),
        ..policy(Level::May)
    });
    assert!(text.contains("client certificate file"), "{text}");
    let text = config_failure(&Policy {
        cert_file: Some(garbage.clone()),
        ..policy(Level::May)
    });
    assert!(text.contains("cannot load client certificate"), "{text}");
    let text = config_failure(&Policy {
        cert_file: Some(dir.path().join("client.pem")),
        ..policy(Level::May)
    });
    assert!(text.contains("cannot load client key"), "{text}");
    // A key that belongs to another certificate.
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        new_key().private_key_to_pem_pkcs8().expect("pem"),
    )
    .expect("write");
    let text = config_failure(&Policy {
        cert_file: Some(dir.path().join("client.pem")),
        key_file: Some(other_key),
        ..policy(Level::May)
    });
    assert!(text.contains("mismatch"), "{text}");
    let text = config_failure(&Policy {
        key_file: Some(dir.path().join("client.key")),
        ..policy(Level::May)
    });
    assert!(text.contains("without a certificate"), "{text}");

    let failure = TlsFailure::Config(text);
    assert_eq!(failure.dsn_text(), "client TLS configuration problem");
    assert!(
        failure
            .to_string()
            .starts_with("client TLS configuration problem: ")
    );
}

#[test]
fn contexts_are_cached() {
    let dir = files();
    let p = with_ca(Level::Verify, &dir);
    let a = context_for(&p).expect("context");
    let b = context_for(&p).expect("context");
    assert!(std::ptr::eq(&*a, &*b));
    let other = Policy {
        max_version: Some(TlsVersion::Tls1_2),
        ..p.clone()
    };
    let c = context_for(&other).expect("context");
    assert!(!std::ptr::eq(&*a, &*c));
    // The level and match rules do not matter to the context.
    let d = context_for(&Policy {
        level: Level::May,
        matches: vec![],
        ..p
    })
    .expect("context");
    assert!(std::ptr::eq(&*a, &*d));
}

// ---------------------------------------------------------------------------
// Pure helpers.
// ---------------------------------------------------------------------------

#[test]
fn host_name_matching() {
    for (cert, host, want) in [
        ("mx.example.test", "mx.example.test", true),
        ("MX.Example.TEST", "mx.example.test", true),
        ("mx.example.test.", "mx.example.test", true),
        ("mx.example.test", "MX.EXAMPLE.TEST.", true),
        ("mx.example.test", "example.test", false),
        ("mx.example.test", "a.mx.example.test", false),
        ("*.example.test", "mx.example.test", true),
        ("*.EXAMPLE.test", "Mx.example.test", true),
        ("*.example.test", "example.test", false),
        ("*.example.test", "a.mx.example.test", false),
        ("*.example.test", ".example.test", false),
        ("*.example.test", "*.example.test", false),
        ("*.test", "example.test", false),
        ("*", "test", false),
        ("*.*.test", "a.b.test", false),
        ("m*.example.test", "mx.example.test", false),
        ("mx.*.test", "mx.example.test", false),
        ("*.0.0.1", "127.0.0.1", false),
        ("127.0.0.1", "127.0.0.1", true),
        ("", "", false),
        ("mx.example.test\0.evil.test", "mx.example.test", false),
        ("*.example.test", "", false),
    ] {
        assert_eq!(name_matches_host(cert, host), want, "{cert:?} vs {host:?}");
    }
}

#[test]
fn subdomain_matching() {
    for (cert, domain, want) in [
        ("mx.example.test", "example.test", true),
        ("a.b.example.test", "example.test", true),
        ("MX.EXAMPLE.TEST", "example.test", true),
        ("*.example.test", "example.test", true),
        ("*.sub.example.test", "example.test", true),
        ("example.test", "example.test", false),
        ("xexample.test", "example.test", false),
        (".example.test", "example.test", false),
        ("a..example.test", "example.test", false),
        ("a.*.example.test", "example.test", false),
        ("m*.example.test", "example.test", false),
        ("mx.example.test", "", false),
        ("mx.example.test", "*.test", false),
        ("mx.other.test", "example.test", false),
    ] {
        assert_eq!(
            name_below_domain(cert, domain),
            want,
            "{cert:?} below {domain:?}"
        );
    }
}

#[test]
fn match_rules() {
    let peer = PeerNames {
        hostname: "mx1.example.test",
        nexthop: "example.test",
        hostname_is_ip: false,
    };
    let yes = |rule: MatchRule, cert: &str| rule_matches(&rule, cert, &peer);
    assert!(yes(MatchRule::Hostname, "mx1.example.test"));
    assert!(!yes(MatchRule::Hostname, "mx2.example.test"));
    assert!(yes(MatchRule::Nexthop, "example.test"));
    assert!(!yes(MatchRule::Nexthop, "mx1.example.test"));
    assert!(yes(MatchRule::DotNexthop, "mx2.example.test"));
    assert!(!yes(MatchRule::DotNexthop, "example.test"));
    assert!(yes(
        MatchRule::Name("mx9.example.test".into()),
        "*.example.test"
    ));
    assert!(yes(
        MatchRule::Name(".example.test".into()),
        "a.example.test"
    ));
    assert!(!yes(
        MatchRule::Name(".example.test".into()),
        "example.test"
    ));
    assert!(!yes(
        MatchRule::Name("example.test".into()),
        "a.example.test"
    ));
}

#[test]
fn sni_names() {
    let ip = PeerNames {
        hostname: "192.0.2.1",
        nexthop: "[192.0.2.1]",
        hostname_is_ip: true,
    };
    assert_eq!(
        sni_name(&ServerName::Hostname, &MX).as_deref(),
        Some("mx.example.test")
    );
    assert_eq!(sni_name(&ServerName::Hostname, &ip), None);
    assert_eq!(
        sni_name(&ServerName::Nexthop, &MX).as_deref(),
        Some("example.test")
    );
    assert_eq!(
        sni_name(&ServerName::Fixed("sni.test.".into()), &ip).as_deref(),
        Some("sni.test")
    );
    assert_eq!(
        sni_name(&ServerName::Fixed("2001:db8::1".into()), &MX),
        None
    );
    let unflagged = PeerNames {
        hostname: "2001:db8::1",
        ..MX
    };
    assert_eq!(sni_name(&ServerName::Hostname, &unflagged), None);
    let empty = PeerNames { nexthop: "", ..MX };
    assert_eq!(sni_name(&ServerName::Nexthop, &empty), None);
}

#[test]
fn info_texts_and_serialization() {
    let info = TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        cipher_bits: (256, 256),
        trust: Trust::Verified,
        peer_name: Some("mx.example.com".into()),
        fingerprint: None,
    };
    assert_eq!(
        info.established_line("mx.example.com[192.0.2.1]:25"),
        "Verified TLS connection established to mx.example.com[192.0.2.1]:25: \
         TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    );
    for (trust, word, json) in [
        (Trust::Anonymous, "Anonymous", "\"anonymous\""),
        (Trust::Untrusted, "Untrusted", "\"untrusted\""),
        (Trust::Trusted, "Trusted", "\"trusted\""),
        (Trust::Verified, "Verified", "\"verified\""),
    ] {
        assert_eq!(trust.word(), word);
        assert_eq!(serde_json::to_string(&trust).ok().as_deref(), Some(json));
    }
    let json = serde_json::to_string(&info).expect("json");
    assert!(json.contains("\"cipher_bits\":[256,256]"), "{json}");
    assert!(json.contains("\"trust\":\"verified\""), "{json}");
    assert_eq!(colon_hex(&[0xab, 0x01, 0xff]), "AB:01:FF");
    assert_eq!(colon_hex(&[]), "");

    let h = TlsFailure::Handshake("timed out".into());
    assert_eq!(h.dsn_text(), "Cannot start TLS: handshake failure");
    assert_eq!(h.detail(), "timed out");
    assert_eq!(
        h.to_string(),
        "Cannot start TLS: handshake failure: timed out"
    );
    assert_eq!(
        TlsFailure::NotVerified(CertProblem::NotTrusted, String::new()).dsn_text(),
        "Server certificate not verified"
    );
}

/// `mx.example.test` signed by `issuer`, valid from 10 to 5 days ago.
fn make_expired_cert(issuer: &Identity) -> Identity {
    let key = new_key();
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, "mx.example.test")
        .expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("version");
    b.set_serial_number(
        &BigNum::from_u32(7)
            .expect("bn")
            .to_asn1_integer()
            .expect("int"),
    )
    .expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(issuer.cert.subject_name())
        .expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    b.set_not_before(&Asn1Time::from_unix(now - 10 * 86_400).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::from_unix(now - 5 * 86_400).expect("time"))
        .expect("not after");
    let mut san = SubjectAlternativeName::new();
    san.dns("mx.example.test");
    let san = san
        .build(&b.x509v3_context(Some(&issuer.cert), None))
        .expect("san");
    b.append_extension(san).expect("ext");
    b.sign(&issuer.key, MessageDigest::sha256()).expect("sign");
    Identity {
        cert: b.build(),
        key,
    }
}

/// TLS-RPT result types come from these: what was wrong with the
/// certificate.
#[test]
fn not_verified_says_what_was_wrong() {
    let f = fixtures();
    let dir = files();
    let problem = |identity: &Identity, peer: &PeerNames<'_>| match failure_of(
        identity,
        &with_ca(Level::Verify, &dir),
        peer,
    ) {
        TlsFailure::NotVerified(problem, _) => problem,
        other => panic!("expected NotVerified, got {other:?}"),
    };
    let other = PeerNames {
        hostname: "other.example.test",
        ..MX
    };
    assert_eq!(problem(&f.server, &other), CertProblem::NameMismatch);
    assert_eq!(problem(&f.untrusted, &MX), CertProblem::NotTrusted);
    assert_eq!(problem(&f.self_signed, &MX), CertProblem::NotTrusted);
    assert_eq!(
        problem(&make_expired_cert(&f.ca), &MX),
        CertProblem::Expired
    );
}
// ---------------------------------------------------------------------------
// Session resumption (with crate::tls_memory's cache).
// ---------------------------------------------------------------------------

/// A TLS server for `connections` connections with one acceptor (so one
/// ticket key): each gets "220 hi\r\n" after the handshake (the client
/// reads it, and with it the TLS 1.3 tickets) and is read until the
/// client closes. Returns, per connection, whether it resumed.
fn spawn_resuming(
    identity: &Identity,
    max: Option<SslVersion>,
    connections: usize,
) -> (u16, JoinHandle<Vec<bool>>) {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    builder.set_private_key(&identity.key).expect("key");
    builder.set_certificate(&identity.cert).expect("cert");
    builder.set_max_proto_version(max).expect("max");
    builder
        .set_session_id_context(b"mailhop-test")
        .expect("sid ctx");
    let acceptor = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let mut reused = Vec::new();
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut tls) = acceptor.accept(stream) else {
                reused.push(false);
                continue;
            };
            reused.push(tls.ssl().session_reused());
            let _ = tls.write_all(b"220 hi\r\n");
            let _ = tls.flush();
            let mut buf = [0u8; 64];
            while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
        }
        reused
    });
    (port, handle)
}

/// One client connection through `memory`: handshake, read the greeting,
/// close (without TLS shutdown). Whether it resumed, or the failure.
fn resuming_client(
    memory: &crate::tls_memory::TlsMemory,
    port: u16,
    policy: &Policy,
    cache_timeout: Duration,
) -> Result<bool, TlsFailure> {
    let endpoint =
        crate::connect::Endpoint::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let settings = crate::tls_memory::Settings {
        session_cache_timeout: cache_timeout,
        broken_tls_memory: Duration::ZERO,
    };
    let (mut tls, _, resumed) =
        memory.handshake(connect(port), &endpoint, policy, &MX, SECS, settings)?;
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match tls.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert_eq!(&buf[..got], b"220 hi\r\n");
    // No close_notify, as SMTP clients usually leave (regression: OpenSSL
    // then marks the connection's session not resumable; the cache keeps
    // a copy of its own).
    drop(tls);
    Ok(resumed)
}

#[test]
fn sessions_resume_with_tls13_tickets_and_tls12_ids() {
    let f = fixtures();
    for max in [None, Some(SslVersion::TLS1_2)] {
        let memory = crate::tls_memory::TlsMemory::new();
        let (port, server) = spawn_resuming(&f.server, max, 3);
        let p = policy(Level::May);
        let hour = Duration::from_secs(3600);
        let first = resuming_client(&memory, port, &p, hour).expect("first");
        let second = resuming_client(&memory, port, &p, hour).expect("second");
        let third = resuming_client(&memory, port, &p, hour).expect("third");
        assert_eq!(
            server.join().expect("server"),
            vec![false, true, true],
            "{max:?}"
        );
        assert_eq!((first, second, third), (false, true, true), "{max:?}");
        let counters = memory.counters();
        assert_eq!(
            (
                counters.new_sessions,
                counters.resumed_sessions,
                counters.cached_sessions
            ),
            (1, 2, 1),
            "{max:?}"
        );
    }
}

#[test]
fn a_session_is_not_resumed_under_another_policy_or_when_disabled() {
    let f = fixtures();
    let memory = crate::tls_memory::TlsMemory::new();
    let (port, server) = spawn_resuming(&f.server, None, 4);
    let hour = Duration::from_secs(3600);
    let may = policy(Level::May);
    let encrypt = policy(Level::Encrypt);
    assert!(!resuming_client(&memory, port, &may, hour).expect("may"));
    // A stronger policy: a key of its own, a full handshake.
    assert!(!resuming_client(&memory, port, &encrypt, hour).expect("encrypt"));
    // Disabled: nothing offered.
    assert!(!resuming_client(&memory, port, &may, Duration::ZERO).expect("off"));
    assert!(resuming_client(&memory, port, &may, hour).expect("may again"));
    assert_eq!(
        server.join().expect("server"),
        vec![false, false, false, true]
    );
}

#[test]
fn sessions_of_failed_verification_are_not_cached() {
    let f = fixtures();
    let dir = files();
    let memory = crate::tls_memory::TlsMemory::new();
    // The self-signed server fails level verify; then level may (another
    // key anyway) finds nothing cached either.
    let (port, server) = spawn_resuming(&f.self_signed, None, 2);
    let hour = Duration::from_secs(3600);
    let verify = with_ca(Level::Verify, &dir);
    let failure = resuming_client(&memory, port, &verify, hour).expect_err("verified?");
    assert!(
        matches!(failure, TlsFailure::NotVerified(..)),
        "{failure:?}"
    );
    assert_eq!(memory.counters().cached_sessions, 0);
    let failure = resuming_client(&memory, port, &verify, hour).expect_err("verified?");
    assert!(
        matches!(failure, TlsFailure::NotVerified(..)),
        "{failure:?}"
    );
    assert_eq!(server.join().expect("server"), vec![false, false]);
    assert_eq!(memory.counters().cached_sessions, 0);
}

#[test]
fn a_rejected_session_is_replaced() {
    let memory = crate::tls_memory::TlsMemory::new();
    let hour = Duration::from_secs(3600);
    let may = policy(Level::May);
    // A server that never resumes: a fresh acceptor (new ticket keys) per
    // connection, so the second refuses the first one's ticket.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let mut reused = Vec::new();
        for _ in 0..2 {
            let acceptor = {
                let mut b =
                    SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
                b.set_private_key(&fixtures().server.key).expect("key");
                b.set_certificate(&fixtures().server.cert).expect("cert");
                b.build()
            };
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut tls) = acceptor.accept(stream) else {
                continue;
            };
            reused.push(tls.ssl().session_reused());
            let _ = tls.write_all(b"220 hi\r\n");
            let _ = tls.flush();
            let mut buf = [0u8; 64];
            while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
        }
        reused
    });
    assert!(!resuming_client(&memory, port, &may, hour).expect("first"));
    assert!(!resuming_client(&memory, port, &may, hour).expect("second"));
    assert_eq!(server.join().expect("server"), vec![false, false]);
    // The second connection's own ticket replaced the refused one.
    assert_eq!(memory.counters().cached_sessions, 1);
    assert_eq!(memory.counters().new_sessions, 2);
}
