//! A private Postfix instance per test as the MTA *in front of* mailhop
//! (issue 15): mail injected into its smtpd is queued by Postfix and handed
//! to mailhop's LMTP ingress by Postfix's own lmtp(8) client, which logs
//! mailhop's per-recipient verdicts as `status=sent|deferred|bounced`.
//!
//! | what | how |
//! |---|---|
//! | injection | smtpd on `127.0.0.1:`[`PostfixFront::smtpd_port`], mail from 127.0.0.0/8 to any domain accepted (`relay_domains = static:all`); [`PostfixFront::inject`] is a tiny SMTP client that returns the queue id |
//! | outbound | the lines of docs/behind-postfix.md: a master.cf service `mailhop` (lmtp(8), not chrooted, `syslog_name=postfix/mailhop`, `lmtp_send_xforward_command=yes`, so mailhop learns the queue id from XFORWARD IDENT) and `default_transport = relay_transport = mailhop:unix:SOCKET` (the path the test gives: mailhop's ingress), with the page's concurrency and recipient limits |
//! | bounces | `transport_maps`: the sender domain [`SENDER_DOMAIN`] goes to an smtp-sink of the harness that dumps every message ([`PostfixFront::bounces`]), so a non-delivery notification Postfix generates is logged, delivered and readable |
//! | retries | `minimal_backoff_time = queue_run_delay = 1h`: a deferred message stays in the deferred queue until the test flushes it ([`PostfixFront::flush`]) |
//! | time limits | `lmtp_data_done_timeout = 60s` (not 600 s): a hung ingress cannot hold a test for ten minutes |
//!
//! No chroot, no syslog: `maillog_file` in the instance directory, which
//! the waits read ([`PostfixFront::wait_line`], [`PostfixFront::wait_status`],
//! [`PostfixFront::wait_bounce`]); the queue is read with `postqueue -j`
//! ([`PostfixFront::queue`]) and in the spool directories
//! ([`PostfixFront::queue_of`]).
//!
//! Contract: [`PostfixFront::start`] returns a running instance whose master
//! itself listens on the smtpd port (seen in /proc, never by connecting),
//! or `None` after a loud SKIPPED line when Postfix or smtp-sink cannot be
//! run here (a panic under `CI=true`, see [`super::postfix::require_postfix`]),
//! or panics (with `postfix start`'s output and the maillog) when the
//! instance does not start within [`START_ATTEMPTS`] attempts on fresh ports.
//! Every wait is bounded by [`FRONT_LOG_LIMIT`] and panics with the maillog.
//! The guard stops the instance on drop (`postfix stop`, a bounded wait,
//! then SIGKILL of its process group), then its bounce sink, and removes
//! its directory. Instances share nothing, so tests run them in parallel.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;
use super::postfix::{
    START_ATTEMPTS, backdate_config, postfix_command, postfix_ids, read_master_pid, read_reply,
    require_postfix, split_line, stop_instance, wait_listening,
};
use super::sink::{Listen, Sink};

/// Longest wait for a maillog line (mailhop's verdict included: a
/// blackholed MX costs a connect timeout first).
pub const FRONT_LOG_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for one reply of the injection smtpd.
const INJECT_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// The sender domain whose mail (bounces) Postfix delivers to the bounce
/// sink; senders of injected mail use it.
pub const SENDER_DOMAIN: &str = "sender.test";
/// The program name of Postfix's lmtp(8) delivering to mailhop in the
/// maillog: the `mailhop` service's `syslog_name` with the program's own
/// name appended, as Postfix 3 logs it.
pub const DELIVERY_PROGRAM: &str = "postfix/mailhop/lmtp";
/// `myhostname` of the instance (Postfix names the UNIX-socket peer after
/// it: `relay=front.test[/path/lmtp.sock]`).
pub const FRONT_HOSTNAME: &str = "front.test";

/// uid of the `postfix` user (Postfix's lmtp client connects as it: the
/// ingress socket must allow it).
pub fn postfix_uid() -> Option<u32> {
    postfix_ids().map(|(uid, _)| uid.as_raw())
}

/// A running private Postfix in front of an LMTP socket; stopped on drop.
pub struct PostfixFront {
    dir: tempfile::TempDir,
    binary: PathBuf,
    master_pid: u32,
    /// The injection smtpd's port on 127.0.0.1.
    pub smtpd_port: u16,
    /// The LMTP socket Postfix delivers to.
    pub lmtp_socket: PathBuf,
    bounce_sink: Sink,
}

