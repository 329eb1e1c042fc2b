#!/usr/bin/env python3
"""Scenario 6: many slow sessions. 1,000 jobs (1 KiB, 1 recipient) to an
smtp-sink that waits SLOW_DELAY seconds (2) before answering DATA
("-W data:2"), with [daemon] workers = 1000, so all 1,000 sessions are in
flight at once. Measures the daemon's peak RSS (VmHWM), peak thread count,
peak open descriptors and the elapsed time (close to the delay when the
sessions really run in parallel). Peer: "smtp-source -s 1000 -m 1000" on
the same sink (its peak RSS from wait4). Target: peak RSS < 150 MB.
Environment: SLOW_N (1000; QUICK 500), SLOW_DELAY (2), SLOW_STACK (worker
stack bytes, default: mailhop's default [daemon] worker_stack_size),
REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import os

from benchlib import (Bench, env_int, free_port, median, order, rnd, say, shaping_unlimited,
                      target, write_result)

n = env_int("SLOW_N", 1000, quick=500)
delay = env_int("SLOW_DELAY", 2)
stack = os.environ.get("SLOW_STACK", "")
reps = env_int("REPS", 3)
b = Bench("s6")
port = free_port()
sink = b.sink(f"127.0.0.1:{port}", extra=["-m", str(n + 100), "-W", f"data:{delay}"],
              backlog=n + 100)
msg = b.message(1024)
config = f"""[daemon]
workers = {n}
queue_capacity = {n}
""" + (f"worker_stack_size = {stack}\n" if stack else "") + """[cache]
on_demand = false
""" + shaping_unlimited(n)
src, mh = [], []
for rep in range(reps):
    for who in order(rep):
        s0 = sink.counters()
        if who == "peer":
            r = b.smtp_source(["-s", str(n), "-m", str(n), "-l", "1024", sink.listen])
            s1 = sink.counters()
            src.append({"seconds": rnd(r["seconds"], 3), "rss_kb": r["rss_kb"],
                        "cpu_us_per_msg": rnd(r["cpu_s"] * 1e6 / n),
                        "msgs_per_s": rnd(n / r["seconds"]), "sessions": s1[0] - s0[0]})
            say(f"s6 rep {rep + 1}/{reps}: smtp-source -s {n}: {src[-1]['seconds']} s, "
                f"RSS {r['rss_kb']} kB")
        else:
            d = b.daemon(config)
            r = b.submit(["throughput", "--socket", d.sock, "--jobs", n, "--conns", 10,
                          "--message", msg, "--nexthop", f"[127.0.0.1]:{port}",
                          "--pid", d.pid, "--sample-interval", 0.05, "--status"])
            d.stop()
            s1 = sink.counters()
            dm = r.get("daemon") or {}
            mh.append({"seconds": r["seconds"], "rss_kb": dm.get("vmhwm_kb"),
                       "threads": dm.get("threads_peak"), "fds": dm.get("fds_peak"),
                       "cpu_us_per_msg": dm.get("cpu_us_per_job"), "msgs_per_s": r["jobs_per_s"],
                       "sessions": s1[0] - s0[0], "complete": r["complete"],
                       "statuses": r["statuses"], "not_sent_samples": r.get("not_sent_samples")})
            say(f"s6 rep {rep + 1}/{reps}: mailhop: {r['seconds']} s, VmHWM {dm.get('vmhwm_kb')} kB,"
                f" {dm.get('threads_peak')} threads, {dm.get('fds_peak')} fds, {r['statuses']}")


def row(label, runs):
    rss = median([r["rss_kb"] for r in runs])
    out = {"client": label, "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
           "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs]),
           "rss_mb": rnd(rss / 1024, 1) if rss else None,
           "sessions": median([r["sessions"] for r in runs]),
           "note": f"elapsed {median([r['seconds'] for r in runs])} s (sink delay {delay} s)"}
    if runs and "threads" in runs[0]:
        out["threads"] = median([r["threads"] for r in runs])
        out["note"] += f", {median([r['fds'] for r in runs])} fds"
    return out


rows = [row(f"smtp-source -s {n} -m {n}", src),
        row(f"mailhop daemon, workers={n}" + (f", stack {stack}" if stack else ""), mh)]
ok = all(r["complete"] and r["statuses"]["sent"] == n for r in mh)
write_result(6, {
    "title": f"{n} slow sessions",
    "params": {"n": n, "delay_s": delay, "worker_stack_size": stack or "default", "reps": reps},
    "rows": rows,
    "targets": [target(f"S6 peak RSS with {n} sessions", rows[1]["rss_mb"], "<", 150, "MB"),
                target("S6 every recipient sent", 1 if ok else 0, ">=", 1)],
    "runs": {"smtp_source": src, "mailhop": mh},
})
