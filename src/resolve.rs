//! The DNS-backed [`Resolver`]: joins the delivery loop to the MX list
//! builder (`mxlist.rs`) and a [`DnsLookup`] (the shared stub resolver), with
//! the `[dns]` settings and this host's own addresses for loop detection.
//!
//! Contract: `resolve` returns a [`Route`] or the `Dsn` Postfix would give for
//! the lookup failure; it never panics. Randomness comes from the thread's
//! RNG, or from a seeded one in tests.

use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::deliver::{ResolveMode, Resolver, Route};
use crate::dns::DnsLookup;
use crate::dsn::Dsn;
use crate::interfaces::OwnAddresses;
use crate::mxlist::{self, MxSettings};
use crate::nexthop::Host;

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
    ) -> Result<Route, Dsn> {
        let mut settings = self.settings.clone();
        settings.loop_detect = mode.loop_detect;
        match host {
            Host::Ip(addr) => mxlist::host_route(
                &crate::text::ip_string(*addr),
                self.dns.as_ref(),
                &settings,
                rng,
            ),
            Host::Name(name) if mode.lookup_mx => {
                mxlist::domain_route(name, self.dns.as_ref(), &settings, rng)
            }
            Host::Name(name) => mxlist::host_route(name, self.dns.as_ref(), &settings, rng),
        }
    }
}

impl Resolver for DnsResolver {
    fn resolve(&self, host: &Host, mode: ResolveMode) -> Result<Route, Dsn> {
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
