//! Shared harness for the integration tests: runs the `mailhop` binary
//! ([`Delivery`]), starts real `smtp-sink` peers ([`Sink`]), throwaway
//! `dnsmasq` name servers ([`dnsmasq`]) and in-process scripted SMTP/LMTP
//! servers ([`Server`], [`smtp_server`]), and parses results ([`Line`],
//! [`Run::json`]).
//!
//! Contract: everything here is bounded in count and time. A `mailhop` run
//! is killed after [`RUN_LIMIT`]. A sink gets a port from the kernel
//! (`127.0.0.1:0`, dropped, then given to smtp-sink), or listens on the
//! address the test chose ([`Listen::TcpAt`]), and is ready when one of its
//! own sockets listens there (checked in /proc, never by connecting, which
//! could reach another test's listener); a sink that exits or is not ready
//! within 100 × 20 ms is retried (on a fresh port when the kernel chose
//! it), at most 5 times.
//! Scripted servers poll `accept` with a deadline and read with timeouts.
//! Every server a test starts is owned by a guard whose `Drop` stops it
//! (sinks are killed and reaped, server threads are joined), so a failing
//! test leaves nothing running. Every test has its own ports and
//! directories, so tests run in parallel safely.
//!
//! When `smtp-sink` is missing (or `MAILHOP_SMTP_SINK` names no file),
//! [`Sink::start`] returns `None` after printing a loud SKIPPED line, or
//! panics when `CI=true`.

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

pub mod certs;
pub mod dnsmasq;
pub mod postfix;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a single `mailhop` run may take before it is killed.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// How a loopback peer is named in diagnostics.
pub const PEER: &str = "127.0.0.1[127.0.0.1]";

/// The `relay=` value for a TCP peer on loopback.
pub fn relay(port: u16) -> String {
    format!("{PEER}:{port}")
}

/// A `[127.0.0.1]:port` destination.
pub fn nexthop(port: u16) -> String {
    format!("[127.0.0.1]:{port}")
}

/// The machine's host name, as mailhop uses it for `$myhostname`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .expect("read /proc/sys/kernel/hostname")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A port nobody listens on right now (bound, read, dropped).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

// ---------------------------------------------------------------------------
// Working directories
// ---------------------------------------------------------------------------

/// A private directory under /tmp, mode 0777 so that smtp-sink running as
/// `nobody` can create sockets and dump files in it. Removed on drop.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailhop-it-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
            .expect("chmod 0777 the temporary directory");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file and returns its path.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, content).expect("write a test file");
        path
    }

    /// Creates a subdirectory, mode 0777.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).expect("create a subdirectory");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod subdirectory");
        path
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Running mailhop
// ---------------------------------------------------------------------------

/// A small, plain message with LF line endings.
pub const SMALL_MESSAGE: &[u8] = b"From: a@x.test\nTo: b@y.test\nSubject: test\n\nhello\n";

/// Timeouts used by every run unless a test overrides them: short enough
/// that a stuck peer cannot stall the suite, long enough for a loaded host.
const DEFAULT_TIMEOUTS: &[(&str, &str)] = &[
    ("connect_timeout", "5s"),
    ("helo_timeout", "5s"),
    ("mail_timeout", "5s"),
    ("rcpt_timeout", "5s"),
    ("data_init_timeout", "5s"),
    ("data_xfer_timeout", "5s"),
    ("data_done_timeout", "5s"),
    ("quit_timeout", "2s"),
    ("rset_timeout", "2s"),
];

enum ConfigChoice {
    /// `[smtp]` keys, rendered as TOML.
    Smtp(BTreeMap<String, String>),
    /// A file with exactly this text.
    Raw(String),
    /// No `--config` at all.
    Omitted,
}

/// Builder for one `mailhop send --direct` run.
pub struct Delivery {
    nexthop: Option<String>,
    from: String,
    to: Vec<String>,
    lmtp: bool,
    json: bool,
    id: Option<String>,
    message: Vec<u8>,
    message_arg: Option<OsString>,
    stdin: bool,
    config: ConfigChoice,
}

