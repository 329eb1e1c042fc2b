//! Delivery control (Postfix's smtp_connect.c): from a job's next-hop list to
//! servers, connections and sessions, until every recipient has an outcome.
//!
//! For each destination (the job's list, then the fallback relays): resolve
//! its addresses, try them in order within `mx_address_limit` and
//! `mx_session_limit`, run a session on each connection, keep soft-failed
//! recipients for the next server unless this is the final one, and settle
//! the leftovers with the last reason. A bad destination defers every
//! recipient with 4.3.5; a bad envelope address is refused before any
//! connection (5.1.7 sender, 5.1.3 recipient). Never panics; every recipient
//! ends in the ledger exactly once.
//!
//! Session reuse — cache keys, the lookup order, when a session may be
//! kept, the hand-over to a chained job — is [`crate::reuse`]'s; this
//! module calls it for each destination and server.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cache::{IdleSession, NexthopLabel, SessionCache};
use crate::chain::Chain;
use crate::config::{Config, DnsSupport, LogFormat, ProtocolSettings, SaslConfig, Settings};
use crate::connect::{ConnectOptions, Connector, Endpoint, Race, RaceTarget, SocketConnector};
use crate::dane_policy::{self, DaneContext, DaneRefusal, InsecureMxPolicy};
use crate::dns::stub::{StubResolver, StubSettings, system_nameservers};
use crate::dns::{DnsError, DnsLookup};
use crate::dsn::{self, Dsn};
use crate::health::AddressHealth;
use crate::interfaces::OwnAddresses;
use crate::job::CheckedJob;
use crate::mta_sts::{MtaSts, Verdict};
use crate::mxlist::{Candidate, Route, interleave_families};
use crate::nexthop::{Destination, Host, Protocol, ServiceLookup, SystemServices, parse_nexthop};
use crate::outcome::{self, LeftoverContext, Trouble, Via};
use crate::plan::{Hop, Plan};
use crate::recipients::{Ledger, Settled};
use crate::recipients::{SessionTiming, SuccessDuty, TlsSummary};
use crate::resolve::{DnsResolver, NoDns, ResolveMode, Resolver};
use crate::reuse;
use crate::sasl;
use crate::session::{self, MessageSource, RunEnd, TlsHandler, TlsRefusal};
use crate::shaping::MxSites;
use crate::smtp::client::{Client, ClientSettings, Envelope, LoopCheck, MessageFacts, TlsMode};
use crate::smtp::command::check_address;
use crate::smtp::ehlo::Extensions;
use crate::smtp::mime::MimeLimits;
use crate::tls::{PeerNames, TlsFailure, TlsInfo, Trust};
use crate::tls_memory::TlsMemory;
use crate::tls_policy::{Level, Policies, Policy, PolicySource};
use crate::tlsrpt::TlsRpt;
use crate::transport::Connection;
use crate::transport::Transport;

/// What one delivery produced.
#[derive(Debug)]
pub struct Delivery {
    /// One outcome per recipient, in envelope order.
    pub settled: Vec<Settled>,
    /// Ledger bookkeeping errors (0 unless there is a bug).
    pub anomalies: usize,
    /// Servers tried and each failure reason.
    pub log: Vec<String>,
}

impl Delivery {
    fn new(ledger: Ledger, trouble: Trouble) -> Self {
        let (settled, anomalies) = ledger.finish();
        Self {
            settled,
            anomalies,
            log: trouble.log,
        }
    }
}

/// Everything one delivery needs besides the configuration.
pub struct Request<'a> {
    pub protocol: Protocol,
    /// The next hop (`[127.0.0.1]:2525`, `unix:/path`, ...): as written,
    /// its key and its destinations, from the job's [`crate::plan::Plan`]
    /// (or [`Deliverer::hop`]).
    pub hop: &'a Hop,
    pub envelope: Envelope,
    pub message: &'a dyn MessageSource,
    pub facts: MessageFacts,
    /// When the message entered the mail system (job `arrival_time`): its
    /// age decides the plaintext retry after a failed opportunistic TLS
    /// handshake. Unknown: treated as just arrived.
    pub arrival: Option<std::time::SystemTime>,
    /// Whether to look up and to keep cached sessions for this job.
    pub cache: CacheUse,
}

/// A job's use of the connection cache (Postfix's CONN_LOAD / CONN_STORE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub load: bool,
    pub store: bool,
}

/// The stub resolver for a configuration: `[dns] nameservers`, else the
/// servers of /etc/resolv.conf, else (no readable file) the local host, as
/// the C library does.
pub fn system_stub_resolver(config: &Config) -> Result<StubResolver, DnsError> {
    let mut nameservers = config.settings().nameservers;
    if nameservers.is_empty() {
        nameservers = match system_nameservers(Path::new("/etc/resolv.conf")) {
            Ok(list) => list,
            Err(e) => {
                log::warn!("{e}; using the name server on 127.0.0.1");
                Vec::new()
            }
        };
    }
    if nameservers.is_empty() {
        nameservers.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 53));
    }
    let settings = StubSettings {
        nameservers,
        timeout: config.dns.timeout,
        attempts: config.dns.attempts,
        cache_max_entries: config.dns.cache_entries,
        cache_max_bytes: config.dns.cache_bytes,
        max_in_flight: config.dns.queries_in_flight,
        trusted_resolvers: config.settings().trusted_resolvers,
    };
    StubResolver::new(settings)
}

/// The destinations of fallback relays, parsed once per configuration.  A
/// relay that does not parse is logged and left out, as delivery used to do
/// for every job.
fn fallback_destinations(
    relays: &[String],
    protocol: Protocol,
    port: u16,
    services: &dyn ServiceLookup,
) -> Vec<Destination> {
    let mut destinations = Vec::new();
    for relay in relays {
        match parse_nexthop(relay, protocol, port, services) {
            Ok(list) => destinations.extend(list),
            Err(e) => log::warn!("fallback_relay: {e}; ignored"),
        }
    }
    destinations
}

/// Delivers jobs with a configuration and pluggable edges.
pub struct Deliverer {
    config: Config,
    /// The typed settings of `config`, made once.
    settings: Settings,
    /// The fallback relays of SMTP and LMTP (`[smtp, lmtp]`), parsed once;
    /// a relay that does not parse was logged and left out.
    fallback: [Vec<Destination>; 2],
    /// The TLS policies of the configuration (the default and every
    /// policy table entry), made once instead of for every delivery.
    tls_policies: Policies,
    resolver: Box<dyn Resolver>,
    /// The DNS under the resolver, for TLSA lookups (DANE).
    dns: Arc<dyn DnsLookup>,
    connector: Box<dyn Connector>,
    services: Box<dyn ServiceLookup + Send + Sync>,
    own: OwnAddresses,
    cache: Option<Arc<SessionCache>>,
    /// Where the MX sites learned from DNS answers go (the daemon's
    /// scheduler groups domains by them, `[shaping] group_by_mx_site`).
    sites: Option<Arc<MxSites>>,
    /// Server addresses that failed to connect lately (see
    /// [`crate::health`]); the daemon shares one over its workers and
    /// reloads.
    health: Arc<AddressHealth>,
    /// TLS reporting (RFC 8460), when `[tls_rpt] enabled`: every TLS
    /// attempt is counted there (see [`crate::tlsrpt`]).
    tlsrpt: Option<Arc<TlsRpt>>,
    /// TLS sessions for resumption and servers with broken TLS (see
    /// [`crate::tls_memory`]); shared like `health`.
    tls_memory: Arc<TlsMemory>,
    /// MTA-STS policies (`[mta_sts]`; `None` when disabled), shared by
    /// the daemon's workers.
    mta_sts: Option<Arc<MtaSts>>,
    /// SASL authentication (`[sasl]` with auth_enable; see
    /// [`load_sasl`]).
    sasl: Option<Arc<sasl::Setup>>,
}

/// The `[sasl]` settings and password table, when `auth_enable` is on.
/// Err (a message naming the file or key, never a password) when the
/// table cannot be read, is not owned by `uid` or is open to group or
/// other: the daemon then refuses to start or to reload.
pub fn load_sasl(config: &SaslConfig, uid: u32) -> Result<Option<sasl::Setup>, String> {
    if !config.auth_enable {
        return Ok(None);
    }
    if config.password_maps.is_empty() {
        return Err(
            "sasl.auth_enable is true: specify a password table with sasl.password_maps".into(),
        );
    }
    let options =
        |words: &[String]| sasl::SecurityOptions::parse(words).map_err(|e| format!("[sasl]: {e}"));
    let plain = options(&config.security_options)?;
    let tls = match &config.tls_security_options {
        Some(words) => options(words)?,
        None => plain,
    };
    let verified = match &config.tls_verified_security_options {
        Some(words) => options(words)?,
        None => tls,
    };
    let table = sasl::PasswordTable::load(Path::new(&config.password_maps), uid)
        .map_err(|e| format!("sasl.password_maps: {e}"))?;
    Ok(Some(sasl::Setup {
        table,
        filter: config.mechanism_filter.clone(),
        options: plain,
        tls_options: tls,
        tls_verified_options: verified,
        soft_bounce: config.auth_soft_bounce,
    }))
}

