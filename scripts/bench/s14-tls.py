#!/usr/bin/env python3
"""Scenario 14: TLS (issue 16).

Part A, throughput over TLS: N x 1 KiB messages (one recipient each),
SMTPS wrapper mode, level encrypt, connections reused, to a receiver that
is not the bottleneck: socat as TLS terminator
(OPENSSL-LISTEN:FRONT,fork,reuseaddr,cert,key,verify=0 -> TCP:the sink;
one socat process per connection) in front of one smtp-sink. mailhop:
daemon, workers = SESSIONS, [cache] destinations = ["127.0.0.1"],
[tls] security_level = "encrypt", wrappermode = true,
connection_reuse = true. Peer: the drain of a private Postfix's held
queue (qmgr + smtp(8)) through the same front, with
smtp_tls_wrappermode = yes, smtp_tls_security_level = encrypt,
smtp_tls_connection_reuse = yes (tlsproxy in master.cf),
smtp_destination_concurrency_limit = SESSIONS. Figures: msg/s of both,
the ratio mailhop/Postfix (median of the per-repetition ratios), mailhop's
CPU per message.

Part B, resumption: RES_N deliveries, each on a new connection ([cache]
off), to a real Postfix smtpd (STARTTLS, level may, the same private
instance's second listener, which discards the mail), with
[tls] session_cache_timeout = "3600s" and "0s"; mailhop's CPU per
delivery (= per new TLS connection) from /proc/PID/stat, and the ratio
with/without resumption (target <= 0.5), plus mailhop's resumed-session
count from its status; and, as a baseline, the same deliveries in
plaintext (level none), whose CPU subtracted from both gives the ratio of
the TLS part alone.

Environment: S14_N (20000; QUICK 5000), S14_SESSIONS (20), S14_PF_N
(Postfix drain size, 5000; QUICK 1000), S14_RES_N (2000; QUICK 500),
S14_RES_CONNS (submit connections = deliveries at once in part B, 4),
S14_PARTS ("ab": both parts; "a" or "b": one), S14_PERF (a directory: part
B's daemons run under "perf record", a diagnostic), REPS (3), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import os
import shutil
import signal
import subprocess
import time

import relay
from benchlib import (Bench, PostfixDrain, env_int, find_prog, free_port, has_key, median,
                      order, rnd, say, shaping_unlimited, target, wait_listen, write_result)

n = env_int("S14_N", 20000, quick=5000)
sessions = env_int("S14_SESSIONS", 20)
pf_n = env_int("S14_PF_N", 5000, quick=1000)
res_n = env_int("S14_RES_N", 2000, quick=500)
res_conns = env_int("S14_RES_CONNS", 4)
reps = env_int("REPS", 3)
parts = os.environ.get("S14_PARTS", "ab")



def build_front(b):
    """Compiles tls-front.c (the TLS terminator, a thread per connection)
    into the work directory; None (socat is used) when it cannot be built.
    S14_FRONT=socat chooses socat."""
    if os.environ.get("S14_FRONT") == "socat":
        return None
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        say("no C compiler: socat is the TLS front (it is the bottleneck of part A)")
        return None
    out = b.path("tls-front")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls-front.c")
    r = subprocess.run([cc, "-O2", "-pthread", "-o", out, src, "-lssl", "-lcrypto"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        say(f"tls-front.c did not build (socat is the front): {r.stdout.decode()[-400:]}")
        return None
    return out


b = Bench("s14")
port = free_port()
sink = b.sink(f"127.0.0.1:{port}", backlog=1000)

# A certificate for the fronts and Postfix's smtpd (EC P-256, self-signed).
cert, key = b.path("front.pem"), b.path("front.key")
subprocess.run([find_prog("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                "/CN=sink.bench.test", "-keyout", key, "-out", cert],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
os.chmod(key, 0o644)   # Postfix's smtpd reads it as postfix

front = free_port()
front_prog = build_front(b)
if front_prog:
    front_kind = "tls-front.c (a thread per connection)"
    b.spawn([front_prog, cert, key, str(front), str(port)], stderr=b.path("front.err"))
else:
    front_kind = "socat (a process per connection)"
    b.spawn([find_prog("socat"),
             f"OPENSSL-LISTEN:{front},fork,reuseaddr,bind=127.0.0.1,backlog=1000,"
             f"cert={cert},key={key},verify=0",
             f"TCP:127.0.0.1:{port}"], stderr=b.path("socat.err"))
if not wait_listen("127.0.0.1", front, limit=10):
    raise SystemExit("bench: the TLS front did not start")

# The Postfix drain through the same front, in SMTPS wrapper mode; a
# second smtpd (STARTTLS, discarding) for part B. in_flow_delay = 0s:
# discarded mail returns no flow tokens, and cleanup would then pause each
# of part B's messages for 1 s.
pf = PostfixDrain(b, front, concurrency=sessions)
tls_smtpd = free_port()
with open(os.path.join(pf.etc, "main.cf"), "a") as f:
    f.write(f"""smtp_tls_wrappermode = yes
