//! A private Postfix instance per test, as a TLS peer for mailhop: its own
//! configuration, queue and data directories under a temporary directory,
//! three smtpd listeners on loopback, and a `maillog_file` the test reads.
//!
//! | listener | `syslog_name` | what it is |
//! |---|---|---|
//! | [`Postfix::starttls_port`] | `postfix/starttls` | plain SMTP offering STARTTLS (`smtpd_tls_security_level=may`), certificate for `mx.tls.test` |
//! | [`Postfix::smtps_port`] | `postfix/smtps` | SMTPS wrapper mode (`smtpd_tls_wrappermode=yes`, level `encrypt`), same certificate |
//! | [`Postfix::wrong_name_port`] | `postfix/wrongname` | like the first, but with the certificate for `wrong.tls.test` |
//!
//! Mail from 127.0.0.0/8 to any domain is accepted (`relay_domains =
//! static:all`, `smtpd_recipient_restrictions = permit_mynetworks,
//! reject`) and discarded (`default_transport = discard`), so every accepted
//! message leaves a `QUEUEID: client=...` line in its smtpd session and a
//! `postfix/discard` line with `status=sent`. `smtpd_tls_loglevel = 1` logs
//! `... TLS connection established from ...` for every TLS session.
//!
//! [`Postfix::start_with`] adds [`Listener`]s for DANE: STARTTLS listeners
//! (`smtpd_tls_security_level=may`) on chosen loopback addresses (e.g.
//! 127.0.0.1 and 127.0.0.2, two MX hosts), all on one port
//! ([`Postfix::listener_port`], free on every address; mailhop's `[smtp]
//! port`), each presenting the key and chain file it names
//! (`smtpd_tls_chain_files`) and logging as `postfix/<name>/smtpd`
//! ([`Postfix::sessions_of`]).
//!
//! Contract: [`Postfix::start`] returns a running instance whose master
//! process itself listens on the three ports (checked in /proc, never by
//! connecting), or `None` after a loud SKIPPED line when Postfix cannot be
//! run here (not installed, no `postfix` user, not root), or panics: always
//! under `CI=true` when Postfix is unavailable, and when the instance does
//! not start within [`START_ATTEMPTS`] attempts on fresh ports (with the
//! output of `postfix start` and the maillog). The guard stops the instance
//! on drop (`postfix -c DIR stop`, then waits, bounded, for the master and
//! every process of its group to exit, killing the group after
//! [`STOP_LIMIT`]) and removes its directory. Instances share nothing, so
//! tests run them in parallel.
//!
//! Postfix's own commands report errors only to a terminal or syslog, so
//! `postfix start` runs under `script -qec ... /dev/null` (when `script` is
//! installed) and its output is kept for the panic message.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::certs::Pki;
use super::tools::{is_root, postfix_binary, skip};
use super::{Proto, free_port, owns_socket};

/// Fresh sets of ports tried before giving up.
pub const START_ATTEMPTS: usize = 3;
/// Longest wait for the master to exit after `postfix stop`.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a line to appear in the maillog.
pub const LOG_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);

/// The postfix(1) command when a private instance can run here; `None`
/// (after a loud notice) otherwise. Panics instead when `CI=true`.
pub fn require_postfix() -> Option<PathBuf> {
    let problem = match postfix_binary() {
        None => "Postfix (postfix, smtpd) is not installed".to_string(),
        Some(_) if !is_root() => "a private Postfix instance needs root".to_string(),
        Some(_) if postfix_ids().is_none() => "the postfix user does not exist".to_string(),
        Some(path) => return Some(path),
    };
    skip(&format!(
        "{problem} (run scripts/install-test-deps.sh as root)"
    ));
    None
}

/// uid and gid of the `postfix` user.
pub(super) fn postfix_ids() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    let user = nix::unistd::User::from_name("postfix").ok()??;
    Some((user.uid, user.gid))
}

/// One of the instance's smtpd listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    StartTls,
    Smtps,
    WrongName,
}

impl Service {
    /// The smtpd program name in the maillog: `postfix/starttls/smtpd`.
    pub fn program(self) -> &'static str {
        match self {
            Service::StartTls => "postfix/starttls/smtpd",
            Service::Smtps => "postfix/smtps/smtpd",
            Service::WrongName => "postfix/wrongname/smtpd",
        }
    }
}

