//! Opening connections: TCP with a non-blocking connect bounded by a timeout
//! (socket2), the source address bound per address family, and UNIX-domain
//! sockets for LMTP. Knows nothing of SMTP.
//!
//! Errors (a [`Dsn`]) carry Postfix's DSN: 4.4.1 for a failed connect,
//! 4.4.0 when `bind_address_enforce` is set and binding the source address
//! failed, 4.3.5 for a UNIX path that does not fit. A [`ConnectFailure`]
//! also says whether the server address itself failed (timed out, refused,
//! unreachable), for [`crate::health`].
//!
//! Also owns the connect race of Happy Eyeballs (RFC 8305 section 5,
//! [`Connector::race`]): attempts started one after another, the next one
//! `delay` after the previous while that is still pending (at once when it
//! failed), the first connection wins and the others are closed. The
//! sockets are non-blocking and waited for with poll(2); no threads. The
//! default race (used by test fakes) connects one address at a time.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::dsn::Dsn;
use crate::transport::{Transport, strerror};

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// Source-address and timeout settings for new connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Zero: no timeout of our own (the OS's).
    pub timeout: Duration,
    pub bind_address: Option<Ipv4Addr>,
    pub bind_address6: Option<Ipv6Addr>,
    pub bind_address_enforce: bool,
    /// Postfix's implicit source address (exactly one non-loopback
    /// inet_interfaces address of the family), used when the explicit one is
    /// unset; a failure to bind it is only a warning.
    pub implicit_source: Option<Ipv4Addr>,
    pub implicit_source6: Option<Ipv6Addr>,
}

/// A connected stream of either kind.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl Transport for Stream {
    fn reset_on_close(&mut self) {
        if let Stream::Tcp(s) = self {
            let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
        }
    }

    fn send_now(&mut self, bytes: &[u8]) -> Option<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.send_now(bytes),
            Stream::Unix(s) => s.send_now(bytes),
        }
    }

    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    fn peer_closed(&mut self) -> bool {
        match self {
            Stream::Tcp(s) => s.peer_closed(),
            Stream::Unix(s) => s.peer_closed(),
        }
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => Transport::local_addr(s),
            Stream::Unix(_) => None,
        }
    }
}

/// Why one connect attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    /// What the delivery records (Postfix's text and DSN).
    pub dsn: Dsn,
    /// The server address itself failed: the connect timed out, was
    /// refused, or found no route (not a local problem such as binding
    /// the source address or running out of sockets).
    pub address_fault: bool,
}

impl ConnectFailure {
    /// A failure known only by its DSN: the address is at fault when the
    /// DSN is the failed-connect one (4.4.1).
    pub fn from_dsn(dsn: Dsn) -> Self {
        Self {
            address_fault: dsn.code == crate::dsn::CONNECT_FAILED,
            dsn,
        }
    }
}

/// One address of a connect race.
#[derive(Clone, Copy, Debug)]
pub struct RaceTarget<'a> {
    pub endpoint: &'a Endpoint,
    /// `host[addr]` for diagnostics.
    pub display: &'a str,
}

/// One connect attempt that came to an end (connected or failed).
#[derive(Debug)]
pub struct Attempt {
    /// Its place in the race's targets.
    pub index: usize,
    /// From its start to its end.
    pub elapsed: Duration,
    pub result: Result<(), ConnectFailure>,
}

/// What a connect race did.
#[derive(Default)]
pub struct Race {
    /// The attempts that ended, in the order they ended (the winner's
    /// last, with `Ok`).
    pub attempts: Vec<Attempt>,
    /// The first connection: its target index and stream.
    pub winner: Option<(usize, Box<dyn Transport>)>,
    /// Targets `0..started` were started; of those, the ones neither in
    /// `attempts` nor the winner were abandoned (closed while pending).
    pub started: usize,
}

impl Race {
    /// The targets started and closed while still pending.
    pub fn abandoned(&self) -> Vec<usize> {
        (0..self.started)
            .filter(|i| !self.attempts.iter().any(|a| a.index == *i))
            .collect()
    }
}

