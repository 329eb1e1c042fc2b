//! The OpenSSL edge: the TLS client handshake over one of our blocking
//! transports (STARTTLS or SMTPS wrapper mode), the certificate checks of
//! each security level, and the TLS details for results and log lines.
//!
//! This module owns everything that talks to OpenSSL: the client contexts
//! (built once per distinct CA / client certificate / protocol setting and
//! cached, so thousands of handshakes do not reload the trust store), SNI,
//! the handshake under a deadline, PKIX and name verification, fingerprint
//! matching and [`TlsTransport`], the session as a
//! [`crate::transport::Transport`], and the OpenSSL side of session
//! resumption ([`Resumption`]: which session to offer, where granted
//! sessions go; the cache itself is [`crate::tls_memory`]'s).  Which policy applies is decided by
//! [`crate::tls_policy`].
//!
//! # Error contract
//!
//! [`handshake`] never panics and never waits much longer than its timeout,
//! whatever the peer does (junk, plaintext SMTP, close, stall, trickle).
//! It fails with a [`TlsFailure`]:
//! - [`TlsFailure::Handshake`]: the TLS handshake did not complete (also a
//!   timeout, or a peer that does not speak TLS); DSN text
//!   `Cannot start TLS: handshake failure`.
//! - [`TlsFailure::NotVerified`]: the handshake completed but the server
//!   certificate does not satisfy the level (`fingerprint`, `verify`,
//!   `secure`); DSN text `Server certificate not verified`.  Levels `may`
//!   and `encrypt` never fail this way.
//! - [`TlsFailure::Config`]: a local problem such as an unreadable CA,
//!   certificate or key file; DSN text `client TLS configuration problem`.
//!
//! The variant's text is the detail for the log; [`TlsFailure::dsn_text`]
//! is Postfix's DSN text.  After the handshake, I/O errors of
//! [`TlsTransport`] are plain `io::Error`s (a timeout is `WouldBlock` or
//! `TimedOut`), classified by [`crate::transport::classify`].

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::ssl::{
    self, HandshakeError, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode,
    SslOptions, SslRef, SslSession, SslSessionCacheMode, SslSessionRef, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509NameRef, X509Ref, X509StoreContextRef, X509VerifyResult};
use serde::Serialize;

use crate::tls_policy::{Digest, Level, MatchRule, Policy, ServerName, TlsVersion};
use crate::transport::{Transport, strerror};

// ---------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------

/// How far the server certificate was checked; Postfix's words in the log
/// line (capitalised there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// No server certificate (anonymous cipher or raw public key).
    Anonymous,
    /// The certificate chain did not verify.
    Untrusted,
    /// The chain verified; no name (or fingerprint) match was required or
    /// found.
    Trusted,
    /// The chain verified and a name matched, or (level `fingerprint`) the
    /// fingerprint matched.
    Verified,
}

impl Trust {
    /// The capitalised word of the log line: "Verified".
    pub fn word(self) -> &'static str {
        match self {
            Trust::Anonymous => "Anonymous",
            Trust::Untrusted => "Untrusted",
            Trust::Trusted => "Trusted",
            Trust::Verified => "Verified",
        }
    }
}

/// What was negotiated, for the delivery result and the log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// "TLSv1.3".
    pub version: String,
    /// OpenSSL's cipher name: "TLS_AES_256_GCM_SHA384".
    pub cipher: String,
    /// Secret bits used / bits of the algorithm.
    pub cipher_bits: (i32, i32),
    pub trust: Trust,
    /// The certificate's (last) CN, else its first subjectAltName dNSName.
    pub peer_name: Option<String>,
    /// SHA-256 of the leaf certificate DER, "AB:CD:...".
    pub fingerprint: Option<String>,
}

impl TlsInfo {
    /// "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    pub fn summary(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.version, self.cipher, self.cipher_bits.0, self.cipher_bits.1
        )
    }

    /// The full Postfix log line: "Verified TLS connection established to
    /// mx.example.com[192.0.2.1]:25: TLSv1.3 with cipher ..."; `peer` is
    /// `host[addr]:port`.
    pub fn established_line(&self, peer: &str) -> String {
        format!(
            "{} TLS connection established to {peer}: {}",
            self.trust.word(),
            self.summary()
        )
    }
}

/// Why TLS could not be used; the text is the detail for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// Handshake failed (also: peer spoke plaintext, timeout during
    /// handshake).
    Handshake(String),
    /// Handshake done but the certificate did not satisfy the level; what
    /// was wrong with it (for TLS reports, [`crate::tlsrpt`]).
    NotVerified(CertProblem, String),
    /// Local configuration problem (unreadable ca/cert/key file ...).
    Config(String),
}

