//! The delivery loop with scripted servers behind a fake connector and a
//! fake resolver: which server is tried next, the address and session limits,
//! the final-server rule, fallback relays and the leftover rules.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::message::Message;
use crate::mxlist::{Route, RouteError};
use crate::nexthop::Host;
use crate::recipients::Status;
use crate::resolve::LiteralResolver;
use crate::smtp::client::Recipient;
use crate::smtp::command::Notify;
use crate::transport::Transport;
use crate::transport::script::{Scripted, Step, say};

/// Per-address behaviour: refuse the connection, drop SYNs (a connect
/// times out; in a race it stays pending), or play a script.
#[derive(Clone)]
enum Peer {
    Refuse,
    Blackhole,
    Script(Vec<Step>),
}

#[derive(Default)]
struct FakeNet {
    peers: HashMap<IpAddr, Peer>,
    connects: Mutex<Vec<IpAddr>>,
    /// The targets of each connect race, in race order.
    races: Mutex<Vec<Vec<IpAddr>>>,
}

impl Connector for &'static FakeNet {
    fn connect(
        &self,
        endpoint: &Endpoint,
        display: &str,
        _: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, Dsn> {
        let Endpoint::Inet(addr) = endpoint else {
            return Err(Dsn::new(
                crate::dsn::CONNECT_FAILED,
                format!("connect to {display}: unsupported"),
            ));
        };
        if let Ok(mut log) = self.connects.lock() {
            log.push(addr.ip());
        }
        match self.peers.get(&addr.ip()) {
            Some(Peer::Script(steps)) => Ok(Box::new(Scripted::new(steps.clone()))),
            Some(Peer::Blackhole) => Err(Dsn::new(
                crate::dsn::CONNECT_FAILED,
                format!("connect to {display}:{}: Connection timed out", addr.port()),
            )),
            _ => Err(Dsn::new(
                crate::dsn::CONNECT_FAILED,
                format!("connect to {display}:{}: Connection refused", addr.port()),
            )),
        }
    }

    /// A race as the real one runs it when a blackholed address is
    /// pending: the next target starts, the first that connects wins and
    /// the pending ones are abandoned; with no winner they time out.
    fn race(
        &self,
        targets: &[crate::connect::RaceTarget<'_>],
        options: &ConnectOptions,
        _delay: std::time::Duration,
    ) -> Race {
        let ips: Vec<IpAddr> = targets
            .iter()
            .filter_map(|t| match t.endpoint {
                Endpoint::Inet(addr) => Some(addr.ip()),
                Endpoint::Unix(_) => None,
            })
            .collect();
        self.races.lock().unwrap().push(ips.clone());
        let mut race = Race::default();
        let mut holes = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            race.started = index + 1;
            if matches!(
                ips.get(index).and_then(|ip| self.peers.get(ip)),
                Some(Peer::Blackhole)
            ) {
                self.connects.lock().unwrap().push(ips[index]);
                holes.push(index);
                continue;
            }
            let result = self.connect_attempt(target.endpoint, target.display, options);
            match result {
                Ok(stream) => {
                    race.attempts.push(crate::connect::Attempt {
                        index,
                        elapsed: std::time::Duration::ZERO,
                        result: Ok(()),
                    });
                    race.winner = Some((index, stream));
                    return race;
                }
                Err(failure) => race.attempts.push(crate::connect::Attempt {
                    index,
                    elapsed: std::time::Duration::ZERO,
                    result: Err(failure),
                }),
            }
        }
        for index in holes {
            let target = &targets[index];
            let Endpoint::Inet(addr) = target.endpoint else {
                continue;
            };
            race.attempts.push(crate::connect::Attempt {
                index,
                elapsed: options.timeout,
                result: Err(crate::connect::ConnectFailure::from_dsn(Dsn::new(
                    crate::dsn::CONNECT_FAILED,
                    format!(
                        "connect to {}:{}: Connection timed out",
                        target.display,
                        addr.port()
                    ),
                ))),
            });
        }
        race
    }
}

/// A resolver that answers every name with one fixed list.
struct FixedRoute(Vec<Candidate>);

impl Resolver for FixedRoute {
    fn resolve(&self, _: &Host, _: ResolveMode) -> Result<Route, RouteError> {
        Ok(Route {
            mx_secure: None,
            candidates: self.0.clone(),
            i_am_mx: false,
            best_preference: self.0.first().map_or(0, |c| c.preference),
        })
    }
}

/// An MX candidate `mxN.y.test` at `addr` with `preference`.
fn mx(n: u8, addr: &str, preference: u32) -> Candidate {
    Candidate {
        canonical: None,
        addr_secure: false,
        host: format!("mx{n}.y.test"),
        addr: addr.parse().unwrap(),
        preference,
        host_is_ip: false,
    }
}

/// Names resolve to fixed address lists; IP literals to themselves.
struct FakeDns(HashMap<String, Result<Vec<Ipv4Addr>, RouteError>>);

