//! Resolvers: the [`Resolver`] seam where the delivery loop turns a
//! destination host into a [`Route`], and its implementations — the
//! DNS-backed [`DnsResolver`] (the MX list builder `mxlist.rs` over a
//! [`DnsLookup`], with the `[dns]` settings and this host's own addresses for
//! loop detection), the [`LiteralResolver`] for IP literals only, and
//! [`NoDns`], the lookups of a host without a resolver.
//!
//! Contract: `resolve` returns a [`Route`] or the [`RouteError`] Postfix
//! would report for the lookup failure; it never panics. An IP literal stays
//! an `IpAddr` from the destination to the route. Randomness comes from the
//! thread's RNG, or from a seeded one in tests.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::dns::{Answer, DnsError, DnsErrorKind, DnsLookup, MxRecord};
use crate::interfaces::OwnAddresses;
use crate::mxlist::{self, Candidate, MxSettings, Route, RouteError};
use crate::nexthop::Host;

/// How to resolve one destination host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveMode {
    /// An unbracketed SMTP domain with DNS support enabled: MX lookup.
    pub lookup_mx: bool,
    /// Port 25: check for our own addresses (mail loops).
    pub loop_detect: bool,
}

/// Turns a destination host into addresses: the seam where DNS plugs in.
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &Host, mode: ResolveMode) -> Result<Route, RouteError>;
}

/// Resolves IP literals only; a name that needs DNS is refused with 4.3.5.
/// For tests and for `[dns] support` set up without any resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiteralResolver;

impl Resolver for LiteralResolver {
    fn resolve(&self, host: &Host, _mode: ResolveMode) -> Result<Route, RouteError> {
        match host {
            Host::Ip(addr) => Ok(Route {
                mx_secure: None,
                candidates: vec![Candidate {
                    canonical: None,
                    addr_secure: false,
                    host: addr.to_string(),
                    addr: *addr,
                    preference: 0,
                    host_is_ip: true,
                }],
                i_am_mx: false,
                best_preference: 0,
            }),
            Host::Name(name) => Err(RouteError::NoResolver { name: name.clone() }),
        }
    }
}

/// DNS that is not there: every lookup fails temporarily.
pub struct NoDns;

impl DnsLookup for NoDns {
    fn mx(&self, _: &str) -> Result<Answer<MxRecord>, DnsError> {
        Err(DnsError::new(
            DnsErrorKind::Retry,
            "no DNS resolver configured",
        ))
    }
    fn a(&self, _: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        Err(DnsError::new(
            DnsErrorKind::Retry,
            "no DNS resolver configured",
        ))
    }
    fn aaaa(&self, _: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        Err(DnsError::new(
            DnsErrorKind::Retry,
            "no DNS resolver configured",
        ))
    }
}

/// MX and address resolution over DNS.
pub struct DnsResolver {
    dns: Arc<dyn DnsLookup>,
    settings: MxSettings,
    seeded: Option<Mutex<StdRng>>,
}

impl DnsResolver {
    pub fn new(dns: Arc<dyn DnsLookup>, config: &Config, own: &OwnAddresses) -> Self {
        Self {
            dns,
            settings: mx_settings(config, own),
            seeded: None,
        }
    }

    /// Deterministic address shuffling, for tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seeded = Some(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }

    fn route<R: rand::Rng>(
        &self,
        host: &Host,
        mode: ResolveMode,
        rng: &mut R,
    ) -> Result<Route, RouteError> {
        let mut settings = self.settings.clone();
        settings.loop_detect = mode.loop_detect;
        match host {
            Host::Ip(addr) => mxlist::literal_route(*addr, &settings, rng),
            Host::Name(name) if mode.lookup_mx => {
                mxlist::domain_route(name, self.dns.as_ref(), &settings, rng)
            }
            Host::Name(name) => mxlist::host_route(name, self.dns.as_ref(), &settings, rng),
        }
    }
}

impl Resolver for DnsResolver {
    fn resolve(&self, host: &Host, mode: ResolveMode) -> Result<Route, RouteError> {
        match &self.seeded {
            Some(rng) => match rng.lock() {
                Ok(mut rng) => self.route(host, mode, &mut *rng),
                Err(poisoned) => self.route(host, mode, &mut *poisoned.into_inner()),
            },
            None => self.route(host, mode, &mut rand::rng()),
        }
    }
}

/// The MX list builder's settings from the configuration.
pub fn mx_settings(config: &Config, own: &OwnAddresses) -> MxSettings {
    let settings = config.settings();
    let families = settings.inet_protocols;
    MxSettings {
        ipv4: families.ipv4,
        ipv6: families.ipv6,
        address_preference: settings.address_preference,
        randomize_addresses: config.dns.randomize_addresses,
        balance_inet_protocols: config.dns.balance_inet_protocols,
        mx_address_limit: usize::try_from(config.smtp.mx_address_limit).unwrap_or(usize::MAX),
        ignore_mx_lookup_error: config.dns.ignore_mx_lookup_error,
        defer_if_no_mx_address_found: config.dns.defer_if_no_mx_address_found,
        loop_detect: true,
        own_addresses: own.all(),
    }
}
