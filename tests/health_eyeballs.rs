//! End-to-end tests of the connect order deviations of issue 14: the
//! address health memory (`[smtp] address_health`, a daemon whose workers
//! share it, across a SIGHUP reload) and Happy Eyeballs (`[smtp]
//! happy_eyeballs`, `mailhop send --direct` to a dual-stack MX host whose
//! IPv6 address drops SYNs).
//!
//! Peers: a per-test dnsmasq for the MX and address records, smtp-sink as
//! the live MX host, and a "blackhole" (a listening socket whose accept
//! queue is full, so Linux drops further SYNs and connects time out; no
//! firewall needed) as the dead one. Attempts at the dead address are
//! counted from the daemon's log: each one that ends is a "Connection timed
//! out" line (an attempt abandoned by a Happy Eyeballs race is an
//! "abandoned" line).
//!
//! Addressing: this file owns 127.26.N.0/24 (N per test). Contract: every
//! server is owned by a guard that stops it; every wait is bounded; without
//! dnsmasq or smtp-sink a test prints SKIPPED and passes, except under
//! `CI=true`, where it fails.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::dnsmasq::{Dnsmasq, Zone};
use common::{Blackhole, DEFAULT_TIMEOUTS, Delivery, Listen, Sink, Workdir, shared_port};
use nix::sys::signal::Signal;
use serde_json::json;

/// The `[smtp]` timeouts of the harness with this connect timeout, as TOML
/// lines.
fn smtp_timeouts(connect: &str) -> String {
    DEFAULT_TIMEOUTS
        .iter()
        .map(|&(k, v)| {
            let v = if k == "connect_timeout" { connect } else { v };
            format!("{k} = {v:?}\n")
        })
        .collect()
}

/// A domain whose primary MX (127.26.NET.1) drops SYNs and whose backup
/// (127.26.NET.2) is an smtp-sink, both on one port, served by dnsmasq;
/// None (after the harness's skip message) without the peers.
struct DeadPrimary {
    dns: Dnsmasq,
    mx2: Ipv4Addr,
    port: u16,
    /// `DOMAIN:PORT`.
    nexthop: String,
    /// The log text of a connect that timed out at the primary.
    dead: String,
    _hole: Blackhole,
    _sink: Sink,
}

impl DeadPrimary {
    fn start(net: u8, domain: &str) -> Option<Self> {
        let (mx1, mx2) = (
            Ipv4Addr::new(127, 26, net, 1),
            Ipv4Addr::new(127, 26, net, 2),
        );
        let zone = Zone::new()
            .mx(domain, 10, &format!("mx1.{domain}"))
            .mx(domain, 20, &format!("mx2.{domain}"))
            .a(&format!("mx1.{domain}"), mx1)
            .a(&format!("mx2.{domain}"), mx2);
        let dns = Dnsmasq::start(&zone)?;
        let port = shared_port(&[mx1.into(), mx2.into()]);
        let hole = Blackhole::new(SocketAddr::from((mx1, port)));
        let sink = Sink::start(Listen::TcpAt(SocketAddrV4::new(mx2, port)), &[])?;
        Some(Self {
            dns,
            mx2,
            port,
            nexthop: format!("{domain}:{port}"),
            dead: format!("connect to mx1.{domain}[{mx1}]:{port}: Connection timed out"),
            _hole: hole,
            _sink: sink,
        })
    }
}

/// How many times `needle` occurs in the daemon's log.
fn count(daemon: &Daemon, needle: &str) -> usize {
    daemon.log().matches(needle).count()
}

/// Submits one job to `rcpt` via `nexthop` and returns its single
/// recipient result and how long the answer took.
fn deliver(daemon: &Daemon, id: &str, nexthop: &str, rcpt: &str) -> (serde_json::Value, Duration) {
    let job = json!({
        "id": id,
        "nexthop": nexthop,
        "sender": "a@x.test",
        "recipients": [{"address": rcpt}],
        "message": {"data": "Subject: health\n\nhi\n"},
    });
    let started = Instant::now();
    let answers = daemon.submit(&[job]);
    let elapsed = started.elapsed();
    let [answer] = answers.as_slice() else {
        panic!("{answers:?}");
    };
    (answer["recipients"][0].clone(), elapsed)
}