impl Delivery {
    /// A run to `nexthop` from `a@x.test`, with the small message.
    pub fn to(nexthop: &str) -> Self {
        let smtp = DEFAULT_TIMEOUTS
            .iter()
            .map(|(k, v)| (k.to_string(), format!("{v:?}")))
            .collect();
        Self {
            nexthop: Some(nexthop.to_string()),
            from: "a@x.test".into(),
            to: Vec::new(),
            lmtp: false,
            json: false,
            id: None,
            message: SMALL_MESSAGE.to_vec(),
            message_arg: None,
            stdin: false,
            config: ConfigChoice::Smtp(smtp),
        }
    }

    pub fn rcpt(mut self, address: &str) -> Self {
        self.to.push(address.to_string());
        self
    }

    pub fn rcpts(mut self, addresses: &[&str]) -> Self {
        self.to.extend(addresses.iter().map(|a| a.to_string()));
        self
    }

    pub fn from(mut self, sender: &str) -> Self {
        self.from = sender.to_string();
        self
    }

    pub fn lmtp(mut self) -> Self {
        self.lmtp = true;
        self
    }

    pub fn json(mut self) -> Self {
        self.json = true;
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    pub fn message(mut self, content: &[u8]) -> Self {
        self.message = content.to_vec();
        self
    }

    /// Passes this message argument verbatim (e.g. a missing file).
    pub fn message_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.message_arg = Some(arg.into());
        self
    }

    /// Feeds the message on standard input, with `-` as the message argument.
    pub fn via_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Overrides one `[smtp]` setting; `value` is TOML (e.g. `"\"1s\""`).
    pub fn smtp_setting(mut self, key: &str, value: &str) -> Self {
        if let ConfigChoice::Smtp(map) = &mut self.config {
            map.insert(key.to_string(), value.to_string());
        }
        self
    }

    /// Uses this exact configuration file text.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.config = ConfigChoice::Raw(text.to_string());
        self
    }

    pub fn no_config(mut self) -> Self {
        self.config = ConfigChoice::Omitted;
        self
    }

    /// Runs `mailhop`, bounded by [`RUN_LIMIT`].
    pub fn run(&self) -> Run {
        let work = Workdir::new();
        let mut args: Vec<OsString> = vec!["send".into()];
        match &self.config {
            ConfigChoice::Smtp(map) => {
                let mut text = String::from("[smtp]\n");
                for (k, v) in map {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                // LMTP inherits the [smtp] timeouts except the connect timeout.
                text.push_str("\n[lmtp]\nconnect_timeout = \"5s\"\n");
                let path = work.file("mailhop.toml", text.as_bytes());
                args.push("--config".into());
                args.push(path.into());
            }
            ConfigChoice::Raw(text) => {
                let path = work.file("mailhop.toml", text.as_bytes());
                args.push("--config".into());
                args.push(path.into());
            }
            ConfigChoice::Omitted => {}
        }
        args.push("--direct".into());
        if self.lmtp {
            args.push("--lmtp".into());
        }
        if self.json {
            args.push("--json".into());
        }
        if let Some(nexthop) = &self.nexthop {
            args.push("--nexthop".into());
            args.push(nexthop.into());
        }
        args.push("--from".into());
        args.push(self.from.clone().into());
        for to in &self.to {
            args.push("--to".into());
            args.push(to.into());
        }
        if let Some(id) = &self.id {
            args.push("--id".into());
            args.push(id.into());
        }
        let message = work.file("message", &self.message);
        match &self.message_arg {
            Some(arg) => args.push(arg.clone()),
            None if self.stdin => args.push("-".into()),
            None => args.push(message.clone().into()),
        }
        run_mailhop(&work, &args, self.stdin.then_some(&message))
    }
}