impl Deliverer {
    /// Real sockets and DNS: the shared stub resolver on the configured
    /// name servers (or /etc/resolv.conf).
    pub fn new(config: Config) -> Self {
        match system_stub_resolver(&config) {
            Ok(dns) => Self::with_dns(config, Arc::new(dns)),
            Err(e) => {
                log::error!(
                    "DNS resolver unavailable: {e}; only IP-literal destinations will work"
                );
                Self::with_dns(config, Arc::new(NoDns))
            }
        }
    }

    /// Real sockets over the given DNS lookups (shared between deliverers,
    /// so a configuration reload keeps the cache).
    pub fn with_dns(config: Config, dns: Arc<dyn DnsLookup>) -> Self {
        let settings = config.settings();
        let families = settings.inet_protocols;
        let own = OwnAddresses::from_config(
            &config.smtp.inet_interfaces,
            &config.smtp.proxy_interfaces,
            families.ipv4,
            families.ipv6,
        );
        let mta_sts = match MtaSts::from_config(&config.mta_sts, families, Arc::clone(&dns)) {
            Ok(found) => found.map(Arc::new),
            Err(e) => {
                log::error!("MTA-STS disabled: {e}");
                None
            }
        };
        let resolver = DnsResolver::new(Arc::clone(&dns), &config, &own);
        let services = SystemServices;
        let fallback = [Protocol::Smtp, Protocol::Lmtp].map(|protocol| {
            let relays = settings.protocol(protocol == Protocol::Lmtp);
            fallback_destinations(&relays.fallback_relay, protocol, relays.port, &services)
        });
        Self {
            own,
            settings,
            fallback,
            tls_policies: Policies::new(&config.tls),
            config,
            resolver: Box::new(resolver),
            dns,
            connector: Box::new(SocketConnector),
            services: Box::new(services),
            cache: None,
            sites: None,
            health: Arc::new(AddressHealth::new()),
            tlsrpt: None,
            tls_memory: Arc::new(TlsMemory::new()),
            mta_sts,
            sasl: None,
        }
    }

    /// Authenticates with SASL as `setup` says (see [`load_sasl`]).
    pub fn with_sasl(mut self, setup: Option<Arc<sasl::Setup>>) -> Self {
        self.sasl = setup;
        self
    }

    /// The SASL settings in use.
    pub fn sasl(&self) -> Option<&Arc<sasl::Setup>> {
        self.sasl.as_ref()
    }

    /// Resolves destinations with `resolver` instead of DNS. MTA-STS,
    /// which would still look up TXT records and policy hosts in the DNS,
    /// is turned off: give it back with [`Deliverer::with_mta_sts`].
    pub fn with_resolver(mut self, resolver: Box<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self.mta_sts = None;
        self
    }