impl TlsFailure {
    /// The DSN text Postfix gives.
    pub fn dsn_text(&self) -> &'static str {
        match self {
            TlsFailure::Handshake(_) => "Cannot start TLS: handshake failure",
            TlsFailure::NotVerified(..) => "Server certificate not verified",
            TlsFailure::Config(_) => "client TLS configuration problem",
        }
    }

    /// The detail for the log.
    pub fn detail(&self) -> &str {
        match self {
            TlsFailure::Handshake(text)
            | TlsFailure::NotVerified(_, text)
            | TlsFailure::Config(text) => text,
        }
    }
}

/// What was wrong with a server certificate that did not satisfy the
/// level (the result types of RFC 8460 section 4.3 are made from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertProblem {
    /// The chain did not verify (unknown CA, self-signed, bad signature).
    NotTrusted,
    /// The chain verified but for a certificate past its notAfter date.
    Expired,
    /// The chain verified but no name matched.
    NameMismatch,
    /// The server sent no certificate.
    NoCertificate,
    /// Level fingerprint: no configured fingerprint matched.
    Fingerprint,
    /// DANE: no usable TLSA record matched the chain, or a DANE-TA chain
    /// is broken.
    TlsaMismatch,
}

/// OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED.
const CERT_HAS_EXPIRED: i32 = 10;

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dsn_text(), self.detail())
    }
}

impl std::error::Error for TlsFailure {}

/// Who we are talking to, for SNI and name checks.
#[derive(Clone, Copy, Debug)]
pub struct PeerNames<'a> {
    /// MX host name, or the IP text for a literal.
    pub hostname: &'a str,
    /// Next-hop domain.
    pub nexthop: &'a str,
    pub hostname_is_ip: bool,
}

// ---------------------------------------------------------------------------
// The transport under the TLS session, with a deadline for the handshake.
// ---------------------------------------------------------------------------

/// Our transport plus an optional deadline: while it is set, every read and
/// write gets the time left as its timeout, so a peer that trickles bytes
/// cannot stretch the handshake beyond the deadline.
struct Inner {
    stream: Box<dyn Transport>,
    deadline: Option<Instant>,
}

impl Inner {
    fn arm(&mut self) -> io::Result<()> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            self.stream.set_timeout(Some(left))?;
        }
        Ok(())
    }
}

impl Read for Inner {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.arm()?;
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Inner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.arm()?;
            match self.stream.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.arm()?;
        self.stream.flush()
    }
}

/// A TLS session over one of our transports.
pub struct TlsTransport {
    stream: SslStream<Inner>,
}

impl TlsTransport {
    /// The OpenSSL session, for details beyond [`TlsInfo`].
    pub fn ssl(&self) -> &SslRef {
        self.stream.ssl()
    }

    /// Sends the TLS close_notify alert (does not wait for the peer's).
    pub fn shutdown(&mut self) -> io::Result<()> {
        match self.stream.shutdown() {
            Ok(_) => Ok(()),
            Err(e) => Err(e
                .into_io_error()
                .unwrap_or_else(|e| io::Error::other(e.to_string()))),
        }
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("version", &self.ssl().version_str())
            .finish_non_exhaustive()
    }
}

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Transport for TlsTransport {
    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let inner = self.stream.get_mut();
        inner.deadline = None;
        inner.stream.set_recv_timeout(timeout)
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let inner = self.stream.get_mut();
        inner.deadline = None;
        inner.stream.set_send_timeout(timeout)
    }

    fn peer_closed(&mut self) -> bool {
        // Data already read ahead and decrypted counts as unsolicited too.
        self.stream.ssl().pending() > 0 || self.stream.get_mut().stream.peer_closed()
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.get_ref().stream.local_addr()
    }
}

// ---------------------------------------------------------------------------
// Client contexts, cached.
// ---------------------------------------------------------------------------

/// The settings a client context depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ContextKey {
    ca_file: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    min_version: TlsVersion,
    max_version: Option<TlsVersion>,
}

impl ContextKey {
    fn of(policy: &Policy) -> Self {
        Self {
            ca_file: policy.ca_file.clone(),
            ca_path: policy.ca_path.clone(),
            cert_file: policy.cert_file.clone(),
            key_file: policy.key_file.clone(),
            min_version: policy.min_version,
            max_version: policy.max_version,
        }
    }
}

fn ssl_version(version: TlsVersion) -> SslVersion {
    match version {
        TlsVersion::Tls1_0 => SslVersion::TLS1,
        TlsVersion::Tls1_1 => SslVersion::TLS1_1,
        TlsVersion::Tls1_2 => SslVersion::TLS1_2,
        TlsVersion::Tls1_3 => SslVersion::TLS1_3,
    }
}

