//! The pieces of harness the `mailhop daemon` test crates (tests/daemon.rs,
//! tests/hostile.rs) share: a private work directory ([`Work`]), the wait
//! for a started daemon to listen ([`wait_until_listening`]) and a
//! job-protocol client ([`Client`]). Each crate includes this file with
//! `#[path]` and adds its own constructors (directory prefix, file modes).
//!
//! Contract: every wait is bounded by the limit the caller passes; the
//! work directory is removed on drop.

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A private directory under /tmp, mode 0777 (some clients and the
/// daemon's user are not root). Removed on drop.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    /// A new directory whose name starts with `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("create a temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod 0777");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to the file `name` in the directory, with `mode`.
    pub fn file_with_mode(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, content).expect("write a test file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
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
