"""Scenarios 1 and 2: relay of N x 1 KiB messages, 1 recipient each, to one
smtp-sink on loopback with 20 concurrent sessions, mailhop against
smtp-source (and, in scenario 1, the drain of a private Postfix's held
queue). Used by s1-relay-reuse.py and s2-relay-noreuse.py."""

import os
import shutil
import subprocess

from benchlib import (Bench, PostfixDrain, env_int, free_port, median, order, rnd, say,
                      shaping_unlimited, system_busy_jiffies, target, write_result)


def mailhop_run(b, sink, msg, n, conns, config, cache_hints=False):
    d = b.daemon(config)
    s0 = sink.counters()
    args = ["throughput", "--socket", d.sock, "--jobs", n, "--conns", conns,
            "--message", msg, "--nexthop", f"[127.0.0.1]:{sink.listen.rsplit(':', 1)[1]}",
            "--pid", d.pid, "--status"]
    if cache_hints:
        args.append("--cache-hints")
    r = b.submit(args)
    d.stop()
    s1 = sink.counters()
    dm = r.get("daemon") or {}
    return {
        "msgs_per_s": r["jobs_per_s"],
        "seconds": r["seconds"],
        "complete": r["complete"],
        "statuses": r["statuses"],
        "cpu_us_per_msg": dm.get("cpu_us_per_job"),
        "rss_kb": dm.get("vmhwm_kb"),
        "threads": dm.get("threads_peak"),
        "sessions": s1[0] - s0[0],
        "sink_msgs": s1[2] - s0[2],
        "client_cpu_s": r.get("client_cpu_s"),
        "system_cpu_us_per_msg": rnd(r["system_cpu_s"] * 1e6 / n),
        "cache": (r.get("daemon_status") or {}).get("cache"),
        "not_sent_samples": r.get("not_sent_samples"),
    }


def source_run(b, sink, n, sessions, reuse):
    s0 = sink.counters()
    args = ["-s", str(sessions), "-m", str(n), "-l", "1024"]
    if reuse:
        args.insert(0, "-d")
    r = b.smtp_source(args + [sink.listen])
    s1 = sink.counters()
    ok = r["rc"] == 0 and r["seconds"]
    return {
        "msgs_per_s": rnd(n / r["seconds"]) if ok else None,
        "seconds": r["seconds"],
        "cpu_us_per_msg": rnd(r["cpu_s"] * 1e6 / n) if ok else None,
        "rss_kb": r["rss_kb"],
        "sessions": s1[0] - s0[0],
        "sink_msgs": s1[2] - s0[2],
        "system_cpu_us_per_msg": rnd(r["system_cpu_s"] * 1e6 / n),
    }