/// Opens connections; a trait so the delivery loop can be tested with fakes.
pub trait Connector: Send + Sync {
    /// `display` is `host[addr]` for diagnostics.
    fn connect(
        &self,
        endpoint: &Endpoint,
        display: &str,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, Dsn>;

    /// One connect, with the cause of a failure.
    fn connect_attempt(
        &self,
        endpoint: &Endpoint,
        display: &str,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, ConnectFailure> {
        self.connect(endpoint, display, options)
            .map_err(ConnectFailure::from_dsn)
    }

    /// Connects to the first of `targets` that answers (Happy Eyeballs):
    /// see [`Race`]. The default connects one target at a time, in order,
    /// until one connects (`delay` unused).
    fn race(&self, targets: &[RaceTarget<'_>], options: &ConnectOptions, delay: Duration) -> Race {
        let _ = delay;
        race_sequential(self, targets, options)
    }
}

/// One target at a time, in order, until one connects (the default
/// [`Connector::race`]).
pub fn race_sequential<C: Connector + ?Sized>(
    connector: &C,
    targets: &[RaceTarget<'_>],
    options: &ConnectOptions,
) -> Race {
    let mut race = Race::default();
    for (index, target) in targets.iter().enumerate() {
        race.started = index + 1;
        let started = Instant::now();
        let result = connector.connect_attempt(target.endpoint, target.display, options);
        let elapsed = started.elapsed();
        match result {
            Ok(stream) => {
                race.attempts.push(Attempt {
                    index,
                    elapsed,
                    result: Ok(()),
                });
                race.winner = Some((index, stream));
                break;
            }
            Err(failure) => race.attempts.push(Attempt {
                index,
                elapsed,
                result: Err(failure),
            }),
        }
    }
    race
}

/// The real connector: TCP and UNIX-domain sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketConnector;

impl Connector for SocketConnector {
    fn connect(
        &self,
        endpoint: &Endpoint,
        display: &str,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, Dsn> {
        self.connect_attempt(endpoint, display, options)
            .map_err(|failure| failure.dsn)
    }

    fn connect_attempt(
        &self,
        endpoint: &Endpoint,
        display: &str,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, ConnectFailure> {
        let stream = match endpoint {
            Endpoint::Inet(addr) => Stream::Tcp(tcp_attempt(*addr, options, display)?),
            Endpoint::Unix(path) => {
                Stream::Unix(connect_unix(path, options.timeout, display).map_err(|dsn| {
                    ConnectFailure {
                        dsn,
                        address_fault: false,
                    }
                })?)
            }
        };
        Ok(Box::new(stream))
    }

    /// Non-blocking TCP connects in parallel (one target, or a UNIX
    /// socket among them: one at a time).
    fn race(&self, targets: &[RaceTarget<'_>], options: &ConnectOptions, delay: Duration) -> Race {
        let mut inet = Vec::with_capacity(targets.len());
        for target in targets {
            match target.endpoint {
                Endpoint::Inet(addr) => inet.push((*addr, target.display)),
                Endpoint::Unix(_) => return race_sequential(self, targets, options),
            }
        }
        if inet.len() < 2 {
            return race_sequential(self, targets, options);
        }
        race_tcp(&inet, options, delay)
    }
}

fn bind_source(socket: &Socket, addr: SocketAddr, options: &ConnectOptions) -> Result<(), Dsn> {
    let (explicit, implicit): (Option<IpAddr>, Option<IpAddr>) = match addr {
        SocketAddr::V4(_) => (
            options.bind_address.map(IpAddr::V4),
            options.implicit_source.map(IpAddr::V4),
        ),
        SocketAddr::V6(_) => (
            options.bind_address6.map(IpAddr::V6),
            options.implicit_source6.map(IpAddr::V6),
        ),
    };
    let (source, enforce) = match (explicit, implicit) {
        (Some(source), _) => (source, options.bind_address_enforce),
        (None, Some(source)) => (source, false),
        (None, None) => return Ok(()),
    };
    if let Err(e) = socket.bind(&SockAddr::from(SocketAddr::new(source, 0))) {
        log::warn!("smtp_connect_addr: bind {source}: {}", strerror(&e));
        if enforce {
            return Err(Dsn::new(
                crate::dsn::BIND_FAILED,
                "server configuration error",
            ));
        }
    }
    Ok(())
}

/// TCP connect with timeout and per-family source binding.
pub fn connect_tcp(
    addr: SocketAddr,
    options: &ConnectOptions,
    display: &str,
) -> Result<TcpStream, Dsn> {
    tcp_attempt(addr, options, display).map_err(|failure| failure.dsn)
}

/// [`connect_tcp`] with the cause of a failure.
fn tcp_attempt(
    addr: SocketAddr,
    options: &ConnectOptions,
    display: &str,
) -> Result<TcpStream, ConnectFailure> {
    let socket = new_tcp_socket(addr, options, display)?;
    let target = SockAddr::from(addr);
    let result = connect_blocking(&socket, &target, options.timeout);
    result.map_err(|e| connect_failure(&e, addr, display))?;
    // Commands go out in whole batches; Nagle would only add latency.
    let _ = socket.set_tcp_nodelay(true);
    Ok(socket.into())
}

/// A TCP socket for `addr`, its source address bound per the options.
fn new_tcp_socket(
    addr: SocketAddr,
    options: &ConnectOptions,
    display: &str,
) -> Result<Socket, ConnectFailure> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(|e| ConnectFailure {
            dsn: Dsn::new(
                crate::dsn::CONNECT_FAILED,
                format!("connect to {display}:{}: {}", addr.port(), strerror(&e)),
            ),
            address_fault: false,
        })?;
    bind_source(&socket, addr, options).map_err(|dsn| ConnectFailure {
        dsn,
        address_fault: false,
    })?;
    Ok(socket)
}

/// The failure of a connect to `addr` (Postfix's text; a timeout is
/// "Connection timed out").
fn connect_failure(e: &io::Error, addr: SocketAddr, display: &str) -> ConnectFailure {
    use nix::libc::{ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT};
    let timed_out = matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    );
    let text = if timed_out {
        String::from("Connection timed out")
    } else {
        strerror(e)
    };
    ConnectFailure {
        dsn: Dsn::new(
            crate::dsn::CONNECT_FAILED,
            format!("connect to {display}:{}: {text}", addr.port()),
        ),
        address_fault: timed_out
            || matches!(
                e.raw_os_error(),
                Some(ECONNREFUSED | EHOSTUNREACH | ENETUNREACH | ETIMEDOUT)
            ),
    }
}

/// One pending non-blocking connect of [`race_tcp`].
struct Pending {
    index: usize,
    socket: Socket,
    started: Instant,
    /// When its connect timeout runs out (None: no limit of our own).
    deadline: Option<Instant>,
}

/// Happy Eyeballs over TCP: see [`Connector::race`].
fn race_tcp(targets: &[(SocketAddr, &str)], options: &ConnectOptions, delay: Duration) -> Race {
    let mut race = Race::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_start = Instant::now();
    // Bounded: each pass starts an attempt or ends at least one, or waits
    // in poll for one of those (or for the next start) to be due.
    loop {
        let now = Instant::now();
        if race.started < targets.len() && (pending.is_empty() || now >= next_start) {
            let index = race.started;
            race.started += 1;
            next_start = now.checked_add(delay).unwrap_or(now);
            let Some(&(addr, display)) = targets.get(index) else {
                break;
            };
            match start_tcp(addr, options, display) {
                Ok((socket, true)) => {
                    race.attempts.push(Attempt {
                        index,
                        elapsed: now.elapsed(),
                        result: Ok(()),
                    });
                    race.winner = Some((index, connected(socket)));
                    return race;
                }
                Ok((socket, false)) => pending.push(Pending {
                    index,
                    socket,
                    started: now,
                    deadline: (!options.timeout.is_zero())
                        .then(|| now.checked_add(options.timeout))
                        .flatten(),
                }),
                Err(failure) => {
                    race.attempts.push(Attempt {
                        index,
                        elapsed: now.elapsed(),
                        result: Err(failure),
                    });
                    // A failure makes the next attempt due at once.
                    next_start = now;
                }
            }
            continue;
        }
        if pending.is_empty() {
            return race;
        }
        let wake = pending
            .iter()
            .filter_map(|p| p.deadline)
            .chain((race.started < targets.len()).then_some(next_start))
            .min();
        let ready = match poll_writable(&pending, wake) {
            Ok(ready) => ready,
            Err(e) => {
                // poll itself failed: end every pending attempt with it.
                for p in pending.drain(..) {
                    let (addr, display) = targets
                        .get(p.index)
                        .copied()
                        .unwrap_or((SocketAddr::from(([0, 0, 0, 0], 0)), ""));
                    race.attempts.push(Attempt {
                        index: p.index,
                        elapsed: p.started.elapsed(),
                        result: Err(connect_failure(&e, addr, display)),
                    });
                }
                continue;
            }
        };
        let now = Instant::now();
        let failures_before = race.attempts.len();
        let mut still = Vec::with_capacity(pending.len());
        for (p, is_ready) in pending.into_iter().zip(ready) {
            let (addr, display) = match targets.get(p.index) {
                Some(target) => *target,
                None => continue,
            };
            let outcome = if is_ready {
                match p.socket.take_error() {
                    Ok(None) => Some(Ok(())),
                    Ok(Some(e)) | Err(e) => Some(Err(connect_failure(&e, addr, display))),
                }
            } else if p.deadline.is_some_and(|d| now >= d) {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                Some(Err(connect_failure(&e, addr, display)))
            } else {
                None
            };
            match outcome {
                Some(Ok(())) if race.winner.is_none() => {
                    race.attempts.push(Attempt {
                        index: p.index,
                        elapsed: p.started.elapsed(),
                        result: Ok(()),
                    });
                    race.winner = Some((p.index, connected(p.socket)));
                }
                // Connected too, but later in the order than the winner
                // of this same round: closed, as abandoned.
                Some(Ok(())) => {}
                Some(Err(failure)) => race.attempts.push(Attempt {
                    index: p.index,
                    elapsed: p.started.elapsed(),
                    result: Err(failure),
                }),
                None => still.push(p),
            }
        }
        if race.winner.is_some() {
            // The attempts still pending are closed here.
            return race;
        }
        pending = still;
        // A failure makes the next attempt due at once (RFC 8305 section
        // 5: the delay only keeps a pending attempt alone).
        if race.attempts.len() > failures_before {
            next_start = now;
        }
    }
    race
}

/// Starts a non-blocking connect: the socket, and whether it connected
/// at once.
fn start_tcp(
    addr: SocketAddr,
    options: &ConnectOptions,
    display: &str,
) -> Result<(Socket, bool), ConnectFailure> {
    let socket = new_tcp_socket(addr, options, display)?;
    socket.set_nonblocking(true).map_err(|e| ConnectFailure {
        address_fault: false,
        ..connect_failure(&e, addr, display)
    })?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok((socket, true)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => Ok((socket, false)),
        Err(e) => Err(connect_failure(&e, addr, display)),
    }
}

/// A connected race socket as a blocking stream.
fn connected(socket: Socket) -> Box<dyn Transport> {
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_tcp_nodelay(true);
    Box::new(Stream::Tcp(socket.into()))
}

/// Waits until one of `pending` is writable (connected or failed) or
/// `wake` is reached; which ones are ready. EINTR: none ready.
fn poll_writable(pending: &[Pending], wake: Option<Instant>) -> io::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let wait = match wake {
        None => PollTimeout::NONE,
        Some(wake) => {
            let left = wake.saturating_duration_since(Instant::now());
            // Rounded up, so that the wait never ends early.
            let ms = left.as_millis().saturating_add(1);
            PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds: Vec<PollFd<'_>> = pending
        .iter()
        .map(|p| PollFd::new(p.socket.as_fd(), PollFlags::POLLOUT))
        .collect();
    match poll(&mut fds, wait) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(vec![false; pending.len()]),
        Ok(_) => Ok(fds
            .iter()
            .map(|fd| {
                fd.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
                })
            })
            .collect()),
        Err(errno) => Err(io::Error::from_raw_os_error(errno as i32)),
    }
}

/// Connects a blocking socket within `timeout` (zero: no limit). Linux
/// applies SO_SNDTIMEO to connect(2) and fails it with EINPROGRESS when
/// the time is up (socket(7)): one setsockopt instead of switching the
/// socket to non-blocking mode, polling, reading SO_ERROR and switching
/// back. The send timeout is left set; the session sets its own.
fn connect_blocking(socket: &Socket, target: &SockAddr, timeout: Duration) -> io::Result<()> {
    let started = std::time::Instant::now();
    if !timeout.is_zero() {
        socket.set_write_timeout(Some(timeout))?;
    }
    match socket.connect(target) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {
            Err(io::Error::from(io::ErrorKind::TimedOut))
        }
        // A signal interrupted the wait; the handshake goes on: wait for
        // it (within what is left of the timeout).
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            let left = if timeout.is_zero() {
                Duration::ZERO
            } else {
                let left = timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                left
            };
            wait_connected(socket, left)
        }
        Err(e) => Err(e),
    }
}

/// Waits at most `timeout` (zero: no limit) for a connect in progress.
fn wait_connected(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    // A limit too far away for the clock is no limit.
    let deadline = (!timeout.is_zero())
        .then(|| std::time::Instant::now().checked_add(timeout))
        .flatten();
    loop {
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                // Rounded up, so that the wait never ends early.
                let ms = left.as_millis().saturating_add(1);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, wait) {
            Ok(0) => {}
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
    match socket.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// UNIX-domain connect (LMTP).
pub fn connect_unix(path: &Path, timeout: Duration, display: &str) -> Result<UnixStream, Dsn> {
    let fail = |e: &io::Error| {
        Dsn::new(
            crate::dsn::CONNECT_FAILED,
            format!("connect to {display}: {}", strerror(e)),
        )
    };
    let target = SockAddr::unix(path).map_err(|_| {
        log::warn!("unix-domain name too long: {}", path.display());
        Dsn::new(crate::dsn::CONFIG_PROBLEM, "Server configuration error")
    })?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| fail(&e))?;
    let result = if timeout.is_zero() {
        socket.connect(&target)
    } else {
        socket.connect_timeout(&target, timeout)
    };
    result.map_err(|e| fail(&e))?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
