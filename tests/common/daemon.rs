//! The one `mailhop daemon` guard of the integration tests ([`Daemon`]),
//! the wait for a started daemon to listen ([`wait_until_listening`]) and
//! a job-protocol client ([`Client`]).
//!
//! Contract: every wait is bounded by the limit the caller passes; a
//! daemon is killed (with its process group when it has its own) and
//! reaped on drop unless the test already saw it exit.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use super::run::Workdir;

/// The mailhop binary under test; `MAILHOP_BIN` may name another one (to
/// check that a test fails on an older build).
pub fn mailhop_bin() -> PathBuf {
    std::env::var_os("MAILHOP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mailhop")))
}

/// `mailhop daemon --foreground --config CONFIG`, without the systemd
/// variables of the environment the tests run in.
pub fn daemon_command(config: &Path) -> Command {
    let mut cmd = Command::new(mailhop_bin());
    cmd.args(["daemon", "--foreground", "--config"]).arg(config);
    for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Any child process (a helper client, a wrapper), killed and reaped on
/// drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `mailhop daemon`, stderr in `daemon.log` of its work
/// directory; killed and reaped on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Its own process group (a wrapper and the daemon under it are
    /// killed together).
    group: bool,
    exit: Option<i32>,
    /// The longest wait for the daemon to listen, for a log line, and for
    /// each answer its clients read.
    limit: Duration,
    /// The work directory, when the guard owns it (removed after the
    /// daemon is killed).
    work: Option<Workdir>,
}

impl Daemon {
    /// Writes `config_text` to `mailhop.toml` in `work` and starts the
    /// daemon with it; it must listen on `work/m.sock` within `limit`.
    pub fn start_text(work: &Workdir, config_text: &str, limit: Duration) -> Daemon {
        let config = work.file("mailhop.toml", config_text.as_bytes());
        let cmd = daemon_command(&config);
        Self::launch(work, cmd, config, work.path().join("m.sock"), limit)
    }

    /// Runs `cmd` (a daemon command line) with stderr in the work dir and
    /// waits until `socket` accepts connections.
    pub fn launch(
        work: &Workdir,
        cmd: Command,
        config: PathBuf,
        socket: PathBuf,
        limit: Duration,
    ) -> Daemon {
        Self::spawn(work, cmd, config, socket, limit, false)
    }

    /// [`Daemon::launch`] in a process group of its own.
    pub fn launch_grouped(
        work: &Workdir,
        cmd: Command,
        config: PathBuf,
        socket: PathBuf,
        limit: Duration,
    ) -> Daemon {
        Self::spawn(work, cmd, config, socket, limit, true)
    }

    fn spawn(
        work: &Workdir,
        mut cmd: Command,
        config: PathBuf,
        socket: PathBuf,
        limit: Duration,
        group: bool,
    ) -> Daemon {
        let log = work.path().join("daemon.log");
        let err = fs::File::create(&log).expect("create the daemon log");
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        if group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().expect("spawn mailhop daemon");
        let mut daemon = Daemon {
            child,
            socket,
            config,
            log,
            group,
            exit: None,
            limit,
            work: None,
        };
        wait_until_listening(&mut daemon.child, &daemon.socket, &daemon.log, limit);
        daemon
    }

    /// Keeps `work` (the daemon's directory) until the daemon is gone.
    pub fn owning(mut self, work: Workdir) -> Self {
        self.work = Some(work);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle`, within the daemon's limit.
    pub fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < self.limit,
                "log line {needle:?} did not appear:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("signal the daemon");
    }

    /// The exit code, waiting at most `limit`; `None` if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        if self.exit.is_some() {
            return self.exit;
        }
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status.code().unwrap_or(-1));
                return self.exit;
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The value of a field of /proc/PID/status (`key` with its colon),
    /// empty when there is none.
    pub fn status_field(&self, key: &str) -> String {
        fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// A field of /proc/PID/status in kB (VmHWM, VmRSS).
    pub fn status_kb(&self, key: &str) -> u64 {
        self.status_field(key)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A client whose reads wait at most the daemon's limit.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket, self.limit)
    }

    /// Sends each job line on one connection and reads one answer per line.
    pub fn submit(&self, jobs: &[Value]) -> Vec<Value> {
        let mut client = self.client();
        jobs.iter()
            .map(|job| {
                client.send(&job.to_string());
                client.answer()
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.group {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        } else if self.exit.is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon `child` has logged "listening on" to `log` and
/// `socket` accepts connections; panics (with the log) when it exits
/// first or `limit` passes.
pub fn wait_until_listening(child: &mut Child, socket: &Path, log: &Path, limit: Duration) {
    let read_log = || fs::read_to_string(log).unwrap_or_default();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited ({status}) at start:\n{}", read_log());
        }
        if read_log().contains("listening on") && UnixStream::connect(socket).is_ok() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the daemon did not listen in time:\n{}",
            read_log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One protocol connection.
pub struct Client {
    pub writer: UnixStream,
    pub reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to `socket`; every read waits at most `read_timeout`.
    pub fn connect(socket: &Path, read_timeout: Duration) -> Client {
        let stream = UnixStream::connect(socket).expect("connect to the daemon");
        stream
            .set_read_timeout(Some(read_timeout))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone the stream");
        Client {
            writer,
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the daemon");
    }

    /// The next answer line, parsed.
    pub fn answer(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read an answer");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {line:?}: {e}"))
    }

    /// `n` answers, keyed by id (error answers without one under "null#k").
    pub fn answers(&mut self, n: usize) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for k in 0..n {
            let answer = self.answer();
            let key = match answer["id"].as_str() {
                Some(id) => id.to_string(),
                None => format!("null#{k}"),
            };
            assert!(out.insert(key, answer).is_none(), "an id answered twice");
        }
        out
    }
}
