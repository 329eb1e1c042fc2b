#!/usr/bin/env python3
"""Scenario 10: head-of-line blocking. Two destinations with explicit next
hops: a slow one, [127.0.0.2]:PORT, throttler.py --delay 1 (every reply,
the greeting included, 1 s late), and a fast one, [127.0.0.3]:PORT,
smtp-sink. mailhop's default configuration (shaping on: at most 20
deliveries in progress per destination; 64 workers).

Per repetition, each on a fresh daemon: "alone", HOL_N jobs to the fast
destination only; "shared", HOL_N jobs to each, submitted interleaved
(slow, fast, slow, ...) on HOL_CONNS client connections (3: an odd
number, so every connection carries both destinations); "split", the
same jobs with each destination on its own 2 client connections (the
slow submitter starts 0.5 s first), which tells blocking per destination from
blocking per client connection. A mixed run stops once every fast job is
answered (or after HOL_TIMEOUT seconds); the slow jobs left are then
answered by the daemon's shutdown ([daemon] shutdown_timeout = 2s).
Fast throughput = fast jobs / time to the last fast result (when they do
not all finish: the fast results / the run's time). Target, per mixed
mode: fast throughput >= 0.8 x alone (per repetition, median).
Environment: HOL_N (5000; QUICK 1000), HOL_CONNS (3), HOL_TIMEOUT (45;
QUICK 20), HOL_MODES ("shared split"), REPS (3; QUICK 1), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import json
import os
import subprocess
import time

from benchlib import (HERE, Bench, env_int, free_port, has_key, median, rnd, say, target,
                      wait_path, write_result)

n = env_int("HOL_N", 5000, quick=1000)
conns = env_int("HOL_CONNS", 3)
limit_s = env_int("HOL_TIMEOUT", 45, quick=20)
modes = os.environ.get("HOL_MODES", "shared split").split()
if not modes or any(m not in ("shared", "split") for m in modes):
    raise SystemExit('bench: HOL_MODES: "shared", "split" or both')
reps = env_int("REPS", 3, quick=1)
b = Bench("s10")
msg = b.message(1024)
fast_port = free_port("127.0.0.3")
fast = b.sink(f"127.0.0.3:{fast_port}", backlog=1000, name="fast-sink")
slow_port = free_port("127.0.0.2")
slow_stats = b.path("slow.stats.json")
slow_out = b.path("slow.out")
slow = b.spawn([sys.executable, os.path.join(HERE, "throttler.py"), "--listen",
                f"127.0.0.2:{slow_port}", "--stats", slow_stats, "--delay", "1",
                "--lifetime", "3000"], stdout=slow_out, stderr=slow_out)
if not wait_path(slow_stats, limit=10, proc=slow):
    raise SystemExit(f"bench: throttler.py did not start: {open(slow_out).read()[-500:]}")
fast_nh = f"[127.0.0.3]:{fast_port}"
slow_nh = f"[127.0.0.2]:{slow_port}"
shaping = has_key("shaping.enabled")
config = "[daemon]\n" + ('shutdown_timeout = "2s"\n' if has_key("daemon.shutdown_timeout")
                         else "")
files = {}
for name, lines in (("alone", [f"fast.test fast {fast_nh}"]),
                    ("slow", [f"slow.test slow {slow_nh}"]),
                    ("mixed", [f"slow.test slow {slow_nh}", f"fast.test fast {fast_nh}"])):
    files[name] = b.path(f"{name}.txt")
    with open(files[name], "w") as f:
        f.write("\n".join(lines) + "\n")


def slow_accepted():
    try:
        with open(slow_stats) as f:
            return json.load(f).get("accepted", 0)
    except (OSError, ValueError):
        return 0


def submit(d, jobs, file, prefix, until=None, conns_=conns):
    args = ["throughput", "--socket", d.sock, "--jobs", jobs, "--conns", conns_,
            "--message", msg, "--domains-file", file, "--pid", d.pid, "--timeout", limit_s,
            "--id-prefix", prefix]
    if until:
        args += ["--until-group", until]
    return b.submit(args, limit=limit_s + 60)


def fast_rate(r, total):
    g = r["groups"].get("fast", {})
    if g.get("jobs", 0) >= total and g.get("last_s"):
        return rnd(total / g["last_s"]), g["last_s"]
    return rnd(g.get("jobs", 0) / max(r["seconds"], 1e-9)), None


runs = {"alone": [], "shared": [], "split": []}
for rep in range(reps):
    for who in (["alone"] + modes) if rep % 2 == 0 else (modes[::-1] + ["alone"]):
        d = b.daemon(config, name=f"mailhop-{who}{rep}")
        c0 = fast.counters()
        a0 = slow_accepted()
        slow_sub = None
        if who == "alone":
            r = submit(d, n, files["alone"], f"a{rep}-")
        elif who == "split":
            # Each destination on its own client connections, the slow
            # jobs first (their submitter starts first), both writing at once.
            slow_sub = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "submit.py"), "throughput", "--socket",
                 d.sock, "--jobs", str(n), "--conns", "2", "--message", msg, "--domains-file",
                 files["slow"], "--timeout", str(limit_s), "--id-prefix", f"s{rep}-"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            b.procs.append(slow_sub)
            time.sleep(0.5)  # its jobs are in before the fast ones start
            r = submit(d, n, files["alone"], f"p{rep}-", conns_=2)
        else:
            r = submit(d, 2 * n, files["mixed"], f"m{rep}-", until="fast")
        d.stop()
        if slow_sub is not None:
            b.forget(slow_sub)
        c1 = fast.counters()
        rate, last = fast_rate(r, n)
        g = r["groups"].get("fast", {})
        out = {"fast_per_s": rate, "fast_last_s": last, "fast_jobs": g.get("jobs", 0),
               "fast_sent": g.get("sent", 0), "seconds": r["seconds"],
               "slow_answered": r["groups"].get("slow", {}).get("jobs", 0),
               "slow_accepted": slow_accepted() - a0, "fast_sessions": c1[0] - c0[0],
               "cpu_us_per_msg": (r.get("daemon") or {}).get("cpu_us_per_job")}
        runs[who].append(out)
        say(f"s10 rep {rep + 1}/{reps}: {who}: fast {out['fast_jobs']}/{n} answered "
            f"({out['fast_sent']} sent), {rate} jobs/s"
            + (f" (last at {last} s)" if last else f" (not all within {limit_s} s)")
            + (f"; slow server accepted {out['slow_accepted']}" if who != "alone" else ""))


def ratio_of(mode):
    rs = [m["fast_per_s"] / a["fast_per_s"] for a, m in zip(runs["alone"], runs[mode])
          if a["fast_per_s"] and m["fast_per_s"] is not None]
    return rnd(median(rs), 3) if rs else None


labels = {"shared": f"{conns} shared client connections, interleaved",
          "split": "each destination on its own 2 connections"}
rows = [{"client": f"mailhop, {n} jobs to the fast sink alone",
         "msgs_per_s": median([r["fast_per_s"] for r in runs["alone"]]),
         "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs["alone"]]),
         "sessions": median([r["fast_sessions"] for r in runs["alone"]]), "note": "fast alone"}]
for mode in modes:
    rows.append({"client": f"mailhop, + {n} jobs to a 1 s-per-reply server ({labels[mode]})",
                 "msgs_per_s": median([r["fast_per_s"] for r in runs[mode]]),
                 "ratio": ratio_of(mode),
                 "sessions": median([r["fast_sessions"] for r in runs[mode]]),
                 "note": f"fast destination; {median([r['fast_jobs'] for r in runs[mode]])} "
                         f"answered; slow accepted "
                         f"{median([r['slow_accepted'] for r in runs[mode]])}"})
targets = []
for mode in modes:
    targets.append(target(f"S10 fast destination throughput mixed ({mode} connections) / "
                          "alone", ratio_of(mode), ">=", 0.8, "x"))
all_fast = all(r["fast_sent"] == n for m in ["alone"] + modes for r in runs[m])
targets.append(target("S10 every fast recipient sent", 1 if all_fast else 0, ">=", 1))
write_result(10, {
    "title": "head of line (1 s-per-reply destination mixed with a fast one)",
    "params": {"n": n, "conns": conns, "modes": modes, "timeout_s": limit_s, "reps": reps,
               "shaping_table": shaping},
    "rows": rows,
    "targets": targets,
    "runs": runs,
})
