//! A throwaway `dnsmasq` name server per test: 127.0.0.1 on a free port,
//! serving a [`Zone`] given on its command line (no system configuration
//! files, no upstream servers, no privileges kept).
//!
//! Contract: bounded in count and time. dnsmasq gets a fresh port up to
//! [`START_ATTEMPTS`] times and is ready when *its own* process holds the
//! UDP socket (checked in /proc, so a probe cannot reach another test's
//! server) and answers a probe, within [`READY_LIMIT`]; otherwise `start`
//! panics with dnsmasq's log. The [`Dnsmasq`] guard kills and reaps the
//! process on drop and removes its directory, so a failing test leaves
//! nothing running. Each instance has its own port, so tests run in
//! parallel safely.
//!
//! Upstream faults come from the guard itself: a UDP socket that never
//! answers ([`Zone::unanswered`]) and an in-process server that answers
//! SERVFAIL at once ([`Zone::servfail`]); both live as long as the guard.
//!
//! Every zone answers for the whole `.test` domain (`--local=/test/`):
//! names under `.test` that the zone does not define get NXDOMAIN (or
//! NODATA when the name has records of another type).
//!
//! When dnsmasq is not installed (or `MAILHOP_DNSMASQ` names no file),
//! [`Dnsmasq::start`] prints a loud SKIPPED line and returns `None`, or
//! panics when `CI=true`.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mailhop::dns::stub::{StubResolver, StubSettings};
use mailhop::dns::{DnsErrorKind, DnsLookup};

use super::tools::{dnsmasq_binary, is_root, require_dnsmasq};
use super::{Proto, Workdir, owns_socket};

/// Fresh ports tried before giving up.
pub const START_ATTEMPTS: usize = 3;
/// Longest wait for one dnsmasq to become ready.
pub const READY_LIMIT: Duration = Duration::from_secs(10);
/// A name every zone answers (with NXDOMAIN): the readiness probe.
const PROBE_NAME: &str = "dnsmasq-ready-probe.test";

/// The records one dnsmasq serves, built up from command-line options.
#[derive(Clone, Debug)]
pub struct Zone {
    args: Vec<String>,
    /// Lines of an extra configuration file (for zones too large for a
    /// command line).
    conf: String,
    /// Domains forwarded to a UDP socket that never answers.
    unanswered: Vec<String>,
    /// Domains forwarded to a server that answers everything with SERVFAIL.
    servfail: Vec<String>,
    log_queries: bool,
}

impl Default for Zone {
    fn default() -> Self {
        Self::new()
    }
}

impl Zone {
    /// An empty `.test` zone: every name under `.test` is NXDOMAIN.
    pub fn new() -> Self {
        Self {
            args: vec!["--local=/test/".into()],
            conf: String::new(),
            unanswered: Vec::new(),
            servfail: Vec::new(),
            log_queries: false,
        }
    }

    /// `domain MX preference exchange`.
    pub fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.args
            .push(format!("--mx-host={domain},{exchange},{preference}"));
        self
    }

    /// The RFC 7505 null MX: `domain MX 0 .`.
    pub fn null_mx(self, domain: &str) -> Self {
        self.mx(domain, 0, ".")
    }

    /// A and/or AAAA records for `name` (one `--host-record` per address).
    pub fn host(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        for addr in addrs {
            self.args.push(format!("--host-record={name},{addr}"));
        }
        self
    }

    /// One A record.
    pub fn a(self, name: &str, addr: Ipv4Addr) -> Self {
        self.host(name, &[IpAddr::V4(addr)])
    }

    /// One TXT record for `name` with the single string `text` (no
    /// commas: dnsmasq splits strings at them).
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        self.args.push(format!("--txt-record={name},{text}"));
        self
    }

    /// Forwards queries for `domain` to `server` (`--server=/domain/ip#port`).
    pub fn forward(mut self, domain: &str, server: SocketAddr) -> Self {
        self.args.push(format!(
            "--server=/{domain}/{}#{}",
            server.ip(),
            server.port()
        ));
        self
    }

    /// Forwards queries for `domain` to a UDP socket that is bound (by the
    /// [`Dnsmasq`] guard) and never read: dnsmasq never gets an answer.
    pub fn unanswered(mut self, domain: &str) -> Self {
        self.unanswered.push(domain.into());
        self
    }

    /// Forwards queries for `domain` to an in-process server (run by the
    /// [`Dnsmasq`] guard) that answers every query at once with SERVFAIL.
    pub fn servfail(mut self, domain: &str) -> Self {
        self.servfail.push(domain.into());
        self
    }

    /// Any other dnsmasq option, verbatim.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// One line of the extra configuration file (option without `--`).
    pub fn conf_line(mut self, line: &str) -> Self {
        self.conf.push_str(line);
        self.conf.push('\n');
        self
    }

    /// Logs every query to the log ([`Dnsmasq::log`]).
    pub fn log_queries(mut self) -> Self {
        self.log_queries = true;
        self
    }
}

