//! The DNSSEC lab of the DANE tests: a throwaway authoritative `nsd`
//! serving a signed zone and an unsigned child zone, and a validating
//! `unbound` in front of it, both on free loopback ports, both in the
//! foreground under the guard [`DnssecLab`].
//!
//! - `test.` ([`SIGNED_ORIGIN`]): the records a test gives
//!   ([`Zones::signed`]), signed with `ldns-keygen` (ECDSA P-256, a KSK and
//!   a ZSK) and `ldns-signzone -n` (NSEC3); then the [`Zones::bogus`]
//!   records are appended to the signed file, without signatures, so that
//!   unbound finds them bogus and answers SERVFAIL.
//! - `insecure.test.` ([`INSECURE_ORIGIN`]): an unsigned zone with the
//!   [`Zones::insecure`] records, delegated from `test.` without a DS (a
//!   provably insecure delegation): unbound answers without the AD bit.
//! - unbound: `module-config: "validator iterator"`, the KSK's DS as the
//!   only trust anchor, a stub zone for each zone pointing at nsd, no root
//!   configuration files, `username: ""` (runs as whoever runs the tests).
//!   Its answers for `test.` carry the AD bit. [`DnssecLab::resolver`] is
//!   what mailhop's `[dns] nameservers` names.
//!
//! Contract: [`DnssecLab::start`] returns a lab whose nsd answers
//! authoritatively and whose unbound answers `test. SOA` with the AD bit
//! (both checked with real queries, bounded), or `None` after a loud
//! SKIPPED line (see `tools::skip`; a panic under `CI=true`) when nsd,
//! unbound or the ldns tools are not installed, or panics (with both logs)
//! when the lab does not come up within [`START_ATTEMPTS`] attempts on
//! fresh ports. On drop both servers get SIGTERM, are waited for, with their
//! process groups, (bounded by [`STOP_LIMIT`], then SIGKILL) and the
//! directory is removed.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;
use super::postfix::group_members;
use super::tools::{find_tool, skip};

/// The signed zone.
pub const SIGNED_ORIGIN: &str = "test.";
/// The unsigned zone, delegated from [`SIGNED_ORIGIN`] without a DS.
pub const INSECURE_ORIGIN: &str = "insecure.test.";
/// Fresh pairs of ports tried before giving up.
pub const START_ATTEMPTS: usize = 3;
/// Longest wait for a server to answer after it was started.
pub const READY_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a server to exit after SIGTERM.
pub const STOP_LIMIT: Duration = Duration::from_secs(5);
/// TTL of every record.
const TTL: u32 = 300;
const POLL: Duration = Duration::from_millis(50);

/// The records of the lab's zones, as presentation lines `owner TYPE
/// RDATA` (the owner absolute or not: a final dot is added; TTL and class
/// are added). Helpers: [`mx`], [`a`], [`aaaa`], [`cname`], [`tlsa`].
#[derive(Clone, Debug, Default)]
pub struct Zones {
    signed: Vec<String>,
    bogus: Vec<String>,
    insecure: Vec<String>,
}

impl Zones {
    pub fn new() -> Self {
        Self::default()
    }

    /// A record of the signed zone (its owner under `test.`).
    pub fn signed(mut self, record: &str) -> Self {
        self.signed.push(record.to_string());
        self
    }

    /// A record appended to the signed zone after signing: bogus.
    pub fn bogus(mut self, record: &str) -> Self {
        self.bogus.push(record.to_string());
        self
    }