/// Runs the binary with `args`, stdin from `stdin` (else /dev/null),
/// stdout/stderr captured in files (no pipe can fill up), killed after
/// [`RUN_LIMIT`].
pub fn run_mailhop(work: &Workdir, args: &[OsString], stdin: Option<&Path>) -> Run {
    let out_path = work.path().join("stdout");
    let err_path = work.path().join("stderr");
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let input = match stdin {
        Some(path) => Stdio::from(fs::File::open(path).expect("open stdin file")),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailhop"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(input)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn mailhop");
    let status = loop {
        match child.try_wait().expect("wait for mailhop") {
            Some(status) => break status,
            None if started.elapsed() > RUN_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mailhop {args:?} did not finish within {RUN_LIMIT:?}; stderr:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    let elapsed = started.elapsed();
    Run {
        args: args.to_vec(),
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&fs::read(&out_path).unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default()).into_owned(),
        elapsed,
    }
}

/// What one `mailhop` run did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<OsString>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// One recipient's result line:
/// `to=<A>, relay=R, dsn=D, status=S (DIAGNOSTIC)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub to: String,
    pub relay: String,
    pub dsn: String,
    pub status: String,
    pub diagnostic: String,
}

impl Line {
    pub fn new(to: &str, relay: &str, dsn: &str, status: &str, diagnostic: &str) -> Self {
        Self {
            to: to.into(),
            relay: relay.into(),
            dsn: dsn.into(),
            status: status.into(),
            diagnostic: diagnostic.into(),
        }
    }

    pub fn sent(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "sent", diagnostic)
    }

    pub fn deferred(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "deferred", diagnostic)
    }

    pub fn bounced(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "bounced", diagnostic)
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("to=<")?;
        let (to, rest) = rest.split_once(">, relay=")?;
        let (relay, rest) = rest.split_once(", dsn=")?;
        let (dsn, rest) = rest.split_once(", status=")?;
        let (status, rest) = rest.split_once(" (")?;
        let diagnostic = rest.strip_suffix(')')?;
        Some(Self::new(to, relay, dsn, status, diagnostic))
    }
}

impl Run {
    /// The text result lines, parsed; panics (with the whole run) on a line
    /// that does not have the Postfix shape.
    pub fn lines(&self) -> Vec<Line> {
        self.stdout
            .lines()
            .map(|l| Line::parse(l).unwrap_or_else(|| panic!("bad result line {l:?} in {self:#?}")))
            .collect()
    }

    /// The `--json` output, parsed.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {self:#?}"))
    }

    /// Asserts the exit code and the exact result lines.
    pub fn expect(&self, code: i32, lines: &[Line]) {
        assert_eq!(self.lines(), lines, "result lines of {self:#?}");
        assert_eq!(self.code, code, "exit code of {self:#?}");
    }
}

// ---------------------------------------------------------------------------
// smtp-sink
// ---------------------------------------------------------------------------

const SINK_LOCATIONS: &[&str] = &[
    "/usr/sbin/smtp-sink",
    "/usr/local/sbin/smtp-sink",
    "/usr/bin/smtp-sink",
    "/usr/local/bin/smtp-sink",
];

/// The smtp-sink binary, if installed. `MAILHOP_SMTP_SINK` overrides the
/// search (a path that is not a file counts as "not installed").
pub fn sink_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MAILHOP_SMTP_SINK") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let from_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("smtp-sink"))
                .collect()
        })
        .unwrap_or_default();
    SINK_LOCATIONS
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|p| p.is_file())
}

/// The smtp-sink binary; `None` (after a loud notice) when it is missing.
/// Panics instead when `CI=true`: CI must never skip silently.
pub fn require_sink() -> Option<PathBuf> {
    if let Some(path) = sink_binary() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "smtp-sink not installed but CI=true: install Postfix (run scripts/install-test-deps.sh)"
        );
    }
    // Straight to fd 2: the test harness captures eprintln! of passing tests.
    let _ = writeln!(
        io::stderr(),
        "SKIPPED: smtp-sink not installed (run scripts/install-test-deps.sh)"
    );
    None
}