impl Resolver for FakeDns {
    fn resolve(&self, host: &Host, mode: ResolveMode) -> Result<Route, RouteError> {
        match host {
            Host::Ip(addr) => LiteralResolver.resolve(&Host::Ip(*addr), mode),
            Host::Name(name) => match self.0.get(name) {
                Some(Ok(addrs)) => Ok(Route {
                    mx_secure: None,
                    candidates: addrs
                        .iter()
                        .enumerate()
                        .map(|(i, a)| Candidate {
                            canonical: None,
                            addr_secure: false,
                            host: format!("mx{i}.{name}"),
                            addr: IpAddr::V4(*a),
                            preference: u32::try_from(i).unwrap_or(0) * 10,
                            host_is_ip: false,
                        })
                        .collect(),
                    i_am_mx: false,
                    best_preference: 0,
                }),
                Some(Err(error)) => Err(error.clone()),
                None => Err(RouteError::NameService {
                    status: crate::dsn::HOST_NOT_FOUND,
                    text: format!(
                        "Host or domain name not found. Name service error for name={name} type=A: Host not found"
                    ),
                }),
            },
        }
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn session(rcpts: usize, rcpt_reply: &str, data_reply: &str, dot_reply: Option<&str>) -> Peer {
    let mut lines = vec![
        "220 ok ESMTP\r\n".to_string(),
        "250-ok\r\n250 PIPELINING\r\n".to_string(),
        "250 2.1.0 Ok\r\n".to_string(),
    ];
    lines.extend((0..rcpts).map(|_| rcpt_reply.to_string()));
    lines.push(data_reply.to_string());
    lines.extend(dot_reply.map(str::to_string));
    Peer::Script(lines.iter().map(|l| say(l)).collect())
}

fn good(rcpts: usize) -> Peer {
    session(
        rcpts,
        "250 2.1.5 Ok\r\n",
        "354 go\r\n",
        Some("250 2.0.0 Ok\r\n"),
    )
}

fn rcpt_soft(rcpts: usize) -> Peer {
    session(
        rcpts,
        "450 4.2.0 busy\r\n",
        "554 5.5.1 no valid recipients\r\n",
        None,
    )
}

fn rcpt_hard(rcpts: usize) -> Peer {
    session(
        rcpts,
        "550 5.1.1 no such user\r\n",
        "554 5.5.1 no valid recipients\r\n",
        None,
    )
}

const GREET_SOFT: &[&str] = &["421 4.3.2 not now\r\n"];

fn script(lines: &[&str]) -> Peer {
    Peer::Script(lines.iter().map(|l| say(l)).collect())
}

fn net(peers: Vec<(u8, Peer)>) -> &'static FakeNet {
    net_at(peers.into_iter().map(|(n, p)| (ip(n), p)).collect())
}

fn net_at(peers: Vec<(IpAddr, Peer)>) -> &'static FakeNet {
    let net = FakeNet {
        peers: peers.into_iter().collect(),
        ..FakeNet::default()
    };
    Box::leak(Box::new(net))
}

fn config(toml: &str) -> Config {
    match Config::from_toml_str(toml) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}"),
    }
}

fn run(
    cfg: Config,
    dns: FakeDns,
    net: &'static FakeNet,
    nexthop: &str,
    rcpts: &[&str],
) -> Vec<(Status, String, String, Option<String>)> {
    run_from(cfg, dns, net, nexthop, "s@x.test", rcpts)
}

fn run_from(
    cfg: Config,
    dns: FakeDns,
    net: &'static FakeNet,
    nexthop: &str,
    sender: &str,
    rcpts: &[&str],
) -> Vec<(Status, String, String, Option<String>)> {
    let deliverer = Deliverer::new(cfg)
        .with_resolver(Box::new(dns))
        .with_connector(Box::new(net));
    deliver_with(&deliverer, nexthop, sender, rcpts)
}

/// One delivery by `deliverer` (kept between jobs by the caller).
fn deliver_with(
    deliverer: &Deliverer,
    nexthop: &str,
    sender: &str,
    rcpts: &[&str],
) -> Vec<(Status, String, String, Option<String>)> {
    let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
    let hop = deliverer.hop(nexthop, Protocol::Smtp);
    let request = Request {
        protocol: Protocol::Smtp,
        hop: &hop,
        envelope: Envelope {
            requiretls: false,
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: (*a).into(),
                    orcpt: None,
                    notify: Notify::default(),
                })
                .collect(),
            envid: None,
            ret: None,
            smtputf8: false,
        },
        message: &message,
        facts: MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 15,
            has_8bit: false,
        },
        arrival: None,
        cache: CacheUse::default(),
    };
    let Delivery {
        settled, anomalies, ..
    } = deliverer.deliver(&request);
    assert_eq!(anomalies, 0);
    assert_eq!(settled.len(), rcpts.len());
    settled
        .into_iter()
        .map(|s| {
            (
                s.outcome.status,
                s.outcome.dsn.to_string(),
                s.outcome.diagnostic,
                s.outcome.relay,
            )
        })
        .collect()
}

