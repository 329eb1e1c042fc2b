#!/usr/bin/env python3
"""Fault-injection soak of the mailhop daemon (make soak; docs/testing.md, "Soak").

Starts the release daemon (own config and socket in a temporary directory:
connection cache on with short idle times, chain_jobs on, 2 s timeouts)
against fault-injecting SMTP and LMTP servers (faultserver.py) on loopback
TCP ports and UNIX sockets, feeds it JOBS jobs over its socket from several
client connections, and checks every answer against the servers' ledgers.

Chaos besides the servers' own faults: kill -9 and restart of a server
process, SIGHUP to the daemon (with a changed config), clients that send
jobs and disconnect without reading (sometimes leaving half a line), and job
ids reused across client connections (same next hop) while the first is in flight.

A share of the jobs (LMTP, 0.08) goes in through the daemon's LMTP ingress
instead ([[ingress]] on two UNIX sockets, each with its next hop): an LMTP
client connection for 1-8 transactions, XFORWARD IDENT = the job id, and the per-recipient
replies after the final dot become that job's answer (2xx sent, 4xx
deferred, 5xx bounced), checked like the socket's answers.

A share of the jobs (REDIS, 0.06) goes in through the Redis Streams feed
instead ([feed] on, a redis-server on loopback with AOF and appendfsync
always, which the chaos kills with -9 and restarts like a server): each job
XADDed with an id of its own (a retried XADD cannot add it twice), its
answer read from the results stream and checked like the socket's. Without
redis-server the share is skipped, loudly (an error with CI=true).

Every job is identifiable at the server: sender soak-N@soak.test, recipients
rN.I@soak.test, body header X-Soak-Job: N. Checks (each is a violation):
  lost          reported sent, but no server accepted it for that recipient
                with that job's body
  misdelivered  a server accepted a body for a recipient (or from a sender)
                of another job
  false bounce  bounced, but no server replied 5xx for that recipient (to
                its RCPT, or MAIL/DATA/end of data, or its LMTP reply) or a
                garbage line in one of that job's transactions
  unanswered    a job (of a client that stayed) without an answer, or a
                recipient missing in it, or no status= log line for it
  answered 2x   a second answer for a job or recipient, or more than one
                status= log line for a recipient (except the status=deferred
                lines of attempts that met only throttling replies, after
                which the daemon logs "queued again" and tries the job again)
  log mismatch  the answer and the status= log line disagree
  errors        a job answered with "error" (the soak sends only valid jobs)
Duplicate risk (accepted by a server, reported deferred) is counted, not a
violation. Clients that disconnect are checked through the daemon's log.

Environment / options: JOBS (100000), SEED (1), DURATION (cap on the
submission phase in seconds, 1800), CONNS, WORKERS, FAULT_SCALE (1.0; 0 =
servers without faults), NO_CHAOS=1 (no kills, no SIGHUP), DUP_IDS (0.1), LMTP (0.08,
share of jobs through the LMTP ingress), REDIS (0.06, share through the Redis feed), SHOW (violations
printed per category), KEEP=1 (keep the temp directory), MAILHOP (binary). Exit 0 only without a violation.
Repro: the same SEED gives the same jobs, fault probabilities and chaos
schedule; thread interleavings differ between runs. Standard library only.
"""

import argparse
import collections
import json
import os
import random
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FAULTSERVER = os.path.join(HERE, "faultserver.py")
sys.path.insert(0, os.path.join(HERE, ".."))
from resp import Resp  # noqa: E402 - scripts/resp.py

REDIS_STREAM = "soak:jobs"
REDIS_RESULTS = "soak:results"
TIMEOUT = 2.0  # mailhop's protocol timeouts in the soak config
DOMAIN = "soak.test"

JOB_RE = re.compile(r"^soak-(\d+)@")
RCPT_RE = re.compile(r"^r(\d+)\.\d+@")
QMGR_RE = re.compile(r"from=<soak-(\d+)@")
REQUEUED_RE = re.compile(r"job (\S+): only throttling replies; queued again")
LOG_RE = re.compile(r"(\S+): to=<([^>]*)>, relay=.*, status=(sent|deferred|bounced) ")