impl PostfixFront {
    /// Starts an instance delivering every recipient with
    /// `lmtp:unix:{lmtp_socket}` (which need not exist yet). `None` when
    /// Postfix or smtp-sink is unavailable.
    pub fn start(lmtp_socket: &Path) -> Option<PostfixFront> {
        let binary = require_postfix()?;
        let (uid, gid) = postfix_ids()?;
        let bounce_sink = Sink::start(Listen::Tcp, &["-d", "{dir}/bounces/%M."])?;
        let dir = tempfile::Builder::new()
            .prefix("mailhop-pffront-")
            .tempdir_in("/tmp")
            .expect("create the Postfix instance directory");
        let base = dir.path().to_path_buf();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod instance");
        for sub in ["etc", "spool", "data"] {
            fs::create_dir(base.join(sub)).expect("create an instance subdirectory");
            fs::set_permissions(base.join(sub), fs::Permissions::from_mode(0o755))
                .expect("chmod an instance subdirectory");
        }
        nix::unistd::chown(&base.join("data"), Some(uid), Some(gid))
            .expect("chown the data directory to postfix");
        fs::write(base.join("etc/main.cf"), main_cf(&base, lmtp_socket)).expect("write main.cf");
        fs::write(
            base.join("etc/transport"),
            format!("{SENDER_DOMAIN} smtp:{}\n", bounce_sink.nexthop()),
        )
        .expect("write the transport map");

        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            fs::write(base.join("etc/master.cf"), master_cf(port)).expect("write master.cf");
            backdate_config(&base.join("etc"));
            let output = postfix_command(&binary, &base, "start");
            let master = read_master_pid(&base);
            let ready = master.is_some_and(|pid| {
                wait_listening(pid, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            });
            if let (true, Some(master_pid)) = (ready, master) {
                return Some(PostfixFront {
                    dir,
                    binary,
                    master_pid,
                    smtpd_port: port,
                    lmtp_socket: lmtp_socket.to_path_buf(),
                    bounce_sink,
                });
            }
            let log = fs::read_to_string(base.join("maillog")).unwrap_or_default();
            failures.push(format!(
                "attempt {attempt}, port {port}: postfix start said {output:?}; maillog:\n{log}"
            ));
            if let Some(pid) = master {
                stop_instance(&binary, &base, pid);
            }
        }
        panic!("private Postfix (front) did not start: {failures:#?}");
    }