/// OpenSSL's reasons, without the error codes and source locations.
fn stack_text(stack: &ErrorStack) -> String {
    let reasons: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    if reasons.is_empty() {
        stack.to_string()
    } else {
        reasons.join(": ")
    }
}

fn config_error(what: &str, path: &Path) -> impl FnOnce(ErrorStack) -> TlsFailure {
    let what = format!("{what} {}", path.display());
    move |stack| TlsFailure::Config(format!("{what}: {}", stack_text(&stack)))
}

/// A readable regular file, else the Config failure naming it.
fn check_file(what: &str, path: &Path) -> Result<(), TlsFailure> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(TlsFailure::Config(format!(
            "{what} {}: not a regular file",
            path.display()
        ))),
        Err(e) => Err(TlsFailure::Config(format!(
            "{what} {}: {}",
            path.display(),
            strerror(&e)
        ))),
    }
}

fn build_context(key: &ContextKey) -> Result<SslContext, TlsFailure> {
    let setup = |stack: ErrorStack| {
        TlsFailure::Config(format!("cannot set up TLS client: {}", stack_text(&stack)))
    };
    let mut builder = SslContextBuilder::new(SslMethod::tls_client()).map_err(setup)?;
    // As openssl::ssl::SslConnector does.
    let mut options = SslOptions::ALL | SslOptions::NO_COMPRESSION;
    options.remove(SslOptions::DONT_INSERT_EMPTY_FRAGMENTS);
    builder.set_options(options | SslOptions::NO_SSLV2 | SslOptions::NO_SSLV3);
    builder.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE,
    );
    builder
        .set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")
        .map_err(setup)?;
    builder
        .set_min_proto_version(Some(ssl_version(key.min_version)))
        .map_err(setup)?;
    builder
        .set_max_proto_version(key.max_version.map(ssl_version))
        .map_err(setup)?;
    // Record, never fail: the checks are ours, after the handshake.
    builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    // Client sessions go to our own cache (see [`Resumption`]), never to
    // OpenSSL's internal one.
    builder.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
    builder.set_new_session_callback(new_session);
    // Read whole records (and what follows) in one read(2), not the
    // 5-byte record header first: half the receive system calls per
    // reply (scenario 14 of docs/benchmarks.md).
    builder.set_read_ahead(true);

    if key.ca_file.is_none() && key.ca_path.is_none() {
        load_system_trust(&mut builder).map_err(|stack| {
            TlsFailure::Config(format!(
                "cannot load the system trust store: {}",
                stack_text(&stack)
            ))
        })?;
    } else {
        if let Some(file) = &key.ca_file {
            check_file("CA file", file)?;
        }
        if let Some(dir) = &key.ca_path {
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(TlsFailure::Config(format!(
                        "CA path {}: not a directory",
                        dir.display()
                    )));
                }
                Err(e) => {
                    return Err(TlsFailure::Config(format!(
                        "CA path {}: {}",
                        dir.display(),
                        strerror(&e)
                    )));
                }
            }
        }
        let what = key.ca_file.as_deref().or(key.ca_path.as_deref());
        builder
            .load_verify_locations(key.ca_file.as_deref(), key.ca_path.as_deref())
            .map_err(config_error(
                "cannot load CA certificates from",
                what.unwrap_or(Path::new("")),
            ))?;
    }

    match (&key.cert_file, &key.key_file) {
        (None, None) => {}
        (None, Some(key_file)) => {
            return Err(TlsFailure::Config(format!(
                "key file {} is set without a certificate file",
                key_file.display()
            )));
        }
        (Some(cert_file), key_file) => {
            let key_file = key_file.as_ref().unwrap_or(cert_file);
            check_file("client certificate file", cert_file)?;
            check_file("client key file", key_file)?;
            builder
                .set_certificate_chain_file(cert_file)
                .map_err(config_error("cannot load client certificate", cert_file))?;
            builder
                .set_private_key_file(key_file, SslFiletype::PEM)
                .map_err(config_error("cannot load client key", key_file))?;
            builder.check_private_key().map_err(|stack| {
                TlsFailure::Config(format!(
                    "client key {} does not match certificate {}: {}",
                    key_file.display(),
                    cert_file.display(),
                    stack_text(&stack)
                ))
            })?;
        }
    }
    Ok(builder.build())
}