/// A primary MX address that drops SYNs and a live backup, delivered to by
/// one daemon (2 workers sharing the memory): the first job pays the
/// connect timeout (1 s); later jobs within `address_health_time` (4 s) go
/// to the backup first, even after a SIGHUP reload, without another
/// attempt at the dead address; once the period is over, Postfix's order
/// is back (the dead address is tried, and times out, first again). With
/// `address_health = false` every job pays the timeout.
#[test]
fn a_blackholed_mx_costs_one_connect_timeout_per_health_period() {
    let Some(site) = DeadPrimary::start(1, "health.test") else {
        return;
    };
    let (dns, mx2, port) = (&site.dns, site.mx2, site.port);
    let (nexthop, dead) = (site.nexthop.clone(), site.dead.clone());
    let live = format!("mx2.health.test[{mx2}]:{port}");
    for health in [true, false] {
        let work = Workdir::with_prefix("mailhop-health-");
        let text = format!(
            "[smtp]\n{}address_health = {health}\naddress_health_time = \"4s\"\n\
             happy_eyeballs = false\n\n[dns]\nnameservers = [{:?}]\ntimeout = \"1s\"\n\
             attempts = 1\n\n[daemon]\nsocket = {:?}\nworkers = 2\nqueue_capacity = 8\n",
            smtp_timeouts("1s"),
            dns.nameserver(),
            work.path().join("m.sock").display().to_string()
        );
        let daemon = Daemon::start_text(&work, &text, Duration::from_secs(20)).owning(work);
        let first_failure = Instant::now();
        let (result, elapsed) = deliver(&daemon, "J1", &nexthop, "u@health.test");
        eprintln!("address_health = {health}: job 1 took {elapsed:?}");
        assert_eq!(result["status"], "sent", "{result}");
        assert_eq!(result["relay"], live, "{result}");
        assert!(
            elapsed >= Duration::from_millis(900),
            "the first job took {elapsed:?}: it should pay the connect timeout"
        );
        assert_eq!(count(&daemon, &dead), 1, "{}", daemon.log());

        for n in 2..=4 {
            if n == 4 {
                // The memory survives a reload (the configuration is the same).
                daemon.signal(Signal::SIGHUP);
                daemon.wait_log("reload: configuration reloaded");
            }
            let (result, elapsed) = deliver(&daemon, &format!("J{n}"), &nexthop, "u@health.test");
            eprintln!("address_health = {health}: job {n} took {elapsed:?}");
            assert_eq!(result["status"], "sent", "{result}");
            assert_eq!(result["relay"], live, "{result}");
            let attempts = count(&daemon, &dead);
            if health {
                assert!(
                    elapsed < Duration::from_millis(700),
                    "job {n} took {elapsed:?} with the dead address remembered"
                );
                assert_eq!(attempts, 1, "job {n}: {}", daemon.log());
            } else {
                assert!(
                    elapsed >= Duration::from_millis(900),
                    "job {n}: {elapsed:?}"
                );
                assert_eq!(attempts, n, "job {n}: {}", daemon.log());
            }
        }
        if !health {
            continue;
        }
        // After the period (counted from the end of the first job's
        // timeout): Postfix's order again.
        let wait = Duration::from_millis(5300).saturating_sub(first_failure.elapsed());
        thread::sleep(wait);
        let (result, elapsed) = deliver(&daemon, "J5", &nexthop, "u@health.test");
        eprintln!("address_health = {health}: job 5 (after the period) took {elapsed:?}");
        assert_eq!(result["status"], "sent", "{result}");
        assert_eq!(result["relay"], live, "{result}");
        assert!(
            elapsed >= Duration::from_millis(900),
            "after the period the dead address is tried first again: {elapsed:?}"
        );
        assert_eq!(count(&daemon, &dead), 2, "{}", daemon.log());
    }
}