/// Where a sink listens.
#[derive(Clone, Copy, Debug)]
pub enum Listen {
    /// 127.0.0.1 on a free port.
    Tcp,
    /// Exactly this loopback address and port (e.g. one MX host of several
    /// that share a port, or port 25). The caller owns the address: there
    /// is no retry on another port.
    TcpAt(SocketAddrV4),
    /// A UNIX socket `lmtp.sock` in the sink's directory (mode 0777).
    Unix,
}

/// A running smtp-sink; killed and reaped on drop.
pub struct Sink {
    child: Child,
    /// The TCP port (TCP sinks).
    pub port: u16,
    /// The socket path (UNIX sinks).
    pub socket: PathBuf,
    /// The listening address (TCP sinks).
    pub addr: SocketAddrV4,
    /// stdout and stderr of the running smtp-sink.
    log_path: PathBuf,
    dir: Workdir,
}

const SINK_ATTEMPTS: usize = 5;
const READY_POLLS: usize = 100;
const READY_INTERVAL: Duration = Duration::from_millis(20);

impl Sink {
    /// Starts `smtp-sink [-u nobody] ARGS LISTEN 50`. `{dir}` in an argument
    /// is replaced by the sink's private directory (mode 0777). Returns
    /// `None` when smtp-sink is not installed (see [`require_sink`]).
    pub fn start(listen: Listen, args: &[&str]) -> Option<Sink> {
        let binary = require_sink()?;
        let dir = Workdir::new();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{dir}", &dir.path().to_string_lossy()))
            .collect();
        let mut failures = Vec::new();
        for attempt in 0..SINK_ATTEMPTS {
            let (addr, socket, address) = match listen {
                Listen::Tcp => {
                    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
                    (addr, PathBuf::new(), addr.to_string())
                }
                Listen::TcpAt(addr) => (addr, PathBuf::new(), addr.to_string()),
                Listen::Unix => {
                    let name = match attempt {
                        0 => "lmtp.sock".to_string(),
                        n => format!("lmtp{n}.sock"),
                    };
                    let socket = dir.path().join(name);
                    let address = format!("unix:{}", socket.display());
                    (SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), socket, address)
                }
            };
            let log_path = dir.path().join(format!("sink{attempt}.log"));
            let log = fs::File::create(&log_path).expect("create sink log");
            let mut command = Command::new(&binary);
            if is_root() {
                command.args(["-u", "nobody"]);
            }
            command
                .args(&args)
                .arg(&address)
                .arg("50")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup sink log"))
                .stderr(log);
            let mut child = command.spawn().expect("spawn smtp-sink");
            match wait_ready(&mut child, listen, addr, &socket) {
                Ok(()) => {
                    return Some(Sink {
                        child,
                        port: addr.port(),
                        socket,
                        addr,
                        log_path,
                        dir,
                    });
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!("{address}: {why}; log: {log}"));
                }
            }
        }
        panic!("smtp-sink {args:?} did not start: {failures:#?}");
    }

    /// `[127.0.0.1]:port`.
    pub fn nexthop(&self) -> String {
        nexthop(self.port)
    }

    /// `127.0.0.1[127.0.0.1]:port`.
    pub fn relay(&self) -> String {
        relay(self.port)
    }

    /// `unix:/path` (UNIX sinks).
    pub fn unix_nexthop(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The sink's private directory (`{dir}` in its arguments).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What smtp-sink wrote so far to stdout and stderr (e.g. its `-c`
    /// counters or its `-v` conversation log).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The files in `{dir}/SUB`, waiting (bounded) until there are `count`.
    pub fn wait_files(&self, sub: &str, count: usize) -> Vec<PathBuf> {
        let dir = self.dir.path().join(sub);
        let mut files = Vec::new();
        for _ in 0..100 {
            files = fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            if files.len() >= count {
                break;
            }
            thread::sleep(READY_INTERVAL);
        }
        files.sort();
        files
    }
}

