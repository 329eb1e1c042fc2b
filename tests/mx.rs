//! End-to-end tests of next-hop resolution and connection management
//! (Postfix's smtp_connect.c and smtp_addr.c; reference:
//! ../shared/reference/postfix-smtp-client.md §1–3): MX lists served by
//! a per-test dnsmasq, MX hosts played by smtp-sink or by in-process
//! servers, and `mailhop send --direct` (or the library, where many
//! deliveries are needed) in between. Expected texts are Postfix's.
//!
//! Each test is numbered, (1)–(15) as in the test plan plus lettered extras.
//!
//! Addressing: each test owns its own 127.25.N.0/24 (N unique per test;
//! Linux routes all of 127/8 to `lo`), its MX host h is 127.25.N.h. A nexthop `domain:PORT` connects to
//! every MX address on PORT, so all hosts of one test share one port, found
//! free on all of them ([`shared_port`]). A "dead" host holds a bound,
//! never-listening socket there ([`Refusing`]): connections are refused and
//! nobody else can listen meanwhile. Loop detection and the EHLO own-name
//! check only apply on port 25: those tests use port 25 of their own
//! addresses.
//!
//! Contract: every server is owned by a guard that stops it (dnsmasq and
//! smtp-sink are killed and reaped, in-process servers are joined); every
//! loop and wait is bounded; DNS and connect timeouts are 1 s. Without
//! dnsmasq or smtp-sink a test prints SKIPPED and passes, except under
//! `CI=true`, where it fails.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::dnsmasq::{Dnsmasq, Zone};
use common::{
    DEFAULT_TIMEOUTS, Delivery, Limits, Line, Listen, Peer, Run, Server, Sink, hostname, skip,
};
use mailhop::config::Config;
use mailhop::deliver::{Deliverer, Request};
use mailhop::message::Message;
use mailhop::nexthop::Protocol;
use mailhop::recipients::Status;
use mailhop::smtp::client::{Envelope, Recipient};
use mailhop::smtp::command::Notify;
use socket2::{Domain, SockAddr, Socket, Type};

/// sysexits codes of `mailhop send`.
const SENT: i32 = 0;
const DEFERRED: i32 = 75;
const BOUNCED: i32 = 69;

/// smtp-sink's reply for `-r` commands.
const SINK_SOFT: &str = "450 4.3.0 Error: command failed";
/// smtp-sink's reply to the final dot.
const SINK_OK: &str = "250 2.0.0 Ok";

/// Address of host `host` in test `test`.
fn ip(test: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 25, test, host)
}

/// Postfix's `host[addr]`.
fn peer(host: &str, addr: Ipv4Addr) -> String {
    format!("{host}[{addr}]")
}

/// Postfix's `relay=host[addr]:port`.
fn relay(host: &str, addr: Ipv4Addr, port: u16) -> String {
    format!("{host}[{addr}]:{port}")
}

