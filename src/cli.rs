//! The `mailhop` command line: `send` (deliver one message, directly or
//! through the daemon), `daemon` (run the job service), `status` (the
//! daemon's counters and destinations, once or redrawn every second),
//! `tlsrpt-flush` (have the daemon write and send its TLS reports now) and
//! `config` (print the defaults, check a file).
//! Parses arguments, builds a delivery request, prints Postfix-style lines
//! or JSON, and maps results to sysexits codes: 0 all sent, 75 some
//! deferred (or the daemon unreachable for `send`), 69 some bounced (or the
//! daemon unreachable for `status` and `tlsrpt-flush`), 64 usage, 65 stdin not UTF-8 for the
//! daemon, 66 message unreadable, 77 permission denied by the daemon, 78
//! configuration error.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::daemon;
use crate::deliver::Deliverer;
use crate::dispatch;
use crate::job::{Job, JobError, JobErrorKind, JobRecipient, MessageRef, TransportKind};
use crate::pool::Answer;
use crate::server::{self, ClientError};
use crate::stats::StatusReport;
use crate::status_view;
use crate::tlsrpt::FlushSummary;
use crate::transport::strerror;

pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOINPUT: i32 = 66;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;
pub const EX_CONFIG: i32 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "mailhop",
    version,
    about = "SMTP/LMTP outbound delivery agent with Postfix smtp(8) semantics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Deliver one message and print one result line per recipient.
    Send(SendArgs),
    /// Run the job service on a UNIX socket (always in the foreground).
    Daemon(DaemonArgs),
    /// Print the running daemon's counters and destinations.
    Status(StatusArgs),
    /// Make the running daemon write (and, with [tls_rpt] submit, send)
    /// the TLS reports of everything counted so far, today included.
    TlsrptFlush(FlushArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The Redis Streams feed ([feed], docs/scale-out.md).
    #[command(subcommand)]
    Feed(FeedCommand),
}

#[derive(Subcommand, Debug)]
enum FeedCommand {
    /// Stream length, the group's lag, pending entries per consumer, claims.
    Status(FeedStatusArgs),
}

#[derive(Args, Debug)]
struct FeedStatusArgs {
    /// Configuration file (TOML) with the [feed] table; defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DaemonArgs {
    /// Configuration file (TOML); embedded defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Socket path; default: [daemon] socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Accepted for compatibility: the daemon always runs in the foreground.
    #[arg(long)]
    foreground: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Configuration file (TOML) naming the socket; defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The daemon's socket; default: [daemon] socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the daemon's status line as it answers it (JSON).
    #[arg(long)]
    json: bool,
    /// Redraw every second until interrupted (the screen is cleared
    /// first when standard output is a terminal).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many redraws.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

#[derive(Args, Debug)]
struct FlushArgs {
    /// Configuration file (TOML) naming the socket; defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The daemon's socket; default: [daemon] socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the daemon's answer line as it answers it (JSON).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Configuration file (TOML); embedded defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Deliver from this process instead of submitting to the daemon.
    #[arg(long)]
    direct: bool,
    /// The daemon's socket; default: [daemon] socket.
    #[arg(long, conflicts_with = "direct")]
    socket: Option<PathBuf>,
    /// Speak LMTP instead of SMTP.
    #[arg(long)]
    lmtp: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Next-hop destination(s): `[127.0.0.1]:2525`, `unix:/path` (LMTP), a list...
    #[arg(long)]
    nexthop: Option<String>,
    /// Envelope sender; '' is the null sender.
    #[arg(long = "from")]
    from: String,
    /// Envelope recipient (repeatable).
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// Job id shown in the result.
    #[arg(long)]
    id: Option<String>,
    /// When the message entered the mail system, in UNIX seconds (default:
    /// now). Old enough messages may retry in plaintext after a failed
    /// opportunistic TLS handshake ([tls] plaintext_retry_after).
    #[arg(long = "arrival-time", value_name = "UNIX_SECONDS")]
    arrival_time: Option<u64>,
    /// RFC 8689 REQUIRETLS: deliver only over TLS to a server authenticated
    /// by DANE, MTA-STS or a verify/secure policy that announces
    /// REQUIRETLS; otherwise the next MX, then 5.7.30 / 5.7.10.
    #[arg(long)]
    requiretls: bool,
    /// RFC 6531 SMTPUTF8 requested (the job's `smtputf8`; Postfix's
    /// `sendmail -SMTPUTF8`): sent to servers that offer it; with UTF-8 in
    /// the envelope or the header, a server without it gets the mail only
    /// when the UTF-8 is in domains alone (sent as A-labels), else 5.6.7.
    #[arg(long)]
    smtputf8: bool,
    /// Message file, or '-' (default) for standard input.
    message: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the complete default configuration as TOML.
    Defaults,
    /// Check a configuration file: exit 0, or 78 with the reason.
    Check { file: PathBuf },
    /// Print the manual page mailhop.toml(5) (roff).
    Man,
}

/// Runs the command line; returns the process exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { EX_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", Config::defaults_toml());
            EX_OK
        }
        Command::Config(ConfigCommand::Man) => {
            print!("{}", Config::man_page());
            EX_OK
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(config) => {
                // What only the TLS layer can judge (fingerprint lengths,
                // protocol ranges), as delivery would find it.
                for (index, entry) in config.tls.policy.iter().enumerate() {
                    if let Err(e) =
                        crate::tls_policy::policy_for(&config.tls, &entry.destination, false)
                    {
                        eprintln!("mailhop: {}: tls.policy[{index}]: {e}", file.display());
                        return EX_CONFIG;
                    }
                }
                // What the feed refuses at start: on a Redis Cluster, a
                // stream's keys on two slots.
                if config.feed.enabled
                    && config.feed.cluster
                    && let Err(e) = crate::feed::slot::check_streams(&config.feed)
                {
                    eprintln!("mailhop: {}: feed: {e}", file.display());
                    return EX_CONFIG;
                }
                println!("{}: ok", file.display());
                EX_OK
            }
            Err(e) => {
                eprintln!("mailhop: {}: {e}", file.display());
                EX_CONFIG
            }
        },
        Command::Send(args) => send(args),
        Command::Daemon(args) => {
            let _ = args.foreground;
            daemon::run(&daemon::Options {
                config: args.config,
                socket: args.socket,
            })
        }
        Command::Status(args) => status(args),
        Command::TlsrptFlush(args) => tlsrpt_flush(args),
        Command::Feed(FeedCommand::Status(args)) => feed_status(&args),
    }
}

