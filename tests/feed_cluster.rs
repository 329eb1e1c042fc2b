//! The Redis Streams feed on a real Redis Cluster (`[feed] cluster =
//! true`): three masters on loopback started by the test, three job
//! streams whose hash tags land on the three masters, each answered in
//! its own results stream (`results_stream = "$stream:results"`), two
//! daemons sharing them: every job answered exactly once in its stream's
//! results stream and delivered once at the sink; with retries, a deferred
//! recipient retried on its stream's slot and expired. And a configuration
//! whose keys are not on one slot per stream refuses to start.
//!
//! The peer is an in-process SMTP server counting accepted messages per
//! recipient (450 to "defer..."). Without redis-server or redis-cli the cluster tests print
//! SKIPPED and passes, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::counting_sink::CountingSink;
use common::daemon::{Daemon, Reaped, daemon_command};
use common::redis::RedisCluster;
use common::run::Workdir;
use mailhop::feed::slot::slot;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);
const MESSAGE: &str = "Subject: cluster\r\n\r\nhello\r\n";
const JOBS_PER_STREAM: usize = 100;

fn config(work: &Workdir, url: &str, consumer: &str, streams: &[String], results: &str) -> String {
    format!(
        "[smtp]\nconnect_timeout = \"5s\"\nquit_timeout = \"2s\"\n\n\
         [daemon]\nsocket = {:?}\nworkers = 4\nqueue_capacity = 32\n\n\
         [feed]\nenabled = true\ncluster = true\nredis_url = {url:?}\nstreams = {streams:?}\n\
         results_stream = {results:?}\nconsumer = {consumer:?}\nclaim_after = \"5s\"\n",
        work.path().join("m.sock").display().to_string(),
    )
}

/// Three hash tags whose slots are served by three different masters.
fn spread_streams(cluster: &RedisCluster) -> Vec<String> {
    let mut by_master: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0..1000 {
        let stream = format!("{{s{i}}}:jobs");
        let slot = slot(stream.as_bytes());
        // The server agrees with mailhop's slot function.
        let keyslot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&stream)
            .query(&mut cluster.node(cluster.ports[0]))
            .expect("CLUSTER KEYSLOT");
        assert_eq!(keyslot, i64::from(slot), "slot of {stream}");
        by_master.entry(cluster.master_of(slot)).or_insert(stream);
        if by_master.len() == 3 {
            break;
        }
    }
    assert_eq!(
        by_master.len(),
        3,
        "no tags on three masters: {by_master:?}"
    );
    by_master.into_values().collect()
}

/// The "result" JSONs of `results_stream`.
fn results(con: &mut redis::cluster::ClusterConnection, results_stream: &str) -> Vec<Value> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(results_stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE results");
    reply
        .ids
        .into_iter()
        .filter_map(|e| e.map.get("result").cloned())
        .filter_map(|v| redis::from_redis_value::<String>(v).ok())
        .map(|v| serde_json::from_str(&v).expect("result JSON"))
        .collect()
}

fn xlen(con: &mut redis::cluster::ClusterConnection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(con).unwrap_or(0)
}

#[test]
fn streams_on_three_masters_are_answered_once_each_in_their_own_results_stream() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let streams = spread_streams(&cluster);
    let sink = CountingSink::start();
    let nodes: Vec<Daemon> = ["n1", "n2"]
        .iter()
        .map(|name| {
            let work = Workdir::new();
            let text = config(&work, &cluster.url(), name, &streams, "$stream:results");
            Daemon::start_text(&work, &text, LIMIT).owning(work)
        })
        .collect();
    let logs = || {
        nodes
            .iter()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let mut con = cluster.conn();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (s, stream) in streams.iter().enumerate() {
        let mut pipe = redis::cluster::cluster_pipe();
        for i in 0..JOBS_PER_STREAM {
            let id = format!("s{s}-j{i}");
            let job = json!({
                "id": id,
                "nexthop": sink.nexthop(),
                "sender": "a@x.test",
                "recipients": [{"address": format!("{id}@y.test")}],
                "message": {"data": MESSAGE},
            });
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("job")
                .arg(job.to_string())
                .ignore();
            expected.insert(id, format!("{stream}:results"));
        }
        pipe.query::<()>(&mut con).expect("XADD jobs");
    }
    let total = streams.len() * JOBS_PER_STREAM;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answered: usize = streams
            .iter()
            .map(|s| xlen(&mut con, &format!("{s}:results")))
            .sum();
        if answered >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of {total} answered: {}",
            logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Late duplicates would show after a short while.
    thread::sleep(Duration::from_millis(500));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for stream in &streams {
        let results_stream = format!("{stream}:results");
        let answers = results(&mut con, &results_stream);
        assert_eq!(answers.len(), JOBS_PER_STREAM, "{results_stream}");
        for answer in answers {
            let id = answer["id"].as_str().unwrap_or("").to_string();
            assert_eq!(answer["recipients"][0]["status"], "sent", "{answer}");
            assert!(
                seen.insert(id.clone(), results_stream.clone()).is_none(),
                "{id} answered twice"
            );
        }
        // Everything acknowledged.
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(stream)
            .arg("mailhop")
            .query(&mut con)
            .expect("XPENDING");
        assert_eq!(pending.0, 0, "{stream} pending");
    }
    assert_eq!(seen, expected, "each job in its stream's results stream");
    let counts = sink.counts();
    for id in expected.keys() {
        assert_eq!(
            counts.get(&format!("{id}@y.test")),
            Some(&1),
            "{id} at the sink"
        );
    }
    assert_eq!(counts.len(), total);
    // The destination limits ran on the cluster too, and nothing was
    // refused for its slots.
    let logs = logs();
    assert_eq!(
        logs.matches("destination limits shared with the other nodes through Redis")
            .count(),
        2,
        "{logs}"
    );
    for bad in [
        "cluster limits: Redis unreachable",
        "CROSSSLOT",
        "Redis unreachable",
    ] {
        assert!(!logs.contains(bad), "{bad}: {logs}");
    }
    // feed status sees the per-stream results streams.
    let status = std::process::Command::new(common::daemon::mailhop_bin())
        .args(["feed", "status", "--config"])
        .arg(&nodes[0].config)
        .output()
        .expect("mailhop feed status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text} {status:?}");
    for stream in &streams {
        assert!(
            text.contains(&format!(
                "results {stream}:results: length {JOBS_PER_STREAM}"
            )),
            "{text}"
        );
    }
}

