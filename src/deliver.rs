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

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, ProtocolSettings};
use crate::connect::{ConnectOptions, Connector, Endpoint, SocketConnector};
use crate::dsn::Dsn;
use crate::nexthop::{Destination, Host, Protocol, ServiceLookup, SystemServices, parse_nexthop};
use crate::outcome::{self, LeftoverContext, Trouble};
use crate::recipients::{Ledger, Settled};
use crate::session::{self, MessageSource, RunEnd};
use crate::smtp::client::{Client, ClientSettings, Envelope, MessageFacts};
use crate::smtp::command::check_address;
use crate::transport::Connection;

/// One server address to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Host name for diagnostics (the IP itself for a literal).
    pub host: String,
    pub addr: IpAddr,
    /// MX preference (0 for literals and implicit MX).
    pub preference: u32,
}

/// Turns a destination host into addresses: the seam where DNS plugs in.
pub trait Resolver: Send + Sync {
    /// `lookup_mx`: the destination is an unbracketed SMTP domain.
    fn resolve(&self, host: &Host, lookup_mx: bool) -> Result<Vec<Candidate>, Dsn>;
}

/// Resolves IP literals only; a name that needs DNS is refused with 4.3.5
/// (DNS resolution is not built yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct LiteralResolver;

impl Resolver for LiteralResolver {
    fn resolve(&self, host: &Host, _lookup_mx: bool) -> Result<Vec<Candidate>, Dsn> {
        match host {
            Host::Ip(addr) => Ok(vec![Candidate {
                host: addr.to_string(),
                addr: *addr,
                preference: 0,
            }]),
            Host::Name(name) => Err(Dsn::simple(
                "4.3.5",
                format!(
                    "cannot resolve {name}: DNS lookups are not supported yet; use an IP address destination such as [192.0.2.1]"
                ),
            )),
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
}

/// Delivers jobs with a configuration and pluggable edges.
pub struct Deliverer {
    config: Config,
    resolver: Box<dyn Resolver>,
    connector: Box<dyn Connector>,
    services: Box<dyn ServiceLookup + Send + Sync>,
}

impl Deliverer {
    /// Real sockets; literal-only resolution.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            resolver: Box::new(LiteralResolver),
            connector: Box::new(SocketConnector),
            services: Box::new(SystemServices),
        }
    }