fn toml_str(text: &str) -> String {
    format!("{text:?}")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A configuration file: short timeouts, one name server.
#[derive(Clone, Debug)]
struct Conf {
    smtp: BTreeMap<&'static str, String>,
    dns: BTreeMap<&'static str, String>,
}

impl Conf {
    /// `[dns] nameservers = [nameserver]`, timeout 1 s, one attempt;
    /// `[smtp] connect_timeout = "1s"`, other timeouts a few seconds.
    fn new(nameserver: &str) -> Self {
        let smtp = DEFAULT_TIMEOUTS
            .iter()
            .map(|&(k, v)| (k, toml_str(if k == "connect_timeout" { "1s" } else { v })))
            .collect();
        let dns = [
            ("nameservers", format!("[{}]", toml_str(nameserver))),
            ("timeout", toml_str("1s")),
            ("attempts", "1".to_string()),
        ]
        .into_iter()
        .collect();
        Self { smtp, dns }
    }

    fn with(dns: &Dnsmasq) -> Self {
        Self::new(&dns.nameserver())
    }

    /// Sets one `[smtp]` key; `value` is TOML.
    fn smtp(mut self, key: &'static str, value: &str) -> Self {
        self.smtp.insert(key, value.to_string());
        self
    }

    /// Sets one `[dns]` key; `value` is TOML.
    fn dns(mut self, key: &'static str, value: &str) -> Self {
        self.dns.insert(key, value.to_string());
        self
    }

    /// `[smtp] fallback_relay = [relay]`.
    fn fallback(self, relay: &str) -> Self {
        self.smtp("fallback_relay", &format!("[{}]", toml_str(relay)))
    }

    fn text(&self) -> String {
        let mut text = String::from("[smtp]\n");
        for (k, v) in &self.smtp {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text.push_str("\n[dns]\n");
        for (k, v) in &self.dns {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }

    fn config(&self) -> Config {
        Config::from_toml_str(&self.text())
            .unwrap_or_else(|e| panic!("bad test configuration ({e}):\n{}", self.text()))
    }
}

/// `mailhop send --direct --config FILE --nexthop NEXTHOP --to RCPT`.
fn send(conf: &Conf, nexthop: &str, rcpt: &str) -> Run {
    Delivery::to(nexthop)
        .raw_config(&conf.text())
        .rcpt(rcpt)
        .run()
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A port that every one of `addrs` can listen on right now.
fn shared_port(addrs: &[Ipv4Addr]) -> u16 {
    let first = *addrs.first().expect("at least one address");
    for _ in 0..50 {
        let port = TcpListener::bind((first, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("bind {first}:0: {e}"));
        if addrs.iter().all(|a| TcpListener::bind((*a, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {addrs:?}");
}

/// A dead MX host: the address and port are bound but never listen, so
/// connections are refused (and no other listener can appear there).
struct Refusing {
    _socket: Socket,
}

impl Refusing {
    fn new(addr: Ipv4Addr, port: u16) -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(addr, port)))
            .unwrap_or_else(|e| panic!("bind {addr}:{port}: {e}"));
        Self { _socket: socket }
    }
}

/// Starts an smtp-sink on `addr:port`; `None` when smtp-sink is missing.
fn sink_at(addr: Ipv4Addr, port: u16, args: &[&str]) -> Option<Sink> {
    Sink::start(Listen::TcpAt(SocketAddrV4::new(addr, port)), args)
}

/// The `-c` session counts of `sinks`, once they equal `want` (the sink
/// writes a counter when it has seen the end of a session) or after 3 s.
/// Re-read once more after a pause, so a late extra session shows up too.
fn wait_sessions(sinks: &[&Sink], want: &[usize]) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got: Vec<usize> = sinks.iter().map(|s| s.sessions()).collect();
        if got == want || Instant::now() > deadline {
            thread::sleep(Duration::from_millis(200));
            return sinks.iter().map(|s| s.sessions()).collect();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How long a [`Counter`] runs at most, and waits for each client line.
const COUNTER_LIMIT: Duration = Duration::from_secs(40);
const COUNTER_READ: Duration = Duration::from_secs(2);

/// An in-process SMTP server (the harness's sequential scripted server)
/// that counts the connections it accepts, answers each with `greeting`,
/// and then only QUIT (with 221) until the client goes away. Serves one
/// connection at a time; stopped and joined on drop. The count is exact
/// evidence of how many connections a run made.
struct Counter {
    server: Server<()>,
}

impl Counter {
    fn start(addr: Ipv4Addr, port: u16, greeting: &str) -> Self {
        Self::try_start(addr, port, greeting)
            .unwrap_or_else(|e| panic!("start a counting server on {addr}:{port}: {e}"))
    }

    fn try_start(addr: Ipv4Addr, port: u16, greeting: &str) -> io::Result<Self> {
        let limits = Limits {
            bind: SocketAddr::from((addr, port)),
            accept: COUNTER_LIMIT,
            read: COUNTER_READ,
        };
        let greeting = greeting.to_string();
        let server = Server::sequential_with(limits, usize::MAX, move |_, peer| {
            serve_greeting_only(peer, &greeting)
        })?;
        Ok(Self { server })
    }

    fn accepted(&self) -> usize {
        self.server.connections()
    }
}

fn serve_greeting_only(peer: &mut Peer, greeting: &str) {
    peer.reply(greeting);
    for _ in 0..100 {
        let Ok(line) = peer.read_line() else {
            break;
        };
        if line.trim().eq_ignore_ascii_case("QUIT") {
            peer.reply("221 2.0.0 Bye");
            break;
        }
        peer.reply("503 5.5.1 Error: only QUIT is served here");
    }
}

/// Port 25 needs root (or CAP_NET_BIND_SERVICE): true when `addr:25` can
/// be bound. Otherwise prints SKIPPED, or panics under `CI=true`.
fn port_25_usable(addr: Ipv4Addr) -> bool {
    match TcpListener::bind((addr, 25)) {
        Ok(_) => true,
        Err(e) => {
            skip(&format!(
                "cannot bind {addr}:25 ({e}); loop detection tests need root"
            ));
            false
        }
    }
}

// ---------------------------------------------------------------------------
// MX lists
// ---------------------------------------------------------------------------

/// (1) Primary MX refuses, backup MX takes the mail.
#[test]
fn primary_mx_refused_mail_goes_to_the_backup_mx() {
    let (mx1, mx2) = (ip(1, 1), ip(1, 2));
    let zone = Zone::new()
        .mx("backup.test", 10, "mx1.backup.test")
        .mx("backup.test", 20, "mx2.backup.test")
        .a("mx1.backup.test", mx1)
        .a("mx2.backup.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let _dead = Refusing::new(mx1, port);
    let Some(good) = sink_at(mx2, port, &["-c"]) else {
        return;
    };
    send(
        &Conf::with(&dns),
        &format!("backup.test:{port}"),
        "u@backup.test",
    )
    .expect(
        SENT,
        &[Line::sent(
            "u@backup.test",
            &relay("mx2.backup.test", mx2, port),
            "2.0.0",
            SINK_OK,
        )],
    );
    assert_eq!(wait_sessions(&[&good], &[1]), [1]);
}

/// (2) Every MX refuses: deferred with the last connect error.
#[test]
fn all_mx_hosts_refused_defers_with_the_last_connect_error() {
    let (mx1, mx2) = (ip(2, 1), ip(2, 2));
    let zone = Zone::new()
        .mx("dead.test", 10, "mx1.dead.test")
        .mx("dead.test", 20, "mx2.dead.test")
        .a("mx1.dead.test", mx1)
        .a("mx2.dead.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let _dead = (Refusing::new(mx1, port), Refusing::new(mx2, port));
    send(
        &Conf::with(&dns),
        &format!("dead.test:{port}"),
        "u@dead.test",
    )
    .expect(
        DEFERRED,
        &[Line::deferred(
            "u@dead.test",
            "none",
            "4.4.1",
            &format!(
                "connect to {}:{port}: Connection refused",
                peer("mx2.dead.test", mx2)
            ),
        )],
    );
}

/// (3) NXDOMAIN: no MX, no address. Postfix reports the last lookup it
/// made: AAAA when both families are enabled, A with IPv4 only.
#[test]
fn nxdomain_bounces_with_the_last_address_lookup_error() {
    let Some(dns) = Dnsmasq::start(&Zone::new()) else {
        return;
    };
    let nexthop = "nx.test:2525";
    for (protocols, qtype) in [("all", "AAAA"), ("ipv4", "A")] {
        let conf = Conf::with(&dns).dns("inet_protocols", &toml_str(protocols));
        send(&conf, nexthop, "u@nx.test").expect(
            BOUNCED,
            &[Line::bounced(
                "u@nx.test",
                "none",
                "5.4.4",
                &format!(
                    "Host or domain name not found. Name service error for \
                     name=nx.test type={qtype}: Host not found"
                ),
            )],
        );
    }
}

/// (4) RFC 7505 null MX.
#[test]
fn null_mx_bounces_5_1_0() {
    let Some(dns) = Dnsmasq::start(&Zone::new().null_mx("nullmx.test")) else {
        return;
    };
    send(&Conf::with(&dns), "nullmx.test:2525", "u@nullmx.test").expect(
        BOUNCED,
        &[Line::bounced(
            "u@nullmx.test",
            "none",
            "5.1.0",
            "Domain nullmx.test does not accept mail (nullMX)",
        )],
    );
}

/// (5) No MX record, but an address: implicit MX.
#[test]
fn domain_without_mx_gets_mail_at_its_own_address() {
    let host = ip(5, 1);
    let Some(dns) = Dnsmasq::start(&Zone::new().a("implicit.test", host)) else {
        return;
    };
    let port = shared_port(&[host]);
    let Some(_sink) = sink_at(host, port, &[]) else {
        return;
    };
    send(
        &Conf::with(&dns),
        &format!("implicit.test:{port}"),
        "u@implicit.test",
    )
    .expect(
        SENT,
        &[Line::sent(
            "u@implicit.test",
            &relay("implicit.test", host, port),
            "2.0.0",
            SINK_OK,
        )],
    );
}

/// (5b) Without MX lookups (`[dns] support = "disabled"`, or a bracketed
/// `[domain]`), the domain's own address is used even when it has MX
/// records.
#[test]
fn no_mx_lookup_when_dns_support_is_disabled_or_the_domain_is_bracketed() {
    let (mx, own) = (ip(23, 1), ip(23, 2));
    let zone = Zone::new()
        .mx("both.test", 10, "mx.both.test")
        .a("mx.both.test", mx)
        .a("both.test", own);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx, own]);
    let _dead = Refusing::new(mx, port);
    let Some(sink) = sink_at(own, port, &["-c"]) else {
        return;
    };
    let sent = [Line::sent(
        "u@both.test",
        &relay("both.test", own, port),
        "2.0.0",
        SINK_OK,
    )];
    let conf = Conf::with(&dns);
    send(&conf, &format!("[both.test]:{port}"), "u@both.test").expect(SENT, &sent);
    let conf = conf.dns("support", &toml_str("disabled"));
    send(&conf, &format!("both.test:{port}"), "u@both.test").expect(SENT, &sent);
    assert_eq!(wait_sessions(&[&sink], &[2]), [2]);
}

/// (6) The only MX host has no address at all (NXDOMAIN): 5.4.4, or 4.4.4
/// with `defer_if_no_mx_address_found`.
#[test]
fn mx_host_without_address_bounces_or_defers_when_told_to() {
    let zone = Zone::new().mx("noaddr.test", 10, "mx.noaddr.test");
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let text = "Host or domain name not found. Name service error for \
                name=mx.noaddr.test type=AAAA: Host not found";
    let conf = Conf::with(&dns);
    send(&conf, "noaddr.test:2525", "u@noaddr.test").expect(
        BOUNCED,
        &[Line::bounced("u@noaddr.test", "none", "5.4.4", text)],
    );
    let conf = conf.dns("defer_if_no_mx_address_found", "true");
    send(&conf, "noaddr.test:2525", "u@noaddr.test").expect(
        DEFERRED,
        &[Line::deferred("u@noaddr.test", "none", "4.4.4", text)],
    );
}

/// (6b) Address lookups of several MX hosts fail differently: a soft
/// failure (SERVFAIL) keeps later hard ones soft (4.4.4), and the text is
/// always the latest failure's (Postfix's `why` buffer).
#[test]
fn mx_hosts_without_address_soft_failure_dominates_and_last_text_wins() {
    let zone = Zone::new()
        .servfail("servfail.test")
        .mx("softfirst.test", 10, "mx1.servfail.test")
        .mx("softfirst.test", 20, "mx2.softfirst.test")
        .mx("hardfirst.test", 10, "mx1.hardfirst.test")
        .mx("hardfirst.test", 20, "mx2.servfail.test");
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let conf = Conf::with(&dns);
    send(&conf, "softfirst.test:2525", "u@softfirst.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@softfirst.test",
            "none",
            "4.4.4",
            "Host or domain name not found. Name service error for \
             name=mx2.softfirst.test type=AAAA: Host not found",
        )],
    );
    send(&conf, "hardfirst.test:2525", "u@hardfirst.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@hardfirst.test",
            "none",
            "4.4.3",
            "Host or domain name not found. Name service error for \
             name=mx2.servfail.test type=AAAA: Host not found, try again",
        )],
    );
}

/// (7) The fallback relay takes the mail after a hard lookup error
/// (Postfix [V]) and after every MX refused.
#[test]
fn fallback_relay_after_nxdomain_and_after_dead_mx_hosts() {
    let (mx1, mx2, fallback) = (ip(7, 1), ip(7, 2), ip(7, 9));
    let zone = Zone::new()
        .mx("down.test", 10, "mx1.down.test")
        .mx("down.test", 20, "mx2.down.test")
        .a("mx1.down.test", mx1)
        .a("mx2.down.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2, fallback]);
    let _dead = (Refusing::new(mx1, port), Refusing::new(mx2, port));
    let Some(relay_sink) = sink_at(fallback, port, &["-c"]) else {
        return;
    };
    let conf = Conf::with(&dns).fallback(&format!("[{fallback}]:{port}"));
    let via_fallback = relay(&fallback.to_string(), fallback, port);
    send(&conf, &format!("nx7.test:{port}"), "u@nx7.test").expect(
        SENT,
        &[Line::sent("u@nx7.test", &via_fallback, "2.0.0", SINK_OK)],
    );
    send(&conf, &format!("down.test:{port}"), "u@down.test").expect(
        SENT,
        &[Line::sent("u@down.test", &via_fallback, "2.0.0", SINK_OK)],
    );
    assert_eq!(wait_sessions(&[&relay_sink], &[2]), [2]);
}

/// (7b) A hard error at the last destination is a configuration problem
/// when that destination is a fallback relay, or the relayhost: 4.3.5 with
/// the text kept (Postfix: "smtp_fallback_relay configuration problem",
/// "relayhost configuration problem").
#[test]
fn hard_lookup_error_at_fallback_relay_or_relayhost_defers_4_3_5() {
    let Some(dns) = Dnsmasq::start(&Zone::new()) else {
        return;
    };
    let not_found = |name: &str| {
        format!(
            "Host or domain name not found. Name service error for \
             name={name} type=AAAA: Host not found"
        )
    };
    let conf = Conf::with(&dns).fallback("nxrelay.test:2525");
    let run = send(&conf, "nx8.test:2525", "u@nx8.test");
    run.expect(
        DEFERRED,
        &[Line::deferred(
            "u@nx8.test",
            "none",
            "4.3.5",
            &not_found("nxrelay.test"),
        )],
    );
    assert!(
        run.stderr.contains("fallback_relay configuration problem"),
        "{run:#?}"
    );

    // `--nexthop` equal to `relayhost` is what the CLI does without one.
    let conf = Conf::with(&dns).smtp("relayhost", &toml_str("nxhost.test:2525"));
    let run = send(&conf, "nxhost.test:2525", "u@nx8.test");
    run.expect(
        DEFERRED,
        &[Line::deferred(
            "u@nx8.test",
            "none",
            "4.3.5",
            &not_found("nxhost.test"),
        )],
    );
    assert!(
        run.stderr.contains("relayhost configuration problem"),
        "{run:#?}"
    );
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// (8) `mx_session_limit = 2`: three MX hosts that all answer RCPT with
/// 4xx; the first two sessions count, the third host is never contacted,
/// and the second server's reply is final.
///
/// Evidence: smtp-sink's own `-c` counters (`sess=N ...` on its stdout,
/// written at the end of every session), one sink per MX host.
#[test]
fn mx_session_limit_stops_after_two_sessions() {
    let hosts = [ip(8, 1), ip(8, 2), ip(8, 3)];
    let zone = Zone::new()
        .mx("sess.test", 10, "mx1.sess.test")
        .mx("sess.test", 20, "mx2.sess.test")
        .mx("sess.test", 30, "mx3.sess.test")
        .a("mx1.sess.test", hosts[0])
        .a("mx2.sess.test", hosts[1])
        .a("mx3.sess.test", hosts[2]);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&hosts);
    let mut sinks = Vec::new();
    for host in hosts {
        let Some(sink) = sink_at(host, port, &["-c", "-r", "rcpt"]) else {
            return;
        };
        sinks.push(sink);
    }
    let conf = Conf::with(&dns).smtp("mx_session_limit", "2");
    send(&conf, &format!("sess.test:{port}"), "u@sess.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@sess.test",
            &relay("mx2.sess.test", hosts[1], port),
            "4.3.0",
            &format!(
                "host {} said: {SINK_SOFT} (in reply to RCPT TO command)",
                peer("mx2.sess.test", hosts[1])
            ),
        )],
    );
    let all: Vec<&Sink> = sinks.iter().collect();
    assert_eq!(
        wait_sessions(&all, &[1, 1, 0]),
        [1, 1, 0],
        "sessions per MX host"
    );
}

/// (8b) Handshake failures do not count towards `mx_session_limit`: with a
/// limit of 1, a primary that greets with 4xx does not use it up; the
/// second MX's session does, so its RCPT 4xx is final and the third MX is
/// never contacted (Postfix: "Don't count handshake errors towards the
/// session limit").
#[test]
fn mx_session_limit_does_not_count_failed_handshakes() {
    let hosts = [ip(20, 1), ip(20, 2), ip(20, 3)];
    let zone = Zone::new()
        .mx("hs.test", 10, "mx1.hs.test")
        .mx("hs.test", 20, "mx2.hs.test")
        .mx("hs.test", 30, "mx3.hs.test")
        .a("mx1.hs.test", hosts[0])
        .a("mx2.hs.test", hosts[1])
        .a("mx3.hs.test", hosts[2]);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&hosts);
    let Some(busy) = sink_at(hosts[0], port, &["-c", "-r", "connect"]) else {
        return;
    };
    let Some(soft) = sink_at(hosts[1], port, &["-c", "-r", "rcpt"]) else {
        return;
    };
    let Some(good) = sink_at(hosts[2], port, &["-c"]) else {
        return;
    };
    let conf = Conf::with(&dns).smtp("mx_session_limit", "1");
    send(&conf, &format!("hs.test:{port}"), "u@hs.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@hs.test",
            &relay("mx2.hs.test", hosts[1], port),
            "4.3.0",
            &format!(
                "host {} said: {SINK_SOFT} (in reply to RCPT TO command)",
                peer("mx2.hs.test", hosts[1])
            ),
        )],
    );
    assert_eq!(
        wait_sessions(&[&busy, &soft, &good], &[1, 1, 0]),
        [1, 1, 0],
        "sessions per MX host"
    );
}