    /// Shares idle sessions with other deliverers (the daemon's workers).
    pub fn with_cache(mut self, cache: Arc<SessionCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Records the MX hosts of every domain it looks up in `sites`.
    pub fn with_sites(mut self, sites: Arc<MxSites>) -> Self {
        self.sites = Some(sites);
        self
    }

    pub fn sites(&self) -> Option<&Arc<MxSites>> {
        self.sites.as_ref()
    }

    pub fn cache(&self) -> Option<&Arc<SessionCache>> {
        self.cache.as_ref()
    }

    /// Shares the address health memory with other deliverers (the
    /// daemon's workers, across reloads).
    pub fn with_health(mut self, health: Arc<AddressHealth>) -> Self {
        self.health = health;
        self
    }

    pub fn health(&self) -> &Arc<AddressHealth> {
        &self.health
    }

    /// Counts every TLS attempt in `tlsrpt` (shared with other
    /// deliverers: the daemon's workers, across reloads).
    pub fn with_tlsrpt(mut self, tlsrpt: Option<Arc<TlsRpt>>) -> Self {
        self.tlsrpt = tlsrpt;
        self
    }

    pub fn tlsrpt(&self) -> Option<&Arc<TlsRpt>> {
        self.tlsrpt.as_ref()
    }

    /// The DNS lookups under the resolver (shared, e.g. with TLS-RPT).
    pub fn dns(&self) -> &Arc<dyn DnsLookup> {
        &self.dns
    }

    /// Shares the TLS memory (sessions, broken TLS) with other deliverers
    /// (the daemon's workers, across reloads).
    pub fn with_tls_memory(mut self, memory: Arc<TlsMemory>) -> Self {
        self.tls_memory = memory;
        self
    }

    pub fn tls_memory(&self) -> &Arc<TlsMemory> {
        &self.tls_memory
    }

    /// Uses these MTA-STS policies (`None`: none), e.g. another
    /// deliverer's, so that a reload keeps the cache in memory.
    pub fn with_mta_sts(mut self, mta_sts: Option<Arc<MtaSts>>) -> Self {
        self.mta_sts = mta_sts;
        self
    }

    pub fn mta_sts(&self) -> Option<&Arc<MtaSts>> {
        self.mta_sts.as_ref()
    }

    pub fn with_connector(mut self, connector: Box<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The typed settings of [`Deliverer::config`], made once.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The delivery plan of `job` under this configuration (see
    /// [`crate::plan`]).
    pub fn plan(&self, job: &CheckedJob) -> Plan {
        Plan::of(job, &self.settings, self.services.as_ref())
    }

    /// One next hop for `protocol` under this configuration, for a
    /// [`Request`] made without a job.
    pub fn hop(&self, nexthop: &str, protocol: Protocol) -> Hop {
        let port = self.settings.protocol(protocol == Protocol::Lmtp).port;
        Hop::new(nexthop, protocol, port, self.services.as_ref())
    }

    /// Delivers one request; one outcome per recipient, in envelope order.
    pub fn deliver(&self, request: &Request<'_>) -> Delivery {
        self.deliver_chained(request, None)
    }

    /// As [`Deliverer::deliver`], on a worker's [`Chain`] (sessions handed
    /// over between its jobs).
    pub fn deliver_chained(&self, request: &Request<'_>, chain: Option<&Chain>) -> Delivery {
        let lmtp = request.protocol == Protocol::Lmtp;
        let settings = self.settings.protocol(lmtp);
        let mut ledger = Ledger::new(
            request
                .envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
        );
        let mut trouble = Trouble::default();
        if !check_envelope(request, &mut ledger, &mut trouble) {
            return Delivery::new(ledger, trouble);
        }
        let primary = match &request.hop.destinations {
            Ok(list) => list.as_slice(),
            Err(e) => {
                log::warn!("{e}");
                outcome::fail_all(
                    &mut ledger,
                    &Dsn::new(dsn::CONFIG_PROBLEM, e.to_string()),
                    true,
                    None,
                    &mut trouble,
                );
                return Delivery::new(ledger, trouble);
            }
        };
        let first_is_unix = matches!(primary.first(), Some(Destination::Unix { .. }));
        let (primary, fallback): (&[Destination], &[Destination]) = if first_is_unix {
            if primary.len() > 1 || !settings.fallback_relay.is_empty() {
                log::warn!(
                    "UNIX-domain destination {}: fallback destinations are ignored",
                    request.hop.nexthop
                );
            }
            (primary.get(..1).unwrap_or(primary), &[])
        } else {
            (primary, &self.fallback[usize::from(lmtp)])
        };
        let primary_count = primary.len();
        let count = primary_count + fallback.len();
        let mut last_index = 0;
        let mut job = JobState {
            ledger,
            trouble,
            used: HashSet::default(),
            nexthop_label: None,
            first_destination: true,
            chain,
        };
        for (index, destination) in primary.iter().chain(fallback).enumerate() {
            if job.ledger.left() == 0 {
                break;
            }
            last_index = index;
            job.first_destination = index == 0;
            let final_nexthop = index + 1 == count;
            let was_final =
                self.try_destination(request, settings, destination, final_nexthop, &mut job);
            if was_final {
                break;
            }
        }
        let context = LeftoverContext {
            last_was_fallback_relay: last_index >= primary_count,
            nexthop_is_relayhost: !lmtp
                && self.settings.relayhost.is_some()
                && primary.iter().chain(fallback).next().map(Destination::text)
                    == self.settings.relayhost.as_deref(),
        };
        outcome::settle_leftovers(&mut job.ledger, &job.trouble, context);
        Delivery::new(job.ledger, job.trouble)
    }

    /// Tries every server of one destination (Postfix's smtp_connect_inet
    /// and smtp_connect_local); returns true when this destination turned
    /// out to be final (we are its MX, or mail loops).
    fn try_destination(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        destination: &Destination,
        final_nexthop: bool,
        job: &mut JobState<'_>,
    ) -> bool {
        let Some(policy) = self.destination_policy(destination, job) else {
            return false;
        };
        let policy = tls_required_no(policy, request);
        let keys = self.keys(request, settings, destination.text());
        // The job's next-hop label: looked up and stored with its first
        // destination only (made only when the job uses the cache).
        let uses_cache = self.cache.is_some() && (request.cache.load || request.cache.store);
        job.nexthop_label =
            (job.first_destination && uses_cache).then(|| keys.nexthop(destination, policy.level));
        let (host, port, lookup_mx) = match destination {
            Destination::Unix { path, text } => {
                self.try_unix(request, settings, path, text, policy, keys, job);
                return true;
            }
            Destination::Inet {
                host,
                port,
                lookup_mx,
                ..
            } => (host, *port, *lookup_mx),
        };
        let target = InetTarget {
            destination,
            host,
            port,
            lookup_mx,
            final_nexthop,
        };
        let (site, route) = match self.inet_site(request, settings, target, policy, job) {
            Ok(found) => found,
            Err(is_final) => return is_final,
        };
        // Addresses already used through the cache in this job are scrubbed.
        let candidates: Vec<&Candidate> = route
            .candidates
            .iter()
            .filter(|c| !job.used.contains(&site.endpoint(c)))
            .collect();
        let lookup = self.lookup(request, keys, &site.policy);
        let queue = match &lookup {
            Some(lookup) => self.reuse_order(request, lookup, &site, candidates, job),
            None => candidates.into_iter().map(|c| (c, None)).collect(),
        };
        self.try_addresses(request, settings, &site, lookup.as_ref(), queue, job);
        route.i_am_mx
    }

    /// The one server of a UNIX-domain destination, on a handed-over or
    /// cached session when there is one.
    #[allow(clippy::too_many_arguments)]
    fn try_unix(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        path: &Path,
        dest: &str,
        policy: Arc<Policy>,
        keys: reuse::Keys<'_>,
        job: &mut JobState<'_>,
    ) {
        let server = self.unix_server(path, dest, policy);
        let cached = self
            .lookup(request, keys, &server.policy)
            .and_then(|lookup| {
                let label = keys.endpoint(&server.endpoint, &server.policy, &server.tls_host);
                // A session handed over by the previous job (chain).
                self.handed(request, job, |s| s.endpoint == label)
                    .or_else(|| lookup.cache.take_by_endpoint(&label))
            });
        self.run_server(request, settings, &server, cached, None, job);
    }

    /// A TCP destination's addresses and what its servers share. Err when
    /// it is skipped: whether that makes it final (mail loops back).
    fn inet_site<'d>(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        target: InetTarget<'d>,
        policy: Arc<Policy>,
        job: &mut JobState<'_>,
    ) -> Result<(Site<'d>, Route), bool> {
        let InetTarget {
            destination,
            host,
            port,
            lookup_mx,
            final_nexthop,
        } = target;
        let smtp = request.protocol == Protocol::Smtp;
        let wrapper = self.config.tls.wrappermode || port == 465;
        if wrapper && policy.level < Level::Encrypt {
            log::warn!(
                "{}: SMTPS wrapper mode (TLS before the greeting, used for port 465) requires [tls] security_level = \"encrypt\" (or stronger); skipping",
                destination.text()
            );
            job.trouble.record(&Dsn::new(
                dsn::TLS_PROBLEM,
                "client TLS configuration problem",
            ));
            return Err(false);
        }
        let mode = ResolveMode {
            lookup_mx: smtp && lookup_mx && self.settings.dns_support != DnsSupport::Disabled,
            loop_detect: smtp && port == 25,
        };
        let route = match self.resolver.resolve(host, mode) {
            Ok(route) => route,
            Err(error) => {
                log::info!("{error}");
                job.trouble.record(&error.dsn());
                // Don't try fallback relays when mail loops back to us.
                return Err(error.makes_nexthop_final());
            }
        };
        if mode.lookup_mx
            && let Some(sites) = &self.sites
        {
            sites.learn(
                &host.text(),
                route.candidates.iter().map(|c| c.host.as_str()),
            );
        }
        let mut route = route;
        // Taken before MTA-STS and DANE remove hosts: a skipped best MX
        // stays the best.
        let best_preference = route.candidates.first().map_or(0, |c| c.preference);
        let policy = if mode.lookup_mx {
            self.mta_sts_route(host, &mut route, policy, job)
                .ok_or(false)?
        } else {
            policy
        };
        let server_policies = if policy.dane.is_some() {
            let decided = self.dane_policies(destination, port, &policy, &mut route, job);
            mta_sts_under_dane(&policy, decided)
        } else {
            Vec::new()
        };
        let site = Site {
            dest: destination.text(),
            host,
            port,
            server_policies,
            final_nexthop: final_nexthop || route.i_am_mx,
            best_preference,
            address_limit: usize::try_from(settings.mx_address_limit).unwrap_or(usize::MAX),
            session_limit: usize::try_from(settings.mx_session_limit).unwrap_or(usize::MAX),
            loop_detect: mode.loop_detect,
            policy,
            wrapper,
        };
        Ok((site, route))
    }

    /// The TLSA records of `name` through the deliverer's DNS.
    fn dns_tlsa(&self, name: &str) -> Result<crate::dns::Answer<crate::dane::Tlsa>, DnsError> {
        self.dns.tlsa(name)
    }

    /// Under a "dane"/"dane-only" policy, decides each MX host's own
    /// policy from its DNSSEC status and TLSA records (Postfix's per-address
    /// TLS policy lookup). A host that cannot be tried (a TLSA lookup error,
    /// "dane-only" without DANE) leaves the route with a warning, and its
    /// 4.7.5 reason is kept for the recipients.
    fn dane_policies(
        &self,
        destination: &Destination,
        port: u16,
        policy: &Arc<Policy>,
        route: &mut Route,
        job: &mut JobState<'_>,
    ) -> Vec<(String, bool, Arc<Policy>)> {
        let mut decided: Vec<(String, bool, Result<Arc<Policy>, DaneRefusal>)> = Vec::new();
        for candidate in &route.candidates {
            let known = decided.iter().any(|(host, secure, _)| {
                *host == candidate.host && *secure == candidate.addr_secure
            });
            if known {
                continue;
            }
            let context = DaneContext {
                dnssec_lookups: self.settings.dns_support == DnsSupport::Dnssec,
                ignore_mx_lookup_error: self.config.dns.ignore_mx_lookup_error,
                insecure_mx_policy: InsecureMxPolicy::parse(
                    &self.config.tls.dane_insecure_mx_policy,
                )
                .unwrap_or_default(),
                destination: destination.text(),
                host: &candidate.host,
                port,
                host_is_ip: candidate.host_is_ip,
                mx_secure: route.mx_secure,
                addr_secure: candidate.addr_secure,
                canonical: candidate.canonical.as_deref(),
            };
            let outcome =
                dane_policy::decide(policy, &context, |name| self.dns_tlsa(name)).map(Arc::new);
            decided.push((candidate.host.clone(), candidate.addr_secure, outcome));
        }
        let mut policies = Vec::new();
        for (host, secure, outcome) in decided {
            match outcome {
                Ok(policy) => {
                    log::debug!(
                        "{}: TLS policy of {host}: {} ({})",
                        destination.text(),
                        policy.level,
                        policy.reason
                    );
                    policies.push((host, secure, policy));
                }
                Err(refusal) => {
                    if let Some(warning) = &refusal.warning {
                        log::warn!("{warning}");
                    }
                    log::warn!(
                        "TLS policy lookup for {}/{host}: {}",
                        destination.text(),
                        refusal.text
                    );
                    if let Some(tlsrpt) = &self.tlsrpt {
                        tlsrpt.record_dane_refusal(&destination.display_host(), &host, &refusal);
                    }
                    job.trouble
                        .record(&Dsn::new(dsn::TLS_PROBLEM, refusal.text.clone()));
                    route
                        .candidates
                        .retain(|c| !(c.host == host && c.addr_secure == secure));
                }
            }
        }
        policies
    }

    /// MTA-STS (RFC 8461, see [`crate::mta_sts`]) for the MX list of a
    /// domain whose TLS policy is the default one (a `[[tls.policy]]`
    /// entry wins; DANE, decided per server later, overrides it): under
    /// "enforce" only the MX hosts the policy names are kept and they get
    /// level verify; "testing" logs the MX hosts enforce would refuse.
    /// Returns the servers' policy; `None` when no MX host is left:
    /// recorded as 4.7.5, the destination is skipped. Under a default
    /// "dane" level the policy keeps its DANE mode, and
    /// [`mta_sts_under_dane`] settles each server.
    fn mta_sts_route(
        &self,
        host: &Host,
        route: &mut Route,
        policy: Arc<Policy>,
        job: &mut JobState<'_>,
    ) -> Option<Arc<Policy>> {
        let (Some(mta_sts), Host::Name(domain)) = (&self.mta_sts, host) else {
            return Some(policy);
        };
        if policy.source != PolicySource::Default {
            return Some(policy);
        }
        let Some(found) = mta_sts.lookup_reporting(domain, |error| {
            if let Some(tlsrpt) = &self.tlsrpt {
                let result = match error {
                    crate::mta_sts::MtaStsError::Policy(_) => {
                        crate::tlsrpt::ResultType::StsPolicyInvalid
                    }
                    _ => crate::tlsrpt::ResultType::StsPolicyFetchError,
                };
                tlsrpt.record_sts_failure(domain, result, None);
            }
        }) else {
            return Some(policy);
        };
        if let Some(tlsrpt) = &self.tlsrpt {
            let patterns: Vec<String> = found
                .policy
                .mx
                .iter()
                .map(|p| p.as_str().to_string())
                .collect();
            let mut lines = vec![
                "version: STSv1".to_string(),
                format!("mode: {}", found.policy.mode.name()),
            ];
            lines.extend(patterns.iter().map(|p| format!("mx: {p}")));
            lines.push(format!("max_age: {}", found.policy.max_age));
            tlsrpt.note_sts_policy(&found.domain, &lines, &patterns);
        }
        match crate::mta_sts::apply(&found, &policy, &mut route.candidates) {
            Verdict::Unchanged => Some(policy),
            Verdict::Enforce { policy, dropped } => {
                for mx in dropped {
                    log::info!(
                        "MX host {mx} does not match the MTA-STS policy of {} (id {}): skipped",
                        found.domain,
                        found.id
                    );
                }
                Some(Arc::new(policy))
            }
            Verdict::Testing { policy, mismatched } => {
                // The hook for TLS-RPT: what enforce would have refused.
                for mx in mismatched {
                    log::warn!(
                        "MX host {mx} does not match the MTA-STS policy of {} (id {}, testing \
                         mode): delivering anyway",
                        found.domain,
                        found.id
                    );
                }
                Some(Arc::new(policy))
            }
            Verdict::NoMatch { text } => {
                log::warn!("{text} (id {})", found.id);
                job.trouble.record(&Dsn::new(dsn::TLS_PROBLEM, text));
                None
            }
        }
    }

    /// Tries the addresses of a TCP destination in order, within
    /// `mx_address_limit` and `mx_session_limit`, until no recipient is
    /// left.
    ///
    /// The order is Postfix's, cut at `mx_address_limit`, then (when
    /// enabled) Happy Eyeballs interleaves the address families within
    /// each run of equal MX preference and the address health memory moves
    /// the addresses that failed lately to the end. Neither adds an
    /// address. A server is the last address (the final-server rule) when
    /// every address still to try is one that failed lately: so the
    /// server that Postfix's order would try last keeps its rule, and
    /// recipients are kept for a backup MX or deferred exactly as when
    /// the demoted addresses fail again. With Happy Eyeballs, a run of
    /// equal preference is raced (see [`Connector::race`]); attempts
    /// abandoned for the winner count as tried and are not retried.
    fn try_addresses(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        site: &Site<'_>,
        lookup: Option<&reuse::Lookup<'_>>,
        mut queue: Vec<(&Candidate, Option<IdleSession>)>,
        job: &mut JobState<'_>,
    ) {
        if site.address_limit > 0 {
            queue.truncate(site.address_limit);
        }
        if settings.happy_eyeballs.is_some() {
            queue = interleave_families(queue, |(c, _)| c.preference, |(c, _)| c.addr.is_ipv6());
        }
        // Addresses whose mark ran out and that this job probes: tried in
        // their place, and never taken for failed ones here.
        let mut probes = Vec::new();
        // A first contact this job claimed (see AddressHealth::demote_at).
        let mut claimed = None;
        if settings.address_health.is_some() {
            let demoted = self.health.demote(&mut queue, |(c, cached)| {
                cached.is_none().then(|| SocketAddr::new(c.addr, site.port))
            });
            if demoted.moved > 0 {
                log::debug!(
                    "{}: {} address(es) that failed to connect lately moved to the end",
                    site.host.text(),
                    demoted.moved
                );
            }
            probes = demoted.probes;
            claimed = demoted.claimed;
        }
        let mut pending: VecDeque<_> = queue.into();
        // Backup MX sessions taken from the cache for a later address of a
        // race group: put back if the job ends before their turn.
        let mut looked_ahead = Vec::new();
        let mut sessions = 0usize;
        // Bounded: each pass takes at least one address off `pending`.
        while !pending.is_empty() {
            if job.ledger.left() == 0 {
                break;
            }
            let group = self.next_group(settings, site, lookup, &mut pending, &mut looked_ahead);
            let (server, cached, connected) = match group {
                Group::Cached(candidate, idle) => {
                    let last = self.only_failed_left(settings, site, &pending, &mut probes);
                    let server = self.inet_server(settings, site, candidate, last, sessions);
                    (server, Some(*idle), None)
                }
                Group::Connect(candidates) => {
                    let servers: Vec<Server> = candidates
                        .iter()
                        .map(|c| self.inet_server(settings, site, c, false, sessions))
                        .collect();
                    let delay = settings.happy_eyeballs.unwrap_or_default();
                    let (race, started_at) =
                        self.race(settings, &servers, delay, &mut claimed, job);
                    // Targets the race did not start are tried later.
                    for candidate in candidates.iter().skip(race.started).rev() {
                        pending.push_front((candidate, None));
                    }
                    let Some((index, stream)) = race.winner else {
                        continue;
                    };
                    let Some(mut server) = servers.into_iter().nth(index) else {
                        continue;
                    };
                    server.last_address =
                        self.only_failed_left(settings, site, &pending, &mut probes);
                    let connected = Connected {
                        stream,
                        started: started_at,
                    };
                    (server, None, Some(connected))
                }
            };
            let handshake = self.run_server(request, settings, &server, cached, connected, job);
            if handshake == Handshake::Done {
                sessions += 1;
            }
            if server.last_address || (handshake == Handshake::Done && server.session_limit_next) {
                break;
            }
        }
        if let Some(addr) = claimed {
            // Claimed and never tried (the job ended first).
            self.health.connect_ended(addr, false);
        }
        if let Some(lookup) = lookup {
            for (candidate, cached) in pending {
                let endpoint = site.endpoint(candidate);
                if let Some(idle) = cached.filter(|_| looked_ahead.contains(&endpoint)) {
                    lookup.cache.store(idle, None);
                }
            }
        }
    }

    /// The next addresses to try from `pending`: one with a cached session
    /// (for a backup MX looked up now), else the addresses to race — with
    /// Happy Eyeballs the run of equal MX preference up to the next cached
    /// session, without it the first address alone.
    fn next_group<'c>(
        &self,
        settings: &ProtocolSettings,
        site: &Site<'_>,
        lookup: Option<&reuse::Lookup<'_>>,
        pending: &mut VecDeque<(&'c Candidate, Option<IdleSession>)>,
        looked_ahead: &mut Vec<Endpoint>,
    ) -> Group<'c> {
        // Backup MX: look in the cache before connecting.
        let backup_session = |candidate: &Candidate| {
            (candidate.preference != site.best_preference)
                .then(|| lookup?.by_endpoint(&site.endpoint(candidate), &candidate.host))
                .flatten()
        };
        let mut group = Vec::new();
        while let Some((candidate, cached)) = pending.pop_front() {
            let cached = cached.or_else(|| backup_session(candidate));
            match cached {
                Some(idle) if group.is_empty() => return Group::Cached(candidate, Box::new(idle)),
                Some(idle) => {
                    looked_ahead.push(site.endpoint(candidate));
                    pending.push_front((candidate, Some(idle)));
                    break;
                }
                None => group.push(candidate),
            }
            let more = settings.happy_eyeballs.is_some()
                && pending
                    .front()
                    .is_some_and(|(next, _)| next.preference == candidate.preference);
            if !more {
                break;
            }
        }
        Group::Connect(group)
    }

    /// Whether every address still to try failed to connect lately (or
    /// none is left): the server tried now is then the last address. An
    /// address this job probes (`probes`, see [`AddressHealth::demote`])
    /// is not one that failed.
    fn only_failed_left(
        &self,
        settings: &ProtocolSettings,
        site: &Site<'_>,
        pending: &VecDeque<(&Candidate, Option<IdleSession>)>,
        probes: &mut Vec<SocketAddr>,
    ) -> bool {
        if settings.address_health.is_none() {
            return pending.is_empty();
        }
        let now = std::time::Instant::now();
        pending.iter().all(|(candidate, cached)| {
            let addr = SocketAddr::new(candidate.addr, site.port);
            if cached.is_some() || probes.contains(&addr) {
                return false;
            }
            match self.health.state_at(addr, now) {
                crate::health::State::Failed => true,
                crate::health::State::Good => false,
                crate::health::State::Probe => {
                    probes.push(addr);
                    false
                }
            }
        })
    }

    /// Connects to the first of `servers` that answers (one at a time
    /// without Happy Eyeballs, or a single server): records every ended
    /// attempt as sequential connects would, in the order they started
    /// (log, transcript, last reason), and in the address health memory.
    /// Returns the race and when it began.
    fn race(
        &self,
        settings: &ProtocolSettings,
        servers: &[Server],
        delay: std::time::Duration,
        claimed: &mut Option<SocketAddr>,
        job: &mut JobState<'_>,
    ) -> (Race, std::time::Instant) {
        let options = self.connect_options(settings);
        let targets: Vec<RaceTarget<'_>> = servers
            .iter()
            .map(|server| RaceTarget {
                endpoint: &server.endpoint,
                display: &server.display,
            })
            .collect();
        let started_at = std::time::Instant::now();
        // First contacts in progress make their addresses suspect for
        // other jobs (see crate::health).
        let watched: Vec<SocketAddr> = if settings.address_health.is_some() {
            servers
                .iter()
                .filter_map(|server| match &server.endpoint {
                    Endpoint::Inet(addr) => Some(*addr),
                    Endpoint::Unix(_) => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        for addr in &watched {
            // The claimed first contact counts as in progress already.
            if *claimed == Some(*addr) {
                *claimed = None;
            } else {
                self.health.connecting(*addr);
            }
        }
        let race = self.connector.race(&targets, &options, delay);
        for addr in &watched {
            let ok = race.winner.as_ref().is_some_and(|(index, _)| {
                servers
                    .get(*index)
                    .is_some_and(|s| s.endpoint == Endpoint::Inet(*addr))
            });
            self.health.connect_ended(*addr, ok);
        }
        // In the order the attempts started, as sequential connects would
        // have recorded them (the last reason is the last address's).
        let mut ended: Vec<&crate::connect::Attempt> = race.attempts.iter().collect();
        ended.sort_by_key(|attempt| attempt.index);
        for attempt in ended {
            let Some(server) = servers.get(attempt.index) else {
                continue;
            };
            let ok = attempt.result.is_ok();
            // The one place where a connect attempt ends (sequential or
            // raced).
            crate::metrics::record_connect(attempt.elapsed, ok);
            connect_ended(&server.display, attempt.elapsed, ok);
            let addr = match &server.endpoint {
                Endpoint::Inet(addr) => Some(*addr),
                Endpoint::Unix(_) => None,
            };
            match &attempt.result {
                Ok(()) => {
                    if let Some(addr) = addr {
                        self.health.succeeded(addr);
                    }
                }
                Err(failure) => {
                    log::info!("{}", failure.dsn.text);
                    job.trouble.record(&failure.dsn);
                    if let (Some(addr), Some(period), true) =
                        (addr, settings.address_health, failure.address_fault)
                    {
                        self.health.failed(addr, period);
                    }
                }
            }
        }
        if let Some((winner, _)) = &race.winner {
            let winner = servers.get(*winner).map_or("", |s| s.display.as_str());
            for index in race.abandoned() {
                if let Some(server) = servers.get(index) {
                    let line = format!(
                        "connect to {}: abandoned, {winner} connected first",
                        server.display
                    );
                    log::info!("{line}");
                    job.trouble.note(line);
                }
            }
        }
        (race, started_at)
    }

    /// Source addresses and the connect timeout for new connections.
    fn connect_options(&self, settings: &ProtocolSettings) -> ConnectOptions {
        ConnectOptions {
            timeout: settings.timeouts.connect,
            bind_address: settings.bind_address,
            bind_address6: settings.bind_address6,
            bind_address_enforce: settings.bind_address_enforce,
            implicit_source: match self.own.implicit_source(false) {
                Some(IpAddr::V4(addr)) => Some(addr),
                _ => None,
            },
            implicit_source6: match self.own.implicit_source(true) {
                Some(IpAddr::V6(addr)) => Some(addr),
                _ => None,
            },
        }
    }

    /// The destination's TLS policy (its policy table entry, else the
    /// default); a policy that cannot be made is recorded and skips it.
    fn destination_policy(
        &self,
        destination: &Destination,
        job: &mut JobState<'_>,
    ) -> Option<Arc<Policy>> {
        let unix = matches!(destination, Destination::Unix { .. });
        let looked_up = self.tls_policies.lookup(destination.text(), unix);
        match looked_up {
            Ok(policy) => Some(policy),
            Err(e) => {
                log::warn!("TLS policy lookup for {}: {e}", destination.text());
                job.trouble.record(&Dsn::new(
                    dsn::TLS_PROBLEM,
                    "client TLS configuration problem",
                ));
                None
            }
        }
    }

    /// The one LMTP server of a UNIX-domain destination.
    fn unix_server(&self, path: &Path, dest: &str, policy: Arc<Policy>) -> Server {
        let display = format!("{}[{}]", self.config.myhostname(), path.display());
        Server {
            dest: dest.to_string(),
            endpoint: Endpoint::Unix(path.to_path_buf()),
            relay: display.clone(),
            tls_host: self.config.myhostname(),
            tls_host_is_ip: self.config.myhostname().parse::<IpAddr>().is_ok(),
            nexthop: self.config.myhostname(),
            display,
            final_nexthop: true,
            last_address: true,
            session_limit_next: false,
            loop_check: None,
            policy,
            wrapper: false,
        }
    }

    /// One address of a TCP destination as a server to try
    /// (`last_address`: no further address is tried after it, see
    /// [`Deliverer::try_addresses`]; `sessions`: handshakes so far).
    fn inet_server(
        &self,
        settings: &ProtocolSettings,
        site: &Site<'_>,
        candidate: &Candidate,
        last_address: bool,
        sessions: usize,
    ) -> Server {
        // host[addr] and host[addr]:port, built without core::fmt.
        let mut relay = String::with_capacity(candidate.host.len() + 24);
        relay.push_str(&candidate.host);
        relay.push('[');
        crate::text::push_ip(&mut relay, candidate.addr);
        relay.push(']');
        let display = relay.clone();
        relay.push(':');
        crate::text::push_u64(&mut relay, u64::from(site.port));
        Server {
            dest: site.dest.to_string(),
            endpoint: site.endpoint(candidate),
            relay,
            display,
            tls_host: candidate.host.clone(),
            tls_host_is_ip: candidate.host_is_ip,
            nexthop: site.host.text(),
            final_nexthop: site.final_nexthop,
            last_address,
            session_limit_next: site.session_limit > 0 && sessions + 1 >= site.session_limit,
            loop_check: site.loop_detect.then(|| LoopCheck {
                my_names: vec![settings.helo_name.clone(), self.config.myhostname()],
                nexthop: site.host.text(),
                best_mx: candidate.preference == site.best_preference,
            }),
            policy: site.policy_of(candidate),
            wrapper: site.wrapper,
        }
    }

    /// Runs the job on one server: on its cached session when there is
    /// one (a failed RSET probe falls back to a new connection), else on
    /// the connection already made (`connected`) or a new one.
    fn run_server(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        cached: Option<IdleSession>,
        connected: Option<Connected>,
        job: &mut JobState<'_>,
    ) -> Handshake {
        match cached {
            Some(idle) => {
                job.used.insert(server.endpoint.clone());
                match self.reuse_session(request, settings, server, idle, job) {
                    Some(handshake) => handshake,
                    None => self.try_server(request, settings, server, None, job),
                }
            }
            None => self.try_server(request, settings, server, connected, job),
        }
    }

    /// The cache labels of this job's sessions (one builder, see
    /// [`crate::reuse::Keys`]).
    fn keys<'s>(
        &'s self,
        request: &Request<'_>,
        settings: &'s ProtocolSettings,
        dest: &'s str,
    ) -> reuse::Keys<'s> {
        reuse::Keys::new(
            request.protocol,
            &settings.helo_name,
            request.envelope.requires_smtputf8(&request.facts),
        )
        .with_sasl(self.sasl.as_deref().map(|s| &s.table), dest)
    }

    /// Where to look for cached sessions, when this job looks at all.
    fn lookup<'s>(
        &'s self,
        request: &Request<'_>,
        keys: reuse::Keys<'s>,
        policy: &'s Policy,
    ) -> Option<reuse::Lookup<'s>> {
        let cache = self.cache.as_deref().filter(|_| request.cache.load)?;
        Some(reuse::Lookup {
            cache,
            keys,
            policy,
        })
    }

