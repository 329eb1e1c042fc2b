#!/usr/bin/env python3
"""Scenario 4: dead primaries. Two sets of DOMAINS domains on the scenario-3
setup: "h" all healthy, and "d" where every 5th domain (20 %) has a
blackholed primary MX (SYNs dropped: blackhole.py) and a live backup.
[smtp] connect_timeout = 2s, workers = S4_WORKERS (500). Each repetition
runs both sets, each on a fresh daemon after an untimed warm-up pass over
the same domains (warm DNS cache; scenario 3 measures cold DNS), alternating
which set goes first.

Figures: R0 = all-healthy throughput (jobs / time to the last result);
R_h = healthy-domain throughput in the dead run (healthy jobs / time to the
last healthy result); D = share of worker time the dead-primary jobs held
during that window (each dead job holds a worker for its delays b+c+d from
the daemon's log line, ending when its result arrived).
Target: R_h >= (1 - D) x R0. The default 500 workers exceed the 400 dead
jobs, so healthy jobs always find a free worker and D stays below 1; with
fewer workers than dead jobs every worker ends up waiting on a dead primary
(D -> 1) and the target says nothing.
Environment: DOMAINS (2000; QUICK 500), S4_WORKERS (500), REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import time

from benchlib import (Bench, env_int, has_key, median, order, rnd, say, target, udp_rcvbuf_errors,
                      write_result)
from manydomains import ManyDomains, worker_seconds

domains = env_int("DOMAINS", 2000, quick=500)
workers = env_int("S4_WORKERS", 500)
reps = env_int("REPS", 3)
timeout_s = 2
b = Bench("s4")
md = ManyDomains(b, domains, sets=(("h", 0), ("d", 5)))
msg = b.message(1024)
cfg = md.config(workers, connect_timeout=f"{timeout_s}s")
# Scenario 4 measures what dead primaries cost when every job meets them
# (Postfix's behaviour); scenario 11 is the same with health memory.
if has_key("smtp.address_health"):
    cfg = cfg.replace("[smtp]\n", "[smtp]\naddress_health = false\n", 1)
healthy, dead = [], []


def run(prefix, rep):
    d = b.daemon(cfg, name=f"mailhop-{prefix}{rep}")
    times = b.path(f"times-{prefix}{rep}.txt")
    # Warm-up: the same domains once, so the measured run finds the MX and
    # address records in the daemon's DNS cache (500 cold lookups at once
    # overflow dnsmasq's socket buffer: scenario 3 measures DNS). Then wait
    # for the cached SMTP sessions to expire ([cache] time_limit 2s).
    b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
              "--domains-file", md.files[prefix], "--message", msg,
              "--id-prefix", f"w{prefix}{rep}-"])
    time.sleep(2.5)
    s0 = md.sessions()
    u0 = udp_rcvbuf_errors()
    r = b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
                  "--domains-file", md.files[prefix], "--message", msg, "--pid", d.pid,
                  "--dump-times", times, "--id-prefix", f"{prefix}{rep}-", "--status"])
    d.stop()
    u1 = udp_rcvbuf_errors()
    out = {"udp_rcvbuf_drops": (u1 - u0) if u0 is not None else None,
           "complete": r["complete"], "statuses": r["statuses"], "seconds": r["seconds"],
           "jobs_per_s": r["jobs_per_s"], "groups": r["groups"],
           "sessions": md.sessions() - s0, "rss_kb": (r.get("daemon") or {}).get("vmhwm_kb"),
           "cpu_us_per_msg": (r.get("daemon") or {}).get("cpu_us_per_job"),
           "not_sent_samples": r.get("not_sent_samples")}
    if prefix == "d":
        g = r["groups"].get("healthy", {})
        t_h = g.get("last_s") or r["seconds"]
        held = worker_seconds(d.log)
        busy = 0.0
        ndead = 0
        with open(times) as f:
            for line in f:
                jid, group, t = line.split()
                if group != "dead":
                    continue
                ndead += 1
                end = float(t)
                start = end - held.get(jid, timeout_s)
                busy += max(0.0, min(end, t_h) - max(start, 0.0))
        out.update({
            "healthy_jobs": g.get("jobs"), "healthy_last_s": t_h,
            "healthy_jobs_per_s": rnd(g.get("jobs", 0) / t_h) if t_h else None,
            "dead_jobs": ndead, "dead_share": rnd(busy / (workers * t_h), 3) if t_h else None,
            "dead_logged": sum(1 for k in held if k.startswith(f"{prefix}{rep}-")),
            "lower_bound_s": rnd(ndead * timeout_s / workers, 2),
        })
    return out


for rep in range(reps):
    for who in order(rep):
        if who == "peer":
            r = run("h", rep)
            healthy.append(r)
            say(f"s4 rep {rep + 1}/{reps}: all healthy: {r['jobs_per_s']} jobs/s "
                f"({r['seconds']} s), {r['statuses']}")
        else:
            r = run("d", rep)
            dead.append(r)
            say(f"s4 rep {rep + 1}/{reps}: 20% dead primaries: healthy {r['healthy_jobs_per_s']} "
                f"jobs/s (last healthy result at {r['healthy_last_s']} s), dead share of workers "
                f"{r['dead_share']}, all done in {r['seconds']} s (bound {r['lower_bound_s']} s),"
                f" {r['statuses']}")

r0 = median([r["jobs_per_s"] for r in healthy])
rh = median([r["healthy_jobs_per_s"] for r in dead])
dshare = median([r["dead_share"] for r in dead])
# Per repetition: R_h / ((1 - D) x R0), paired with the same repetition's R0.
margins = [d_["healthy_jobs_per_s"] / ((1 - d_["dead_share"]) * h["jobs_per_s"])
           for d_, h in zip(dead, healthy)
           if d_["healthy_jobs_per_s"] and h["jobs_per_s"] and d_["dead_share"] is not None
           and d_["dead_share"] < 1]
margin = rnd(median(margins), 2) if margins else None
ok = all(r["complete"] and r["statuses"]["sent"] == domains for r in healthy + dead)


def rss(runs):
    v = median([r["rss_kb"] for r in runs])
    return rnd(v / 1024, 1) if v else None


rows = [
    {"client": f"mailhop, {domains} healthy domains, workers={workers}", "msgs_per_s": r0,
     "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in healthy]), "rss_mb": rss(healthy),
     "sessions": median([r["sessions"] for r in healthy]), "note": "R0"},
    {"client": "mailhop, 20% dead primaries: healthy domains", "msgs_per_s": rh,
     "ratio": rnd(rh / r0, 2) if rh and r0 else None,
     "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in dead]), "rss_mb": rss(dead),
     "sessions": median([r["sessions"] for r in dead]),
     "note": f"dead share D={dshare}, (1-D)xR0={rnd((1 - dshare) * r0) if dshare is not None else '-'}"
             f"; all {domains} in {median([r['seconds'] for r in dead])} s"},
]
write_result(4, {
    "title": "dead primaries (20 % of domains, connect_timeout 2s)",
    "params": {"domains": domains, "workers": workers, "connect_timeout_s": timeout_s,
               "reps": reps},
    "rows": rows,
    "targets": [target("S4 healthy throughput / ((1 - dead share) x all-healthy)", margin, ">=",
                       1.0, "x"),
                target("S4 every recipient sent (dead ones via the backup)", 1 if ok else 0,
                       ">=", 1)],
    "runs": {"healthy": healthy, "dead": dead},
})
