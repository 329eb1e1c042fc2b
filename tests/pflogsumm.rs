//! Log compatibility: mailhop's per-recipient log lines must be counted by
//! pflogsumm(1), the usual Postfix log summarizer, exactly like Postfix's
//! own `postfix/smtp[PID]: QUEUEID: to=<...>, relay=..., delay=...,
//! delays=..., dsn=..., status=... (...)` lines.
//!
//! pflogsumm 1.1.5 takes a line when it has a syslog timestamp and host
//! (`^(...) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) \S+ (.+)$`, or RFC 3339),
//! then a program name matching
//! `^(?:postfix|$syslogName)(?:/(?:smtps|submission))?/([^\[:]*).*?: ([^:\s]+)`
//! (service, then queue ID; `--syslog-name=mailhop` makes `mailhop/smtp[PID]:`
//! match), and counts it by
//! `to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]+), (?:conn_use=[^,]+, )?delay=([^,]+), (?:delays=[^,]+, )?(?:dsn=[^,]+, )?status=(\S+)(.*)$`.
//!
//! Real deliveries by `mailhop send --direct` (RUST_LOG=info logs the lines
//! on stderr) to smtp-sink peers: 3 recipients sent in one job, 1 bounced
//! (550 5.1.1 at RCPT), 2 deferred in one job (connection refused).
//!
//! When smtp-sink or pflogsumm is missing, a test prints a loud SKIPPED line
//! and passes, or panics when `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ClosedPort, Invocation, Listen, Sink, Workdir, is_root, require_tool, skip_even_in_ci,
};

const SENT_ID: &str = "4F2A1C0001";
const BOUNCE_ID: &str = "4F2A1C0002";
const DEFER_ID: &str = "4F2A1C0003";
const SENT: [&str; 3] = ["alice@sent.test", "bob@sent.test", "carol@sent.test"];
const BOUNCED: &str = "nobody@bounce.test";
const DEFERRED: [&str; 2] = ["dave@defer.test", "erin@defer.test"];

/// The three peers: a sink that takes everything, one that rejects every
/// recipient with 550 5.1.1, and a port that refuses connections.
struct Peers {
    good: Sink,
    bad: Sink,
    closed: ClosedPort,
}

impl Peers {
    fn start() -> Option<Self> {
        let good = Sink::start(Listen::Tcp, &[])?;
        let bad = Sink::start(Listen::Tcp, &["-B", "550 5.1.1 No such user", "-f", "rcpt"])?;
        Some(Self {
            good,
            bad,
            closed: ClosedPort::new(),
        })
    }

    /// The arguments of the three `mailhop send --direct` runs.
    fn jobs(&self, config: &Path, message: &Path) -> Vec<Vec<String>> {
        let job = |id: &str, nexthop: String, rcpts: &[&str]| {
            let mut args: Vec<String> = [
                "send",
                "--config",
                &config.display().to_string(),
                "--direct",
                "--nexthop",
                &nexthop,
                "--from",
                "sender@origin.test",
                "--id",
                id,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for rcpt in rcpts {
                args.push("--to".into());
                args.push(rcpt.to_string());
            }
            args.push(message.display().to_string());
            args
        };
        vec![
            job(SENT_ID, self.good.nexthop(), &SENT),
            job(BOUNCE_ID, self.bad.nexthop(), &[BOUNCED]),
            job(DEFER_ID, self.closed.nexthop(), &DEFERRED),
        ]
    }
}

/// Short timeouts, so that a stuck peer cannot stall the test.
const CONFIG: &str = "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"5s\"\n\
    mail_timeout = \"5s\"\nrcpt_timeout = \"5s\"\ndata_init_timeout = \"5s\"\n\
    data_xfer_timeout = \"5s\"\ndata_done_timeout = \"5s\"\nquit_timeout = \"2s\"\n";

/// Runs `mailhop` with `args`, logging at info to stderr in the syslog
/// shape (JOURNAL_STREAM unset), and returns (exit code, stdout, stderr).
fn mailhop(work: &Workdir, args: &[String], n: usize) -> (i32, String, String) {
    let run = Invocation::new(args)
        .env_remove("JOURNAL_STREAM")
        .suffix(&n.to_string())
        .run(work);
    (run.code, run.stdout, run.stderr)
}

/// Waits for `child`, killing it after `limit`; returns its exit code.
fn wait_bounded(child: &mut std::process::Child, limit: Duration, what: &str) -> i32 {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(status) => return status.code().unwrap_or(-1),
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// pflogsumm's report on `log`.
fn pflogsumm(pflogsumm: &Path, log: &Path) -> String {
    let output = Command::new(pflogsumm)
        .args(["--syslog-name=mailhop", "-e"])
        .arg(log)
        .stdin(Stdio::null())
        .output()
        .expect("run pflogsumm");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pflogsumm failed: {output:?}\n{stdout}"
    );
    stdout
}

/// The lines of one report section: after its title and dashes, up to the
/// next blank line.
fn section<'a>(report: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = report.lines();
    for line in lines.by_ref() {
        if line.trim() == title {
            break;
        }
    }
    lines
        .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with('-'))
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// The "Grand Totals" message counts, by label (`delivered`, `deferred`,
/// `deferrals`, `bounced`, ...).
fn grand_totals(report: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let mut lines = report.lines().skip_while(|l| l.trim() != "messages");
    lines.next();
    for line in lines {
        if line.contains("Per-Hour") {
            break;
        }
        // "      1   deferred  (2  deferrals)"
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let [count, label, rest @ ..] = tokens.as_slice()
            && let Ok(count) = count.parse::<u64>()
        {
            totals.insert(label.to_string(), count);
            if let [inner, "deferrals)"] = rest
                && let Some(n) = inner.strip_prefix('(').and_then(|n| n.parse().ok())
            {
                totals.insert("deferrals".into(), n);
            }
        }
    }
    totals
}

