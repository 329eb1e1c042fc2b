//! Real `smtp-sink` peers ([`Sink`]) on a kernel-chosen or a given
//! loopback port or a UNIX socket, readiness seen in /proc
//! ([`owns_socket`]), a port that refuses connections ([`ClosedPort`]),
//! one that never accepts ([`Tripwire`]) and an address that drops SYNs
//! ([`Blackhole`]).
//!
//! Contract: a sink gets a port from the kernel (`127.0.0.1:0`, dropped,
//! then given to smtp-sink), or listens on the address the test chose
//! ([`Listen::TcpAt`]), and is ready when one of its own sockets listens
//! there (checked in /proc, never by connecting, which could reach another
//! test's listener); a sink that exits or is not ready within 100 × 20 ms
//! is retried (on a fresh port when the kernel chose it), at most 5 times.
//! A sink is killed and reaped on drop. When smtp-sink is missing,
//! [`Sink::start`] returns `None` (see [`super::tools::require_sink`]).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::run::Workdir;
use super::tools::{is_root, require_sink};
use super::{free_port, nexthop, relay};

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

    /// The session count of an smtp-sink started with `-c`: its last
    /// counter record `sess=N quit=N mesg=N` (written when a session
    /// ends), else 0.
    pub fn sessions(&self) -> usize {
        self.log()
            .split(['\r', '\n'])
            .filter_map(|record| {
                record
                    .trim()
                    .strip_prefix("sess=")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .next_back()
            .unwrap_or(0)
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

/// A loopback port that listens but never accepts: a test proves with
/// [`Tripwire::assert_untouched`] that nothing connected to it.
pub struct Tripwire {
    listener: std::net::TcpListener,
    pub port: u16,
}

impl Tripwire {
    pub fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listener");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        Self { listener, port }
    }

    /// Panics with `why` when a connection is waiting.
    pub fn assert_untouched(&self, why: &str) {
        assert_eq!(
            self.listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "{why}"
        );
    }
}

/// A loopback listener that silently drops new connection attempts: its
/// accept queue (backlog 0) is full of connections nobody accepts, so
/// Linux drops further SYNs and connects time out (a blackholed host
/// without a firewall). Closed on drop.
pub struct Blackhole {
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

impl Blackhole {
    /// Fills the queue until a connect times out (proving that a connect
    /// times out, is not refused); panics when it never does.
    pub fn new(addr: SocketAddr) -> Self {
        use socket2::{Domain, SockAddr, Socket, Type};
        let domain = Domain::for_address(addr);
        let listener = Socket::new(domain, Type::STREAM, None).expect("create a socket");
        listener.set_reuse_address(true).expect("SO_REUSEADDR");
        listener
            .bind(&SockAddr::from(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.listen(0).expect("listen with backlog 0");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            let filler = Socket::new(domain, Type::STREAM, None).expect("create a socket");
            match filler.connect_timeout(&SockAddr::from(addr), Duration::from_millis(200)) {
                Ok(()) => fillers.push(filler),
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                        ),
                        "{addr}: a connect failed with {e} instead of timing out"
                    );
                    return Self {
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
            }
        }
        panic!("{addr}: the accept queue never filled up");
    }
}

/// A port that every one of `addrs` can listen on right now (for MX hosts
/// on several loopback addresses that share one port).
pub fn shared_port(addrs: &[std::net::IpAddr]) -> u16 {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind((addrs[0], 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind port 0");
        if addrs
            .iter()
            .all(|a| std::net::TcpListener::bind((*a, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {addrs:?}");
}

impl Default for Tripwire {
    fn default() -> Self {
        Self::new()
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
