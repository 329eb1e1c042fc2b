//! Unit tests of the stub resolver against in-process fake DNS servers
//! (a thread with a UDP socket and a TCP listener on 127.0.0.1, answering
//! per a closure). Every server is stopped and joined when its guard drops.

use super::*;

use std::net::TcpListener;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use hickory_proto::rr::Record;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use rand::RngExt;

// ---------------------------------------------------------------- harness

/// One query as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    rtype: RecordType,
    id: u16,
    tcp: bool,
    rd: bool,
    ad: bool,
    edns_payload: Option<u16>,
}

type Handler = dyn Fn(&Message, bool) -> Vec<Vec<u8>> + Send + Sync;

struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server whose `handler` gets each query (and whether it came
    /// over TCP) and returns the datagrams to send back (for TCP, each is
    /// sent as one frame).
    fn start<F>(handler: F) -> Self
    where
        F: Fn(&Message, bool) -> Vec<Vec<u8>> + Send + Sync + 'static,
    {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let stop = Arc::clone(&stop);
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_535];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((len, peer)) = udp.recv_from(&mut buf)
                        && let Ok(query) = Message::from_vec(&buf[..len])
                    {
                        seen.lock().unwrap().push(seen_of(&query, false));
                        for datagram in handler(&query, false) {
                            let _ = udp.send_to(&datagram, peer);
                        }
                    }
                    if let Ok((stream, _)) = tcp.accept() {
                        serve_tcp(stream, &*handler, &seen);
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair");
}

fn serve_tcp(mut stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut head = [0u8; 2];
    if stream.read_exact(&mut head).is_err() {
        return;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(head))];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    let Ok(query) = Message::from_vec(&body) else {
        return;
    };
    seen.lock().unwrap().push(seen_of(&query, true));
    for reply in handler(&query, true) {
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        let _ = stream.write_all(&framed);
    }
}

fn seen_of(query: &Message, tcp: bool) -> Seen {
    Seen {
        name: qname_of(query),
        rtype: query.queries[0].query_type(),
        id: query.metadata.id,
        tcp,
        rd: query.metadata.recursion_desired,
        ad: query.metadata.authentic_data,
        edns_payload: query.edns.as_ref().map(|e| e.max_payload()),
    }
}

fn qname_of(query: &Message) -> String {
    query.queries[0].name().to_ascii()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn response(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.response_code = code;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(query.queries.clone());
    m.add_answers(answers);
    m
}

fn wire(m: &Message) -> Vec<Vec<u8>> {
    vec![m.to_vec().unwrap()]
}

fn reply(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Vec<Vec<u8>> {
    wire(&response(query, code, answers))
}

fn a_rec(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn aaaa_rec(owner: &str, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

fn mx_rec(owner: &str, ttl: u32, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::MX(MX::new(preference, name(exchange))),
    )
}

fn cname_rec(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

fn soa_rec(zone: &str, ttl: u32, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns.{zone}")),
        name(&format!("hostmaster.{zone}")),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(soa))
}

fn settings(servers: &[SocketAddr], timeout_ms: u64, attempts: u32, cache: usize) -> StubSettings {
    StubSettings {
        nameservers: servers.to_vec(),
        timeout: Duration::from_millis(timeout_ms),
        attempts,
        cache_max_entries: cache,
        ..StubSettings::new(Vec::new())
    }
}

fn resolver(servers: &[SocketAddr], timeout_ms: u64, attempts: u32, cache: usize) -> StubResolver {
    StubResolver::new(settings(servers, timeout_ms, attempts, cache)).unwrap()
}

fn kind<T>(r: Result<T, DnsError>) -> DnsErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind,
    }
}

/// A fake clock the test moves by hand.
fn fake_clock() -> (Clock, Arc<Mutex<Instant>>) {
    let now = Arc::new(Mutex::new(Instant::now()));
    let shared = Arc::clone(&now);
    let clock: Clock = Arc::new(move || *shared.lock().unwrap());
    (clock, now)
}

fn advance(now: &Mutex<Instant>, secs: u64) {
    let mut t = now.lock().unwrap();
    *t += Duration::from_secs(secs);
}

// ---------------------------------------------------------------- 1. answers

#[test]
fn mx_answer_kept_in_received_order_and_normalised() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![
                mx_rec("example.test.", 300, 20, "MX2.Example.TEST."),
                mx_rec("example.test.", 300, 10, "mx1.example.test."),
                mx_rec("example.test.", 300, 30, "mx3.example.test."),
            ],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let answer = r.mx("example.test").unwrap();
    let got: Vec<(u16, &str)> = answer
        .records
        .iter()
        .map(|m| (m.preference, m.exchange.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (20, "mx2.example.test"),
            (10, "mx1.example.test"),
            (30, "mx3.example.test")
        ]
    );
    assert!(!answer.authenticated);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "example.test.");
    assert_eq!(seen[0].rtype, RecordType::MX);
    assert!(seen[0].rd, "recursion desired");
    assert!(seen[0].ad, "AD bit set in the query (RFC 6840)");
    assert_eq!(seen[0].edns_payload, Some(EDNS_PAYLOAD));
    assert!(!seen[0].tcp);
}

