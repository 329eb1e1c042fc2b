//! Tests for the MX/address list builder: a table-driven fake resolver that
//! counts its queries, seeded RNGs, and exact DSN codes and texts.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::dns::Answer;

const NOT_FOUND: &str = "Host not found";
const TRY_AGAIN: &str = "Host not found, try again";
const NO_RECOVERY: &str = "Non-recoverable error";

/// Answers from tables; a name missing from a table is NXDOMAIN.
#[derive(Default)]
struct FakeDns {
    mx: HashMap<String, Result<Vec<MxRecord>, DnsError>>,
    a: HashMap<String, Result<Vec<Ipv4Addr>, DnsError>>,
    aaaa: HashMap<String, Result<Vec<Ipv6Addr>, DnsError>>,
    calls: Mutex<Vec<(QueryType, String)>>,
}

fn nxdomain() -> DnsError {
    DnsError::new(DnsErrorKind::NotFound, NOT_FOUND)
}

fn answer<T: Clone>(
    table: &HashMap<String, Result<Vec<T>, DnsError>>,
    name: &str,
) -> Result<Answer<T>, DnsError> {
    match table.get(name) {
        Some(Ok(records)) => Ok(Answer {
            records: records.clone(),
            authenticated: false,
            canonical: None,
        }),
        Some(Err(err)) => Err(err.clone()),
        None => Err(nxdomain()),
    }
}

impl FakeDns {
    fn new() -> Self {
        Self::default()
    }

    fn with_mx(mut self, name: &str, records: &[(u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(preference, exchange)| MxRecord {
                preference,
                exchange: exchange.to_owned(),
            })
            .collect();
        self.mx.insert(name.to_owned(), Ok(records));
        self
    }

    fn with_mx_err(mut self, name: &str, kind: DnsErrorKind, reason: &str) -> Self {
        self.mx
            .insert(name.to_owned(), Err(DnsError::new(kind, reason)));
        self
    }

    fn with_a(mut self, name: &str, addrs: &[&str]) -> Self {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.a.insert(name.to_owned(), Ok(addrs));
        self
    }

    fn with_a_err(mut self, name: &str, kind: DnsErrorKind, reason: &str) -> Self {
        self.a
            .insert(name.to_owned(), Err(DnsError::new(kind, reason)));
        self
    }

    fn with_aaaa(mut self, name: &str, addrs: &[&str]) -> Self {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.aaaa.insert(name.to_owned(), Ok(addrs));
        self
    }

    fn with_aaaa_err(mut self, name: &str, kind: DnsErrorKind, reason: &str) -> Self {
        self.aaaa
            .insert(name.to_owned(), Err(DnsError::new(kind, reason)));
        self
    }

    fn log(&self, qtype: QueryType, name: &str) {
        self.calls.lock().unwrap().push((qtype, name.to_owned()));
    }

    fn calls(&self) -> Vec<(QueryType, String)> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, qtype: QueryType) -> usize {
        self.calls().iter().filter(|(t, _)| *t == qtype).count()
    }
}

impl DnsLookup for FakeDns {
    fn mx(&self, name: &str) -> Result<Answer<MxRecord>, DnsError> {
        self.log(QueryType::Mx, name);
        answer(&self.mx, name)
    }

    fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        self.log(QueryType::A, name);
        answer(&self.a, name)
    }

    fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        self.log(QueryType::Aaaa, name);
        answer(&self.aaaa, name)
    }
}

/// Deterministic settings: no shuffling, no balancing, loop detection on.
fn plain() -> MxSettings {
    MxSettings {
        randomize_addresses: false,
        balance_inet_protocols: false,
        ..MxSettings::default()
    }
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn cand(host: &str, addr: &str, preference: u32) -> Candidate {
    Candidate {
        canonical: None,
        addr_secure: false,
        host: host.to_owned(),
        addr: addr.parse().unwrap(),
        preference,
        host_is_ip: host.parse::<IpAddr>().is_ok(),
    }
}

fn domain(dns: &FakeDns, name: &str, settings: &MxSettings) -> Result<Route, RouteError> {
    domain_route(name, dns, settings, &mut rng(1))
}

fn host(dns: &FakeDns, name: &str, settings: &MxSettings) -> Result<Route, RouteError> {
    host_route(name, dns, settings, &mut rng(1))
}

fn addrs(route: &Route) -> Vec<String> {
    route
        .candidates
        .iter()
        .map(|c| c.addr.to_string())
        .collect()
}

#[track_caller]
fn assert_dsn(result: Result<Route, RouteError>, code: &str, text: &str) {
    match result {
        Ok(route) => panic!("expected {code} {text}, got {route:?}"),
        Err(error) => {
            let dsn = error.dsn();
            assert_eq!(dsn.code.to_string(), code, "code of {dsn}");
            assert_eq!(dsn.text, text);
        }
    }
}

fn not_found_text(name: &str, qtype: &str, reason: &str) -> String {
    format!(
        "Host or domain name not found. Name service error for name={name} type={qtype}: {reason}"
    )
}

// ---------------------------------------------------------------- ordering

#[test]
fn mx_hosts_are_sorted_by_preference() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(20, "b.mx"), (10, "a.mx"), (30, "c.mx")])
        .with_a("a.mx", &["192.0.2.1"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_a("c.mx", &["192.0.2.3"]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(
        route,
        Route {
            mx_secure: Some(false),
            candidates: vec![
                cand("a.mx", "192.0.2.1", 10),
                cand("b.mx", "192.0.2.2", 20),
                cand("c.mx", "192.0.2.3", 30),
            ],
            i_am_mx: false,
            best_preference: 10,
        }
    );
    // MX hosts are looked up in preference order, A before AAAA.
    assert_eq!(
        dns.calls(),
        vec![
            (QueryType::Mx, "example.com".to_owned()),
            (QueryType::A, "a.mx".to_owned()),
            (QueryType::Aaaa, "a.mx".to_owned()),
            (QueryType::A, "b.mx".to_owned()),
            (QueryType::Aaaa, "b.mx".to_owned()),
            (QueryType::A, "c.mx".to_owned()),
            (QueryType::Aaaa, "c.mx".to_owned()),
        ]
    );
}

#[test]
fn shuffling_never_breaks_preference_order() {
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(30, "c.mx"), (10, "a.mx"), (20, "b.mx"), (10, "a2.mx")],
        )
        .with_a("a.mx", &["192.0.2.1", "192.0.2.11"])
        .with_a("a2.mx", &["192.0.2.21"])
        .with_a("b.mx", &["192.0.2.2", "192.0.2.12"])
        .with_a("c.mx", &["192.0.2.3"]);
    let settings = MxSettings {
        randomize_addresses: true,
        ..plain()
    };
    for seed in 0..200 {
        let route = domain_route("example.com", &dns, &settings, &mut rng(seed)).unwrap();
        let prefs: Vec<u32> = route.candidates.iter().map(|c| c.preference).collect();
        assert_eq!(prefs, vec![10, 10, 10, 20, 20, 30], "seed {seed}");
        assert_eq!(route.best_preference, 10);
    }
}

