#!/usr/bin/env python3
"""Scenario 13: mailhop behind Postfix (issue 15's LMTP ingress). The same
N x 1 KiB messages (one recipient each) drained from a private Postfix's
held queue to one smtp-sink, two ways, alternating, REPS times:
  A: Postfix qmgr + its own smtp(8) -> smtp-sink (relayhost = the sink);
  B: Postfix qmgr + lmtp(8) -> mailhop's LMTP ingress (UNIX socket) ->
     smtp-sink (default_transport = relay_transport = lmtp:unix:SOCKET,
     lmtp_destination_concurrency_limit = S13_CONC, XFORWARD sent).
Two Postfix instances, identical but for the transport, both running for
the whole scenario; mailhop is a fresh daemon per B repetition
(workers = S13_WORKERS, [cache] destinations = ["127.0.0.1"] as in
scenario 1, the ingress's nexthop the sink; [daemon] allowed_uids = the
postfix user's uid, socket_mode = "0666": lmtp(8) connects as postfix).
Figures: msg/s of A and B, B/A (median of the per-repetition ratios),
mailhop's CPU per message during B's drain, and completeness (Postfix's
status=sent count, the sink's message count, the queue empty; for B also
mailhop's own status=sent log lines).
Environment: S13_N (5000; QUICK 1000), S13_CONC (20), S13_WORKERS (20),
S13_LIMIT (seconds a drain may take, 240), S13_XFORWARD (yes; "no": B's
Postfix does not send XFORWARD, a diagnostic), REPS (3), QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import os
import pwd

from submit import thread_delta, thread_table
from benchlib import (Bench, PostfixDrain, env_int, free_port, has_key, median, order, rnd,
                      say, shaping_unlimited, target, write_result)

n = env_int("S13_N", 5000, quick=1000)
conc = env_int("S13_CONC", 20)
workers = env_int("S13_WORKERS", 20)
limit = env_int("S13_LIMIT", 240)
reps = env_int("REPS", 3)
xforward = os.environ.get("S13_XFORWARD", "yes") != "no"

b = Bench("s13")
port = free_port()
sink = b.sink(f"127.0.0.1:{port}", backlog=1000)
sockdir = b.path("ingress")
os.makedirs(sockdir)
os.chmod(sockdir, 0o755)
sock = os.path.join(sockdir, "lmtp.sock")
postfix_uid = pwd.getpwnam("postfix").pw_uid

# Without the ingress (a tree before issue 15) B is not measured: the
# binary would reject the configuration.
ingress_ok = has_key("daemon.spool_directory")
if not ingress_ok:
    say("s13: this mailhop has no LMTP ingress ([daemon] spool_directory unknown): "
        "B is not measured")

pf_a = PostfixDrain(b, port, concurrency=conc, name="postfix-smtp")
pf_a.start()
pf_b = PostfixDrain(b, port, concurrency=conc, name="postfix-lmtp", lmtp_socket=sock,
                    lmtp_concurrency=conc, lmtp_xforward=xforward)
pf_b.start()

config = f"""[daemon]
workers = {workers}
[cache]
destinations = ["127.0.0.1"]
""" + shaping_unlimited(workers)
daemon_keys = {"allowed_uids": [postfix_uid], "socket_mode": "0666"}
ingress = [{"listen": f"unix:{sock}", "nexthop": f"[127.0.0.1]:{port}"}]


def run_a():
    c0 = sink.counters()
    p = pf_a.run(n, limit=limit)
    c1 = sink.settle()   # Postfix's cached sessions close 2 s after the drain
    p["sessions"] = c1[0] - c0[0]
    p["sink_msgs"] = c1[2] - c0[2]
    p["system_cpu_us_per_msg"] = rnd(p["system_cpu_s"] * 1e6 / p["n"]) if p["n"] else None
    p["complete"] = (p["sent"] == n and p["sink_msgs"] == n and p["left_in_queue"] == 0)
    p["purged"] = pf_a.purge()
    say(f"s13 rep {rep + 1}/{reps}: A Postfix smtp(8): {p['msgs_per_s']} msg/s, "
        f"sent {p['sent']}, sink {p['sink_msgs']}, left {p['left_in_queue']}, "
        f"{p['sessions']} sessions")
    return p


def run_b():
    d = b.daemon(config, daemon_keys=daemon_keys, ingress=ingress)
    c0 = sink.counters()
    p = pf_b.run(n, limit=limit, probe=lambda: (d.cpu_seconds(), thread_table(d.pid)))
    (cpu0, th0), (cpu1, th1) = p.pop("probe")
    p["mailhop_cpu_s"] = round(cpu1 - cpu0, 3)
    # Where mailhop's CPU went, per thread class (ingress sessions, workers, ...).
    # Threads that ended during the drain (an LMTP connection the client
    # closed) are not in the table: their CPU is the rest of the total.
    p["thread_classes"] = thread_delta(th0, th1, p["n"])
    p["ended_threads_cpu_s"] = round(
        p["mailhop_cpu_s"] - sum(c["cpu_s"] for c in p["thread_classes"].values()), 3)
    p["cpu_us_per_msg"] = rnd((cpu1 - cpu0) * 1e6 / p["n"]) if p["n"] else None
    p["rss_kb"] = d.status("VmHWM")
    p["threads"] = d.status("Threads")
    sink.settle()        # Postfix's cached LMTP sessions close 2 s after the drain
    d.stop()             # closes its cached sessions to the sink
    c1 = sink.counters()
    p["sessions"] = c1[0] - c0[0]
    p["sink_msgs"] = c1[2] - c0[2]
    p["mailhop_sent"] = d.log_count(b"status=sent")
    p["system_cpu_us_per_msg"] = rnd(p["system_cpu_s"] * 1e6 / p["n"]) if p["n"] else None
    p["complete"] = (p["sent"] == n and p["sink_msgs"] == n and p["left_in_queue"] == 0)
    # Messages left (deferred, or still active at the time limit and
    # deferred by mailhop's stop) would be drained again by the next run.
    p["purged"] = pf_b.purge()
    if p["deferred"] or p["bounced"]:
        p["postfix_samples"] = pf_b.log_samples(b"status=deferred") + \
            pf_b.log_samples(b"status=bounced")
        say(f"s13: Postfix deferred {p['deferred']}, bounced {p['bounced']}: "
            f"{p['postfix_samples']}")
    say(f"s13 rep {rep + 1}/{reps}: B Postfix lmtp(8) -> mailhop: {p['msgs_per_s']} msg/s, "
        f"mailhop {p['cpu_us_per_msg']} us CPU/msg, RSS {p['rss_kb']} kB, "
        f"sent {p['sent']} (mailhop {p['mailhop_sent']}), sink {p['sink_msgs']}, "
        f"left {p['left_in_queue']}, {p['sessions']} sessions")
    top = sorted(p["thread_classes"].items(), key=lambda kv: -kv[1]["cpu_s"])[:4]
    say("s13 mailhop CPU by thread class: " + ", ".join(
        f"{cls} x{c['threads']}: {c.get('cpu_us_per_job')} us/msg, {c.get('cs_per_job')} cs/msg"
        for cls, c in top) + (f", threads ended during the drain: "
                              f"{rnd(p['ended_threads_cpu_s'] * 1e6 / p['n'])} us/msg"
                              if p["n"] else ""))
    return p


a_runs, b_runs = [], []
for rep in range(reps):
    for who in order(rep):
        if who == "peer":
            a_runs.append(run_a())
        elif ingress_ok:
            b_runs.append(run_b())
    # A drain that ran into S13_LIMIT: one more would not fit in the
    # scenario's time limit (run.sh's SCENARIO_LIMIT).
    if any(r.get("timed_out") for r in a_runs + b_runs):
        say(f"s13: a drain did not finish within {limit} s: no more repetitions")
        break


def row(label, runs, ratio=None, note=""):
    rss = median([r.get("rss_kb") for r in runs])
    return {"client": label, "msgs_per_s": median([r.get("msgs_per_s") for r in runs]),
            "ratio": ratio, "cpu_us_per_msg": median([r.get("cpu_us_per_msg") for r in runs]),
            "system_cpu_us_per_msg": median([r.get("system_cpu_us_per_msg") for r in runs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None,
            "sessions": median([r.get("sessions") for r in runs]),
            "threads": median([r.get("threads") for r in runs]) if runs and "threads" in runs[0]
            else None,
            "note": note}


def done(runs):
    return (f"sent {min(r['sent'] for r in runs)}-{max(r['sent'] for r in runs)} of {n}, "
            f"sink {min(r['sink_msgs'] for r in runs)}-{max(r['sink_msgs'] for r in runs)}, "
            f"left {max(r['left_in_queue'] for r in runs)}") if runs else ""


ratios = [bb["msgs_per_s"] / aa["msgs_per_s"] for aa, bb in zip(a_runs, b_runs)
          if aa.get("msgs_per_s") and bb.get("msgs_per_s")]
ratio = rnd(median(ratios), 2) if ratios else None
rows = [row(f"Postfix qmgr+smtp(8) drain of {n} held -> smtp-sink", a_runs,
            note=done(a_runs))]
if ingress_ok:
    rows.append(row(f"Postfix qmgr+lmtp(8) drain of {n} held -> mailhop LMTP ingress "
                    f"(workers={workers}) -> smtp-sink", b_runs, ratio,
                    note=(f"lmtp concurrency {conc}{'' if xforward else ', no XFORWARD'}; "
                          "CPU = mailhop's; " + done(b_runs)
                          + (f"; B/A per rep {', '.join(f'{x:.2f}' for x in ratios)}"
                             if ratios else ""))))
else:
    rows.append({"client": "Postfix -> mailhop LMTP ingress -> smtp-sink", "msgs_per_s": None,
                 "note": "not measured: this mailhop has no LMTP ingress"})
all_ok = bool(b_runs) and all(r["complete"] for r in a_runs + b_runs)
write_result(13, {
    "title": "mailhop behind Postfix: LMTP ingress vs Postfix's own smtp(8)",
    "params": {"n": n, "size": 1024, "lmtp_concurrency": conc, "smtp_concurrency": conc,
               "xforward": xforward,
               "workers": workers, "reps": reps, "ingress": ingress_ok},
    "rows": rows,
    "targets": [
        target("S13 Postfix->mailhop LMTP drain / Postfix smtp(8) drain throughput", ratio,
               ">=", 0.8, "x"),
        target("S13 every message delivered (Postfix status=sent, sink count, queue empty; "
               "A and B)", 1 if all_ok else 0, ">=", 1),
    ],
    "runs": {"postfix_smtp": a_runs, "postfix_lmtp_mailhop": b_runs},
})