/// Polls (bounded) until a starting sink accepts connections. A TCP sink
/// is ready when one of *its own* sockets listens on the port (looked up in
/// /proc), never by connecting: the port may have been taken by another
/// test's listener in the meantime, which a probe would reach instead.
fn wait_ready(
    child: &mut Child,
    listen: Listen,
    addr: SocketAddrV4,
    socket: &Path,
) -> Result<(), String> {
    for _ in 0..READY_POLLS {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited early with {status}"));
        }
        let ready = match listen {
            Listen::Tcp | Listen::TcpAt(_) => owns_socket(child.id(), Proto::Tcp, addr),
            Listen::Unix => UnixStream::connect(socket).is_ok(),
        };
        if ready {
            return Ok(());
        }
        thread::sleep(READY_INTERVAL);
    }
    Err("not accepting connections".into())
}

/// A socket table in /proc/net.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// /proc/net/tcp, sockets in LISTEN state.
    Tcp,
    /// /proc/net/udp, any bound socket.
    Udp,
}

/// True when process `pid` itself holds a socket listening on (TCP) or
/// bound to (UDP) exactly `addr`: readiness without connecting, which could
/// reach somebody else's socket.
pub fn owns_socket(pid: u32, proto: Proto, addr: SocketAddrV4) -> bool {
    let owned = socket_inodes(pid);
    bound_inodes(proto, addr).iter().any(|i| owned.contains(i))
}

/// Inodes of the sockets listening on / bound to `addr` (/proc/net/tcp or
/// /proc/net/udp, which print the address as a native-endian u32 in hex:
/// byte-reversed on the little-endian hosts this runs on).
fn bound_inodes(proto: Proto, addr: SocketAddrV4) -> Vec<u64> {
    let [a, b, c, d] = addr.ip().octets();
    let local = format!("{d:02X}{c:02X}{b:02X}{a:02X}:{:04X}", addr.port());
    let (table, state) = match proto {
        Proto::Tcp => ("/proc/net/tcp", Some("0A")),
        Proto::Udp => ("/proc/net/udp", None),
    };
    fs::read_to_string(table)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bound = fields.get(1) == Some(&local.as_str())
                && state.is_none_or(|s| fields.get(3) == Some(&s));
            bound.then(|| fields.get(9)?.parse().ok()).flatten()
        })
        .collect()
}

/// Inodes of the sockets a process has open (/proc/PID/fd).
fn socket_inodes(pid: u32) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A loopback port that refuses connections: bound but never listening, and
/// held, so no other test can start a listener on it meanwhile.
pub struct ClosedPort {
    socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind 127.0.0.1:0");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("bound port");
        Self { socket, port }
    }

    pub fn nexthop(&self) -> String {
        nexthop(self.port)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Scripted servers
// ---------------------------------------------------------------------------

/// How long a scripted server waits for a connection, and for each read.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);
pub const READ_LIMIT: Duration = Duration::from_secs(5);
/// Longest line a scripted server keeps (a command or a body line).
const MAX_LINE: u64 = 1 << 20;

/// Why a scripted server stopped reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    Timeout,
    Error,
}

/// The server side of one accepted connection.
pub struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    partial: Vec<u8>,
}