    /// The session handed over to this job by the previous one (see
    /// [`crate::reuse::handed`]).
    fn handed(
        &self,
        request: &Request<'_>,
        job: &JobState<'_>,
        wanted: impl FnOnce(&IdleSession) -> bool,
    ) -> Option<IdleSession> {
        let identity = reuse::JobIdentity {
            message: request.message.in_memory(),
            facts: request.facts,
            envelope: &|| envelope_of(request, &job.ledger.pending()),
        };
        reuse::handed(job.chain, &identity, wanted)
    }

    /// The addresses of a TCP destination in reuse order, with the cached
    /// sessions found for them (see [`crate::reuse::arrange`]).
    fn reuse_order<'c>(
        &self,
        request: &Request<'_>,
        lookup: &reuse::Lookup<'_>,
        site: &Site<'_>,
        candidates: Vec<&'c Candidate>,
        job: &JobState<'_>,
    ) -> Vec<(&'c Candidate, Option<IdleSession>)> {
        // A session handed over by the previous job with this job's
        // transaction in flight (chain), else Postfix's lookups.
        let first = self
            .handed(request, job, |s| lookup.keys.fits(s, site.policy.level))
            .or_else(|| {
                job.nexthop_label
                    .as_ref()
                    .and_then(|label| lookup.cache.take_by_nexthop(label))
            });
        let targets = candidates
            .into_iter()
            .map(|candidate| reuse::Target {
                item: candidate,
                endpoint: site.endpoint(candidate),
                tls_host: &candidate.host,
                best: candidate.preference == site.best_preference,
            })
            .collect();
        reuse::arrange(lookup, first, targets)
    }

    /// Runs the job on a session from the cache. None: its RSET probe
    /// failed (the session is gone, no recipient was touched), connect
    /// afresh.
    fn reuse_session(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        idle: IdleSession,
        job: &mut JobState<'_>,
    ) -> Option<Handshake> {
        let indexes = job.ledger.pending();
        let IdleSession {
            mut conn,
            extensions,
            tls,
            connected_at,
            uses,
            primed,
            display,
            ..
        } = idle;
        if primed.is_none() && conn.peer_closed() {
            // Something arrived before any command was sent (a stray reply
            // would answer this job's first command), or the server hung
            // up: connect afresh.
            log::info!(
                "cached session to {} has unread input or was closed; connecting afresh",
                server.relay
            );
            job.trouble.note(format!(
                "cached session to {} was no longer usable",
                server.relay
            ));
            return None;
        }
        let reuse_start = std::time::Instant::now();
        // Not over LMTP: there, the next job's replies would follow this
        // one's per-recipient replies, and a server that sends one reply
        // too few would fill a recipient's slot with the next job's.
        let chaining = self.config.cache.chain_jobs
            && request.cache.store
            && extensions.pipelining
            && request.protocol == Protocol::Smtp;
        let tls_active = tls.is_some();
        let source = if self.settings.log_format == LogFormat::Json {
            conn.local_addr()
        } else {
            None
        };
        // The next job's client is made like this one (only when it may
        // ride behind this one's data).
        let mut follower_parts = None;
        let mut client = match primed {
            // Handed over with this job's transaction in flight (chain):
            // its settings and envelope are in it already.
            Some(primed) if primed.results().len() == indexes.len() => {
                if chaining {
                    follower_parts = Some((primed.settings().clone(), extensions));
                }
                *primed
            }
            Some(_) => {
                log::warn!("a chained session does not fit its job; connecting afresh");
                return None;
            }
            None => {
                // A cached session authenticated when it was made.
                let client_settings = self.client_settings(
                    request,
                    settings,
                    &display,
                    None,
                    TlsMode::Off,
                    &server.policy,
                    None,
                );
                if chaining {
                    follower_parts = Some((client_settings.clone(), extensions.clone()));
                }
                Client::resume(
                    client_settings,
                    envelope_of(request, &indexes),
                    request.facts,
                    extensions,
                    tls_active,
                )
            }
        };
        client.set_quit_after_data(!request.cache.store);
        client.set_replace_stray_cr(self.config.smtp.replace_stray_cr);
        client.set_smtputf8_a_labels(self.config.smtp.smtputf8_a_labels);
        let needs_smtputf8 = request.envelope.requires_smtputf8(&request.facts);
        let chain = job.chain;
        let mut follow = || -> Option<Vec<u8>> {
            follower_parts.as_ref()?;
            let (ticket, follower) = chain?.take_follower(&request.hop.key, request.protocol)?;
            if follower.envelope.requires_smtputf8(&follower.facts) != needs_smtputf8 {
                return None;
            }
            // One follower per session: the parts move into its client.
            let (next_settings, extensions) = follower_parts.take()?;
            let mut next = Client::resume(
                next_settings,
                follower.envelope,
                follower.facts,
                extensions,
                tls_active,
            );
            next.set_replace_stray_cr(self.config.smtp.replace_stray_cr);
            next.set_smtputf8_a_labels(self.config.smtp.smtputf8_a_labels);
            match next.next_action() {
                crate::smtp::client::Action::Send { bytes, .. } => {
                    chain?.set_primed(ticket, follower.message_digest, next);
                    Some(bytes)
                }
                _ => None,
            }
        };
        let (conn, end) = session::drive_with(
            conn,
            &mut client,
            &settings.timeouts,
            request.message,
            settings.line_length_limit,
            &mut session::NoTls,
            &mut follow,
        );
        let primed_next = chain.and_then(Chain::take_primed);
        if client.desynchronised() {
            log::warn!(
                "reused session to {} answered out of step; retrying on a new connection",
                server.relay
            );
            job.trouble.note(format!(
                "reused session to {} answered out of step",
                server.relay
            ));
            return None;
        }
        if client.probe_failed() {
            log::info!(
                "cached session to {} failed its RSET probe; connecting afresh",
                server.relay
            );
            job.trouble.note(format!(
                "cached session to {} was no longer usable",
                server.relay
            ));
            return None;
        }
        job.trouble
            .note(["reused cached session to ", server.relay.as_str()].concat());
        let now = std::time::Instant::now();
        let via = Via {
            relay: server.relay.clone(),
            tls,
            tls_policy: Some(server.policy.note()),
            timing: Some(SessionTiming {
                connect: reuse_start,
                handshake: client.handshake_at().unwrap_or(now),
                end: now,
            }),
            source,
        };
        let ended = Ended {
            conn,
            end,
            via,
            connected_at,
            uses: uses + 1,
            primed_next,
        };
        Some(self.finish_session(request, settings, server, client, &indexes, ended, job))
    }

    #[allow(clippy::too_many_arguments)]
    fn client_settings(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        peer: &str,
        loop_check: Option<LoopCheck>,
        tls: TlsMode,
        policy: &Policy,
        sasl: Option<sasl::ClientAuth>,
    ) -> ClientSettings {
        let tls_authenticated = matches!(policy.level, Level::Dane | Level::Verify | Level::Secure);
        ClientSettings {
            lmtp: request.protocol == Protocol::Lmtp,
            helo_name: settings.helo_name.clone(),
            skip_5xx_greeting: settings.skip_5xx_greeting,
            peer: peer.to_string(),
            smtputf8_enable: self.config.smtp.smtputf8_enable,
            tls_authenticated,
            loop_check,
            tls,
            strict_reply_syntax: self.config.smtp.strict_reply_syntax,
            mime_conversion: (!self.config.smtp.disable_mime_output_conversion).then_some(
                MimeLimits {
                    nesting_limit: self.config.smtp.mime_nesting_limit,
                    boundary_length_limit: self.config.smtp.mime_boundary_length_limit,
                    header_size_limit: self.config.smtp.header_size_limit,
                },
            ),
            sasl,
        }
    }

    /// Applies a finished session's results with the final-server rule, then
    /// keeps the connection in the cache or closes it.
    #[allow(clippy::too_many_arguments)]
    fn finish_session(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        client: Client,
        indexes: &[usize],
        ended: Ended,
        job: &mut JobState<'_>,
    ) -> Handshake {
        let handshake = if client.handshake_done() {
            Handshake::Done
        } else {
            Handshake::Failed
        };
        // Postfix: a session past the handshake counts towards
        // mx_session_limit, and reaching it makes this the final server.
        let final_server = server.final_nexthop
            && (server.last_address || (handshake == Handshake::Done && server.session_limit_next));
        let reusable = client.reusable();
        let quit_sent = client.quit_pipelined();
        // Only a session that may be kept needs its extensions afterwards.
        let extensions = (!quit_sent).then(|| client.extensions().clone());
        let success = SuccessDuty::after_session(
            client.extensions().dsn,
            request.protocol == Protocol::Lmtp && settings.assume_final,
        );
        outcome::apply_session(
            &mut job.ledger,
            indexes,
            client.into_results(),
            final_server,
            &ended.via,
            success,
            &mut job.trouble,
        );
        if quit_sent {
            // QUIT went out behind the dot: just close. When the server's
            // 221 is already here, it has ended the session: a reset then
            // spares both sides a TIME_WAIT socket (a busy client would
            // otherwise hold thousands of ephemeral ports for a minute).
            if let Some(mut conn) = ended.conn
                && conn.buffered_starts_with(b"221")
            {
                conn.get_mut().reset_on_close();
            }
            return handshake;
        }
        self.keep_or_close(
            request,
            settings,
            server,
            ended.conn,
            ended.end,
            reusable,
            extensions.unwrap_or_default(),
            ended.via,
            ended.connected_at,
            ended.uses,
            ended.primed_next,
            job,
        );
        handshake
    }

    /// After a session: keep it in the cache when allowed, else QUIT.
    #[allow(clippy::too_many_arguments)]
    fn keep_or_close(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        conn: Option<Connection<Box<dyn Transport>>>,
        end: RunEnd,
        reusable: bool,
        extensions: Extensions,
        via: Via,
        connected_at: std::time::Instant,
        uses: u32,
        primed_next: Option<reuse::PrimedNext>,
        job: &mut JobState<'_>,
    ) {
        let Some(conn) = conn else { return };
        if end != RunEnd::Idle {
            return;
        }
        let keep = reuse::may_keep(
            request.cache.store,
            reusable,
            via.tls.is_some(),
            self.config.tls.connection_reuse,
        );
        let cache = self.cache.as_deref().filter(|_| keep);
        let endpoint = self.keys(request, settings, &server.dest).endpoint(
            &server.endpoint,
            &server.policy,
            &server.tls_host,
        );
        let session = IdleSession {
            conn,
            extensions,
            endpoint,
            display: server.display.clone(),
            relay: server.relay.clone(),
            tls: via.tls,
            connected_at,
            uses,
            primed: None,
        };
        reuse::keep(
            cache,
            job.chain,
            session,
            primed_next,
            &mut job.nexthop_label,
            settings.timeouts.quit,
        );
    }

    /// Runs one server; after a failed opportunistic TLS handshake on old
    /// enough mail, once more in plaintext (Postfix's retry_plain).
    fn try_server(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        connected: Option<Connected>,
        job: &mut JobState<'_>,
    ) -> Handshake {
        if self.skips_broken_tls(request, server) {
            return self
                .session_once(request, settings, server, true, connected, job)
                .0;
        }
        let (handshake, retry_plain) =
            self.session_once(request, settings, server, false, connected, job);
        if !retry_plain {
            return handshake;
        }
        log::info!(
            "{}: TLS handshake failed; trying again without TLS",
            server.relay
        );
        self.session_once(request, settings, server, true, None, job)
            .0
    }

    /// What the client needs to authenticate to `server` (`[sasl]` on and
    /// a credential in the table for its host name or destination).
    fn sasl_for(&self, server: &Server) -> Option<sasl::ClientAuth> {
        self.sasl
            .as_deref()
            .and_then(|setup| setup.client_auth(&server.tls_host, &server.dest))
    }

    /// Whether mail old enough for a plaintext retry goes plaintext at
    /// once because the server's TLS handshake failed lately
    /// ([`crate::tls_memory`], `[tls] broken_tls_memory`).
    fn skips_broken_tls(&self, request: &Request<'_>, server: &Server) -> bool {
        // Not with SASL credentials, as the plaintext retry.
        let has_credential = self
            .sasl
            .as_deref()
            .is_some_and(|setup| setup.table.lookup(&server.tls_host, &server.dest).is_some());
        !has_credential
            && server.policy.level == Level::May
            && !server.wrapper
            && !self.config.tls.broken_tls_memory.is_zero()
            && message_age(request) >= self.config.tls.plaintext_retry_after
            && self.tls_memory.skip_tls(&server.endpoint, &server.relay)
    }

    /// Connects (unless `connected` is the connection made already) and
    /// runs one session on one server. Returns whether the handshake
    /// completed, and whether a plaintext retry is due.
    fn session_once(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        plaintext: bool,
        connected: Option<Connected>,
        job: &mut JobState<'_>,
    ) -> (Handshake, bool) {
        let connected = match connected {
            Some(connected) => connected,
            None => {
                let (race, started) = self.race(
                    settings,
                    std::slice::from_ref(server),
                    std::time::Duration::ZERO,
                    &mut None,
                    job,
                );
                match race.winner {
                    Some((_, stream)) => Connected { stream, started },
                    None => return (Handshake::Failed, false),
                }
            }
        };
        let Connected {
            mut stream,
            started: connect_start,
        } = connected;
        // TLS-RPT's sending-mta-ip.
        let source = self.tlsrpt.as_ref().and_then(|_| stream.local_addr());
        let connected_at = std::time::Instant::now();
        job.trouble
            .note(["connected to ", server.relay.as_str()].concat());
        let peer = PeerNames {
            hostname: &server.tls_host,
            nexthop: &server.nexthop,
            hostname_is_ip: server.tls_host_is_ip,
        };
        let final_before_session = server.final_nexthop && server.last_address;
        let mut via = Via::plain(server.relay.clone());
        via.tls_policy = Some(server.policy.note());
        log_tls_policy(&server.relay, &server.policy);
        // Only the JSON log shows the source address (getsockname).
        if self.settings.log_format == LogFormat::Json {
            via.source = stream.local_addr();
        }
        let age = message_age(request);
        let sasl = self.sasl_for(server);
        // Postfix: never a plaintext retry with SASL credentials for the
        // server (a server that announces AUTH only over TLS would
        // otherwise get the mail unauthenticated, "relay access denied").
        let retry_plain_allowed = !plaintext
            && server.policy.level == Level::May
            && age >= self.config.tls.plaintext_retry_after
            && sasl.is_none();
        let mut starttls = StartTls {
            memory: &self.tls_memory,
            endpoint: &server.endpoint,
            memory_settings: crate::tls_memory::Settings {
                session_cache_timeout: self.config.tls.session_cache_timeout,
                broken_tls_memory: self.config.tls.broken_tls_memory,
            },
            policy: &server.policy,
            peer,
            timeout: settings.timeouts.starttls,
            relay: &server.relay,
            retry_plain_allowed,
            info: None,
            failure: None,
        };
        let mut tls_mode = match server.policy.level {
            _ if plaintext => TlsMode::Off,
            Level::None => TlsMode::Off,
            Level::May => TlsMode::Opportunistic,
            _ => TlsMode::Required,
        };
        if server.wrapper {
            // SMTPS: the same handshake as STARTTLS, before the greeting
            // (wrapper mode needs level encrypt: never a plaintext retry).
            match starttls.handshake(stream) {
                Ok(tls_stream) => {
                    via.tls = starttls.info.as_ref().map(tls_summary);
                    stream = tls_stream;
                    tls_mode = TlsMode::Wrapped;
                }
                Err(refusal) => {
                    self.report_tls(server, &starttls, false, source);
                    outcome::fail_all(
                        &mut job.ledger,
                        &refusal.dsn,
                        final_before_session,
                        Some(&via),
                        &mut job.trouble,
                    );
                    return (Handshake::Failed, false);
                }
            }
        }
        let (indexes, envelope) = pending_envelope(request, &job.ledger);
        let client_settings = self.client_settings(
            request,
            settings,
            &server.display,
            server.loop_check.clone(),
            tls_mode,
            &server.policy,
            sasl,
        );
        let mut client = Client::new(client_settings, envelope, request.facts);
        // A session that will not be cached ends with QUIT behind the dot.
        client.set_quit_after_data(!(self.cache.is_some() && request.cache.store));
        // Postfix also retries in plaintext after a failure inside the TLS
        // session (lost connection, timeout), for old enough mail.
        client.allow_plaintext_fallback(retry_plain_allowed);
        client.set_replace_stray_cr(self.config.smtp.replace_stray_cr);
        client.set_smtputf8_a_labels(self.config.smtp.smtputf8_a_labels);
        let conn = Connection::new(stream, self.config.smtp.reply_length_limit);
        let (conn, end) = session::drive(
            conn,
            &mut client,
            &settings.timeouts,
            request.message,
            settings.line_length_limit,
            &mut starttls,
        );
        if let Some(info) = &starttls.info {
            via.tls = Some(tls_summary(info));
        }
        self.report_tls(server, &starttls, client.starttls_unsupported(), source);
        let now = std::time::Instant::now();
        via.timing = Some(SessionTiming {
            connect: connect_start,
            handshake: client.handshake_at().unwrap_or(now),
            end: now,
        });
        if client.retry_plain() {
            // Recipients the session did settle keep their outcome; the
            // others are retried on the same server in plaintext.
            let final_server = server.final_nexthop && server.last_address;
            let success = SuccessDuty::after_session(
                client.extensions().dsn,
                request.protocol == Protocol::Lmtp && settings.assume_final,
            );
            outcome::apply_session(
                &mut job.ledger,
                &indexes,
                client.into_results(),
                final_server,
                &via,
                success,
                &mut job.trouble,
            );
            return (Handshake::Failed, true);
        }
        let ended = Ended {
            conn,
            end,
            via,
            connected_at,
            uses: 1,
            primed_next: None,
        };
        let handshake =
            self.finish_session(request, settings, server, client, &indexes, ended, job);
        (handshake, false)
    }
}

