#!/usr/bin/env python3
"""Scenario 3: many destinations. 2,000 domains in dnsmasq, MX records spread
over 10 smtp-sinks on 127.0.0.10-19; one job (1 KiB, one recipient) per
domain, no nexthop: mailhop looks up each domain's MX and its address (cold
DNS cache: a fresh daemon per repetition; records have a 300 s TTL, so the
10 MX hosts' addresses are cached after their first lookups) and manages connections to 10
servers (sessions may be reused by endpoint across domains). workers = 20.
Peer: 10 x "smtp-source -s 2 -m 200" in parallel, one per sink (20
sessions, no DNS, a new connection per message): the cost of the same
deliveries without DNS or connection management.
Environment: DOMAINS (2000; QUICK 500), MANY_WORKERS (20), REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
from benchlib import (Bench, env_int, find_prog, median, order, rnd, say, target,
                      udp_rcvbuf_errors, write_result)
from manydomains import SINKS, ManyDomains

domains = env_int("DOMAINS", 2000, quick=500)
workers = env_int("MANY_WORKERS", 20)
reps = env_int("REPS", 3)
b = Bench("s3")
md = ManyDomains(b, domains)
msg = b.message(1024)
per_sink = domains // SINKS
src, mh = [], []
for rep in range(reps):
    for who in order(rep):
        s0 = md.sessions()
        m0 = md.messages()
        if who == "peer":
            ok, secs, cpu, rss = b.timed_many(
                [[find_prog("smtp-source"), "-s", str(workers // SINKS or 1), "-m", str(per_sink),
                  "-l", "1024", f"{a}:{md.port}"] for a in md.sink_addrs])
            n = per_sink * SINKS
            src.append({"msgs_per_s": rnd(n / secs) if ok else None,
                        "cpu_us_per_msg": rnd(cpu * 1e6 / n), "rss_kb": rss,
                        "sessions": md.sessions() - s0, "sink_msgs": md.messages() - m0})
            say(f"s3 rep {rep + 1}/{reps}: 10 x smtp-source: {src[-1]['msgs_per_s']} msg/s")
        else:
            d = b.daemon(md.config(workers))
            u0 = udp_rcvbuf_errors()
            r = b.submit(["throughput", "--socket", d.sock, "--jobs", domains, "--conns", 4,
                          "--domains-file", md.domain_file, "--message", msg, "--pid", d.pid,
                          "--status"])
            d.stop()
            u1 = udp_rcvbuf_errors()
            dm = r.get("daemon") or {}
            mh.append({"msgs_per_s": r["jobs_per_s"], "cpu_us_per_msg": dm.get("cpu_us_per_job"),
                       "rss_kb": dm.get("vmhwm_kb"), "threads": dm.get("threads_peak"),
                       "sessions": md.sessions() - s0, "sink_msgs": md.messages() - m0,
                       "complete": r["complete"], "statuses": r["statuses"],
                       "udp_rcvbuf_drops": (u1 - u0) if u0 is not None else None,
                       "relays": r.get("relays"), "cache": (r.get("daemon_status") or {})
                       .get("cache"), "not_sent_samples": r.get("not_sent_samples")})
            say(f"s3 rep {rep + 1}/{reps}: mailhop: {r['jobs_per_s']} msg/s, "
                f"{mh[-1]['cpu_us_per_msg']} us CPU/msg, {mh[-1]['sessions']} sessions, "
                f"{r['statuses']}, cache {mh[-1]['cache']}, UDP drops {mh[-1]['udp_rcvbuf_drops']}")


def row(label, runs, ratio=None, note=""):
    rss = median([r["rss_kb"] for r in runs])
    return {"client": label, "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
            "ratio": ratio, "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None,
            "sessions": median([r["sessions"] for r in runs]), "note": note}


ratios = [a["msgs_per_s"] / p["msgs_per_s"] for a, p in zip(mh, src)
          if a["msgs_per_s"] and p["msgs_per_s"]]
ok = all(r["complete"] and r["statuses"]["sent"] == domains for r in mh)
write_result(3, {
    "title": f"many destinations ({domains} domains, 10 sinks)",
    "params": {"domains": domains, "workers": workers, "reps": reps},
    "rows": [row(f"10 x smtp-source -s {workers // SINKS or 1} (no DNS, no reuse)", src),
             row(f"mailhop daemon, workers={workers}, MX lookups", mh,
                 rnd(median(ratios), 2) if ratios else None, "cold DNS cache")],
    "targets": [target("S3 every recipient sent", 1 if ok else 0, ">=", 1)],
    "runs": {"smtp_source": src, "mailhop": mh},
})