    pub fn with_resolver(mut self, resolver: Box<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    pub fn with_connector(mut self, connector: Box<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Delivers one request; one outcome per recipient, in envelope order.
    pub fn deliver(&self, request: &Request<'_>) -> (Vec<Settled>, usize) {
        let lmtp = request.protocol == Protocol::Lmtp;
        let settings = self.config.protocol(lmtp);
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
            return ledger.finish();
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
                    &Dsn::simple("4.3.5", e.to_string()),
                    true,
                    None,
                    &mut trouble,
                );
                return ledger.finish();
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
        for (index, destination) in destinations.iter().enumerate() {
            if ledger.left() == 0 {
                break;
            }
            last_index = index;
            let final_nexthop = index + 1 == destinations.len();
            self.try_destination(
                request,
                &settings,
                destination,
                final_nexthop,
                &mut ledger,
                &mut trouble,
            );
        }
        let context = LeftoverContext {
            last_was_fallback_relay: last_index >= primary_count,
            nexthop_is_relayhost: !lmtp
                && !self.config.smtp.relayhost.is_empty()
                && destinations.first().map(Destination::text)
                    == Some(self.config.smtp.relayhost.as_str()),
        };
        outcome::settle_leftovers(&mut ledger, &trouble, context);
        ledger.finish()
    }

    fn try_destination(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        destination: &Destination,
        final_nexthop: bool,
        ledger: &mut Ledger,
        trouble: &mut Trouble,
    ) {
        match destination {
            Destination::Unix { path, .. } => {
                let display = format!("{}[{}]", self.config.myhostname(), path.display());
                let server = Server {
                    endpoint: Endpoint::Unix(path.clone()),
                    relay: display.clone(),
                    display,
                    final_nexthop: true,
                    last_address: true,
                    session_limit_next: false,
                };
                self.try_server(request, settings, &server, ledger, trouble);
            }
            Destination::Inet {
                host,
                port,
                lookup_mx,
                ..
            } => {
                let candidates = match self.resolver.resolve(host, *lookup_mx) {
                    Ok(list) => list,
                    Err(dsn) => {
                        log::info!("{}", dsn.text);
                        trouble.record(&dsn);
                        return;
                    }
                };
                let address_limit =
                    usize::try_from(settings.mx_address_limit).unwrap_or(usize::MAX);
                let session_limit =
                    usize::try_from(settings.mx_session_limit).unwrap_or(usize::MAX);
                let mut sessions = 0usize;
                for (count, candidate) in candidates.iter().enumerate() {
                    if ledger.left() == 0 {
                        break;
                    }
                    let last_address = count + 1 == candidates.len()
                        || (address_limit > 0 && count + 1 >= address_limit);
                    let display = format!("{}[{}]", candidate.host, candidate.addr);
                    let server = Server {
                        endpoint: Endpoint::Inet(SocketAddr::new(candidate.addr, *port)),
                        relay: format!("{display}:{port}"),
                        display,
                        final_nexthop,
                        last_address,
                        session_limit_next: session_limit > 0 && sessions + 1 >= session_limit,
                    };
                    let handshake = self.try_server(request, settings, &server, ledger, trouble);
                    if handshake == Handshake::Done {
                        sessions += 1;
                    }
                    if last_address || (handshake == Handshake::Done && server.session_limit_next) {
                        break;
                    }
                }
            }
        }
    }

    /// Connects and runs one session on one server.
    fn try_server(
        &self,
        request: &Request<'_>,
        settings: &ProtocolSettings,
        server: &Server,
        ledger: &mut Ledger,
        trouble: &mut Trouble,
    ) -> Handshake {
        let options = ConnectOptions {
            timeout: settings.timeouts.connect,
            bind_address: settings.bind_address,
            bind_address6: settings.bind_address6,
            bind_address_enforce: settings.bind_address_enforce,
        };
        let stream = match self
            .connector
            .connect(&server.endpoint, &server.display, &options)
        {
            Ok(stream) => stream,
            Err(dsn) => {
                log::info!("{}", dsn.text);
                trouble.record(&dsn);
                return Handshake::Failed;
            }
        };
        let indexes = ledger.pending();
        let envelope = Envelope {
            recipients: indexes
                .iter()
                .filter_map(|&i| request.envelope.recipients.get(i).cloned())
                .collect(),
            ..request.envelope.clone()
        };
        let client_settings = ClientSettings {
            lmtp: request.protocol == Protocol::Lmtp,
            helo_name: settings.helo_name.clone(),
            skip_5xx_greeting: settings.skip_5xx_greeting,
            peer: server.display.clone(),
            smtputf8_enable: self.config.smtp.smtputf8_enable,
            loop_check: None,
        };
        let mut client = Client::new(client_settings, envelope, request.facts);
        let mut conn = Connection::new(stream, self.config.smtp.reply_length_limit);
        let end = session::run(
            &mut conn,
            &mut client,
            &settings.timeouts,
            request.message,
            settings.line_length_limit,
        );
        if end == RunEnd::Idle {
            session::close(&mut conn, &mut client, &settings.timeouts);
        }
        let handshake = if client.handshake_done() {
            Handshake::Done
        } else {
            Handshake::Failed
        };
        // Postfix: a session past the handshake counts towards
        // mx_session_limit, and reaching it makes this the final server.
        let final_server = server.final_nexthop
            && (server.last_address || (handshake == Handshake::Done && server.session_limit_next));
        outcome::apply_session(
            ledger,
            &indexes,
            client.into_results(),
            final_server,
            &server.relay,
            trouble,
        );
        handshake
    }
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
        let dsn = Dsn::simple("5.1.7", format!("bad sender address syntax: {e}"));
        outcome::fail_all(ledger, &dsn, true, None, trouble);
        return false;
    }
    for (index, rcpt) in request.envelope.recipients.iter().enumerate() {
        if let Err(e) = check_address(&rcpt.address) {
            let dsn = Dsn::simple("5.1.3", format!("bad recipient address syntax: {e}"));
            outcome::apply_failure(ledger, index, &dsn, true, None, trouble);
        }
    }
    ledger.left() > 0
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
