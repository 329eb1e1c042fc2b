#!/usr/bin/env python3
"""Scenario 15: the Redis Streams feed (issue 18, docs/scale-out.md).
N x 1 KiB inline messages, one recipient each, to one smtp-sink, cached
sessions. One node fed by its UNIX socket (submit.py, 20 connections)
against the same node fed by Redis (the jobs XADDed to one stream, timed
until the last answer is in the results stream); then 1, 2 and 3 nodes on
one stream (figures only: the nodes share the machine's CPUs).
Peer: a throwaway redis-server on loopback (no persistence).
Environment: FEED_N (20000; QUICK 5000), REPS (3), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import json
import os
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from resp import Resp  # noqa: E402 - scripts/resp.py
from benchlib import (Bench, env_int, find_prog, free_port, median, order,  # noqa: E402
                      rnd, say, shaping_unlimited, target, wait_listen, write_result)

n = env_int("FEED_N", 20000, quick=5000)
reps = env_int("REPS", 3)
workers = 20
b = Bench("s15")
sink = b.sink(f"127.0.0.1:{free_port()}")
port = int(sink.listen.rsplit(":", 1)[1])
nexthop = f"[127.0.0.1]:{port}"
rport = free_port()
redis_dir = b.path("redis")
os.makedirs(redis_dir)
b.spawn([find_prog("redis-server"), "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
         "--appendonly", "no", "--dir", redis_dir, "--daemonize", "no"],
        stdout=b.path("redis.log"), stderr=b.path("redis.log"))
if not wait_listen("127.0.0.1", rport):
    raise SystemExit("bench: redis-server did not start")

r = Resp(rport)
body = ("La la la la la la la la la la la la la la la la la la la la la.\r\n" * 17)[:1024]
data = ("From: <bench@source.test>\r\nTo: <rcpt@sink.test>\r\nSubject: mailhop bench\r\n\r\n"
        + body)


def feed_config(consumer, stream, results):
    return (f"[daemon]\nworkers = {workers}\n[cache]\ndestinations = [\"127.0.0.1\"]\n"
            f"[feed]\nenabled = true\nredis_url = \"redis://127.0.0.1:{rport}/\"\n"
            f"streams = [\"{stream}\"]\nresults_stream = \"{results}\"\nconsumer = \"{consumer}\"\n"
            + shaping_unlimited(workers))


def redis_run(nodes, tag):
    stream, results = f"jobs-{tag}", f"results-{tag}"
    ds = [b.daemon(feed_config(f"n{i}", stream, results), name=f"node{i}-{tag}")
          for i in range(nodes)]
    # Built before the clock starts, as submit.py builds its job lines.
    chunks = [(Resp.encode([["XADD", stream, "*", "job", json.dumps({
        "id": f"F{i}", "nexthop": nexthop, "sender": "bench@source.test",
        "recipients": [{"address": f"r{i}@sink.test"}], "message": {"data": data},
        "cache": {"load": True, "store": True}})] for i in range(start, min(n, start + 1000))]),
        min(n, start + 1000) - start) for start in range(0, n, 1000)]
    s0 = sink.counters()
    cpu0 = [d.cpu_seconds() for d in ds]
    t0 = time.monotonic()
    for chunk, count in chunks:
        r.send_encoded(chunk, count)
    deadline = t0 + 600
    while time.monotonic() < deadline:
        if r.send([["XLEN", results]])[0] >= n:
            break
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    cpu = sum(d.cpu_seconds() - c for d, c in zip(ds, cpu0))
    rss = max((d.status("VmHWM") or 0) for d in ds)
    for d in ds:
        d.stop()
    got = r.send([["XLEN", results]])[0]
    sent = sum(json.loads(fields[1])["recipients"][0]["status"] == "sent"
               for _id, fields in r.send([["XRANGE", results, "-", "+"]])[0])
    s1 = sink.counters()
    r.send([["DEL", stream, results]])
    return {"msgs_per_s": rnd(n / seconds), "seconds": rnd(seconds, 2), "complete": got == n,
            "sent": sent, "cpu_us_per_msg": rnd(cpu * 1e6 / n), "rss_kb": rss,
            "sessions": s1[0] - s0[0], "sink_msgs": s1[2] - s0[2]}


def socket_run():
    d = b.daemon(f"[daemon]\nworkers = {workers}\n[cache]\ndestinations = [\"127.0.0.1\"]\n"
                 + shaping_unlimited(workers), name="socket")
    s0 = sink.counters()
    out = b.submit(["throughput", "--socket", d.sock, "--jobs", n, "--conns", workers,
                    "--nexthop", nexthop, "--inline-size", 1024, "--cache-hints",
                    "--pid", d.pid])
    d.stop()
    s1 = sink.counters()
    dm = out.get("daemon") or {}
    return {"msgs_per_s": out["jobs_per_s"], "complete": out["complete"],
            "sent": out["statuses"].get("sent"), "cpu_us_per_msg": dm.get("cpu_us_per_job"),
            "rss_kb": dm.get("vmhwm_kb"), "sessions": s1[0] - s0[0],
            "sink_msgs": s1[2] - s0[2]}


runs = {"socket": [], "redis1": [], "redis2": [], "redis3": []}
for rep in range(reps):
    for who in order(rep):
        if who == "peer":
            runs["socket"].append(socket_run())
            say(f"s15 rep {rep + 1}/{reps}: socket: {runs['socket'][-1]['msgs_per_s']} msg/s")
        else:
            runs["redis1"].append(redis_run(1, f"{rep}-1"))
            say(f"s15 rep {rep + 1}/{reps}: redis, 1 node: {runs['redis1'][-1]['msgs_per_s']} msg/s")
    for nodes in (2, 3):
        runs[f"redis{nodes}"].append(redis_run(nodes, f"{rep}-{nodes}"))
        say(f"s15 rep {rep + 1}/{reps}: redis, {nodes} nodes: "
            f"{runs[f'redis{nodes}'][-1]['msgs_per_s']} msg/s")


def row(label, rs, ratio=None):
    rss = median([x.get("rss_kb") for x in rs])
    return {"client": label, "msgs_per_s": median([x["msgs_per_s"] for x in rs]),
            "ratio": ratio, "cpu_us_per_msg": median([x["cpu_us_per_msg"] for x in rs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None,
            "sessions": median([x["sessions"] for x in rs]), "note": "1 KiB inline"}


ratios = [a["msgs_per_s"] / s["msgs_per_s"] for a, s in zip(runs["redis1"], runs["socket"])
          if a["msgs_per_s"] and s["msgs_per_s"]]
ratio = rnd(median(ratios), 2) if ratios else None
ok = all(x["complete"] and x["sent"] == n for rs in runs.values() for x in rs)
write_result(15, {
    "title": "Redis Streams feed: one node Redis vs socket; 1/2/3 nodes",
    "params": {"n": n, "workers": workers, "reps": reps},
    "rows": [row(f"mailhop daemon, socket, workers={workers}", runs["socket"]),
             row("mailhop daemon, Redis feed, 1 node", runs["redis1"], ratio),
             row("mailhop daemon, Redis feed, 2 nodes", runs["redis2"]),
             row("mailhop daemon, Redis feed, 3 nodes", runs["redis3"])],
    "targets": [target("S15 Redis feed / socket", ratio or 0, ">=", 0.8, "x"),
                target("S15 every job answered and sent", 1 if ok else 0, ">=", 1)],
    "runs": runs,
})