impl Peer {
    fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(READ_LIMIT))?;
        stream.set_write_timeout(Some(READ_LIMIT))?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
        })
    }

    /// Sends raw bytes; a failed write is ignored (the client may be gone).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
        let _ = self.writer.flush();
    }

    /// Sends one reply line, adding CRLF.
    pub fn reply(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Reads one line with its line ending, within `limit`.
    pub fn read_raw_line_within(&mut self, limit: Duration) -> Result<Vec<u8>, End> {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))));
        let room = MAX_LINE.saturating_sub(self.partial.len() as u64);
        let result = (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.partial);
        let _ = self.reader.get_ref().set_read_timeout(Some(READ_LIMIT));
        match result {
            Ok(_) if self.partial.ends_with(b"\n") => Ok(std::mem::take(&mut self.partial)),
            Ok(0) => Err(End::Eof),
            Ok(_) if self.partial.len() as u64 >= MAX_LINE => Ok(std::mem::take(&mut self.partial)),
            Ok(_) => Err(End::Eof),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Timeout)
            }
            Err(_) => Err(End::Error),
        }
    }

    /// Reads one line with its line ending.
    pub fn read_raw_line(&mut self) -> Result<Vec<u8>, End> {
        self.read_raw_line_within(READ_LIMIT)
    }

    /// Reads one line without its line ending, as (lossy) text.
    pub fn read_line(&mut self) -> Result<String, End> {
        self.read_raw_line().map(|raw| line_text(&raw))
    }

    /// Reads whatever the client still sends until EOF or a read timeout.
    pub fn drain(&mut self) -> (Vec<String>, End) {
        let mut lines = Vec::new();
        for _ in 0..10_000 {
            match self.read_line() {
                Ok(line) => lines.push(line),
                Err(end) => return (lines, end),
            }
        }
        (lines, End::Error)
    }
}

fn line_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

/// A one-connection TCP server on 127.0.0.1 running `handler` in a thread.
/// Its thread is joined by [`Server::finish`] or on drop.
pub struct Server<T: Send + 'static> {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<T>>>,
}