/// (8c) A soft RCPT failure at the primary keeps the recipient for the
/// backup; when the backup refuses, the recipient is deferred with the
/// last reason (the connect error) and no relay, as Postfix's
/// smtp_sess_fail() does.
#[test]
fn soft_rcpt_failure_then_refused_backup_defers_with_the_last_reason() {
    let (mx1, mx2) = (ip(21, 1), ip(21, 2));
    let zone = Zone::new()
        .mx("keep.test", 10, "mx1.keep.test")
        .mx("keep.test", 20, "mx2.keep.test")
        .a("mx1.keep.test", mx1)
        .a("mx2.keep.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let _dead = Refusing::new(mx2, port);
    let Some(soft) = sink_at(mx1, port, &["-c", "-r", "rcpt"]) else {
        return;
    };
    send(
        &Conf::with(&dns),
        &format!("keep.test:{port}"),
        "u@keep.test",
    )
    .expect(
        DEFERRED,
        &[Line::deferred(
            "u@keep.test",
            "none",
            "4.4.1",
            &format!(
                "connect to {}:{port}: Connection refused",
                peer("mx2.keep.test", mx2)
            ),
        )],
    );
    assert_eq!(wait_sessions(&[&soft], &[1]), [1]);
}

/// (8d) The session limit ends a destination, not the delivery: with a
/// fallback relay configured the MX domain is not the final nexthop, so
/// the second soft RCPT failure is not final either and the fallback relay
/// takes the mail; the third MX is still never contacted.
#[test]
fn mx_session_limit_then_fallback_relay() {
    let hosts = [ip(25, 1), ip(25, 2), ip(25, 3)];
    let fallback = ip(25, 9);
    let zone = Zone::new()
        .mx("sessfb.test", 10, "mx1.sessfb.test")
        .mx("sessfb.test", 20, "mx2.sessfb.test")
        .mx("sessfb.test", 30, "mx3.sessfb.test")
        .a("mx1.sessfb.test", hosts[0])
        .a("mx2.sessfb.test", hosts[1])
        .a("mx3.sessfb.test", hosts[2]);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[hosts[0], hosts[1], hosts[2], fallback]);
    let mut sinks = Vec::new();
    for (host, args) in [
        (hosts[0], &["-c", "-r", "rcpt"][..]),
        (hosts[1], &["-c", "-r", "rcpt"][..]),
        (hosts[2], &["-c"][..]),
        (fallback, &["-c"][..]),
    ] {
        let Some(sink) = sink_at(host, port, args) else {
            return;
        };
        sinks.push(sink);
    }
    let conf = Conf::with(&dns)
        .smtp("mx_session_limit", "2")
        .fallback(&format!("[{fallback}]:{port}"));
    send(&conf, &format!("sessfb.test:{port}"), "u@sessfb.test").expect(
        SENT,
        &[Line::sent(
            "u@sessfb.test",
            &relay(&fallback.to_string(), fallback, port),
            "2.0.0",
            SINK_OK,
        )],
    );
    let all: Vec<&Sink> = sinks.iter().collect();
    assert_eq!(
        wait_sessions(&all, &[1, 1, 0, 1]),
        [1, 1, 0, 1],
        "sessions per MX host and at the fallback relay"
    );
}