impl Deliverer {
    /// TLS-RPT: counts the TLS attempt of one session — success when the
    /// handshake completed (the level's checks included), else its
    /// failure's result type, or `starttls-not-supported` when TLS was
    /// required and the server did not offer STARTTLS (or refused it). A
    /// session without any of these made no TLS attempt.
    fn report_tls(
        &self,
        server: &Server,
        starttls: &StartTls<'_>,
        starttls_unsupported: bool,
        source: Option<SocketAddr>,
    ) {
        let Some(tlsrpt) = &self.tlsrpt else {
            return;
        };
        let Endpoint::Inet(addr) = &server.endpoint else {
            return;
        };
        let result = if starttls.info.is_some() {
            None
        } else if let Some(failure) = &starttls.failure {
            match crate::tlsrpt::tls_failure_result(failure) {
                Some(result) => Some(result),
                None => return,
            }
        } else if starttls_unsupported {
            Some(crate::tlsrpt::ResultType::StarttlsNotSupported)
        } else {
            return;
        };
        let session = crate::tlsrpt::Session {
            domain: &server.nexthop,
            mx_host: &server.tls_host,
            receiving_ip: Some(addr.ip()),
            sending_ip: source.map(|s| s.ip()),
        };
        tlsrpt.record_session(starttls.policy, &session, result);
    }
}