/// The system trust store as `SSL_CTX_set_default_verify_paths` finds it
/// (`SSL_CERT_FILE`, else OPENSSLDIR/cert.pem; `SSL_CERT_DIR`, else
/// OPENSSLDIR/certs), but only as a CA file and a hashed directory.
/// OpenSSL 3's default paths add an OSSL_STORE lookup of the directory
/// that reads the whole directory (readdir) at each issuer lookup that the
/// loaded certificates do not answer, i.e. at every handshake with a
/// self-signed or privately issued server certificate, which is most MX
/// hosts at level may: about 0.6 ms of CPU per new TLS session (scenario
/// 14 of docs/benchmarks.md).
fn load_system_trust(builder: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    let openssl_dir = openssl::version::dir();
    let openssl_dir = openssl_dir
        .strip_prefix("OPENSSLDIR: \"")
        .and_then(|dir| dir.strip_suffix('"'))
        .unwrap_or("/usr/lib/ssl");
    let file = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(openssl_dir).join("cert.pem"));
    let dir = std::env::var("SSL_CERT_DIR").unwrap_or_else(|_| format!("{openssl_dir}/certs"));
    // Missing paths are no error, as with the default paths.
    if file.is_file() {
        builder.load_verify_locations(Some(&file), None)?;
    }
    let lookup = builder
        .cert_store_mut()
        .add_lookup(openssl::x509::store::X509Lookup::hash_dir())?;
    lookup.add_dir(&dir, SslFiletype::PEM)
}

/// The context for `policy`, built on first use.  The lock is held while
/// building (local files only, never the network), so concurrent first
/// handshakes load the trust store once.
fn context_for(policy: &Policy) -> Result<SslContext, TlsFailure> {
    static CONTEXTS: OnceLock<Mutex<HashMap<ContextKey, SslContext>>> = OnceLock::new();
    let key = ContextKey::of(policy);
    let mut cache = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = cache.get(&key) {
        return Ok(context.clone());
    }
    let context = build_context(&key)?;
    cache.insert(key, context.clone());
    Ok(context)
}

// ---------------------------------------------------------------------------
// Names and fingerprints.
// ---------------------------------------------------------------------------

/// Lower case, without surrounding blanks and one trailing dot; empty for
/// anything but letters, digits, '-', '_', '.' and '*' (so a certificate
/// name with an embedded NUL or other tricks matches nothing).
fn normalize(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'))
    {
        name.to_ascii_lowercase()
    } else {
        String::new()
    }
}

/// Whether a certificate name (possibly "*.example.com") covers `host`:
/// equal ignoring case, or an RFC 6125 wildcard standing for exactly the
/// left-most label (never for an IP address, never across fewer than two
/// labels: "*.com" covers nothing).
fn name_matches_host(cert_name: &str, host: &str) -> bool {
    let (cert, host) = (normalize(cert_name), normalize(host));
    if cert.is_empty() || host.is_empty() {
        return false;
    }
    if cert == host {
        return !cert.contains('*');
    }
    let Some(base) = cert.strip_prefix("*.") else {
        return false;
    };
    if base.contains('*') || base.split('.').count() < 2 || base.split('.').any(str::is_empty) {
        return false;
    }
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    match host.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == base,
        None => false,
    }
}

/// Whether a certificate name lies strictly below `domain`: "mx.example.com"
/// and "*.example.com" do for "example.com"; "example.com" does not.
fn name_below_domain(cert_name: &str, domain: &str) -> bool {
    let (cert, domain) = (normalize(cert_name), normalize(domain));
    if domain.is_empty() || domain.contains('*') {
        return false;
    }
    let Some(prefix) = cert
        .strip_suffix(domain.as_str())
        .and_then(|p| p.strip_suffix('.'))
    else {
        return false;
    };
    // Labels non-empty; '*' only as the whole left-most label.
    prefix.split('.').enumerate().all(|(index, label)| {
        !label.is_empty() && (!label.contains('*') || (index == 0 && label == "*"))
    })
}

/// Whether one match rule accepts one certificate name.
fn rule_matches(rule: &MatchRule, cert_name: &str, peer: &PeerNames<'_>) -> bool {
    match rule {
        MatchRule::Hostname => name_matches_host(cert_name, peer.hostname),
        MatchRule::Nexthop => name_matches_host(cert_name, peer.nexthop),
        MatchRule::DotNexthop => name_below_domain(cert_name, peer.nexthop),
        MatchRule::Name(name) => match name.strip_prefix('.') {
            Some(domain) => name_below_domain(cert_name, domain),
            None => name_matches_host(cert_name, name),
        },
    }
}

/// The certificate's last Common Name.
fn common_name(cert: &X509Ref) -> Option<String> {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|entry| entry.data().to_string().ok())
        .last()
}