/// With retries on a cluster: a deferred recipient goes back to its own
/// stream (the answer script's retry keys and the promotion script on the
/// stream's slot) and expires, its bounce in its stream's results stream.
#[test]
fn a_deferred_recipient_is_retried_on_its_streams_slot_then_expires() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let streams = spread_streams(&cluster);
    let sink = CountingSink::start();
    let work = Workdir::new();
    let text = config(&work, &cluster.url(), "n1", &streams, "$stream:results")
        + "retries = true\nminimal_backoff_time = \"1s\"\nmaximal_backoff_time = \"1s\"\n\
           maximal_queue_lifetime = \"2s\"\n";
    let node = Daemon::start_text(&work, &text, LIMIT).owning(work);
    let mut con = cluster.conn();
    for (s, stream) in streams.iter().enumerate() {
        let job = json!({
            "id": format!("retry-{s}"),
            "nexthop": sink.nexthop(),
            "sender": "a@x.test",
            "recipients": [{"address": format!("defer{s}@y.test")}],
            "message": {"data": MESSAGE},
        });
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("job")
            .arg(job.to_string())
            .query(&mut con)
            .expect("XADD");
    }
    let deadline = Instant::now() + LIMIT;
    for (s, stream) in streams.iter().enumerate() {
        let results_stream = format!("{stream}:results");
        let answers = loop {
            let answers = results(&mut con, &results_stream);
            if answers.iter().any(|r| {
                r["recipients"][0]["status"] == "bounced"
                    && r["log"].to_string().contains("status=expired")
            }) {
                break answers;
            }
            assert!(
                Instant::now() < deadline,
                "no expiry in {results_stream}: {answers:?} {}",
                node.log()
            );
            thread::sleep(Duration::from_millis(100));
        };
        // At least two attempts, all of this stream's job.
        assert!(answers.len() >= 3, "{answers:?}");
        for answer in &answers {
            assert_eq!(answer["id"], format!("retry-{s}"), "{answer}");
        }
        let waiting: usize = redis::cmd("ZCARD")
            .arg(format!("{stream}:retry"))
            .query(&mut con)
            .expect("ZCARD");
        assert_eq!(waiting, 0, "{stream}:retry");
    }
}

#[test]
fn keys_of_one_stream_on_two_slots_refuse_the_start() {
    let work = Workdir::new();
    let streams = vec!["{s0}:jobs".to_string(), "{s1}:jobs".to_string()];
    assert_ne!(slot(b"{s0}:jobs"), slot(b"{s1}:jobs"));
    // Nothing listens there: the check comes before any connection.
    let url = format!("redis://127.0.0.1:{}/", common::free_port());
    let text = config(&work, &url, "n1", &streams, "mailhop:results");
    let config = work.file("mailhop.toml", text.as_bytes());
    let log = work.path().join("daemon.log");
    let mut cmd = daemon_command(&config);
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut daemon = Reaped(cmd.spawn().expect("spawn mailhop daemon"));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not refuse to start"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(78), "EX_CONFIG: {text}");
    assert!(text.contains("feed.cluster"), "{text}");
    assert!(text.contains("\"{s0}:jobs\""), "{text}");
    assert!(
        text.contains("results stream \"mailhop:results\""),
        "{text}"
    );
    assert!(
        text.contains("results_stream = \"$stream:results\""),
        "{text}"
    );
}

#[test]
fn config_check_refuses_keys_of_one_stream_on_two_slots() {
    let work = Workdir::new();
    let streams = vec!["{s0}:jobs".to_string(), "{s1}:jobs".to_string()];
    let url = format!("redis://127.0.0.1:{}/", common::free_port());
    let bad = work.file(
        "bad.toml",
        config(&work, &url, "n1", &streams, "mailhop:results").as_bytes(),
    );
    let run = common::run::run_mailhop(
        &work,
        &["config".into(), "check".into(), bad.clone().into()],
        None,
    );
    assert_eq!(run.code, 78, "{run:#?}");
    assert!(run.stderr.contains("feed: "), "{run:#?}");
    assert!(run.stderr.contains("\"{s0}:jobs\""), "{run:#?}");
    let good = work.file(
        "good.toml",
        config(&work, &url, "n1", &streams, "$stream:results").as_bytes(),
    );
    let run = common::run::run_mailhop(
        &work,
        &["config".into(), "check".into(), good.clone().into()],
        None,
    );
    assert_eq!(run.code, 0, "{run:#?}");
}