#[test]
fn without_randomizing_dns_order_is_kept_within_a_preference() {
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(10, "x.mx"), (5, "w.mx"), (10, "y.mx"), (10, "z.mx")],
        )
        .with_a("w.mx", &["192.0.2.9"])
        .with_a("x.mx", &["192.0.2.3", "192.0.2.1"])
        .with_a("y.mx", &["192.0.2.2"])
        .with_aaaa("y.mx", &["2001:db8::2"])
        .with_a("z.mx", &["192.0.2.4"]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(
        route.candidates,
        vec![
            cand("w.mx", "192.0.2.9", 5),
            cand("x.mx", "192.0.2.3", 10),
            cand("x.mx", "192.0.2.1", 10),
            cand("y.mx", "192.0.2.2", 10),
            cand("y.mx", "2001:db8::2", 10),
            cand("z.mx", "192.0.2.4", 10),
        ]
    );
}

#[test]
fn equal_preference_hosts_are_shuffled_uniformly() {
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(10, "a.mx"), (10, "b.mx"), (10, "c.mx"), (20, "backup.mx")],
        )
        .with_a("a.mx", &["192.0.2.1"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_a("c.mx", &["192.0.2.3"])
        .with_a("backup.mx", &["192.0.2.9"]);
    let settings = MxSettings {
        randomize_addresses: true,
        ..MxSettings::default()
    };
    let mut permutations: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..1000 {
        let route = domain_route("example.com", &dns, &settings, &mut rng(seed)).unwrap();
        let hosts: Vec<String> = route.candidates.iter().map(|c| c.host.clone()).collect();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[3], "backup.mx", "seed {seed}");
        *first.entry(hosts[0].clone()).or_default() += 1;
        *permutations.entry(hosts[..3].to_vec()).or_default() += 1;
    }
    assert_eq!(permutations.len(), 6, "{permutations:?}");
    assert_eq!(first.len(), 3);
    for (host, count) in &first {
        assert!(
            (250..=420).contains(count),
            "{host} first {count} times in 1000"
        );
    }
}

#[test]
fn shuffle_depends_only_on_the_injected_rng() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a(
            "a.mx",
            &["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"],
        );
    let settings = MxSettings {
        randomize_addresses: true,
        ..plain()
    };
    let one = domain_route("example.com", &dns, &settings, &mut rng(42)).unwrap();
    let two = domain_route("example.com", &dns, &settings, &mut rng(42)).unwrap();
    assert_eq!(one, two);
    let orders: std::collections::BTreeSet<Vec<String>> = (0..50)
        .map(|seed| addrs(&domain_route("example.com", &dns, &settings, &mut rng(seed)).unwrap()))
        .collect();
    assert!(orders.len() > 1, "addresses of one host are shuffled too");
}