/// One smtpd session as the maillog shows it: from `connect from` to
/// `disconnect from` of one smtpd process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub pid: u32,
    /// The messages (without the syslog prefix), in order.
    pub lines: Vec<String>,
}

impl Session {
    /// The `disconnect from ...` line was logged.
    pub fn complete(&self) -> bool {
        self.disconnect().is_some()
    }

    /// `Anonymous TLS connection established from localhost[127.0.0.1]: ...`.
    pub fn tls_line(&self) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| l.contains("TLS connection established from "))
    }

    /// The queue id of the message this session handed to Postfix (its
    /// `QUEUEID: client=...` line).
    pub fn queue_id(&self) -> Option<String> {
        self.lines.iter().find_map(|l| {
            let (id, rest) = l.split_once(": client=")?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| id.to_string())
                .filter(|_| !rest.is_empty())
        })
    }

    /// `disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 ...`.
    pub fn disconnect(&self) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| l.starts_with("disconnect from "))
    }

    /// The command counts of the disconnect line: `ehlo=2 starttls=1 mail=1
    /// rcpt=1 data=1 quit=1 commands=7` (empty while the session is open).
    pub fn counts(&self) -> &str {
        self.disconnect()
            .and_then(|line| line.split_once("] "))
            .map_or("", |(_, counts)| counts)
    }
}

/// A maillog line split into program, pid and message.
pub(super) fn split_line(line: &str) -> Option<(&str, u32, &str)> {
    let start = line.find(" postfix/")? + 1;
    let rest = line.get(start..)?;
    let (tag, message) = rest.split_once("]: ")?;
    let (program, pid) = tag.split_once('[')?;
    Some((program, pid.parse().ok()?, message))
}

/// An extra STARTTLS listener of [`Postfix::start_with`]: `addr` at the
/// instance's [`Postfix::listener_port`], `syslog_name = postfix/<name>`,
/// presenting `chain_file` (key, leaf, then any issuers, in one PEM file:
/// `smtpd_tls_chain_files`), with any further `-o name=value` `options`
/// (e.g. SASL: [`Listener::with_options`]).
#[derive(Clone, Debug)]
pub struct Listener {
    pub addr: Ipv4Addr,
    /// A short word (letters, digits): the syslog name's last part.
    pub name: String,
    pub chain_file: PathBuf,
    /// `name=value` smtpd parameters (no blanks).
    pub options: Vec<String>,
}

impl Listener {
    pub fn new(addr: Ipv4Addr, name: &str, chain_file: &Path) -> Self {
        Self {
            addr,
            name: name.to_string(),
            chain_file: chain_file.to_path_buf(),
            options: Vec::new(),
        }
    }

    /// The listener with these extra `name=value` smtpd parameters.
    pub fn with_options(mut self, options: &[String]) -> Self {
        self.options.extend(options.iter().cloned());
        self
    }

    /// The smtpd program name in the maillog: `postfix/<name>/smtpd`.
    pub fn program(&self) -> String {
        format!("postfix/{}/smtpd", self.name)
    }
}

/// A running private Postfix; stopped on drop.
pub struct Postfix {
    dir: tempfile::TempDir,
    binary: PathBuf,
    master_pid: u32,
    pub starttls_port: u16,
    pub smtps_port: u16,
    pub wrong_name_port: u16,
    /// The one port of every [`Listener`] (0 without listeners).
    pub listener_port: u16,
    /// How long `postfix start` took, up to the listeners being ready.
    pub startup: Duration,
}

impl Postfix {
    /// Starts an instance presenting the certificates of `pki`. `None` when
    /// Postfix is unavailable (see [`require_postfix`]).
    pub fn start(pki: &Pki) -> Option<Postfix> {
        Self::start_with(pki, &[])
    }

