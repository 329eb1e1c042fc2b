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

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cache::{EndpointLabel, IdleSession, NexthopLabel, SessionCache};
use crate::chain;
use crate::config::{Config, InetProtocols, ProtocolSettings};
use crate::connect::{ConnectOptions, Connector, Endpoint, SocketConnector};
use crate::dns::stub::{StubResolver, StubSettings, system_nameservers};
use crate::dns::{DnsError, DnsLookup};
use crate::dsn::{self, Dsn};
use crate::interfaces::OwnAddresses;
use crate::mxlist::Candidate;
use crate::nexthop::{Destination, Protocol, ServiceLookup, SystemServices, parse_nexthop};
use crate::outcome::{self, LeftoverContext, Trouble, Via};
use crate::recipients::{Ledger, Settled};
use crate::recipients::{SessionTiming, TlsSummary};
use crate::resolve::{DnsResolver, NoDns, ResolveMode, Resolver};
use crate::session::{self, MessageSource, RunEnd, TlsHandler, TlsRefusal};
use crate::smtp::client::{Client, ClientSettings, Envelope, LoopCheck, MessageFacts, TlsMode};
use crate::smtp::command;
use crate::smtp::command::check_address;
use crate::smtp::ehlo::Extensions;
use crate::tls::{self, PeerNames, TlsFailure, TlsInfo, Trust};
use crate::tls_policy::{self, Level, Policy};
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
    /// The next-hop list as written (`[127.0.0.1]:2525`, `unix:/path`, ...).
    pub nexthop: &'a str,
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
    let mut nameservers = config.dns.parsed_nameservers().unwrap_or_default();
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
    };
    StubResolver::new(settings)
}

