//! The stub resolver against a real peer: a throwaway `dnsmasq` on
//! 127.0.0.1:<free port> serving a test zone from its command line (no
//! config files, no upstream servers, no root privileges kept).
//!
//! Contract: bounded in count and time. dnsmasq gets a fresh port up to a few
//! times and must answer within a readiness deadline; the guard kills and
//! reaps it on drop, so a failing test leaves nothing running. When dnsmasq
//! is not installed the tests print a loud SKIPPED line and pass, or panic
//! when `CI=true`.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mailhop::dns::stub::{StubResolver, StubSettings};
use mailhop::dns::{DnsErrorKind, DnsLookup, MxRecord};

/// Bench names: h<thread>-<i>.bench.test, each with one MX.
const BENCH_THREADS: usize = 8;
const BENCH_NAMES: usize = 200;

struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    /// Where `blackhole.test` is forwarded: bound, never read.
    _silent: UdpSocket,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mailhop-dnsmasq-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn bench_name(thread: usize, i: usize) -> String {
    format!("h{thread}-{i}.bench.test")
}

fn write_bench_conf(dir: &Path) -> PathBuf {
    let mut conf = String::new();
    for t in 0..BENCH_THREADS {
        for i in 0..BENCH_NAMES {
            conf.push_str(&format!(
                "mx-host={},mx1.example.test,10\n",
                bench_name(t, i)
            ));
        }
    }
    let path = dir.join("bench.conf");
    fs::write(&path, conf).expect("write bench conf");
    path
}

fn quick_resolver(addr: SocketAddr, cache: usize) -> StubResolver {
    StubResolver::new(StubSettings {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        cache_max_entries: cache,
    })
    .expect("resolver")
}

