#!/usr/bin/env python3
"""Scenario 8: a burst of cold DNS lookups. The scenario-3 setup (2,000
domains in dnsmasq, MX records spread over 10 smtp-sinks on 127.0.0.10-19,
one 1 KiB job with one recipient per domain, no nexthop), but with 500
workers and inet_protocols "all": every job needs the domain's MX and the
MX host's A and AAAA (NODATA, without an SOA). Each repetition starts a
fresh daemon (cold DNS cache) and submits the 2,000 jobs (cold run), waits
until the idle sessions have left the connection cache ([cache] time_limit,
2 s), then submits the same 2,000 jobs again (warm run: every answer is
cached). The peer is mailhop itself with a warm cache.
Target: the cold run takes at most 2x the warm run's time, and every
recipient of both runs is sent (none deferred 4.4.3).
Environment: DOMAINS (2000; QUICK 500), BURST_WORKERS (500), REPS (3), QUICK."""
import sys
import time

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
from benchlib import (Bench, env_int, median, rnd, say, target, udp_rcvbuf_errors,
                      write_result)
from manydomains import ManyDomains

domains = env_int("DOMAINS", 2000, quick=500)
workers = env_int("BURST_WORKERS", 500)
reps = env_int("REPS", 3)
b = Bench("s8")
md = ManyDomains(b, domains)
msg = b.message(1024)
config = md.config(workers).replace('inet_protocols = "ipv4"', 'inet_protocols = "all"')
runs = []


def submit(d, prefix):
    u0 = udp_rcvbuf_errors()
    r = b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
                  "--domains-file", md.domain_file, "--message", msg, "--pid", d.pid,
                  "--id-prefix", prefix])
    u1 = udp_rcvbuf_errors()
    return {"seconds": r["seconds"], "msgs_per_s": r["jobs_per_s"], "complete": r["complete"],
            "statuses": r["statuses"], "udp_rcvbuf_drops": (u1 - u0) if u0 is not None else None,
            "not_sent_samples": r.get("not_sent_samples")}


for rep in range(reps):
    d = b.daemon(config)
    cold = submit(d, f"C{rep}-")
    time.sleep(3)  # idle sessions leave the connection cache (time_limit 2 s)
    warm = submit(d, f"W{rep}-")
    d.stop()
    ratio = cold["seconds"] / warm["seconds"] if warm["seconds"] else None
    runs.append({"cold": cold, "warm": warm, "cold_over_warm": rnd(ratio, 2) if ratio else None})
    say(f"s8 rep {rep + 1}/{reps}: cold {cold['seconds']} s ({cold['msgs_per_s']} msg/s, "
        f"{cold['statuses']}, UDP drops {cold['udp_rcvbuf_drops']}), warm {warm['seconds']} s "
        f"({warm['msgs_per_s']} msg/s, {warm['statuses']}): cold/warm {runs[-1]['cold_over_warm']}")


def row(label, key, note):
    return {"client": label, "msgs_per_s": median([r[key]["msgs_per_s"] for r in runs]),
            "ratio": None, "cpu_us_per_msg": None, "rss_mb": None, "sessions": None,
            "note": note}


ratios = [r["cold_over_warm"] for r in runs if r["cold_over_warm"]]
all_sent = all(r[k]["complete"] and r[k]["statuses"].get("sent") == domains
               for r in runs for k in ("cold", "warm"))
write_result(8, {
    "title": f"DNS burst ({domains} domains, {workers} workers, cold vs warm DNS cache)",
    "params": {"domains": domains, "workers": workers, "reps": reps},
    "rows": [row(f"mailhop daemon, workers={workers}, warm DNS cache", "warm", "peer"),
             row(f"mailhop daemon, workers={workers}, cold DNS cache", "cold",
                 f"cold/warm time {median(ratios) if ratios else '-'}")],
    "targets": [target("S8 cold run time / warm run time", median(ratios) if ratios else None,
                       "<=", 2.0),
                target("S8 every recipient sent", 1 if all_sent else 0, ">=", 1)],
    "runs": runs,
})
