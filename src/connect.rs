//! Opening connections: TCP with a non-blocking connect bounded by a timeout
//! (socket2), the source address bound per address family, and UNIX-domain
//! sockets for LMTP. Knows nothing of SMTP.
//!
//! Errors (a [`Dsn`]) carry Postfix's DSN: 4.4.1 for a failed connect,
//! 4.4.0 when `bind_address_enforce` is set and binding the source address
//! failed, 4.3.5 for a UNIX path that does not fit.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Opens connections; a trait so the delivery loop can be tested with fakes.
pub trait Connector: Send + Sync {
    /// `display` is `host[addr]` for diagnostics.
    fn connect(
        &self,
        endpoint: &Endpoint,
        display: &str,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, Dsn>;
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
        let stream = match endpoint {
            Endpoint::Inet(addr) => Stream::Tcp(connect_tcp(*addr, options, display)?),
            Endpoint::Unix(path) => Stream::Unix(connect_unix(path, options.timeout, display)?),
        };
        Ok(Box::new(stream))
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
    let fail = |e: &io::Error| {
        Dsn::new(
            crate::dsn::CONNECT_FAILED,
            format!("connect to {display}:{}: {}", addr.port(), strerror(e)),
        )
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(|e| fail(&e))?;
    bind_source(&socket, addr, options)?;
    let target = SockAddr::from(addr);
    let started = std::time::Instant::now();
    let result = connect_blocking(&socket, &target, options.timeout);
    crate::metrics::record_connect(started.elapsed(), result.is_ok());
    result.map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            Dsn::new(
                crate::dsn::CONNECT_FAILED,
                format!("connect to {display}:{}: Connection timed out", addr.port()),
            )
        } else {
            fail(&e)
        }
    })?;
    // Commands go out in whole batches; Nagle would only add latency.
    let _ = socket.set_tcp_nodelay(true);
    Ok(socket.into())
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