/// (9) `mx_address_limit = 2`: four MX hosts that all greet with 4xx (no
/// session completes, so `mx_session_limit = 0` plays no part); exactly the
/// first two are connected, and the second one's greeting is final.
///
/// Evidence: in-process servers count the connections they accept (a dead
/// host cannot count the connections it refuses).
#[test]
fn mx_address_limit_stops_after_two_addresses() {
    let hosts = [ip(9, 1), ip(9, 2), ip(9, 3), ip(9, 4)];
    let mut zone = Zone::new();
    for (i, host) in hosts.iter().enumerate() {
        let name = format!("mx{}.limit.test", i + 1);
        zone = zone
            .mx("limit.test", 10 * (i as u16 + 1), &name)
            .a(&name, *host);
    }
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&hosts);
    let greeting = "450 4.3.2 Service busy";
    let counters: Vec<Counter> = hosts
        .iter()
        .map(|h| Counter::start(*h, port, greeting))
        .collect();
    let conf = Conf::with(&dns)
        .smtp("mx_address_limit", "2")
        .smtp("mx_session_limit", "0");
    send(&conf, &format!("limit.test:{port}"), "u@limit.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@limit.test",
            &relay("mx2.limit.test", hosts[1], port),
            "4.3.2",
            &format!(
                "host {} refused to talk to me: {greeting}",
                peer("mx2.limit.test", hosts[1])
            ),
        )],
    );
    let accepted: Vec<usize> = counters.iter().map(Counter::accepted).collect();
    assert_eq!(accepted, [1, 1, 0, 0], "connections per MX host");
}