def build_floor(b):
    """Compiles floor.c (the minimal thread-per-session blocking client)
    into the work directory; None when no C compiler is there."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        say("no C compiler: the thread-per-session floor is not measured")
        return None
    out = b.path("floor")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    r = subprocess.run([cc, "-O2", "-pthread", "-o", out, src],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        say(f"floor.c did not build: {r.stdout.decode()[-400:]}")
        return None
    return out


def floor_run(b, floor, sink, n, sessions, reuse=True):
    """The floor client against the sink: what a worker thread with a
    blocking socket costs when it does nothing but the SMTP transaction
    (with reuse=False, on a new connection per message)."""
    s0 = sink.counters()
    sys0 = system_busy_jiffies()
    flags = [] if reuse else ["-n"]
    # Scheduled like mailhop's threads ([daemon] batch_scheduling): the
    # floor of the design, not of its default scheduling.
    batch = ["chrt", "-b", "0"] if shutil.which("chrt") else []
    p = subprocess.run(batch + [floor] + flags + ["-s", str(sessions), "-m", str(n), "-l", "1024",
                                          sink.listen],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600, check=False)
    sys1 = system_busy_jiffies()
    s1 = sink.counters()
    try:
        msgs, secs, cpu, rss, switches = p.stdout.decode().split()
        secs, cpu = float(secs), float(cpu)
    except ValueError:
        say(f"floor failed ({p.returncode}): {p.stderr.decode()[-400:]}")
        return {"msgs_per_s": None}
    return {
        "msgs_per_s": rnd(int(msgs) / secs) if p.returncode == 0 and secs else None,
        "seconds": secs,
        "cpu_us_per_msg": rnd(cpu * 1e6 / n),
        "rss_kb": int(rss),
        "context_switches_per_msg": rnd(int(switches) / n, 2),
        "sessions": s1[0] - s0[0],
        "sink_msgs": s1[2] - s0[2],
        "system_cpu_us_per_msg": rnd((sys1 - sys0) * 1e6 / n),
    }


def row(label, runs, ratio=None, note=""):
    return {
        "client": label,
        "msgs_per_s": median([r.get("msgs_per_s") for r in runs]),
        "ratio": ratio,
        "cpu_us_per_msg": median([r.get("cpu_us_per_msg") for r in runs]),
        "rss_mb": rnd(median([r.get("rss_kb") for r in runs]) / 1024, 1)
        if median([r.get("rss_kb") for r in runs]) else None,
        "sessions": median([r.get("sessions") for r in runs]),
        "system_cpu_us_per_msg": median([r.get("system_cpu_us_per_msg") for r in runs]),
        "note": note,
    }


def ratio_median(a_runs, b_runs, key="msgs_per_s"):
    """Median of the per-repetition ratios a/b: each pair ran back to back,
    so a load change on the host between repetitions cancels out."""
    rs = []
    for a, b_ in zip(a_runs, b_runs):
        if a.get(key) and b_.get(key):
            rs.append(a[key] / b_[key])
    return rnd(median(rs), 2) if rs else None


def main(scenario, reuse):
    n = env_int("BENCH_N", 20000, quick=5000)
    # Five repetitions by default: a median of five stands up to one
    # repetition caught by a load spike on the host; QUICK runs take three.
    reps = env_int("REPS", 5, quick=3)
    sessions = env_int("BENCH_SESSIONS", 20)
    pf_n = env_int("PF_N", 5000, quick=1000)
    b = Bench(f"s{scenario}")
    port = free_port()
    sink = b.sink(f"127.0.0.1:{port}", backlog=1000)

    def fresh_sink(sink):
        """Scenario 2 opens 20,000 connections per run; a client that closes
        first leaves its side in TIME_WAIT for 60 s, and those four-tuples
        slow down the next run's connect() (port search). Each run gets a
        sink on a new port, so no run pays for the one before it."""
        if reuse:
            return sink
        b.forget(sink.proc)
        return b.sink(f"127.0.0.1:{free_port()}", backlog=1000)
    msg = b.message(1024)
    if reuse:
        config = f"""[daemon]
workers = {sessions}
[cache]
destinations = ["127.0.0.1"]
"""
    else:
        config = f"""[daemon]