fn dual_stack_dns() -> FakeDns {
    FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")])
        .with_a("a.mx", &["192.0.2.1"])
        .with_aaaa("a.mx", &["2001:db8::1"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_aaaa("b.mx", &["2001:db8::2"])
}

#[test]
fn address_preference_any_keeps_lookup_order() {
    let route = domain(&dual_stack_dns(), "example.com", &plain()).unwrap();
    assert_eq!(
        addrs(&route),
        ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"]
    );
}

#[test]
fn address_preference_ipv6_puts_ipv6_first_within_a_preference() {
    let settings = MxSettings {
        address_preference: AddressPreference::Ipv6,
        ..plain()
    };
    let route = domain(&dual_stack_dns(), "example.com", &settings).unwrap();
    assert_eq!(
        addrs(&route),
        ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"]
    );
}

#[test]
fn address_preference_ipv4_puts_ipv4_first_within_a_preference() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")])
        .with_aaaa("a.mx", &["2001:db8::1", "2001:db8::11"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_aaaa("b.mx", &["2001:db8::2"])
        .with_mx("other.example", &[(10, "c.mx"), (10, "d.mx")])
        .with_aaaa("c.mx", &["2001:db8::3"])
        .with_a("d.mx", &["192.0.2.4"]);
    let settings = MxSettings {
        address_preference: AddressPreference::Ipv4,
        randomize_addresses: true,
        ..plain()
    };
    for seed in 0..50 {
        let mut r = rng(seed);
        let route = domain_route("example.com", &dns, &settings, &mut r).unwrap();
        let v: Vec<String> = addrs(&route);
        // Preference dominates the family.
        assert_eq!(v[2], "192.0.2.2", "seed {seed}: {v:?}");
        assert_eq!(v[3], "2001:db8::2", "seed {seed}: {v:?}");
        let route = domain_route("other.example", &dns, &settings, &mut r).unwrap();
        assert_eq!(addrs(&route), ["192.0.2.4", "2001:db8::3"], "seed {seed}");
    }
}

// ---------------------------------------------------------------- balancing

fn balanced(settings_limit: usize, v4: &[&str], v6: &[&str], v6_first: bool) -> Vec<String> {
    // One MX host per family so that the families come out in blocks:
    // pref 10 for the first family, 20 for the second.
    let (first, second) = if v6_first { (20, 10) } else { (10, 20) };
    let dns = FakeDns::new()
        .with_mx("example.com", &[(first, "four.mx"), (second, "six.mx")])
        .with_a("four.mx", v4)
        .with_aaaa("six.mx", v6);
    let settings = MxSettings {
        balance_inet_protocols: true,
        mx_address_limit: settings_limit,
        ..plain()
    };
    addrs(&domain(&dns, "example.com", &settings).unwrap())
}

#[test]
fn balance_few_ipv4_keeps_all_ipv4() {
    // L=5, 6 IPv6 + 1 IPv4: v4 <= L/2 ⇒ keep the IPv4, fill with 4 IPv6.
    let v6 = [
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8::3",
        "2001:db8::4",
        "2001:db8::5",
        "2001:db8::6",
    ];
    assert_eq!(
        balanced(5, &["192.0.2.1"], &v6, true),
        [
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8::3",
            "2001:db8::4",
            "192.0.2.1"
        ]
    );
}

#[test]
fn balance_few_ipv6_keeps_all_ipv6() {
    // L=5, 2 IPv6 + 6 IPv4: v6 <= L/2 ⇒ keep both IPv6 and 3 IPv4.
    let v4 = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
        "192.0.2.6",
    ];
    assert_eq!(
        balanced(5, &v4, &["2001:db8::1", "2001:db8::2"], false),
        [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "2001:db8::1",
            "2001:db8::2"
        ]
    );
}

const FOUR_V4: [&str; 4] = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
const FOUR_V6: [&str; 4] = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4"];

#[test]
fn balance_both_many_first_ipv4_gets_the_odd_slot() {
    // 4 + 4, first is IPv4: v4 = (5 + 1) / 2 = 3, v6 = 2.
    assert_eq!(
        balanced(5, &FOUR_V4, &FOUR_V6, false),
        [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "2001:db8::1",
            "2001:db8::2"
        ]
    );
}

#[test]
fn balance_both_many_first_ipv6_gets_the_odd_slot() {
    // 4 + 4, first is IPv6: v4 = 5 / 2 = 2, v6 = 3.
    assert_eq!(
        balanced(5, &FOUR_V4, &FOUR_V6, true),
        [
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8::3",
            "192.0.2.1",
            "192.0.2.2"
        ]
    );
}

#[test]
fn balance_keeps_interleaved_order() {
    // Kept entries stay where they were: [4 6 4 6 4 6 4 6], L=3, first v4:
    // v4 = (3 + 1) / 2 = 2, v6 = 1.
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(10, "a.mx"), (20, "b.mx"), (30, "c.mx"), (40, "d.mx")],
        )
        .with_a("a.mx", &["192.0.2.1"])
        .with_aaaa("a.mx", &["2001:db8::1"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_aaaa("b.mx", &["2001:db8::2"])
        .with_a("c.mx", &["192.0.2.3"])
        .with_aaaa("c.mx", &["2001:db8::3"])
        .with_a("d.mx", &["192.0.2.4"])
        .with_aaaa("d.mx", &["2001:db8::4"]);
    let settings = MxSettings {
        balance_inet_protocols: true,
        mx_address_limit: 3,
        ..plain()
    };
    let route = domain(&dns, "example.com", &settings).unwrap();
    assert_eq!(
        route.candidates,
        vec![
            cand("a.mx", "192.0.2.1", 10),
            cand("a.mx", "2001:db8::1", 10),
            cand("b.mx", "192.0.2.2", 20),
        ]
    );
}

#[test]
fn balance_leaves_short_and_single_family_lists_alone() {
    // Shorter than L.
    assert_eq!(
        balanced(5, &FOUR_V4[..3], &FOUR_V6[..1], false),
        ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"]
    );
    // Exactly L.
    assert_eq!(
        balanced(5, &FOUR_V4[..3], &FOUR_V6[..2], true),
        [
            "2001:db8::1",
            "2001:db8::2",
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3"
        ]
    );
    // One family only, longer than L: untouched (the caller enforces L).
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a("a.mx", &FOUR_V4)
        .with_mx("six.example", &[(10, "b.mx")])
        .with_aaaa("b.mx", &FOUR_V6);
    let settings = MxSettings {
        balance_inet_protocols: true,
        mx_address_limit: 2,
        ..plain()
    };
    assert_eq!(
        addrs(&domain(&dns, "example.com", &settings).unwrap()),
        FOUR_V4
    );
    assert_eq!(
        addrs(&domain(&dns, "six.example", &settings).unwrap()),
        FOUR_V6
    );
}

#[test]
fn balance_off_or_unlimited_keeps_everything() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a("a.mx", &FOUR_V4)
        .with_aaaa("a.mx", &FOUR_V6);
    for settings in [
        MxSettings {
            balance_inet_protocols: false,
            mx_address_limit: 5,
            ..plain()
        },
        MxSettings {
            balance_inet_protocols: true,
            mx_address_limit: 0,
            ..plain()
        },
    ] {
        assert_eq!(
            domain(&dns, "example.com", &settings)
                .unwrap()
                .candidates
                .len(),
            8
        );
    }
}

#[test]
fn host_route_is_balanced_too() {
    let dns = FakeDns::new()
        .with_a("relay.example", &FOUR_V4)
        .with_aaaa("relay.example", &FOUR_V6);
    let settings = MxSettings {
        balance_inet_protocols: true,
        mx_address_limit: 3,
        ..plain()
    };
    let route = host(&dns, "relay.example", &settings).unwrap();
    assert_eq!(addrs(&route), ["192.0.2.1", "192.0.2.2", "2001:db8::1"]);
    assert!(route.candidates.iter().all(|c| c.host == "relay.example"));
}

// ---------------------------------------------------------------- MX answers

#[test]
fn null_mx_bounces_without_address_lookups() {
    let dns = FakeDns::new()
        .with_mx("nullmx.example", &[(0, "")])
        .with_a("nullmx.example", &["192.0.2.1"]);
    assert_dsn(
        domain(&dns, "nullmx.example", &plain()),
        "5.1.0",
        "Domain nullmx.example does not accept mail (nullMX)",
    );
    assert_eq!(
        dns.calls(),
        vec![(QueryType::Mx, "nullmx.example".to_owned())]
    );
}

#[test]
fn null_mx_among_other_records_still_bounces() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (0, "")])
        .with_a("a.mx", &["192.0.2.1"]);
    assert_dsn(
        domain(&dns, "example.com", &plain()),
        "5.1.0",
        "Domain example.com does not accept mail (nullMX)",
    );
    assert_eq!(dns.count(QueryType::A), 0);
}

