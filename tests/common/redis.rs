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

/// A throwaway Redis Cluster of three masters (no replicas) on loopback,
/// made by `redis-cli --cluster create`; every node is killed and reaped
/// on drop, also when the start fails half-way. Without redis-server or
/// redis-cli the caller skips (a failure under `CI=true`).
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    dir: Workdir,
}

/// A port P free now whose cluster bus port P + 10000 is free too.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port >= 55_536 || taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) on loopback");
}

impl RedisCluster {
    /// Starts three nodes and joins them; `None` (after a loud skip)
    /// without redis-server or redis-cli.
    pub fn start() -> Option<RedisCluster> {
        let Some(server) = find_tool("redis-server") else {
            skip("redis-server is not installed (scripts/install-test-deps.sh)");
            return None;
        };
        let Some(cli) = find_tool("redis-cli") else {
            skip("redis-cli is not installed (scripts/install-test-deps.sh)");
            return None;
        };
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir: Workdir::new(),
        };
        for _ in 0..3 {
            let port = cluster_port(&cluster.ports);
            let log = std::fs::File::create(cluster.dir.path().join(format!("redis-{port}.log")))
                .expect("redis log");
            let child = Command::new(&server)
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(cluster.dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(cluster.dir.path())
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn redis-server");
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            cluster.wait(port, Duration::from_secs(10), |con| {
                ::redis::cmd("PING").query::<String>(con).is_ok()
            });
        }
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = std::fs::File::create(cluster.dir.path().join("create.log")).expect("log");
        let mut create = super::daemon::Reaped(
            create
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup log"))
                .stderr(out)
                .spawn()
                .expect("spawn redis-cli"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = create.0.try_wait().expect("wait for redis-cli") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "redis-cli --cluster create did not finish: {}",
                cluster.log("create.log")
            );
            thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "redis-cli --cluster create: {status}: {}",
            cluster.log("create.log")
        );
        for &port in &cluster.ports {
            cluster.wait(port, Duration::from_secs(30), |con| {
                ::redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(con)
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        Some(cluster)
    }

    /// Polls node `port` until `ready` (bounded by `limit`).
    fn wait(&self, port: u16, limit: Duration, ready: impl Fn(&mut ::redis::Connection) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(mut con) = Self::node_client(port).get_connection()
                && ready(&mut con)
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis cluster node {port} not ready: {}",
            self.log(&format!("redis-{port}.log"))
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn node_client(port: u16) -> ::redis::Client {
        ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url")
    }

    /// The seed node's URL (the first node).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[0])
    }

    /// A plain connection to node `port`.
    pub fn node(&self, port: u16) -> ::redis::Connection {
        Self::node_client(port)
            .get_connection()
            .expect("connect to a cluster node")
    }

    /// A cluster connection.
    pub fn conn(&self) -> ::redis::cluster::ClusterConnection {
        ::redis::cluster::ClusterClient::new(vec![self.url()])
            .and_then(|c| c.get_connection())
            .expect("connect to the cluster")
    }

    /// The port of the master serving `slot` (CLUSTER SLOTS).
    pub fn master_of(&self, slot: u16) -> u16 {
        let ranges: Vec<::redis::Value> = ::redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.node(self.ports[0]))
            .expect("CLUSTER SLOTS");
        for range in ranges {
            let ::redis::Value::Array(items) = range else {
                continue;
            };
            let (Some(::redis::Value::Int(start)), Some(::redis::Value::Int(end))) =
                (items.first(), items.get(1))
            else {
                continue;
            };
            if (*start..=*end).contains(&i64::from(slot))
                && let Some(::redis::Value::Array(master)) = items.get(2)
                && let Some(::redis::Value::Int(port)) = master.get(1)
            {
                return u16::try_from(*port).expect("port");
            }
        }
        panic!("no master serves slot {slot}");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
        }
        for child in &mut self.nodes {
            let _ = child.wait();
        }
    }
}