fn dns_names(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.dnsname())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The names checked against match rules: the subjectAltName dNSNames, or
/// the CN when there are none.
fn certificate_names(cert: &X509Ref) -> Vec<String> {
    let dns = dns_names(cert);
    if dns.is_empty() {
        common_name(cert).into_iter().collect()
    } else {
        dns
    }
}

/// "AB:CD:..."
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn message_digest(digest: Digest) -> MessageDigest {
    match digest {
        Digest::Sha1 => MessageDigest::sha1(),
        Digest::Sha256 => MessageDigest::sha256(),
        Digest::Sha512 => MessageDigest::sha512(),
    }
}

/// The digests of the certificate DER and of its SubjectPublicKeyInfo DER.
fn fingerprints_of(cert: &X509Ref, digest: Digest) -> Vec<Vec<u8>> {
    let md = message_digest(digest);
    let mut out = Vec::new();
    if let Ok(bytes) = cert.digest(md) {
        out.push(bytes.to_vec());
    }
    if let Ok(bytes) = cert
        .public_key()
        .and_then(|key| key.public_key_to_der())
        .and_then(|der| hash(md, &der))
    {
        out.push(bytes.to_vec());
    }
    out
}

/// "/C=XX/O=Example/CN=mx.example.com"
fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_default();
            format!("/{key}={value}")
        })
        .collect()
}

/// The SNI name, if any: never an IP address.
fn sni_name(servername: &ServerName, peer: &PeerNames<'_>) -> Option<String> {
    let name = match servername {
        ServerName::Hostname if peer.hostname_is_ip => return None,
        ServerName::Hostname => peer.hostname,
        ServerName::Nexthop => peer.nexthop,
        ServerName::Fixed(name) => name.as_str(),
    };
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty() && name.parse::<IpAddr>().is_err()).then(|| name.to_string())
}

// ---------------------------------------------------------------------------
// The handshake.
// ---------------------------------------------------------------------------

/// Describes why a handshake did not complete.
fn handshake_error_text(error: &ssl::Error) -> String {
    if let Some(io_error) = error.io_error() {
        return match io_error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => "lost connection".into(),
            _ => strerror(io_error),
        };
    }
    match error.ssl_error() {
        Some(stack) if !stack.errors().is_empty() => stack_text(stack),
        _ if error.code() == ssl::ErrorCode::SYSCALL => "lost connection".into(),
        _ => error.to_string(),
    }
}

fn handshake_failure(error: HandshakeError<Inner>) -> TlsFailure {
    match error {
        HandshakeError::SetupFailure(stack) => {
            TlsFailure::Handshake(format!("TLS setup failed: {}", stack_text(&stack)))
        }
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => {
            TlsFailure::Handshake(handshake_error_text(mid.error()))
        }
    }
}

/// Performs the client handshake on an already-connected transport
/// (STARTTLS after the 220 reply, or wrapper mode before the greeting) with
/// `timeout` (zero: none) bounding the whole handshake, then checks the
/// certificate per `policy.level`.  On success the transport's timeout is
/// left at `timeout`.
pub fn handshake(
    stream: Box<dyn Transport>,
    policy: &Policy,
    peer: &PeerNames<'_>,
    timeout: Duration,
) -> Result<(TlsTransport, TlsInfo), TlsFailure> {
    handshake_resuming(stream, policy, peer, timeout, None)
}

