//! Running the `mailhop` binary: a private scratch directory
//! ([`Workdir`]), one `mailhop send --direct` run ([`Delivery`],
//! [`run_mailhop`]) bounded by [`RUN_LIMIT`], and its parsed results
//! ([`Run`], [`Line`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single `mailhop` run may take before it is killed.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Working directories
// ---------------------------------------------------------------------------

/// A private directory under /tmp, mode 0777 so that smtp-sink running as
/// `nobody` can create sockets and dump files in it. Removed on drop.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self::with_prefix("mailhop-it-")
    }

    /// A new directory whose name starts with `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
            .expect("chmod 0777 the temporary directory");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file and returns its path.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, content).expect("write a test file");
        path
    }

    /// Writes `content` to the file `name` in the directory, with `mode`.
    pub fn file_with_mode(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = self.file(name, content);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// Creates a subdirectory, mode 0777.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).expect("create a subdirectory");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod subdirectory");
        path
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Running mailhop
// ---------------------------------------------------------------------------

/// A small, plain message with LF line endings.
pub const SMALL_MESSAGE: &[u8] = b"From: a@x.test\nTo: b@y.test\nSubject: test\n\nhello\n";

/// Timeouts used by every run unless a test overrides them: short enough
/// that a stuck peer cannot stall the suite, long enough for a loaded host.
pub const DEFAULT_TIMEOUTS: &[(&str, &str)] = &[
    ("connect_timeout", "5s"),
    ("helo_timeout", "5s"),
    ("mail_timeout", "5s"),
    ("rcpt_timeout", "5s"),
    ("data_init_timeout", "5s"),
    ("data_xfer_timeout", "5s"),
    ("data_done_timeout", "5s"),
    ("quit_timeout", "2s"),
    ("rset_timeout", "2s"),
];

enum ConfigChoice {
    /// `[smtp]` keys, rendered as TOML.
    Smtp(BTreeMap<String, String>),
    /// A file with exactly this text.
    Raw(String),
    /// No `--config` at all.
    Omitted,
}

/// Builder for one `mailhop send --direct` run.
pub struct Delivery {
    nexthop: Option<String>,
    from: String,
    to: Vec<String>,
    lmtp: bool,
    json: bool,
    smtputf8: bool,
    id: Option<String>,
    message: Vec<u8>,
    message_arg: Option<OsString>,
    stdin: bool,
    config: ConfigChoice,
}

impl Delivery {
    /// A run to `nexthop` from `a@x.test`, with the small message.
    pub fn to(nexthop: &str) -> Self {
        let smtp = DEFAULT_TIMEOUTS
            .iter()
            .map(|(k, v)| (k.to_string(), format!("{v:?}")))
            .collect();
        Self {
            nexthop: Some(nexthop.to_string()),
            from: "a@x.test".into(),
            to: Vec::new(),
            lmtp: false,
            json: false,
            smtputf8: false,
            id: None,
            message: SMALL_MESSAGE.to_vec(),
            message_arg: None,
            stdin: false,
            config: ConfigChoice::Smtp(smtp),
        }
    }

    pub fn rcpt(mut self, address: &str) -> Self {
        self.to.push(address.to_string());
        self
    }

    pub fn rcpts(mut self, addresses: &[&str]) -> Self {
        self.to.extend(addresses.iter().map(|a| a.to_string()));
        self
    }

    pub fn from(mut self, sender: &str) -> Self {
        self.from = sender.to_string();
        self
    }

    pub fn lmtp(mut self) -> Self {
        self.lmtp = true;
        self
    }

    pub fn json(mut self) -> Self {
        self.json = true;
        self
    }

    /// `--smtputf8`: the sender requests SMTPUTF8.
    pub fn smtputf8(mut self) -> Self {
        self.smtputf8 = true;
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    pub fn message(mut self, content: &[u8]) -> Self {
        self.message = content.to_vec();
        self
    }

    /// Passes this message argument verbatim (e.g. a missing file).
    pub fn message_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.message_arg = Some(arg.into());
        self
    }

    /// Feeds the message on standard input, with `-` as the message argument.
    pub fn via_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Overrides one `[smtp]` setting; `value` is TOML (e.g. `"\"1s\""`).
    pub fn smtp_setting(mut self, key: &str, value: &str) -> Self {
        if let ConfigChoice::Smtp(map) = &mut self.config {
            map.insert(key.to_string(), value.to_string());
        }
        self
    }

    /// Uses this exact configuration file text.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.config = ConfigChoice::Raw(text.to_string());
        self
    }

    pub fn no_config(mut self) -> Self {
        self.config = ConfigChoice::Omitted;
        self
    }

    /// Runs `mailhop`, bounded by [`RUN_LIMIT`].
    pub fn run(&self) -> Run {
        let work = Workdir::new();
        let mut args: Vec<OsString> = vec!["send".into()];
        match &self.config {
            ConfigChoice::Smtp(map) => {
                let mut text = String::from("[smtp]\n");
                for (k, v) in map {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                // LMTP inherits the [smtp] timeouts except the connect timeout.
                text.push_str("\n[lmtp]\nconnect_timeout = \"5s\"\n");
                let path = work.file("mailhop.toml", text.as_bytes());
                args.push("--config".into());
                args.push(path.into());
            }
            ConfigChoice::Raw(text) => {
                let path = work.file("mailhop.toml", text.as_bytes());
                args.push("--config".into());
                args.push(path.into());
            }
            ConfigChoice::Omitted => {}
        }
        args.push("--direct".into());
        if self.lmtp {
            args.push("--lmtp".into());
        }
        if self.json {
            args.push("--json".into());
        }
        if self.smtputf8 {
            args.push("--smtputf8".into());
        }
        if let Some(nexthop) = &self.nexthop {
            args.push("--nexthop".into());
            args.push(nexthop.into());
        }
        args.push("--from".into());
        args.push(self.from.clone().into());
        for to in &self.to {
            args.push("--to".into());
            args.push(to.into());
        }
        if let Some(id) = &self.id {
            args.push("--id".into());
            args.push(id.into());
        }
        let message = work.file("message", &self.message);
        match &self.message_arg {
            Some(arg) => args.push(arg.clone()),
            None if self.stdin => args.push("-".into()),
            None => args.push(message.clone().into()),
        }
        run_mailhop(&work, &args, self.stdin.then_some(&message))
    }
}

/// Runs the binary with `args`, stdin from `stdin` (else /dev/null),
/// stdout/stderr captured in files (no pipe can fill up), killed after
/// [`RUN_LIMIT`].
pub fn run_mailhop(work: &Workdir, args: &[OsString], stdin: Option<&Path>) -> Run {
    Invocation::new(args).stdin(stdin).run(work)
}

/// One run of the mailhop binary with everything a test may vary: the
/// log level, a uid (and gid) to run as, variables to remove, a limit, the
/// names of the output files.
pub struct Invocation {
    args: Vec<OsString>,
    stdin: Option<PathBuf>,
    rust_log: String,
    uid: Option<u32>,
    env_remove: Vec<String>,
    limit: Duration,
    suffix: String,
}

impl Invocation {
    pub fn new<S: Into<OsString> + Clone>(args: &[S]) -> Self {
        Self {
            args: args.iter().cloned().map(Into::into).collect(),
            stdin: None,
            rust_log: "info".into(),
            uid: None,
            env_remove: Vec::new(),
            limit: RUN_LIMIT,
            suffix: String::new(),
        }
    }

    /// Standard input from this file (else /dev/null).
    pub fn stdin(mut self, path: Option<&Path>) -> Self {
        self.stdin = path.map(Path::to_path_buf);
        self
    }

    /// `RUST_LOG` (default `info`).
    pub fn rust_log(mut self, level: &str) -> Self {
        self.rust_log = level.into();
        self
    }

    /// Runs as this uid, with the same number as gid.
    pub fn uid(mut self, uid: Option<u32>) -> Self {
        self.uid = uid;
        self
    }

    /// Removes this variable from the environment.
    pub fn env_remove(mut self, name: &str) -> Self {
        self.env_remove.push(name.into());
        self
    }

    /// Kills the run after `limit` (default [`RUN_LIMIT`]).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Output files `stdout{suffix}`/`stderr{suffix}` (several runs in one
    /// directory).
    pub fn suffix(mut self, suffix: &str) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Runs it, the output files in `work`.
    pub fn run(self, work: &Workdir) -> Run {
        let args = self.args;
        let out_path = work.path().join(format!("stdout{}", self.suffix));
        let err_path = work.path().join(format!("stderr{}", self.suffix));
        let out = fs::File::create(&out_path).expect("create stdout file");
        let err = fs::File::create(&err_path).expect("create stderr file");
        let input = match &self.stdin {
            Some(path) => Stdio::from(fs::File::open(path).expect("open stdin file")),
            None => Stdio::null(),
        };
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailhop"));
        command
            .args(&args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(input)
            .stdout(out)
            .stderr(err);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        if let Some(uid) = self.uid {
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().expect("spawn mailhop");
        let limit = self.limit;
        let status = loop {
            match child.try_wait().expect("wait for mailhop") {
                Some(status) => break status,
                None if started.elapsed() > limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mailhop {args:?} did not finish within {limit:?}; stderr:\n{}",
                        fs::read_to_string(&err_path).unwrap_or_default()
                    );
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        };
        let elapsed = started.elapsed();
        Run {
            args,
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&fs::read(&out_path).unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default()).into_owned(),
            elapsed,
        }
    }
}

/// What one `mailhop` run did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<OsString>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// One recipient's result line:
/// `to=<A>, relay=R, dsn=D, status=S (DIAGNOSTIC)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub to: String,
    pub relay: String,
    pub dsn: String,
    pub status: String,
    pub diagnostic: String,
}

impl Line {
    pub fn new(to: &str, relay: &str, dsn: &str, status: &str, diagnostic: &str) -> Self {
        Self {
            to: to.into(),
            relay: relay.into(),
            dsn: dsn.into(),
            status: status.into(),
            diagnostic: diagnostic.into(),
        }
    }

    pub fn sent(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "sent", diagnostic)
    }

    pub fn deferred(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "deferred", diagnostic)
    }

    pub fn bounced(to: &str, relay: &str, dsn: &str, diagnostic: &str) -> Self {
        Self::new(to, relay, dsn, "bounced", diagnostic)
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("to=<")?;
        let (to, rest) = rest.split_once(">, relay=")?;
        let (relay, rest) = rest.split_once(", dsn=")?;
        let (dsn, rest) = rest.split_once(", status=")?;
        let (status, rest) = rest.split_once(" (")?;
        let diagnostic = rest.strip_suffix(')')?;
        Some(Self::new(to, relay, dsn, status, diagnostic))
    }
}

impl Run {
    /// The text result lines, parsed; panics (with the whole run) on a line
    /// that does not have the Postfix shape.
    pub fn lines(&self) -> Vec<Line> {
        self.stdout
            .lines()
            .map(|l| Line::parse(l).unwrap_or_else(|| panic!("bad result line {l:?} in {self:#?}")))
            .collect()
    }

    /// The `--json` output, parsed.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {self:#?}"))
    }

    /// Asserts the exit code and the exact result lines.
    pub fn expect(&self, code: i32, lines: &[Line]) {
        assert_eq!(self.lines(), lines, "result lines of {self:#?}");
        assert_eq!(self.code, code, "exit code of {self:#?}");
    }
}
