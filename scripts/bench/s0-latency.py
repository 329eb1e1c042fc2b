#!/usr/bin/env python3
"""Latency: job round trip on a warm cached connection. One client
connection, one job at a time (submit -> result), after a warm-up that
leaves an SMTP session to the sink in the connection cache (cache hints
and [cache] destinations). Reference: "smtp-source -d -s 1", whose
elapsed / messages is the mean time of one SMTP transaction on a reused
connection without any job protocol. Targets: p50 < 1 ms, p99 < 5 ms.
Environment: LAT_N (2000; QUICK 500), REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
from benchlib import (Bench, env_int, free_port, median, order, rnd, say, shaping_unlimited,
                      target, write_result)

n = env_int("LAT_N", 2000, quick=500)
reps = env_int("REPS", 3)
b = Bench("lat")
port = free_port()
sink = b.sink(f"127.0.0.1:{port}")
msg = b.message(1024)
config = """[daemon]
workers = 20
[cache]
destinations = ["127.0.0.1"]
""" + shaping_unlimited(20)
mh, src = [], []
for rep in range(reps):
    for who in order(rep):
        if who == "peer":
            r = b.smtp_source(["-d", "-s", "1", "-m", str(n), "-l", "1024", sink.listen])
            per = r["seconds"] / n * 1000 if r["rc"] == 0 else None
            src.append({"mean_ms": rnd(per, 3), "cpu_us_per_msg": rnd(r["cpu_s"] * 1e6 / n)})
            say(f"latency rep {rep + 1}/{reps}: smtp-source -d -s 1: {rnd(per, 3)} ms/message")
        else:
            d = b.daemon(config)
            r = b.submit(["latency", "--socket", d.sock, "--jobs", n, "--warmup", 50,
                          "--message", msg, "--nexthop", f"[127.0.0.1]:{port}",
                          "--cache-hints", "--pid", d.pid, "--status"])
            d.stop()
            lat = r.get("latency") or {}
            dm = r.get("daemon") or {}
            mh.append({"p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"),
                       "p99_ms": lat.get("p99_ms"), "max_ms": lat.get("max_ms"),
                       "mean_ms": lat.get("mean_ms"), "complete": r["complete"],
                       "statuses": r["statuses"], "cpu_us_per_msg": dm.get("cpu_us_per_job"),
                       "cache": (r.get("daemon_status") or {}).get("cache")})
            say(f"latency rep {rep + 1}/{reps}: mailhop: p50 {lat.get('p50_ms')} ms, "
                f"p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms, "
                f"cache {mh[-1]['cache']}")
p50 = median([r["p50_ms"] for r in mh])
p99 = median([r["p99_ms"] for r in mh])
rows = [
    {"client": "smtp-source -d -s 1 (mean per message)", "latency_p50_ms": None,
     "latency_mean_ms": median([r["mean_ms"] for r in src]),
     "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in src])},
    {"client": "mailhop job round trip, warm cached session", "latency_p50_ms": p50,
     "latency_p99_ms": p99, "latency_mean_ms": median([r["mean_ms"] for r in mh]),
     "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in mh])},
]
ok = all(r["complete"] and r["statuses"]["sent"] == n for r in mh)
write_result("lat", {
    "title": "job round-trip latency (one at a time, warm cached connection)",
    "params": {"n": n, "reps": reps, "warmup": 50},
    "rows": rows,
    "targets": [target("latency p50", p50, "<", 1.0, "ms"),
                target("latency p99", p99, "<", 5.0, "ms"),
                target("latency: every recipient sent", 1 if ok else 0, ">=", 1)],
    "runs": {"smtp_source": src, "mailhop": mh},
})
