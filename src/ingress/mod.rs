//! The LMTP ingress: mailhop behind any MTA (docs/behind-postfix.md).
//! Each `[[ingress]]` listener has an accept thread; each connection a
//! thread of its own that speaks LMTP ([`lmtp`], I/O-free, and
//! [`session`], its I/O), spools the message ([`spool`], [`data`]) and
//! hands the transaction to the daemon's pool as jobs, answering each
//! recipient once the pool has settled it.
//!
//! Access: a UNIX listener admits the peers the job socket admits (peer
//! credentials against `[daemon] allowed_uids`/`allowed_groups`, as the
//! policy in force says, reloads included); an inet listener is on
//! loopback unless its entry allows more. Connections count toward
//! `[daemon] max_connections` with the job socket's.

pub mod data;
pub mod lmtp;
pub mod session;
pub mod spool;

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::IngressListener;
use crate::server::{Context, peer_groups, peer_identity};
pub use session::{Shared, Stream};

/// Stack of the connection threads (the conversation is shallow; replies
/// and buffers live on the heap).
const CONNECTION_STACK: usize = 256 * 1024;
/// How often an accept thread looks at the stop flag.
const TICK: u16 = 200;

/// A bound listening socket of an `[[ingress]]` entry.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Unix(l) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
    }

    fn ready(&self) -> bool {
        let fd = match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::from(TICK)), Ok(n) if n > 0)
    }
}

/// The running listeners.
pub struct Ingress {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Ingress {
    /// Starts one accept thread per listener.
    pub fn start(
        listeners: Vec<(Listener, IngressListener)>,
        shared: Shared,
        ctx: Arc<Context>,
        max_connections: usize,
    ) -> io::Result<Ingress> {
        let stop = Arc::new(AtomicBool::new(false));
        shared.submitter.stats().ingress_started();
        let shared = Arc::new(shared);
        let numbers = Arc::new(AtomicU64::new(1));
        let mut threads = Vec::new();
        for (n, (listener, config)) in listeners.into_iter().enumerate() {
            listener.set_nonblocking()?;
            let acceptor = Acceptor {
                listener,
                config: Arc::new(config),
                shared: Arc::clone(&shared),
                ctx: Arc::clone(&ctx),
                stop: Arc::clone(&stop),
                numbers: Arc::clone(&numbers),
                max_connections,
            };
            let thread = thread::Builder::new()
                .name(format!("ingress-{n}"))
                .stack_size(CONNECTION_STACK)
                .spawn(move || acceptor.run());
            match thread {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(Ingress { stop, threads })
    }

    /// Stops accepting (open connections go on until their transactions
    /// are answered; idle ones are told the daemon stops).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

struct Acceptor {
    listener: Listener,
    config: Arc<IngressListener>,
    shared: Arc<Shared>,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    numbers: Arc<AtomicU64>,
    max_connections: usize,
}

impl Acceptor {
    fn run(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            if !self.listener.ready() {
                continue;
            }
            for _ in 0..64 {
                match self.listener.accept() {
                    Ok(stream) => self.serve(stream),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("ingress {}: accept: {e}", self.config.listen);
                        thread::sleep(Duration::from_millis(u64::from(TICK)));
                        break;
                    }
                }
            }
        }
    }

    /// Checks the peer and starts the connection's thread.
    fn serve(&self, stream: Stream) {
        let listen = &self.config.listen;
        let hostname = &self.shared.hostname;
        let refuse = |stream: &Stream, text: &str| {
            let mut writer = match stream {
                Stream::Unix(s) => Stream::Unix(match s.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                }),
                Stream::Tcp(s) => Stream::Tcp(match s.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                }),
            };
            let _ = match &writer {
                Stream::Unix(s) => s.set_write_timeout(Some(Duration::from_secs(1))),
                Stream::Tcp(s) => s.set_write_timeout(Some(Duration::from_secs(1))),
            };
            let _ = writer.write_all(format!("421 {text}\r\n").as_bytes());
        };
        match &stream {
            Stream::Unix(s) => {
                let _ = s.set_nonblocking(false);
                if let Err(why) = self.allowed(s) {
                    log::warn!("ingress {listen}: refused a connection: {why}");
                    refuse(&stream, &format!("4.7.0 {hostname} {why}"));
                    return;
                }
            }
            Stream::Tcp(s) => {
                let _ = s.set_nonblocking(false);
            }
        }
        if self.shared.submitter.stopping() {
            refuse(
                &stream,
                &format!("4.3.0 {hostname} mail system shutting down"),
            );
            return;
        }
        if self.ctx.live.load(Ordering::SeqCst) >= self.max_connections {
            log::warn!(
                "ingress {listen}: refused a connection: {} connections are open (max_connections)",
                self.max_connections
            );
            refuse(
                &stream,
                &format!("4.3.2 {hostname} too many connections (max_connections)"),
            );
            return;
        }
        let number = self.numbers.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&self.shared);
        let config = Arc::clone(&self.config);
        let live = Arc::clone(&self.ctx.live);
        live.fetch_add(1, Ordering::SeqCst);
        self.shared.submitter.stats().ingress_connection(true);
        let spawned = thread::Builder::new()
            .name(format!("lmtp-{number}"))
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                session::serve(stream, &shared, &config, number);
                shared.submitter.stats().ingress_connection(false);
                live.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.ctx.live.fetch_sub(1, Ordering::SeqCst);
            self.shared.submitter.stats().ingress_connection(false);
            log::warn!("ingress {listen}: cannot serve a connection: {e}");
        }
    }

    /// The job socket's access policy, for a UNIX peer.
    fn allowed(&self, stream: &UnixStream) -> Result<(), String> {
        let creds = getsockopt(stream, PeerCredentials)
            .map_err(|e| format!("no peer credentials: {}", e.desc()))?;
        let policy = self.ctx.access();
        let groups = peer_groups(stream).unwrap_or_default();
        let peer = peer_identity(creds.uid(), creds.gid(), &groups, policy.daemon_uid);
        if policy.allows(&peer) {
            Ok(())
        } else {
            Err(format!(
                "permission denied: uid {} is not allowed to submit mail",
                creds.uid()
            ))
        }
    }
}
