//! The policy fetch (RFC 8461 section 3.3): `GET
//! https://mta-sts.<domain>/.well-known/mta-sts.txt` over HTTPS, through
//! `ureq` (blocking) on native-tls, which is OpenSSL on Linux.
//!
//! The I/O edge of MTA-STS, behind the [`PolicyFetcher`] seam so that the
//! rest is tested without sockets. [`HttpsFetcher`] requires a PKIX-valid
//! certificate for `mta-sts.<domain>` (the system's CA store, or `[mta_sts]
//! ca_file`), follows no redirect, accepts status 200 only with a
//! `text/plain` body of at most [`MAX_POLICY_SIZE`] bytes, and bounds the
//! whole exchange by `[mta_sts] fetch_timeout`. The policy host's name is
//! resolved by mailhop's own [`DnsLookup`] (so a test lab's name server
//! applies), and connected to on `[mta_sts] https_port` (443). No proxy
//! from the environment is used.
//!
//! Error contract: never panics; every failure is an
//! [`MtaStsError::Fetch`] whose text names the URL and the cause.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::MtaStsError;
use crate::dns::DnsLookup;

/// Largest policy body accepted (64 KiB).
pub const MAX_POLICY_SIZE: u64 = 65_536;

/// Gets a domain's policy file.
pub trait PolicyFetcher: Send + Sync {
    /// The body of the policy of `domain` (the policy domain, not the
    /// `mta-sts.` host).
    fn fetch(&self, domain: &str) -> Result<Vec<u8>, MtaStsError>;
}

/// The URL of `domain`'s policy.
pub fn policy_url(domain: &str) -> String {
    format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
}

/// What a fetch is configured with.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub port: u16,
    /// Trust anchors instead of the system store.
    pub ca_file: Option<std::path::PathBuf>,
    /// The address families of `[dns] inet_protocols`: the policy host is
    /// looked up and reached in these only.
    pub ipv4: bool,
    pub ipv6: bool,
}

/// The real fetch: HTTPS with `ureq` over OpenSSL.
pub struct HttpsFetcher {
    agent: ureq::Agent,
}

impl HttpsFetcher {
    /// An HTTPS client whose host names go through `dns`. Fails when
    /// `ca_file` cannot be read or holds no certificate.
    pub fn new(settings: &FetchSettings, dns: Arc<dyn DnsLookup>) -> Result<Self, MtaStsError> {
        let roots = match &settings.ca_file {
            Some(path) => RootCerts::new_with_certs(&read_ca_file(path)?),
            None => RootCerts::PlatformVerifier,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(settings.timeout))
            .max_idle_connections(0)
            .user_agent(concat!("mailhop/", env!("CARGO_PKG_VERSION")))
            .build();
        let resolver = DnsHook {
            dns,
            port: settings.port,
            ipv4: settings.ipv4,
            ipv6: settings.ipv6,
        };
        Ok(Self {
            agent: ureq::Agent::with_parts(config, DefaultConnector::default(), resolver),
        })
    }
}

impl PolicyFetcher for HttpsFetcher {
    fn fetch(&self, domain: &str) -> Result<Vec<u8>, MtaStsError> {
        let url = policy_url(domain);
        let fail = |why: String| MtaStsError::Fetch(format!("{url}: {why}"));
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| fail(describe(&e)))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(fail(format!("HTTP status {status} (only 200 is accepted)")));
        }
        let content_type = response
            .headers()
            .get(ureq::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !is_text_plain(content_type) {
            return Err(fail(format!(
                "Content-Type {content_type:?} (text/plain is required)"
            )));
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_POLICY_SIZE)
            .read_to_vec()
            .map_err(|e| fail(describe(&e)))
    }
}

/// `text/plain`, with or without parameters, in any case.
pub fn is_text_plain(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/plain"))
}

/// An error's text, with the cause of an I/O error (the TLS failure).
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::BodyExceedsLimit(limit) => format!("policy larger than {limit} bytes"),
        ureq::Error::Timeout(phase) => format!("timed out ({phase})"),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            "redirected (redirects are not followed)".into()
        }
        other => other.to_string(),
    }
}

/// The certificates of a PEM file.
fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, MtaStsError> {
    let pem = std::fs::read(path)
        .map_err(|e| MtaStsError::Fetch(format!("cannot read ca_file {}: {e}", path.display())))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(MtaStsError::Fetch(format!(
            "ca_file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Resolves the policy host with mailhop's DNS, on the configured port.
struct DnsHook {
    dns: Arc<dyn DnsLookup>,
    port: u16,
    ipv4: bool,
    ipv6: bool,
}

impl std::fmt::Debug for DnsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHook").field("port", &self.port).finish()
    }
}

impl Resolver for DnsHook {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let mut found: Vec<IpAddr> = Vec::new();
        let mut why = Vec::new();
        if self.ipv4 {
            match self.dns.a(host) {
                Ok(answer) => found.extend(answer.records.into_iter().map(IpAddr::V4)),
                Err(e) => why.push(format!("A: {e}")),
            }
        }
        if self.ipv6 {
            match self.dns.aaaa(host) {
                Ok(answer) => found.extend(answer.records.into_iter().map(IpAddr::V6)),
                Err(e) => why.push(format!("AAAA: {e}")),
            }
        }
        if found.is_empty() {
            return Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address for {host} ({})", why.join("; ")),
            )));
        }
        let mut addrs = self.empty();
        for addr in found {
            if addrs.try_push(SocketAddr::new(addr, self.port)).is_err() {
                break;
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