    /// [`Postfix::start`] plus the `listeners`, all on one port that is
    /// free on each of their addresses.
    pub fn start_with(pki: &Pki, listeners: &[Listener]) -> Option<Postfix> {
        let binary = require_postfix()?;
        let (uid, gid) = postfix_ids()?;
        let dir = tempfile::Builder::new()
            .prefix("mailhop-postfix-")
            .tempdir_in("/tmp")
            .expect("create the Postfix instance directory");
        let base = dir.path().to_path_buf();
        // Postfix daemons run as the postfix user: they must reach the
        // directory, and the data directory must be theirs.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod instance");
        for sub in ["etc", "spool", "data"] {
            fs::create_dir(base.join(sub)).expect("create an instance subdirectory");
            fs::set_permissions(base.join(sub), fs::Permissions::from_mode(0o755))
                .expect("chmod an instance subdirectory");
        }
        nix::unistd::chown(&base.join("data"), Some(uid), Some(gid))
            .expect("chown the data directory to postfix");
        fs::write(base.join("etc/main.cf"), main_cf(&base)).expect("write main.cf");

        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let ports = distinct_ports();
            let listener_port = if listeners.is_empty() {
                0
            } else {
                shared_port(listeners, ports)
            };
            let mut master = master_cf(ports, pki);
            for l in listeners {
                master.push_str(&listener_line(l, listener_port));
            }
            fs::write(base.join("etc/master.cf"), master).expect("write master.cf");
            backdate_config(&base.join("etc"));
            let started = Instant::now();
            let output = postfix_command(&binary, &base, "start");
            let master = read_master_pid(&base);
            let ready = master.is_some_and(|pid| {
                [ports.0, ports.1, ports.2]
                    .iter()
                    .map(|&port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                    .chain(
                        listeners
                            .iter()
                            .map(|l| SocketAddrV4::new(l.addr, listener_port)),
                    )
                    .all(|addr| wait_listening(pid, addr))
            });
            if let (true, Some(master_pid)) = (ready, master) {
                return Some(Postfix {
                    dir,
                    binary,
                    master_pid,
                    starttls_port: ports.0,
                    smtps_port: ports.1,
                    wrong_name_port: ports.2,
                    listener_port,
                    startup: started.elapsed(),
                });
            }
            let log = fs::read_to_string(base.join("maillog")).unwrap_or_default();
            failures.push(format!(
                "attempt {attempt}, ports {ports:?}: postfix start said {output:?}; maillog:\n{log}"
            ));
            if let Some(pid) = master {
                stop_instance(&binary, &base, pid);
            }
        }
        panic!("private Postfix did not start: {failures:#?}");
    }

    /// The instance's directory (etc/, spool/, data/, maillog).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `[127.0.0.1]:port` of a listener.
    pub fn nexthop(&self, service: Service) -> String {
        super::nexthop(self.port(service))
    }

    /// `127.0.0.1[127.0.0.1]:port` of a listener.
    pub fn relay(&self, service: Service) -> String {
        super::relay(self.port(service))
    }

    pub fn port(&self, service: Service) -> u16 {
        match service {
            Service::StartTls => self.starttls_port,
            Service::Smtps => self.smtps_port,
            Service::WrongName => self.wrong_name_port,
        }
    }