/// The configuration at `path` (its error printed), or the embedded
/// defaults without one.
fn load_or_default(path: Option<&std::path::Path>) -> Result<Config, ()> {
    match path {
        Some(path) => Config::load(path).map_err(|e| {
            eprintln!("mailhop: {}: {e}", path.display());
        }),
        None => Ok(Config::default()),
    }
}

/// `mailhop feed status`: asks Redis, not the daemon.
fn feed_status(args: &FeedStatusArgs) -> i32 {
    let Ok(config) = load_or_default(args.config.as_deref()) else {
        return EX_CONFIG;
    };
    match crate::feed::status::render(&config.feed) {
        Ok(text) => {
            let mut out = io::stdout().lock();
            match write!(out, "{text}").and_then(|()| out.flush()) {
                Ok(()) => EX_OK,
                Err(_) => EX_SOFTWARE,
            }
        }
        Err(e) => {
            eprintln!("mailhop: feed status: {e}");
            EX_UNAVAILABLE
        }
    }
}

/// `mailhop tlsrpt-flush`: one request, its answer printed (a line for
/// people, or the daemon's JSON); exit codes as `status`'s.
fn tlsrpt_flush(args: FlushArgs) -> i32 {
    let socket = match socket_path(args.socket, args.config.as_deref()) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    let line = match server::tlsrpt_flush_request(&socket) {
        Ok(Ok(line)) => line,
        Ok(Err(refused)) => {
            eprintln!("mailhop: {}", refused.error);
            return error_code(&refused);
        }
        Err(ClientError::Unavailable(e)) => {
            eprintln!("mailhop: {e}");
            return EX_UNAVAILABLE;
        }
        Err(ClientError::Protocol(e)) => {
            eprintln!("mailhop: {e}");
            return EX_SOFTWARE;
        }
    };
    let text = if args.json {
        format!("{line}\n")
    } else {
        match serde_json::from_str::<FlushSummary>(&line) {
            Ok(summary) => {
                let mut text = format!("tlsrpt-flush: {}\n", summary.text());
                for file in &summary.files {
                    text.push_str(&format!("written: {file}\n"));
                }
                text
            }
            Err(e) => {
                eprintln!("mailhop: unreadable tlsrpt-flush answer: {e}");
                return EX_SOFTWARE;
            }
        }
    };
    let mut out = io::stdout().lock();
    match write!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => EX_OK,
        Err(_) => EX_SOFTWARE,
    }
}