#[test]
fn a_and_aaaa_answers() {
    let server = FakeServer::start(|q, _| match q.queries[0].query_type() {
        RecordType::A => reply(
            q,
            ResponseCode::NoError,
            vec![
                a_rec("host.test.", 60, [192, 0, 2, 1]),
                a_rec("host.test.", 60, [192, 0, 2, 2]),
            ],
        ),
        RecordType::AAAA => reply(
            q,
            ResponseCode::NoError,
            vec![aaaa_rec("host.test.", 60, "2001:db8::1".parse().unwrap())],
        ),
        _ => reply(q, ResponseCode::NoError, vec![]),
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(
        r.a("host.test").unwrap().records,
        vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
    );
    assert_eq!(
        r.aaaa("Host.Test.").unwrap().records,
        vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
    );
    let seen = server.seen();
    assert_eq!(seen[0].rtype, RecordType::A);
    assert_eq!(seen[1].rtype, RecordType::AAAA);
    assert_eq!(seen[1].name, "host.test.");
}

#[test]
fn cname_chain_followed_to_the_address() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![
                cname_rec("www.example.test.", 300, "a.example.test."),
                cname_rec("A.example.test.", 200, "b.example.test."),
                a_rec("unrelated.test.", 300, [192, 0, 2, 99]),
                a_rec("b.example.test.", 100, [192, 0, 2, 7]),
            ],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let answer = r.a("www.example.test").unwrap();
    assert_eq!(answer.records, vec![Ipv4Addr::new(192, 0, 2, 7)]);
}

#[test]
fn cname_chain_without_data_is_nodata() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![
                cname_rec("www.example.test.", 300, "a.example.test."),
                a_rec("elsewhere.test.", 300, [192, 0, 2, 9]),
            ],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(kind(r.a("www.example.test")), DnsErrorKind::NoData);
}

#[test]
fn cname_loop_terminates() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![
                cname_rec("a.test.", 300, "b.test."),
                cname_rec("b.test.", 300, "a.test."),
            ],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(kind(r.a("a.test")), DnsErrorKind::NoData);
}

#[test]
fn null_mx_has_empty_exchange() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![mx_rec("nullmx.test.", 300, 0, ".")],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let answer = r.mx("nullmx.test").unwrap();
    assert_eq!(
        answer.records,
        vec![MxRecord {
            preference: 0,
            exchange: String::new()
        }]
    );
    assert!(answer.records[0].is_null());
}

#[test]
fn ad_bit_passed_through() {
    let server = FakeServer::start(|q, _| {
        let mut m = response(
            q,
            ResponseCode::NoError,
            vec![mx_rec("signed.test.", 300, 10, "mx.signed.test.")],
        );
        m.metadata.authentic_data = qname_of(q).starts_with("signed");
        if !m.metadata.authentic_data {
            m.answers = vec![mx_rec("plain.test.", 300, 10, "mx.plain.test.")];
        }
        wire(&m)
    });
    let r = resolver(&[server.addr], 1000, 1, 100);
    assert!(r.mx("signed.test").unwrap().authenticated);
    assert!(!r.mx("plain.test").unwrap().authenticated);
    // And from the cache.
    assert!(r.mx("signed.test").unwrap().authenticated);
    assert_eq!(server.count(), 2);
}

#[test]
fn query_ids_are_random() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("x.test.", 0, [192, 0, 2, 1])],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    for _ in 0..20 {
        r.a("x.test").unwrap();
    }
    let ids: Vec<u16> = server.seen().iter().map(|s| s.id).collect();
    let sequential = ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(!sequential, "IDs look like a counter: {ids:?}");
    assert!(distinct.len() > 15, "IDs repeat too much: {ids:?}");
}

// ---------------------------------------------------------------- 2. classification

#[test]
fn nxdomain_is_not_found() {
    let server = FakeServer::start(|q, _| reply(q, ResponseCode::NXDomain, vec![]));
    let r = resolver(&[server.addr], 1000, 1, 0);
    let err = r.mx("nosuch.test").unwrap_err();
    assert_eq!(err.kind, DnsErrorKind::NotFound);
    assert_eq!(err.reason, "Host not found");
    assert!(!err.is_soft());
}

#[test]
fn empty_noerror_is_nodata() {
    let server = FakeServer::start(|q, _| {
        // An A record is no answer to an MX query.
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("host.test.", 300, [192, 0, 2, 1])],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let err = r.mx("host.test").unwrap_err();
    assert_eq!(err.kind, DnsErrorKind::NoData);
    assert_eq!(err.reason, "Host found but no data record of type MX");
    let err = r.aaaa("host.test").unwrap_err();
    assert_eq!(err.reason, "Host found but no data record of type AAAA");
}

#[test]
fn servfail_then_good_server() {
    let bad = FakeServer::start(|q, _| reply(q, ResponseCode::ServFail, vec![]));
    let good = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("h.test.", 60, [192, 0, 2, 5])],
        )
    });
    let r = resolver(&[bad.addr, good.addr], 1000, 2, 0);
    assert_eq!(
        r.a("h.test").unwrap().records,
        vec![Ipv4Addr::new(192, 0, 2, 5)]
    );
    assert_eq!(bad.count(), 1);
    assert_eq!(good.count(), 1);
}

#[test]
fn servfail_everywhere_is_retry() {
    let s1 = FakeServer::start(|q, _| reply(q, ResponseCode::ServFail, vec![]));
    let s2 = FakeServer::start(|q, _| reply(q, ResponseCode::ServFail, vec![]));
    let r = resolver(&[s1.addr, s2.addr], 1000, 2, 100);
    let err = r.mx("h.test").unwrap_err();
    assert_eq!(err.kind, DnsErrorKind::Retry);
    assert_eq!(err.reason, "Host not found, try again");
    assert!(err.is_soft());
    // attempts x servers tries.
    assert_eq!(s1.count(), 2);
    assert_eq!(s2.count(), 2);
}