/// A dual-stack MX host (AAAA ::1 that drops SYNs, A 127.26.2.1 live; IPv6
/// preferred so it is tried first): with Happy Eyeballs the IPv4 attempt
/// starts 250 ms after the pending IPv6 one and wins, far below the
/// connect timeout (3 s), and the IPv6 attempt is logged as abandoned;
/// without, the job waits the connect timeout, as Postfix's sequential
/// connects do.
#[test]
fn happy_eyeballs_delivers_well_before_a_dead_ipv6_address_times_out() {
    let v4 = Ipv4Addr::new(127, 26, 2, 1);
    let v6: IpAddr = "::1".parse().expect("::1");
    if TcpListener::bind((v6, 0)).is_err() {
        common::skip("IPv6 loopback (::1) unavailable");
        return;
    }
    let zone = Zone::new()
        .mx("he.test", 10, "dual.he.test")
        .host("dual.he.test", &[v6, IpAddr::V4(v4)]);
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let port = shared_port(&[v6, v4.into()]);
    let _hole = Blackhole::new(SocketAddr::new(v6, port));
    let Some(_sink) = Sink::start(Listen::TcpAt(SocketAddrV4::new(v4, port)), &[]) else {
        return;
    };
    let relay = format!("dual.he.test[{v4}]:{port}");
    let timed_out = format!("connect to dual.he.test[::1]:{port}: Connection timed out");
    let abandoned =
        format!("connect to dual.he.test[::1]: abandoned, dual.he.test[{v4}] connected first");
    for happy_eyeballs in [true, false] {
        let config = format!(
            "[smtp]\n{}happy_eyeballs = {happy_eyeballs}\naddress_health = false\n\n\
             [dns]\nnameservers = [{:?}]\ntimeout = \"1s\"\nattempts = 1\n\
             address_preference = \"ipv6\"\n",
            smtp_timeouts("3s"),
            dns.nameserver()
        );
        let run = Delivery::to(&format!("he.test:{port}"))
            .raw_config(&config)
            .rcpt("u@he.test")
            .run();
        let lines = run.lines();
        eprintln!(
            "happy_eyeballs = {happy_eyeballs}: mailhop send took {:?}",
            run.elapsed
        );
        assert_eq!(run.code, 0, "{run:#?}");
        assert_eq!(lines.len(), 1, "{run:#?}");
        assert_eq!(
            (lines[0].status.as_str(), lines[0].relay.as_str()),
            ("sent", relay.as_str())
        );
        if happy_eyeballs {
            assert!(
                run.elapsed < Duration::from_millis(1500),
                "with Happy Eyeballs the job took {:?}: {run:#?}",
                run.elapsed
            );
            assert!(run.stderr.contains(&abandoned), "{run:#?}");
            assert!(!run.stderr.contains(&timed_out), "{run:#?}");
        } else {
            assert!(
                run.elapsed >= Duration::from_millis(2900),
                "without Happy Eyeballs the job took {:?}: {run:#?}",
                run.elapsed
            );
            assert!(run.stderr.contains(&timed_out), "{run:#?}");
        }
    }
}

#[test]
fn a_burst_of_jobs_at_first_contact_tries_a_blackholed_mx_once() {
    let Some(site) = DeadPrimary::start(3, "burst.test") else {
        return;
    };
    let (dns, nexthop, dead) = (&site.dns, site.nexthop.clone(), site.dead.clone());
    let work = Workdir::with_prefix("mailhop-health-");
    let text = format!(
        "[smtp]\n{}happy_eyeballs = false\n\n[dns]\nnameservers = [{:?}]\ntimeout = \"1s\"\n\
         attempts = 1\n\n[daemon]\nsocket = {:?}\nworkers = 8\nqueue_capacity = 64\n\n\
         [shaping]\ninitial_destination_concurrency = 8\n",
        smtp_timeouts("2s"),
        dns.nameserver(),
        work.path().join("m.sock").display().to_string()
    );
    let daemon = Daemon::start_text(&work, &text, Duration::from_secs(30)).owning(work);
    // Eight jobs at once, then eight more while the first connect to the
    // dead primary is still pending: one of them pays the timeout, the
    // others go to the backup at once.
    let mut client = daemon.client();
    for n in 0..16 {
        let job = serde_json::json!({
            "id": format!("B{n}"),
            "nexthop": nexthop,
            "sender": "a@x.test",
            "recipients": [{"address": format!("u{n}@burst.test")}],
            "message": {"data": "Subject: burst\r\n\r\nhello\r\n"},
        });
        client.send(&job.to_string());
        if n == 7 {
            thread::sleep(Duration::from_millis(300));
        }
    }
    let answers = client.answers(16);
    assert!(
        answers
            .values()
            .all(|a| a["recipients"][0]["status"] == "sent"),
        "{answers:?}"
    );
    assert_eq!(count(&daemon, &dead), 1, "{}", daemon.log());
}