workers = {sessions}
[cache]
on_demand = false
destinations = []
"""
    # One destination, as many deliveries at once as workers (shaping code
    # running, no limit held).
    config += shaping_unlimited(sessions)
    pf = None
    if reuse and pf_n > 0:
        pf = PostfixDrain(b, port, concurrency=sessions)
        pf.start()
    floor = build_floor(b)
    src_runs, mh_runs, pf_runs, floor_runs = [], [], [], []
    for rep in range(reps):
        for who in order(rep):
            if who == "peer":
                sink = fresh_sink(sink)
                r = source_run(b, sink, n, sessions, reuse)
                src_runs.append(r)
                say(f"s{scenario} rep {rep + 1}/{reps}: smtp-source{' -d' if reuse else ''}: "
                    f"{r['msgs_per_s']} msg/s, {r['cpu_us_per_msg']} us CPU/msg, "
                    f"{r['sessions']} sessions")
                if pf:
                    c0 = sink.counters()
                    p = pf.run(pf_n)
                    # Postfix's cached sessions close 2 s after the drain.
                    c1 = sink.settle()
                    p["sessions"] = c1[0] - c0[0]
                    p["system_cpu_us_per_msg"] = rnd(p["system_cpu_s"] * 1e6 / p["n"]) \
                        if p["n"] else None
                    pf_runs.append(p)
                    say(f"s{scenario} rep {rep + 1}/{reps}: Postfix drain of {p['n']}: "
                        f"{p['msgs_per_s']} msg/s (sent {p['sent']}, {p['sessions']} sessions)")
            else:
                sink = fresh_sink(sink)
                r = mailhop_run(b, sink, msg, n, sessions, config)
                mh_runs.append(r)
                say(f"s{scenario} rep {rep + 1}/{reps}: mailhop: {r['msgs_per_s']} msg/s, "
                    f"{r['cpu_us_per_msg']} us CPU/msg, RSS {r['rss_kb']} kB, "
                    f"{r['sessions']} sessions, {r['statuses']}")
    # The reference client runs after the comparison, not between its runs:
    # its 20,000 sessions leave as many TIME_WAIT sockets, which the kernel
    # reaps for the next 60 s, on the CPUs of whatever runs next.
    for rep in range(reps if floor else 0):
        sink = fresh_sink(sink)
        f = floor_run(b, floor, sink, n, sessions, reuse)
        floor_runs.append(f)
        say(f"s{scenario} rep {rep + 1}/{reps}: floor.c: {f['msgs_per_s']} msg/s, "
            f"{f.get('cpu_us_per_msg')} us CPU/msg")
    peer_label = "smtp-source -d" if reuse else "smtp-source"
    rows = [row(f"{peer_label} -s {sessions} -m {n} -l 1024", src_runs)]
    r_src = ratio_median(mh_runs, src_runs)
    r_pf = ratio_median(mh_runs, pf_runs) if pf_runs else None
    if pf_runs:
        pf_row = row(f"Postfix qmgr+smtp drain of {pf_n} held", pf_runs)
        rows.append(pf_row)
    if floor_runs:
        rows.append(row(f"floor.c{'' if reuse else ' -n'}: C, thread per session, blocking, "
                        f"pipelined, SCHED_BATCH, -s {sessions}",
                        floor_runs, ratio=ratio_median(floor_runs, src_runs)))
    r_cpu = ratio_median(mh_runs, src_runs, "cpu_us_per_msg")
    notes = []
    if r_pf:
        notes.append(f"x{r_pf} Postfix drain")
    if r_cpu:
        notes.append(f"CPU x{r_cpu} of {peer_label}'s")
    rows.append(row(f"mailhop daemon, workers={sessions}"
                    + (", cache" if reuse else ", no cache"), mh_runs, ratio=r_src,
                    note=", ".join(notes)))
    all_ok = all(r["complete"] and r["statuses"]["sent"] == n for r in mh_runs)
    targets = []
    if reuse:
        targets.append(target("S1 mailhop/smtp-source -d throughput", r_src, ">=", 1.0, "x"))
        targets.append(target("S1 mailhop/Postfix drain throughput", r_pf, ">=", 10.0, "x"))
        # Like the throughput ratio: the median of the per-repetition ratios
        # (the medians of each side are in the table rows).
        targets.append(target("S1 mailhop CPU/msg / smtp-source -d CPU/msg (per repetition)",
                              r_cpu, "<=", 1.0, "x"))
    else:
        targets.append(target("S2 mailhop/smtp-source throughput (no reuse)", r_src, ">=", 0.9,
                              "x"))
    targets.append(target(f"S{scenario} every recipient sent", 1 if all_ok else 0, ">=", 1))
    write_result(scenario, {
        "title": ("relay, reused connections" if reuse
                  else "relay, new connection per message"),
        "params": {"n": n, "sessions": sessions, "reps": reps, "size": 1024,
                   "postfix_n": pf_n if reuse else None},
        "rows": rows,
        "targets": targets,
        "runs": {"smtp_source": src_runs, "postfix": pf_runs, "mailhop": mh_runs,
                 "floor": floor_runs},
    })
