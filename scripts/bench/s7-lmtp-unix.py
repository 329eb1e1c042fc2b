#!/usr/bin/env python3
"""Scenario 7: LMTP over a UNIX socket. 20,000 x 1 KiB messages with 5
recipients each to "smtp-sink -L unix:PATH", 20 concurrent sessions.
Peer: "smtp-source -L -d -r 5 -s 20 -m 20000 -l 1024 unix:PATH".
mailhop: daemon, workers = 20, LMTP jobs (transport "lmtp", nexthop
"unix:PATH") with cache hints, so sessions are reused as with -d.
Environment: LMTP_N (20000; QUICK 5000), LMTP_RCPTS (5), REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import os

from benchlib import (Bench, env_int, median, order, rnd, say, shaping_unlimited, target,
                      write_result)

n = env_int("LMTP_N", 20000, quick=5000)
rcpts = env_int("LMTP_RCPTS", 5)
reps = env_int("REPS", 3)
sessions = 20
b = Bench("s7")
sockdir = b.path("sock")
os.makedirs(sockdir)
os.chmod(sockdir, 0o1777)   # smtp-sink runs as nobody
sock = os.path.join(sockdir, "lmtp")
sink = b.sink(f"unix:{sock}", lmtp=True)
msg = b.message(1024)
config = f"""[daemon]
workers = {sessions}
[cache]
destinations = ["unix:{sock}"]
""" + shaping_unlimited(sessions)
src, mh = [], []
for rep in range(reps):
    for who in order(rep):
        s0 = sink.counters()
        if who == "peer":
            r = b.smtp_source(["-L", "-d", "-r", str(rcpts), "-s", str(sessions), "-m", str(n),
                               "-l", "1024", f"unix:{sock}"])
            s1 = sink.counters()
            ok = r["rc"] == 0
            src.append({"msgs_per_s": rnd(n / r["seconds"]) if ok else None,
                        "cpu_us_per_msg": rnd(r["cpu_s"] * 1e6 / n) if ok else None,
                        "rss_kb": r["rss_kb"], "sessions": s1[0] - s0[0],
                        "sink_msgs": s1[2] - s0[2]})
            say(f"s7 rep {rep + 1}/{reps}: smtp-source -L -d: {src[-1]['msgs_per_s']} msg/s, "
                f"{src[-1]['cpu_us_per_msg']} us CPU/msg")
        else:
            d = b.daemon(config)
            r = b.submit(["throughput", "--socket", d.sock, "--jobs", n, "--conns", sessions,
                          "--recipients", rcpts, "--transport", "lmtp",
                          "--nexthop", f"unix:{sock}", "--message", msg, "--cache-hints",
                          "--pid", d.pid, "--status"])
            d.stop()
            s1 = sink.counters()
            dm = r.get("daemon") or {}
            mh.append({"msgs_per_s": r["jobs_per_s"], "cpu_us_per_msg": dm.get("cpu_us_per_job"),
                       "rss_kb": dm.get("vmhwm_kb"), "threads": dm.get("threads_peak"),
                       "sessions": s1[0] - s0[0], "sink_msgs": s1[2] - s0[2],
                       "complete": r["complete"], "statuses": r["statuses"],
                       "client_cpu_s": r.get("client_cpu_s"),
                       "cache": (r.get("daemon_status") or {}).get("cache"),
                       "not_sent_samples": r.get("not_sent_samples")})
            say(f"s7 rep {rep + 1}/{reps}: mailhop: {r['jobs_per_s']} msg/s, "
                f"{mh[-1]['cpu_us_per_msg']} us CPU/msg, {mh[-1]['sessions']} sessions, "
                f"{r['statuses']}")


def row(label, runs, ratio=None):
    rss = median([r.get("rss_kb") for r in runs])
    return {"client": label, "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
            "ratio": ratio, "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None,
            "sessions": median([r["sessions"] for r in runs]),
            "threads": median([r.get("threads") for r in runs]) if runs and "threads" in runs[0]
            else None,
            "note": f"{rcpts} rcpt/msg"}


ratios = [a["msgs_per_s"] / p["msgs_per_s"] for a, p in zip(mh, src)
          if a["msgs_per_s"] and p["msgs_per_s"]]
ratio = rnd(median(ratios), 2) if ratios else None
ok = all(r["complete"] and r["statuses"]["sent"] == n * rcpts for r in mh)
write_result(7, {
    "title": "LMTP over a UNIX socket",
    "params": {"n": n, "recipients": rcpts, "sessions": sessions, "reps": reps},
    "rows": [row(f"smtp-source -L -d -r {rcpts} -s {sessions} -m {n}", src),
             row(f"mailhop daemon, LMTP, workers={sessions}, cache", mh, ratio)],
    "targets": [target("S7 every recipient sent", 1 if ok else 0, ">=", 1)],
    "runs": {"smtp_source": src, "mailhop": mh},
})