/// Checks pflogsumm's report on the log of the three jobs.
fn check_report(report: &str) {
    let totals = grand_totals(report);
    let count = |label: &str| {
        *totals
            .get(label)
            .unwrap_or_else(|| panic!("no {label:?} in Grand Totals of:\n{report}"))
    };
    assert_eq!(count("delivered"), 3, "delivered, in:\n{report}");
    // pflogsumm counts deferred messages (queue IDs) and deferrals
    // (recipient lines): one job with two deferred recipients.
    assert_eq!(count("deferred"), 1, "deferred messages, in:\n{report}");
    assert_eq!(count("deferrals"), 2, "deferrals, in:\n{report}");
    assert_eq!(count("bounced"), 1, "bounced, in:\n{report}");
    assert_eq!(count("recipients"), 3, "recipients, in:\n{report}");

    // Per destination domain: sent count and deferrals.
    let domains: BTreeMap<String, (u64, u64)> =
        section(report, "Host/Domain Summary: Message Delivery")
            .iter()
            .filter_map(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                Some((
                    t.last()?.to_string(),
                    (t.first()?.parse().ok()?, t.get(2)?.parse().ok()?),
                ))
            })
            .collect();
    assert_eq!(domains.get("sent.test"), Some(&(3, 0)), "{report}");
    assert_eq!(domains.get("defer.test"), Some(&(0, 2)), "{report}");

    let recipients = section(report, "Recipients by message count").join("\n");
    for rcpt in SENT {
        assert!(recipients.contains(rcpt), "{rcpt} not counted:\n{report}");
    }

    let deferrals = section(report, "message deferral detail").join("\n");
    assert!(deferrals.contains("smtp (total: 2)"), "{report}");
    assert!(deferrals.contains("Connection refused"), "{report}");

    let bounces = section(report, "message bounce detail (by relay)").join("\n");
    assert!(bounces.contains("(total: 1)"), "{report}");
    assert!(bounces.contains("5.1.1 No such user"), "{report}");

    // -e: the delivered recipients under mailhop's job ID, its queue ID.
    let detail = section(report, "Message detail").join("\n");
    assert!(detail.contains(SENT_ID), "{report}");
    for rcpt in SENT {
        assert!(
            detail.contains(rcpt),
            "{rcpt} not in message detail:\n{report}"
        );
    }
}