    /// A record of the unsigned zone (its owner under `insecure.test.`).
    pub fn insecure(mut self, record: &str) -> Self {
        self.insecure.push(record.to_string());
        self
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// `domain. MX preference host.`
pub fn mx(domain: &str, preference: u16, host: &str) -> String {
    format!("{} MX {preference} {}", fqdn(domain), fqdn(host))
}

/// `host. A addr`
pub fn a(host: &str, addr: Ipv4Addr) -> String {
    format!("{} A {addr}", fqdn(host))
}

/// `host. AAAA addr`
pub fn aaaa(host: &str, addr: Ipv6Addr) -> String {
    format!("{} AAAA {addr}", fqdn(host))
}

/// `alias. CNAME target.`
pub fn cname(alias: &str, target: &str) -> String {
    format!("{} CNAME {}", fqdn(alias), fqdn(target))
}

/// The TLSA owner of an SMTP server: `_port._tcp.host.`.
pub fn tlsa_name(port: u16, host: &str) -> String {
    format!("_{port}._tcp.{}", fqdn(host))
}

/// `_port._tcp.host. TLSA usage selector matching data` (`data` in hex).
pub fn tlsa(port: u16, host: &str, usage: u8, selector: u8, matching: u8, data: &str) -> String {
    format!(
        "{} TLSA {usage} {selector} {matching} {data}",
        tlsa_name(port, host)
    )
}

/// A record line with TTL and class: `owner. TTL IN TYPE RDATA`.
fn zone_line(record: &str) -> String {
    let record = record.trim();
    let (owner, rest) = record
        .split_once(char::is_whitespace)
        .unwrap_or_else(|| panic!("record {record:?} has no type"));
    format!("{} {TTL} IN {}", fqdn(owner), rest.trim_start())
}

/// The running lab; both servers stopped and the directory removed on drop.
pub struct DnssecLab {
    dir: tempfile::TempDir,
    nsd: Child,
    unbound: Child,
    authoritative: SocketAddr,
    resolver: SocketAddr,
}

/// The programs the lab runs.
struct Tools {
    nsd: PathBuf,
    unbound: PathBuf,
    keygen: PathBuf,
    signzone: PathBuf,
}

/// The programs, or `None` after a loud SKIPPED line naming the missing ones.
fn require_tools() -> Option<Tools> {
    let wanted = [
        ("nsd", "nsd"),
        ("unbound", "unbound"),
        ("ldns-keygen", "ldnsutils"),
        ("ldns-signzone", "ldnsutils"),
    ];
    let found: Vec<Option<PathBuf>> = wanted.iter().map(|(n, _)| find_tool(n)).collect();
    let missing: Vec<String> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((n, p), _)| format!("{n} (package {p})"))
        .collect();
    if !missing.is_empty() {
        skip(&format!(
            "the DNSSEC lab needs {} (run scripts/install-test-deps.sh)",
            missing.join(", ")
        ));
        return None;
    }
    let mut found = found.into_iter().flatten();
    Some(Tools {
        nsd: found.next()?,
        unbound: found.next()?,
        keygen: found.next()?,
        signzone: found.next()?,
    })
}

impl DnssecLab {
    /// Writes, signs and serves `zones`; see the module contract.
    pub fn start(zones: &Zones) -> Option<DnssecLab> {
        let tools = require_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("mailhop-dnssec-")
            .tempdir_in("/tmp")
            .expect("create the DNSSEC lab directory");
        let base = dir.path().to_path_buf();
        sign_zones(&tools, &base, zones);

        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let (nsd_port, unbound_port) = two_ports();
            let authoritative = SocketAddr::from((Ipv4Addr::LOCALHOST, nsd_port));
            let resolver = SocketAddr::from((Ipv4Addr::LOCALHOST, unbound_port));
            fs::write(base.join("nsd.conf"), nsd_conf(&base, nsd_port)).expect("write nsd.conf");
            fs::write(
                base.join("unbound.conf"),
                unbound_conf(&base, unbound_port, nsd_port),
            )
            .expect("write unbound.conf");
            let mut nsd = spawn(&tools.nsd, &base, "nsd");
            // nsd first: an unbound that asked too early would mark it down.
            if !wait_ready(&mut nsd, authoritative, false) {
                stop(&mut nsd);
                failures.push(format!(
                    "attempt {attempt}: nsd on {authoritative} did not answer:\n{}",
                    logs(&base)
                ));
                continue;
            }
            let mut unbound = spawn(&tools.unbound, &base, "unbound");
            if !wait_ready(&mut unbound, resolver, true) {
                stop(&mut unbound);
                stop(&mut nsd);
                failures.push(format!(
                    "attempt {attempt}: unbound on {resolver} gave no validated answer:\n{}",
                    logs(&base)
                ));
                continue;
            }
            return Some(DnssecLab {
                dir,
                nsd,
                unbound,
                authoritative,
                resolver,
            });
        }
        panic!("the DNSSEC lab did not start: {failures:#?}");
    }