/// (10) A 5xx greeting on the primary (skip_5xx_greeting, the default):
/// the backup MX takes the mail.
#[test]
fn greeting_5xx_on_the_primary_mx_mail_goes_to_the_backup() {
    let (mx1, mx2) = (ip(10, 1), ip(10, 2));
    let zone = Zone::new()
        .mx("greet.test", 10, "mx1.greet.test")
        .mx("greet.test", 20, "mx2.greet.test")
        .a("mx1.greet.test", mx1)
        .a("mx2.greet.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let Some(bad) = sink_at(mx1, port, &["-c", "-f", "connect"]) else {
        return;
    };
    let Some(good) = sink_at(mx2, port, &["-c"]) else {
        return;
    };
    send(
        &Conf::with(&dns),
        &format!("greet.test:{port}"),
        "u@greet.test",
    )
    .expect(
        SENT,
        &[Line::sent(
            "u@greet.test",
            &relay("mx2.greet.test", mx2, port),
            "2.0.0",
            SINK_OK,
        )],
    );
    assert_eq!(wait_sessions(&[&bad, &good], &[1, 1]), [1, 1]);
}

// ---------------------------------------------------------------------------
// Mail loops (port 25 only)
// ---------------------------------------------------------------------------

/// (11a) The only MX is 127.0.0.1 (ours: inet_interfaces = "all"): 5.4.6
/// without any connection, and no fallback relay. Same for the literal
/// `[127.0.0.1]` on port 25 (Postfix [V]: `mail for 127.0.0.1 loops back
/// to myself`).
///
/// Evidence of "no connection": a counting server on 127.0.0.1:25 when that
/// port is free (else only the result, which a connection would have
/// turned into 4.4.1), and a counting fallback relay.
#[test]
fn mx_or_literal_pointing_at_ourselves_bounces_5_4_6_without_connecting() {
    let fallback = ip(11, 9);
    let zone = Zone::new()
        .mx("loop.test", 10, "mx.loop.test")
        .a("mx.loop.test", Ipv4Addr::LOCALHOST);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let fallback_port = shared_port(&[fallback]);
    let relay_counter = Counter::start(fallback, fallback_port, "220 fallback.test ESMTP");
    let ourselves = match Counter::try_start(Ipv4Addr::LOCALHOST, 25, "220 ourselves.test ESMTP") {
        Ok(counter) => Some(counter),
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "note: cannot listen on 127.0.0.1:25 ({e}); not counting connections to it"
            );
            None
        }
    };
    let conf = Conf::with(&dns).fallback(&format!("[{fallback}]:{fallback_port}"));
    send(&conf, "loop.test", "u@loop.test").expect(
        BOUNCED,
        &[Line::bounced(
            "u@loop.test",
            "none",
            "5.4.6",
            "mail for loop.test loops back to myself",
        )],
    );
    send(&conf, "[127.0.0.1]", "u@loop.test").expect(
        BOUNCED,
        &[Line::bounced(
            "u@loop.test",
            "none",
            "5.4.6",
            "mail for 127.0.0.1 loops back to myself",
        )],
    );
    assert_eq!(relay_counter.accepted(), 0, "the fallback relay was used");
    if let Some(ourselves) = ourselves {
        assert_eq!(ourselves.accepted(), 0, "127.0.0.1:25 was connected");
    }
}