def say(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def env(name, default, conv=int):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


# ---------------------------------------------------------------- processes

class FaultServer:
    def __init__(self, soak, name, proto, listens, pipelining=True):
        self.soak = soak
        self.name = name
        self.proto = proto
        self.listens = listens  # specs; rewritten with actual ports
        self.pipelining = pipelining
        self.gen = 0
        self.proc = None
        self.ledger = os.path.join(soak.dir, f"ledger-{name}.jsonl")

    def start(self, limit=10.0):
        cmd = [sys.executable, FAULTSERVER, "--name", self.name, "--proto", self.proto,
               "--ledger", self.ledger, "--seed", str(self.soak.seed), "--gen", str(self.gen),
               "--client-timeout", str(TIMEOUT), "--fault-scale", str(self.soak.args.fault_scale)]
        if not self.pipelining:
            cmd.append("--no-pipelining")
        for spec in self.listens:
            cmd += ["--listen", spec]
        err = open(os.path.join(self.soak.dir, f"server-{self.name}.err"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.DEVNULL)
        err.close()
        deadline = time.monotonic() + limit
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        words = line.decode().split()
        if len(words) < 2 or words[0] != "ready":
            self.stop()
            return False
        self.listens = words[2:]
        return True

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def kill9_restart(self, pause):
        """kill -9, pause, restart on the same listeners (bounded retries)."""
        self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()
        time.sleep(pause)
        for _ in range(20):
            self.gen += 1
            if self.start():
                return True
            time.sleep(0.25)
        return False


class RedisPeer:
    """The Redis feed's server: redis-server on a loopback port with AOF
    (appendfsync always: what it acknowledged survives a kill -9)."""

    def __init__(self, soak, binary):
        self.soak = soak
        self.binary = binary
        self.name = "redis"
        self.gen = 0
        self.proc = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = os.path.join(soak.dir, "redis")
        os.makedirs(self.dir, exist_ok=True)

    def start(self, limit=15.0):
        log = open(os.path.join(self.soak.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no"],
            # Not die_with_parent: its signal follows the thread that
            # started the process, and the chaos thread restarts it.
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                r = Resp(self.port, timeout=2)
                try:
                    if r.send([["PING"]])[0] == "PONG":
                        return True
                finally:
                    r.close()
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def kill9_restart(self, pause):
        self.stop()
        time.sleep(pause)
        self.gen += 1
        return self.start()


def die_with_parent():
    """preexec_fn: SIGKILL the child when the soak's main thread dies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def daemon_config(soak, variant):
    """The daemon's configuration; variant toggles what a SIGHUP changes."""
    t = f'"{int(TIMEOUT)}s"'
    return f"""# mailhop soak configuration (generated)
[smtp]
helo_name = "soak-client.test"
connect_timeout = {t}
helo_timeout = {t}
mail_timeout = {t}
rcpt_timeout = {t}
data_init_timeout = {t}
data_xfer_timeout = {t}
data_done_timeout = {t}
quit_timeout = {t}
rset_timeout = {t}

[lmtp]
connect_timeout = {t}

[dns]
support = "disabled"

[tls]
security_level = "none"

[daemon]
socket = "{soak.sock}"
workers = {soak.workers}
queue_capacity = 500
shutdown_timeout = "15s"
client_idle_timeout = "120s"
spool_directory = "{soak.dir}/spool"

[cache]
time_limit = "{"1s" if variant % 2 == 0 else "1500ms"}"
reuse_time_limit = "30s"
reuse_count_limit = {0 if variant % 2 == 0 else 50}
on_demand = true
chain_jobs = true

[shaping]
# Short pauses and dead times, so that the soak goes through many of them
# (a killed server makes its destination dead).
minimal_backoff_time = "{"1s" if variant % 2 == 0 else "2s"}"
throttle_backoff = "200ms"
throttle_backoff_max = "2s"
throttle_retry_time = "20s"
""" + (f"""
[feed]
enabled = true
redis_url = "redis://127.0.0.1:{soak.redis.port}/"
streams = ["{REDIS_STREAM}"]
results_stream = "{REDIS_RESULTS}"
group = "soak"
consumer = "soak-node"
claim_after = "5s"
""" if soak.redis else "") + "".join(f"""
[[ingress]]
listen = "unix:{sock}"
nexthop = "{nexthop}"
deadline = "60s"
""" for sock, nexthop in soak.lmtp_routes)


# ---------------------------------------------------------------- the soak

class Soak:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(f"soak/{args.seed}")
        self.dir = tempfile.mkdtemp(prefix="mailhop-soak-")
        os.chmod(self.dir, 0o755)  # the LMTP sockets, for a daemon that dropped root
        self.sock = os.path.join(self.dir, "mailhop.sock")
        self.workers = args.workers
        self.servers = []
        self.daemon = None
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.cfg_path = os.path.join(self.dir, "mailhop.toml")
        # jobs[n] = dict(id, rcpts, nexthop, transport, kind 'conn'|'quit')
        self.jobs = []
        self.answers = collections.defaultdict(list)  # n -> [answer objects]
        self.stray_answers = []  # answers matching no in-flight job
        self.submitted = 0
        self.progress = 0  # jobs answered, plus those of disconnecting clients
        self.done = False
        self.chaos_log = []
        self.cache_totals = collections.Counter()  # summed over SIGHUP reloads
        self.harness_errors = []
        # The LMTP ingress: its listeners (socket, next hop), the jobs for
        # them and how many of those are in flight or answered.
        self.lmtp_routes = []
        self.lmtp_jobs = None
        self.lmtp_lock = threading.Lock()
        self.lmtp_inflight = 0
        self.lmtp_answered = 0
        # The Redis feed: its server (None: no share), the jobs for it,
        # how many are in flight or answered (a job counted once).
        self.redis = None
        self.redis_jobs = None
        self.redis_lock = threading.Lock()
        self.redis_inflight = 0
        self.redis_answered = 0
        self.redis_seen = set()

    # -- setup
    def start_servers(self):
        d = self.dir
        specs = [
            ("smtpA", "smtp", ["tcp:127.0.0.1:0", "tcp:127.0.0.1:0"], True),
            ("smtpB", "smtp", ["tcp:127.0.0.1:0"], True),
            ("smtpC", "smtp", ["tcp:127.0.0.1:0"], False),
            ("lmtpD", "lmtp", ["tcp:127.0.0.1:0", f"unix:{d}/lmtpD.sock"], True),
            ("lmtpE", "lmtp", [f"unix:{d}/lmtpE.sock"], True),
        ]
        for name, proto, listens, pipe in specs:
            s = FaultServer(self, name, proto, listens, pipe)
            self.servers.append(s)
            if not s.start():
                raise RuntimeError(f"fault server {name} did not start")
        by = {s.name: s.listens for s in self.servers}

        def port(spec):
            return spec.rsplit(":", 1)[1]

        a1, a2 = (port(x) for x in by["smtpA"])
        b1 = port(by["smtpB"][0])
        c1 = port(by["smtpC"][0])
        d1 = port(by["lmtpD"][0])
        # (transport, nexthop, weight)
        self.nexthops = [
            ("smtp", f"[127.0.0.1]:{a1}", 20),
            ("smtp", f"[127.0.0.1]:{a2}", 15),
            ("smtp", f"[127.0.0.1]:{b1}", 15),
            ("smtp", f"[127.0.0.1]:{c1}", 8),
            ("smtp", f"[127.0.0.1]:{b1}, [127.0.0.1]:{a2}", 7),
            ("lmtp", f"inet:127.0.0.1:{d1}", 12),
            ("lmtp", f"unix:{by['lmtpD'][1][5:]}", 10),
            ("lmtp", f"unix:{by['lmtpE'][0][5:]}", 13),
        ]
        self.nh_weights = [w for _, _, w in self.nexthops]
        self.lmtp_routes = [(f"{d}/ingress-a.sock", f"[127.0.0.1]:{a1}"),
                            (f"{d}/ingress-b.sock", f"[127.0.0.1]:{b1}, [127.0.0.1]:{a2}")]

    def start_daemon(self, binary):
        with open(self.cfg_path, "w") as f:
            f.write(daemon_config(self, 0))
        log = open(self.log_path, "ab")
        env_ = dict(os.environ)
        env_.pop("RUST_LOG", None)
        self.daemon = subprocess.Popen([binary, "daemon", "--config", self.cfg_path],
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       env=env_, preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.daemon.returncode}; see {self.log_path}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.sock)
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daemon socket did not appear")

    def status(self):
        """The daemon's status line (its cache counters show that the cache
        and chaining were exercised), or None."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(self.sock)
                s.sendall(b'{"command":"status"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return json.loads(data)
        except (OSError, ValueError):
            return None

    def add_cache(self, st):
        for k, v in ((st or {}).get("cache") or {}).items():
            if k != "idle" and isinstance(v, int):
                self.cache_totals[k] += v

    def stop_all(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.harness_errors.append("daemon did not exit within 30 s of SIGTERM: killed")
                self.daemon.kill()
                self.daemon.wait(timeout=5)
            if self.daemon.returncode != 0:
                self.harness_errors.append(f"daemon exit status {self.daemon.returncode} after SIGTERM")
        for s in self.servers:
            s.stop()
        if self.redis:
            self.redis.stop()

    # -- jobs
    def make_job(self, n, kind, route=None):
        rng = self.rng
        transport, nexthop, _ = rng.choices(self.nexthops, weights=self.nh_weights)[0]
        if route is not None:  # a duplicate id goes where its twin goes
            transport, nexthop = route
        nrc = rng.choice((1, 1, 1, 2, 2, 3))
        rcpts = [f"r{n}.{i}@{DOMAIN}" for i in range(nrc)]
        lines = [f"From: soak-{n}@{DOMAIN}", f"To: {', '.join(rcpts)}",
                 f"Subject: soak job {n}", f"X-Soak-Job: {n}", ""]
        if rng.random() < 0.03:
            lines += [f"{i:06d} " + "x" * 70 for i in range(600)]  # ~46 KB
        else:
            lines += ["hello from the soak", ".a line that needs dot-stuffing", "."] + \
                     ["y" * rng.randint(1, 120) for _ in range(rng.randint(0, 6))]
        job = {"id": f"j{n}", "rcpts": rcpts, "nexthop": nexthop, "transport": transport,
               "kind": kind}
        line = {"id": None, "transport": transport, "nexthop": nexthop,
                "sender": f"soak-{n}@{DOMAIN}",
                "recipients": [{"address": r} for r in rcpts],
                "message": {"data": "\n".join(lines) + "\n"},
                "cache": {"load": True, "store": True}}
        return job, line

    def encode(self, job, line):
        line["id"] = job["id"]
        return (json.dumps(line, separators=(",", ":")) + "\n").encode()

    # -- chaos
    def chaos(self):
        """Kills/restarts servers and SIGHUPs the daemon at job-count marks."""
        jobs = self.args.jobs
        kills = max(3, min(30, jobs // 1000))
        hups = max(2, min(20, jobs // 2500))
        marks = [(int(jobs * (i + 0.5) / kills), "kill") for i in range(kills)]
        marks += [(int(jobs * (i + 0.7) / hups), "hup") for i in range(hups)]
        marks.sort()
        rng = random.Random(f"chaos/{self.seed}")
        variant = 0
        killed = 0
        for mark, what in marks:
            while self.progress < mark:
                if self.done:
                    return
                time.sleep(0.05)
            if what == "kill":
                killed += 1
                # Redis goes down at the second kill at least (and may at
                # any other).
                s = rng.choice(self.servers + ([self.redis] if self.redis else []))
                if self.redis and killed == 2:
                    s = self.redis
                pause = rng.uniform(0.1, 1.0)
                ok = s.kill9_restart(pause)
                self.chaos_log.append(f"job {self.progress}: kill -9 {s.name}, restarted "
                                      f"after {pause:.2f}s as gen {s.gen}" + ("" if ok else " FAILED"))
                if not ok:
                    self.harness_errors.append(f"server {s.name} did not restart")
            else:
                variant += 1
                self.add_cache(self.status())  # a changed [cache] starts a new cache
                with open(self.cfg_path, "w") as f:
                    f.write(daemon_config(self, variant))
                if self.daemon.poll() is None:
                    self.daemon.send_signal(signal.SIGHUP)
                self.chaos_log.append(f"job {self.progress}: SIGHUP (config variant {variant})")

    def quitter(self, batch, partial):
        """A client that sends jobs and disconnects without reading."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(self.sock)
                s.sendall(b"".join(batch) + partial)
        except OSError as e:
            self.harness_errors.append(f"quitter client: {e}")
            return False
        return True

    def client_jobs(self, jobs):
        """The (n, job, line) items of a client queue until None, or until
        the run is over and the queue empty."""
        import queue as _queue
        while True:
            try:
                item = jobs.get(timeout=0.5)
            except _queue.Empty:
                if self.done:
                    return
                continue
            if item is None:
                return
            yield item

    def lmtp_client(self):
        """Takes (n, job, line) from the LMTP queue until None: one LMTP
        transaction per job on the ingress of its route, on a connection
        kept for up to 1-8 transactions (so the ingress reuses its spool
        file); the replies after the final dot are the job's answer."""
        rng = random.Random(f"lmtp/{self.seed}/{threading.get_ident()}")
        conns = {}  # ingress socket -> [socket, reader, transactions left]
        for n, job, line in self.client_jobs(self.lmtp_jobs):
            answer = None
            conn = conns.pop(job["ingress"], None)
            try:
                if conn is None:
                    conn = self.lmtp_connect(job["ingress"], rng.randint(1, 8))
                answer = self.lmtp_transaction(conn, job, line)
                conn[2] -= 1
                if conn[2] > 0:
                    conns[job["ingress"]] = conn
                else:
                    self.lmtp_close(conn)
            except (OSError, ValueError) as e:
                self.harness_errors.append(f"LMTP client, job {n}: {e}")
                if conn is not None:
                    self.lmtp_close(conn)
            with self.lmtp_lock:
                if answer is not None:
                    self.answers[n].append(answer)
                    self.lmtp_answered += 1
                self.lmtp_inflight -= 1
        for conn in conns.values():
            self.lmtp_close(conn)

    @staticmethod
    def lmtp_reply(f):
        text = []
        while True:
            raw = f.readline()
            if not raw:
                raise ValueError(f"the ingress closed the connection after {text}")
            text.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if raw[3:4] != b"-":
                return text[-1]

    def lmtp_connect(self, sock_path, transactions):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(120)
            s.connect(sock_path)
            f = s.makefile("rb")
            self.lmtp_reply(f)
            s.sendall(b"LHLO soak-mta.test\r\n")
            self.lmtp_reply(f)
        except (OSError, ValueError):
            s.close()
            raise
        return [s, f, transactions]

    @staticmethod
    def lmtp_close(conn):
        s = conn[0]
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        s.close()

    def lmtp_transaction(self, conn, job, line):
        s, f = conn[0], conn[1]
        rcpts = [r["address"] for r in line["recipients"]]
        head = (f"XFORWARD IDENT={job['id']}\r\nMAIL FROM:<{line['sender']}>\r\n"
                + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n")
        s.sendall(head.encode())
        for _ in range(3 + len(rcpts)):
            r = self.lmtp_reply(f)
            if r[:1] not in ("2", "3"):
                raise ValueError(f"the ingress refused the envelope: {r}")
        body = line["message"]["data"].replace("\r\n", "\n").split("\n")
        if body and body[-1] == "":
            body.pop()
        data = "".join(("." + b if b.startswith(".") else b) + "\r\n" for b in body) + ".\r\n"
        s.sendall(data.encode())
        recipients = []
        for r in rcpts:
            text = self.lmtp_reply(f)
            code = text[:1]
            status = {"2": "sent", "4": "deferred", "5": "bounced"}.get(code, "?")
            parts = text.split(" ", 3)
            recipients.append({"address": r, "status": status,
                               "dsn": parts[1] if len(parts) > 1 else "",
                               "diagnostic": parts[3] if len(parts) > 3 else text})
        return {"id": job["id"], "recipients": recipients, "via": "lmtp"}

    def redis_submitter(self):
        """XADDs the jobs of the Redis queue until None, each with the id
        N+1-1 (increasing: one submitter, jobs in order), retried across
        a Redis restart for up to 60 s; a retry of an XADD that went
        through is refused as not above the top id, so no job goes in
        twice."""
        conn = None
        for n, job, line in self.client_jobs(self.redis_jobs):
            line["id"] = job["id"]
            cmd = ["XADD", REDIS_STREAM, f"{n + 1}-1", "job",
                   json.dumps(line, separators=(",", ":"))]
            deadline = time.monotonic() + 60
            while True:
                reply = None
                try:
                    if conn is None:
                        conn = Resp(self.redis.port, timeout=10)
                    reply = conn.send([cmd])[0]
                except (OSError, ValueError):
                    if conn is not None:
                        conn.close()
                    conn = None
                if isinstance(reply, bytes) or (
                        isinstance(reply, str) and "equal or smaller" in reply):
                    break
                if time.monotonic() > deadline:
                    self.harness_errors.append(f"Redis: job {n} not added in 60 s ({reply!r})")
                    break
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def redis_reader(self):
        """Reads the results stream until the run is over: each result is
        its job's answer (the same JSON as the socket's)."""
        last = "0-0"
        conn = None
        while not self.done:
            try:
                if conn is None:
                    conn = Resp(self.redis.port, timeout=10)
                reply = conn.send([["XREAD", "COUNT", 500, "BLOCK", 300,
                                    "STREAMS", REDIS_RESULTS, last]])[0]
            except (OSError, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
                continue
            if not isinstance(reply, list):
                if isinstance(reply, str):  # LOADING after a restart
                    time.sleep(0.1)
                continue
            for _stream, entries in reply:
                for eid, fields in entries:
                    last = eid.decode()
                    raw = dict(zip(fields[::2], fields[1::2])).get(b"result", b"")
                    self.on_redis_answer(raw)
        if conn is not None:
            conn.close()

    def on_redis_answer(self, raw):
        try:
            obj = json.loads(raw)
        except ValueError:
            self.stray_answers.append(("redis", raw[:300], "not JSON"))
            return
        jid = obj.get("id") if isinstance(obj, dict) else None
        m = re.fullmatch(r"j(\d+)", jid or "")
        n = int(m.group(1)) if m else -1
        if not (0 <= n < len(self.jobs) and self.jobs[n]["kind"] == "redis"):
            self.stray_answers.append(("redis", raw[:300], "no Redis job with this id"))
            return
        with self.redis_lock:
            self.answers[n].append(obj)
            if n not in self.redis_seen:
                self.redis_seen.add(n)
                self.redis_answered += 1
                self.redis_inflight -= 1

    def run_clients(self):
        args = self.args
        rng = random.Random(f"clients/{self.seed}")
        sel = selectors.DefaultSelector()
        conns = []
        for i in range(args.conns):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.sock)
            s.setblocking(False)
            c = {"i": i, "sock": s, "out": bytearray(), "in": bytearray(),
                 "inflight": {}, "used": set(), "last": None}
            conns.append(c)
            sel.register(s, selectors.EVENT_READ, c)
        import queue as _queue
        self.lmtp_jobs = _queue.Queue()
        lmtp_threads = [threading.Thread(target=self.lmtp_client, daemon=True)
                        for _ in range(args.lmtp_conns)]
        for t in lmtp_threads:
            t.start()
        self.redis_jobs = _queue.Queue()
        redis_threads = []
        if self.redis:
            redis_threads = [threading.Thread(target=self.redis_submitter, daemon=True),
                             threading.Thread(target=self.redis_reader, daemon=True)]
        for t in redis_threads:
            t.start()
        window = args.window
        start = time.monotonic()
        last_progress = start
        last_submit = start
        last_answer = start
        answered = 0
        quit_batch = []
        quits = 0
        n = 0
        stop_submitting = False
        while True:
            now = time.monotonic()
            if not stop_submitting and (n >= args.jobs or now - start > args.duration):
                stop_submitting = True
                last_submit = now
                if now - start > args.duration:
                    say(f"DURATION {args.duration}s reached after {n} jobs")
            # submit while there is window room
            while not stop_submitting and n < args.jobs:
                if rng.random() < 0.02:
                    twin = None
                    if rng.random() < 0.3:
                        others = [c for c in conns if c["last"]]
                        if others:
                            twin = rng.choice(others)["last"]
                    job, line = self.make_job(n, "quit", twin and twin[1:])
                    if twin:
                        job["id"] = twin[0]
                    quit_batch.append(self.encode(job, line))
                    self.jobs.append(job)
                    n += 1
                    quits += 1
                    if len(quit_batch) >= rng.randint(1, 6):
                        partial = b""
                        if rng.random() < 0.2:
                            _, pl = self.make_job(-1, "partial")
                            pl["id"] = "partial"
                            full = json.dumps(pl).encode()
                            partial = full[: rng.randint(1, len(full) - 1)]
                        self.quitter(quit_batch, partial)
                        quit_batch = []
                    continue
                if self.lmtp_routes and rng.random() < args.lmtp:
                    with self.lmtp_lock:
                        busy = self.lmtp_inflight >= 4 * args.lmtp_conns
                    if not busy:
                        sock_path, nexthop = rng.choice(self.lmtp_routes)
                        job, line = self.make_job(n, "lmtp", ("smtp", nexthop))
                        job["ingress"] = sock_path
                        self.jobs.append(job)
                        with self.lmtp_lock:
                            self.lmtp_inflight += 1
                        self.lmtp_jobs.put((n, job, line))
                        n += 1
                        continue
                if self.redis and rng.random() < args.redis:
                    with self.redis_lock:
                        busy = self.redis_inflight >= 400
                    if not busy:
                        job, line = self.make_job(n, "redis")
                        self.jobs.append(job)
                        with self.redis_lock:
                            self.redis_inflight += 1
                        self.redis_jobs.put((n, job, line))
                        n += 1
                        continue
                c = min(conns, key=lambda c: len(c["inflight"]))
                if len(c["inflight"]) >= window:
                    break
                twin = None
                if rng.random() < args.dup_ids:
                    others = [o for o in conns if o is not c and o["last"]
                              and o["last"][0] not in c["used"]]
                    if others:
                        twin = rng.choice(others)["last"]
                job, line = self.make_job(n, "conn", twin and twin[1:])
                if twin:
                    job["id"] = twin[0]
                if job["id"] in c["used"]:
                    job["id"] = f"j{n}"
                c["used"].add(job["id"])
                c["inflight"][job["id"]] = n
                c["last"] = (job["id"], job["transport"], job["nexthop"])
                c["out"] += self.encode(job, line)
                self.jobs.append(job)
                n += 1
            self.submitted = n
            with self.lmtp_lock:
                lmtp_answered, lmtp_inflight = self.lmtp_answered, self.lmtp_inflight
            with self.redis_lock:
                redis_answered, redis_inflight = self.redis_answered, self.redis_inflight
            lmtp_answered += redis_answered
            lmtp_inflight += redis_inflight
            self.progress = answered + quits + lmtp_answered
            if stop_submitting and quit_batch:
                self.quitter(quit_batch, b"")
                quit_batch = []
            inflight = sum(len(c["inflight"]) for c in conns) + lmtp_inflight
            if lmtp_answered > getattr(self, "_lmtp_seen", 0):
                self._lmtp_seen = lmtp_answered
                last_answer = time.monotonic()
            if stop_submitting and inflight == 0:
                break
            if inflight and now - last_answer > args.stall:
                msg = f"no answer for {args.stall:.0f}s with {inflight} jobs in flight: giving up"
                say(msg)
                self.harness_errors.append(msg + " (the daemon stalled?)")
                break
            if stop_submitting and now - last_submit > args.drain:
                say(f"drain limit {args.drain}s reached with {inflight} jobs unanswered")
                break
            if self.daemon.poll() is not None:
                self.harness_errors.append(f"daemon exited with {self.daemon.returncode} during the run")
                break
            for c in conns:
                ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if c["out"] else 0)
                sel.modify(c["sock"], ev, c)
            for key, mask in sel.select(timeout=0.2):
                c = key.data
                if mask & selectors.EVENT_WRITE and c["out"]:
                    try:
                        sent = c["sock"].send(c["out"])
                        del c["out"][:sent]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        self.harness_errors.append(f"client {c['i']}: send: {e}")
                        stop_submitting = True
                if mask & selectors.EVENT_READ:
                    try:
                        data = c["sock"].recv(1 << 16)
                    except BlockingIOError:
                        data = None
                    except OSError as e:
                        self.harness_errors.append(f"client {c['i']}: recv: {e}")
                        data = b""
                    if data == b"":
                        self.harness_errors.append(f"client {c['i']}: daemon closed the connection")
                        sel.unregister(c["sock"])
                        conns.remove(c)
                        if not conns:
                            stop_submitting = True
                            break
                        continue
                    if data:
                        c["in"] += data
                        while True:
                            i = c["in"].find(b"\n")
                            if i < 0:
                                break
                            raw = bytes(c["in"][:i])
                            del c["in"][: i + 1]
                            answered += self.on_answer(c, raw)
                            last_answer = time.monotonic()
            if time.monotonic() - last_progress >= 5:
                last_progress = time.monotonic()
                el = last_progress - start
                say(f"{el:.0f}s: {n} submitted, {answered} answered, {inflight} in flight, "
                    f"{answered / el:.0f} jobs/s")
        self.elapsed = time.monotonic() - start
        for _ in lmtp_threads:
            self.lmtp_jobs.put(None)
        for t in lmtp_threads:
            t.join(timeout=130)
        self.redis_jobs.put(None)
        self.done = True
        for t in redis_threads:
            t.join(timeout=70)
        self.unanswered_conns = conns
        for c in conns:
            sel.unregister(c["sock"])
            c["sock"].close()
        self.done = True
        self.submitted = n

    def on_answer(self, c, raw):
        try:
            obj = json.loads(raw)
        except ValueError:
            self.stray_answers.append((c["i"], raw[:300], "not JSON"))
            return 0
        jid = obj.get("id") if isinstance(obj, dict) else None
        n = c["inflight"].pop(jid, None)
        if n is None:
            self.stray_answers.append((c["i"], raw[:300], "no job in flight with this id"))
            return 0
        self.answers[n].append(obj)
        return 1

    # -- the ledger
    def load_ledgers(self):
        self.sessions = []
        txns = {}
        for s in self.servers:
            try:
                f = open(s.ledger, "rb")
            except OSError:
                continue
            with f:
                for line in f:
                    try:
                        t = json.loads(line)
                    except ValueError:
                        continue
                    if "session" in t:
                        self.sessions.append(t)
                        continue
                    txns[(t["s"], t["g"], t["c"], t["t"])] = t
        self.txns = list(txns.values())
        self.by_conn = {}  # (server, gen, conn, txn) -> txn, for the previous transaction
        for t in self.txns:
            self.by_conn[(t["s"], t["g"], t["c"], t["t"])] = t
        self.by_job = collections.defaultdict(list)
        self.accepted = collections.defaultdict(list)  # rcpt -> [txn]
        for t in self.txns:
            m = JOB_RE.match(t.get("from") or "")
            if m:
                self.by_job[int(m.group(1))].append(t)
            for a in t["acc"]:
                self.accepted[a].append(t)

    def load_log(self):
        self.log_status = collections.defaultdict(list)  # rcpt -> [(status, line)]
        self.log_other = collections.Counter()
        self.queued = set()  # jobs (by number) with a "queue active" line
        self.requeued = collections.Counter()  # job id -> times tried again
        self.log_samples = {}
        with open(self.log_path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if "(queue active)" in line:
                    q = QMGR_RE.search(line)
                    if q:
                        self.queued.add(int(q.group(1)))
                    continue
                m = LOG_RE.search(line)
                if m:
                    self.log_status[m.group(2)].append((m.group(3), line))
                    continue
                q = REQUEUED_RE.search(line)
                if q:
                    self.requeued[q.group(1)] += 1
                    continue
                for word in ("panic", "warning", "error"):
                    if word in line:
                        self.log_other[word] += 1
                        self.log_samples.setdefault(word, line)
                        break

    def fault_tally(self):
        """How often each fault was injected (from the ledgers)."""
        f = collections.Counter()
        for sess in self.sessions:
            for e in sess["session"]:
                f[e.split(":", 1)[0]] += 1
        for t in self.txns:
            p = t["proto"]
            if t["mail"] and t["mail"] != "250":
                f[f"MAIL {t['mail'].split(':', 1)[0]}"] += 1
            for _, rep in t["rcpt"]:
                if rep != "250":
                    f[f"RCPT {rep.split(':', 1)[0]}"] += 1
            if t["data"] and t["data"] != "354":
                f[f"DATA {t['data'].split(':', 1)[0]}"] += 1
            if t["dot"] and t["dot"] not in ("250", "lmtp"):
                f[f"{p} dot {t['dot'].split(':', 1)[0]}"] += 1
            for _, rep in t["lmtp"]:
                if rep != "250":
                    f[f"LMTP reply {rep.split(':', 1)[0]}"] += 1
            for st in t["stray"]:
                f[f"stray after dot: {st[:3]}"] += 1
            if t["end"] and (t["end"].startswith("close-after") or t["end"].startswith("close-between")):
                f[t["end"].split("-after-")[0] if "between" in t["end"] else t["end"]] += 1
        return f

    @staticmethod
    def bad(reply):
        return reply is not None and (reply.startswith("5") or reply.startswith("garbage"))

    def justified_bounce(self, n, rcpt):
        for t in self.by_job.get(n, ()):
            if self.bad(t["mail"]) or self.bad(t["data"]) or self.bad(t["dot"]):
                return True
            for a, rep in t["rcpt"]:
                if (a == rcpt and self.bad(rep)) or rep.startswith("garbage"):
                    return True
            for a, rep in t["lmtp"]:
                if (a == rcpt and self.bad(rep)) or rep.startswith("garbage"):
                    return True
        return False

    def check(self):
        self.load_ledgers()
        self.load_log()
        V = collections.defaultdict(list)  # category -> [detail text]
        info = collections.Counter()
        rcpts_total = 0
        rcpts_bad = set()

        def txn_text(t):
            keep = {k: t[k] for k in ("s", "g", "c", "t", "mail", "rcpt", "data", "dot", "lmtp",
                                      "acc", "tag", "stray", "conn", "end") if t.get(k)}
            return json.dumps(keep, separators=(",", ":"))

        def detail(n, rcpt, what, answer=None):
            job = self.jobs[n]
            out = [f"job {n} id={job['id']} client={job['kind']} {job['transport']} "
                   f"nexthop={job['nexthop']!r} rcpt={rcpt}: {what}"]
            if answer is not None:
                out.append(f"    answer: {json.dumps(answer)[:600]}")
            for st, line in self.log_status.get(rcpt, [])[:4]:
                out.append(f"    log: {line[:600]}")
            for t in self.by_job.get(n, [])[:6]:
                prev = self.by_conn.get((t["s"], t["g"], t["c"], t["t"] - 1))
                if prev is not None:
                    out.append(f"    server (previous transaction on that connection): "
                               f"{txn_text(prev)[:600]}")
                out.append(f"    server: {txn_text(t)[:800]}")
            return "\n".join(out)

        # misdelivered: anything a server accepted must match sender, body tag, recipient
        for t in self.txns:
            if not t["acc"]:
                continue
            ms = JOB_RE.match(t.get("from") or "")
            ns = int(ms.group(1)) if ms else None
            for a in t["acc"]:
                mr = RCPT_RE.match(a)
                nr = int(mr.group(1)) if mr else None
                if not (ns is not None and ns == nr and t.get("tag") == str(ns)):
                    V["misdelivered"].append(
                        f"server {t['s']} accepted for {a} (job {nr}) a message from "
                        f"{t.get('from')} with body tag {t.get('tag')}\n    server: {txn_text(t)[:800]}")
                    rcpts_bad.add(a)

        for n, job in enumerate(self.jobs):
            answers = self.answers.get(n, [])
            ans_status = {}
            if job["kind"] in ("conn", "lmtp", "redis"):
                if not answers:
                    for r in job["rcpts"]:
                        V["unanswered"].append(detail(n, r, "no answer from the daemon"))
                        rcpts_bad.add(r)
                elif len(answers) > 1:
                    V["answered twice"].append(detail(n, job["rcpts"][0], f"{len(answers)} answers",
                                                      answers))
                    rcpts_bad.update(job["rcpts"])
                for a in answers[:1]:
                    if "error" in a:
                        V["errors"].append(detail(n, job["rcpts"][0], f"error answer: {a['error']}", a))
                        rcpts_bad.update(job["rcpts"])
                        continue
                    seen = collections.Counter()
                    for rr in a.get("recipients") or []:
                        addr = rr.get("address")
                        seen[addr] += 1
                        ans_status[addr] = rr
                    for addr in seen:
                        if addr not in job["rcpts"]:
                            V["answered twice"].append(detail(
                                n, addr, "the answer to this job carries another job's recipient "
                                         "(answer routed by a duplicate id?)", a))
                            rcpts_bad.add(addr)
                    for r in job["rcpts"]:
                        if seen[r] == 0:
                            V["unanswered"].append(detail(n, r, "recipient missing in the answer", a))
                            rcpts_bad.add(r)
                        elif seen[r] > 1:
                            V["answered twice"].append(detail(n, r, "recipient twice in the answer", a))
                            rcpts_bad.add(r)
            for r in job["rcpts"]:
                rcpts_total += 1
                logs = self.log_status.get(r, [])
                if len(logs) == 0:
                    why = "no status= log line"
                    if n not in self.queued:
                        why += " and no 'queue active' line: the daemon never took the job"
                    V["unanswered"].append(detail(n, r, why, ans_status.get(r)))
                    rcpts_bad.add(r)
                elif len(logs) > 1 + self.requeued.get(job["id"], 0) or \
                        any(st != "deferred" for st, _ in logs[:-1]):
                    V["answered twice"].append(detail(n, r, f"{len(logs)} status= log lines",
                                                      ans_status.get(r)))
                    rcpts_bad.add(r)
                if len(logs) > 1:
                    info["tried again after throttling"] += 1
                    logs = logs[-1:]
                a = ans_status.get(r)
                if a is not None and logs and any(st != a.get("status") for st, _ in logs):
                    V["log mismatch"].append(detail(n, r, f"answer says {a.get('status')}, log says "
                                                          f"{[st for st, _ in logs]}", a))
                    rcpts_bad.add(r)
                status = a.get("status") if a is not None else (logs[0][0] if logs else None)
                if status is None:
                    continue
                info[status] += 1
                acc = [t for t in self.accepted.get(r, []) if t.get("tag") == str(n)]
                if len(acc) > 1:
                    info["accepted more than once"] += 1
                if status == "sent" and not acc:
                    V["lost"].append(detail(n, r, "reported sent, never accepted by a server", a))
                    rcpts_bad.add(r)
                elif status == "bounced":
                    if not self.justified_bounce(n, r):
                        what = "bounced without a 5xx or garbage for it"
                        if acc:
                            what += " (and a server ACCEPTED it)"
                        V["falsely bounced"].append(detail(n, r, what, a))
                        rcpts_bad.add(r)
                    elif acc:
                        info["bounced although accepted (justified by a 5xx/garbage)"] += 1
                elif status == "deferred" and acc:
                    info["duplicate risk"] += 1
        for ci, raw, why in self.stray_answers:
            V["answered twice"].append(f"client {ci}: answer with {why}: {raw!r}")
        return V, info, rcpts_total, rcpts_bad


def kind_of(detail):
    """A violation's kind for the tally: what mailhop answered, digits and
    paths blurred, plus the server fault in that job's transactions."""
    m = re.search(r"\n    log: .*status=\w+ \((.*)\)$", detail, re.M) or \
        re.search(r'"diagnostic": "((?:[^"\\]|\\.)*)"', detail)
    what = detail.split("\n", 1)[0].split(": ", 1)[-1]
    diag = m.group(1) if m else ""
    diag = re.sub(r"<[^>]*>", "<..>", diag)
    diag = re.sub(r"\[[^]]*\]", "[..]", diag)
    diag = re.sub(r"\d+", "N", diag)[:110]
    return f"{what} | {diag}" if diag else what


CATEGORIES = ["lost", "misdelivered", "falsely bounced", "unanswered", "answered twice",
              "log mismatch", "errors"]


def main():
    ap = argparse.ArgumentParser(description="mailhop fault-injection soak")
    ap.add_argument("--jobs", type=int, default=env("JOBS", 100000))
    ap.add_argument("--seed", type=int, default=env("SEED", 1))
    ap.add_argument("--duration", type=float, default=env("DURATION", 1800, float),
                    help="cap on the submission phase, seconds")
    ap.add_argument("--conns", type=int, default=env("CONNS", 6))
    ap.add_argument("--workers", type=int, default=env("WORKERS", 32))
    ap.add_argument("--window", type=int, default=200, help="jobs in flight per connection")
    ap.add_argument("--drain", type=float, default=90.0, help="wait for answers after the last job")
    ap.add_argument("--fault-scale", type=float, default=env("FAULT_SCALE", 1.0, float),
                    help="multiplies the servers' fault probabilities (0: no server faults)")
    ap.add_argument("--no-chaos", action="store_true", default=env("NO_CHAOS", 0) != 0,
                    help="no kill -9 of servers, no SIGHUP")
    ap.add_argument("--dup-ids", type=float, default=env("DUP_IDS", 0.1, float),
                    help="share of jobs reusing the id of another connection's job in flight")
    ap.add_argument("--lmtp", type=float, default=env("LMTP", 0.08, float),
                    help="share of jobs sent through the daemon's LMTP ingress")
    ap.add_argument("--redis", type=float, default=env("REDIS", 0.06, float),
                    help="share of jobs sent through the Redis Streams feed")
    ap.add_argument("--lmtp-conns", type=int, default=8,
                    help="LMTP ingress clients (each keeps a connection for 1-8 transactions)")
    ap.add_argument("--stall", type=float, default=60.0,
                    help="give up when no answer came for this long with jobs in flight")
    ap.add_argument("--show", type=int, default=env("SHOW", 10), help="violations shown per category")
    ap.add_argument("--keep", action="store_true", default=env("KEEP", 0) != 0)
    args = ap.parse_args()
    binary = os.environ.get("MAILHOP") or os.path.join(ROOT, "target", "release", "mailhop")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"soak: {binary} missing: run 'cargo build --release'")

    soak = Soak(args)
    say(f"JOBS={args.jobs} SEED={args.seed} DURATION={args.duration} CONNS={args.conns} "
        f"WORKERS={args.workers} dir={soak.dir}")
    failed = True
    old = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        old[sig] = signal.signal(sig, on_signal)
    chaos = None
    try:
        soak.start_servers()
        if args.redis > 0:
            redis_server = shutil.which("redis-server") or (
                "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
            if redis_server is None:
                msg = ("redis-server not found (scripts/install-test-deps.sh installs it): "
                       "the Redis feed share is SKIPPED")
                if os.environ.get("CI", "") not in ("", "0", "false"):
                    raise RuntimeError(msg)
                say("!!! " + msg)
            else:
                soak.redis = RedisPeer(soak, redis_server)
                if not soak.redis.start():
                    raise RuntimeError("redis-server did not start")
        soak.start_daemon(binary)
        if not args.no_chaos:
            chaos = threading.Thread(target=soak.chaos, daemon=True)
            chaos.start()
        soak.run_clients()
        soak.done = True
        if chaos is not None:
            chaos.join(timeout=30)
        # Wait (bounded) for the disconnected clients' jobs to reach the log.
        # Stop early once the daemon is idle twice in a row (a job it never
        # took would otherwise hold this for the whole minute).
        want = {r for j in soak.jobs if j["kind"] == "quit" for r in j["rcpts"]}
        deadline = time.monotonic() + 60
        idle = 0
        with open(soak.log_path, "rb") as f:
            rest = b""
            while want and time.monotonic() < deadline and idle < 2:
                st = soak.status() or {}
                busy = st.get("in_flight", 1) or (st.get("queue") or {}).get("depth", 1)
                idle = 0 if busy else idle + 1
                data = rest + f.read()
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                for m in re.finditer(rb"to=<([^>]*)>", data):
                    want.discard(m.group(1).decode("utf-8", "replace"))
                if want:
                    time.sleep(0.5)
        st = soak.status()
        soak.add_cache(st)
        soak.stop_all()
        V, info, total, bad = soak.check()
        if st:
            print(f"soak: daemon status: done {json.dumps(st.get('done'))}, errors {st.get('errors')}; "
                  f"cache (summed over reloads) {json.dumps(dict(soak.cache_totals))}")
        nv = sum(len(V[c]) for c in CATEGORIES)
        print(f"soak: {len(soak.jobs)} jobs ({sum(1 for j in soak.jobs if j['kind'] == 'quit')} "
              f"from disconnecting clients, {sum(1 for j in soak.jobs if j['kind'] == 'lmtp')} "
              f"through the LMTP ingress, {sum(1 for j in soak.jobs if j['kind'] == 'redis')} "
              f"through the Redis feed), {total} recipients, {soak.elapsed:.1f}s, "
              f"{len(soak.jobs) / max(soak.elapsed, 1e-9):.0f} jobs/s")
        print(f"soak: outcomes: sent {info['sent']}, deferred {info['deferred']}, "
              f"bounced {info['bounced']}; server transactions {len(soak.txns)}")
        print(f"soak: duplicate risk (accepted, reported deferred): {info['duplicate risk']}; "
              f"accepted more than once: {info['accepted more than once']}; bounced although "
              f"accepted (justified): {info['bounced although accepted (justified by a 5xx/garbage)']}")
        ft = soak.fault_tally()
        print(f"soak: faults injected ({len(soak.sessions)} server connections): "
              + ", ".join(f"{k} {v}" for k, v in sorted(ft.items())))
        for line in soak.chaos_log:
            print(f"soak: chaos: {line}")
        for word, count in soak.log_other.items():
            print(f"soak: daemon log: {count} lines with {word!r}, e.g. {soak.log_samples[word][:300]}")
        for c in CATEGORIES:
            print(f"soak: {c}: {len(V[c])}")
            kinds = collections.Counter(kind_of(d) for d in V[c])
            for k, cnt in kinds.most_common(8):
                print(f"soak:     {cnt} x {k}")
        vpath = os.path.join(soak.dir, "violations.txt")
        with open(vpath, "w") as f:
            for c in CATEGORIES:
                for d in V[c]:
                    f.write(f"VIOLATION {c}: {d}\n")
        if nv:
            print(f"soak: every violation in full: {vpath}")
        for c in CATEGORIES:
            for d in V[c][: args.show]:
                print(f"soak: VIOLATION {c}: {d}")
            if len(V[c]) > args.show:
                print(f"soak: ... {len(V[c]) - args.show} more {c}")
        for e in soak.harness_errors:
            print(f"soak: HARNESS: {e}")
        failed = nv > 0 or bool(soak.harness_errors)
        print(f"soak: repro: JOBS={args.jobs} SEED={args.seed} DURATION={args.duration} "
              f"CONNS={args.conns} WORKERS={args.workers} python3 scripts/soak/soak.py")
        print(f"soak: {total - len(bad)} passed, {len(bad)} failed "
              f"({nv} violations; SEED={args.seed} JOBS={args.jobs})")
    except KeyboardInterrupt as e:
        say(f"interrupted ({e})")
    except Exception as e:  # report, then clean up
        import traceback
        traceback.print_exc()
        say(f"harness error: {e!r}")
    finally:
        soak.done = True
        soak.stop_all()
        for sig, h in old.items():
            signal.signal(sig, h)
        if args.keep or failed:
            say(f"kept {soak.dir} (daemon.log, ledger-*.jsonl)")
        else:
            shutil.rmtree(soak.dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