#[test]
fn refused_everywhere_is_fail() {
    let s1 = FakeServer::start(|q, _| reply(q, ResponseCode::Refused, vec![]));
    let s2 = FakeServer::start(|q, _| reply(q, ResponseCode::NotImp, vec![]));
    let r = resolver(&[s1.addr, s2.addr], 1000, 2, 100);
    let err = r.mx("h.test").unwrap_err();
    assert_eq!(err.kind, DnsErrorKind::Fail);
    assert_eq!(err.reason, "Non-recoverable error");
    assert!(s1.count() >= 1 && s2.count() >= 1);
}

#[test]
fn refused_and_servfail_mixed_is_retry() {
    let s1 = FakeServer::start(|q, _| reply(q, ResponseCode::Refused, vec![]));
    let s2 = FakeServer::start(|q, _| reply(q, ResponseCode::ServFail, vec![]));
    let r = resolver(&[s1.addr, s2.addr], 1000, 1, 0);
    assert_eq!(kind(r.mx("h.test")), DnsErrorKind::Retry);
}

#[test]
fn formerr_without_opt_retries_without_edns() {
    let server = FakeServer::start(|q, _| {
        if q.edns.is_some() {
            reply(q, ResponseCode::FormErr, vec![])
        } else {
            reply(
                q,
                ResponseCode::NoError,
                vec![a_rec("old.test.", 60, [192, 0, 2, 3])],
            )
        }
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(
        r.a("old.test").unwrap().records,
        vec![Ipv4Addr::new(192, 0, 2, 3)]
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].edns_payload, Some(EDNS_PAYLOAD));
    assert_eq!(seen[1].edns_payload, None);
}

#[test]
fn error_reply_without_question_is_accepted() {
    let server = FakeServer::start(|q, _| {
        let mut m = response(q, ResponseCode::Refused, vec![]);
        m.queries.clear();
        wire(&m)
    });
    let r = resolver(&[server.addr], 2000, 1, 0);
    let started = Instant::now();
    assert_eq!(kind(r.a("h.test")), DnsErrorKind::Fail);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn no_answer_at_all_is_retry_after_all_tries() {
    // Bound but never read: the queries vanish.
    let silent1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let servers = [silent1.local_addr().unwrap(), silent2.local_addr().unwrap()];
    let r = resolver(&servers, 200, 2, 100);
    let started = Instant::now();
    let err = r.mx("h.test").unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind, DnsErrorKind::Retry);
    // 200 ms x 2 attempts x 2 servers.
    assert!(elapsed >= Duration::from_millis(780), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn unreachable_port_is_retry_without_waiting() {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let r = resolver(&[port], 2000, 2, 0);
    let started = Instant::now();
    assert_eq!(kind(r.a("h.test")), DnsErrorKind::Retry);
    // ICMP port unreachable ends each try at once.
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn empty_server_list_is_an_error() {
    let err = StubResolver::new(settings(&[], 1000, 1, 0)).unwrap_err();
    assert_eq!(err.kind, DnsErrorKind::Fail);
    assert_eq!(err.reason, "no name servers configured");
}

// ---------------------------------------------------------------- 3. matching

#[test]
fn mismatched_id_and_question_are_ignored() {
    let server = FakeServer::start(|q, _| {
        let bogus = vec![a_rec("h.test.", 60, [192, 0, 2, 66])];
        let mut out = Vec::new();
        // Wrong ID.
        let mut m = response(q, ResponseCode::NoError, bogus.clone());
        m.metadata.id = q.metadata.id.wrapping_add(1);
        out.extend(wire(&m));
        // Wrong name.
        let mut m = response(q, ResponseCode::NoError, bogus.clone());
        m.queries[0].set_name(name("other.test."));
        out.extend(wire(&m));
        // Wrong type.
        let mut m = response(q, ResponseCode::NoError, bogus.clone());
        m.queries[0].set_query_type(RecordType::AAAA);
        out.extend(wire(&m));
        // Wrong class.
        let mut m = response(q, ResponseCode::NoError, bogus.clone());
        m.queries[0].set_query_class(DNSClass::CH);
        out.extend(wire(&m));
        // A query, not a response.
        let mut m = response(q, ResponseCode::NoError, bogus.clone());
        m.metadata.message_type = MessageType::Query;
        out.extend(wire(&m));
        // Too short to be anything.
        out.push(vec![0x12]);
        // The real one, with the name in another case.
        let mut m = response(
            q,
            ResponseCode::NoError,
            vec![a_rec("H.TEST.", 60, [192, 0, 2, 1])],
        );
        m.queries[0].set_name(name("H.Test."));
        out.extend(wire(&m));
        out
    });
    let r = resolver(&[server.addr], 2000, 1, 0);
    let started = Instant::now();
    assert_eq!(
        r.a("h.test").unwrap().records,
        vec![Ipv4Addr::new(192, 0, 2, 1)]
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn only_bogus_replies_time_out() {
    let server = FakeServer::start(|q, _| {
        let mut m = response(
            q,
            ResponseCode::NoError,
            vec![a_rec("h.test.", 60, [192, 0, 2, 66])],
        );
        m.metadata.id = q.metadata.id ^ 0x8000;
        wire(&m)
    });
    let r = resolver(&[server.addr], 150, 1, 0);
    let started = Instant::now();
    assert_eq!(kind(r.a("h.test")), DnsErrorKind::Retry);
    assert!(started.elapsed() >= Duration::from_millis(140));
}

// ---------------------------------------------------------------- 4. TCP

#[test]
fn truncated_reply_falls_back_to_tcp() {
    let server = FakeServer::start(|q, tcp| {
        if tcp {
            let answers = (0..60u16)
                .map(|i| {
                    mx_rec(
                        "big.test.",
                        300,
                        i,
                        &format!("mx{i}.a-long-name-for-padding.big.test."),
                    )
                })
                .collect();
            reply(q, ResponseCode::NoError, answers)
        } else {
            let mut m = response(q, ResponseCode::NoError, vec![]);
            m.metadata.truncation = true;
            wire(&m)
        }
    });
    let r = resolver(&[server.addr], 2000, 1, 0);
    let answer = r.mx("big.test").unwrap();
    assert_eq!(answer.records.len(), 60);
    assert_eq!(
        answer.records[59].exchange,
        "mx59.a-long-name-for-padding.big.test"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].tcp);
    assert!(seen[1].tcp);
}

#[test]
fn tcp_failure_counts_as_soft() {
    // UDP says "truncated", TCP answers with the wrong ID.
    let server = FakeServer::start(|q, tcp| {
        let mut m = response(q, ResponseCode::NoError, vec![]);
        if tcp {
            m.metadata.id = q.metadata.id.wrapping_add(7);
        } else {
            m.metadata.truncation = true;
        }
        wire(&m)
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(kind(r.mx("big.test")), DnsErrorKind::Retry);
}

// ---------------------------------------------------------------- 5. cache

#[test]
fn positive_answer_cached_until_ttl() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![
                mx_rec("c.test.", 120, 10, "mx.c.test."),
                mx_rec("c.test.", 60, 20, "mx2.c.test."),
            ],
        )
    });
    let (clock, now) = fake_clock();
    let r = resolver(&[server.addr], 1000, 1, 100).with_clock(clock);
    let first = r.mx("c.test").unwrap();
    assert_eq!(server.count(), 1);
    // Same key whatever the case and the trailing dot.
    assert_eq!(r.mx("C.Test.").unwrap(), first);
    assert_eq!(server.count(), 1);
    // Other types are other keys.
    let _ = r.a("c.test");
    assert_eq!(server.count(), 2);
    advance(&now, 59);
    r.mx("c.test").unwrap();
    assert_eq!(server.count(), 2, "still cached at 59 s (min TTL 60)");
    advance(&now, 2);
    r.mx("c.test").unwrap();
    assert_eq!(server.count(), 3, "expired after 61 s");
}

#[test]
fn ttl_zero_not_cached() {
    let server = FakeServer::start(|q, _| {
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("z.test.", 0, [192, 0, 2, 1])],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 100);
    r.a("z.test").unwrap();
    r.a("z.test").unwrap();
    assert_eq!(server.count(), 2);
    assert_eq!(r.cached_entries(), 0);
}

#[test]
fn negative_answers_cached_for_soa_minimum() {
    let server = FakeServer::start(|q, _| {
        let name = qname_of(q);
        let code = if name.starts_with("nx") {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        let mut m = response(q, code, vec![]);
        if name.starts_with("nxsoa") {
            // minimum 30 < SOA TTL 300: 30 s.
            m.add_authority(soa_rec("test.", 300, 30));
        } else if name.starts_with("nodata") {
            // SOA TTL 10 < minimum 3600: 10 s.
            m.add_authority(soa_rec("test.", 10, 3600));
        }
        wire(&m)
    });
    let (clock, now) = fake_clock();
    let r = resolver(&[server.addr], 1000, 1, 100).with_clock(clock);

    assert_eq!(kind(r.mx("nxsoa.test")), DnsErrorKind::NotFound);
    assert_eq!(kind(r.mx("nxsoa.test")), DnsErrorKind::NotFound);
    assert_eq!(server.count(), 1);
    advance(&now, 29);
    assert_eq!(kind(r.mx("nxsoa.test")), DnsErrorKind::NotFound);
    assert_eq!(server.count(), 1);
    advance(&now, 2);
    assert_eq!(kind(r.mx("nxsoa.test")), DnsErrorKind::NotFound);
    assert_eq!(server.count(), 2);

    assert_eq!(kind(r.mx("nodata.test")), DnsErrorKind::NoData);
    assert_eq!(kind(r.mx("nodata.test")), DnsErrorKind::NoData);
    assert_eq!(server.count(), 3);
    advance(&now, 11);
    assert_eq!(kind(r.mx("nodata.test")), DnsErrorKind::NoData);
    assert_eq!(server.count(), 4);

    // Without an SOA: not cached.
    assert_eq!(kind(r.mx("nxplain.test")), DnsErrorKind::NotFound);
    assert_eq!(kind(r.mx("nxplain.test")), DnsErrorKind::NotFound);
    assert_eq!(server.count(), 6);
}

#[test]
fn retry_and_fail_not_cached() {
    let server = FakeServer::start(|q, _| {
        if qname_of(q).starts_with("sf") {
            reply(q, ResponseCode::ServFail, vec![])
        } else {
            reply(q, ResponseCode::Refused, vec![])
        }
    });
    let r = resolver(&[server.addr], 1000, 1, 100);
    assert_eq!(kind(r.mx("sf.test")), DnsErrorKind::Retry);
    assert_eq!(kind(r.mx("sf.test")), DnsErrorKind::Retry);
    assert_eq!(kind(r.mx("rf.test")), DnsErrorKind::Fail);
    assert_eq!(kind(r.mx("rf.test")), DnsErrorKind::Fail);
    assert_eq!(server.count(), 4);
    assert_eq!(r.cached_entries(), 0);
}

#[test]
fn cache_capacity_is_enforced() {
    let server = FakeServer::start(|q, _| {
        let owner = qname_of(q);
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec(&owner, 300, [192, 0, 2, 1])],
        )
    });
    let (clock, now) = fake_clock();
    let r = resolver(&[server.addr], 1000, 1, 4).with_clock(clock);
    for i in 0..10 {
        r.a(&format!("n{i}.test")).unwrap();
        assert!(r.cached_entries() <= 4);
    }
    // Expired entries go first.
    advance(&now, 301);
    r.a("fresh.test").unwrap();
    assert_eq!(r.cached_entries(), 1);
    r.a("fresh.test").unwrap();
    assert_eq!(server.count(), 11);
    // Disabled cache: nothing kept.
    let off = resolver(&[server.addr], 1000, 1, 0);
    off.a("n1.test").unwrap();
    off.a("n1.test").unwrap();
    assert_eq!(off.cached_entries(), 0);
    assert_eq!(server.count(), 13);
}

// ---------------------------------------------------------------- 6. isolation

#[test]
fn one_stuck_lookup_does_not_block_other_threads() {
    let server = FakeServer::start(|q, _| {
        let owner = qname_of(q);
        if owner.starts_with("blackhole.") {
            return vec![];
        }
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec(&owner, 300, [192, 0, 2, 1])],
        )
    });
    let timeout = Duration::from_secs(2);
    // Cache on, distinct names: every lookup goes to the network and every
    // answer is inserted, so the cache lock is exercised too.
    let r = Arc::new(resolver(
        &[server.addr],
        timeout.as_millis() as u64,
        1,
        100_000,
    ));
    let started = Instant::now();
    let stuck = {
        let r = Arc::clone(&r);
        thread::spawn(move || {
            let result = r.a("blackhole.test");
            (result, started.elapsed())
        })
    };
    // Let thread 0 get its query out first.
    while server.count() == 0 && started.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(1));
    }
    let workers: Vec<_> = (1..8)
        .map(|t| {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for i in 0..200 {
                    let answer = r.a(&format!("h{t}-{i}.iso.test")).unwrap();
                    assert_eq!(answer.records, vec![Ipv4Addr::new(192, 0, 2, 1)]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let workers_done = started.elapsed();
    eprintln!("isolation: 7 x 200 lookups done in {workers_done:?}");
    assert!(
        !stuck.is_finished(),
        "thread 0 finished before the others: {workers_done:?}"
    );
    assert!(
        workers_done < Duration::from_secs(1),
        "7 x 200 lookups took {workers_done:?} while one lookup was stuck"
    );
    let (result, stuck_elapsed) = stuck.join().unwrap();
    assert_eq!(kind(result), DnsErrorKind::Retry);
    assert!(
        stuck_elapsed >= timeout - Duration::from_millis(50),
        "{stuck_elapsed:?}"
    );
    assert!(
        stuck_elapsed < timeout + Duration::from_secs(2),
        "{stuck_elapsed:?}"
    );
    let seen = server.seen();
    let (stuck_queries, others): (Vec<_>, Vec<_>) =
        seen.iter().partition(|q| q.name.starts_with("blackhole."));
    assert_eq!(others.len(), 7 * 200);
    // The stuck query was sent again within its try (250 ms, ~500 ms,
    // ~1 s: at most 4 copies in 2 s), always with the same ID.
    assert!((2..=4).contains(&stuck_queries.len()), "{stuck_queries:?}");
    assert!(stuck_queries.iter().all(|q| q.id == stuck_queries[0].id));
    assert_eq!(r.cached_entries(), 7 * 200);
}

// ---------------------------------------------------------------- 7. names

#[test]
fn idna_name_sent_as_a_labels() {
    let server = FakeServer::start(|q, _| {
        let owner = qname_of(q);
        reply(
            q,
            ResponseCode::NoError,
            vec![mx_rec(&owner, 300, 10, "mx.xn--bcher-kva.test.")],
        )
    });
    let r = resolver(&[server.addr], 1000, 1, 100);
    let answer = r.mx("bücher.test").unwrap();
    assert_eq!(answer.records[0].exchange, "mx.xn--bcher-kva.test");
    assert_eq!(server.seen()[0].name, "xn--bcher-kva.test.");
    // The A-label form is the same cache key.
    r.mx("xn--bcher-kva.test").unwrap();
    r.mx("BÜCHER.test").unwrap();
    assert_eq!(server.count(), 1);
}

#[test]
fn names_with_underscores_are_queried() {
    let server = FakeServer::start(|q, _| reply(q, ResponseCode::NXDomain, vec![]));
    let r = resolver(&[server.addr], 1000, 1, 0);
    assert_eq!(kind(r.a("_25._tcp.mx.test")), DnsErrorKind::NotFound);
    assert_eq!(server.seen()[0].name, "_25._tcp.mx.test.");
}

#[test]
fn invalid_names_are_invalid_without_a_query() {
    let server = FakeServer::start(|q, _| reply(q, ResponseCode::NXDomain, vec![]));
    let r = resolver(&[server.addr], 1000, 1, 0);
    let long_label = format!("{}.test", "a".repeat(64));
    let long_name = vec!["abcdefghi"; 30].join(".");
    for bad in [
        "",
        ".",
        "a..b",
        ".a.b",
        "sp ace.test",
        "back\\slash.test",
        "semi;colon.test",
        "tab\t.test",
        long_label.as_str(),
        long_name.as_str(),
        "bü cher.test",
    ] {
        let err = r.mx(bad).unwrap_err();
        assert_eq!(err.kind, DnsErrorKind::Invalid, "{bad:?}");
        assert_eq!(err.reason, "Malformed domain name");
    }
    assert_eq!(server.count(), 0);
}

// ---------------------------------------------------------------- 8. garbage

#[test]
fn random_datagrams_never_panic() {
    let server = FakeServer::start(|q, _| {
        let mut rng = rand::rng();
        let len = rng.random_range(0..600);
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk[..]);
        if len >= 3 && rng.random_bool(0.7) {
            // Our ID and the QR bit, so the parser is reached.
            junk[..2].copy_from_slice(&q.metadata.id.to_be_bytes());
            junk[2] |= 0x80;
        }
        vec![junk]
    });
    let r = resolver(&[server.addr], 30, 1, 100);
    for i in 0..60 {
        let err = r.mx(&format!("fuzz{i}.test")).unwrap_err();
        assert!(
            matches!(err.kind, DnsErrorKind::Retry | DnsErrorKind::Fail),
            "{err:?}"
        );
    }
    assert_eq!(r.cached_entries(), 0);
}

#[test]
fn mutated_replies_never_panic() {
    // No network: feed mutations of a valid reply straight to the checks
    // and the classifier.
    let qname = name("example.test.");
    let mut query = Message::new(0x4242, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(qname.clone(), RecordType::MX));
    let mut good = response(
        &query,
        ResponseCode::NoError,
        vec![
            cname_rec("example.test.", 60, "alias.example.test."),
            mx_rec("alias.example.test.", 60, 10, "mx1.example.test."),
            mx_rec("alias.example.test.", 60, 0, "."),
        ],
    );
    good.add_authority(soa_rec("example.test.", 60, 30));
    good.add_additional(a_rec("mx1.example.test.", 60, [192, 0, 2, 1]));
    let good = good.to_vec().unwrap();
    let mut rng = rand::rng();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut data = good.clone();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..3) {
                0 => {
                    let i = rng.random_range(0..data.len());
                    data[i] = rng.random();
                }
                1 => {
                    let cut = rng.random_range(0..data.len());
                    data.truncate(cut.max(1));
                }
                _ => {
                    let i = rng.random_range(0..data.len());
                    data.insert(i, rng.random());
                }
            }
        }
        if let Checked::Reply(reply) = check_reply(&data, 0x4242, &qname, RecordType::MX) {
            parsed += 1;
            if matches!(
                reply.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            ) {
                let _ = classify(&reply, &qname, QueryType::Mx);
            }
        }
    }
    assert!(parsed > 0, "no mutation parsed: the test exercises nothing");
    // Fully random buffers too.
    for _ in 0..20_000 {
        let mut data = vec![0u8; rng.random_range(0..300)];
        rng.fill(&mut data[..]);
        if data.len() > 2 {
            data[0] = 0x42;
            data[1] = 0x42;
            data[2] |= 0x80;
        }
        if let Checked::Reply(reply) = check_reply(&data, 0x4242, &qname, RecordType::MX) {
            let _ = classify(&reply, &qname, QueryType::Mx);
        }
    }
}

