//! `mailhop daemon`: the long-running job service. Owns the process-level
//! life cycle: signal flags (registered before any thread starts), the
//! listening socket (systemd socket activation or a bound path with its
//! mode and owner), dropping root privileges, the worker pool, the accept
//! loop, configuration reload on SIGHUP, the drain on SIGTERM/SIGINT,
//! sd_notify(3) state changes and the metrics endpoint (`[metrics]`).
//!
//! Error contract: a startup problem is one `mailhop: ...` line on stderr
//! and a sysexits code (78 configuration, 67 unknown user, 71 socket,
//! signal, thread or privilege failure; also a metrics endpoint that
//! cannot listen). Once running, nothing a client or
//! a reload does stops the daemon: a bad configuration on SIGHUP is
//! refused with a log line and the old one kept. The first SIGTERM/SIGINT
//! drains and exits 0; a second one exits at once with status 1.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{SockType, getsockopt, sockopt};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, User, getegid, geteuid, getgid, getgrouplist, getuid};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cache::SessionCache;
use crate::config::{Config, DaemonConfig, format_duration};
use crate::deliver::{Deliverer, load_sasl, system_stub_resolver};
use crate::dns::{Answer, DnsError, DnsErrorKind, DnsLookup, MxRecord};
use crate::health::AddressHealth;
use crate::metrics;
use crate::pool::{
    Answer as PoolAnswer, PeerIdentity, Pool, PoolSize, Report, SHUTDOWN_DIAGNOSTIC, SHUTDOWN_DSN,
    Submitter, Ticket,
};
use crate::server::{self, ConnSettings, Context, lookup_group};
use crate::shaping::MxSites;
use crate::stats::{Stats, StatusReport};
use crate::tls_memory::TlsMemory;
use crate::tlsrpt::{SubmitFn, TlsRpt};

pub const EX_NOUSER: i32 = 67;
pub const EX_OSERR: i32 = 71;
pub const EX_CONFIG: i32 = 78;
/// Exit status after a second SIGTERM/SIGINT (no drain).
pub const EX_SECOND_SIGNAL: i32 = 1;

/// After the deliveries are done or deferred (every job answered), how
/// long the shutdown waits for connections to take their results and for
/// deliveries cut short to end (they send no more message bodies; their
/// late results are logged as information only).
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Main loop tick: signal flags are looked at this often.
const TICK: u16 = 100;

/// `mailhop daemon` arguments.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Configuration file; embedded defaults when `None` (then SIGHUP has
    /// nothing to reload).
    pub config: Option<PathBuf>,
    /// Overrides `[daemon] socket`.
    pub socket: Option<PathBuf>,
}

struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

/// Registers the flags. Must run before any thread is started.
fn register_signals() -> io::Result<Signals> {
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // The conditional exit first: it fires only once the flag is set.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EX_SECOND_SIGNAL,
            Arc::clone(&term),
        )?;
        signal_hook::flag::register(signal, Arc::clone(&term))?;
    }
    signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
    Ok(Signals { term, hup })
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

fn fatal(code: i32, text: impl std::fmt::Display) -> i32 {
    let _ = writeln!(io::stderr(), "mailhop: {text}");
    code
}