/// A running dnsmasq; killed and reaped on drop.
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    /// Where the zone's `unanswered` domains are forwarded: bound, never read.
    _silent: Vec<UdpSocket>,
    /// Where the zone's `servfail` domains are forwarded.
    _servfail: Vec<Servfail>,
    _dir: Workdir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP name server on 127.0.0.1 that answers every query with SERVFAIL
/// (the question echoed, no records). Its thread polls a stop flag every
/// 50 ms and is joined on drop.
struct Servfail {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Servfail {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the SERVFAIL server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopping.load(Ordering::SeqCst) {
                if let Ok((len, from)) = socket.recv_from(&mut buf)
                    && let Some(reply) = servfail_reply(buf.get(..len).unwrap_or_default())
                {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Servfail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The SERVFAIL response to a query: its header with QR, RA and RCODE 2,
/// its (single) question, nothing else. `None` for a malformed query.
fn servfail_reply(query: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 12;
    if query.len() < HEADER || query.get(4..6)? != [0, 1] {
        return None;
    }
    // The question: labels up to the root label, then QTYPE and QCLASS.
    let mut end = HEADER;
    loop {
        let label = usize::from(*query.get(end)?);
        if label == 0 || label > 63 {
            break;
        }
        end += 1 + label;
    }
    end += 1 + 4;
    let mut reply = query.get(..end)?.to_vec();
    reply[2] = 0x80 | (query[2] & 0x01); // QR, opcode QUERY, RD copied
    reply[3] = 0x80 | 0x02; // RA, RCODE 2 (SERVFAIL)
    reply[6..HEADER].fill(0); // no answer, authority or additional records
    Some(reply)
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A stub resolver on one server, with short timeouts.
pub fn quick_resolver(addr: SocketAddr, cache: usize) -> StubResolver {
    StubResolver::new(StubSettings {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        cache_max_entries: cache,
        ..StubSettings::new(Vec::new())
    })
    .expect("resolver")
}

impl Dnsmasq {
    /// Starts dnsmasq serving `zone`, or returns `None` (after a SKIPPED
    /// line) when it is not installed and this is not CI.
    pub fn start(zone: &Zone) -> Option<Self> {
        let binary = require_dnsmasq()?;
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let dir = Workdir::new();
            let conf = dir.file("zone.conf", zone.conf.as_bytes());
            let log_path = dir.path().join("dnsmasq.log");
            let mut silent = Vec::new();
            let mut forwards = Vec::new();
            for domain in &zone.unanswered {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP socket");
                let port = socket.local_addr().expect("local addr").port();
                forwards.push(format!("--server=/{domain}/127.0.0.1#{port}"));
                silent.push(socket);
            }
            let mut servfail = Vec::new();
            for domain in &zone.servfail {
                let server = Servfail::start();
                forwards.push(format!(
                    "--server=/{domain}/127.0.0.1#{}",
                    server.addr.port()
                ));
                servfail.push(server);
            }
            let port = free_dns_port();
            let mut cmd = Command::new(&binary);
            cmd.arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg(format!("--conf-file={}", conf.display()))
                .arg(format!("--port={port}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--pid-file=",
                    "--cache-size=0",
                ])
                .args(&zone.args)
                .args(&forwards)
                .arg(format!("--log-facility={}", log_path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if zone.log_queries {
                cmd.arg("--log-queries");
            }
            // dnsmasq drops root privileges to "nobody" unless told
            // otherwise; Debian has no "dip" group by default.
            if is_root() {
                cmd.args(["--user=nobody", "--group=nogroup"]);
            }
            let child = cmd.spawn().expect("spawn dnsmasq");
            let mut server = Dnsmasq {
                child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                log_path,
                _silent: silent,
                _servfail: servfail,
                _dir: dir,
            };
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(why) => failures.push(format!(
                    "attempt {attempt}, port {port}: {why}; log:\n{}",
                    server.log()
                )),
            }
        }
        panic!("dnsmasq did not start: {failures:#?}");
    }

    /// Polls (bounded) until this very process serves its port.
    fn wait_ready(&mut self) -> Result<(), String> {
        let resolver = quick_resolver(self.addr, 0);
        let udp = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.addr.port());
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited early with {status}"));
            }
            if owns_socket(self.child.id(), Proto::Udp, udp) {
                match resolver.a(PROBE_NAME) {
                    Err(e) if e.kind == DnsErrorKind::Retry => {}
                    _ => return Ok(()),
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not ready within {READY_LIMIT:?}"))
    }

    /// The server's address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:port"`, for `[dns] nameservers`.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// dnsmasq's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}
