//! A private Dovecot per test, as the SASL authentication service of a
//! private Postfix smtpd (`smtpd_sasl_type = dovecot`): its own
//! configuration, base and state directories and log under a temporary
//! directory, no mail protocols, a passwd-file passdb with `{PLAIN}`
//! passwords, `auth_mechanisms = plain login scram-sha-256`, no failure
//! delay, and one auth socket ([`Dovecot::auth_socket`], mode 0666, so
//! smtpd running as the postfix user can use it).
//!
//! Contract: [`Dovecot::start`] returns a running instance whose auth
//! socket exists, or `None` after a loud SKIPPED line when Dovecot is not
//! installed or the tests do not run as root, or panics: under `CI=true`
//! when Dovecot is unavailable, and when it does not start within
//! [`START_LIMIT`] (with its log). The guard stops the process it started
//! on drop (SIGTERM to its pid, a bounded wait, then SIGKILL) and removes
//! the directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::tools::{find_tool, is_root, skip};

/// Longest wait for the auth socket to appear.
pub const START_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the process to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// A running private Dovecot; stopped on drop.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dovecot {
    /// Starts an instance knowing `users` (name, password). `None` when
    /// Dovecot cannot run here.
    pub fn start(users: &[(&str, &str)]) -> Option<Dovecot> {
        let Some(binary) = find_tool("dovecot") else {
            skip("dovecot not installed (package dovecot-core; run scripts/install-test-deps.sh)");
            return None;
        };
        if !is_root() {
            skip("a private Dovecot needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("mailhop-dovecot-")
            .tempdir_in("/tmp")
            .expect("create the Dovecot directory");
        let base = dir.path();
        // smtpd (the postfix user) must reach the auth socket.
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).expect("chmod dovecot dir");
        for sub in ["run", "state"] {
            fs::create_dir(base.join(sub)).expect("create a Dovecot subdirectory");
        }
        let passwd: String = users
            .iter()
            .map(|(user, pass)| format!("{user}:{{PLAIN}}{pass}\n"))
            .collect();
        fs::write(base.join("passwd"), passwd).expect("write the passwd-file");
        fs::write(base.join("dovecot.conf"), config(base)).expect("write dovecot.conf");
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(base.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(base.join("stderr")).expect("stderr file"))
            .spawn()
            .expect("start dovecot");
        let mut dovecot = Dovecot { dir, child };
        let started = Instant::now();
        while !dovecot.auth_socket().exists() {
            let exited = dovecot.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_LIMIT {
                panic!(
                    "private Dovecot did not start ({exited:?}): {}",
                    dovecot.log()
                );
            }
            thread::sleep(POLL);
        }
        Some(dovecot)
    }

    /// The auth socket for `smtpd_sasl_path`.
    pub fn auth_socket(&self) -> PathBuf {
        self.dir.path().join("auth")
    }

    /// Dovecot's log and standard error so far.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("dovecot.log"), read("stderr"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_LIMIT {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(base: &Path) -> String {
    let base = base.display();
    format!(
        "base_dir = {base}/run
state_dir = {base}/state
instance_name = mailhop-test-{pid}
log_path = {base}/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login scram-sha-256
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {base}/auth {{
    mode = 0666
  }}
}}
",
        pid = std::process::id()
    )
}