#[test]
fn nxdomain_mx_uses_the_domain_as_implicit_mx() {
    let dns = FakeDns::new()
        .with_a("example.com", &["192.0.2.1"])
        .with_aaaa("example.com", &["2001:db8::1"]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(
        route,
        Route {
            mx_secure: None,
            candidates: vec![
                cand("example.com", "192.0.2.1", 0),
                cand("example.com", "2001:db8::1", 0),
            ],
            i_am_mx: false,
            best_preference: 0,
        }
    );
    assert_eq!(
        dns.calls(),
        vec![
            (QueryType::Mx, "example.com".to_owned()),
            (QueryType::A, "example.com".to_owned()),
            (QueryType::Aaaa, "example.com".to_owned()),
        ]
    );
}

#[test]
fn nodata_mx_uses_the_domain_as_implicit_mx() {
    let dns = FakeDns::new()
        .with_mx_err(
            "example.com",
            DnsErrorKind::NoData,
            "Host found but no data record of type MX",
        )
        .with_a("example.com", &["192.0.2.1"]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(route.candidates, vec![cand("example.com", "192.0.2.1", 0)]);
    assert!(!route.i_am_mx);
}

#[test]
fn nxdomain_everywhere_bounces_like_postfix() {
    // Verified on Postfix 3.7 with inet_protocols = ipv4.
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&FakeDns::new(), "nxdomain.invalid", &settings),
        "5.4.4",
        "Host or domain name not found. Name service error for name=nxdomain.invalid type=A: Host not found",
    );
}

#[test]
fn nxdomain_on_both_families_reports_the_aaaa_query() {
    // dns_lookup_rv(): on equal status the later query's text is reported.
    assert_dsn(
        domain(&FakeDns::new(), "nxdomain.invalid", &plain()),
        "5.4.4",
        &not_found_text("nxdomain.invalid", "AAAA", NOT_FOUND),
    );
}

#[test]
fn mx_retry_defers() {
    let dns = FakeDns::new()
        .with_mx_err("example.com", DnsErrorKind::Retry, TRY_AGAIN)
        .with_a("example.com", &["192.0.2.1"]);
    assert_dsn(
        domain(&dns, "example.com", &plain()),
        "4.4.3",
        "Host or domain name not found. Name service error for name=example.com type=MX: Host not found, try again",
    );
    assert_eq!(dns.calls(), vec![(QueryType::Mx, "example.com".to_owned())]);
}

#[test]
fn ignored_mx_lookup_errors_fall_back_to_the_host() {
    for kind in [
        DnsErrorKind::Retry,
        DnsErrorKind::Fail,
        DnsErrorKind::Invalid,
    ] {
        let dns = FakeDns::new()
            .with_mx_err("example.com", kind, "whatever")
            .with_a("example.com", &["192.0.2.1"]);
        let settings = MxSettings {
            ignore_mx_lookup_error: true,
            ..plain()
        };
        let route = domain(&dns, "example.com", &settings).unwrap();
        assert_eq!(
            route.candidates,
            vec![cand("example.com", "192.0.2.1", 0)],
            "{kind:?}"
        );
        assert_eq!(dns.count(QueryType::A), 1);
    }
}

#[test]
fn ignored_mx_error_with_failing_host_lookup_reports_the_host_lookup() {
    let dns = FakeDns::new()
        .with_mx_err("example.com", DnsErrorKind::Retry, TRY_AGAIN)
        .with_a_err("example.com", DnsErrorKind::Retry, TRY_AGAIN);
    let settings = MxSettings {
        ignore_mx_lookup_error: true,
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.3",
        &not_found_text("example.com", "A", TRY_AGAIN),
    );
}

#[test]
fn mx_fail_bounces() {
    let dns = FakeDns::new().with_mx_err("example.com", DnsErrorKind::Fail, NO_RECOVERY);
    assert_dsn(
        domain(&dns, "example.com", &plain()),
        "5.4.3",
        "Host or domain name not found. Name service error for name=example.com type=MX: Non-recoverable error",
    );
    assert_eq!(dns.count(QueryType::A), 0);
}

#[test]
fn mx_invalid_bounces() {
    let dns = FakeDns::new().with_mx_err(
        "example.com",
        DnsErrorKind::Invalid,
        "Malformed or unexpected name server reply",
    );
    assert_dsn(
        domain(&dns, "example.com", &plain()),
        "5.4.4",
        &not_found_text(
            "example.com",
            "MX",
            "Malformed or unexpected name server reply",
        ),
    );
}

#[test]
fn mx_pointing_at_an_ip_literal_uses_it_without_lookup() {
    let dns = FakeDns::new().with_mx("example.com", &[(10, "192.0.2.7")]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(route.candidates, vec![cand("192.0.2.7", "192.0.2.7", 10)]);
    assert_eq!(dns.calls().len(), 1);
}

// ---------------------------------------------------------------- MX hosts without addresses

#[test]
fn mx_hosts_without_addresses_hard_bounces_with_the_last_text() {
    let dns = FakeDns::new().with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")]);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "5.4.4",
        &not_found_text("b.mx", "A", NOT_FOUND),
    );
}

