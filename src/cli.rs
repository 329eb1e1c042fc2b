//! The `mailhop` command line: `send` (deliver one message now) and `config`
//! (print the defaults, check a file). Parses arguments, builds a delivery
//! request, prints Postfix-style lines or JSON, and maps results to sysexits
//! codes: 0 all sent, 75 some deferred, 69 some bounced, 64 usage, 66
//! message unreadable, 78 configuration error.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::deliver::{Deliverer, Request};
use crate::job::JobResult;
use crate::message::Message;
use crate::nexthop::Protocol;
use crate::recipients::Settled;
use crate::smtp::client::{Envelope, Recipient};
use crate::smtp::command::Notify;

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
    let facts = match message.facts() {
        Ok(facts) => facts,
        Err(e) => {
            let name = args
                .message
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into());
            eprintln!(
                "mailhop: cannot read message {name}: {}",
                crate::transport::strerror(&e)
            );
            return EX_NOINPUT;
        }
    };
    let groups = match group_by_nexthop(&args, &config, protocol) {
        Ok(groups) => groups,
        Err(e) => {
            eprintln!("mailhop: {e}");
            return EX_USAGE;
        }
    };
    let deliverer = Deliverer::new(config);
    let mut settled: Vec<Option<Settled>> = vec![None; args.to.len()];
    let mut anomalies = 0;
    for (nexthop, indexes) in groups {
        let envelope = Envelope {
            sender: args.from.clone(),
            recipients: indexes
                .iter()
                .filter_map(|&i| args.to.get(i))
                .map(|address| Recipient {
                    address: address.clone(),
                    orcpt: None,
                    notify: Notify::default(),
                })
                .collect(),
            envid: None,
            ret: None,
            smtputf8: false,
        };
        let request = Request {
            protocol,
            nexthop: &nexthop,
            envelope,
            message: &message,
            facts,
            arrival: args
                .arrival_time
                .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)),
        };
        let (results, bad) = deliverer.deliver(&request);
        anomalies += bad;
        for (&index, result) in indexes.iter().zip(results) {
            if let Some(slot) = settled.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
    let id = args.id.clone().unwrap_or_else(default_id);
    let result = JobResult::new(id, settled.into_iter().flatten().collect());
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
    if anomalies > 0 || result.recipients.len() != args.to.len() {
        eprintln!("mailhop: internal error: recipient bookkeeping mismatch");
        return EX_SOFTWARE;
    }
    result.exit_code()
}

/// Recipients grouped by next hop: `--nexthop`, else `relayhost` (SMTP),
/// else each recipient's domain.
fn group_by_nexthop(
    args: &SendArgs,
    config: &Config,
    protocol: Protocol,
) -> Result<Vec<(String, Vec<usize>)>, String> {
    let all: Vec<usize> = (0..args.to.len()).collect();
    if let Some(nexthop) = &args.nexthop {
        return Ok(vec![(nexthop.clone(), all)]);
    }
    if protocol == Protocol::Lmtp {
        return Err("LMTP needs --nexthop (e.g. unix:/path or [127.0.0.1]:24)".into());
    }
    if !config.smtp.relayhost.is_empty() {
        return Ok(vec![(config.smtp.relayhost.clone(), all)]);
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, address) in args.to.iter().enumerate() {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("recipient {address:?} has no domain; give --nexthop"))?;
        groups.entry(domain).or_default().push(index);
    }
    Ok(groups.into_iter().collect())
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