fn no_dns() -> FakeDns {
    FakeDns(HashMap::new())
}

fn connects(net: &FakeNet) -> Vec<IpAddr> {
    net.connects.lock().map(|v| v.clone()).unwrap_or_default()
}

#[test]
fn next_destination_after_refused_connect() {
    let net = net(vec![(1, Peer::Refuse), (2, good(1))]);
    let out = run(
        Config::default(),
        no_dns(),
        net,
        "[127.0.0.1]:25, [127.0.0.2]:25",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Sent);
    assert_eq!(out[0].3.as_deref(), Some("127.0.0.2[127.0.0.2]:25"));
    assert_eq!(connects(net), vec![ip(1), ip(2)]);
}

#[test]
fn soft_rcpt_failure_is_kept_for_the_next_server_and_sent_there() {
    let net = net(vec![(1, rcpt_soft(2)), (2, good(2))]);
    let out = run(
        Config::default(),
        no_dns(),
        net,
        "[127.0.0.1] [127.0.0.2]",
        &["a@y.test", "b@y.test"],
    );
    assert!(out.iter().all(|o| o.0 == Status::Sent), "{out:?}");
}

#[test]
fn soft_failure_on_the_final_server_defers() {
    let net = net(vec![(1, rcpt_soft(1))]);
    let out = run(
        Config::default(),
        no_dns(),
        net,
        "[127.0.0.1]",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(out[0].1, "4.2.0");
    assert_eq!(
        out[0].2,
        "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 busy (in reply to RCPT TO command)"
    );
    assert_eq!(out[0].3.as_deref(), Some("127.0.0.1[127.0.0.1]:25"));
}

#[test]
fn hard_failure_bounces_without_trying_backups() {
    let net = net(vec![(1, rcpt_hard(2)), (2, good(2))]);
    let out = run(
        Config::default(),
        no_dns(),
        net,
        "[127.0.0.1], [127.0.0.2]",
        &["a@y.test", "b@y.test"],
    );
    assert!(
        out.iter().all(|o| o.0 == Status::Bounced && o.1 == "5.1.1"),
        "{out:?}"
    );
    assert_eq!(connects(net), vec![ip(1)]);
}

#[test]
fn all_servers_down_defers_with_the_last_reason() {
    let net = net(vec![(1, Peer::Refuse), (2, Peer::Refuse)]);
    let out = run(
        Config::default(),
        no_dns(),
        net,
        "[127.0.0.1]:2525,[127.0.0.2]:2526",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(out[0].1, "4.4.1");
    assert_eq!(
        out[0].2,
        "connect to 127.0.0.2[127.0.0.2]:2526: Connection refused"
    );
    assert_eq!(out[0].3, None);
}

#[test]
fn mx_address_limit_caps_addresses_tried() {
    let dns = FakeDns(HashMap::from([(
        "y.test".to_string(),
        Ok((1..=6).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()),
    )]));
    let net = net((1..=6).map(|n| (n, Peer::Refuse)).collect());
    let out = run(
        config("[smtp]\nmx_address_limit = 3\n"),
        dns,
        net,
        "y.test",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(connects(net), vec![ip(1), ip(2), ip(3)]);
}

#[test]
fn mx_session_limit_counts_only_completed_handshakes() {
    let names = || {
        FakeDns(HashMap::from([(
            "y.test".to_string(),
            Ok((1..=4).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()),
        )]))
    };
    // Three servers answering 4xx to RCPT: two sessions, then stop.
    let all_soft = net((1..=4).map(|n| (n, rcpt_soft(1))).collect());
    let out = run(
        Config::default(),
        names(),
        all_soft,
        "y.test",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(connects(all_soft), vec![ip(1), ip(2)]);
    // Greeting failures do not count towards the session limit.
    let greet = net(vec![
        (1, script(GREET_SOFT)),
        (2, rcpt_soft(1)),
        (3, script(GREET_SOFT)),
        (4, good(1)),
    ]);
    let out = run(Config::default(), names(), greet, "y.test", &["a@y.test"]);
    assert_eq!(out[0].0, Status::Sent, "{out:?}");
    assert_eq!(connects(greet), vec![ip(1), ip(2), ip(3), ip(4)]);
}

#[test]
fn session_limit_makes_the_server_final() {
    // Second session reaches the limit: its soft error defers right there.
    let dns = FakeDns(HashMap::from([(
        "y.test".to_string(),
        Ok((1..=3).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()),
    )]));
    let net = net(vec![(1, rcpt_soft(1)), (2, rcpt_soft(1)), (3, good(1))]);
    let out = run(Config::default(), dns, net, "y.test", &["a@y.test"]);
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(out[0].3.as_deref(), Some("mx1.y.test[127.0.0.2]:25"));
}

#[test]
fn fallback_relay_after_not_found_and_after_all_dead() {
    let cfg = || config("[smtp]\nfallback_relay = [\"[127.0.0.9]:2525\"]\n");
    let net1 = net(vec![(9, good(1))]);
    let out = run(cfg(), no_dns(), net1, "nxdomain.test", &["a@nxdomain.test"]);
    assert_eq!(out[0].0, Status::Sent);
    assert_eq!(out[0].3.as_deref(), Some("127.0.0.9[127.0.0.9]:2525"));
    let net2 = net(vec![(1, Peer::Refuse), (9, good(1))]);
    let out = run(cfg(), no_dns(), net2, "[127.0.0.1]", &["a@y.test"]);
    assert_eq!(out[0].0, Status::Sent);
    assert_eq!(connects(net2), vec![ip(1), ip(9)]);
}

#[test]
fn hard_failure_at_fallback_relay_is_softened_to_4_3_5() {
    let net = net(vec![(1, Peer::Refuse), (9, good(1))]);
    let out = run(
        config("[smtp]\nfallback_relay = [\"relay.invalid\"]\n"),
        no_dns(),
        net,
        "[127.0.0.1]",
        &["a@y.test"],
    );
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(out[0].1, "4.3.5");
    assert!(
        out[0].2.starts_with("Host or domain name not found"),
        "{}",
        out[0].2
    );
}

#[test]
fn hard_failure_at_relayhost_is_softened_to_4_3_5() {
    let out = run(
        config("[smtp]\nrelayhost = \"relay.invalid\"\n"),
        no_dns(),
        net(vec![]),
        "relay.invalid",
        &["a@y.test"],
    );
    assert_eq!((out[0].0, out[0].1.as_str()), (Status::Deferred, "4.3.5"));
    // Not the relayhost: the same error bounces.
    let out = run(
        Config::default(),
        no_dns(),
        net(vec![]),
        "relay.invalid",
        &["a@y.test"],
    );
    assert_eq!((out[0].0, out[0].1.as_str()), (Status::Bounced, "5.4.4"));
}

#[test]
fn empty_address_list_leaves_4_3_0() {
    let dns = FakeDns(HashMap::from([("y.test".to_string(), Ok(Vec::new()))]));
    let out = run(Config::default(), dns, net(vec![]), "y.test", &["a@y.test"]);
    assert_eq!(out[0].1, "4.3.0");
    assert_eq!(out[0].2, "server unavailable or unable to receive mail");
}

#[test]
fn bad_destinations_defer_with_4_3_5() {
    for bad in [
        "[127.0.0.1]:0",
        "[127.0.0.1]:65536",
        "[127.0.0.1]:nosuchservice",
        " , ",
        "",
        "[127.0.0.1",
    ] {
        let net = net(vec![]);
        let out = run(
            Config::default(),
            no_dns(),
            net,
            bad,
            &["a@y.test", "b@y.test"],
        );
        for o in &out {
            assert_eq!(
                (o.0, o.1.as_str()),
                (Status::Deferred, "4.3.5"),
                "{bad:?}: {o:?}"
            );
            assert!(o.2.starts_with("bad destination"), "{bad:?}: {}", o.2);
        }
        assert!(connects(net).is_empty());
    }
}

#[test]
fn unsafe_envelope_is_refused_before_connecting() {
    let net1 = net(vec![(1, good(1))]);
    let out = run_from(
        Config::default(),
        no_dns(),
        net1,
        "[127.0.0.1]",
        "s@x\r\nRSET",
        &["a@y.test", "b@y.test"],
    );
    assert!(
        out.iter().all(|o| o.0 == Status::Bounced && o.1 == "5.1.7"),
        "{out:?}"
    );
    assert!(connects(net1).is_empty());
    let net2 = net(vec![(1, good(1))]);
    let out = run(
        Config::default(),
        no_dns(),
        net2,
        "[127.0.0.1]",
        &["bad\n@y.test", "ok@y.test"],
    );
    assert_eq!((out[0].0, out[0].1.as_str()), (Status::Bounced, "5.1.3"));
    assert_eq!(out[1].0, Status::Sent);
}

fn cached_deliverer(net: &'static FakeNet) -> Deliverer {
    let cache = Arc::new(crate::cache::SessionCache::new(Config::default().cache));
    Deliverer::new(Config::default())
        .with_resolver(Box::new(no_dns()))
        .with_connector(Box::new(net))
        .with_cache(cache)
}

fn run_cached(deliverer: &Deliverer, nexthop: &str, rcpt: &str) -> (Status, Vec<String>) {
    run_cached_as(deliverer, Protocol::Smtp, nexthop, rcpt)
}

fn run_cached_as(
    deliverer: &Deliverer,
    protocol: Protocol,
    nexthop: &str,
    rcpt: &str,
) -> (Status, Vec<String>) {
    let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
    let hop = deliverer.hop(nexthop, protocol);
    let request = Request {
        protocol,
        hop: &hop,
        envelope: Envelope {
            requiretls: false,
            sender: "s@x.test".into(),
            recipients: vec![Recipient {
                address: rcpt.into(),
                orcpt: None,
                notify: Notify::default(),
            }],
            envid: None,
            ret: None,
            smtputf8: false,
        },
        message: &message,
        facts: MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 15,
            has_8bit: false,
        },
        arrival: None,
        cache: CacheUse {
            load: true,
            store: true,
        },
    };
    let delivery = deliverer.deliver(&request);
    assert_eq!(delivery.settled.len(), 1);
    (delivery.settled[0].outcome.status, delivery.log)
}

/// One connection carries several transactions: greeting and EHLO once,
/// then RSET probes before each reuse.
fn reusable_peer(transactions: usize, then_hang_up: bool) -> Peer {
    let mut lines = vec![
        "220 ok ESMTP\r\n".to_string(),
        "250-ok\r\n250 PIPELINING\r\n".to_string(),
    ];
    for n in 0..transactions {
        if n > 0 {
            lines.push("250 2.0.0 Ok\r\n".into()); // RSET probe
        }
        lines.push("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n".into());
        lines.push("250 2.0.0 Ok\r\n".into());
    }
    let mut steps: Vec<Step> = lines.iter().map(|l| say(l)).collect();
    if then_hang_up {
        steps.push(Step::Hangup);
    }
    Peer::Script(steps)
}

/// The next-hop label a job's session is stored under and the one the
/// next job looks up come from one builder: for LMTP `inet:` they used
/// to differ (the store kept `inet:`), so the lookup by next hop missed.
#[test]
fn lmtp_inet_session_is_found_again_by_its_nexthop_label() {
    let net = net(vec![(1, reusable_peer(2, false))]);
    let deliverer = cached_deliverer(net);
    for n in 0..2 {
        let (status, log) = run_cached_as(
            &deliverer,
            Protocol::Lmtp,
            "inet:[127.0.0.1]:2424",
            &format!("r{n}@y.test"),
        );
        assert_eq!(status, Status::Sent, "job {n}: {log:?}");
    }
    assert_eq!(connects(net), vec![ip(1)]);
    let stats = deliverer.cache().map(|c| c.stats()).unwrap_or_default();
    // Job 1: next-hop and endpoint lookups miss; job 2: the next-hop
    // lookup hits (before the fix: a miss, then a hit by endpoint).
    assert_eq!((stats.hits, stats.misses), (1, 2), "{stats:?}");
}

#[test]
fn cached_session_is_reused_by_the_next_job() {
    let net = net(vec![(1, reusable_peer(3, false))]);
    let deliverer = cached_deliverer(net);
    for n in 0..3 {
        let (status, log) = run_cached(&deliverer, "[127.0.0.1]:2525", &format!("r{n}@y.test"));
        assert_eq!(status, Status::Sent, "job {n}: {log:?}");
        if n > 0 {
            assert!(
                log.iter().any(|l| l.starts_with("reused cached session")),
                "job {n}: {log:?}"
            );
        }
    }
    assert_eq!(connects(net), vec![ip(1)]);
    let stats = deliverer.cache().map(|c| c.stats()).unwrap_or_default();
    assert_eq!(stats.hits, 2);
}

#[test]
fn a_cached_session_closed_by_the_server_is_replaced_without_losing_the_recipient() {
    // The first connection hangs up after one transaction; the RSET probe
    // fails and the job connects afresh.
    let net = net(vec![(1, reusable_peer(1, true))]);
    let deliverer = cached_deliverer(net);
    assert_eq!(
        run_cached(&deliverer, "[127.0.0.1]:2525", "a@y.test").0,
        Status::Sent
    );
    let (status, log) = run_cached(&deliverer, "[127.0.0.1]:2525", "b@y.test");
    assert_eq!(status, Status::Sent, "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("no longer usable")),
        "{log:?}"
    );
    assert_eq!(connects(net), vec![ip(1), ip(1)]);
}

#[test]
fn no_caching_without_the_store_hint_or_cache() {
    let net = net(vec![(1, good(1))]);
    let deliverer = Deliverer::new(Config::default())
        .with_resolver(Box::new(no_dns()))
        .with_connector(Box::new(net));
    assert_eq!(
        run_cached(&deliverer, "[127.0.0.1]", "a@y.test").0,
        Status::Sent
    );
    assert_eq!(
        run_cached(&deliverer, "[127.0.0.1]", "b@y.test").0,
        Status::Sent
    );
    assert_eq!(connects(net), vec![ip(1), ip(1)]);
}

#[test]
fn reuse_count_limit_is_honoured() {
    let net = net(vec![(1, reusable_peer(2, false))]);
    let mut config = Config::default();
    config.cache.reuse_count_limit = 1; // used at most twice
    let cache = Arc::new(crate::cache::SessionCache::new(config.cache.clone()));
    let deliverer = Deliverer::new(config)
        .with_resolver(Box::new(no_dns()))
        .with_connector(Box::new(net))
        .with_cache(cache);
    for n in 0..3 {
        assert_eq!(
            run_cached(&deliverer, "[127.0.0.1]:2525", &format!("r{n}@y.test")).0,
            Status::Sent
        );
    }
    // Two uses on the first connection, then a new one.
    assert_eq!(connects(net), vec![ip(1), ip(1)]);
}

// ---------------------------------------------------------------------------
// Address health memory and Happy Eyeballs
// ---------------------------------------------------------------------------

/// A deliverer over `route` and `net` that lives across jobs (its address
/// health memory with it).
fn route_deliverer(cfg: Config, route: Vec<Candidate>, net: &'static FakeNet) -> Deliverer {
    Deliverer::new(cfg)
        .with_resolver(Box::new(FixedRoute(route)))
        .with_connector(Box::new(net))
}

fn job(deliverer: &Deliverer, rcpts: &[&str]) -> Vec<(Status, String, String, Option<String>)> {
    deliver_with(deliverer, "y.test", "s@x.test", rcpts)
}

fn take_connects(net: &FakeNet) -> Vec<IpAddr> {
    std::mem::take(&mut *net.connects.lock().unwrap())
}

fn take_races(net: &FakeNet) -> Vec<Vec<IpAddr>> {
    std::mem::take(&mut *net.races.lock().unwrap())
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_refused_address_is_tried_last_by_later_jobs() {
    let net = net(vec![(1, Peer::Refuse), (2, good(1))]);
    let route = vec![mx(1, "127.0.0.1", 10), mx(2, "127.0.0.2", 20)];
    let deliverer = route_deliverer(Config::default(), route.clone(), net);
    let first = job(&deliverer, &["a@y.test"]);
    assert_eq!(first[0].0, Status::Sent);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    assert!(deliverer.health().is_failed(SocketAddr::new(ip(1), 25)));
    let second = job(&deliverer, &["a@y.test"]);
    assert_eq!(second, first);
    assert_eq!(
        take_connects(net),
        vec![ip(2)],
        "the refused primary is last"
    );

    // Off: Postfix's order every time.
    let off = route_deliverer(config("[smtp]\naddress_health = false\n"), route, net);
    for _ in 0..2 {
        assert_eq!(job(&off, &["a@y.test"])[0].0, Status::Sent);
        assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    }
    assert!(off.health().is_empty());
}

#[test]
fn demoting_an_address_keeps_the_final_server_rule() {
    // The backup soft-fails the recipient: as the last server (Postfix's
    // order, primary refused) it defers it with its own reply. Tried first
    // because the primary failed lately, it is still the last server: the
    // same outcome, and the primary is not tried again.
    let net = net(vec![(1, Peer::Refuse), (2, rcpt_soft(1))]);
    let route = vec![mx(1, "127.0.0.1", 10), mx(2, "127.0.0.2", 20)];
    let deliverer = route_deliverer(Config::default(), route, net);
    let first = job(&deliverer, &["a@y.test"]);
    assert_eq!(first[0].0, Status::Deferred);
    assert_eq!(first[0].1, "4.2.0");
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    let second = job(&deliverer, &["a@y.test"]);
    assert_eq!(second, first);
    assert_eq!(take_connects(net), vec![ip(2)]);
}

#[test]
fn a_demoted_address_does_not_make_a_middle_server_final() {
    // Primary refused, then a backup that soft-fails, then one that takes
    // the mail: the recipient is kept for the third both times.
    let net = net(vec![(1, Peer::Refuse), (2, rcpt_soft(1)), (3, good(1))]);
    let route = vec![
        mx(1, "127.0.0.1", 10),
        mx(2, "127.0.0.2", 20),
        mx(3, "127.0.0.3", 30),
    ];
    let deliverer = route_deliverer(Config::default(), route, net);
    let first = job(&deliverer, &["a@y.test"]);
    assert_eq!(first[0].0, Status::Sent);
    assert_eq!(first[0].3.as_deref(), Some("mx3.y.test[127.0.0.3]:25"));
    assert_eq!(take_connects(net), vec![ip(1), ip(2), ip(3)]);
    assert_eq!(job(&deliverer, &["a@y.test"]), first);
    assert_eq!(take_connects(net), vec![ip(2), ip(3)]);
}

#[test]
fn demoted_addresses_are_still_tried_when_the_others_fail() {
    let net = net(vec![(1, Peer::Refuse), (2, Peer::Refuse)]);
    let route = vec![mx(1, "127.0.0.1", 10), mx(2, "127.0.0.2", 20)];
    let deliverer = route_deliverer(Config::default(), route, net);
    let first = job(&deliverer, &["a@y.test"]);
    assert_eq!(first[0].0, Status::Deferred);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    // Both marked: both moved, in their order; the same last reason.
    assert_eq!(job(&deliverer, &["a@y.test"]), first);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
}

#[test]
fn the_address_limit_cuts_postfix_order_before_demotion() {
    // Limit 2 of [refused, soft, good]: Postfix tries the first two only;
    // demotion reorders them but never reaches the third.
    let net = net(vec![(1, Peer::Refuse), (2, rcpt_soft(1)), (3, good(1))]);
    let route = vec![
        mx(1, "127.0.0.1", 10),
        mx(2, "127.0.0.2", 20),
        mx(3, "127.0.0.3", 30),
    ];
    let cfg = config("[smtp]\nmx_address_limit = 2\n");
    let deliverer = route_deliverer(cfg, route, net);
    let first = job(&deliverer, &["a@y.test"]);
    assert_eq!(first[0].0, Status::Deferred);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    assert_eq!(job(&deliverer, &["a@y.test"]), first);
    assert_eq!(take_connects(net), vec![ip(2)]);
}

#[test]
fn happy_eyeballs_races_equal_preference_addresses_with_families_interleaved() {
    let net = net_at(vec![
        (addr("::1"), Peer::Refuse),
        (addr("::2"), Peer::Refuse),
        (ip(1), good(1)),
        (ip(2), good(1)),
    ]);
    let route = vec![
        mx(1, "::1", 10),
        mx(1, "::2", 10),
        mx(2, "127.0.0.1", 10),
        mx(3, "127.0.0.2", 20),
    ];
    let cfg = config("[smtp]\naddress_health = false\n");
    let deliverer = route_deliverer(cfg, route.clone(), net);
    let out = job(&deliverer, &["a@y.test"]);
    assert_eq!(out[0].3.as_deref(), Some("mx2.y.test[127.0.0.1]:25"));
    assert_eq!(
        take_races(net),
        vec![vec![addr("::1"), ip(1), addr("::2")]],
        "one race over the preference-10 run, families alternating"
    );
    assert_eq!(take_connects(net), vec![addr("::1"), ip(1)]);

    // Off: one address at a time, in Postfix's order.
    let cfg = config("[smtp]\naddress_health = false\nhappy_eyeballs = false\n");
    let deliverer = route_deliverer(cfg, route, net);
    let out = job(&deliverer, &["a@y.test"]);
    assert_eq!(out[0].3.as_deref(), Some("mx2.y.test[127.0.0.1]:25"));
    assert!(take_races(net).iter().all(|r| r.len() == 1));
    assert_eq!(take_connects(net), vec![addr("::1"), addr("::2"), ip(1)]);
}

#[test]
fn happy_eyeballs_never_races_a_backup_with_a_better_mx() {
    let net = net_at(vec![(addr("::1"), Peer::Refuse), (ip(2), good(1))]);
    let route = vec![mx(1, "::1", 10), mx(2, "127.0.0.2", 20)];
    let cfg = config("[smtp]\naddress_health = false\n");
    let deliverer = route_deliverer(cfg, route, net);
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Sent);
    assert_eq!(take_races(net), vec![vec![addr("::1")], vec![ip(2)]]);
}

#[test]
fn an_abandoned_attempt_is_not_retried_and_the_winner_keeps_the_final_rule() {
    // ::1 drops SYNs. Sequential: it times out, then 127.0.0.1 is the
    // last server and defers with its own reply. Raced: 127.0.0.1 wins,
    // ::1 is abandoned (noted, not a failure) and the outcome is the same.
    let peers = vec![(addr("::1"), Peer::Blackhole), (ip(1), rcpt_soft(1))];
    let route = vec![mx(1, "::1", 10), mx(1, "127.0.0.1", 10)];
    let sequential = {
        let net = net_at(peers.clone());
        let cfg = config("[smtp]\naddress_health = false\nhappy_eyeballs = false\n");
        let out = job(&route_deliverer(cfg, route.clone(), net), &["a@y.test"]);
        assert_eq!(take_connects(net), vec![addr("::1"), ip(1)]);
        out
    };
    assert_eq!(sequential[0].0, Status::Deferred);
    assert_eq!(sequential[0].1, "4.2.0");
    let net = net_at(peers);
    let cfg = config("[smtp]\naddress_health = false\n");
    let deliverer = route_deliverer(cfg, route, net);
    let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
    let hop = deliverer.hop("y.test", Protocol::Smtp);
    let request = Request {
        protocol: Protocol::Smtp,
        hop: &hop,
        envelope: Envelope {
            requiretls: false,
            sender: "s@x.test".into(),
            recipients: vec![Recipient {
                address: "a@y.test".into(),
                orcpt: None,
                notify: Notify::default(),
            }],
            envid: None,
            ret: None,
            smtputf8: false,
        },
        message: &message,
        facts: MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 15,
            has_8bit: false,
        },
        arrival: None,
        cache: CacheUse::default(),
    };
    let delivery = deliverer.deliver(&request);
    let outcome = &delivery.settled[0].outcome;
    assert_eq!(
        (
            outcome.status,
            outcome.dsn.to_string(),
            outcome.diagnostic.clone(),
            outcome.relay.clone()
        ),
        sequential[0]
    );
    assert_eq!(take_connects(net), vec![addr("::1"), ip(1)]);
    assert!(
        delivery
            .log
            .iter()
            .any(|l| l
                == "connect to mx1.y.test[::1]: abandoned, mx1.y.test[127.0.0.1] connected first"),
        "{:?}",
        delivery.log
    );
}

#[test]
fn a_race_without_winner_records_every_failure_like_sequential_connects() {
    let peers = vec![(addr("::1"), Peer::Blackhole), (ip(1), Peer::Refuse)];
    let route = vec![mx(1, "::1", 10), mx(1, "127.0.0.1", 10)];
    let net = net_at(peers);
    let cfg = config("[smtp]\naddress_health = false\n");
    let deliverer = route_deliverer(cfg, route, net);
    let out = job(&deliverer, &["a@y.test"]);
    assert_eq!(out[0].0, Status::Deferred);
    assert_eq!(out[0].1, "4.4.1");
    // The blackhole's timeout ended last, but failures are recorded in the
    // order the attempts started: the last reason is the last address's,
    // as with sequential connects.
    assert_eq!(
        out[0].2,
        "connect to mx1.y.test[127.0.0.1]:25: Connection refused"
    );
    let cfg = config(
        "[smtp]
address_health = false
happy_eyeballs = false
",
    );
    let route = vec![mx(1, "::1", 10), mx(1, "127.0.0.1", 10)];
    assert_eq!(job(&route_deliverer(cfg, route, net), &["a@y.test"]), out);
}

#[test]
fn every_raced_address_counts_toward_the_address_limit() {
    let net = net_at(vec![
        (addr("::1"), Peer::Refuse),
        (ip(1), Peer::Refuse),
        (addr("::2"), good(1)),
    ]);
    let route = vec![mx(1, "::1", 10), mx(1, "127.0.0.1", 10), mx(1, "::2", 10)];
    let cfg = config("[smtp]\naddress_health = false\nmx_address_limit = 2\n");
    let deliverer = route_deliverer(cfg, route, net);
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Deferred);
    assert_eq!(take_races(net), vec![vec![addr("::1"), ip(1)]]);
}

#[test]
fn after_the_period_one_job_probes_the_address_and_the_others_keep_it_last() {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(200);
    let net = net(vec![(1, Peer::Refuse), (2, good(1))]);
    let route = vec![mx(1, "127.0.0.1", 10), mx(2, "127.0.0.2", 20)];
    let cfg = config("[smtp]\naddress_health_time = \"200ms\"\n");
    let deliverer = route_deliverer(cfg, route, net);
    let dead = SocketAddr::new(ip(1), 25);
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Sent);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    std::thread::sleep(PERIOD + std::time::Duration::from_millis(20));
    // Another job saw the mark run out first: it probes the address...
    let mut other = vec![dead];
    assert_eq!(
        deliverer.health().demote(&mut other, |a| Some(*a)).probes,
        vec![dead]
    );
    // ... so this one still tries it last (and does not need it).
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Sent);
    assert_eq!(take_connects(net), vec![ip(2)]);
    // That probe never reported: after one more period, the next job
    // probes the address in its place, fails, and the mark starts again.
    std::thread::sleep(PERIOD + std::time::Duration::from_millis(20));
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Sent);
    assert_eq!(take_connects(net), vec![ip(1), ip(2)]);
    assert_eq!(job(&deliverer, &["a@y.test"])[0].0, Status::Sent);
    assert_eq!(take_connects(net), vec![ip(2)]);
}

