#!/usr/bin/env python3
"""Scenario 12: Happy Eyeballs. One domain, he.bench.test, in dnsmasq with
one MX host whose A record is 127.0.0.21 (an smtp-sink) and whose AAAA
record is ::1, where blackhole.py drops the SYNs (same port). mailhop:
[dns] inet_protocols = "all", address_preference = "ipv6" (the dead IPv6
address comes first), [smtp] connect_timeout = 2s, 20 workers, no
connection reuse ([cache] on_demand = false), so that every job connects,
and [smtp] address_health = false, so that every job meets the dead
address (with health memory, only the first job of a period would).

HE_N jobs (1 KiB, one recipient) on 10 client connections, one job in
flight on each (submit.py --window 1): per-job latency, submit -> result.
Two runs per repetition, each on a fresh daemon: happy_eyeballs = true
(the next address is tried 250 ms after the first while that is pending)
and happy_eyeballs = false (one address at a time, as Postfix: each job
waits for the connect timeout before it tries IPv4).
Target: p50 job latency < 0.5 s with Happy Eyeballs. A tree without the
happy_eyeballs key runs both with its own connecting and the target
reports it.
Environment: HE_N (100; QUICK 40), REPS (3; QUICK 1), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import os
import socket
import time

from benchlib import (HERE, Bench, env_int, find_prog, free_port, has_key, median, rnd, say,
                      target, write_result)

n = env_int("HE_N", 100, quick=40)
reps = env_int("REPS", 3, quick=1)
timeout_s = 2
b = Bench("s12")
port = free_port("127.0.0.21")
sink = b.sink(f"127.0.0.21:{port}", backlog=1000, name="sink-v4")

# The IPv6 address of the MX host drops SYNs.
bh_out = b.path("blackhole.out")
bh = b.spawn([sys.executable, os.path.join(HERE, "blackhole.py"), "--port", str(port), "::1"],
             stdout=bh_out, stderr=bh_out)
for _ in range(200):
    if "ready" in open(bh_out).read() or bh.poll() is not None:
        break
    time.sleep(0.05)
if "ready" not in open(bh_out).read():
    raise SystemExit(f"bench: blackhole.py on [::1]:{port} failed: {open(bh_out).read()[-500:]}")

dns_port = free_port()
conf = b.path("dnsmasq.conf")
with open(conf, "w") as f:
    f.write("local=/bench.test/\n"
            "host-record=mx.he.bench.test,127.0.0.21,::1\n"
            "mx-host=he.bench.test,mx.he.bench.test,10\n")
dnsmasq = b.spawn([find_prog("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null",
                   f"--conf-file={conf}", f"--port={dns_port}", "--listen-address=127.0.0.1",
                   "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll",
                   "--user=nobody", "--group=nogroup", "--pid-file=", "--local-ttl=300"],
                  stderr=b.path("dnsmasq.log"))


def dns_ready():
    q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
         b"\x02he\x05bench\x04test\x00\x00\x0f\x00\x01")
    for _ in range(100):
        if dnsmasq.poll() is not None:
            return False
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.1)
        try:
            s.sendto(q, ("127.0.0.1", dns_port))
            if s.recvfrom(512)[0][:2] == b"\x12\x34":
                return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False


if not dns_ready():
    raise SystemExit(f"bench: dnsmasq did not start: {open(b.path('dnsmasq.log')).read()[-500:]}")
domains = b.path("domains.txt")
with open(domains, "w") as f:
    f.write("he.bench.test he\n")
msg = b.message(1024)
he_key = has_key("smtp.happy_eyeballs")
health_key = has_key("smtp.address_health")
if not he_key:
    say("s12: this tree has no [smtp] happy_eyeballs: both runs connect its own way")


def config(he):
    smtp = f'[smtp]\nport = {port}\nconnect_timeout = "{timeout_s}s"\n'
    if he_key:
        smtp += f"happy_eyeballs = {'true' if he else 'false'}\n"
    if health_key:
        smtp += "address_health = false\n"
    return smtp + f"""
[dns]
nameservers = ["127.0.0.1:{dns_port}"]
inet_protocols = "all"
address_preference = "ipv6"

[daemon]
workers = 20

[cache]
on_demand = false
destinations = []
"""


runs = {"on": [], "off": []}
for rep in range(reps):
    for mode in (("on", "off") if rep % 2 == 0 else ("off", "on")):
        d = b.daemon(config(mode == "on"), name=f"mailhop-{mode}{rep}")
        s0 = sink.counters()
        r = b.submit(["throughput", "--socket", d.sock, "--jobs", n, "--conns", 10,
                      "--window", 1, "--domains-file", domains, "--message", msg,
                      "--pid", d.pid, "--timeout", 300, "--id-prefix", f"{mode}{rep}-"],
                     limit=400)
        d.stop()
        lat = r.get("latency") or {}
        out = {"p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"),
               "p99_ms": lat.get("p99_ms"), "max_ms": lat.get("max_ms"),
               "seconds": r["seconds"], "jobs_per_s": r["jobs_per_s"],
               "complete": r["complete"], "statuses": r["statuses"],
               "relays": r.get("relays"), "sessions": sink.counters()[0] - s0[0],
               "cpu_us_per_msg": (r.get("daemon") or {}).get("cpu_us_per_job"),
               "not_sent_samples": r.get("not_sent_samples")}
        runs[mode].append(out)
        say(f"s12 rep {rep + 1}/{reps}: happy_eyeballs {mode}: p50 {out['p50_ms']} ms, "
            f"p99 {out['p99_ms']} ms, {r['statuses']}, relays {out['relays']}")


def row(label, rs):
    return {"client": label, "latency_p50_ms": median([r["p50_ms"] for r in rs]),
            "latency_p99_ms": median([r["p99_ms"] for r in rs]),
            "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in rs]),
            "sessions": median([r["sessions"] for r in rs]),
            "note": f"{median([r['jobs_per_s'] for r in rs])} jobs/s"}


p50 = median([r["p50_ms"] for r in runs["on"]])
ok = all(r["complete"] and r["statuses"]["sent"] == n for r in runs["on"] + runs["off"])
write_result(12, {
    "title": "Happy Eyeballs (MX host's IPv6 address drops SYNs, address_preference ipv6)",
    "params": {"n": n, "reps": reps, "connect_timeout_s": timeout_s,
               "happy_eyeballs_key": he_key, "address_health_key": health_key},
    "rows": [row("mailhop, happy_eyeballs = false (one address at a time)", runs["off"]),
             row("mailhop, happy_eyeballs = true" if he_key
                 else "mailhop (no happy_eyeballs key in this tree)", runs["on"])],
    "targets": [target("S12 p50 job latency with Happy Eyeballs", p50 / 1000 if p50 else None,
                       "<", 0.5, "s"),
                target("S12 every recipient sent (over IPv4)", 1 if ok else 0, ">=", 1)],
    "runs": runs,
})