    /// The instance's directory (etc/, spool/, data/, maillog).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The maillog so far.
    pub fn maillog(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("maillog")).unwrap_or_default())
            .into_owned()
    }

    /// Every maillog message (without the syslog prefix) of `program`
    /// (`postfix/lmtp`, `postfix/bounce`, ...), in order.
    pub fn lines_of(&self, program: &str) -> Vec<String> {
        self.maillog()
            .lines()
            .filter_map(|line| {
                let (p, _, message) = split_line(line)?;
                (p == program).then(|| message.to_string())
            })
            .collect()
    }

    /// Waits (bounded by [`FRONT_LOG_LIMIT`]) for a message of `program`
    /// that satisfies `matches`, and returns it; panics with `what` and the
    /// maillog otherwise.
    pub fn wait_line(&self, program: &str, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.lines_of(program).into_iter().find(|l| matches(l)) {
                return line;
            }
            if started.elapsed() > FRONT_LOG_LIMIT {
                panic!(
                    "{what}: no {program} line within {FRONT_LOG_LIMIT:?}; maillog:\n{}",
                    self.maillog()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The [`DELIVERY_PROGRAM`] line of the first delivery attempt of `queue_id` to `rcpt`
    /// that ended with `status` (`sent`, `deferred`, `bounced`), waiting for
    /// it (bounded): `QID: to=<rcpt>, relay=..., dsn=..., status=... (...)`.
    pub fn wait_status(&self, queue_id: &str, rcpt: &str, status: &str) -> String {
        let prefix = format!("{queue_id}: to=<{rcpt}>, ");
        let needle = format!(", status={status} ");
        self.wait_line(
            DELIVERY_PROGRAM,
            &format!("{queue_id} to {rcpt} {status}"),
            |l| l.starts_with(&prefix) && l.contains(&needle),
        )
    }

    /// Every delivery line ([`DELIVERY_PROGRAM`]) of `queue_id` so far.
    pub fn deliveries(&self, queue_id: &str) -> Vec<String> {
        let prefix = format!("{queue_id}: to=<");
        self.lines_of(DELIVERY_PROGRAM)
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }

    /// The queue id of the non-delivery notification Postfix generated for
    /// `queue_id` (`postfix/bounce: QID: sender non-delivery notification:
    /// QID2`), waiting for it (bounded).
    pub fn wait_bounce(&self, queue_id: &str) -> String {
        let prefix = format!("{queue_id}: sender non-delivery notification: ");
        let line = self.wait_line(
            "postfix/bounce",
            &format!("a non-delivery notification for {queue_id}"),
            |l| l.starts_with(&prefix),
        );
        line.get(prefix.len()..)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Every `postfix/bounce` line so far (notifications generated).
    pub fn bounce_lines(&self) -> Vec<String> {
        self.lines_of("postfix/bounce")
    }

    /// The messages the bounce sink received (the notifications Postfix
    /// delivered to the sender domain), waiting (bounded) until there are
    /// `count`.
    pub fn bounces(&self, count: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let files = self.bounce_sink.wait_files("bounces", count);
            if files.len() >= count || started.elapsed() > FRONT_LOG_LIMIT {
                return files
                    .iter()
                    .map(|f| String::from_utf8_lossy(&fs::read(f).unwrap_or_default()).into_owned())
                    .collect();
            }
        }
    }

    /// The queue (`postqueue -j`): one JSON object per message, with
    /// `queue_name`, `queue_id`, `sender` and `recipients` (each with
    /// `address` and `delay_reason`).
    pub fn queue(&self) -> Vec<Value> {
        let output = Command::new(postqueue_binary(&self.binary))
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("-j")
            .stdin(Stdio::null())
            .output()
            .expect("run postqueue -j");
        assert!(
            output.status.success(),
            "postqueue -j: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("postqueue -j {l:?}: {e}")))
            .collect()
    }

    /// The queue entry of `queue_id` (`postqueue -j`), if it is queued.
    pub fn queued(&self, queue_id: &str) -> Option<Value> {
        self.queue()
            .into_iter()
            .find(|m| m["queue_id"].as_str() == Some(queue_id))
    }

    /// The queue directory (`incoming`, `active`, `deferred`, `hold`, ...)
    /// that holds the queue file of `queue_id`, if any.
    pub fn queue_of(&self, queue_id: &str) -> Option<String> {
        let spool = self.dir.path().join("spool");
        [
            "maildrop", "incoming", "active", "deferred", "hold", "corrupt",
        ]
        .iter()
        .find(|queue| contains_file(&spool.join(queue), queue_id, 3))
        .map(|queue| queue.to_string())
    }

    /// Asks Postfix to retry every deferred message now (`postqueue -f`).
    pub fn flush(&self) {
        let output = Command::new(postqueue_binary(&self.binary))
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("-f")
            .stdin(Stdio::null())
            .output()
            .expect("run postqueue -f");
        assert!(
            output.status.success(),
            "postqueue -f: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Sends one message through the injection smtpd and returns its queue
    /// id (from `250 2.0.0 Ok: queued as QID`); panics on any other reply.
    pub fn inject(&self, sender: &str, recipients: &[&str], body: &str) -> String {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.smtpd_port))
            .expect("connect to the injection smtpd");
        stream
            .set_read_timeout(Some(INJECT_LIMIT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(INJECT_LIMIT))
            .expect("write timeout");
        let mut writer = stream.try_clone().expect("clone the stream");
        let mut reader = BufReader::new(stream);
        let mut chat = |command: Option<&str>, expect: &str| -> String {
            if let Some(command) = command {
                writer
                    .write_all(format!("{command}\r\n").as_bytes())
                    .expect("write to smtpd");
            }
            let reply = read_reply(&mut reader);
            assert!(
                reply.starts_with(expect),
                "smtpd answered {command:?} with {reply:?} (expected {expect}...)"
            );
            reply
        };
        chat(None, "220");
        chat(Some("EHLO client.test"), "250");
        chat(Some(&format!("MAIL FROM:<{sender}>")), "250");
        for rcpt in recipients {
            chat(Some(&format!("RCPT TO:<{rcpt}>")), "250");
        }
        chat(Some("DATA"), "354");
        let mut data = String::new();
        for line in body.lines() {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push('.');
        let reply = chat(Some(&data), "250");
        chat(Some("QUIT"), "221");
        reply
            .rsplit_once("queued as ")
            .map(|(_, id)| id.trim().to_string())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| panic!("no queue id in {reply:?}"))
    }
}

impl Drop for PostfixFront {
    fn drop(&mut self) {
        stop_instance(&self.binary, self.dir.path(), self.master_pid);
    }
}

/// postqueue(1), next to postfix(1).
fn postqueue_binary(postfix: &Path) -> PathBuf {
    postfix
        .parent()
        .map(|d| d.join("postqueue"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("postqueue"))
}

/// A file named `name` in `dir` or its subdirectories (down to `depth`).
fn contains_file(dir: &Path, name: &str, depth: usize) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            depth > 0 && contains_file(&path, name, depth - 1)
        } else {
            entry.file_name() == name
        }
    })
}

fn main_cf(base: &Path, lmtp_socket: &Path) -> String {
    let socket = lmtp_socket.display();
    let base = base.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = {FRONT_HOSTNAME}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = static:all
default_transport = mailhop:unix:{socket}
relay_transport = mailhop:unix:{socket}
mailhop_destination_concurrency_limit = 64
mailhop_destination_recipient_limit = 100
transport_maps = texthash:{base}/etc/transport
lmtp_data_done_timeout = 60s
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_tls_security_level = none
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s
delay_warning_time = 0
notify_classes =
biff = no
"
    )
}

/// master.cf: the injection smtpd on loopback, the `mailhop` service of
/// docs/behind-postfix.md, the usual services (none chrooted) and postlogd
/// for `maillog_file`.
fn master_cf(smtpd_port: u16) -> String {
    format!(
        "127.0.0.1:{smtpd_port} inet n - n - - smtpd
{}lmtp      unix  - - n - - lmtp
mailhop   unix  - - n - - lmtp
  -o syslog_name=postfix/mailhop
  -o lmtp_send_xforward_command=yes
",
        super::postfix::MASTER_CF_SERVICES
    )
}