#[test]
fn mx_hosts_without_addresses_soft_error_last_defers_4_4_3() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")])
        .with_a_err("b.mx", DnsErrorKind::Retry, TRY_AGAIN);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.3",
        &not_found_text("b.mx", "A", TRY_AGAIN),
    );
}

#[test]
fn mx_hosts_without_addresses_soft_error_first_keeps_later_hard_errors_soft() {
    // smtp_addr_one(): status stays soft (4.4.4 for NOTFOUND, 4.4.3 for
    // FAIL) while the text is the latest lookup's.
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")])
        .with_a_err("a.mx", DnsErrorKind::Retry, TRY_AGAIN);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.4",
        &not_found_text("b.mx", "A", NOT_FOUND),
    );

    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx")])
        .with_a_err("a.mx", DnsErrorKind::Retry, TRY_AGAIN)
        .with_a_err("b.mx", DnsErrorKind::Fail, NO_RECOVERY);
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.3",
        &not_found_text("b.mx", "A", NO_RECOVERY),
    );
}

#[test]
fn mx_hosts_without_addresses_fail_bounces_5_4_3() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a_err("a.mx", DnsErrorKind::Fail, NO_RECOVERY);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "5.4.3",
        &not_found_text("a.mx", "A", NO_RECOVERY),
    );
}

#[test]
fn defer_if_no_mx_address_found_forces_class_4() {
    let settings = MxSettings {
        ipv6: false,
        defer_if_no_mx_address_found: true,
        ..plain()
    };
    let dns = FakeDns::new().with_mx("example.com", &[(10, "a.mx")]);
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.4",
        &not_found_text("a.mx", "A", NOT_FOUND),
    );
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a_err("a.mx", DnsErrorKind::Fail, NO_RECOVERY);
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.3",
        &not_found_text("a.mx", "A", NO_RECOVERY),
    );
    // Only the MX case is affected: an implicit MX still bounces.
    assert_dsn(
        domain(&FakeDns::new(), "example.com", &settings),
        "5.4.4",
        &not_found_text("example.com", "A", NOT_FOUND),
    );
}

#[test]
fn one_mx_host_with_addresses_is_enough() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx"), (30, "c.mx")])
        .with_a_err("a.mx", DnsErrorKind::Retry, TRY_AGAIN)
        .with_a("b.mx", &["192.0.2.2"]);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(route.candidates, vec![cand("b.mx", "192.0.2.2", 20)]);
    // Postfix's domain_best_pref: the first address's preference.
    assert_eq!(route.best_preference, 20);
}

#[test]
fn a_and_aaaa_failures_combine_by_precedence() {
    // (A error, AAAA error) → (code, text type).
    let cases = [
        (DnsErrorKind::Retry, DnsErrorKind::NotFound, "4.4.3", "A"),
        (DnsErrorKind::NotFound, DnsErrorKind::Retry, "4.4.3", "AAAA"),
        (DnsErrorKind::NotFound, DnsErrorKind::Fail, "5.4.3", "AAAA"),
        (DnsErrorKind::Fail, DnsErrorKind::NoData, "5.4.3", "A"),
        (DnsErrorKind::Fail, DnsErrorKind::Invalid, "5.4.4", "AAAA"),
        (DnsErrorKind::Invalid, DnsErrorKind::Fail, "5.4.4", "A"),
        (DnsErrorKind::Fail, DnsErrorKind::Fail, "5.4.3", "AAAA"),
        (DnsErrorKind::Retry, DnsErrorKind::Retry, "4.4.3", "AAAA"),
    ];
    for (a, aaaa, code, qtype) in cases {
        let dns = FakeDns::new()
            .with_a_err("relay.example", a, "reason-A")
            .with_aaaa_err("relay.example", aaaa, "reason-AAAA");
        let reason = format!("reason-{qtype}");
        assert_dsn(
            host(&dns, "relay.example", &plain()),
            code,
            &not_found_text("relay.example", qtype, &reason),
        );
    }
}

#[test]
fn one_family_answering_is_enough() {
    let dns = FakeDns::new()
        .with_a_err("relay.example", DnsErrorKind::Retry, TRY_AGAIN)
        .with_aaaa("relay.example", &["2001:db8::1"]);
    let route = host(&dns, "relay.example", &plain()).unwrap();
    assert_eq!(
        route.candidates,
        vec![cand("relay.example", "2001:db8::1", 0)]
    );
}

#[test]
fn address_list_is_capped_at_100_records() {
    let many: Vec<String> = (0..150u32)
        .map(|i| Ipv4Addr::from(0xc000_0200 + i).to_string())
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "b.mx"), (30, "c.mx")])
        .with_a("a.mx", &many[..80])
        .with_a("b.mx", &many[80..])
        .with_a("c.mx", &["198.51.100.1"])
        .with_a("big.example", &many);
    let route = domain(&dns, "example.com", &plain()).unwrap();
    assert_eq!(route.candidates.len(), RR_LIST_LIMIT);
    assert_eq!(
        route.candidates.iter().filter(|c| c.host == "b.mx").count(),
        20
    );
    assert_eq!(
        route.candidates.last(),
        Some(&cand("b.mx", "192.0.2.99", 20))
    );
    // The list is full: c.mx is not looked up.
    assert!(!dns.calls().iter().any(|(_, name)| name == "c.mx"));

    let route = host(&dns, "big.example", &plain()).unwrap();
    assert_eq!(route.candidates.len(), RR_LIST_LIMIT);
    assert_eq!(route.candidates[99].addr.to_string(), "192.0.2.99");
}