/// Delivers jobs with a configuration and pluggable edges.
pub struct Deliverer {
    config: Config,
    /// `config.protocol(false)` and `config.protocol(true)`, made once.
    smtp_settings: ProtocolSettings,
    lmtp_settings: ProtocolSettings,
    /// The TLS policy of destinations without a policy table entry
    /// (`[TCP, UNIX socket]`), made once instead of for every delivery.
    default_tls: [Result<Arc<Policy>, tls_policy::PolicyError>; 2],
    resolver: Box<dyn Resolver>,
    connector: Box<dyn Connector>,
    services: Box<dyn ServiceLookup + Send + Sync>,
    own: OwnAddresses,
    cache: Option<Arc<SessionCache>>,
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
        let families = config.dns.parsed_inet_protocols().unwrap_or(InetProtocols {
            ipv4: true,
            ipv6: true,
        });
        let own = OwnAddresses::from_config(
            &config.smtp.inet_interfaces,
            &config.smtp.proxy_interfaces,
            families.ipv4,
            families.ipv6,
        );
        let resolver = DnsResolver::new(dns, &config, &own);
        Self {
            own,
            smtp_settings: config.protocol(false),
            lmtp_settings: config.protocol(true),
            default_tls: [false, true]
                .map(|unix| tls_policy::policy_for(&config.tls, "", unix).map(Arc::new)),
            config,
            resolver: Box::new(resolver),
            connector: Box::new(SocketConnector),
            services: Box::new(SystemServices),
            cache: None,
        }
    }

    pub fn with_resolver(mut self, resolver: Box<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Shares idle sessions with other deliverers (the daemon's workers).
    pub fn with_cache(mut self, cache: Arc<SessionCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&Arc<SessionCache>> {
        self.cache.as_ref()
    }

    pub fn with_connector(mut self, connector: Box<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Delivers one request; one outcome per recipient, in envelope order.
    pub fn deliver(&self, request: &Request<'_>) -> Delivery {
        let lmtp = request.protocol == Protocol::Lmtp;
        let settings = if lmtp {
            &self.lmtp_settings
        } else {
            &self.smtp_settings
        };
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
        let mut destinations = match parse_nexthop(
            request.nexthop,
            request.protocol,
            settings.port,
            self.services.as_ref(),
        ) {
            Ok(list) => list,
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
        let primary_count = destinations.len();
        let first_is_unix = matches!(destinations.first(), Some(Destination::Unix { .. }));
        if first_is_unix {
            if destinations.len() > 1 || !settings.fallback_relay.is_empty() {
                log::warn!(
                    "UNIX-domain destination {}: fallback destinations are ignored",
                    request.nexthop
                );
            }
            destinations.truncate(1);
        } else {
            for relay in &settings.fallback_relay {
                match parse_nexthop(
                    relay,
                    request.protocol,
                    settings.port,
                    self.services.as_ref(),
                ) {
                    Ok(list) => destinations.extend(list),
                    Err(e) => log::warn!("fallback_relay: {e}; ignored"),
                }
            }
        }
        let mut last_index = 0;
        let mut job = JobState {
            ledger,
            trouble,
            used: HashSet::default(),
            nexthop_stored: false,
            first_destination: true,
        };
        for (index, destination) in destinations.iter().enumerate() {
            if job.ledger.left() == 0 {
                break;
            }
            last_index = index;
            job.first_destination = index == 0;
            let final_nexthop = index + 1 == destinations.len();
            let was_final =
                self.try_destination(request, settings, destination, final_nexthop, &mut job);
            if was_final {
                break;
            }
        }
        let context = LeftoverContext {
            last_was_fallback_relay: last_index >= primary_count,
            nexthop_is_relayhost: !lmtp
                && !self.config.smtp.relayhost.is_empty()
                && destinations.first().map(Destination::text)
                    == Some(self.config.smtp.relayhost.as_str()),
        };
        outcome::settle_leftovers(&mut job.ledger, &job.trouble, context);
        Delivery::new(job.ledger, job.trouble)
    }

    /// Tries every server of one destination; returns true when this
    /// destination turned out to be final (we are its MX, or mail loops).
    fn try_destination(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        destination: &Destination,
        final_nexthop: bool,
        job: &mut JobState,
    ) -> bool {
        let unix = matches!(destination, Destination::Unix { .. });
        let looked_up = match tls_policy::find_entry(&self.config.tls.policy, destination.text()) {
            Some(_) => {
                tls_policy::policy_for(&self.config.tls, destination.text(), unix).map(Arc::new)
            }
            None => self.default_tls[usize::from(unix)].clone(),
        };
        let policy = match looked_up {
            Ok(policy) => policy,
            Err(e) => {
                log::warn!("TLS policy lookup for {}: {e}", destination.text());
                job.trouble.record(&Dsn::new(
                    dsn::TLS_PROBLEM,
                    "client TLS configuration problem",
                ));
                return false;
            }
        };
        let (host, port, lookup_mx) = match destination {
            Destination::Unix { path, .. } => {
                let display = format!("{}[{}]", self.config.myhostname(), path.display());
                let server = Server {
                    endpoint: Endpoint::Unix(path.clone()),
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
                };
                let cached = match &self.cache {
                    Some(cache) if request.cache.load => {
                        let label = self.endpoint_label(
                            request,
                            settings,
                            &server.endpoint,
                            &server.policy,
                            &server.tls_host,
                        );
                        // A session handed over by the previous job (chain).
                        handed_session(request, &job.ledger, |s| s.endpoint == label)
                            .or_else(|| cache.take_by_endpoint(&label))
                    }
                    _ => None,
                };
                let reused = cached
                    .and_then(|idle| self.reuse_session(request, settings, &server, idle, job));
                if reused.is_none() {
                    self.try_server(request, settings, &server, job);
                }
                return true;
            }
            Destination::Inet {
                host,
                port,
                lookup_mx,
                ..
            } => (host, *port, *lookup_mx),
        };
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
            return false;
        }
        let mode = ResolveMode {
            lookup_mx: smtp && lookup_mx && self.config.dns.support != "disabled",
            loop_detect: smtp && port == 25,
        };
        let route = match self.resolver.resolve(host, mode) {
            Ok(route) => route,
            Err(error) => {
                log::info!("{error}");
                job.trouble.record(&error.dsn());
                // Don't try fallback relays when mail loops back to us.
                return error.makes_nexthop_final();
            }
        };
        let final_nexthop = final_nexthop || route.i_am_mx;
        let best_preference = route.candidates.first().map_or(0, |c| c.preference);
        let address_limit = usize::try_from(settings.mx_address_limit).unwrap_or(usize::MAX);
        let session_limit = usize::try_from(settings.mx_session_limit).unwrap_or(usize::MAX);
        let mut sessions = 0usize;
        // Addresses already used through the cache in this job are scrubbed.
        let candidates: Vec<&Candidate> = route
            .candidates
            .iter()
            .filter(|c| {
                !job.used
                    .contains(&Endpoint::Inet(SocketAddr::new(c.addr, port)))
            })
            .collect();
        let make_server = |candidate: &Candidate, count: usize, total: usize, sessions: usize| {
            let last_address =
                count + 1 >= total || (address_limit > 0 && count + 1 >= address_limit);
            // host[addr] and host[addr]:port, built without core::fmt.
            let mut relay = String::with_capacity(candidate.host.len() + 24);
            relay.push_str(&candidate.host);
            relay.push('[');
            crate::text::push_ip(&mut relay, candidate.addr);
            relay.push(']');
            let display = relay.clone();
            relay.push(':');
            crate::text::push_u64(&mut relay, u64::from(port));
            Server {
                endpoint: Endpoint::Inet(SocketAddr::new(candidate.addr, port)),
                relay,
                display,
                tls_host: candidate.host.clone(),
                tls_host_is_ip: candidate.host_is_ip,
                nexthop: host.text(),
                final_nexthop,
                last_address,
                session_limit_next: session_limit > 0 && sessions + 1 >= session_limit,
                loop_check: mode.loop_detect.then(|| LoopCheck {
                    my_names: vec![settings.helo_name.clone(), self.config.myhostname()],
                    nexthop: host.text(),
                    best_mx: candidate.preference == best_preference,
                }),
                policy: Arc::clone(&policy),
                wrapper,
            }
        };
        // Postfix's smtp_reuse_session: a session cached under the job's
        // next-hop label, then sessions to best-preference addresses.
        let mut queue: Vec<(&Candidate, Option<IdleSession>)> =
            Vec::with_capacity(candidates.len());
        let load = request.cache.load && self.cache.is_some();
        if load && let Some(cache) = &self.cache {
            let mut rest = Vec::new();
            // A session handed over by the previous job with this job's
            // transaction in flight (chain), else Postfix's lookups.
            let lmtp = request.protocol == Protocol::Lmtp;
            let handed = handed_session(request, &job.ledger, |s| {
                s.endpoint.lmtp == lmtp
                    && s.endpoint.tls_level == policy.level
                    && s.endpoint.helo_name == settings.helo_name
            });
            let by_nexthop = if handed.is_some() {
                handed
            } else if job.first_destination {
                cache.take_by_nexthop(&self.nexthop_label(request, destination, &policy, settings))
            } else {
                None
            };
            let mut by_nexthop = by_nexthop;
            for candidate in &candidates {
                let endpoint = Endpoint::Inet(SocketAddr::new(candidate.addr, port));
                if let Some(idle) = by_nexthop.take_if(|idle| idle.endpoint.endpoint == endpoint) {
                    queue.push((*candidate, Some(idle)));
                } else if candidate.preference == best_preference {
                    let label =
                        self.endpoint_label(request, settings, &endpoint, &policy, &candidate.host);
                    let idle = cache.take_by_endpoint(&label);
                    if idle.is_some() {
                        queue.push((*candidate, idle));
                    } else {
                        rest.push((*candidate, None));
                    }
                } else {
                    rest.push((*candidate, None));
                }
            }
            // A next-hop session to an address no longer in the list: close it.
            drop(by_nexthop);
            queue.extend(rest);
        } else {
            queue.extend(candidates.iter().map(|c| (*c, None)));
        }
        let total = queue.len();
        for (count, (candidate, cached)) in queue.into_iter().enumerate() {
            if job.ledger.left() == 0 {
                break;
            }
            let server = make_server(candidate, count, total, sessions);
            // Backup MX: look in the cache before connecting.
            let cached = match cached {
                Some(idle) => Some(idle),
                None if load && candidate.preference != best_preference => {
                    self.cache.as_ref().and_then(|cache| {
                        cache.take_by_endpoint(&self.endpoint_label(
                            request,
                            settings,
                            &server.endpoint,
                            &policy,
                            &candidate.host,
                        ))
                    })
                }
                None => None,
            };
            let handshake = match cached {
                Some(idle) => {
                    job.used.insert(server.endpoint.clone());
                    match self.reuse_session(request, settings, &server, idle, job) {
                        Some(handshake) => handshake,
                        None => self.try_server(request, settings, &server, job),
                    }
                }
                None => self.try_server(request, settings, &server, job),
            };
            if handshake == Handshake::Done {
                sessions += 1;
            }
            if server.last_address || (handshake == Handshake::Done && server.session_limit_next) {
                break;
            }
        }
        route.i_am_mx
    }

    /// The label of an endpoint for cache lookups and stores: a session is
    /// only reused with the same TLS level and verified identity.
    fn endpoint_label(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        endpoint: &Endpoint,
        policy: &Policy,
        tls_host: &str,
    ) -> EndpointLabel {
        EndpointLabel {
            lmtp: request.protocol == Protocol::Lmtp,
            endpoint: endpoint.clone(),
            tls_level: policy.level,
            verified_identity: if policy.level >= Level::Fingerprint {
                tls_host.to_ascii_lowercase()
            } else {
                String::new()
            },
            helo_name: settings.helo_name.clone(),
        }
    }

    fn nexthop_label(
        &self,
        request: &Request<'_>,
        destination: &Destination,
        policy: &Policy,
        settings: &ProtocolSettings,
    ) -> NexthopLabel {
        NexthopLabel {
            lmtp: request.protocol == Protocol::Lmtp,
            nexthop: destination.text().to_ascii_lowercase(),
            tls_level: policy.level,
            helo_name: settings.helo_name.clone(),
            smtputf8: request.envelope.needs_smtputf8(),
        }
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
        job: &mut JobState,
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
        let source = if self.config.log.format == "json" {
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
                let client_settings =
                    self.client_settings(request, settings, &display, None, TlsMode::Off);
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
        let needs_smtputf8 = request.envelope.needs_smtputf8();
        let mut follow = || -> Option<Vec<u8>> {
            follower_parts.as_ref()?;
            let (ticket, follower) = chain::take_follower(request.nexthop, request.protocol)?;
            if follower.envelope.needs_smtputf8() != needs_smtputf8 {
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
            match next.next_action() {
                crate::smtp::client::Action::Send { bytes, .. } => {
                    chain::set_primed(ticket, follower.message_digest, next);
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
        let primed_next = chain::take_primed();
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

    fn client_settings(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        peer: &str,
        loop_check: Option<LoopCheck>,
        tls: TlsMode,
    ) -> ClientSettings {
        ClientSettings {
            lmtp: request.protocol == Protocol::Lmtp,
            helo_name: settings.helo_name.clone(),
            skip_5xx_greeting: settings.skip_5xx_greeting,
            peer: peer.to_string(),
            smtputf8_enable: self.config.smtp.smtputf8_enable,
            loop_check,
            tls,
            strict_reply_syntax: self.config.smtp.strict_reply_syntax,
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
        job: &mut JobState,
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
        outcome::apply_session(
            &mut job.ledger,
            indexes,
            client.into_results(),
            final_server,
            &ended.via,
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
        primed_next: Option<(u64, u64, Client)>,
        job: &mut JobState,
    ) {
        let Some(mut conn) = conn else { return };
        if end != RunEnd::Idle {
            return;
        }
        let tls_ok = via.tls.is_none() || self.config.tls.connection_reuse;
        let cache = self
            .cache
            .as_ref()
            .filter(|_| request.cache.store && reusable && tls_ok);
        let Some(cache) = cache else {
            if primed_next.is_none() {
                // QUIT without waiting for the reply (smtp_skip_quit_response).
                let _ = conn.send(command::QUIT, settings.timeouts.quit);
            }
            // With the next job's commands on the wire, only closing is
            // safe (no QUIT: its DATA may have been answered).
            return;
        };
        let endpoint = self.endpoint_label(
            request,
            settings,
            &server.endpoint,
            &server.policy,
            &server.tls_host,
        );
        let mut session = IdleSession {
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
        if let Some((ticket, message_digest, next)) = primed_next {
            // The next job's transaction is in flight: the session goes to
            // that job instead of the cache (if the cache would keep it),
            // only while every unread byte can still be a reply to a
            // command it has sent (else its replies are out of step).
            let in_step = session
                .conn
                .buffered_replies()
                .is_some_and(|replies| replies <= next.awaiting_replies());
            if !in_step {
                log::info!(
                    "{}: unread replies do not fit the chained transaction; closing",
                    server.relay
                );
                return;
            }
            session.primed = Some(Box::new(next));
            if cache.reusable(&session) {
                cache.count_chained();
                chain::hand_over(ticket, message_digest, session);
            }
            return;
        }
        let nexthop = (job.first_destination && !job.nexthop_stored).then(|| {
            job.nexthop_stored = true;
            NexthopLabel {
                lmtp: request.protocol == Protocol::Lmtp,
                nexthop: request
                    .nexthop
                    .split([',', ' ', '\t'])
                    .find(|s| !s.is_empty())
                    .unwrap_or(request.nexthop)
                    .to_ascii_lowercase(),
                tls_level: server.policy.level,
                helo_name: settings.helo_name.clone(),
                smtputf8: request.envelope.needs_smtputf8(),
            }
        });
        cache.store(session, nexthop);
    }

    /// Runs one server; after a failed opportunistic TLS handshake on old
    /// enough mail, once more in plaintext (Postfix's retry_plain).
    fn try_server(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        job: &mut JobState,
    ) -> Handshake {
        let (handshake, retry_plain) = self.session_once(request, settings, server, false, job);
        if !retry_plain {
            return handshake;
        }
        log::info!(
            "{}: TLS handshake failed; trying again without TLS",
            server.relay
        );
        self.session_once(request, settings, server, true, job).0
    }

    /// Connects and runs one session on one server. Returns whether the
    /// handshake completed, and whether a plaintext retry is due.
    fn session_once(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        plaintext: bool,
        job: &mut JobState,
    ) -> (Handshake, bool) {
        let options = ConnectOptions {
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
        };
        let connect_start = std::time::Instant::now();
        let mut stream = match self
            .connector
            .connect(&server.endpoint, &server.display, &options)
        {
            Ok(stream) => stream,
            Err(dsn) => {
                log::info!("{}", dsn.text);
                job.trouble.record(&dsn);
                return (Handshake::Failed, false);
            }
        };
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
        // Only the JSON log shows the source address (getsockname).
        if self.config.log.format == "json" {
            via.source = stream.local_addr();
        }
        let mut tls_mode = match server.policy.level {
            _ if plaintext => TlsMode::Off,
            Level::None => TlsMode::Off,
            Level::May => TlsMode::Opportunistic,
            _ => TlsMode::Required,
        };
        if server.wrapper {
            match tls::handshake(stream, &server.policy, &peer, settings.timeouts.starttls) {
                Ok((tls_stream, info)) => {
                    log::info!("{}", info.established_line(&server.relay));
                    via.tls = Some(tls_summary(&info));
                    stream = Box::new(tls_stream);
                    tls_mode = TlsMode::Wrapped;
                }
                Err(failure) => {
                    log::warn!("TLS handshake with {}: {failure}", server.relay);
                    let dsn = Dsn::new(dsn::TLS_PROBLEM, failure.dsn_text());
                    outcome::fail_all(
                        &mut job.ledger,
                        &dsn,
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
        );
        let age = request
            .arrival
            .and_then(|arrival| SystemTime::now().duration_since(arrival).ok())
            .unwrap_or_default();
        let retry_plain_allowed = !plaintext
            && server.policy.level == Level::May
            && age >= self.config.tls.plaintext_retry_after;
        let mut client = Client::new(client_settings, envelope, request.facts);
        // A session that will not be cached ends with QUIT behind the dot.
        client.set_quit_after_data(!(self.cache.is_some() && request.cache.store));
        // Postfix also retries in plaintext after a failure inside the TLS
        // session (lost connection, timeout), for old enough mail.
        client.allow_plaintext_fallback(retry_plain_allowed);
        let mut starttls = StartTls {
            policy: &server.policy,
            peer,
            timeout: settings.timeouts.starttls,
            relay: &server.relay,
            retry_plain_allowed,
            info: None,
        };
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
            outcome::apply_session(
                &mut job.ledger,
                &indexes,
                client.into_results(),
                final_server,
                &via,
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

/// The STARTTLS handshake of one session, per the destination's policy.
struct StartTls<'a> {
    policy: &'a Policy,
    peer: PeerNames<'a>,
    timeout: std::time::Duration,
    relay: &'a str,
    /// Level may and the message is old enough for a plaintext retry.
    retry_plain_allowed: bool,
    info: Option<TlsInfo>,
}

impl TlsHandler<Box<dyn Transport>> for StartTls<'_> {
    fn handshake(&mut self, stream: Box<dyn Transport>) -> Result<Box<dyn Transport>, TlsRefusal> {
        match tls::handshake(stream, self.policy, &self.peer, self.timeout) {
            Ok((tls_stream, info)) => {
                log::info!("{}", info.established_line(self.relay));
                self.info = Some(info);
                Ok(Box::new(tls_stream))
            }
            Err(failure) => {
                log::warn!("TLS handshake with {}: {failure}", self.relay);
                Err(TlsRefusal {
                    dsn: Dsn::new(dsn::TLS_PROBLEM, failure.dsn_text()),
                    retry_plain: self.retry_plain_allowed
                        && matches!(failure, TlsFailure::Handshake(_)),
                })
            }
        }
    }
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

/// The session handed over to this job by the previous one (see
/// [`crate::chain`]), when `wanted` accepts it and the transaction started
/// on it is exactly this job's: the same sender, recipients (the pending
/// ones), parameters and message.
fn handed_session(
    request: &Request<'_>,
    ledger: &Ledger,
    wanted: impl FnOnce(&IdleSession) -> bool,
) -> Option<IdleSession> {
    let digest = request.message.in_memory().map(chain::message_digest)?;
    chain::take_handed(|session, message_digest| {
        let Some(primed) = session.primed.as_deref() else {
            return false;
        };
        let fits = message_digest == digest
            && primed.facts() == request.facts
            && *primed.envelope() == envelope_of(request, &ledger.pending());
        if !fits {
            log::warn!("a chained session does not fit the job it was handed to; not used");
        }
        fits && wanted(session)
    })
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
    }
}

/// How a session ended, for [`Deliverer::finish_session`].
struct Ended {
    conn: Option<Connection<Box<dyn Transport>>>,
    end: RunEnd,
    via: Via,
    connected_at: std::time::Instant,
    uses: u32,
    /// The next job's transaction, started behind this one's data (chain):
    /// its ticket, its message's digest, its client.
    primed_next: Option<(u64, u64, Client)>,
}

/// A job's state across its destinations and servers.
struct JobState {
    ledger: Ledger,
    trouble: Trouble,
    /// Endpoints already used through the cache: scrubbed from later lists.
    used: HashSet<Endpoint, foldhash::fast::RandomState>,
    /// The job's first good session was stored under the next-hop label.
    nexthop_stored: bool,
    /// This is the job's first destination (next-hop label lookups).
    first_destination: bool,
}

/// One server to try, with its place in the final-server rule.
struct Server {
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
