#!/usr/bin/env python3
"""Scenario 11: blackholed addresses with address health memory. The
scenario-4 setup (S11_DOMAINS domains in dnsmasq twice: set "h" all healthy,
set "d" where every 5th domain has a blackholed primary MX on
127.0.0.50-59 and a live backup; connect_timeout = 2s, S11_WORKERS (500)
workers, an untimed warm-up pass over the same domains before each
measured one, a fresh daemon per pass pair) with [smtp] address_health =
true (the default where the key exists; address_health_time 300 s, far
longer than a run).

The dead addresses drop SYNs by iptables rules (benchlib.SynCounter): per
address, a rule matching the first SYN of each connection attempt and one
for its retransmissions, so the first rule's packet counter is the number
of connection attempts. Without iptables (not root, not installed) the
blackhole.py listeners drop the SYNs and the attempts are not counted.

Figures: R_h = healthy-domain throughput in the dead run (healthy jobs /
time to the last healthy result); R0 = the same for the same 80 % of the
domains (same positions in the job stream) in the all-healthy run, where
the other 20 % are healthy too (so both count the same jobs; with health
memory the dead-primary jobs take about as long as the others, and a
rate over all jobs would put R_h at 0.8 x R0 by construction); attempts per dead address during the measured pass
(the warm-up pass, the addresses' first contact, is reported apart: its
jobs all start before the first timeout, so each address is tried by
every job that reaches it in those 2 s). Targets: at most 1 attempt per
dead address in the measured pass (within one health period), and
R_h >= 0.95 x R0 (per repetition, median). A tree without the
address_health key runs with its Postfix order and the targets report it.
Environment: S11_DOMAINS (5000: runs of 1.5 s, long enough for a stable throughput ratio; QUICK 500), S11_WORKERS (500), REPS (3;
QUICK 1), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import time

from benchlib import (Bench, SynCounter, config_defaults, env_int, has_key, listen_drops,
                      median, rnd, say, target, write_result)
from manydomains import ManyDomains

domains = env_int("S11_DOMAINS", 5000, quick=500)
workers = env_int("S11_WORKERS", 500)
reps = env_int("REPS", 3, quick=1)
timeout_s = 2
b = Bench("s11")
md = ManyDomains(b, domains, sets=(("h", 0), ("d", 5)))
syn = SynCounter(b, md.dead_addrs, md.port)
if not syn.ok:
    say("s11: iptables rules not available: connection attempts are not counted")
health = has_key("smtp.address_health")
health_time = config_defaults().get("smtp.address_health_time", "").strip('"') or None
if not health:
    say("s11: this tree has no [smtp] address_health: measured without health memory")
msg = b.message(1024)
cfg = md.config(workers, connect_timeout=f"{timeout_s}s")
if health:
    cfg = cfg.replace("[smtp]\n", "[smtp]\naddress_health = true\n", 1)
healthy, dead = [], []
# The all-healthy set with the dead set's groups: "healthy" for the
# positions that are healthy in the dead set, "twin" for the others.
h_file = b.path("domains-h-groups.txt")
with open(md.files["h"]) as src, open(h_file, "w") as dst:
    for i, line in enumerate(src):
        dst.write(f"{line.split()[0]} {'twin' if i % 5 == 0 else 'healthy'}\n")
files = {"h": h_file, "d": md.files["d"]}


def attempts(before, after):
    if before is None or after is None:
        return None
    return {a: after[a][0] - before[a][0] for a in after}


def run(prefix, rep):
    d = b.daemon(cfg, name=f"mailhop-{prefix}{rep}")
    c0 = syn.counts() if syn.ok else None
    b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
              "--domains-file", files[prefix], "--message", msg,
              "--id-prefix", f"w{prefix}{rep}-"])
    time.sleep(2.5)  # idle cached sessions expire ([cache] time_limit 2s)
    c1 = syn.counts() if syn.ok else None
    s0, l0 = md.sessions(), listen_drops()
    r = b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
                  "--domains-file", files[prefix], "--message", msg, "--pid", d.pid,
                  "--id-prefix", f"{prefix}{rep}-", "--status"])
    c2 = syn.counts() if syn.ok else None
    l1 = listen_drops()
    d.stop()
    out = {"complete": r["complete"], "statuses": r["statuses"], "seconds": r["seconds"],
           "jobs_per_s": r["jobs_per_s"], "groups": r["groups"],
           "sessions": md.sessions() - s0, "rss_kb": (r.get("daemon") or {}).get("vmhwm_kb"),
           "cpu_us_per_msg": (r.get("daemon") or {}).get("cpu_us_per_job"),
           "not_sent_samples": r.get("not_sent_samples"),
           "listen_drops": (l1 - l0) if l0 is not None and l1 is not None else None}
    g = r["groups"].get("healthy", {})
    t_h = g.get("last_s") or r["seconds"]
    out.update({"healthy_jobs": g.get("jobs"), "healthy_last_s": t_h,
                "healthy_jobs_per_s": rnd(g.get("jobs", 0) / t_h) if t_h else None})
    if prefix == "d":
        warm = attempts(c0, c1)
        meas = attempts(c1, c2)
        out.update({
            "dead_last_s": r["groups"].get("dead", {}).get("last_s"),
            "warmup_attempts": warm, "attempts": meas,
            "max_attempts": max(meas.values()) if meas else None,
            "warmup_max_attempts": max(warm.values()) if warm else None,
            "syns": ({a: c2[a][1] - c1[a][1] for a in c2} if c2 else None),
        })
    return out


for rep in range(reps):
    for who in (("h", "d") if rep % 2 == 0 else ("d", "h")):
        r = run(who, rep)
        if who == "h":
            healthy.append(r)
            say(f"s11 rep {rep + 1}/{reps}: all healthy: {r['jobs_per_s']} jobs/s "
                f"({r['seconds']} s); the 80 % twin of the dead set's healthy domains: "
                f"{r['healthy_jobs_per_s']} jobs/s, {r['statuses']}")
        else:
            dead.append(r)
            say(f"s11 rep {rep + 1}/{reps}: 20% dead primaries: healthy "
                f"{r['healthy_jobs_per_s']} jobs/s (last healthy result at "
                f"{r['healthy_last_s']} s), all done in {r['seconds']} s, {r['statuses']}; "
                f"attempts per dead address: warm-up max {r['warmup_max_attempts']}, "
                f"measured {r['attempts']}")

r0 = median([r["healthy_jobs_per_s"] for r in healthy])
rh = median([r["healthy_jobs_per_s"] for r in dead])
ratios = [d_["healthy_jobs_per_s"] / h["healthy_jobs_per_s"] for d_, h in zip(dead, healthy)
          if d_["healthy_jobs_per_s"] and h["healthy_jobs_per_s"]]
ratio = rnd(median(ratios), 2) if ratios else None
max_att = max((r["max_attempts"] for r in dead if r["max_attempts"] is not None),
              default=None)
warm_att = max((r["warmup_max_attempts"] for r in dead
                if r["warmup_max_attempts"] is not None), default=None)
ok = all(r["complete"] and r["statuses"]["sent"] == domains for r in healthy + dead)


def rss(runs):
    v = median([r["rss_kb"] for r in runs])
    return rnd(v / 1024, 1) if v else None


mode = (f"address_health = true ({health_time})" if health else "no address_health key")
write_result(11, {
    "title": "dead primaries with address health memory (20 % of domains, connect_timeout 2s)",
    "params": {"domains": domains, "workers": workers, "connect_timeout_s": timeout_s,
               "reps": reps, "address_health": health, "address_health_time": health_time,
               "attempts_counted": syn.ok},
    "rows": [
        {"client": f"mailhop, {domains} healthy domains, workers={workers}: the 80 %",
         "msgs_per_s": r0,
         "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in healthy]),
         "rss_mb": rss(healthy), "sessions": median([r["sessions"] for r in healthy]),
         "note": f"R0, {mode}; all {domains}: "
                 f"{median([r['jobs_per_s'] for r in healthy])} msg/s"},
        {"client": "mailhop, 20% dead primaries: healthy domains", "msgs_per_s": rh,
         "ratio": ratio, "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in dead]),
         "rss_mb": rss(dead), "sessions": median([r["sessions"] for r in dead]),
         "note": f"attempts per dead address: measured pass max {max_att}, first contact "
                 f"(warm-up) max {warm_att}; all {domains} in "
                 f"{median([r['seconds'] for r in dead])} s"},
    ],
    "targets": [
        target("S11 connection attempts per dead address per health period (measured pass)",
               max_att, "<=", 1),
        target("S11 healthy-domain throughput with dead primaries / all-healthy", ratio, ">=",
               0.95, "x"),
        target("S11 every recipient sent (dead ones via the backup)", 1 if ok else 0, ">=", 1)],
    "runs": {"healthy": healthy, "dead": dead},
})