impl<T: Send + 'static> Server<T> {
    pub fn start<F>(handler: F) -> Self
    where
        F: FnOnce(&mut Peer) -> T + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a scripted server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("listener address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let started = Instant::now();
            loop {
                // Check the flag before accepting, so that a connection made
                // just before `finish` is still served.
                let stopping = stop_flag.load(Ordering::SeqCst);
                match listener.accept() {
                    Ok((stream, _)) => {
                        let mut peer = Peer::new(stream).ok()?;
                        return Some(handler(&mut peer));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stopping || started.elapsed() > ACCEPT_LIMIT {
                            return None;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return None,
                }
            }
        });
        Self {
            port,
            stop,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[127.0.0.1]:port`.
    pub fn nexthop(&self) -> String {
        nexthop(self.port)
    }

    /// `127.0.0.1[127.0.0.1]:port`.
    pub fn relay(&self) -> String {
        relay(self.port)
    }

    /// Stops waiting for a connection and returns what the handler returned
    /// (`None`: nobody connected).
    pub fn finish(mut self) -> Option<T> {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<T: Send + 'static> Drop for Server<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// How a scripted SMTP server answers. Replies are complete lines without
/// CRLF unless noted.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub greeting: String,
    /// EHLO/LHLO keywords after the name line.
    pub keywords: Vec<String>,
    /// A complete EHLO reply (with CRLFs), instead of one built from `keywords`.
    pub ehlo_raw: Option<Vec<u8>>,
    pub helo: String,
    pub mail: String,
    /// Reply to the n-th RCPT; later ones get `250 2.1.5 Ok`.
    pub rcpt: Vec<String>,
    /// Reply to DATA; `None`: 354 when some RCPT was accepted, else 554.
    pub data: Option<String>,
    pub dot: String,
    /// LMTP: the replies after the final dot, one per accepted RCPT
    /// (instead of `dot`).
    pub lmtp_dot: Vec<String>,
    /// Before answering MAIL, read ahead up to N lines for at most this long
    /// (how many arrived shows whether the client pipelines).
    pub readahead_at_mail: Option<(usize, Duration)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            greeting: "220 scripted.test ESMTP".into(),
            keywords: vec!["PIPELINING".into(), "ENHANCEDSTATUSCODES".into()],
            ehlo_raw: None,
            helo: "250 scripted.test".into(),
            mail: "250 2.1.0 Ok".into(),
            rcpt: Vec::new(),
            data: None,
            dot: "250 2.0.0 Ok: queued as 4XYZ".into(),
            lmtp_dot: Vec::new(),
            readahead_at_mail: None,
        }
    }
}

impl Behaviour {
    pub fn keywords(mut self, keywords: &[&str]) -> Self {
        self.keywords = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    fn ehlo_reply(&self) -> Vec<u8> {
        if let Some(raw) = &self.ehlo_raw {
            return raw.clone();
        }
        let mut lines = vec!["scripted.test".to_string()];
        lines.extend(self.keywords.iter().cloned());
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{line}\r\n"));
        }
        out.into_bytes()
    }
}

/// What a scripted SMTP server saw.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Command lines in arrival order, without CRLF.
    pub commands: Vec<String>,
    /// The DATA content exactly as received (dot-stuffed, CRLF), without
    /// the final ".\r\n".
    pub body: Option<Vec<u8>>,
    /// Lines that arrived before the MAIL reply was sent (readahead).
    pub readahead: Option<usize>,
    /// How the connection ended (`None`: after QUIT).
    pub end: Option<End>,
}

/// A scripted SMTP server playing `behaviour` on one connection.
pub fn smtp_server(behaviour: Behaviour) -> Server<Transcript> {
    Server::start(move |peer| play(peer, &behaviour))
}

fn play(peer: &mut Peer, b: &Behaviour) -> Transcript {
    let mut t = Transcript::default();
    let mut queued: VecDeque<String> = VecDeque::new();
    let mut rcpt_count = 0usize;
    let mut accepted = 0usize;
    peer.reply(&b.greeting);
    for _ in 0..10_000 {
        let line = match queued.pop_front() {
            Some(line) => line,
            None => match peer.read_line() {
                Ok(line) => line,
                Err(end) => {
                    t.end = Some(end);
                    return t;
                }
            },
        };
        t.commands.push(line.clone());
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "LHLO" => peer.send(&b.ehlo_reply()),
            "HELO" => peer.reply(&b.helo),
            "MAIL" => {
                if let Some((want, limit)) = b.readahead_at_mail {
                    let deadline = Instant::now() + limit;
                    while queued.len() < want {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match peer.read_raw_line_within(left) {
                            Ok(raw) => queued.push_back(line_text(&raw)),
                            Err(_) => break,
                        }
                    }
                    t.readahead = Some(queued.len());
                }
                peer.reply(&b.mail);
            }
            "RCPT" => {
                let reply = b
                    .rcpt
                    .get(rcpt_count)
                    .cloned()
                    .unwrap_or_else(|| "250 2.1.5 Ok".into());
                rcpt_count += 1;
                if reply.starts_with('2') {
                    accepted += 1;
                }
                peer.reply(&reply);
            }
            "DATA" => {
                let reply = b.data.clone().unwrap_or_else(|| {
                    if accepted > 0 {
                        "354 End data with <CR><LF>.<CR><LF>".into()
                    } else {
                        "554 5.5.1 Error: no valid recipients".into()
                    }
                });
                let go = reply.starts_with('3');
                peer.reply(&reply);
                if go {
                    let mut body = Vec::new();
                    let mut complete = false;
                    for _ in 0..1_000_000 {
                        match peer.read_raw_line() {
                            Ok(raw) if raw == b".\r\n" => {
                                complete = true;
                                break;
                            }
                            Ok(raw) => body.extend_from_slice(&raw),
                            Err(end) => {
                                t.body = Some(body.clone());
                                t.end = Some(end);
                                return t;
                            }
                        }
                    }
                    t.body = Some(body);
                    if complete {
                        t.commands.push(".".into());
                        if b.lmtp_dot.is_empty() {
                            peer.reply(&b.dot);
                        } else {
                            let replies: String =
                                b.lmtp_dot.iter().map(|r| format!("{r}\r\n")).collect();
                            peer.send(replies.as_bytes());
                        }
                    }
                }
            }
            "RSET" => peer.reply("250 2.0.0 Ok"),
            "NOOP" => peer.reply("250 2.0.0 Ok"),
            "QUIT" => {
                peer.reply("221 2.0.0 Bye");
                return t;
            }
            _ => peer.reply("502 5.5.2 Error: command not recognized"),
        }
    }
    t.end = Some(End::Error);
    t
}