impl Dnsmasq {
    /// Starts dnsmasq, or returns None (after a SKIPPED line) when it is not
    /// installed and this is not CI.
    fn start() -> Option<Self> {
        let Some(binary) = find_dnsmasq() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("dnsmasq not installed (run scripts/install-test-deps.sh)");
            }
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: dnsmasq not installed (run scripts/install-test-deps.sh)\n\
                 ********************************************************************\n"
            );
            return None;
        };
        for _ in 0..3 {
            let dir = scratch_dir();
            let bench = write_bench_conf(&dir);
            let log = dir.join("dnsmasq.log");
            let silent = UdpSocket::bind("127.0.0.1:0").expect("bind silent socket");
            let silent_port = silent.local_addr().expect("local addr").port();
            let port = free_port();
            let mut cmd = Command::new(&binary);
            cmd.arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg(format!("--conf-file={}", bench.display()))
                .arg(format!("--port={port}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--pid-file=",
                    "--cache-size=0",
                    "--local=/test/",
                    "--mx-host=example.test,mx1.example.test,10",
                    "--mx-host=example.test,mx2.example.test,20",
                    "--host-record=mx1.example.test,127.0.0.1,::1",
                    "--host-record=mx2.example.test,127.0.0.2",
                    "--host-record=nodata.example.test,127.0.0.3",
                    "--mx-host=nullmx.test,.,0",
                    "--server=/servfail.test/127.0.0.1#9",
                ])
                .arg(format!("--server=/blackhole.test/127.0.0.1#{silent_port}"))
                .arg(format!("--log-facility={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // dnsmasq drops root privileges to "nobody" unless told
            // otherwise; Debian has no "dip" group by default.
            if is_root() {
                cmd.args(["--user=nobody", "--group=nogroup"]);
            }
            let child = cmd.spawn().expect("spawn dnsmasq");
            let mut peer = Dnsmasq {
                child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                dir,
                _silent: silent,
            };
            if peer.wait_ready() {
                return Some(peer);
            }
            let log = fs::read_to_string(peer.dir.join("dnsmasq.log")).unwrap_or_default();
            eprintln!("dnsmasq on port {port} did not come up; log:\n{log}");
        }
        panic!("dnsmasq did not start after 3 tries");
    }

    fn wait_ready(&mut self) -> bool {
        let resolver = quick_resolver(self.addr, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("dnsmasq exited early: {status}");
                return false;
            }
            if resolver.mx("example.test").is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn is_root() -> bool {
    // /proc/self/status: "Uid:\t<real>\t<effective>..."
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord {
        preference,
        exchange: exchange.to_string(),
    }
}

#[test]
fn stub_resolver_against_dnsmasq() {
    let Some(peer) = Dnsmasq::start() else {
        return;
    };
    let r = StubResolver::new(StubSettings {
        nameservers: vec![peer.addr],
        timeout: Duration::from_millis(500),
        attempts: 2,
        cache_max_entries: 1000,
    })
    .expect("resolver");

    // MX list (dnsmasq's order is not ours to promise: compare as a set).
    let mut got = r.mx("example.test").expect("MX example.test").records;
    got.sort_by_key(|m| m.preference);
    assert_eq!(
        got,
        vec![mx(10, "mx1.example.test"), mx(20, "mx2.example.test")]
    );
    // Case and trailing dot do not matter.
    assert_eq!(r.mx("Example.TEST.").expect("MX").records.len(), 2);

    // A / AAAA.
    assert_eq!(
        r.a("mx1.example.test").expect("A").records,
        vec![Ipv4Addr::new(127, 0, 0, 1)]
    );
    assert_eq!(
        r.aaaa("mx1.example.test").expect("AAAA").records,
        vec![Ipv6Addr::LOCALHOST]
    );
    assert_eq!(
        r.a("mx2.example.test").expect("A").records,
        vec![Ipv4Addr::new(127, 0, 0, 2)]
    );

    // NXDOMAIN.
    let err = r.mx("nosuch.example.test").expect_err("NXDOMAIN");
    assert_eq!(err.kind, DnsErrorKind::NotFound, "{err:?}");
    assert_eq!(err.reason, "Host not found");
    let err = r.a("nosuch.test").expect_err("NXDOMAIN");
    assert_eq!(err.kind, DnsErrorKind::NotFound, "{err:?}");

    // NODATA.
    let err = r.aaaa("nodata.example.test").expect_err("NODATA");
    assert_eq!(err.kind, DnsErrorKind::NoData, "{err:?}");
    assert_eq!(err.reason, "Host found but no data record of type AAAA");
    let err = r.mx("mx2.example.test").expect_err("NODATA");
    assert_eq!(err.kind, DnsErrorKind::NoData, "{err:?}");

    // Null MX.
    let null = r.mx("nullmx.test").expect("null MX").records;
    assert_eq!(null, vec![mx(0, "")]);
    assert!(null[0].is_null());

    // IDNA: sent as an A-label; dnsmasq has no such name.
    assert_eq!(
        r.mx("bücher.test").expect_err("NXDOMAIN").kind,
        DnsErrorKind::NotFound
    );

    // Invalid name: no query at all.
    assert_eq!(
        r.mx("bad name.test").expect_err("invalid").kind,
        DnsErrorKind::Invalid
    );
}

#[test]
fn unanswered_forward_is_retry_within_the_timeout() {
    let Some(peer) = Dnsmasq::start() else {
        return;
    };
    let timeout = Duration::from_millis(400);
    let attempts = 2;
    let r = StubResolver::new(StubSettings {
        nameservers: vec![peer.addr],
        timeout,
        attempts,
        cache_max_entries: 1000,
    })
    .expect("resolver");
    let limit = timeout * attempts + Duration::from_secs(1);
    for name in ["host.blackhole.test", "host.servfail.test"] {
        let started = Instant::now();
        let err = r.mx(name).expect_err("no answer upstream");
        let elapsed = started.elapsed();
        assert_eq!(err.kind, DnsErrorKind::Retry, "{name}: {err:?}");
        assert!(elapsed < limit, "{name}: took {elapsed:?}");
        eprintln!("{name}: {} after {elapsed:?}", err.reason);
    }
}

#[test]
fn throughput_eight_threads_against_dnsmasq() {
    let Some(peer) = Dnsmasq::start() else {
        return;
    };
    let r = Arc::new(
        StubResolver::new(StubSettings {
            nameservers: vec![peer.addr],
            timeout: Duration::from_secs(2),
            attempts: 2,
            cache_max_entries: 0,
        })
        .expect("resolver"),
    );
    let run_for = Duration::from_secs(1);
    let started = Instant::now();
    let workers: Vec<_> = (0..BENCH_THREADS)
        .map(|t| {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let mut done = 0u64;
                let mut failed = 0u64;
                let mut i = 0;
                while started.elapsed() < run_for {
                    match r.mx(&bench_name(t, i % BENCH_NAMES)) {
                        Ok(answer) => assert_eq!(answer.records, vec![mx(10, "mx1.example.test")]),
                        Err(_) => failed += 1,
                    }
                    done += 1;
                    i += 1;
                }
                (done, failed)
            })
        })
        .collect();
    let mut total = 0;
    let mut failed = 0;
    for w in workers {
        let (d, f) = w.join().expect("worker");
        total += d;
        failed += f;
    }
    let elapsed = started.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "dnsmasq throughput: {total} MX lookups from {BENCH_THREADS} threads in {elapsed:.2?} \
         = {rate:.0} lookups/s ({failed} failed, cache off)"
    );
    eprintln!("dnsmasq throughput: {rate:.0} lookups/s");
    assert!(total > 0);
}
