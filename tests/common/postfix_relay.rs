//! A private Postfix instance per test as the *reference* smtp(8) client:
//! mail injected into its smtpd is queued, held, read back as Postfix
//! queued it, released, and relayed by Postfix's own smtp(8) to the
//! relayhost the test names (e.g. a dumping smtp-sink).
//!
//! | what | how |
//! |---|---|
//! | injection | smtpd on `127.0.0.1:`[`PostfixRelay::smtpd_port`], mail from 127.0.0.0/8 to any domain accepted; [`PostfixRelay::inject`] sends raw message bytes with `BODY=8BITMIME` and returns the queue id |
//! | holding | `header_checks = regexp:` `/^/ HOLD`: every message waits in the hold queue, so [`PostfixRelay::queued_content`] reads it with `postcat -bh` (the header and body records as queued: the Received: header smtpd added included) |
//! | outbound | [`PostfixRelay::release`]: `postsuper -H` then `postqueue -i`; `default_transport = smtp`, `relayhost` the test's next hop, TLS off |
//!
//! No chroot, no syslog: `maillog_file` in the instance directory.
//!
//! Contract: [`PostfixRelay::start`] returns a running instance whose
//! master itself listens on the smtpd port (seen in /proc), or `None` after
//! a loud SKIPPED line when Postfix cannot run here (a panic under
//! `CI=true`, see [`super::postfix::require_postfix`]), or panics with
//! `postfix start`'s output and the maillog after [`START_ATTEMPTS`]
//! attempts. Every wait is bounded and panics with the maillog. The guard
//! stops the instance on drop (`postfix stop`, a bounded wait, then SIGKILL
//! of its process group) and removes its directory.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;
use super::postfix::{
    MASTER_CF_SERVICES, START_ATTEMPTS, backdate_config, postfix_command, postfix_ids,
    read_master_pid, read_reply, require_postfix, stop_instance, wait_listening,
};

/// Longest wait for one reply of the injection smtpd, and for a message
/// to reach the hold queue.
const LIMIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(25);

/// A running private Postfix relaying to one next hop; stopped on drop.
pub struct PostfixRelay {
    dir: tempfile::TempDir,
    binary: PathBuf,
    master_pid: u32,
    /// The injection smtpd's port on 127.0.0.1.
    pub smtpd_port: u16,
}

impl PostfixRelay {
    /// Starts an instance relaying everything through smtp(8) to
    /// `relayhost` (e.g. `[127.0.0.1]:2525`), with `extra` main.cf lines.
    pub fn start(relayhost: &str, extra: &str) -> Option<PostfixRelay> {
        let binary = require_postfix()?;
        let (uid, gid) = postfix_ids()?;
        let dir = tempfile::Builder::new()
            .prefix("mailhop-pfrelay-")
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
        fs::write(base.join("etc/main.cf"), main_cf(&base, relayhost, extra))
            .expect("write main.cf");
        fs::write(base.join("etc/hold"), "/^/ HOLD\n").expect("write the header checks");
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
                return Some(PostfixRelay {
                    dir,
                    binary,
                    master_pid,
                    smtpd_port: port,
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
        panic!("private Postfix (relay) did not start: {failures:#?}");
    }

    /// The instance's maillog so far.
    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits (bounded) for a maillog line containing `what`; returns it.
    pub fn wait_log(&self, what: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.maillog();
            if let Some(line) = log.lines().find(|l| l.contains(what)) {
                return line.to_string();
            }
            assert!(
                started.elapsed() < LIMIT,
                "no maillog line with {what:?}; maillog:\n{log}"
            );
            thread::sleep(POLL);
        }
    }

    /// Sends `message` (lines ending in LF or CRLF, any bytes) with
    /// `BODY=8BITMIME` through the injection smtpd and returns its queue
    /// id; panics on any unexpected reply.
    pub fn inject(&self, sender: &str, recipient: &str, message: &[u8]) -> String {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.smtpd_port))
            .expect("connect to the injection smtpd");
        stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
        stream
            .set_write_timeout(Some(LIMIT))
            .expect("write timeout");
        let mut writer = stream.try_clone().expect("clone the stream");
        let mut reader = BufReader::new(stream);
        let mut chat = |command: Option<&[u8]>, expect: &str| -> String {
            if let Some(command) = command {
                writer.write_all(command).expect("write to smtpd");
            }
            let reply = read_reply(&mut reader);
            assert!(
                reply.starts_with(expect),
                "smtpd answered {:?} with {reply:?} (expected {expect}...)",
                command.map(String::from_utf8_lossy)
            );
            reply
        };
        chat(None, "220");
        chat(Some(b"EHLO client.test\r\n"), "250");
        chat(
            Some(format!("MAIL FROM:<{sender}> BODY=8BITMIME\r\n").as_bytes()),
            "250",
        );
        chat(Some(format!("RCPT TO:<{recipient}>\r\n").as_bytes()), "250");
        chat(Some(b"DATA\r\n"), "354");
        let mut data = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        let reply = chat(Some(&data), "250");
        chat(Some(b"QUIT\r\n"), "221");
        reply
            .rsplit_once("queued as ")
            .map(|(_, id)| id.trim().to_string())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| panic!("no queue id in {reply:?}"))
    }

    /// Waits (bounded) until the message is in the hold queue, then returns
    /// its header and body as queued (`postcat -bh`).
    pub fn queued_content(&self, queue_id: &str) -> Vec<u8> {
        let held = self.dir.path().join("spool/hold").join(queue_id);
        let started = Instant::now();
        while !held.is_file() {
            assert!(
                started.elapsed() < LIMIT,
                "{queue_id} never reached the hold queue; maillog:\n{}",
                self.maillog()
            );
            thread::sleep(POLL);
        }
        let output = self
            .tool("postcat")
            .args(["-bh", "-q", queue_id])
            .output()
            .expect("run postcat");
        assert!(
            output.status.success(),
            "postcat -bh -q {queue_id}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Releases a held message and asks for its delivery now.
    pub fn release(&self, queue_id: &str) {
        for args in [["-H", queue_id], ["-i", queue_id]] {
            let name = if args[0] == "-H" {
                "postsuper"
            } else {
                "postqueue"
            };
            let output = self
                .tool(name)
                .args(args)
                .output()
                .expect("run a Postfix tool");
            assert!(
                output.status.success(),
                "{name} {args:?}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// A Postfix command next to postfix(1), with `-c` this instance.
    fn tool(&self, name: &str) -> Command {
        let path = self
            .binary
            .parent()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name));
        let mut command = Command::new(path);
        command
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .stdin(Stdio::null());
        command
    }
}

impl Drop for PostfixRelay {
    fn drop(&mut self) {
        stop_instance(&self.binary, self.dir.path(), self.master_pid);
    }
}

fn main_cf(base: &Path, relayhost: &str, extra: &str) -> String {
    let base = base.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = relay.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = static:all
default_transport = smtp
relay_transport = smtp
relayhost = {relayhost}
header_checks = regexp:{base}/etc/hold
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s
delay_warning_time = 0
notify_classes =
biff = no
{extra}
"
    )
}

/// master.cf: the injection smtpd on loopback, the usual services (none
/// chrooted) and postlogd for `maillog_file`.
fn master_cf(smtpd_port: u16) -> String {
    format!(
        "127.0.0.1:{smtpd_port} inet n - n - - smtpd
{MASTER_CF_SERVICES}"
    )
}