/// The TLS handshake of one session, per the destination's policy: the
/// one place where a handshake failure becomes a 4.7.5 refusal (and,
/// for level may on old enough mail, a plaintext retry). Used for
/// STARTTLS and for SMTPS wrapper mode alike.
struct StartTls<'a> {
    /// Sessions to resume, broken TLS to remember.
    memory: &'a TlsMemory,
    endpoint: &'a Endpoint,
    memory_settings: crate::tls_memory::Settings,
    policy: &'a Policy,
    peer: PeerNames<'a>,
    timeout: std::time::Duration,
    relay: &'a str,
    /// Level may and the message is old enough for a plaintext retry.
    retry_plain_allowed: bool,
    info: Option<TlsInfo>,
    /// Why the handshake failed (for TLS-RPT).
    failure: Option<TlsFailure>,
}

impl TlsHandler<Box<dyn Transport>> for StartTls<'_> {
    fn handshake(&mut self, stream: Box<dyn Transport>) -> Result<Box<dyn Transport>, TlsRefusal> {
        let memory = self.memory;
        match memory.handshake(
            stream,
            self.endpoint,
            self.policy,
            &self.peer,
            self.timeout,
            self.memory_settings,
        ) {
            Ok((tls_stream, info, resumed)) => {
                log::info!(
                    "{}",
                    crate::tls_memory::established_line(&info, self.relay, resumed)
                );
                crate::metrics::record_tls(Some((info.trust.word(), &info.version)));
                self.info = Some(info);
                Ok(Box::new(tls_stream))
            }
            Err(failure) => {
                log::warn!("TLS handshake with {}: {failure}", self.relay);
                crate::metrics::record_tls(None);
                let refusal = TlsRefusal {
                    dsn: Dsn::new(dsn::TLS_PROBLEM, failure.dsn_text()),
                    retry_plain: self.retry_plain_allowed
                        && matches!(failure, TlsFailure::Handshake(_)),
                };
                self.failure = Some(failure);
                Err(refusal)
            }
        }
    }
}

