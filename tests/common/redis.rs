//! A throwaway `redis-server` on a free loopback port ([`Redis`]): its
//! own directory, no RDB snapshots, AOF on request (`appendfsync always`,
//! so a killed server loses nothing it acknowledged). Killed and reaped on
//! drop. Without redis-server the caller skips (a failure under `CI=true`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;
use super::run::Workdir;
use super::tools::{find_tool, skip};

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    aof: bool,
    binary: PathBuf,
    dir: Workdir,
}

impl Redis {
    /// Starts one; `None` (after a loud skip) without redis-server.
    pub fn start(aof: bool) -> Option<Redis> {
        let Some(binary) = find_tool("redis-server") else {
            skip("redis-server is not installed (scripts/install-test-deps.sh)");
            return None;
        };
        let mut redis = Redis {
            child: None,
            port: free_port(),
            aof,
            binary,
            dir: Workdir::new(),
        };
        redis.spawn();
        Some(redis)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .args(["--appendonly", if self.aof { "yes" } else { "no" }]);
        if self.aof {
            cmd.args(["--appendfsync", "always"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut con) = self.client().get_connection()
                && ::redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not start: {}",
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).expect("redis url")
    }

    pub fn conn(&self) -> ::redis::Connection {
        self.client().get_connection().expect("connect to redis")
    }

    /// SIGKILL, then a new server on the same port and directory (it
    /// reloads its append-only file when AOF is on).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after [`Redis::stop`] (same port and directory).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// SIGKILL (and reap).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