#[test]
fn at_most_100_mx_records_are_considered_in_the_order_received() {
    // 150 MX records: the first 100 (preference 20) have no address but
    // the 100th; the last 50 (preference 10, better) all have one. Postfix
    // keeps the first 100 records of the answer, then sorts: the better
    // records beyond the limit are never seen.
    let mut records: Vec<(u16, String)> = (0..100).map(|i| (20, format!("h{i}.mx"))).collect();
    records.extend((100..150).map(|i| (10, format!("h{i}.mx"))));
    let records: Vec<(u16, &str)> = records.iter().map(|(p, h)| (*p, h.as_str())).collect();
    let mut dns = FakeDns::new()
        .with_mx("many.example", &records)
        .with_a("h99.mx", &["192.0.2.99"]);
    for i in 100..150 {
        dns = dns.with_a(&format!("h{i}.mx"), &["198.51.100.1"]);
    }
    let route = domain(&dns, "many.example", &plain()).unwrap();
    assert_eq!(route.candidates, vec![cand("h99.mx", "192.0.2.99", 20)]);
    let hosts: std::collections::BTreeSet<String> = dns
        .calls()
        .into_iter()
        .filter(|(t, _)| *t != QueryType::Mx)
        .map(|(_, name)| name)
        .collect();
    assert_eq!(hosts.len(), RR_LIST_LIMIT);
    assert!(!hosts.contains("h100.mx"), "{hosts:?}");
}

// ---------------------------------------------------------------- loops

fn own(addrs: &[&str]) -> MxSettings {
    MxSettings {
        own_addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ..plain()
    }
}

#[test]
fn self_as_best_mx_loops() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "me.mx"), (20, "backup.mx")])
        .with_a("me.mx", &["192.0.2.1"])
        .with_a("backup.mx", &["192.0.2.2"]);
    let result = domain(&dns, "example.com", &own(&["192.0.2.1"]));
    let error = result.clone().unwrap_err();
    assert!(error.is_loop());
    assert!(error.makes_nexthop_final());
    assert_dsn(result, "5.4.6", "mail for example.com loops back to myself");
}

#[test]
fn self_as_backup_cuts_the_list() {
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(30, "worse.mx"), (10, "a.mx"), (20, "me.mx"), (10, "b.mx")],
        )
        .with_a("a.mx", &["192.0.2.1"])
        .with_a("b.mx", &["192.0.2.2"])
        .with_a("me.mx", &["192.0.2.20"])
        .with_a("worse.mx", &["192.0.2.30"]);
    let route = domain(&dns, "example.com", &own(&["192.0.2.20"])).unwrap();
    assert_eq!(
        route,
        Route {
            mx_secure: Some(false),
            candidates: vec![cand("a.mx", "192.0.2.1", 10), cand("b.mx", "192.0.2.2", 10)],
            i_am_mx: true,
            best_preference: 10,
        }
    );
}

#[test]
fn equal_preference_peers_of_self_are_cut_too() {
    let dns = FakeDns::new()
        .with_mx(
            "example.com",
            &[(10, "a.mx"), (20, "peer.mx"), (20, "me.mx"), (30, "c.mx")],
        )
        .with_a("a.mx", &["192.0.2.1"])
        .with_a("peer.mx", &["192.0.2.2"])
        .with_a("me.mx", &["192.0.2.20"])
        .with_a("c.mx", &["192.0.2.3"]);
    let settings = MxSettings {
        randomize_addresses: true,
        ..own(&["192.0.2.20"])
    };
    for seed in 0..20 {
        let route = domain_route("example.com", &dns, &settings, &mut rng(seed)).unwrap();
        assert_eq!(route.candidates, vec![cand("a.mx", "192.0.2.1", 10)]);
        assert!(route.i_am_mx);
    }
}

#[test]
fn self_among_equal_best_mx_loops() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "peer.mx"), (10, "me.mx")])
        .with_a("peer.mx", &["192.0.2.2"])
        .with_a("me.mx", &["192.0.2.1"]);
    assert_dsn(
        domain(&dns, "example.com", &own(&["192.0.2.1"])),
        "5.4.6",
        "mail for example.com loops back to myself",
    );
}

#[test]
fn self_as_backup_with_no_reachable_better_mx_cannot_find_primary() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "dead.mx"), (20, "me.mx")])
        .with_a("me.mx", &["192.0.2.1"]);
    let result = domain(&dns, "example.com", &own(&["192.0.2.1"]));
    let error = result.clone().unwrap_err();
    assert!(!error.is_loop());
    assert!(error.makes_nexthop_final());
    assert_dsn(
        result,
        "4.4.4",
        "unable to find primary relay for example.com",
    );
}

#[test]
fn self_found_by_any_address_of_a_host() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx"), (20, "me.mx")])
        .with_a("a.mx", &["192.0.2.1"])
        .with_a("me.mx", &["192.0.2.50"])
        .with_aaaa("me.mx", &["2001:db8::99"]);
    let route = domain(&dns, "example.com", &own(&["127.0.0.1", "2001:db8::99"])).unwrap();
    assert_eq!(route.candidates, vec![cand("a.mx", "192.0.2.1", 10)]);
    assert!(route.i_am_mx);
}

#[test]
fn loop_detection_off_keeps_self() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "me.mx"), (20, "b.mx")])
        .with_a("me.mx", &["192.0.2.1"])
        .with_a("b.mx", &["192.0.2.2"]);
    let settings = MxSettings {
        loop_detect: false,
        ..own(&["192.0.2.1"])
    };
    let route = domain(&dns, "example.com", &settings).unwrap();
    assert_eq!(addrs(&route), ["192.0.2.1", "192.0.2.2"]);
    assert!(!route.i_am_mx);
    let route = host(&dns, "192.0.2.1", &settings).unwrap();
    assert_eq!(route.candidates, vec![cand("192.0.2.1", "192.0.2.1", 0)]);
}

