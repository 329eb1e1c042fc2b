#!/usr/bin/env python3
"""Load generator for the mailhop daemon's job socket (job protocol v1).

Modes
  throughput  C connections, N jobs spread over them, every job written at
              once (pipelined; the daemon applies back-pressure), all results
              read back. With --window W > 0 each connection keeps at most W
              jobs in flight and per-job latencies are measured.
  latency     one connection, one job at a time (--window 1), after a warm-up
              that leaves a cached SMTP session: submit -> result round trips.
  status      prints the daemon's {"command":"status"} line.

Every result is checked: each recipient of each job must come back exactly
once with a status (sent, deferred or bounced); anything else is counted in
"missing"/"errors". Output: one JSON object on stdout.

With --pid PID (the daemon), its CPU time (utime+stime from /proc/PID/stat)
is taken before and after the timed run, and VmHWM / VmRSS / Threads are
sampled every --sample-interval seconds during it.

Standard library only. Loopback/UNIX sockets only.
"""

import argparse
import json
import os
import random
import selectors
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    # The command name (field 2) may contain spaces: split after the ')'.
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "VmSize", "Threads"):
                out[key] = int(value.split()[0])
    return out


def thread_table(pid):
    """{tid: (class, cpu_s, voluntary_ctxt, nonvoluntary_ctxt)} of a process;
    class is the thread name without digits (worker-, conn--w, ...)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
            name = data[data.index("(") + 1:data.rindex(")")]
            fields = data[data.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            vol = nonvol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        nonvol = int(line.split()[1])
        except (OSError, ValueError):
            continue
        cls = "".join(ch for ch in name if not ch.isdigit()) or name
        out[tid] = (cls, cpu, vol, nonvol)
    return out


def thread_delta(before, after, jobs):
    """Per thread class: threads, CPU and context switches during the run
    (threads that started during the run count from zero)."""
    classes = {}
    for tid, (cls, cpu, vol, nonvol) in after.items():
        b = before.get(tid, (cls, 0.0, 0, 0))
        c = classes.setdefault(cls, {"threads": 0, "cpu_s": 0.0, "vol_cs": 0, "invol_cs": 0})
        c["threads"] += 1
        c["cpu_s"] += cpu - b[1]
        c["vol_cs"] += vol - b[2]
        c["invol_cs"] += nonvol - b[3]
    for c in classes.values():
        c["cpu_s"] = round(c["cpu_s"], 3)
        if jobs:
            c["cpu_us_per_job"] = round(c["cpu_s"] * 1e6 / jobs, 1)
            c["cs_per_job"] = round((c["vol_cs"] + c["invol_cs"]) / jobs, 2)
    return classes


class Monitor:
    """Samples a process (the daemon) during a run."""

    def __init__(self, pid, interval):
        self.pid = pid
        self.interval = interval
        self.next = 0.0
        self.rss_peak = 0
        self.threads_peak = 0
        self.hwm = 0
        self.cpu0 = None
        self.threads0 = {}
        self.fds_peak = 0
        self.alive = True

    def start(self):
        if not self.pid:
            return
        self.cpu0 = proc_cpu_seconds(self.pid)
        self.threads0 = thread_table(self.pid)
        self.sample(force=True)

    def sample(self, force=False):
        if not self.pid or not self.alive:
            return
        now = time.monotonic()
        if not force and now < self.next:
            return
        self.next = now + self.interval
        try:
            st = proc_status(self.pid)
        except OSError:
            self.alive = False
            return
        self.rss_peak = max(self.rss_peak, st.get("VmRSS", 0))
        try:
            self.fds_peak = max(self.fds_peak, len(os.listdir(f"/proc/{self.pid}/fd")))
        except OSError:
            pass
        self.threads_peak = max(self.threads_peak, st.get("Threads", 0))
        self.hwm = max(self.hwm, st.get("VmHWM", 0))

    def finish(self, jobs, recipients):
        if not self.pid:
            return None
        self.sample(force=True)
        try:
            cpu = proc_cpu_seconds(self.pid) - self.cpu0
        except OSError:
            cpu = None
        threads = thread_delta(self.threads0, thread_table(self.pid), jobs)
        out = {
            "pid": self.pid,
            "cpu_s": round(cpu, 3) if cpu is not None else None,
            "vmhwm_kb": self.hwm,
            "rss_peak_kb": self.rss_peak,
            "threads_peak": self.threads_peak,
            "fds_peak": self.fds_peak,
            "by_thread": threads,
        }
        if cpu is not None and jobs:
            out["cpu_us_per_job"] = round(cpu * 1e6 / jobs, 1)
        if cpu is not None and recipients:
            out["cpu_us_per_rcpt"] = round(cpu * 1e6 / recipients, 1)
        return out


# ---------------------------------------------------------------- jobs

def load_destinations(path):
    """Lines "domain [group [nexthop]]" ('#' comments allowed)."""
    dests = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            dests.append((line[0], line[1] if len(line) > 1 else "all",
                          line[2] if len(line) > 2 else None))
    if not dests:
        sys.exit(f"submit.py: {path}: no destinations")
    return dests


def make_jobs(args):
    """Returns [(id, line_bytes, [addresses], group)]."""
    rng = random.Random(args.seed)
    dests = load_destinations(args.domains_file) if args.domains_file else None
    if args.message:
        message = {"path": os.path.abspath(args.message)}
    else:
        body_line = "x" * 63 + "\n"
        body = (body_line * (args.inline_size // len(body_line) + 1))[: args.inline_size]
        message = {"data": "From: bench@source.test\nSubject: mailhop bench\n\n" + body}
    hints = {"load": True, "store": True} if args.cache_hints else None
    jobs = []
    prefix = args.id_prefix
    for i in range(args.jobs):
        nexthop = args.nexthop
        if dests:
            domain, group, nh = dests[i % len(dests)]
            nexthop = nh or nexthop
        else:
            domain, group = args.rcpt_domain, "all"
        nrcpt = args.recipients
        if args.random_recipients and args.recipients > 1:
            nrcpt = rng.randint(1, args.recipients)
        addrs = [f"r{i}-{k}@{domain}" for k in range(nrcpt)]
        job = {
            "id": f"{prefix}{i}",
            "sender": args.sender,
            "recipients": [{"address": a} for a in addrs],
            "message": message,
        }
        if args.transport != "smtp":
            job["transport"] = args.transport
        if nexthop:
            job["nexthop"] = nexthop
        if hints:
            job["cache"] = hints
        line = (json.dumps(job, separators=(",", ":")) + "\n").encode()
        jobs.append((job["id"], line, addrs, group))
    return jobs


# ---------------------------------------------------------------- checks

class Tally:
    def __init__(self, jobs):
        self.expect = {j[0]: (j[2], j[3]) for j in jobs}
        self.seen = set()
        self.ends = {}
        self.statuses = {"sent": 0, "deferred": 0, "bounced": 0}
        self.other_status = 0
        self.errors = 0
        self.error_samples = []
        self.diag_samples = {}
        self.relays = {}
        self.unknown_lines = 0
        self.duplicate = 0
        self.missing_rcpt = 0
        self.groups = {}

    def group(self, name):
        return self.groups.setdefault(
            name, {"jobs": 0, "first_s": None, "last_s": 0.0, "sent": 0,
                   "deferred": 0, "bounced": 0, "errors": 0})

    def line(self, raw, t):
        try:
            obj = json.loads(raw)
        except ValueError:
            self.unknown_lines += 1
            return None
        jid = obj.get("id")
        if jid not in self.expect:
            self.unknown_lines += 1
            return None
        if jid in self.seen:
            self.duplicate += 1
            return jid
        self.seen.add(jid)
        self.ends[jid] = t
        addrs, gname = self.expect[jid]
        g = self.group(gname)
        g["jobs"] += 1
        g["last_s"] = max(g["last_s"], t)
        g["first_s"] = t if g["first_s"] is None else min(g["first_s"], t)
        if "error" in obj:
            self.errors += 1
            g["errors"] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(obj["error"])
            return jid
        got = {}
        for r in obj.get("recipients") or []:
            got.setdefault(r.get("address"), []).append(r)
        for a in addrs:
            rs = got.get(a)
            if not rs or len(rs) != 1:
                self.missing_rcpt += 1
                continue
            r = rs[0]
            st = r.get("status")
            if st in self.statuses:
                self.statuses[st] += 1
                g[st] += 1
            else:
                self.other_status += 1
            relay = r.get("relay") or "none"
            host = relay.split("[", 1)[-1].split("]", 1)[0] if "[" in relay else relay
            self.relays[host] = self.relays.get(host, 0) + 1
            if st != "sent":
                d = f'{r.get("dsn")} {r.get("diagnostic")}'
                if len(self.diag_samples) < 5 or d in self.diag_samples:
                    self.diag_samples[d] = self.diag_samples.get(d, 0) + 1
        return jid

    def report(self):
        missing_jobs = len(self.expect) - len(self.seen)
        total_rcpt = sum(len(v[0]) for v in self.expect.values())
        ok = (missing_jobs == 0 and self.missing_rcpt == 0 and self.errors == 0
              and self.other_status == 0 and self.duplicate == 0
              and self.unknown_lines == 0)
        groups = {}
        for name, g in sorted(self.groups.items()):
            g = dict(g)
            g["jobs_per_s"] = round(g["jobs"] / g["last_s"], 1) if g["last_s"] > 0 else None
            g["last_s"] = round(g["last_s"], 4)
            g["first_s"] = round(g["first_s"], 4) if g["first_s"] is not None else None
            groups[name] = g
        top = sorted(self.relays.items(), key=lambda kv: -kv[1])[:12]
        return {
            "complete": ok,
            "recipients": total_rcpt,
            "statuses": dict(self.statuses),
            "missing_jobs": missing_jobs,
            "missing_recipients": self.missing_rcpt,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "duplicates": self.duplicate,
            "unknown_lines": self.unknown_lines,
            "not_sent_samples": self.diag_samples,
            "relays": dict(top),
            "groups": groups,
        }


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_stats(lat):
    lat = sorted(lat)
    if not lat:
        return None
    ms = lambda v: round(v * 1000.0, 3)
    return {
        "n": len(lat),
        "p50_ms": ms(percentile(lat, 50)),
        "p90_ms": ms(percentile(lat, 90)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1]),
        "mean_ms": ms(sum(lat) / len(lat)),
    }


# ---------------------------------------------------------------- I/O

def connect(path, timeout):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                sys.exit(f"submit.py: cannot connect to {path}: {e}")
            time.sleep(0.05)


def run_pipelined(args, jobs, monitor):
    """All jobs written at once on C connections; results timestamped per
    read() and parsed after the clock stops (the generator stays cheap)."""
    c = max(1, min(args.conns, len(jobs)))
    per = [jobs[i::c] for i in range(c)]
    conns = []
    for part in per:
        s = connect(args.socket, 5)
        s.setblocking(False)
        conns.append({
            "sock": s,
            "out": memoryview(b"".join(j[1] for j in part)),
            "off": 0,
            "want": len(part),
            "got": 0,
            "chunks": [],
            "tail": b"",
        })
    sel = selectors.DefaultSelector()
    for i, cn in enumerate(conns):
        sel.register(cn["sock"], selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    monitor.start()
    c0 = os.times()
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    open_conns = len(conns)
    timed_out = False
    # No pauses once this few results are outstanding (about the last
    # pause's worth at the relay scenarios' rates).
    tail = max(5 * c, 100)
    # --until-group: stop once every job of that group has its result (the
    # lines are then parsed as they come, only for their ids).
    until = {j[0] for j in jobs if j[3] == args.until_group} if args.until_group else None
    while open_conns:
        if until is not None and not until:
            break
        now = time.monotonic()
        if now > deadline:
            timed_out = True
            break
        monitor.sample()
        for key, ev in sel.select(timeout=min(0.1, args.sample_interval)):
            cn = conns[key.data]
            s = cn["sock"]
            if ev & selectors.EVENT_WRITE and cn["off"] < len(cn["out"]):
                try:
                    n = s.send(cn["out"][cn["off"]:cn["off"] + 262144])
                    cn["off"] += n
                except BlockingIOError:
                    pass
                if cn["off"] >= len(cn["out"]):
                    sel.modify(s, selectors.EVENT_READ, key.data)
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(s)
                    open_conns -= 1
                    continue
                cn["chunks"].append((time.monotonic() - t0, data))
                cn["got"] += data.count(b"\n")
                if until is not None:
                    cn["tail"] += data
                    *done, cn["tail"] = cn["tail"].split(b"\n")
                    for ln in done:
                        try:
                            until.discard(json.loads(ln).get("id"))
                        except (ValueError, AttributeError):
                            pass
                if cn["got"] >= cn["want"]:
                    sel.unregister(s)
                    open_conns -= 1
        # Let results accumulate: a few large reads (and large writes of
        # jobs) instead of one wake-up per result keeps the generator's CPU
        # and its interruptions of the daemon small (it shares the CPUs with
        # the daemon and the sink). The last results are taken as they come,
        # so the pause does not lengthen the timed run.
        outstanding = sum(cn["want"] - cn["got"] for cn in conns)
        if open_conns and args.batch_ms > 0 and outstanding > tail and until is None:
            time.sleep(args.batch_ms / 1000.0)
    elapsed = time.monotonic() - t0
    c1 = os.times()
    args.client_cpu = (c1.user - c0.user) + (c1.system - c0.system)
    mon = monitor.finish(len(jobs), sum(len(j[2]) for j in jobs))
    for cn in conns:
        cn["sock"].close()
    tally = Tally(jobs)
    for cn in conns:
        buf = b""
        for t, data in cn["chunks"]:
            buf += data
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                if ln.strip():
                    tally.line(ln, t)
    return elapsed, tally, [], mon, timed_out


def run_windowed(args, jobs, monitor, window):
    """Each connection keeps at most `window` jobs in flight; per-job
    submit -> result latency."""
    c = max(1, min(args.conns, len(jobs)))
    per = [jobs[i::c] for i in range(c)]
    conns = []
    for part in per:
        s = connect(args.socket, 5)
        s.setblocking(False)
        conns.append({"sock": s, "jobs": part, "next": 0, "inflight": {},
                      "buf": b"", "done": 0, "pending_out": b""})
    sel = selectors.DefaultSelector()
    for i, cn in enumerate(conns):
        sel.register(cn["sock"], selectors.EVENT_READ, i)
    tally = Tally(jobs)
    lat = []
    monitor.start()
    c0 = os.times()
    t0 = time.monotonic()
    deadline = t0 + args.timeout

    def fill(cn):
        out = []
        while cn["next"] < len(cn["jobs"]) and len(cn["inflight"]) < window:
            jid, line, _, _ = cn["jobs"][cn["next"]]
            cn["next"] += 1
            cn["inflight"][jid] = None
            out.append((jid, line))
        if out:
            now = time.perf_counter()
            for jid, _ in out:
                cn["inflight"][jid] = now
            data = b"".join(line for _, line in out)
            cn["sock"].setblocking(True)
            cn["sock"].sendall(data)
            cn["sock"].setblocking(False)

    for cn in conns:
        fill(cn)
    open_conns = len(conns)
    timed_out = False
    while open_conns:
        if time.monotonic() > deadline:
            timed_out = True
            break
        monitor.sample()
        for key, _ in sel.select(timeout=0.1):
            cn = conns[key.data]
            try:
                data = cn["sock"].recv(1 << 20)
            except BlockingIOError:
                continue
            now = time.perf_counter()
            if not data:
                sel.unregister(cn["sock"])
                open_conns -= 1
                continue
            cn["buf"] += data
            *lines, cn["buf"] = cn["buf"].split(b"\n")
            for ln in lines:
                if not ln.strip():
                    continue
                jid = tally.line(ln, time.monotonic() - t0)
                sent_at = cn["inflight"].pop(jid, None)
                if sent_at is not None:
                    lat.append(now - sent_at)
                cn["done"] += 1
            if cn["done"] >= len(cn["jobs"]):
                sel.unregister(cn["sock"])
                open_conns -= 1
            else:
                fill(cn)
    elapsed = time.monotonic() - t0
    c1 = os.times()
    args.client_cpu = (c1.user - c0.user) + (c1.system - c0.system)
    mon = monitor.finish(len(jobs), sum(len(j[2]) for j in jobs))
    for cn in conns:
        cn["sock"].close()
    return elapsed, tally, lat, mon, timed_out


def daemon_status(path):
    s = connect(path, 5)
    s.settimeout(10)
    s.sendall(b'{"command":"status"}\n')
    buf = b""
    while b"\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    try:
        return json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        return None


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["throughput", "latency", "status"])
    p.add_argument("--socket", required=True, help="daemon socket path")
    p.add_argument("--jobs", "-n", type=int, default=1000)
    p.add_argument("--conns", "-c", type=int, default=4, help="client connections")
    p.add_argument("--window", type=int, default=0,
                   help="jobs in flight per connection (0: all at once)")
    p.add_argument("--recipients", "-r", type=int, default=1, help="recipients per job")
    p.add_argument("--random-recipients", action="store_true",
                   help="1..R recipients per job (seeded) instead of exactly R")
    p.add_argument("--message", help="message file (sent as an absolute path)")
    p.add_argument("--inline-size", type=int, default=1024,
                   help="body bytes of an inline message when --message is not given")
    p.add_argument("--nexthop", help="job nexthop (default: recipient domain)")
    p.add_argument("--transport", default="smtp", choices=["smtp", "lmtp"])
    p.add_argument("--domains-file",
                   help='recipient domains, one "domain [group [nexthop]]" a line, '
                        'used round-robin')
    p.add_argument("--rcpt-domain", default="sink.test")
    p.add_argument("--sender", default="bench@source.test")
    p.add_argument("--cache-hints", action="store_true",
                   help='add "cache":{"load":true,"store":true} to each job')
    p.add_argument("--warmup", type=int, default=20, help="latency mode: untimed jobs first")
    p.add_argument("--pid", type=int, help="daemon pid to measure (CPU, RSS, threads)")
    p.add_argument("--sample-interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--batch-ms", type=float, default=10.0,
                   help="throughput mode: pause between polls so reads batch results "
                        "(not for the last results)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--id-prefix", default="B")
    p.add_argument("--status", action="store_true", help="add the daemon's status afterwards")
    p.add_argument("--dump-times", help='write "id group seconds" per job (result arrival)')
    p.add_argument("--until-group",
                   help="throughput mode: stop once every job of this group (domains file) "
                        "is answered; the other jobs' results are not waited for")
    args = p.parse_args()

    if args.mode == "status":
        print(json.dumps(daemon_status(args.socket)))
        return 0

    if args.mode == "latency":
        args.conns = 1
        args.window = 1
        if args.warmup > 0:
            wargs = argparse.Namespace(**vars(args))
            wargs.jobs = args.warmup
            wargs.id_prefix = args.id_prefix + "w"
            wjobs = make_jobs(wargs)
            run_windowed(wargs, wjobs, Monitor(None, 1), 1)

    jobs = make_jobs(args)
    monitor = Monitor(args.pid, args.sample_interval)
    if args.window > 0:
        elapsed, tally, lat, mon, timed_out = run_windowed(args, jobs, monitor, args.window)
    else:
        elapsed, tally, lat, mon, timed_out = run_pipelined(args, jobs, monitor)
    rep = tally.report()
    if args.dump_times:
        with open(args.dump_times, "w") as f:
            for jid, t in tally.ends.items():
                f.write(f"{jid} {tally.expect[jid][1]} {t:.6f}\n")
    out = {
        "mode": args.mode,
        "jobs": len(jobs),
        "conns": min(args.conns, len(jobs)),
        "window": args.window,
        "seconds": round(elapsed, 4),
        "jobs_per_s": round(len(jobs) / elapsed, 1) if elapsed > 0 else None,
        "recipients_per_s": round(rep["recipients"] / elapsed, 1) if elapsed > 0 else None,
        "timed_out": timed_out,
        "client_cpu_s": round(args.client_cpu, 3),
        "client_cpu_us_per_job": round(args.client_cpu * 1e6 / len(jobs), 1) if jobs else None,
    }
    out.update(rep)
    if lat:
        out["latency"] = latency_stats(lat)
    if mon:
        out["daemon"] = mon
    if args.status:
        out["daemon_status"] = daemon_status(args.socket)
    print(json.dumps(out))
    return 0 if (rep["complete"] and not timed_out) else 1


if __name__ == "__main__":
    sys.exit(main())