#[test]
fn pflogsumm_counts_mailhop_delivery_log() {
    let Some(summarizer) = require_tool("pflogsumm", "pflogsumm") else {
        return;
    };
    let Some(peers) = Peers::start() else {
        return;
    };
    let work = Workdir::new();
    let config = work.file("mailhop.toml", CONFIG.as_bytes());
    let message = work.file("message", common::SMALL_MESSAGE);

    let mut log = String::new();
    let mut results = Vec::new();
    for (n, args) in peers.jobs(&config, &message).iter().enumerate() {
        let (code, stdout, stderr) = mailhop(&work, args, n);
        results.push((code, stdout.clone()));
        for line in stderr.lines().filter(|l| l.contains("mailhop/smtp[")) {
            log.push_str(line);
            log.push('\n');
        }
    }
    // The deliveries went as intended (sysexits: 0 sent, 69 bounced, 75
    // deferred).
    let codes: Vec<i32> = results.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, [0, 69, 75], "exit codes; results: {results:#?}");
    assert_eq!(log.lines().count(), 6, "one log line per recipient:\n{log}");
    let path = work.file("maillog", log.as_bytes());

    let report = pflogsumm(&summarizer, &path);
    check_report(&report);
}

/// The same deliveries, logged the way `mailhop.service` logs them: stderr
/// connected to systemd-journald (JOURNAL_STREAM set), read back with
/// `journalctl -o short`, which prints `host IDENTIFIER[PID]: MESSAGE`.
///
/// Runs a private systemd-journald in a private mount namespace (tmpfs over
/// /run/systemd, /run/log and /var/log/journal: the host's journal is never
/// touched), so it needs root, unshare(1), systemd-journald, systemd-cat
/// and journalctl.
#[test]
fn pflogsumm_counts_mailhop_journal_log() {
    let Some(summarizer) = require_tool("pflogsumm", "pflogsumm") else {
        return;
    };
    let journald = [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    let Some(journald) = journald else {
        skip_even_in_ci("systemd-journald not installed");
        return;
    };
    let (Some(unshare), Some(cat), Some(journalctl)) = (
        require_tool("unshare", "util-linux"),
        require_tool("systemd-cat", "systemd"),
        require_tool("journalctl", "systemd"),
    ) else {
        return;
    };
    if !is_root() {
        skip_even_in_ci("the journald log test needs root (private mount namespace)");
        return;
    }
    let Some(peers) = Peers::start() else {
        return;
    };
    let work = Workdir::new();
    let config = work.file("mailhop.toml", CONFIG.as_bytes());
    let message = work.file("message", common::SMALL_MESSAGE);
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut script = format!(
        "set -e\n\
         for d in /run/systemd /run/log /var/log/journal; do\n\
         mkdir -p $d; mount -t tmpfs tmpfs $d; done\n\
         mkdir -p /run/systemd/journal\n\
         {journald} >{dir}/journald.log 2>&1 &\n\
         jpid=$!\n\
         trap 'kill $jpid' EXIT\n\
         for i in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done\n",
        journald = quote(&journald.display().to_string()),
        dir = quote(&work.path().display().to_string()),
    );
    for args in peers.jobs(&config, &message) {
        // As under systemd: stderr is a journal stream, JOURNAL_STREAM names
        // it, and the identifier is the executable's name.
        let argv: Vec<String> = args.iter().map(|a| quote(a)).collect();
        script.push_str(&format!(
            "{cat} -t mailhop env RUST_LOG=info sh -c \
             'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); \
             exec \"$0\" \"$@\" >/dev/null' {bin} {args} || true\n",
            cat = quote(&cat.display().to_string()),
            bin = quote(env!("CARGO_BIN_EXE_mailhop")),
            args = argv.join(" "),
        ));
    }
    script.push_str(&format!(
        "{jc} --sync 2>/dev/null || sleep 1\n\
         {jc} -o short --no-pager > {dir}/maillog\n",
        jc = quote(&journalctl.display().to_string()),
        dir = quote(&work.path().display().to_string()),
    ));
    let script_path = work.file("journal.sh", script.as_bytes());
    let mut child = Command::new(unshare)
        .args(["-m", "--propagation", "private", "sh"])
        .arg(&script_path)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn unshare");
    let code = wait_bounded(&mut child, Duration::from_secs(90), "the journald script");
    assert_eq!(code, 0, "journald script failed");
    let log = work.path().join("maillog");
    let text = fs::read_to_string(&log).expect("journalctl output");
    assert_eq!(
        text.lines().filter(|l| l.contains(", delay=")).count(),
        6,
        "six recipient lines in the journal:\n{text}"
    );
    check_report(&pflogsumm(&summarizer, &log));
}