#[test]
fn own_addresses_compare_by_exact_ip() {
    let dns = FakeDns::new()
        .with_mx("example.com", &[(10, "a.mx")])
        .with_a("a.mx", &["192.0.2.1"]);
    // An IPv4-mapped IPv6 address is not the same address.
    let route = domain(&dns, "example.com", &own(&["::ffff:192.0.2.1"])).unwrap();
    assert_eq!(addrs(&route), ["192.0.2.1"]);
    assert!(!route.i_am_mx);
}

#[test]
fn implicit_mx_loop_is_a_host_loop() {
    let dns = FakeDns::new().with_a("example.com", &["192.0.2.1", "192.0.2.2"]);
    assert_dsn(
        domain(&dns, "example.com", &own(&["192.0.2.2"])),
        "5.4.6",
        "mail for example.com loops back to myself",
    );
}

#[test]
fn host_route_loops_for_literal_and_name() {
    let dns = FakeDns::new().with_a("relay.example", &["192.0.2.5", "127.0.0.1"]);
    let settings = own(&["127.0.0.1"]);
    let result = host(&dns, "127.0.0.1", &settings);
    assert!(result.as_ref().unwrap_err().is_loop());
    assert_dsn(result, "5.4.6", "mail for 127.0.0.1 loops back to myself");
    assert_dsn(
        host(&dns, "relay.example", &settings),
        "5.4.6",
        "mail for relay.example loops back to myself",
    );
}

// ---------------------------------------------------------------- host_route

#[test]
fn host_route_looks_up_both_families() {
    let dns = FakeDns::new()
        .with_a("relay.example", &["192.0.2.1"])
        .with_aaaa("relay.example", &["2001:db8::1"]);
    let route = host(&dns, "relay.example", &plain()).unwrap();
    assert_eq!(
        route,
        Route {
            mx_secure: None,
            candidates: vec![
                cand("relay.example", "192.0.2.1", 0),
                cand("relay.example", "2001:db8::1", 0),
            ],
            i_am_mx: false,
            best_preference: 0,
        }
    );
    assert_eq!(dns.count(QueryType::Mx), 0);
}

#[test]
fn host_route_takes_literals_as_they_are() {
    let dns = FakeDns::new();
    let route = host(&dns, "192.0.2.9", &plain()).unwrap();
    assert_eq!(route.candidates, vec![cand("192.0.2.9", "192.0.2.9", 0)]);
    let route = host(&dns, "2001:db8::9", &plain()).unwrap();
    assert_eq!(
        route.candidates,
        vec![cand("2001:db8::9", "2001:db8::9", 0)]
    );
    assert!(dns.calls().is_empty());
}

#[test]
fn host_route_literal_of_a_disabled_family_defers() {
    let dns = FakeDns::new();
    let v4_only = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        host(&dns, "2001:db8::9", &v4_only),
        "4.4.4",
        "network protocol IPv6 is disabled for 2001:db8::9",
    );
    let v6_only = MxSettings {
        ipv4: false,
        ..plain()
    };
    assert_dsn(
        host(&dns, "192.0.2.9", &v6_only),
        "4.4.4",
        "network protocol IPv4 is disabled for 192.0.2.9",
    );
    assert!(dns.calls().is_empty());
}

#[test]
fn mx_literal_of_a_disabled_family_is_host_not_found() {
    let dns = FakeDns::new().with_mx("example.com", &[(10, "2001:db8::9")]);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "5.4.4",
        "Name service error for 2001:db8::9: invalid host or domain name",
    );
    assert_eq!(dns.calls().len(), 1);
}

#[test]
fn host_route_errors() {
    let v4_only = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        host(&FakeDns::new(), "nxdomain.invalid", &v4_only),
        "5.4.4",
        "Host or domain name not found. Name service error for name=nxdomain.invalid type=A: Host not found",
    );
    let dns = FakeDns::new().with_a_err("relay.example", DnsErrorKind::Retry, TRY_AGAIN);
    assert_dsn(
        host(&dns, "relay.example", &v4_only),
        "4.4.3",
        &not_found_text("relay.example", "A", TRY_AGAIN),
    );
    let dns = FakeDns::new().with_a_err("relay.example", DnsErrorKind::Fail, NO_RECOVERY);
    assert_dsn(
        host(&dns, "relay.example", &v4_only),
        "5.4.3",
        &not_found_text("relay.example", "A", NO_RECOVERY),
    );
    let dns = FakeDns::new().with_a_err(
        "relay.example",
        DnsErrorKind::NoData,
        "Host found but no data record of type A",
    );
    assert_dsn(
        host(&dns, "relay.example", &v4_only),
        "5.4.4",
        &not_found_text(
            "relay.example",
            "A",
            "Host found but no data record of type A",
        ),
    );
    let dns = FakeDns::new().with_a_err("bad..name", DnsErrorKind::Invalid, "invalid name");
    assert_dsn(
        host(&dns, "bad..name", &v4_only),
        "5.4.4",
        &not_found_text("bad..name", "A", "invalid name"),
    );
}

#[test]
fn host_route_ipv6_only_names_the_aaaa_query() {
    let v6_only = MxSettings {
        ipv4: false,
        ..plain()
    };
    let dns = FakeDns::new();
    assert_dsn(
        host(&dns, "nxdomain.invalid", &v6_only),
        "5.4.4",
        &not_found_text("nxdomain.invalid", "AAAA", NOT_FOUND),
    );
    assert_eq!(dns.count(QueryType::A), 0);
}

// ---------------------------------------------------------------- inet_protocols

#[test]
fn ipv4_only_never_asks_for_aaaa() {
    let dns = dual_stack_dns().with_a("relay.example", &["192.0.2.7"]);
    let settings = MxSettings {
        ipv6: false,
        ..plain()
    };
    let route = domain(&dns, "example.com", &settings).unwrap();
    assert_eq!(addrs(&route), ["192.0.2.1", "192.0.2.2"]);
    let route = host(&dns, "relay.example", &settings).unwrap();
    assert_eq!(addrs(&route), ["192.0.2.7"]);
    assert_eq!(dns.count(QueryType::Aaaa), 0);
    assert_eq!(dns.count(QueryType::A), 3);
}