// ---------------------------------------------------------------- 9. bursts

#[test]
fn lost_query_is_sent_again_long_before_the_timeout() {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let server = FakeServer::start(move |q, _| {
        // The first copy is lost (as in a full receive buffer).
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            return vec![];
        }
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("lost.test.", 300, [192, 0, 2, 1])],
        )
    });
    let r = resolver(&[server.addr], 5000, 1, 0);
    let started = Instant::now();
    let answer = r.a("lost.test").unwrap();
    let took = started.elapsed();
    assert_eq!(answer.records, vec![Ipv4Addr::new(192, 0, 2, 1)]);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].id, seen[1].id, "the same query, sent again");
}

#[test]
fn retransmissions_back_off_and_the_timeout_stays_the_bound() {
    let server = FakeServer::start(|_, _| vec![]);
    let timeout = Duration::from_millis(1500);
    let r = resolver(&[server.addr], 1500, 2, 0);
    let started = Instant::now();
    assert_eq!(kind(r.a("silent.test")), DnsErrorKind::Retry);
    let took = started.elapsed();
    assert!(took >= timeout * 2 - Duration::from_millis(50), "{took:?}");
    assert!(took < timeout * 2 + Duration::from_millis(1500), "{took:?}");
    // Per try (one ID): sent at 0, ~250 ms, ~750 ms, maybe ~1750 ms with
    // jitter (+-25 %): 3 or 4 copies within 1.5 s (2 on a very busy
    // machine), never one per 250 ms.
    let seen = server.seen();
    let mut per_id: BTreeMap<u16, usize> = BTreeMap::new();
    for q in &seen {
        *per_id.entry(q.id).or_default() += 1;
    }
    assert_eq!(per_id.len(), 2, "one ID per try: {per_id:?}");
    assert!(per_id.values().all(|n| (2..=4).contains(n)), "{per_id:?}");
}