/// Puts the calling thread (and so every thread it starts afterwards)
/// under SCHED_BATCH at its current nice value, when it runs under the
/// default policy; a policy chosen by whoever started the daemon (systemd
/// `CPUSchedulingPolicy=`, `chrt`) is kept. Delivery is throughput work: a
/// batch thread woken by a reply waits for the running thread's slice
/// instead of preempting it (on a shared host: the peer, the queue
/// manager), which saves a pair of context switches per wake-up under load.
/// Returns whether it switched.
fn set_batch_scheduling() -> io::Result<bool> {
    // SAFETY: no arguments besides pid 0, the calling thread.
    let current = unsafe { libc::sched_getscheduler(0) };
    if current < 0 {
        return Err(io::Error::last_os_error());
    }
    if current & !libc::SCHED_RESET_ON_FORK != libc::SCHED_OTHER {
        return Ok(false);
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param`, a valid local value;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display())),
        None => Ok(Config::default()),
    }
}

/// Runs the daemon in the foreground; returns the exit code.
pub fn run(options: &Options) -> i32 {
    let signals = match register_signals() {
        Ok(signals) => signals,
        Err(e) => return fatal(EX_OSERR, format!("cannot install signal handlers: {e}")),
    };
    let config = match load_config(options.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fatal(EX_CONFIG, e),
    };
    if config.daemon.batch_scheduling {
        // Before any worker, reader or timer thread exists: they inherit it.
        match set_batch_scheduling() {
            Ok(true) => {}
            Ok(false) => log::info!(
                "daemon.batch_scheduling: started under a scheduling policy other than the default; keeping it"
            ),
            Err(e) => log::warn!("cannot switch to SCHED_BATCH (daemon.batch_scheduling): {e}"),
        }
    }
    match raise_nofile_limit() {
        Ok(limit) => log::debug!("open files limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open files limit (RLIMIT_NOFILE): {e}"),
    }
    let socket = options
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.daemon.socket));
    let user = match target_user(&config.daemon) {
        Ok(user) => user,
        Err(e) => return fatal(EX_NOUSER, e),
    };
    let socket_gid = match config.daemon.socket_group.as_str() {
        "" => None,
        name => match lookup_group(name) {
            Ok(gid) => Some(gid),
            Err(e) => return fatal(EX_CONFIG, format!("daemon.socket_group: {e}")),
        },
    };
    let listening = match listen(&socket, &config.daemon, user.as_ref(), socket_gid) {
        Ok(listening) => listening,
        Err(e) => return fatal(EX_OSERR, e),
    };
    let ingress_sockets = match bind_ingress(&config, user.as_ref(), socket_gid) {
        Ok(sockets) => sockets,
        Err(e) => {
            listening.remove_file();
            return fatal(EX_OSERR, e);
        }
    };
    let spool = if ingress_sockets.is_empty() {
        None
    } else {
        let owner = user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        let dir = Path::new(&config.daemon.spool_directory);
        match crate::ingress::spool::Spool::prepare(dir, owner) {
            Ok(spool) => Some(spool),
            Err(e) => {
                listening.remove_file();
                ingress_sockets.iter().for_each(IngressSocket::remove_file);
                return fatal(
                    EX_OSERR,
                    format!("daemon.spool_directory {}: {e}", dir.display()),
                );
            }
        }
    };
    if let Some(user) = &user {
        if let Err(e) = drop_privileges(user) {
            listening.remove_file();
            ingress_sockets.iter().for_each(IngressSocket::remove_file);
            return fatal(
                EX_OSERR,
                format!("cannot switch to user {}: {e}", user.name),
            );
        }
        log::info!(
            "switched to user {} (uid {}, gid {})",
            user.name,
            user.uid,
            user.gid
        );
    }
    // Running as the shared fallback user ("nobody"), the daemon's uid
    // grants nothing: every other process of that user would otherwise
    // be a privileged client.
    let fell_back = user
        .as_ref()
        .is_some_and(|u| u.name == FALLBACK_USER && config.daemon.user == DEFAULT_USER);
    let daemon_uid = if fell_back {
        u32::MAX
    } else {
        geteuid().as_raw()
    };
    // As the daemon's user: its socket file is the user's, removable at exit.
    let metrics_endpoint = match metrics::bind(&config.metrics.listen_addr()) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            listening.remove_file();
            return fatal(EX_OSERR, e);
        }
    };
    let dns: Arc<dyn DnsLookup> = match system_stub_resolver(&config) {
        Ok(stub) => Arc::new(stub),
        Err(e) => {
            log::error!("DNS resolver unavailable: {e}; only IP-literal destinations will work");
            Arc::new(NoResolver)
        }
    };
    let cache = Arc::new(SessionCache::new(config.cache.clone()));
    let sites = Arc::new(MxSites::default());
    // One address health memory for all workers, kept across reloads.
    let health = Arc::new(AddressHealth::new());
    // TLS-RPT: one reporter for all workers, kept across reloads.
    let tlsrpt = TlsRpt::from_config(&config, Arc::clone(&dns));
    // Likewise the TLS sessions and the servers with broken TLS.
    let tls_memory = Arc::new(TlsMemory::new());
    // As the daemon's user: the password table must be its own.
    let sasl = match load_sasl(&config.sasl, geteuid().as_raw()) {
        Ok(sasl) => sasl.map(Arc::new),
        Err(e) => {
            listening.remove_file();
            ingress_sockets.iter().for_each(IngressSocket::remove_file);
            return fatal(EX_CONFIG, e);
        }
    };
    let deliverer = Deliverer::with_dns(config.clone(), Arc::clone(&dns))
        .with_sasl(sasl)
        .with_cache(Arc::clone(&cache))
        .with_sites(Arc::clone(&sites))
        .with_health(Arc::clone(&health))
        .with_tlsrpt(tlsrpt.clone())
        .with_tls_memory(Arc::clone(&tls_memory));
    let stats = Arc::new(Stats::new());
    let size = PoolSize {
        workers: config.daemon.workers,
        queue_capacity: config.daemon.queue_capacity,
        stack_size: config.daemon.worker_stack_size,
    };
    let pool = match Pool::start(size, deliverer, stats) {
        Ok(pool) => pool,
        Err(e) => {
            listening.remove_file();
            return fatal(EX_OSERR, format!("cannot start the workers: {e}"));
        }
    };
    let settings = Arc::new(ConnSettings::from_config(
        &config.daemon,
        config.shaping.enabled,
        daemon_uid,
    ));
    let ctx = Arc::new(Context {
        submitter: pool.submitter(),
        live: Arc::new(AtomicUsize::new(0)),
        access: std::sync::RwLock::new(Arc::new(settings.access.clone())),
        quotas: Arc::default(),
    });
    start_cache_expiry(&ctx);
    if let Some(tlsrpt) = &tlsrpt {
        if tlsrpt.settings().submit {
            tlsrpt.set_submitter(report_submitter(pool.submitter()));
        }
        start_tlsrpt_flush(&ctx);
    }
    let mut ingress_files = Vec::new();
    let ingress = match spool {
        None => None,
        Some(spool) => {
            let mut listeners = Vec::new();
            for socket in ingress_sockets {
                log::info!("ingress: listening on {} (LMTP)", socket.config.listen);
                ingress_files.extend(socket.bound);
                listeners.push((socket.listener, socket.config));
            }
            let shared = crate::ingress::Shared {
                submitter: pool.submitter(),
                spool,
                hostname: config.myhostname(),
                idle_timeout: config.daemon.client_idle_timeout,
                peer: Arc::new(crate::pool::PeerIdentity {
                    uid: geteuid().as_raw(),
                    gids: Vec::new(),
                    privileged: true,
                }),
            };
            match crate::ingress::Ingress::start(
                listeners,
                shared,
                Arc::clone(&ctx),
                config.daemon.max_connections,
            ) {
                Ok(ingress) => Some(ingress),
                Err(e) => {
                    listening.remove_file();
                    ingress_files.iter().for_each(BoundFile::remove);
                    return fatal(EX_OSERR, format!("cannot start the LMTP ingress: {e}"));
                }
            }
        }
    };
    let metrics_file = match metrics_endpoint {
        None => None,
        Some(endpoint) => {
            let described = endpoint.describe().to_string();
            let bound = endpoint.bound_file();
            let recorder = metrics::install(config.metrics.destination_label_limit);
            let status_ctx = Arc::clone(&ctx);
            let snapshot: metrics::SnapshotFn =
                Arc::new(move || metrics_snapshot(server::status_report(&status_ctx.submitter)));
            if let Err(e) = endpoint.serve(recorder, Some(snapshot)) {
                listening.remove_file();
                bound.inspect(metrics::BoundFile::remove);
                return fatal(EX_OSERR, format!("cannot start the metrics endpoint: {e}"));
            }
            log::info!("metrics: serving {described}");
            bound
        }
    };
    // The Redis feed: a Redis down at start is waited out like later on.
    let feed = if config.feed.enabled {
        // The destination limits count every node's deliveries (Redis).
        let settings = crate::feed::limits::LimitSettings {
            node: crate::feed::consumer_name(&config.feed),
            cluster: config.feed.cluster,
            ..Default::default()
        };
        match crate::feed::limits::ClusterLimits::new(config.feed.redis_url.as_str(), settings) {
            Ok(limits) => {
                if pool.submitter().share_limits(limits) {
                    log::info!(
                        "feed: destination limits shared with the other nodes through Redis"
                    );
                } else {
                    log::warn!("feed: destination limits not shared (no scheduler)");
                }
            }
            Err(e) => {
                listening.remove_file();
                return fatal(EX_CONFIG, format!("feed: limits: {e}"));
            }
        }
        match crate::feed::Feed::start(&config.feed, pool.submitter()) {
            Ok(feed) => Some(feed),
            Err(e) => {
                listening.remove_file();
                return fatal(EX_CONFIG, format!("feed: {e}"));
            }
        }
    } else {
        None
    };
    let mut daemon = Daemon {
        feed,
        config_path: options.config.clone(),
        config,
        dns,
        cache,
        sites,
        health,
        tls_memory,
        pool,
        ctx,
        settings,
        daemon_uid,
        listening,
        metrics_file,
        ingress,
        ingress_files,
        accepted: 0,
        spare_fd: spare_descriptor(),
    };
    log::info!(
        "listening on {} ({} workers, queue capacity {}, pid {})",
        daemon.listening.describe(),
        size.workers,
        size.queue_capacity,
        std::process::id()
    );
    notify(&[NotifyState::Ready]);
    while !signals.term.load(Ordering::SeqCst) {
        if signals.hup.swap(false, Ordering::SeqCst) {
            daemon.reload();
        }
        daemon.accept_some();
        daemon.pool.replenish();
    }
    daemon.shutdown()
}

struct Daemon {
    /// The Redis Streams feed (`[feed]`), when on.
    feed: Option<crate::feed::Feed>,
    config_path: Option<PathBuf>,
    config: Config,
    dns: Arc<dyn DnsLookup>,
    cache: Arc<SessionCache>,
    /// The MX sites learned so far (kept across reloads).
    sites: Arc<MxSites>,
    /// Server addresses that failed to connect lately, shared by the
    /// workers and kept across reloads (see [`crate::health`]).
    health: Arc<AddressHealth>,
    /// TLS sessions and servers with broken TLS, likewise (see
    /// [`crate::tls_memory`]).
    tls_memory: Arc<TlsMemory>,
    pool: Pool,
    ctx: Arc<Context>,
    settings: Arc<ConnSettings>,
    daemon_uid: u32,
    listening: Listening,
    /// The metrics endpoint's socket file (`[metrics] listen = "unix:..."`).
    metrics_file: Option<metrics::BoundFile>,
    /// The `[[ingress]]` listeners, and their socket files.
    ingress: Option<crate::ingress::Ingress>,
    ingress_files: Vec<BoundFile>,
    accepted: u64,
    /// See [`spare_descriptor`].
    spare_fd: Option<fs::File>,
}

impl Daemon {
    /// Waits up to one tick for connections and serves those that came.
    fn accept_some(&mut self) {
        let ready = {
            let mut fds = [PollFd::new(
                self.listening.listener.as_fd(),
                PollFlags::POLLIN,
            )];
            matches!(poll(&mut fds, PollTimeout::from(TICK)), Ok(n) if n > 0)
        };
        if !ready {
            return;
        }
        // Bounded: a burst is served over several ticks.
        for _ in 0..64 {
            match self.listening.listener.accept() {
                Ok((stream, _)) => self.serve(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: the spare one makes room to take
                    // the client and tell it to come back, rather than
                    // leaving it waiting in the backlog.
                    log::warn!(
                        "accept on {}: {e}; answering a retryable error",
                        self.listening.describe()
                    );
                    self.spare_fd = None;
                    if let Ok((stream, _)) = self.listening.listener.accept() {
                        server::refuse_retryable(&stream, "no file descriptors left in the daemon");
                    }
                    self.spare_fd = spare_descriptor();
                    thread::sleep(Duration::from_millis(u64::from(TICK)));
                    return;
                }
                Err(e) => {
                    // The like of ENOBUFS: back off instead of spinning.
                    log::warn!("accept on {}: {e}", self.listening.describe());
                    thread::sleep(Duration::from_millis(u64::from(TICK)));
                    return;
                }
            }
        }
    }

    fn serve(&mut self, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let max = self.config.daemon.max_connections;
        if self.ctx.live.load(Ordering::SeqCst) >= max {
            log::warn!("refused a connection: {max} connections are open (max_connections)");
            server::refuse_retryable(&stream, "too many connections (max_connections)");
            return;
        }
        self.accepted += 1;
        // To answer with, should no thread start (the stream goes with the
        // thread's closure).
        let answer = stream.try_clone().ok();
        if let Err(e) =
            server::spawn_connection(stream, &self.ctx, Arc::clone(&self.settings), self.accepted)
        {
            log::warn!("cannot serve a connection: {e}");
            if let Some(stream) = answer {
                server::refuse_retryable(&stream, "the daemon cannot serve this connection now");
            }
        }
    }

    /// SIGHUP: new jobs get a deliverer built from the re-read file; a
    /// file that does not load is refused and the old configuration kept.
    fn reload(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[NotifyState::Reloading, now]),
            Err(_) => notify(&[NotifyState::Reloading]),
        }
        match self.config_path.clone() {
            None => log::info!("reload: started without --config; nothing to reload"),
            Some(path) => match Config::load(&path) {
                Err(e) => log::warn!(
                    "reload refused: {}: {e}; keeping the current configuration",
                    path.display()
                ),
                Ok(new) => match load_sasl(&new.sasl, geteuid().as_raw()) {
                    Err(e) => log::warn!("reload refused: {e}; keeping the current configuration"),
                    Ok(sasl) => {
                        self.apply(new, sasl.map(Arc::new));
                        log::info!("reload: configuration reloaded from {}", path.display());
                    }
                },
            },
        }
        notify(&[NotifyState::Ready]);
    }

    fn apply(&mut self, mut new: Config, sasl: Option<Arc<crate::sasl::Setup>>) {
        let old = &self.config.daemon;
        let restart_only = [
            ("socket", old.socket != new.daemon.socket),
            ("socket_mode", old.socket_mode != new.daemon.socket_mode),
            ("socket_group", old.socket_group != new.daemon.socket_group),
            ("user", old.user != new.daemon.user),
            ("workers", old.workers != new.daemon.workers),
            (
                "queue_capacity",
                old.queue_capacity != new.daemon.queue_capacity,
            ),
            (
                "worker_stack_size",
                old.worker_stack_size != new.daemon.worker_stack_size,
            ),
            (
                "batch_scheduling",
                old.batch_scheduling != new.daemon.batch_scheduling,
            ),
        ];
        let changed: Vec<&str> = restart_only
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect();
        if !changed.is_empty() {
            log::warn!(
                "reload: daemon.{} take effect at restart; keeping the running values",
                changed.join(", daemon.")
            );
        }
        new.daemon.socket = old.socket.clone();
        new.daemon.socket_mode = old.socket_mode.clone();
        new.daemon.socket_group = old.socket_group.clone();
        new.daemon.user = old.user.clone();
        new.daemon.workers = old.workers;
        new.daemon.queue_capacity = old.queue_capacity;
        new.daemon.worker_stack_size = old.worker_stack_size;
        new.daemon.batch_scheduling = old.batch_scheduling;
        if new.ingress != self.config.ingress
            || new.daemon.spool_directory != self.config.daemon.spool_directory
        {
            log::warn!(
                "reload: [[ingress]] and daemon.spool_directory take effect at restart; keeping the running listeners"
            );
            new.ingress = self.config.ingress.clone();
            new.daemon.spool_directory = self.config.daemon.spool_directory.clone();
        }
        if new.feed != self.config.feed {
            log::warn!("reload: [feed] takes effect at restart; keeping the running feed");
            new.feed = self.config.feed.clone();
        }
        if new.metrics != self.config.metrics {
            log::warn!("reload: [metrics] takes effect at restart; keeping the running endpoint");
            new.metrics = self.config.metrics.clone();
        }
        let (od, nd) = (&self.config.dns, &new.dns);
        if od.nameservers != nd.nameservers
            || od.timeout != nd.timeout
            || od.attempts != nd.attempts
            || od.cache_entries != nd.cache_entries
            || od.cache_bytes != nd.cache_bytes
            || od.queries_in_flight != nd.queries_in_flight
        {
            log::warn!(
                "reload: dns.nameservers, dns.timeout, dns.attempts, dns.cache_entries, dns.cache_bytes and dns.queries_in_flight take effect at restart"
            );
        }
        let sasl_changed = self.pool.deliverer().sasl().map(|s| &**s) != sasl.as_deref();
        if new.cache != self.config.cache || new.tls != self.config.tls || sasl_changed {
            // Sessions set up under the old settings are not reused: their
            // idle ones are closed now (on a thread of their own: a QUIT
            // each), and the old cache closes what running jobs still put
            // into it once the last of them ends.
            let old = std::mem::replace(
                &mut self.cache,
                Arc::new(SessionCache::new(new.cache.clone())),
            );
            let closing = thread::Builder::new()
                .name("cache-close".into())
                .stack_size(256 * 1024)
                .spawn(move || old.close_all());
            if let Err(e) = closing {
                log::warn!("reload: cannot close the idle cached sessions now: {e}");
            }
            log::info!(
                "reload: the connection cache was emptied ([cache], [tls] or [sasl] changed)"
            );
        }
        let mut deliverer = Deliverer::with_dns(new.clone(), Arc::clone(&self.dns))
            .with_sasl(sasl)
            .with_cache(Arc::clone(&self.cache))
            .with_sites(Arc::clone(&self.sites))
            .with_health(Arc::clone(&self.health))
            // [tls_rpt] is read at start only: the running reporter stays.
            .with_tlsrpt(self.pool.deliverer().tlsrpt().cloned())
            .with_tls_memory(Arc::clone(&self.tls_memory));
        if new.mta_sts == self.config.mta_sts
            && new.dns.inet_protocols == self.config.dns.inet_protocols
        {
            // The MTA-STS policies in memory stay (without a cache file too);
            // its fetcher reaches the policy hosts in the same families.
            let running = self.pool.deliverer().mta_sts().cloned();
            deliverer = deliverer.with_mta_sts(running);
        }
        self.pool.set_deliverer(deliverer);
        self.settings = Arc::new(ConnSettings::from_config(
            &new.daemon,
            new.shaping.enabled,
            self.daemon_uid,
        ));
        // Open connections check their next lines against the new policy.
        self.ctx.set_access(self.settings.access.clone());
        self.config = new;
    }

    /// SIGTERM/SIGINT: stop accepting, let running deliveries finish
    /// within `shutdown_timeout`, defer the rest, hand every result to its
    /// client, exit 0.
    fn shutdown(self) -> i32 {
        notify(&[NotifyState::Stopping]);
        let Daemon {
            config,
            cache,
            pool,
            ctx,
            listening,
            metrics_file,
            ingress,
            ingress_files,
            feed,
            ..
        } = self;
        let described = listening.describe();
        listening.remove_file();
        if let Some(ingress) = ingress {
            ingress.stop();
        }
        ingress_files.iter().for_each(BoundFile::remove);
        metrics_file.inspect(metrics::BoundFile::remove);
        drop(listening);
        if let Some(tlsrpt) = pool.deliverer().tlsrpt() {
            // The days that ended; today's counts are lost with the process.
            tlsrpt.flush(std::time::SystemTime::now(), false);
            let left = tlsrpt.counts().len();
            if left > 0 {
                log::info!(
                    "tls_rpt: {left} domain(s) of today not reported (the day has not ended)"
                );
            }
        }
        let timeout = config.daemon.shutdown_timeout;
        let mut queued = pool.begin_shutdown();
        log::info!(
            "shutting down: stopped listening on {described}; waiting up to {} for {} deliveries in flight",
            format_duration(timeout).unwrap_or_else(|_| format!("{timeout:?}")),
            pool.running()
        );
        // A timeout too long for the clock is no limit.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            queued += pool.drain_queue();
            if pool.running() == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let cut = pool.defer_running();
        if queued > 0 {
            log::warn!(
                "shutdown: deferred {queued} queued jobs ({SHUTDOWN_DSN} {SHUTDOWN_DIAGNOSTIC})"
            );
        }
        if cut > 0 {
            log::warn!(
                "shutdown: deferred {cut} jobs still being delivered ({SHUTDOWN_DSN} {SHUTDOWN_DIAGNOSTIC})"
            );
        }
        let flush_deadline = Instant::now() + FLUSH_LIMIT;
        while (ctx.live.load(Ordering::SeqCst) > 0 || pool.running() > 0)
            && Instant::now() < flush_deadline
        {
            pool.drain_queue();
            thread::sleep(Duration::from_millis(20));
        }
        let left = ctx.live.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("shutdown: {left} client connections did not take their results in time");
        }
        if let Some(feed) = feed {
            feed.stop(FLUSH_LIMIT);
        }
        cache.close_all();
        pool.deliverer().cache().inspect(|c| c.close_all());
        log::info!("stopped");
        0
    }
}

/// The status report as the metrics endpoint reads it at each scrape.
fn metrics_snapshot(report: StatusReport) -> metrics::Snapshot {
    metrics::Snapshot {
        accepted: report.accepted,
        answered: report.done.jobs,
        errors: report.errors,
        in_flight: report.in_flight,
        workers: report.workers.total,
        busy_workers: report.workers.busy,
        queue_depth: report.queue.depth,
        queue_capacity: report.queue.capacity,
        uptime_seconds: report.uptime,
        cache_hits: report.cache.hits,
        cache_misses: report.cache.misses,
        cache_stored: report.cache.stored,
        cache_idle: report.cache.idle,
        cache_chained: report.cache.chained,
        paused: report.paused,
        tls: report.tls.map(|t| metrics::TlsGauges {
            new_sessions: t.new_sessions,
            resumed_sessions: t.resumed_sessions,
            cached_sessions: t.cached_sessions,
            broken_servers: t.broken_servers,
            skipped_handshakes: t.skipped_handshakes,
        }),
        destinations: report
            .destinations
            .into_iter()
            .map(|d| metrics::DestinationGauges {
                name: d.name,
                transport: d.transport,
                active: d.active,
                window: d.window,
                limit: d.limit,
                waiting: d.waiting,
                paused_for: d.paused_for,
                dead: d.dead,
                throttled: d.throttled,
                last_throttle: d.last_throttle,
            })
            .collect(),
        ingress: report.ingress.map(|i| metrics::IngressGauges {
            connections: i.connections,
            messages: i.messages,
            replied_2xx: i.replied_2xx,
            replied_4xx: i.replied_4xx,
            replied_5xx: i.replied_5xx,
            cancelled: i.cancelled,
        }),
    }
}

/// A descriptor held in reserve (on /dev/null) so that, out of
/// descriptors, the daemon can still accept one client to turn it away.
fn spare_descriptor() -> Option<fs::File> {
    fs::File::open("/dev/null").ok()
}

/// Raises the soft limit on open files to the hard limit: every client
/// connection, passed message and SMTP session costs descriptors. Returns
/// the new soft limit.
fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid local `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the valid local `limit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Expires idle cached sessions about once a second, until shutdown.
fn start_cache_expiry(ctx: &Arc<Context>) {
    let ctx = Arc::clone(ctx);
    let started = thread::Builder::new()
        .name("cache-expiry".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            while !ctx.submitter.stopping() {
                thread::sleep(Duration::from_secs(1));
                if let Some(cache) = ctx.submitter.deliverer().cache() {
                    cache.expire();
                }
            }
        });
    if let Err(e) = started {
        log::warn!(
            "cannot start the cache expiry thread: {e}; idle sessions expire when looked up"
        );
    }
}

/// How often the TLS-RPT thread looks for days that ended.
const TLSRPT_FLUSH_PERIOD: Duration = Duration::from_secs(60);

/// Writes the TLS reports of the days that ended (see [`crate::tlsrpt`])
/// about once a minute, until shutdown (which writes them once more).
fn start_tlsrpt_flush(ctx: &Arc<Context>) {
    let ctx = Arc::clone(ctx);
    let started = thread::Builder::new()
        .name("tlsrpt-flush".into())
        .stack_size(crate::tlsrpt::FLUSH_STACK)
        .spawn(move || {
            let mut last = Instant::now();
            while !ctx.submitter.stopping() {
                thread::sleep(Duration::from_secs(1));
                if last.elapsed() < TLSRPT_FLUSH_PERIOD {
                    continue;
                }
                last = Instant::now();
                if let Some(tlsrpt) = ctx.submitter.deliverer().tlsrpt() {
                    tlsrpt.flush(std::time::SystemTime::now(), false);
                }
            }
        });
    if let Err(e) = started {
        log::warn!("cannot start the TLS-RPT thread: {e}; reports are written at shutdown only");
    }
}

/// Logs what became of a report message submitted to the workers.
struct ReportAnswer;

impl Report for ReportAnswer {
    fn report(&self, answer: PoolAnswer) {
        log::info!("tls_rpt: report message: {}", answer.to_line().trim_end());
    }
}

/// `[tls_rpt] submit`: report messages go to the daemon's own workers, as
/// jobs of the daemon itself.
fn report_submitter(submitter: Submitter) -> SubmitFn {
    let peer = Arc::new(PeerIdentity {
        uid: geteuid().as_raw(),
        gids: Vec::new(),
        privileged: true,
    });
    Box::new(move |job| {
        let checked = job.into_checked().map_err(|e| e.error)?;
        if submitter.stopping() {
            return Err("the daemon is stopping".into());
        }
        submitter.submit(Ticket::new(
            checked,
            Arc::clone(&peer),
            Arc::new(ReportAnswer),
        ));
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// The listening socket
// ---------------------------------------------------------------------------

struct Listening {
    listener: UnixListener,
    /// The socket file we created (removed at exit), or `None` when
    /// systemd passed the socket.
    bound: Option<BoundFile>,
}

struct BoundFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listening {
    fn describe(&self) -> String {
        match &self.bound {
            Some(bound) => bound.path.display().to_string(),
            None => match self.listener.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => format!("{} (socket activation)", path.display()),
                    None => "a socket passed by systemd".into(),
                },
                Err(_) => "a socket passed by systemd".into(),
            },
        }
    }

    /// Removes the socket file if it is still the one we bound.
    fn remove_file(&self) {
        if let Some(bound) = &self.bound {
            bound.remove();
        }
    }
}

impl BoundFile {
    /// Removes the socket file if it is still the one we bound.
    fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::info!("cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// An `[[ingress]]` listener, bound before the daemon drops root.
struct IngressSocket {
    listener: crate::ingress::Listener,
    config: crate::config::IngressListener,
    /// Its socket file (UNIX listeners).
    bound: Option<BoundFile>,
}

impl IngressSocket {
    fn remove_file(&self) {
        if let Some(bound) = &self.bound {
            bound.remove();
        }
    }
}

/// Binds every `[[ingress]]` listener: UNIX sockets like the job socket
/// (mode, owner, group), TCP sockets with SO_REUSEADDR.
fn bind_ingress(
    config: &Config,
    user: Option<&User>,
    socket_gid: Option<u32>,
) -> Result<Vec<IngressSocket>, String> {
    use crate::config::IngressListen;
    let mut sockets: Vec<IngressSocket> = Vec::new();
    for listener in config.ingress_listeners() {
        let bound = match &listener.listen {
            IngressListen::Unix(path) => {
                listen_path(path, &config.daemon, user, socket_gid).map(|listening| {
                    (
                        crate::ingress::Listener::Unix(listening.listener),
                        listening.bound,
                    )
                })
            }
            IngressListen::Inet(addr) => std::net::TcpListener::bind(addr)
                .map(|l| (crate::ingress::Listener::Tcp(l), None))
                .map_err(|e| format!("ingress: cannot listen on {addr}: {e}")),
        };
        match bound {
            Ok((socket, bound)) => sockets.push(IngressSocket {
                listener: socket,
                config: listener,
                bound,
            }),
            Err(e) => {
                sockets.iter().for_each(IngressSocket::remove_file);
                return Err(e);
            }
        }
    }
    Ok(sockets)
}

fn listen(
    path: &Path,
    daemon: &DaemonConfig,
    user: Option<&User>,
    socket_gid: Option<u32>,
) -> Result<Listening, String> {
    if let Some(listener) = activated_listener()? {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket activation: {e}"))?;
        return Ok(Listening {
            listener,
            bound: None,
        });
    }
    listen_path(path, daemon, user, socket_gid)
}

/// Binds a UNIX socket at `path` with `[daemon] socket_mode`, owned by
/// `user` and `socket_gid` (the job socket, an ingress socket).
fn listen_path(
    path: &Path,
    daemon: &DaemonConfig,
    user: Option<&User>,
    socket_gid: Option<u32>,
) -> Result<Listening, String> {
    let name = path.display();
    let mode = u32::from_str_radix(&daemon.socket_mode, 8)
        .map_err(|_| format!("daemon.socket_mode: {:?} is not octal", daemon.socket_mode))?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        // Our own runtime directory: the user we switch to may remove the
        // socket at exit.
        // Given by its descriptor (O_NOFOLLOW), not by path.
        let given = |user: &User| -> nix::Result<()> {
            let dir = nix::fcntl::open(
                parent,
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            nix::unistd::fchown(&dir, Some(user.uid), Some(user.gid))
        };
        if let Some(user) = user
            && let Err(e) = given(user)
        {
            log::warn!(
                "cannot give {} to {}: {}",
                parent.display(),
                user.name,
                e.desc()
            );
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!("{name}: another process is listening on it"));
            }
            fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket {name}: {e}"))?;
        }
        Ok(_) => return Err(format!("{name} exists and is not a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{name}: {e}")),
    }
    let owner = user.map(|u| u.uid);
    let group = socket_gid.map(Gid::from_raw).or(user.map(|u| u.gid));
    let listener = bind_owned(path, mode, owner, group)?;
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{name}: {e}"))?;
    let listening = Listening {
        listener,
        bound: Some(BoundFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        }),
    };
    let wrong_owner = owner.is_some_and(|uid| meta.uid() != uid.as_raw())
        || group.is_some_and(|gid| meta.gid() != gid.as_raw());
    if wrong_owner || meta.mode() & 0o7777 != mode {
        listening.remove_file();
        return Err(format!(
            "{name}: the socket was created with owner {}:{} mode {:o}, not as configured (a set-group-ID directory?)",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        ));
    }
    if let Err(e) = listening.listener.set_nonblocking(true) {
        listening.remove_file();
        return Err(format!("{name}: {e}"));
    }
    Ok(listening)
}

/// Binds the socket so that it is created with its final mode, owner and
/// group: the umask gives the mode at bind, and the effective group and
/// user ids are those of `group` and `owner` while it is created (root
/// only). Nothing is changed afterwards by path, so a directory owned by
/// someone else cannot redirect a chown or chmod through a symbolic link,
/// and nobody can connect before the permissions are right.
fn bind_owned(
    path: &Path,
    mode: u32,
    owner: Option<Uid>,
    group: Option<Gid>,
) -> Result<UnixListener, String> {
    use nix::unistd::{setegid, seteuid};
    let name = path.display();
    let as_root = geteuid().is_root();
    let (euid, egid) = (geteuid(), getegid());
    let switch = as_root && (owner.is_some() || group.is_some());
    if switch {
        if let Some(gid) = group {
            setegid(gid).map_err(|e| format!("{name}: setegid: {}", e.desc()))?;
        }
        if let Some(uid) = owner
            && let Err(e) = seteuid(uid)
        {
            let _ = setegid(egid);
            return Err(format!("{name}: seteuid: {}", e.desc()));
        }
    }
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(old);
    if switch {
        let back = seteuid(euid).and_then(|()| setegid(egid));
        if let Err(e) = back {
            return Err(format!(
                "{name}: cannot take back root after bind: {}",
                e.desc()
            ));
        }
    }
    match bound {
        Ok(listener) => Ok(listener),
        Err(e) if switch && e.kind() == io::ErrorKind::PermissionDenied => {
            bind_in_root_directory(path, mode, owner, group).map_err(|why| {
                format!(
                    "cannot listen on {name}: {e} as daemon.user, who must be able to write to its directory ({why})"
                )
            })
        }
        Err(e) => Err(format!("cannot listen on {name}: {e}")),
    }
}

/// The fallback of [`bind_owned`] when the user may not write to the
/// socket's directory: bound as root, then given its owner and group
/// relative to the directory's descriptor without following a symbolic
/// link — only in a directory owned by root, where nobody else can swap
/// the name between the bind and the change.
fn bind_in_root_directory(
    path: &Path,
    mode: u32,
    owner: Option<Uid>,
    group: Option<Gid>,
) -> Result<UnixListener, String> {
    use nix::fcntl::{AtFlags, OFlag};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path.file_name().ok_or("no file name")?;
    let dir = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.desc().to_string())?;
    let st = nix::sys::stat::fstat(&dir).map_err(|e| e.desc().to_string())?;
    if st.st_uid != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root",
            parent.display(),
            st.st_uid
        ));
    }
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| e.to_string())?;
    if let Err(e) = nix::unistd::fchownat(&dir, file, owner, group, AtFlags::AT_SYMLINK_NOFOLLOW) {
        let _ = nix::unistd::unlinkat(&dir, file, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(format!("cannot set the socket's owner: {}", e.desc()));
    }
    Ok(listener)
}

/// The listening socket systemd passed (LISTEN_PID/LISTEN_FDS, fd 3).
fn activated_listener() -> Result<Option<UnixListener>, String> {
    let mut fds = sd_notify::listen_fds().map_err(|e| format!("socket activation: {e}"))?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.len() > 0 {
        log::warn!(
            "socket activation: using fd {fd}; ignoring {} more",
            fds.len()
        );
    }
    let owned = take_fd(fd)?;
    let stream = matches!(getsockopt(&owned, sockopt::SockType), Ok(SockType::Stream));
    let listening = matches!(getsockopt(&owned, sockopt::AcceptConn), Ok(true));
    if !stream || !listening {
        return Err(format!(
            "socket activation: fd {fd} is not a listening stream socket"
        ));
    }
    Ok(Some(UnixListener::from(owned)))
}

fn take_fd(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: LISTEN_PID names this process, so the service manager passed
    // fd `fd` open and for us alone; nothing else in this process uses it.
    // Checking it with F_GETFD first keeps a stale LISTEN_FDS from making
    // us own a closed descriptor.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| format!("socket activation: fd {fd}: {}", e.desc()))?;
    // SAFETY: as above; the descriptor is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------

/// `[daemon] user`'s default, and the user taken when it does not exist.
const DEFAULT_USER: &str = "mailhop";
const FALLBACK_USER: &str = "nobody";

/// The user to switch to when started as root: `[daemon] user` (its
/// default "mailhop", else "nobody"); never root. `None` when not started
/// as root.
fn target_user(daemon: &DaemonConfig) -> Result<Option<User>, String> {
    let lookup = |name: &str| match User::from_name(name) {
        Ok(user) => Ok(user),
        Err(e) => Err(format!(
            "daemon.user: cannot look up {name:?}: {}",
            e.desc()
        )),
    };
    if !geteuid().is_root() {
        if !daemon.user.is_empty()
            && daemon.user != DEFAULT_USER
            && lookup(&daemon.user)?.is_none_or(|u| u.uid != geteuid())
        {
            log::warn!("daemon.user {:?} ignored: not started as root", daemon.user);
        }
        return Ok(None);
    }
    if daemon.user.is_empty() {
        return Err(
            "daemon.user is empty: mailhop does not deliver as root; name an unprivileged user"
                .into(),
        );
    }
    let user = match lookup(&daemon.user)? {
        Some(user) => user,
        None if daemon.user == DEFAULT_USER => match lookup(FALLBACK_USER)? {
            Some(user) => {
                log::warn!(
                    "daemon.user: no user {DEFAULT_USER:?} (conf/mailhop.sysusers creates it); running as {FALLBACK_USER:?}"
                );
                user
            }
            None => {
                return Err(format!(
                    "daemon.user: neither {DEFAULT_USER:?} nor {FALLBACK_USER:?} exists; create the {DEFAULT_USER} user"
                ));
            }
        },
        None => return Err(format!("daemon.user: no such user {:?}", daemon.user)),
    };
    if user.uid.is_root() {
        return Err(format!(
            "daemon.user {:?} is root: mailhop does not deliver as root",
            daemon.user
        ));
    }
    Ok(Some(user))
}

/// setgroups, setgid, setuid — for good — and check that it held.
fn drop_privileges(user: &User) -> Result<(), String> {
    let name = CString::new(user.name.as_bytes()).map_err(|_| "bad user name".to_string())?;
    let groups = getgrouplist(&name, user.gid).unwrap_or_else(|_| vec![user.gid]);
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {}", e.desc()))?;
    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {}", e.desc()))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {}", e.desc()))?;
    let held = getuid() == user.uid
        && geteuid() == user.uid
        && getgid() == user.gid
        && getegid() == user.gid;
    if !held {
        return Err("the user and group ids did not change".into());
    }
    if !user.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("root privileges could be regained".into());
    }
    Ok(())
}

/// DNS when no stub resolver could be made: every lookup fails
/// temporarily, so only IP-literal destinations are delivered.
struct NoResolver;

impl DnsLookup for NoResolver {
    fn mx(&self, _: &str) -> Result<Answer<MxRecord>, DnsError> {
        Err(unavailable())
    }
    fn a(&self, _: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        Err(unavailable())
    }
    fn aaaa(&self, _: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        Err(unavailable())
    }
}

fn unavailable() -> DnsError {
    DnsError::new(DnsErrorKind::Retry, "no DNS resolver available")
}