/// MTA-STS enforce over a default "dane" level: usable TLSA records keep
/// DANE, a DANE fallback (may) becomes the MTA-STS policy.
#[test]
fn mta_sts_enforce_replaces_dane_fallbacks_only() {
    use crate::tls_policy::{Level, PolicySource, policy_for};
    let config = crate::config::TlsConfig {
        security_level: "dane".into(),
        ..crate::config::TlsConfig::default()
    };
    let base = policy_for(&config, "example.com", false).unwrap();
    let mut sts = base.clone();
    sts.level = Level::Verify;
    sts.source = PolicySource::MtaSts;
    let sts = Arc::new(sts);
    let mut dane = base.clone();
    dane.level = Level::Dane;
    dane.dane = None;
    dane.source = PolicySource::Dane;
    let mut fallback = base.clone();
    fallback.level = Level::May;
    fallback.dane = None;
    fallback.source = PolicySource::Dane;
    let decided = vec![
        ("a.example.com".to_string(), true, Arc::new(dane.clone())),
        (
            "b.example.com".to_string(),
            false,
            Arc::new(fallback.clone()),
        ),
    ];
    let settled = mta_sts_under_dane(&sts, decided.clone());
    assert_eq!(*settled[0].2, dane);
    assert_eq!(settled[1].2.level, Level::Verify);
    assert_eq!(settled[1].2.source, PolicySource::MtaSts);
    assert_eq!(settled[1].2.dane, None);
    // Not under MTA-STS enforce: as decided.
    let plain = Arc::new(base);
    assert_eq!(mta_sts_under_dane(&plain, decided.clone()), decided);
}