    /// unbound's address: the validating resolver for mailhop.
    pub fn resolver(&self) -> SocketAddr {
        self.resolver
    }

    /// `"127.0.0.1:port"` of [`DnssecLab::resolver`], for `[dns] nameservers`.
    pub fn nameserver(&self) -> String {
        self.resolver.to_string()
    }

    /// nsd's address (answers without validation, AA bit).
    pub fn authoritative(&self) -> SocketAddr {
        self.authoritative
    }

    /// The lab's directory (zones, keys, configurations, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nsd's and unbound's logs so far, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for DnssecLab {
    fn drop(&mut self) {
        stop(&mut self.unbound);
        stop(&mut self.nsd);
    }
}

/// Writes both zone files and signs `test.`: `test.zone.signed` (with the
/// bogus records appended), `insecure.zone`, `trust-anchor.ds`.
fn sign_zones(tools: &Tools, base: &Path, zones: &Zones) {
    let apex = |origin: &str| {
        format!(
            "$ORIGIN {origin}\n$TTL {TTL}\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n@ IN NS ns.test.\n"
        )
    };
    let mut signed = apex(SIGNED_ORIGIN);
    signed.push_str("ns.test. IN A 127.0.0.1\n");
    // The delegation of the unsigned zone: NS, no DS.
    signed.push_str(&format!("{INSECURE_ORIGIN} IN NS ns.test.\n"));
    for record in &zones.signed {
        signed.push_str(&zone_line(record));
        signed.push('\n');
    }
    let mut insecure = apex(INSECURE_ORIGIN);
    for record in &zones.insecure {
        insecure.push_str(&zone_line(record));
        insecure.push('\n');
    }
    fs::write(base.join("test.zone"), signed).expect("write test.zone");
    fs::write(base.join("insecure.zone"), insecure).expect("write insecure.zone");

    let keygen = |ksk: bool| -> String {
        let mut command = Command::new(&tools.keygen);
        if ksk {
            command.arg("-k");
        }
        let out = command
            .args(["-a", "ECDSAP256SHA256", SIGNED_ORIGIN])
            .current_dir(base)
            .stdin(Stdio::null())
            .output()
            .expect("run ldns-keygen");
        assert!(out.status.success(), "ldns-keygen: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let zsk = keygen(false);
    let ksk = keygen(true);
    let out = Command::new(&tools.signzone)
        .args(["-n", "test.zone", &zsk, &ksk])
        .current_dir(base)
        .stdin(Stdio::null())
        .output()
        .expect("run ldns-signzone");
    assert!(out.status.success(), "ldns-signzone: {out:?}");
    if !zones.bogus.is_empty() {
        let mut file = fs::read_to_string(base.join("test.zone.signed")).expect("read signed zone");
        for record in &zones.bogus {
            file.push_str(&zone_line(record));
            file.push('\n');
        }
        fs::write(base.join("test.zone.signed"), file).expect("append bogus records");
    }
    fs::copy(base.join(format!("{ksk}.ds")), base.join("trust-anchor.ds"))
        .expect("copy the KSK's DS as the trust anchor");
}

/// Two different free loopback ports.
fn two_ports() -> (u16, u16) {
    for _ in 0..100 {
        let (a, b) = (free_port(), free_port());
        if a != b {
            return (a, b);
        }
    }
    panic!("no two distinct free ports");
}

fn nsd_conf(base: &Path, port: u16) -> String {
    let base = base.display();
    format!(
        "server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  username: \"\"
  chroot: \"\"
  zonesdir: \"{base}\"
  database: \"\"
  zonelistfile: \"{base}/zone.list\"
  xfrdfile: \"{base}/xfrd.state\"
  xfrdir: \"{base}\"
  pidfile: \"{base}/nsd.pid\"
  logfile: \"{base}/nsd.log\"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: {SIGNED_ORIGIN}
  zonefile: test.zone.signed
zone:
  name: {INSECURE_ORIGIN}
  zonefile: insecure.zone
"
    )
}

fn unbound_conf(base: &Path, port: u16, nsd_port: u16) -> String {
    let base = base.display();
    format!(
        "server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  num-threads: 1
  username: \"\"
  chroot: \"\"
  directory: \"{base}\"
  pidfile: \"{base}/unbound.pid\"
  logfile: \"{base}/unbound.log\"
  use-syslog: no
  verbosity: 1
  val-log-level: 2
  do-not-query-localhost: no
  module-config: \"validator iterator\"
  trust-anchor-file: \"{base}/trust-anchor.ds\"
  access-control: 127.0.0.0/8 allow
  qname-minimisation: no
  # unbound refuses the special-use \"test.\" by default.
  local-zone: \"test.\" nodefault
stub-zone:
  name: \"{SIGNED_ORIGIN}\"
  stub-addr: 127.0.0.1@{nsd_port}
stub-zone:
  name: \"{INSECURE_ORIGIN}\"
  stub-addr: 127.0.0.1@{nsd_port}
remote-control:
  control-enable: no
"
    )
}

/// Starts `program -d -c BASE/NAME.conf` in its own process group, output
/// to `BASE/NAME.out`.
fn spawn(program: &Path, base: &Path, name: &str) -> Child {
    let out = fs::File::create(base.join(format!("{name}.out"))).expect("create an output file");
    let err = out.try_clone().expect("clone an output file");
    Command::new(program)
        .arg("-d")
        .arg("-c")
        .arg(base.join(format!("{name}.conf")))
        .current_dir(base)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

/// Polls (bounded by [`READY_LIMIT`]) until `server` answers `test. SOA`
/// with NOERROR and, when `validated`, the AD bit; false when the process
/// exits or the time is up.
fn wait_ready(child: &mut Child, server: SocketAddr, validated: bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < READY_LIMIT {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let answer = query(server, SIGNED_ORIGIN, 6, Duration::from_millis(300));
        if answer.is_some_and(|a| a.rcode == 0 && (a.ad || !validated)) {
            return true;
        }
        thread::sleep(POLL);
    }
    false
}

/// SIGTERM to the server (nsd then stops and reaps its own children), a
/// bounded wait for it and its process group, then SIGKILL to the group;
/// reaped.
fn stop(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < STOP_LIMIT {
        if matches!(child.try_wait(), Ok(Some(_))) && group_members(child.id()).is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // The group id is the server's pid (process_group(0)).
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

fn logs(base: &Path) -> String {
    ["nsd.out", "nsd.log", "unbound.out", "unbound.log"]
        .iter()
        .map(|name| {
            format!(
                "--- {name}:\n{}",
                fs::read_to_string(base.join(name)).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What [`query`] saw of an answer's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    /// Authenticated data: validated by the resolver.
    pub ad: bool,
    /// Authoritative answer.
    pub aa: bool,
    pub answers: u16,
}

/// One UDP query for `name` of type `qtype` with RD, AD and EDNS0 DO set;
/// `None` on no answer within `timeout` or an answer that is not ours.
pub fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Option<Answer> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let id: u16 = 0x4d48;
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0120u16.to_be_bytes()); // RD, AD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // 1 question, 1 additional
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        packet.push(u8::try_from(label.len()).ok()?);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes()); // IN
    // OPT: root, type 41, payload 1232, DO.
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    socket.send_to(&packet, server).ok()?;
    let mut buf = [0u8; 4096];
    let (len, from) = socket.recv_from(&mut buf).ok()?;
    let header = buf.get(..len)?.get(..12)?;
    if from != server || header[..2] != id.to_be_bytes() || header[2] & 0x80 == 0 {
        return None;
    }
    Some(Answer {
        rcode: header[3] & 0x0f,
        ad: header[3] & 0x20 != 0,
        aa: header[2] & 0x04 != 0,
        answers: u16::from_be_bytes([header[6], header[7]]),
    })
}