#[test]
fn concurrent_lookups_of_one_name_share_one_query() {
    let server = FakeServer::start(|q, _| {
        // Slow enough for every thread to ask meanwhile.
        thread::sleep(Duration::from_millis(300));
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec("shared.test.", 300, [192, 0, 2, 7])],
        )
    });
    // Cache off: the sharing is not the cache's doing.
    let r = Arc::new(resolver(&[server.addr], 2000, 1, 0));
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let r = Arc::clone(&r);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                r.a("Shared.TEST.")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(
            t.join().unwrap().unwrap().records,
            vec![Ipv4Addr::new(192, 0, 2, 7)]
        );
    }
    // One query (perhaps sent again while the server sleeps): one ID.
    let ids: std::collections::BTreeSet<u16> = server.seen().iter().map(|q| q.id).collect();
    assert_eq!(ids.len(), 1, "{:?}", server.seen());
    // Finished flights leave no trace: the next lookup asks again.
    let before = server.count();
    r.a("shared.test").unwrap();
    assert!(server.count() > before);
}

#[test]
fn threads_sharing_a_stuck_lookup_get_retry_within_their_schedule() {
    let server = FakeServer::start(|_, _| vec![]);
    let r = Arc::new(resolver(&[server.addr], 400, 1, 100));
    let start = Arc::new(Barrier::new(4));
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = Arc::clone(&r);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                r.mx("stuck.test")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(kind(t.join().unwrap()), DnsErrorKind::Retry);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let seen = server.seen();
    assert!(
        seen.iter().all(|q| q.id == seen[0].id),
        "one query (copies of it) for all threads: {seen:?}"
    );
}