fn status(args: StatusArgs) -> i32 {
    let socket = match socket_path(args.socket, args.config.as_deref()) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    let terminal = io::stdout().is_terminal();
    let mut drawn: u64 = 0;
    loop {
        let text = match status_text(&socket, args.json) {
            Ok(text) => text,
            Err(code) => return code,
        };
        let mut out = io::stdout().lock();
        let written = if args.watch && terminal {
            // Home, clear the screen, then the new view.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else if args.watch && drawn > 0 && !args.json {
            write!(out, "\n{text}")
        } else {
            write!(out, "{text}")
        };
        if written.and_then(|()| out.flush()).is_err() {
            return EX_SOFTWARE;
        }
        drawn += 1;
        if !args.watch || args.count.is_some_and(|count| drawn >= count) {
            return EX_OK;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// One status view: the daemon's JSON line (`json`), else the text of
/// [`status_view::render`]; the exit code when the daemon cannot answer.
fn status_text(socket: &Path, json: bool) -> Result<String, i32> {
    match server::status(socket) {
        Ok(Ok(line)) if json => Ok(format!("{line}\n")),
        Ok(Ok(line)) => match serde_json::from_str::<StatusReport>(&line) {
            Ok(report) => Ok(status_view::render(&report)),
            Err(e) => {
                eprintln!("mailhop: unreadable status answer: {e}");
                Err(EX_SOFTWARE)
            }
        },
        Ok(Err(refused)) => {
            eprintln!("mailhop: {}", refused.error);
            Err(error_code(&refused))
        }
        Err(ClientError::Unavailable(e)) => {
            eprintln!("mailhop: {e}");
            Err(EX_UNAVAILABLE)
        }
        Err(ClientError::Protocol(e)) => {
            eprintln!("mailhop: {e}");
            Err(EX_SOFTWARE)
        }
    }
}

/// `--socket`, else `[daemon] socket` of `--config` (or the default).
fn socket_path(socket: Option<PathBuf>, config: Option<&std::path::Path>) -> Result<PathBuf, i32> {
    if let Some(socket) = socket {
        return Ok(socket);
    }
    load_or_default(config)
        .map(|config| PathBuf::from(config.daemon.socket))
        .map_err(|()| EX_CONFIG)
}

/// The exit code for an error answer of the daemon: 75 for a retryable
/// one (temporary trouble on the daemon's side).
fn error_code(error: &JobError) -> i32 {
    match error.kind() {
        JobErrorKind::Temporary => EX_TEMPFAIL,
        JobErrorKind::PermissionDenied => EX_NOPERM,
        JobErrorKind::UnreadableMessage => EX_NOINPUT,
        JobErrorKind::InvalidJob => EX_DATAERR,
        JobErrorKind::Other => EX_SOFTWARE,
    }
}

fn send(args: SendArgs) -> i32 {
    let Ok(config) = load_or_default(args.config.as_deref()) else {
        return EX_CONFIG;
    };
    if args.lmtp && args.nexthop.is_none() {
        eprintln!("mailhop: LMTP needs --nexthop (e.g. unix:/path or [127.0.0.1]:24)");
        return EX_USAGE;
    }
    if args.nexthop.is_none()
        && config.smtp.relayhost.is_empty()
        && let Some(bad) = args.to.iter().find(|a| !a.contains('@'))
    {
        eprintln!("mailhop: recipient {bad:?} has no domain; give --nexthop");
        return EX_USAGE;
    }
    // Direct: keep a stdin message in a temporary file (it may be read
    // several times). Daemon: the file's canonical path, or stdin inline.
    let mut _spool = None;
    let mut passed = None;
    let message = if args.direct {
        match args.message.as_deref() {
            Some(path) if path != Path::new("-") => MessageRef::Path {
                path: path.display().to_string(),
            },
            _ => match spool_stdin() {
                Ok(file) => {
                    let path = file.path().display().to_string();
                    _spool = Some(file);
                    MessageRef::Path { path }
                }
                Err(e) => {
                    eprintln!("mailhop: cannot read the message from standard input: {e}");
                    return EX_NOINPUT;
                }
            },
        }
    } else {
        match daemon_message(args.message.as_deref()) {
            Ok((message, file)) => {
                passed = file;
                message
            }
            Err(code) => return code,
        }
    };
    let id = args.id.clone().unwrap_or_else(default_id);
    let job = Job {
        transport: if args.lmtp {
            TransportKind::Lmtp
        } else {
            TransportKind::Smtp
        },
        nexthop: args.nexthop.clone(),
        arrival_time: args.arrival_time,
        requiretls: args.requiretls,
        smtputf8: args.smtputf8,
        ..Job::new(
            id.clone(),
            args.from.clone(),
            args.to.iter().map(JobRecipient::new),
            message,
        )
    };
    let result = if args.direct {
        let sasl = match crate::deliver::load_sasl(&config.sasl, nix::unistd::geteuid().as_raw()) {
            Ok(sasl) => sasl.map(std::sync::Arc::new),
            Err(e) => {
                eprintln!("mailhop: {e}");
                return EX_CONFIG;
            }
        };
        let deliverer = Deliverer::new(config.clone()).with_sasl(sasl);
        // TLS-RPT: this process will not see the day end, so it writes the
        // report of what it counted when it is done.
        let tlsrpt =
            crate::tlsrpt::TlsRpt::from_config(&config, std::sync::Arc::clone(deliverer.dns()));
        let deliverer = deliverer.with_tlsrpt(tlsrpt.clone());
        let executed = dispatch::execute(&deliverer, &job, false);
        if let Some(tlsrpt) = &tlsrpt {
            tlsrpt.flush(std::time::SystemTime::now(), true);
        }
        match executed {
            Ok(result) => result,
            Err(e) => {
                eprintln!("mailhop: {}", e.error);
                return error_code(&e);
            }
        }
    } else {
        let socket = args
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(&config.daemon.socket));
        match server::submit_with_fd(&socket, &job, passed.as_ref()) {
            Ok(Answer::Done(mut result)) => {
                result.log = None;
                result
            }
            Ok(Answer::Failed(e)) => {
                eprintln!("mailhop: {}", e.error);
                return error_code(&e);
            }
            Err(ClientError::Unavailable(e)) => {
                eprintln!(
                    "mailhop: {e} (is `mailhop daemon` running? --direct delivers without it)"
                );
                return EX_TEMPFAIL;
            }
            Err(ClientError::Protocol(e)) => {
                eprintln!("mailhop: {e}");
                return EX_SOFTWARE;
            }
        }
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_string(&result)
            .map_err(io::Error::other)
            .and_then(|json| writeln!(out, "{json}"))
    } else {
        result
            .text_lines()
            .iter()
            .try_for_each(|line| writeln!(out, "{line}"))
    };
    if written.is_err() {
        return EX_SOFTWARE;
    }
    if result.recipients.len() != args.to.len() {
        eprintln!("mailhop: internal error: recipient bookkeeping mismatch");
        return EX_SOFTWARE;
    }
    result.exit_code()
}

/// The message of a job for the daemon: a file passed as an open
/// descriptor (`{"fd":true}`; the daemon needs no access to its path), or
/// standard input inline (UTF-8 only: the job line is JSON).
fn daemon_message(arg: Option<&Path>) -> Result<(MessageRef, Option<std::fs::File>), i32> {
    use std::os::unix::fs::OpenOptionsExt;
    match arg {
        Some(path) if path != Path::new("-") => match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(file) => Ok((MessageRef::Fd { fd: true }, Some(file))),
            Err(e) => {
                eprintln!(
                    "mailhop: cannot read message {}: {}",
                    path.display(),
                    strerror(&e)
                );
                Err(EX_NOINPUT)
            }
        },
        _ => {
            let mut data = Vec::new();
            if let Err(e) = io::stdin().lock().read_to_end(&mut data) {
                eprintln!("mailhop: cannot read the message from standard input: {e}");
                return Err(EX_NOINPUT);
            }
            match String::from_utf8(data) {
                Ok(data) => Ok((MessageRef::Data { data }, None)),
                Err(_) => {
                    eprintln!(
                        "mailhop: the message on standard input is not UTF-8; give it as a file to submit it through the daemon, or use --direct"
                    );
                    Err(EX_DATAERR)
                }
            }
        }
    }
}

fn spool_stdin() -> io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    io::copy(&mut io::stdin().lock(), &mut file)?;
    file.flush()?;
    Ok(file)
}

fn default_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:X}{:X}", nanos & 0xffff_ffff_ffff, std::process::id())
}
