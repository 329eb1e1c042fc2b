#!/usr/bin/env python3
"""Scenario 9: a throttling receiver. throttler.py on 127.0.0.1 answers
"421 4.7.0 Too many connections" to a connection beyond 5 concurrent ones
from the client, and "451 4.7.0 Rate limit exceeded" (to RCPT) to a
message beyond 200 in the last second; it accepts everything else and
counts every 4xx it sent and every message it accepted. THROTTLE_N jobs
(1 KiB, one recipient, nexthop [127.0.0.1]:PORT) are submitted at once.

Two runs per repetition, each on a fresh daemon and a fresh receiver:
"shaping on", mailhop's default configuration (only the socket set:
[shaping] at its defaults, 64 workers, connection cache on demand), and
"shaping off", the same with [shaping] enabled = false (mailhop before
issue 14: the jobs that meet a 4xx are answered deferred at once, which is
expected). Targets: with shaping on, >= 99 % of the recipients sent within
the run; the receiver's 4xx count with shaping off / with shaping on >= 5
(a run without a single 4xx counts as 1). A tree without the [shaping]
table runs "shaping on" with its defaults and "shaping off" is the same.
Environment: THROTTLE_N (10000; QUICK 2000), THROTTLE_TIMEOUT (seconds a
run may take, 300; QUICK 120), REPS (1), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import json
import os
import time

from benchlib import (HERE, Bench, env_int, free_port, has_key, median, rnd, say, target,
                      wait_path, write_result)

n = env_int("THROTTLE_N", 10000, quick=2000)
limit_s = env_int("THROTTLE_TIMEOUT", 300, quick=120)
reps = env_int("REPS", 1)
max_conns, rate = 5, 200
b = Bench("s9")
msg = b.message(1024)
shaping = has_key("shaping.enabled")
if not shaping:
    say("s9: this tree has no [shaping] table: both runs are the same (no shaping)")


def receiver(name):
    port = free_port()
    stats = b.path(f"{name}.stats.json")
    out = b.path(f"{name}.out")
    p = b.spawn([sys.executable, os.path.join(HERE, "throttler.py"), "--listen",
                 f"127.0.0.1:{port}", "--stats", stats, "--max-conns", str(max_conns),
                 "--rate", str(rate), "--lifetime", str(limit_s + 120)], stdout=out, stderr=out)
    if not wait_path(stats, limit=10, proc=p):
        raise SystemExit(f"bench: throttler.py did not start: {open(out).read()[-500:]}")
    return p, port, stats


def run(mode, rep):
    name = f"{mode}{rep}"
    p, port, stats = receiver(f"throttler-{name}")
    config = "[daemon]\n"
    if mode == "off" and shaping:
        config += "\n[shaping]\nenabled = false\n"
    d = b.daemon(config, name=f"mailhop-{name}")
    r = b.submit(["throughput", "--socket", d.sock, "--jobs", n, "--conns", 4,
                  "--message", msg, "--nexthop", f"[127.0.0.1]:{port}", "--pid", d.pid,
                  "--timeout", limit_s, "--id-prefix", f"{name}-", "--status"],
                 limit=limit_s + 60)
    d.stop()
    b.forget(p)  # SIGTERM: it writes its final counters
    with open(stats) as f:
        c = json.load(f)
    st = r["statuses"]
    out = {"seconds": r["seconds"], "complete": r["complete"], "timed_out": r.get("timed_out"),
           "statuses": st, "sent_share": rnd(st["sent"] / n, 4),
           "sent_per_s": rnd(st["sent"] / r["seconds"]) if r["seconds"] else None,
           "replies_4xx": c["replies_4xx"], "refused_421": c["refused_421"],
           "rate_451": c["rate_451"], "accepted": c["accepted"], "sessions": c["sessions"],
           "max_sessions": c["max_active"],
           "cpu_us_per_msg": (r.get("daemon") or {}).get("cpu_us_per_job"),
           "rss_kb": (r.get("daemon") or {}).get("vmhwm_kb"),
           "not_sent_samples": r.get("not_sent_samples"),
           "paused": (r.get("daemon_status") or {}).get("paused")}
    say(f"s9 rep {rep + 1}/{reps}: shaping {mode}: sent {st['sent']}/{n} "
        f"({out['sent_share']:.1%}) in {r['seconds']} s, {c['replies_4xx']} 4xx "
        f"({c['refused_421']} x 421, {c['rate_451']} x 451), {c['sessions']} sessions "
        f"(most at once {c['max_active']}), {st}")
    return out


on, off = [], []
for rep in range(reps):
    for mode in (("on", "off") if rep % 2 == 0 else ("off", "on")):
        (on if mode == "on" else off).append(run(mode, rep))
        time.sleep(1)

share = median([r["sent_share"] for r in on])
ratios = [f["replies_4xx"] / max(o["replies_4xx"], 1) for o, f in zip(on, off)]
ratio = rnd(median(ratios), 2) if ratios else None


def row(label, runs, note):
    rss = median([r["rss_kb"] for r in runs])
    return {"client": label, "msgs_per_s": median([r["sent_per_s"] for r in runs]),
            "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None,
            "sessions": median([r["sessions"] for r in runs]),
            "note": note.format(
                sent=median([r["sent_share"] for r in runs]),
                x=median([r["replies_4xx"] for r in runs]),
                c=median([r["refused_421"] for r in runs]),
                m=median([r["rate_451"] for r in runs]),
                s=median([r["seconds"] for r in runs]))}


note = "sent {sent:.1%} in {s} s; 4xx {x} (421: {c}, 451: {m})"
write_result(9, {
    "title": f"throttling receiver ({max_conns} sessions, {rate} msg/s)",
    "params": {"n": n, "max_conns": max_conns, "rate": rate, "reps": reps,
               "shaping_table": shaping},
    "rows": [row("mailhop, [shaping] enabled = false", off, note),
             row("mailhop, default configuration (shaping)", on, note)],
    "targets": [target("S9 shaping on: share of recipients sent", share, ">=", 0.99),
                target("S9 receiver 4xx replies, shaping off / shaping on", ratio, ">=", 5.0,
                       "x")],
    "runs": {"on": on, "off": off},
})