#[test]
fn queries_in_flight_are_bounded() {
    let server = FakeServer::start(|q, _| {
        let owner = qname_of(q);
        if owner.starts_with("stuck") {
            return vec![];
        }
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec(&owner, 300, [192, 0, 2, 1])],
        )
    });
    let r = Arc::new(
        StubResolver::new(StubSettings {
            max_in_flight: 2,
            ..settings(&[server.addr], 1000, 1, 100)
        })
        .unwrap(),
    );
    let stuck: Vec<_> = ["stuck1.test", "stuck2.test"]
        .into_iter()
        .map(|name| {
            let r = Arc::clone(&r);
            thread::spawn(move || r.a(name))
        })
        .collect();
    let started = Instant::now();
    while server.count() < 2 && started.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(1));
    }
    // Both slots are taken: a third lookup waits instead of querying.
    let waiting = {
        let r = Arc::clone(&r);
        thread::spawn(move || r.a("ok.test"))
    };
    thread::sleep(Duration::from_millis(300));
    assert!(
        !server.seen().iter().any(|q| q.name == "ok.test."),
        "{:?}",
        server.seen()
    );
    for t in stuck {
        assert_eq!(kind(t.join().unwrap()), DnsErrorKind::Retry);
    }
    // It got a slot when one came free, or its try ran out meanwhile.
    match waiting.join().unwrap() {
        Ok(answer) => assert_eq!(answer.records, vec![Ipv4Addr::new(192, 0, 2, 1)]),
        Err(e) => assert_eq!(e.kind, DnsErrorKind::Retry),
    }
    // Slots are given back.
    assert!(r.a("later.test").is_ok());
}