/// How long the message has waited (zero without an arrival time).
fn message_age(request: &Request<'_>) -> std::time::Duration {
    request
        .arrival
        .and_then(|arrival| SystemTime::now().duration_since(arrival).ok())
        .unwrap_or_default()
}

/// What a result records of a TLS session.
fn tls_summary(info: &TlsInfo) -> TlsSummary {
    TlsSummary {
        version: info.version.clone(),
        cipher: info.cipher.clone(),
        verified: info.trust == Trust::Verified,
        trust: info.trust.word().to_ascii_lowercase(),
    }
}

/// The recipients still open, as ledger positions and as a session envelope.
fn pending_envelope(request: &Request<'_>, ledger: &Ledger) -> (Vec<usize>, Envelope) {
    let indexes = ledger.pending();
    let envelope = envelope_of(request, &indexes);
    (indexes, envelope)
}

/// The envelope of the recipients at `indexes` (the pending ones).
fn envelope_of(request: &Request<'_>, indexes: &[usize]) -> Envelope {
    // Only the pending recipients are copied (not the whole envelope).
    Envelope {
        sender: request.envelope.sender.clone(),
        recipients: indexes
            .iter()
            .filter_map(|&i| request.envelope.recipients.get(i).cloned())
            .collect(),
        envid: request.envelope.envid.clone(),
        ret: request.envelope.ret,
        smtputf8: request.envelope.smtputf8,
        requiretls: request.envelope.requiretls,
    }
}