/// (11b) MX 10 is another host, MX 20 is ourselves: the list is cut at our
/// preference, the better MX gets the mail; when it refuses, the mail is
/// deferred and the fallback relay is not used (we are an MX, so this
/// destination is final).
#[test]
fn better_mx_than_ourselves_gets_the_mail_and_fallback_is_never_used() {
    let (good, dead, fallback) = (ip(12, 2), ip(12, 3), ip(12, 9));
    if !port_25_usable(good) {
        return;
    }
    let zone = Zone::new()
        .mx("better.test", 10, "mx1.better.test")
        .mx("better.test", 20, "mx2.better.test")
        .a("mx1.better.test", good)
        .a("mx2.better.test", Ipv4Addr::LOCALHOST)
        .mx("down.test", 10, "mx1.down.test")
        .mx("down.test", 20, "mx2.down.test")
        .a("mx1.down.test", dead)
        .a("mx2.down.test", Ipv4Addr::LOCALHOST);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let _dead = Refusing::new(dead, 25);
    let fallback_port = shared_port(&[fallback]);
    let relay_counter = Counter::start(fallback, fallback_port, "220 fallback.test ESMTP");
    let Some(_sink) = sink_at(good, 25, &[]) else {
        return;
    };
    let conf = Conf::with(&dns).fallback(&format!("[{fallback}]:{fallback_port}"));
    send(&conf, "better.test", "u@better.test").expect(
        SENT,
        &[Line::sent(
            "u@better.test",
            &relay("mx1.better.test", good, 25),
            "2.0.0",
            SINK_OK,
        )],
    );
    send(&conf, "down.test", "u@down.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@down.test",
            "none",
            "4.4.1",
            &format!(
                "connect to {}:25: Connection refused",
                peer("mx1.down.test", dead)
            ),
        )],
    );
    assert_eq!(relay_counter.accepted(), 0, "the fallback relay was used");
}

/// (11c) We are the backup MX and the primary has no address: 4.4.4
/// `unable to find primary relay for X`, no fallback relay.
#[test]
fn backup_mx_without_a_reachable_primary_defers_4_4_4() {
    let fallback = ip(13, 9);
    let zone = Zone::new()
        .mx("primary.test", 10, "mx1.primary.test")
        .mx("primary.test", 20, "mx2.primary.test")
        .a("mx2.primary.test", Ipv4Addr::LOCALHOST);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let fallback_port = shared_port(&[fallback]);
    let relay_counter = Counter::start(fallback, fallback_port, "220 fallback.test ESMTP");
    let conf = Conf::with(&dns).fallback(&format!("[{fallback}]:{fallback_port}"));
    send(&conf, "primary.test", "u@primary.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@primary.test",
            "none",
            "4.4.4",
            "unable to find primary relay for primary.test",
        )],
    );
    assert_eq!(relay_counter.accepted(), 0, "the fallback relay was used");
}

/// (11d) EHLO own-name check: a server that answers EHLO with our own name
/// is ourselves: 5.4.6 when it is the best MX; 4.4.6 (and deferred) when
/// it is a backup.
///
/// Postfix compares the EHLO name with `$myhostname` (see
/// `ehlo_own_name_check_uses_myhostname`); here `helo_name` is set to the
/// system host name as well, so the server's name is ours either way.
#[test]
fn server_answering_ehlo_with_our_own_name_is_a_mail_loop() {
    let (best, dead, backup) = (ip(14, 1), ip(14, 2), ip(14, 3));
    if !port_25_usable(best) {
        return;
    }
    let ours = hostname();
    let zone = Zone::new()
        .mx("ownname.test", 10, "mx.ownname.test")
        .a("mx.ownname.test", best)
        .mx("ownname2.test", 10, "mx1.ownname2.test")
        .mx("ownname2.test", 20, "mx2.ownname2.test")
        .a("mx1.ownname2.test", dead)
        .a("mx2.ownname2.test", backup);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let _dead = Refusing::new(dead, 25);
    let Some(_best_sink) = sink_at(best, 25, &["-h", &ours]) else {
        return;
    };
    let Some(_backup_sink) = sink_at(backup, 25, &["-h", &ours]) else {
        return;
    };
    let conf = Conf::with(&dns).smtp("helo_name", &toml_str(&ours));
    send(&conf, "ownname.test", "u@ownname.test").expect(
        BOUNCED,
        &[Line::bounced(
            "u@ownname.test",
            &relay("mx.ownname.test", best, 25),
            "5.4.6",
            "mail for ownname.test loops back to myself",
        )],
    );
    send(&conf, "ownname2.test", "u@ownname2.test").expect(
        DEFERRED,
        &[Line::deferred(
            "u@ownname2.test",
            &relay("mx2.ownname2.test", backup, 25),
            "4.4.6",
            "mail for ownname2.test loops back to myself",
        )],
    );
}

