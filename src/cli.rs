//! The `mailhop` command line: `send` (deliver one message now) and `config`
//! (print the defaults, check a file). Parses arguments, builds a delivery
//! request, prints Postfix-style lines or JSON, and maps results to sysexits
//! codes: 0 all sent, 75 some deferred, 69 some bounced, 64 usage, 66
//! message unreadable, 78 configuration error.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::dispatch;
use crate::job::{Job, JobRecipient, MessageRef, TransportKind};
use crate::message::Message;
use crate::nexthop::Protocol;

pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_NOINPUT: i32 = 66;
pub const EX_SOFTWARE: i32 = 70;
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
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Configuration file (TOML); embedded defaults when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Deliver from this process instead of submitting to the daemon.
    #[arg(long)]
    direct: bool,
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
    /// Message file, or '-' (default) for standard input.
    message: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the complete default configuration as TOML.
    Defaults,
    /// Check a configuration file: exit 0, or 78 with the reason.
    Check { file: PathBuf },
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
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                EX_OK
            }
            Err(e) => {
                eprintln!("mailhop: {}: {e}", file.display());
                EX_CONFIG
            }
        },
        Command::Send(args) => send(args),
    }
}

fn send(args: SendArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("mailhop: {}: {e}", path.display());
                return EX_CONFIG;
            }
        },
        None => Config::default(),
    };
    if !args.direct {
        eprintln!("mailhop: submission through the daemon is not available yet; use --direct");
        return EX_USAGE;
    }
    let protocol = if args.lmtp {
        Protocol::Lmtp
    } else {
        Protocol::Smtp
    };
    // Keep a stdin message in a temporary file: it may be read several times.
    let mut _spool = None;
    let message = match args.message.as_deref() {
        Some(path) if path != std::path::Path::new("-") => Message::File(path.to_path_buf()),
        _ => match spool_stdin() {
            Ok(file) => {
                let path = file.path().to_path_buf();
                _spool = Some(file);
                Message::File(path)
            }
            Err(e) => {
                eprintln!("mailhop: cannot read the message from standard input: {e}");
                return EX_NOINPUT;
            }
        },
    };
    if protocol == Protocol::Lmtp && args.nexthop.is_none() {
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
    let id = args.id.clone().unwrap_or_else(default_id);
    let job = Job {
        id: id.clone(),
        transport: if args.lmtp {
            TransportKind::Lmtp
        } else {
            TransportKind::Smtp
        },
        nexthop: args.nexthop.clone(),
        sender: args.from.clone(),
        recipients: args
            .to
            .iter()
            .map(|address| JobRecipient {
                address: address.clone(),
                orcpt: None,
                notify: None,
            })
            .collect(),
        message: MessageRef::Path {
            path: match &message {
                Message::File(path) => path.display().to_string(),
                Message::Inline(_) => String::new(),
            },
        },
        envid: None,
        ret: None,
        smtputf8: false,
        arrival_time: args.arrival_time,
        cache: None,
    };
    let deliverer = Deliverer::new(config);
    let result = match dispatch::execute(&deliverer, &job, false) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("mailhop: {}", e.error);
            return EX_NOINPUT;
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