smtp_tls_security_level = encrypt
smtp_tls_connection_reuse = yes
smtp_tls_session_cache_database =
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
in_flow_delay = 0s
""")
with open(os.path.join(pf.etc, "main.cf")) as f:
    text = f.read().replace("smtp_tls_security_level = none\n", "")
with open(os.path.join(pf.etc, "main.cf"), "w") as f:
    f.write(text)
with open(os.path.join(pf.etc, "master.cf"), "a") as f:
    f.write("tlsproxy  unix  - - n - 0 tlsproxy\n"
            f"127.0.0.1:{tls_smtpd} inet n - n - - smtpd -o syslog_name=postfix/tls "
            "-o smtpd_tls_security_level=may "
            "-o smtpd_client_restrictions=check_client_access,static:DISCARD\n")
pf.start()
if not wait_listen("127.0.0.1", tls_smtpd, limit=15):
    raise SystemExit("bench: the TLS smtpd did not start listening")

tls_ok = has_key("tls.session_cache_timeout")
msg = b.message(1024)

config_a = f"""[daemon]
workers = {sessions}
[cache]
destinations = ["127.0.0.1"]
[tls]
security_level = "encrypt"
wrappermode = true
connection_reuse = true
""" + shaping_unlimited(sessions)


# The same daemon in plaintext straight to the sink (level none, no front),
# and floor.c (the least a thread-per-session client can do, plaintext):
# what the TLS path adds to mailhop, and the bound of any client on this
# machine against this Postfix drain.
config_plain = f"""[daemon]
workers = {sessions}
[cache]
destinations = ["127.0.0.1"]
[tls]
security_level = "none"
""" + shaping_unlimited(sessions)
floor = relay.build_floor(b) if "a" in parts else None


def submit(d, nexthop, jobs, conns):
    return b.submit(["throughput", "--socket", d.sock, "--jobs", jobs, "--conns", conns,
                     "--message", msg, "--nexthop", nexthop, "--pid", d.pid, "--status"])


def run_mailhop():
    d = b.daemon(config_a)
    s0 = sink.counters()
    r = submit(d, f"[127.0.0.1]:{front}", n, sessions)
    d.stop()
    s1 = sink.counters()
    dm = r.get("daemon") or {}
    return {"msgs_per_s": r["jobs_per_s"], "seconds": r["seconds"], "complete": r["complete"],
            "statuses": r["statuses"], "cpu_us_per_msg": dm.get("cpu_us_per_job"),
            "rss_kb": dm.get("vmhwm_kb"), "sessions": s1[0] - s0[0],
            "sink_msgs": s1[2] - s0[2],
            "system_cpu_us_per_msg": rnd(r["system_cpu_s"] * 1e6 / n),
            "tls": (r.get("daemon_status") or {}).get("tls"),
            "not_sent_samples": r.get("not_sent_samples")}


def run_mailhop_plain():
    r = relay.mailhop_run(b, sink, msg, n, sessions, config_plain)
    return {"msgs_per_s": r["msgs_per_s"], "cpu_us_per_msg": r["cpu_us_per_msg"],
            "complete": r.get("complete"),
            "system_cpu_us_per_msg": r.get("system_cpu_us_per_msg")}


def run_postfix():
    c0 = sink.counters()
    p = pf.run(pf_n)
    c1 = sink.settle()
    p["sessions"] = c1[0] - c0[0]
    p["sink_msgs"] = c1[2] - c0[2]
    p["system_cpu_us_per_msg"] = rnd(p["system_cpu_s"] * 1e6 / p["n"]) if p["n"] else None
    p["complete"] = p["sent"] == pf_n and p["left_in_queue"] == 0
    p["purged"] = pf.purge()
    if p["deferred"] or p["bounced"]:
        p["postfix_samples"] = pf.log_samples(b"status=deferred") + \
            pf.log_samples(b"status=bounced")
    return p


def run_resumption(timeout):
    """timeout: session_cache_timeout, or "plain": level none (the
    delivery's cost without TLS, the baseline)."""
    if timeout == "plain":
        tls = 'security_level = "none"\n'
    else:
        tls = 'security_level = "may"\n' + \
            (f'session_cache_timeout = "{timeout}"\n' if tls_ok else "")
    config = f"""[daemon]
workers = {res_conns}
[cache]
on_demand = false
destinations = []
[tls]
""" + tls + shaping_unlimited(res_conns)
    d = b.daemon(config, name=f"mailhop-res-{timeout}")
    perf = None
    if os.environ.get("S14_PERF"):
        # A diagnostic: where the daemon's CPU goes per delivery.
        perf = b.spawn([find_prog("perf"), "record", "-F", "499", "--call-graph", "dwarf,16384",
                        "-p", str(d.pid), "-o", os.path.join(os.environ["S14_PERF"],
                                                              f"perf-res-{timeout}.data")])
        time.sleep(1)
    r = submit(d, f"[127.0.0.1]:{tls_smtpd}", res_n, res_conns)
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    d.stop()
    dm = r.get("daemon") or {}
    return {"timeout": timeout, "msgs_per_s": r["jobs_per_s"], "complete": r["complete"],
            "statuses": r["statuses"], "cpu_us_per_delivery": dm.get("cpu_us_per_job"),
            "tls": (r.get("daemon_status") or {}).get("tls"),
            "established": d.log_count(b"TLS connection established"),
            "resumed_lines": d.log_count(b"(session resumed)")}


mh_runs, pf_runs, ratios = [], [], []
plain_runs, floor_runs, tls_plain_ratios, floor_ratios = [], [], [], []
res_on, res_off, res_plain, res_ratios, tls_ratios = [], [], [], [], []
for rep in range(reps):
    pair = {}
    for who in (order(rep) if "a" in parts else ()):
        if who == "peer":
            p = run_postfix()
            pf_runs.append(p)
            pair["pf"] = p
            say(f"s14 rep {rep + 1}/{reps}: Postfix TLS drain of {p['n']}: {p['msgs_per_s']} "
                f"msg/s (sent {p['sent']}, deferred {p['deferred']}, {p['sessions']} sessions)")
        else:
            r = run_mailhop()
            mh_runs.append(r)
            pair["mh"] = r
            say(f"s14 rep {rep + 1}/{reps}: mailhop TLS: {r['msgs_per_s']} msg/s, "
                f"{r['cpu_us_per_msg']} us CPU/msg, {r['sessions']} sessions, {r['statuses']}")
    if "a" in parts and pair["pf"]["msgs_per_s"] and pair["mh"]["msgs_per_s"]:
        ratios.append(pair["mh"]["msgs_per_s"] / pair["pf"]["msgs_per_s"])
    if "a" in parts:
        pl = run_mailhop_plain()
        plain_runs.append(pl)
        if pl["msgs_per_s"]:
            tls_plain_ratios.append(pair["mh"]["msgs_per_s"] / pl["msgs_per_s"])
        fl = relay.floor_run(b, floor, sink, n, sessions) if floor else {"msgs_per_s": None}
        floor_runs.append(fl)
        if fl["msgs_per_s"] and pair["pf"]["msgs_per_s"]:
            floor_ratios.append(fl["msgs_per_s"] / pair["pf"]["msgs_per_s"])
        say(f"s14 rep {rep + 1}/{reps}: mailhop plaintext straight to the sink: "
            f"{pl['msgs_per_s']} msg/s, {pl['cpu_us_per_msg']} us CPU/msg; floor.c (plaintext): "
            f"{fl['msgs_per_s']} msg/s")
    runs = {}
    if "b" not in parts:
        continue
    for timeout in (("3600s", "0s", "plain") if rep % 2 == 0 else ("plain", "0s", "3600s")):
        runs[timeout] = run_resumption(timeout)
        rr = runs[timeout]
        say(f"s14 rep {rep + 1}/{reps}: resumption {timeout}: {rr['cpu_us_per_delivery']} us "
            f"CPU/delivery, {rr['msgs_per_s']} deliveries/s, tls {rr['tls']}")
    res_on.append(runs["3600s"])
    res_off.append(runs["0s"])
    res_plain.append(runs["plain"])
    on, off, plain = (runs[k]["cpu_us_per_delivery"] for k in ("3600s", "0s", "plain"))
    if on and off:
        res_ratios.append(on / off)
    if on and off and plain is not None and off > plain:
        # The TLS part alone: each delivery's CPU less that of a plaintext one.
        tls_ratios.append((on - plain) / (off - plain))

ratio = rnd(median(ratios), 2) if ratios else None
tls_plain = rnd(median(tls_plain_ratios), 2) if tls_plain_ratios else None
floor_ratio = rnd(median(floor_ratios), 2) if floor_ratios else None
res_ratio = rnd(median(res_ratios), 2) if res_ratios else None
tls_ratio = rnd(median(tls_ratios), 2) if tls_ratios else None


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return rnd(median(vals)) if vals else None


rows = [
    {"client": f"Postfix qmgr+smtp(8) drain of {pf_n}, wrappermode, encrypt, tlsproxy reuse",
     "msgs_per_s": med(pf_runs, "msgs_per_s"),
     "system_cpu_us_per_msg": med(pf_runs, "system_cpu_us_per_msg")},
    {"client": f"mailhop daemon, workers={sessions}, wrappermode, encrypt, connection_reuse",
     "msgs_per_s": med(mh_runs, "msgs_per_s"), "cpu_us_per_msg": med(mh_runs, "cpu_us_per_msg"),
     "system_cpu_us_per_msg": med(mh_runs, "system_cpu_us_per_msg"),
     "ratio": ratio, "note": f"x{ratio} Postfix drain"},
    {"client": f"mailhop daemon, workers={sessions}, plaintext straight to the sink (no front)",
     "msgs_per_s": med(plain_runs, "msgs_per_s"), "cpu_us_per_msg": med(plain_runs, "cpu_us_per_msg"),
     "system_cpu_us_per_msg": med(plain_runs, "system_cpu_us_per_msg"),
     "note": f"TLS through the front / this: x{tls_plain}"},
    {"client": f"floor.c -s {sessions}, plaintext straight to the sink: the bound of any client",
     "msgs_per_s": med(floor_runs, "msgs_per_s"), "cpu_us_per_msg": med(floor_runs, "cpu_us_per_msg"),
     "system_cpu_us_per_msg": med(floor_runs, "system_cpu_us_per_msg"),
     "note": f"x{floor_ratio} Postfix TLS drain"},
    {"client": f"mailhop, {res_n} deliveries to Postfix smtpd, new connection each, "
              "plaintext (level none: the baseline)",
     "msgs_per_s": med(res_plain, "msgs_per_s"),
     "cpu_us_per_msg": med(res_plain, "cpu_us_per_delivery")},
    {"client": "the same, level may, session_cache_timeout 0s",
     "msgs_per_s": med(res_off, "msgs_per_s"), "cpu_us_per_msg": med(res_off, "cpu_us_per_delivery")},
    {"client": "the same, session_cache_timeout 3600s",
     "msgs_per_s": med(res_on, "msgs_per_s"), "cpu_us_per_msg": med(res_on, "cpu_us_per_delivery"),
     "ratio": res_ratio, "note": f"CPU/delivery x{res_ratio} of no resumption; "
                                 f"TLS part (less plaintext) x{tls_ratio}"},
]
all_ok = all(r["complete"] and r["statuses"]["sent"] == n for r in mh_runs)
resumed_ok = tls_ok and all(
    ((r.get("tls") or {}).get("resumed_sessions") or 0) >= res_n * 0.9 for r in res_on)
targets = [
    target("S14 mailhop/Postfix drain throughput over TLS", ratio, ">=", 20.0, "x"),
    target("S14 mailhop CPU per new TLS session with resumption / without", res_ratio, "<=",
           0.5, "x"),
    target("S14 the same for the TLS part alone (CPU/delivery less a plaintext delivery's)",
           tls_ratio, "<=", 0.5, "x"),
    target("S14 every recipient sent", 1 if all_ok else 0, ">=", 1),
    target("S14 >= 90% of deliveries resumed with session_cache_timeout 3600s",
           1 if resumed_ok else 0, ">=", 1),
]
write_result(14, {
    "title": f"TLS: SMTPS through a TLS front ({front_kind}), connections reused; "
             "session resumption",
    "params": {"n": n, "sessions": sessions, "reps": reps, "size": 1024, "postfix_n": pf_n,
               "front": front_kind,
               "resumption_n": res_n, "resumption_conns": res_conns},
    "rows": rows,
    "targets": targets,
    "runs": {"mailhop": mh_runs, "postfix": pf_runs, "resumption_on": res_on,
             "resumption_off": res_off, "plaintext": res_plain},
})