/// (11e) "Ourselves" is `inet_interfaces` (here an explicit list) plus
/// `proxy_interfaces`: an MX on either is a loop (5.4.6, no connection:
/// nothing listens there, so a connection would have given 4.4.1).
#[test]
fn listed_and_proxy_interfaces_count_as_ourselves() {
    let (listed, proxy) = (ip(22, 5), ip(22, 6));
    let zone = Zone::new()
        .mx("listed.test", 10, "mx.listed.test")
        .a("mx.listed.test", listed)
        .mx("proxy.test", 10, "mx.proxy.test")
        .a("mx.proxy.test", proxy);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let conf = Conf::with(&dns)
        .smtp("inet_interfaces", &toml_str(&listed.to_string()))
        .smtp(
            "proxy_interfaces",
            &format!("[{}]", toml_str(&proxy.to_string())),
        );
    for domain in ["listed.test", "proxy.test"] {
        send(&conf, domain, &format!("u@{domain}")).expect(
            BOUNCED,
            &[Line::bounced(
                &format!("u@{domain}"),
                "none",
                "5.4.6",
                &format!("mail for {domain} loops back to myself"),
            )],
        );
    }
}

/// Postfix's smtp_proto.c compares the first word of the EHLO reply with
/// `$myhostname` (`strcasecmp(word, var_myhostname)`), not with
/// `smtp_helo_name`: with `helo_name = "client.test"` and a server named
/// like this host, Postfix bounces 5.4.6; mailhop compares with both
/// `helo_name` and `$myhostname`.
#[test]
fn ehlo_own_name_check_uses_myhostname() {
    let best = ip(19, 1);
    if !port_25_usable(best) {
        return;
    }
    let zone = Zone::new()
        .mx("myname.test", 10, "mx.myname.test")
        .a("mx.myname.test", best);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let Some(_sink) = sink_at(best, 25, &["-h", &hostname()]) else {
        return;
    };
    let conf = Conf::with(&dns).smtp("helo_name", &toml_str("client.test"));
    send(&conf, "myname.test", "u@myname.test").expect(
        BOUNCED,
        &[Line::bounced(
            "u@myname.test",
            &relay("mx.myname.test", best, 25),
            "5.4.6",
            "mail for myname.test loops back to myself",
        )],
    );
}

/// Postfix checks the server's name only in an EHLO reply (the check sits
/// in the ESMTP feature parsing of smtp_proto.c); after EHLO is rejected
/// and HELO accepted, a HELO reply with our own name is not a loop, and
/// the mail is delivered.
#[test]
fn helo_reply_with_our_own_name_is_not_a_loop() {
    let best = ip(24, 1);
    if !port_25_usable(best) {
        return;
    }
    let ours = hostname();
    let zone = Zone::new()
        .mx("helo.test", 10, "mx.helo.test")
        .a("mx.helo.test", best);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    // -e: no ESMTP, EHLO is answered with 500, HELO with "250 OURS".
    let Some(_sink) = sink_at(best, 25, &["-e", "-h", &ours]) else {
        return;
    };
    let conf = Conf::with(&dns).smtp("helo_name", &toml_str(&ours));
    send(&conf, "helo.test", "u@helo.test").expect(
        SENT,
        &[Line::sent(
            "u@helo.test",
            &relay("mx.helo.test", best, 25),
            "2.0.0",
            SINK_OK,
        )],
    );
}

// ---------------------------------------------------------------------------
// Source address, timeouts, load sharing
// ---------------------------------------------------------------------------

/// (12) `bind_address` that is not ours (192.0.2.1, TEST-NET-1): with
/// `bind_address_enforce` 4.4.0 `server configuration error` (Postfix
/// [V]); without, a warning and the mail is sent.
#[test]
fn bind_address_enforce_defers_4_4_0_otherwise_the_mail_is_sent() {
    let host = ip(15, 1);
    let not_ours = Ipv4Addr::new(192, 0, 2, 1);
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
    assert!(
        probe
            .bind(&SockAddr::from(SocketAddrV4::new(not_ours, 0)))
            .is_err(),
        "{not_ours} is bindable here (a local address, or ip_nonlocal_bind): \
         the test needs an address that is not"
    );
    let Some(dns) = Dnsmasq::start(&Zone::new().a("bind.test", host)) else {
        return;
    };
    let port = shared_port(&[host]);
    let Some(sink) = sink_at(host, port, &["-c"]) else {
        return;
    };
    let nexthop = format!("bind.test:{port}");
    let conf = Conf::with(&dns).smtp("bind_address", &toml_str(&not_ours.to_string()));
    send(
        &conf.clone().smtp("bind_address_enforce", "true"),
        &nexthop,
        "u@bind.test",
    )
    .expect(
        DEFERRED,
        &[Line::deferred(
            "u@bind.test",
            "none",
            "4.4.0",
            "server configuration error",
        )],
    );
    let run = send(&conf, &nexthop, "u@bind.test");
    run.expect(
        SENT,
        &[Line::sent(
            "u@bind.test",
            &relay("bind.test", host, port),
            "2.0.0",
            SINK_OK,
        )],
    );
    assert!(
        run.stderr
            .contains(&format!("smtp_connect_addr: bind {not_ours}: ")),
        "no bind warning: {run:#?}"
    );
    // Only the second run reached the server.
    assert_eq!(wait_sessions(&[&sink], &[1]), [1]);
}

/// A loopback listener that silently drops new connection attempts: its
/// accept queue (backlog 0, which Linux takes as room for one) is full of
/// connections nobody accepts, and Linux drops SYNs to a listener whose
/// accept queue is full. No firewall needed.
struct Blackhole {
    _listener: Socket,
    _fillers: Vec<Socket>,
}