/// The TLS policy a fresh session to `relay` runs under: at info when a
/// rule other than the default decided it (policy table, DANE, MTA-STS),
/// else at debug. The JSON results and log lines always carry it.
fn log_tls_policy(relay: &str, policy: &Policy) {
    let level = if policy.source == crate::tls_policy::PolicySource::Default {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{relay}: TLS policy {} from {}: {}",
        policy.level,
        policy.source.name(),
        policy.reason
    );
}

/// MTA-STS "enforce" over a default "dane" level (RFC 8461 section 2):
/// a server with usable TLSA records keeps its DANE policy; one that DANE
/// lets fall back (to "may" or "encrypt") gets the MTA-STS policy instead.
/// Other policies are returned as decided.
fn mta_sts_under_dane(
    policy: &Arc<Policy>,
    decided: Vec<(String, bool, Arc<Policy>)>,
) -> Vec<(String, bool, Arc<Policy>)> {
    if policy.source != PolicySource::MtaSts || policy.level != Level::Verify {
        return decided;
    }
    let mut sts = Policy::clone(policy);
    sts.dane = None;
    let sts = Arc::new(sts);
    decided
        .into_iter()
        .map(|(host, secure, server)| {
            if server.level == Level::Dane {
                (host, secure, server)
            } else {
                (host, secure, Arc::clone(&sts))
            }
        })
        .collect()
}

/// RFC 8689 section 5: a message with `TLS-Required: No` (and no
/// REQUIRETLS) asks that TLS policies be ignored: the level is capped at
/// "may" (Postfix's `tls_required_enable`), so a certificate or DANE
/// failure does not stop it.
fn tls_required_no(policy: Arc<Policy>, request: &Request<'_>) -> Arc<Policy> {
    if !request.facts.tls_required_no || request.envelope.requiretls || policy.level <= Level::May {
        return policy;
    }
    let mut capped = Policy::clone(&policy);
    capped.level = Level::May;
    capped.dane = None;
    capped.tlsa = Vec::new();
    capped.reason = format!("TLS-Required: No header (was {})", policy.level);
    Arc::new(capped)
}

/// How a session ended, for [`Deliverer::finish_session`].
struct Ended {
    conn: Option<Connection<Box<dyn Transport>>>,
    end: RunEnd,
    via: Via,
    connected_at: std::time::Instant,
    uses: u32,
    /// The next job's transaction, started behind this one's data (chain).
    primed_next: Option<reuse::PrimedNext>,
}

/// A connection made by a connect race, and when the race began.
struct Connected {
    stream: Box<dyn Transport>,
    started: std::time::Instant,
}

/// What [`Deliverer::next_group`] found to try next.
enum Group<'c> {
    /// An address with a cached session.
    Cached(&'c Candidate, Box<IdleSession>),
    /// Addresses to connect to, in race order (at least one unless the
    /// list was empty).
    Connect(Vec<&'c Candidate>),
}

/// A connect attempt ended after `elapsed`: debug log (and, later, the
/// connect-time metric).
fn connect_ended(display: &str, elapsed: std::time::Duration, ok: bool) {
    log::debug!(
        "connect to {display}: {} after {} ms",
        if ok { "connected" } else { "failed" },
        elapsed.as_millis()
    );
}

/// A job's state across its destinations and servers.
struct JobState<'c> {
    ledger: Ledger,
    trouble: Trouble,
    /// Endpoints already used through the cache: scrubbed from later lists.
    used: HashSet<Endpoint, foldhash::fast::RandomState>,
    /// The job's next-hop label while its first destination is tried,
    /// until its first good session is stored under it.
    nexthop_label: Option<NexthopLabel>,
    /// This is the job's first destination (next-hop label lookups).
    first_destination: bool,
    /// The worker's hand-over state (see [`crate::chain`]), if any.
    chain: Option<&'c Chain>,
}

/// A TCP destination as parsed, before its addresses are known.
#[derive(Clone, Copy)]
struct InetTarget<'d> {
    destination: &'d Destination,
    host: &'d Host,
    port: u16,
    lookup_mx: bool,
    final_nexthop: bool,
}

/// One TCP destination being tried: what its servers share.
struct Site<'a> {
    /// The destination as written (SASL password lookups).
    dest: &'a str,
    host: &'a Host,
    port: u16,
    final_nexthop: bool,
    best_preference: u32,
    address_limit: usize,
    session_limit: usize,
    /// Port 25 SMTP: the EHLO own-name check.
    loop_detect: bool,
    policy: Arc<Policy>,
    /// Under a DANE policy: each MX host's own policy (by host name and
    /// whether its address records were validated), decided from its TLSA
    /// records before any server was tried.
    server_policies: Vec<(String, bool, Arc<Policy>)>,
    /// SMTPS: TLS before the greeting.
    wrapper: bool,
}

impl Site<'_> {
    fn endpoint(&self, candidate: &Candidate) -> Endpoint {
        Endpoint::Inet(SocketAddr::new(candidate.addr, self.port))
    }

    /// The TLS policy of one candidate: its own under DANE, else the
    /// destination's.
    fn policy_of(&self, candidate: &Candidate) -> Arc<Policy> {
        self.server_policies
            .iter()
            .find(|(host, secure, _)| *host == candidate.host && *secure == candidate.addr_secure)
            .map_or_else(|| Arc::clone(&self.policy), |(_, _, p)| Arc::clone(p))
    }
}

/// One server to try, with its place in the final-server rule.
struct Server {
    /// The destination as written (SASL password lookups, cache labels).
    dest: String,
    endpoint: Endpoint,
    /// `host[addr]` for diagnostics.
    display: String,
    /// `host[addr]:port` for results.
    relay: String,
    final_nexthop: bool,
    /// No further address for this destination (end of list or address limit).
    last_address: bool,
    /// A completed handshake here reaches `mx_session_limit`.
    session_limit_next: bool,
    /// Port 25: the EHLO own-name check.
    loop_check: Option<LoopCheck>,
    /// Host name for SNI and certificate checks (MX name, or the IP text).
    tls_host: String,
    /// `tls_host` is an IP literal, not a name.
    tls_host_is_ip: bool,
    /// Next-hop domain, for certificate checks.
    nexthop: String,
    /// The destination's TLS policy (shared by its servers and jobs).
    policy: Arc<Policy>,
    /// SMTPS: TLS before the greeting.
    wrapper: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    Done,
    Failed,
}

/// Refuses unsafe envelope addresses before any connection: 5.1.7 for the
/// sender (every recipient bounces), 5.1.3 for a recipient.
fn check_envelope(request: &Request<'_>, ledger: &mut Ledger, trouble: &mut Trouble) -> bool {
    if let Err(e) = check_address(&request.envelope.sender) {
        let dsn = Dsn::new(
            dsn::BAD_SENDER_SYNTAX,
            format!("bad sender address syntax: {e}"),
        );
        outcome::fail_all(ledger, &dsn, true, None, trouble);
        return false;
    }
    for (index, rcpt) in request.envelope.recipients.iter().enumerate() {
        if let Err(e) = check_address(&rcpt.address) {
            let dsn = Dsn::new(
                dsn::BAD_RECIPIENT_SYNTAX,
                format!("bad recipient address syntax: {e}"),
            );
            outcome::apply_failure(ledger, index, &dsn, true, None, trouble);
        }
    }
    ledger.left() > 0
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