#[test]
fn nodata_without_soa_is_cached_briefly() {
    let server = FakeServer::start(|q, _| reply(q, ResponseCode::NoError, vec![]));
    let (clock, now) = fake_clock();
    let r = resolver(&[server.addr], 1000, 1, 100).with_clock(clock);
    assert_eq!(kind(r.aaaa("v4only.test")), DnsErrorKind::NoData);
    assert_eq!(kind(r.aaaa("v4only.test")), DnsErrorKind::NoData);
    assert_eq!(server.count(), 1);
    advance(&now, u64::from(NODATA_NO_SOA_TTL) - 1);
    assert_eq!(kind(r.aaaa("v4only.test")), DnsErrorKind::NoData);
    assert_eq!(server.count(), 1);
    advance(&now, 2);
    assert_eq!(kind(r.aaaa("v4only.test")), DnsErrorKind::NoData);
    assert_eq!(server.count(), 2);
}

#[test]
fn cache_byte_bound_evicts_what_expires_soonest() {
    // "tNNN.test." answers with TTL NNN; all entries have the same size.
    let server = FakeServer::start(|q, _| {
        let owner = qname_of(q);
        let ttl = owner.get(1..4).and_then(|t| t.parse().ok()).unwrap_or(300);
        reply(
            q,
            ResponseCode::NoError,
            vec![a_rec(&owner, ttl, [192, 0, 2, 1])],
        )
    });
    let one = entry_size(
        &("t100.test.".to_string(), QueryType::A),
        &Ok((Records::A(vec![Ipv4Addr::new(192, 0, 2, 1)]), false, None)),
    );
    let (clock, _now) = fake_clock();
    let r = StubResolver::new(StubSettings {
        cache_max_bytes: 3 * one,
        ..settings(&[server.addr], 1000, 1, 100)
    })
    .unwrap()
    .with_clock(clock);
    for name in ["t300.test", "t100.test", "t200.test"] {
        r.a(name).unwrap();
    }
    assert_eq!((r.cached_entries(), r.cached_bytes()), (3, 3 * one));
    // Full: the entry that expires soonest (t100) makes room.
    r.a("t400.test").unwrap();
    assert_eq!((r.cached_entries(), r.cached_bytes()), (3, 3 * one));
    for name in ["t300.test", "t200.test", "t400.test"] {
        r.a(name).unwrap();
    }
    assert_eq!(server.count(), 4, "t300, t200, t400 still cached");
    r.a("t100.test").unwrap();
    assert_eq!(server.count(), 5, "t100 was evicted");
    assert!(r.cached_bytes() <= 3 * one);

    // An entry larger than the whole bound is not kept at all.
    let tiny = StubResolver::new(StubSettings {
        cache_max_bytes: one - 1,
        ..settings(&[server.addr], 1000, 1, 100)
    })
    .unwrap();
    tiny.a("t300.test").unwrap();
    assert_eq!((tiny.cached_entries(), tiny.cached_bytes()), (0, 0));
}