#[test]
fn ipv6_only_never_asks_for_a() {
    let dns = dual_stack_dns();
    let settings = MxSettings {
        ipv4: false,
        ..plain()
    };
    let route = domain(&dns, "example.com", &settings).unwrap();
    assert_eq!(addrs(&route), ["2001:db8::1", "2001:db8::2"]);
    assert_eq!(dns.count(QueryType::A), 0);
}

#[test]
fn no_protocols_enabled_defers_before_any_lookup() {
    let dns = dual_stack_dns();
    let settings = MxSettings {
        ipv4: false,
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        domain(&dns, "example.com", &settings),
        "4.4.4",
        "all network protocols are disabled",
    );
    assert_dsn(
        host(&dns, "192.0.2.1", &settings),
        "4.4.4",
        "all network protocols are disabled",
    );
    assert!(dns.calls().is_empty());
}

// ---------------------------------------------------------------- helpers

#[test]
fn loop_dsn_classification() {
    let mail_loop = RouteError::MailLoop { name: "x".into() };
    let no_primary = RouteError::NoPrimaryRelay { domain: "x".into() };
    let soft_not_found = RouteError::NameService {
        status: crate::dsn::NO_ROUTE,
        text: not_found_text("x", "A", TRY_AGAIN),
    };
    assert!(mail_loop.is_loop() && mail_loop.makes_nexthop_final());
    assert!(mail_loop.dsn().code.is_loop());
    assert!(!no_primary.is_loop() && no_primary.makes_nexthop_final());
    assert_eq!(
        no_primary.dsn(),
        Dsn::new(crate::dsn::NO_ROUTE, "unable to find primary relay for x")
    );
    assert!(!soft_not_found.is_loop() && !soft_not_found.makes_nexthop_final());
    // A name service error is never final, whatever its text says.
    let lookalike = RouteError::NameService {
        status: crate::dsn::NO_ROUTE,
        text: "unable to find primary relay for x".into(),
    };
    assert!(!lookalike.makes_nexthop_final());
}

#[test]
fn literal_route_keeps_the_address_typed() {
    let settings = own(&["127.0.0.1"]);
    let addr: IpAddr = "2001:db8::1".parse().unwrap();
    let route = literal_route(addr, &settings, &mut rng(1)).unwrap();
    assert_eq!(
        route.candidates,
        vec![cand("2001:db8::1", "2001:db8::1", 0)]
    );
    assert!(route.candidates[0].host_is_ip);
    let looped = literal_route("127.0.0.1".parse().unwrap(), &settings, &mut rng(1));
    assert_dsn(looped, "5.4.6", "mail for 127.0.0.1 loops back to myself");
    let v4_only = MxSettings {
        ipv6: false,
        ..plain()
    };
    assert_dsn(
        literal_route(addr, &v4_only, &mut rng(1)),
        "4.4.4",
        "network protocol IPv6 is disabled for 2001:db8::1",
    );
}

#[test]
fn single_candidate_lists_skip_ordering() {
    // A lone address is returned as is, whatever the RNG does.
    let dns = FakeDns::new().with_a("relay.example", &["192.0.2.1"]);
    let settings = MxSettings::default();
    for seed in 0..5 {
        let route = host_route("relay.example", &dns, &settings, &mut rng(seed)).unwrap();
        assert_eq!(addrs(&route), ["192.0.2.1"]);
    }
}

/// (preference, address) pairs for the Happy Eyeballs order tests.
fn he(list: &[(u32, &str)]) -> Vec<(u32, IpAddr)> {
    list.iter().map(|(p, a)| (*p, a.parse().unwrap())).collect()
}

fn interleaved(list: &[(u32, &str)]) -> Vec<(u32, IpAddr)> {
    interleave_families(he(list), |(p, _)| *p, |(_, a)| a.is_ipv6())
}

#[test]
fn happy_eyeballs_alternates_families_starting_with_the_first() {
    assert_eq!(
        interleaved(&[(10, "::1"), (10, "::2"), (10, "10.0.0.1"), (10, "10.0.0.2")]),
        he(&[(10, "::1"), (10, "10.0.0.1"), (10, "::2"), (10, "10.0.0.2")])
    );
    // address_preference = ipv4 put IPv4 first: IPv4 starts.
    assert_eq!(
        interleaved(&[
            (10, "10.0.0.1"),
            (10, "10.0.0.2"),
            (10, "10.0.0.3"),
            (10, "::1")
        ]),
        he(&[
            (10, "10.0.0.1"),
            (10, "::1"),
            (10, "10.0.0.2"),
            (10, "10.0.0.3")
        ])
    );
}

#[test]
fn happy_eyeballs_never_moves_an_address_ahead_of_a_better_mx() {
    // Runs of equal preference stay in place; a backup's IPv4 address is
    // not pulled up among the primary's IPv6 addresses.
    assert_eq!(
        interleaved(&[(10, "::1"), (10, "::2"), (20, "10.0.0.1"), (20, "::3")]),
        he(&[(10, "::1"), (10, "::2"), (20, "10.0.0.1"), (20, "::3")])
    );
    assert_eq!(
        interleaved(&[
            (10, "::1"),
            (20, "::2"),
            (20, "::3"),
            (20, "10.0.0.1"),
            (10, "10.0.0.9")
        ]),
        he(&[
            (10, "::1"),
            (20, "::2"),
            (20, "10.0.0.1"),
            (20, "::3"),
            (10, "10.0.0.9")
        ])
    );
}

#[test]
fn happy_eyeballs_keeps_single_family_lists_as_they_are() {
    let list = [(10, "10.0.0.3"), (10, "10.0.0.1"), (20, "10.0.0.2")];
    assert_eq!(interleaved(&list), he(&list));
    assert_eq!(interleaved(&[]), he(&[]));
}