/// [`handshake`], offering a session to resume and handing the sessions
/// the server grants to `resumption`'s store (see [`Resumption`]).
/// Whether the server resumed: [`SslRef::session_reused`] of the result.
pub fn handshake_resuming(
    mut stream: Box<dyn Transport>,
    policy: &Policy,
    peer: &PeerNames<'_>,
    timeout: Duration,
    resumption: Option<Resumption>,
) -> Result<(TlsTransport, TlsInfo), TlsFailure> {
    let limit = (!timeout.is_zero()).then_some(timeout);
    let context = context_for(policy)?;
    let mut ssl = Ssl::new(&context).map_err(|stack| {
        TlsFailure::Handshake(format!("TLS setup failed: {}", stack_text(&stack)))
    })?;
    let sink = resumption.map(|resumption| resumption.install(&mut ssl));
    if let Some(name) = sni_name(&policy.servername, peer) {
        ssl.set_hostname(&name).map_err(|stack| {
            TlsFailure::Config(format!(
                "invalid TLS server name {name:?}: {}",
                stack_text(&stack)
            ))
        })?;
    }
    // Record the first chain problem (its text and OpenSSL's code); never
    // fail the handshake on it.
    let first_problem: Arc<Mutex<Option<(String, i32)>>> = Arc::default();
    let recorder = Arc::clone(&first_problem);
    ssl.set_verify_callback(
        SslVerifyMode::PEER,
        move |ok, store: &mut X509StoreContextRef| {
            if !ok {
                let mut slot = recorder.lock().unwrap_or_else(PoisonError::into_inner);
                if slot.is_none() {
                    let subject = store
                        .current_cert()
                        .map(|cert| name_text(cert.subject_name()))
                        .unwrap_or_default();
                    *slot = Some((
                        format!(
                            "{} at depth {} {subject}",
                            store.error().error_string(),
                            store.error_depth()
                        ),
                        store.error().as_raw(),
                    ));
                }
            }
            true
        },
    );

    stream
        .set_timeout(limit)
        .map_err(|e| TlsFailure::Handshake(format!("cannot set timeout: {}", strerror(&e))))?;
    let inner = Inner {
        stream,
        deadline: limit.and_then(|limit| Instant::now().checked_add(limit)),
    };
    let mut tls = ssl.connect(inner).map_err(handshake_failure)?;
    {
        let inner = tls.get_mut();
        inner.deadline = None;
        inner
            .stream
            .set_timeout(limit)
            .map_err(|e| TlsFailure::Handshake(format!("cannot set timeout: {}", strerror(&e))))?;
    }

    let problem = first_problem
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let mut transport = TlsTransport { stream: tls };
    match judge(transport.ssl(), policy, peer, problem) {
        Ok(info) => {
            if let Some(sink) = sink {
                sink.accept();
            }
            Ok((transport, info))
        }
        Err(failure) => {
            // Best effort: tell the server we are leaving.
            let _ = transport.shutdown();
            Err(failure)
        }
    }
}