// ---------------------------------------------------------------- resolv.conf

#[test]
fn system_nameservers_from_resolv_conf() {
    let dir = std::env::temp_dir().join(format!("mailhop-stub-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resolv.conf");
    std::fs::write(
        &path,
        "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::1\noptions ndots:2 timeout:1\n",
    )
    .unwrap();
    let servers = system_nameservers(&path).unwrap();
    assert_eq!(
        servers,
        vec![
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:53".parse::<SocketAddr>().unwrap()
        ]
    );
    // No nameserver line: the local host, like glibc.
    std::fs::write(&path, "search example.com\n").unwrap();
    let servers = system_nameservers(&path).unwrap();
    assert_eq!(servers[0], "127.0.0.1:53".parse::<SocketAddr>().unwrap());
    let missing = system_nameservers(&dir.join("nope")).unwrap_err();
    assert!(missing.contains("cannot read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolver_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StubResolver>();
    let r: Arc<dyn DnsLookup> = Arc::new(resolver(&["127.0.0.1:53".parse().unwrap()], 100, 1, 0));
    drop(r);
}

#[test]
fn tlsa_answers_carry_the_records_and_the_ad_bit() {
    use hickory_proto::rr::rdata::TLSA;
    use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
    let digest: Vec<u8> = (0..32).collect();
    let data = digest.clone();
    let server = FakeServer::start(move |q, _| {
        let owner = qname_of(q);
        let records =
            if owner.starts_with("_25._tcp.") && q.queries[0].query_type() == RecordType::TLSA {
                vec![
                    Record::from_rdata(
                        name(&owner),
                        300,
                        RData::TLSA(TLSA::new(
                            CertUsage::DaneEe,
                            Selector::Spki,
                            Matching::Sha256,
                            data.clone(),
                        )),
                    ),
                    Record::from_rdata(
                        name(&owner),
                        300,
                        RData::TLSA(TLSA::new(
                            CertUsage::PkixTa,
                            Selector::Full,
                            Matching::Sha512,
                            vec![9; 64],
                        )),
                    ),
                ]
            } else {
                vec![]
            };
        let mut m = response(q, ResponseCode::NoError, records);
        m.metadata.authentic_data = owner.contains("signed");
        wire(&m)
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let answer = r.tlsa("_25._tcp.mx.signed.test").unwrap();
    assert!(answer.authenticated);
    assert_eq!(
        answer.records,
        vec![
            crate::dane::Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: digest,
            },
            crate::dane::Tlsa {
                usage: 0,
                selector: 0,
                matching: 2,
                data: vec![9; 64],
            },
        ]
    );
    assert!(!r.tlsa("_25._tcp.mx.plain.test").unwrap().authenticated);
    assert_eq!(kind(r.tlsa("mx.signed.test")), DnsErrorKind::NoData);
    assert_eq!(server.seen()[0].rtype, RecordType::TLSA);
}

#[test]
fn txt_answers_join_the_strings_of_each_record() {
    use hickory_proto::rr::rdata::TXT;
    let server = FakeServer::start(move |q, _| {
        let owner = qname_of(q);
        let records =
            if q.queries[0].query_type() == RecordType::TXT && owner.starts_with("_mta-sts.") {
                vec![
                    Record::from_rdata(
                        name(&owner),
                        300,
                        RData::TXT(TXT::new(vec!["v=STSv1; ".into(), "id=2026120301;".into()])),
                    ),
                    Record::from_rdata(
                        name(&owner),
                        300,
                        RData::TXT(TXT::new(vec!["other".into()])),
                    ),
                ]
            } else {
                vec![]
            };
        let mut m = response(q, ResponseCode::NoError, records);
        m.metadata.authentic_data = true;
        wire(&m)
    });
    let r = resolver(&[server.addr], 1000, 1, 0);
    let answer = r.txt("_mta-sts.example.test").unwrap();
    assert_eq!(answer.records, vec!["v=STSv1; id=2026120301;", "other"]);
    assert!(answer.authenticated);
    assert_eq!(kind(r.txt("example.test")), DnsErrorKind::NoData);
}

#[test]
fn the_ad_bit_of_an_untrusted_resolver_is_ignored() {
    let server = FakeServer::start(move |q, _| {
        let owner = qname_of(q);
        let records = vec![Record::from_rdata(
            name(&owner),
            300,
            RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
        )];
        let mut m = response(q, ResponseCode::NoError, records);
        m.metadata.authentic_data = true;
        wire(&m)
    });
    let trusting = resolver(&[server.addr], 1000, 1, 0);
    assert!(trusting.a("mx.signed.test").unwrap().authenticated);
    for trusted in [vec![], vec!["10.0.0.0/8".parse().unwrap()]] {
        let doubting = StubResolver::new(StubSettings {
            trusted_resolvers: trusted,
            ..settings(&[server.addr], 1000, 1, 0)
        })
        .unwrap();
        let answer = doubting.a("mx.signed.test").unwrap();
        assert_eq!(answer.records, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(!answer.authenticated);
    }
}