    /// The maillog so far.
    pub fn maillog(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("maillog")).unwrap_or_default())
            .into_owned()
    }

    /// The sessions of one listener so far, in the order they began.
    pub fn sessions(&self, service: Service) -> Vec<Session> {
        self.sessions_of(service.program())
    }

    /// The sessions of the smtpd logging as `program` (see
    /// [`Listener::program`]) so far, in the order they began.
    pub fn sessions_of(&self, program: &str) -> Vec<Session> {
        let log = self.maillog();
        let mut sessions: Vec<Session> = Vec::new();
        // Index into `sessions` of the open session of each smtpd process.
        let mut open: Vec<(u32, usize)> = Vec::new();
        for line in log.lines() {
            let Some((program_name, pid, message)) = split_line(line) else {
                continue;
            };
            if program_name != program {
                continue;
            }
            if message.starts_with("connect from ") {
                open.retain(|&(p, _)| p != pid);
                open.push((pid, sessions.len()));
                sessions.push(Session {
                    pid,
                    lines: vec![message.to_string()],
                });
                continue;
            }
            let Some(&(_, index)) = open.iter().find(|&&(p, _)| p == pid) else {
                continue;
            };
            if let Some(session) = sessions.get_mut(index) {
                session.lines.push(message.to_string());
            }
            if message.starts_with("disconnect from ") {
                open.retain(|&(p, _)| p != pid);
            }
        }
        sessions
    }

    /// Waits (bounded by [`LOG_LIMIT`]) until `count` sessions of the
    /// listener are complete, and returns all its sessions; panics with the
    /// maillog otherwise.
    pub fn wait_sessions(&self, service: Service, count: usize) -> Vec<Session> {
        self.wait_sessions_of(service.program(), count)
    }

    /// [`Postfix::wait_sessions`] for the smtpd logging as `program`.
    pub fn wait_sessions_of(&self, program: &str, count: usize) -> Vec<Session> {
        let started = Instant::now();
        loop {
            let sessions = self.sessions_of(program);
            if sessions.iter().filter(|s| s.complete()).count() >= count {
                return sessions;
            }
            if started.elapsed() > LOG_LIMIT {
                panic!(
                    "{count} complete {program} sessions not logged within {LOG_LIMIT:?}; maillog:\n{}",
                    self.maillog()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The `postfix/discard` line of the message `queue_id`, waiting for it
    /// (bounded); panics with the maillog when it does not appear.
    pub fn wait_discarded(&self, queue_id: &str) -> String {
        let started = Instant::now();
        let prefix = format!("{queue_id}: to=<");
        loop {
            let found = self.maillog().lines().find_map(|line| {
                let (program, _, message) = split_line(line)?;
                (program == "postfix/discard" && message.starts_with(&prefix))
                    .then(|| message.to_string())
            });
            if let Some(line) = found {
                return line;
            }
            if started.elapsed() > LOG_LIMIT {
                panic!(
                    "no discard line for {queue_id} within {LOG_LIMIT:?}; maillog:\n{}",
                    self.maillog()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Every `postfix/discard` line so far.
    pub fn discarded(&self) -> Vec<String> {
        self.maillog()
            .lines()
            .filter_map(|line| {
                let (program, _, message) = split_line(line)?;
                (program == "postfix/discard").then(|| message.to_string())
            })
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        stop_instance(&self.binary, self.dir.path(), self.master_pid);
    }
}

/// Makes every file in the configuration directory an hour old: Postfix
/// commands re-read a configuration file modified within the last second
/// or so until it is older (about 2 s lost per start otherwise).
pub(super) fn backdate_config(etc: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    let entries = fs::read_dir(etc).expect("list the configuration directory");
    for entry in entries.flatten() {
        let file = fs::File::options()
            .write(true)
            .open(entry.path())
            .expect("open a configuration file");
        file.set_modified(past)
            .expect("backdate a configuration file");
    }
}

/// Three different free loopback ports.
fn distinct_ports() -> (u16, u16, u16) {
    for _ in 0..100 {
        let (a, b, c) = (free_port(), free_port(), free_port());
        if a != b && b != c && a != c {
            return (a, b, c);
        }
    }
    panic!("no three distinct free ports");
}

/// A port free on the address of every listener and unlike `taken`.
fn shared_port(listeners: &[Listener], taken: (u16, u16, u16)) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if [taken.0, taken.1, taken.2].contains(&port) {
            continue;
        }
        if listeners
            .iter()
            .all(|l| std::net::TcpListener::bind((l.addr, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on every listener address");
}

/// The master.cf line of a [`Listener`].
fn listener_line(l: &Listener, port: u16) -> String {
    let extra: String = l.options.iter().map(|o| format!(" -o {o}")).collect();
    format!(
        "{}:{port} inet n - n - - smtpd -o syslog_name=postfix/{} -o smtpd_tls_security_level=may -o smtpd_tls_chain_files={}{extra}\n",
        l.addr,
        l.name,
        l.chain_file.display()
    )
}

fn main_cf(base: &Path) -> String {
    let base = base.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = pfi.tls.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = static:all
default_transport = discard
relay_transport = discard
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_tls_loglevel = 1
notify_classes =
biff = no
"
    )
}

/// master.cf: the three smtpd listeners on loopback and the usual
/// services, none chrooted, plus postlogd for `maillog_file`.
fn master_cf(ports: (u16, u16, u16), pki: &Pki) -> String {
    let (cert, key) = (pki.server_pem(), pki.server_key());
    let (wrong_cert, wrong_key) = (pki.wrong_pem(), pki.wrong_key());
    let (cert, key) = (cert.display(), key.display());
    let (wrong_cert, wrong_key) = (wrong_cert.display(), wrong_key.display());
    let (starttls, smtps, wrong) = ports;
    format!(
        "127.0.0.1:{starttls} inet n - n - - smtpd -o syslog_name=postfix/starttls -o smtpd_tls_security_level=may -o smtpd_tls_cert_file={cert} -o smtpd_tls_key_file={key}
127.0.0.1:{smtps} inet n - n - - smtpd -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt -o smtpd_tls_cert_file={cert} -o smtpd_tls_key_file={key}
127.0.0.1:{wrong} inet n - n - - smtpd -o syslog_name=postfix/wrongname -o smtpd_tls_security_level=may -o smtpd_tls_cert_file={wrong_cert} -o smtpd_tls_key_file={wrong_key}
{MASTER_CF_SERVICES}"
    )
}

/// Where script(1) is, if installed.
pub(super) fn script_binary() -> Option<PathBuf> {
    ["/usr/bin/script", "/bin/script"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs `postfix -c BASE/etc VERB` (under script(1) when available, so its
/// errors are printed) and returns its exit status and output.
pub(super) fn postfix_command(binary: &Path, base: &Path, verb: &str) -> String {
    let config = base.join("etc");
    let mut command = match script_binary() {
        Some(script) => {
            let mut c = Command::new(script);
            c.arg("-qec")
                .arg(format!(
                    "{} -c {} {verb}",
                    binary.display(),
                    config.display()
                ))
                .arg("/dev/null");
            c
        }
        None => {
            let mut c = Command::new(binary);
            c.arg("-c").arg(&config).arg(verb);
            c
        }
    };
    match command.stdin(Stdio::null()).output() {
        Ok(out) => format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run {}: {e}", binary.display()),
    }
}

pub(super) fn read_master_pid(base: &Path) -> Option<u32> {
    fs::read_to_string(base.join("spool/pid/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Polls (bounded) until the master itself listens on `addr`.
pub(super) fn wait_listening(pid: u32, addr: SocketAddrV4) -> bool {
    for _ in 0..200 {
        if owns_socket(pid, Proto::Tcp, addr) {
            return true;
        }
        if !alive(pid) {
            return false;
        }
        thread::sleep(POLL);
    }
    false
}

/// The process exists and is not a zombie.
pub(super) fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes of process group `pgid` (the master and its children).
pub(super) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let state = *fields.first()?;
                    let group: u32 = fields.get(2)?.parse().ok()?;
                    Some(group == pgid && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// `postfix stop`, then waits (bounded) for the master and its process
/// group to go; kills the group if they do not.
pub(super) fn stop_instance(binary: &Path, base: &Path, master_pid: u32) {
    let _ = Command::new(binary)
        .arg("-c")
        .arg(base.join("etc"))
        .arg("stop")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let started = Instant::now();
    while started.elapsed() < STOP_LIMIT {
        if !alive(master_pid) && group_members(master_pid).is_empty() {
            return;
        }
        thread::sleep(POLL);
    }
    // As "postfix stop" does after its own wait: kill the whole group. The
    // master called setsid(), so its pid is the group id.
    if let Ok(pgid) = i32::try_from(master_pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..200 {
        if group_members(master_pid).is_empty() {
            return;
        }
        thread::sleep(POLL);
    }
}

/// One (possibly multi-line) SMTP reply, lines joined with `\n`.
pub fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read an smtpd reply");
        assert!(n > 0, "smtpd closed the connection after {lines:?}");
        let line = line.trim_end().to_string();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last || lines.len() > 100 {
            return lines.join("\n");
        }
    }
}

/// The master.cf lines of the services a private instance runs besides its
/// smtpd listeners (none chrooted; postlogd for `maillog_file`).
pub const MASTER_CF_SERVICES: &str = "pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
";