impl Blackhole {
    /// Fills the queue with connections (each bounded by a short timeout)
    /// until one times out: from then on, connects time out.
    fn new(addr: SocketAddrV4) -> Self {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
        listener.set_reuse_address(true).expect("SO_REUSEADDR");
        listener
            .bind(&SockAddr::from(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.listen(0).expect("listen with backlog 0");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            let filler = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
            match filler.connect_timeout(&SockAddr::from(addr), Duration::from_millis(200)) {
                Ok(()) => fillers.push(filler),
                Err(_) => {
                    return Self {
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
            }
        }
        panic!(
            "{addr}: the accept queue never filled up ({} connections)",
            fillers.len()
        );
    }
}

/// (13) A primary MX that drops SYNs: the connect times out after
/// `connect_timeout` (1 s) and the backup takes the mail, all within
/// connect_timeout + 1 s.
#[test]
fn blackholed_primary_mx_times_out_and_the_backup_gets_the_mail() {
    let (mx1, mx2) = (ip(16, 1), ip(16, 2));
    let zone = Zone::new()
        .mx("slowmx.test", 10, "mx1.slowmx.test")
        .mx("slowmx.test", 20, "mx2.slowmx.test")
        .a("mx1.slowmx.test", mx1)
        .a("mx2.slowmx.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let hole = SocketAddrV4::new(mx1, port);
    let _blackhole = Blackhole::new(hole);

    // First prove the premise: a plain connect times out, it is not refused.
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
    let started = Instant::now();
    let result = probe.connect_timeout(&SockAddr::from(hole), Duration::from_millis(500));
    let waited = started.elapsed();
    match result {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) => {}
        other => panic!("connect to the blackhole {hole}: {other:?} (expected a timeout)"),
    }
    assert!(
        waited >= Duration::from_millis(450),
        "the probe gave up after {waited:?}"
    );
    drop(probe);

    let Some(_good) = sink_at(mx2, port, &[]) else {
        return;
    };
    let conf = Conf::with(&dns).smtp("connect_timeout", &toml_str("1s"));
    let started = Instant::now();
    let run = send(&conf, &format!("slowmx.test:{port}"), "u@slowmx.test");
    let elapsed = started.elapsed();
    run.expect(
        SENT,
        &[Line::sent(
            "u@slowmx.test",
            &relay("mx2.slowmx.test", mx2, port),
            "2.0.0",
            SINK_OK,
        )],
    );
    assert!(
        run.stderr.contains(&format!(
            "connect to {}:{port}: Connection timed out",
            peer("mx1.slowmx.test", mx1)
        )),
        "the primary was not logged as timed out: {run:#?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(2),
        "delivery took {elapsed:?}; expected connect_timeout (1 s) plus little"
    );
}

/// (14) A name server that never answers (a UDP socket bound and never
/// read): 4.4.3 for the MX lookup after timeout × attempts (1 s × 2).
#[test]
fn unanswered_dns_defers_4_4_3_after_timeout_times_attempts() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP socket");
    let nameserver: SocketAddr = silent.local_addr().expect("local addr");
    let conf = Conf::new(&nameserver.to_string())
        .dns("timeout", &toml_str("1s"))
        .dns("attempts", "2");
    let started = Instant::now();
    let run = send(&conf, "slow.test:2525", "u@slow.test");
    let elapsed = started.elapsed();
    run.expect(
        DEFERRED,
        &[Line::deferred(
            "u@slow.test",
            "none",
            "4.4.3",
            "Host or domain name not found. Name service error for \
             name=slow.test type=MX: Host not found, try again",
        )],
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(3),
        "lookup took {elapsed:?}; expected timeout × attempts = 2 s"
    );
    drop(silent);
}

/// (15) Two MX hosts of equal preference share the load: 40 deliveries
/// through the library (a fresh Deliverer each) reach both, at least 5
/// each (a fair coin gives fewer than 5 of 40 with probability ~1e-7). The
/// sinks' `-c` counters agree with the reported relays.
#[test]
fn equal_preference_mx_hosts_share_the_load() {
    const RUNS: usize = 40;
    let (mx1, mx2) = (ip(18, 1), ip(18, 2));
    let zone = Zone::new()
        .mx("share.test", 10, "mx1.share.test")
        .mx("share.test", 10, "mx2.share.test")
        .a("mx1.share.test", mx1)
        .a("mx2.share.test", mx2);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[mx1, mx2]);
    let Some(sink1) = sink_at(mx1, port, &["-c"]) else {
        return;
    };
    let Some(sink2) = sink_at(mx2, port, &["-c"]) else {
        return;
    };
    let conf = Conf::with(&dns);
    let message = Message::Inline(common::SMALL_MESSAGE.to_vec());
    let facts = message.facts().expect("message facts");
    let nexthop = format!("share.test:{port}");
    let relays = [
        relay("mx1.share.test", mx1, port),
        relay("mx2.share.test", mx2, port),
    ];
    let mut counts = [0usize; 2];
    let started = Instant::now();
    for run in 0..RUNS {
        let deliverer = Deliverer::new(conf.config());
        let hop = deliverer.hop(&nexthop, Protocol::Smtp);
        let request = Request {
            protocol: Protocol::Smtp,
            hop: &hop,
            envelope: Envelope {
                requiretls: false,
                sender: "a@x.test".into(),
                recipients: vec![Recipient {
                    address: "u@share.test".into(),
                    orcpt: None,
                    notify: Notify::default(),
                }],
                envid: None,
                ret: None,
                smtputf8: false,
            },
            message: &message,
            facts,
            arrival: None,
            cache: mailhop::deliver::CacheUse::default(),
        };
        let mailhop::deliver::Delivery {
            settled, anomalies, ..
        } = deliverer.deliver(&request);
        assert_eq!(anomalies, 0, "run {run}: {settled:?}");
        let [one] = settled.as_slice() else {
            panic!("run {run}: {settled:?}");
        };
        assert_eq!(one.outcome.status, Status::Sent, "run {run}: {one:?}");
        let relay = one.outcome.relay.as_deref().unwrap_or("none");
        match relays.iter().position(|r| r == relay) {
            Some(i) => counts[i] += 1,
            None => panic!("run {run}: unexpected relay {relay}: {one:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        counts.iter().all(|&c| c >= 5),
        "deliveries per MX host: {counts:?}"
    );
    assert_eq!(
        wait_sessions(&[&sink1, &sink2], &counts),
        counts,
        "sink session counters vs reported relays"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "{RUNS} deliveries took {elapsed:?}"
    );
}