/// DANE (RFC 7672): the chain the server sent must match one of the
/// policy's usable TLSA records — DANE-EE the leaf itself (no name or date
/// checks), DANE-TA a certificate the server sent above the leaf, which
/// must then sign the chain down to a leaf that names the MX host.
/// Ok(true) when the match holds but the session may only be logged
/// "Trusted" (half-dane, an insecure MX RRset).
fn judge_dane(
    ssl: &SslRef,
    leaf: &X509Ref,
    policy: &Policy,
    names: &[String],
) -> Result<bool, TlsFailure> {
    let mut chain: Vec<Vec<u8>> = Vec::new();
    match leaf.to_der() {
        Ok(der) => chain.push(der),
        Err(_) => {
            return Err(TlsFailure::NotVerified(
                CertProblem::TlsaMismatch,
                "the server certificate cannot be encoded".into(),
            ));
        }
    }
    let sent: Vec<openssl::x509::X509> = ssl
        .peer_cert_chain()
        .map(|stack| stack.iter().map(X509Ref::to_owned).collect())
        .unwrap_or_default();
    // The chain as sent may or may not start with the leaf.
    let leaf_der = chain.first().cloned().unwrap_or_default();
    let issuers: Vec<&openssl::x509::X509> = sent
        .iter()
        .filter(|cert| cert.to_der().map(|der| der != leaf_der).unwrap_or(false))
        .collect();
    for cert in &issuers {
        if let Ok(der) = cert.to_der() {
            chain.push(der);
        }
    }
    let records: Vec<String> = policy.tlsa.iter().map(|r| r.presentation()).collect();
    match crate::dane::verify_chain(&policy.tlsa, &chain) {
        crate::dane::Verdict::Matched(crate::dane::Matched::EndEntity) => Ok(policy.half_dane),
        crate::dane::Verdict::Matched(crate::dane::Matched::TrustAnchor { depth }) => {
            // Each certificate up to the anchor must be signed by the next.
            let mut path: Vec<&X509Ref> = vec![leaf];
            path.extend(issuers.iter().map(|c| c.as_ref()));
            for pair in path.windows(2).take(depth) {
                let [child, parent] = pair else { break };
                let signed = parent
                    .public_key()
                    .and_then(|key| child.verify(&key))
                    .unwrap_or(false);
                if !signed
                    || parent.subject_name().try_cmp(child.issuer_name()).ok()
                        != Some(std::cmp::Ordering::Equal)
                {
                    return Err(TlsFailure::NotVerified(
                        CertProblem::TlsaMismatch,
                        format!(
                            "DANE-TA: {} is not issued by the trust anchor chain sent by the server",
                            name_text(child.subject_name())
                        ),
                    ));
                }
            }
            let peer = PeerNames {
                hostname: "",
                nexthop: "",
                hostname_is_ip: true,
            };
            let named = names.iter().any(|name| {
                policy
                    .matches
                    .iter()
                    .any(|rule| rule_matches(rule, name, &peer))
            });
            if !named {
                let wanted: Vec<String> = policy
                    .matches
                    .iter()
                    .map(|rule| match rule {
                        MatchRule::Name(name) => name.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                return Err(TlsFailure::NotVerified(
                    CertProblem::NameMismatch,
                    format!(
                        "DANE-TA: server certificate name mismatch: {} matches none of: {}",
                        names.join(", "),
                        wanted.join(", ")
                    ),
                ));
            }
            Ok(policy.half_dane)
        }
        crate::dane::Verdict::NoMatch | crate::dane::Verdict::NoUsableRecords => {
            Err(TlsFailure::NotVerified(
                CertProblem::TlsaMismatch,
                format!(
                    "no TLSA record matches the server certificate chain (TLSA: {})",
                    records.join("; ")
                ),
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// Session resumption: the OpenSSL side (the cache is crate::tls_memory's).
// ---------------------------------------------------------------------------

/// Stores a session the server granted.
pub type SessionStore = Arc<dyn Fn(SslSession) + Send + Sync>;

/// What one handshake does about session resumption: the session it
/// offers, and where the sessions the server grants go.
pub struct Resumption {
    /// A session from an earlier handshake under the same cache key (the
    /// caller's: same endpoint, SNI name and policy, hence the same
    /// context).
    pub offer: Option<SslSession>,
    /// Receives each session the server grants, but only once this
    /// handshake's certificate checks passed: a TLS 1.2 session (during
    /// the handshake, held until then) and TLS 1.3 tickets (after it,
    /// while the session is read, possibly several).
    pub store: SessionStore,
}

/// The per-connection end of [`Resumption`], kept in the `Ssl`'s ex data
/// where [`new_session`] finds it.
struct Sink {
    store: SessionStore,
    /// The certificate checks passed: sessions go to `store` at once.
    accepted: AtomicBool,
    /// The last session granted before that.
    held: Mutex<Option<SslSession>>,
}

impl Sink {
    fn accept(&self) {
        self.accepted.store(true, Ordering::Release);
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(session) = held {
            (self.store)(session);
        }
    }

    fn granted(&self, session: SslSession) {
        if self.accepted.load(Ordering::Acquire) {
            (self.store)(session);
        } else {
            *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(session);
        }
    }
}

/// The ex-data slot of [`Sink`] (one per process; `None` if OpenSSL could
/// not make one: then nothing is cached).
fn sink_index() -> Option<Index<Ssl, Arc<Sink>>> {
    static INDEX: OnceLock<Option<Index<Ssl, Arc<Sink>>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

unsafe extern "C" {
    /// OpenSSL's `SSL_SESSION *SSL_SESSION_dup(const SSL_SESSION *src)`
    /// (OpenSSL 1.1.1 and later; the `openssl` crate does not bind it).
    fn SSL_SESSION_dup(src: *const std::ffi::c_void) -> *mut std::ffi::c_void;
}

/// A private copy of `session` (`None` if OpenSSL cannot make one): a
/// session object handed to a connection is marked not resumable when
/// that connection ends without close_notify (SMTP clients usually just
/// close after QUIT), so a cache keeps a copy of its own and offers
/// copies. Unlike a DER round trip, this does not parse the peer
/// certificate again (a reference is taken): about 0.25 ms of CPU less
/// per resumed session with OpenSSL 3 (scenario 14 of docs/benchmarks.md).
pub fn copy_session(session: &SslSessionRef) -> Option<SslSession> {
    // SAFETY: `session` is a valid SSL_SESSION for the duration of the
    // call (a reference to a live object); SSL_SESSION_dup only reads it
    // and returns either NULL or a new object whose one reference we own,
    // which SslSession::from_ptr takes over (and frees on drop).
    unsafe {
        let copy = SSL_SESSION_dup(session.as_ptr().cast_const().cast());
        (!copy.is_null()).then(|| SslSession::from_ptr(copy.cast()))
    }
}

/// The contexts' new-session callback: to the connection's sink, if any.
fn new_session(ssl: &mut SslRef, session: SslSession) {
    if let Some(sink) = sink_index().and_then(|index| ssl.ex_data(index)) {
        sink.granted(session);
    }
}

impl Resumption {
    /// Offers the session and installs the sink on `ssl`.
    fn install(self, ssl: &mut Ssl) -> Arc<Sink> {
        let sink = Arc::new(Sink {
            store: self.store,
            accepted: AtomicBool::new(false),
            held: Mutex::new(None),
        });
        if let Some(index) = sink_index() {
            ssl.set_ex_data(index, Arc::clone(&sink));
        }
        if let Some(session) = &self.offer {
            // SAFETY: SSL_set_session requires a session made with the
            // same SSL_CTX settings (method, versions).  Offered sessions
            // come from the cache of crate::tls_memory, whose key holds
            // the whole Policy (so the same ContextKey, hence this very
            // context: one per key, built once, never rebuilt) together
            // with the endpoint and SNI name the session was made for.
            // A failure to set it only means a full handshake.
            if let Err(stack) = unsafe { ssl.set_session(session) } {
                log::debug!("cannot offer a TLS session: {}", stack_text(&stack));
            }
        }
        sink
    }
}

/// Fills in the TLS details and applies the level's certificate checks.
fn judge(
    ssl: &SslRef,
    policy: &Policy,
    peer: &PeerNames<'_>,
    chain_problem: Option<(String, i32)>,
) -> Result<TlsInfo, TlsFailure> {
    let (cipher, cipher_bits) = match ssl.current_cipher() {
        Some(cipher) => {
            let bits = cipher.bits();
            (cipher.name().to_string(), (bits.secret, bits.algorithm))
        }
        None => ("unknown".to_string(), (0, 0)),
    };
    let leaf = ssl.peer_certificate();
    let mut info = TlsInfo {
        version: ssl.version_str().to_string(),
        cipher,
        cipher_bits,
        trust: Trust::Anonymous,
        peer_name: None,
        fingerprint: None,
    };
    let Some(leaf) = leaf else {
        return match policy.level {
            Level::Fingerprint | Level::Dane | Level::Verify | Level::Secure => {
                Err(TlsFailure::NotVerified(
                    CertProblem::NoCertificate,
                    "the server presented no certificate".into(),
                ))
            }
            _ => Ok(info),
        };
    };
    let dns = dns_names(&leaf);
    info.peer_name = common_name(&leaf).or_else(|| dns.first().cloned());
    info.fingerprint = leaf
        .digest(MessageDigest::sha256())
        .ok()
        .map(|bytes| colon_hex(&bytes));

    // Both: what OpenSSL kept, and anything our callback overrode.
    let verify_result = ssl.verify_result();
    let chain_ok = verify_result == X509VerifyResult::OK && chain_problem.is_none();
    let names = certificate_names(&leaf);
    let name_ok = names.iter().any(|name| {
        policy
            .matches
            .iter()
            .any(|rule| rule_matches(rule, name, peer))
    });

    if policy.level == Level::Dane {
        let trusted = judge_dane(ssl, &leaf, policy, &names)?;
        info.trust = if trusted {
            Trust::Trusted
        } else {
            Trust::Verified
        };
        return Ok(info);
    }

    if policy.level == Level::Fingerprint {
        let seen = fingerprints_of(&leaf, policy.digest);
        let matched = seen.iter().any(|fp| policy.fingerprints.contains(fp));
        info.trust = if matched {
            Trust::Verified
        } else if chain_ok {
            Trust::Trusted
        } else {
            Trust::Untrusted
        };
        if !matched {
            let shown = seen.first().map(|fp| colon_hex(fp)).unwrap_or_default();
            return Err(TlsFailure::NotVerified(
                CertProblem::Fingerprint,
                format!(
                    "server certificate {} fingerprint {shown} (or its public key's) matches \
                 none of the configured fingerprints",
                    policy.digest.name()
                ),
            ));
        }
        return Ok(info);
    }

    info.trust = match (chain_ok, name_ok) {
        (false, _) => Trust::Untrusted,
        (true, false) => Trust::Trusted,
        (true, true) => Trust::Verified,
    };
    if matches!(policy.level, Level::Verify | Level::Secure) && info.trust != Trust::Verified {
        let (problem, detail) = if !chain_ok {
            let (text, code) = chain_problem.unwrap_or_else(|| {
                (
                    verify_result.error_string().to_string(),
                    verify_result.as_raw(),
                )
            });
            let problem = if code == CERT_HAS_EXPIRED {
                CertProblem::Expired
            } else {
                CertProblem::NotTrusted
            };
            (problem, format!("server certificate not trusted: {text}"))
        } else {
            let rules: Vec<String> = policy
                .matches
                .iter()
                .map(|rule| match rule {
                    MatchRule::Hostname => format!("hostname {}", peer.hostname),
                    MatchRule::Nexthop => format!("nexthop {}", peer.nexthop),
                    MatchRule::DotNexthop => format!("dot-nexthop .{}", peer.nexthop),
                    MatchRule::Name(name) => name.clone(),
                })
                .collect();
            (
                CertProblem::NameMismatch,
                format!(
                    "server certificate name mismatch: {} matches none of: {}",
                    names.join(", "),
                    rules.join(", ")
                ),
            )
        };
        return Err(TlsFailure::NotVerified(problem, detail));
    }
    Ok(info)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
