"""Shared helpers of the mailhop benchmark scenarios (stdlib only).

Every process a scenario starts is registered here and stopped on exit
(normal exit, exception, SIGINT/SIGTERM/SIGHUP): by its own pid, or for the
private Postfix instance with "postfix -c DIR stop". Every wait is bounded.
Network: loopback addresses and UNIX sockets only.
"""

import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT_DIR = os.path.join(ROOT, "target", "bench")
SUBMIT = os.path.join(HERE, "submit.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")

os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


def env_int(name, default, quick=None):
    v = os.environ.get(name)
    if v not in (None, ""):
        return int(v)
    if quick is not None and os.environ.get("QUICK", "0") not in ("", "0"):
        return quick
    return default


def quick():
    return os.environ.get("QUICK", "0") not in ("", "0")


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def find_prog(name):
    p = shutil.which(name)
    if p:
        return p
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise SystemExit(f"bench: {name} not found: run 'make deps' (scripts/install-test-deps.sh)")


def mailhop_binary():
    path = os.environ.get("MAILHOP") or os.path.join(ROOT, "target", "release", "mailhop")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"bench: {path} missing: run 'cargo build --release'")
    return path


def toml_value(v):
    """A Python value as TOML text (str, bool, int, float, list)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rnd(v, n=1):
    return None if v is None else round(v, n)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listen(host, port, limit=5.0, proc=None):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_path(path, limit=5.0, proc=None):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if os.path.exists(path):
            return True
        time.sleep(0.02)
    return False


def system_busy_jiffies():
    """All CPUs' non-idle time so far (from /proc/stat), in seconds."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def udp_rcvbuf_errors():
    """UDP datagrams dropped so far because a socket's receive buffer was
    full (all sockets of this network namespace; /proc/net/snmp)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "loadavg_1m": load}


class Bench:
    """One scenario run: a work directory and the processes it started."""

    def __init__(self, name):
        self.name = name
        self.work = tempfile.mkdtemp(prefix=f"mailhop-bench-{name}.")
        os.chmod(self.work, 0o755)
        self.procs = []          # Popen objects, stopped in reverse order
        self.stoppers = []       # extra callables (Postfix stop, ...)
        self.mailhop = mailhop_binary()
        atexit.register(self.cleanup)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        say(f"signal {signum}: stopping")
        self.cleanup()
        os._exit(128 + signum)

    def cleanup(self):
        for fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                say(f"cleanup: {e}")
        self.stoppers = []
        for p in reversed(self.procs):
            stop_proc(p)
        self.procs = []
        if os.environ.get("BENCH_KEEP_WORK", "0") in ("", "0"):
            shutil.rmtree(self.work, ignore_errors=True)

    def path(self, *names):
        return os.path.join(self.work, *names)

    def spawn(self, argv, stdout=None, stderr=None, **kw):
        out = open(stdout, "wb") if isinstance(stdout, str) else stdout
        err = open(stderr, "wb") if isinstance(stderr, str) else stderr
        p = subprocess.Popen(argv, stdout=out or subprocess.DEVNULL,
                             stderr=err or subprocess.DEVNULL, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def forget(self, p):
        stop_proc(p)
        if p in self.procs:
            self.procs.remove(p)

    # ------------------------------------------------------------ peers

    def message(self, body_bytes=1024, name="msg.eml"):
        """A message like smtp-source's: a few headers, body_bytes of text."""
        path = self.path(name)
        line = "La la la la la la la la la la la la la la la la la la la la la.\n"
        body = (line * (body_bytes // len(line) + 1))[:body_bytes]
        if not body.endswith("\n"):
            body = body[:-1] + "\n"
        with open(path, "w") as f:
            f.write("From: <bench@source.test>\nTo: <rcpt@sink.test>\n"
                    "Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
                    "Message-Id: <bench@source.test>\nSubject: mailhop bench\n\n")
            f.write(body)
        os.chmod(path, 0o644)
        return path

    def sink(self, listen, extra=(), backlog=1000, name=None, lmtp=False):
        """smtp-sink with running counters (-c). listen: "127.0.0.1:PORT" or
        "unix:/path". Returns a Sink."""
        name = name or f"sink{len(self.procs)}"
        argv = [find_prog("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        if lmtp:
            argv.append("-L")
        argv += list(extra) + [listen, str(backlog)]
        out = self.path(name + ".out")
        p = self.spawn(argv, stdout=out, stderr=subprocess.STDOUT)
        if listen.startswith("unix:"):
            ok = wait_path(listen[5:], proc=p)
        else:
            host, port = listen.rsplit(":", 1)
            ok = wait_listen(host, int(port), proc=p)
        if not ok:
            raise SystemExit(f"bench: smtp-sink {listen} did not start: {open(out).read()[-500:]}")
        return Sink(p, out, listen)

    def daemon(self, config_toml, name="mailhop", env=None, daemon_keys=None, ingress=None):
        """Starts "mailhop daemon" with this configuration ([daemon] socket
        is set here). daemon_keys: more [daemon] keys ({key: value}).
        ingress: [[ingress]] tables ([{key: value}, ...]); with them,
        [daemon] spool_directory is a fresh directory of the work directory
        unless daemon_keys names one, and the start waits for the UNIX
        listeners' sockets too. Returns a Daemon."""
        sock = self.path(name + ".sock")
        cfg = self.path(name + ".toml")
        keys = {"socket": sock}
        if ingress and "spool_directory" not in (daemon_keys or {}):
            keys["spool_directory"] = self.path(name + "-spool")
        keys.update(daemon_keys or {})
        lines = "\n".join(f"{k} = {toml_value(v)}" for k, v in keys.items())
        text = config_toml
        if "[daemon]" in text:
            text = text.replace("[daemon]", f"[daemon]\n{lines}", 1)
        else:
            text += f"\n[daemon]\n{lines}\n"
        for table in ingress or ():
            text += "\n[[ingress]]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                                for k, v in table.items())
        listeners = [t["listen"][5:] for t in ingress or ()
                     if str(t.get("listen", "")).startswith("unix:")]
        for path in listeners:
            if os.path.exists(path):
                os.unlink(path)
        with open(cfg, "w") as f:
            f.write(text)
        log = self.path(name + ".log")
        e = dict(os.environ)
        if env:
            e.update(env)
        if os.path.exists(sock):
            os.unlink(sock)
        p = self.spawn([self.mailhop, "daemon", "--config", cfg], stderr=log, env=e)
        if not all(wait_path(path, limit=10, proc=p) for path in [sock] + listeners):
            raise SystemExit(f"bench: mailhop daemon did not start: {open(log).read()[-800:]}")
        return Daemon(self, p, sock, log)

    def timed(self, argv, limit=600, stdout=None):
        """Runs argv; returns (rc, elapsed_s, cpu_s, maxrss_kb) from wait4(2)
        (user+sys CPU and peak RSS of the process and its waited-for
        children). Killed after `limit` seconds."""
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL
        t0 = time.monotonic()
        p = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        timer = threading.Timer(limit, lambda: (say(f"{argv[0]} did not finish in {limit}s; "
                                                    "killing it"), p.kill()))
        timer.start()
        try:
            _pid, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        self.procs.remove(p)
        if stdout:
            out.close()
        return p.returncode, elapsed, ru.ru_utime + ru.ru_stime, ru.ru_maxrss

    def timed_many(self, argvs, limit=600):
        """Runs several commands at once; returns (all_ok, elapsed_s until
        the last ends, cpu_s summed, max rss_kb)."""
        t0 = time.monotonic()
        ps = [subprocess.Popen(list(a), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL) for a in argvs]
        self.procs.extend(ps)
        timer = threading.Timer(limit, lambda: [p.kill() for p in ps if p.poll() is None])
        timer.start()
        cpu, rss, ok = 0.0, 0, True
        try:
            left = {p.pid: p for p in ps}
            while left:
                pid, status, ru = os.wait4(-1, 0)
                p = left.pop(pid, None)
                if p is None:
                    continue
                p.returncode = os.waitstatus_to_exitcode(status)
                ok = ok and p.returncode == 0
                cpu += ru.ru_utime + ru.ru_stime
                rss = max(rss, ru.ru_maxrss)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - t0
        for p in ps:
            self.procs.remove(p)
        return ok, elapsed, cpu, rss

    def smtp_source(self, args, limit=600):
        """Runs smtp-source; returns a dict of figures."""
        sys0 = system_busy_jiffies()
        rc, e, cpu, rss = self.timed([find_prog("smtp-source")] + list(args), limit,
                                     stdout=self.path("smtp-source.out"))
        sys1 = system_busy_jiffies()
        if rc != 0:
            say(f"smtp-source exited {rc}: {open(self.path('smtp-source.out')).read()[-400:]}")
        return {"rc": rc, "seconds": e, "cpu_s": cpu, "rss_kb": rss,
                "system_cpu_s": round(sys1 - sys0, 3)}

    def submit(self, args, limit=900):
        """Runs submit.py; returns its JSON (with system_cpu_s added)."""
        argv = [sys.executable, SUBMIT] + [str(a) for a in args]
        sys0 = system_busy_jiffies()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=limit, check=False)
        sys1 = system_busy_jiffies()
        try:
            out = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SystemExit(f"bench: submit.py failed ({p.returncode}): "
                             f"{p.stderr.decode()[-800:]}")
        out["system_cpu_s"] = round(sys1 - sys0, 3)
        if not out.get("complete"):
            say(f"submit.py: incomplete results: missing_jobs={out.get('missing_jobs')} "
                f"missing_rcpt={out.get('missing_recipients')} errors={out.get('errors')} "
                f"{out.get('error_samples')}")
        return out


def stop_proc(p, limit=5.0):
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pass
    except OSError:
        pass


class Sink:
    def __init__(self, proc, out, listen):
        self.proc = proc
        self.out = out
        self.listen = listen

    def counters(self):
        """(sessions ended, QUITs, messages) so far, from smtp-sink -c."""
        try:
            with open(self.out, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 4096))
                tail = f.read().decode("ascii", "replace")
        except OSError:
            return (0, 0, 0)
        recs = [r for r in tail.replace("\n", "\r").split("\r") if "sess=" in r]
        if not recs:
            return (0, 0, 0)
        vals = dict(kv.split("=", 1) for kv in recs[-1].split() if "=" in kv)
        try:
            return (int(vals.get("sess", 0)), int(vals.get("quit", 0)), int(vals.get("mesg", 0)))
        except ValueError:
            return (0, 0, 0)


    def settle(self, quiet=2.5, limit=15.0):
        """Waits until the counters have not moved for `quiet` seconds (a
        peer's cached sessions closing late, e.g. Postfix's after 2 s)."""
        deadline = time.monotonic() + limit
        last, since = self.counters(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.counters()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


class Daemon:
    def __init__(self, bench, proc, sock, log):
        self.bench = bench
        self.proc = proc
        self.pid = proc.pid
        self.sock = sock
        self.log = log

    def cpu_seconds(self):
        """utime + stime of the daemon (all threads) so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
        # The command name (field 2) may contain spaces: split after the ')'.
        fields = data[data.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status(self, key):
        """A number of /proc/PID/status (VmHWM, VmRSS in kB, Threads), or None."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    k, _, value = line.partition(":")
                    if k == key:
                        return int(value.split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def log_count(self, needle):
        """Occurrences of a byte string in the daemon's log."""
        try:
            with open(self.log, "rb") as f:
                return f.read().count(needle)
        except OSError:
            return 0

    def stop(self, limit=30.0):
        """SIGTERM (the daemon drains, closes cached sessions with QUIT)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                say("mailhop daemon did not stop; killed")
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc in self.bench.procs:
            self.bench.procs.remove(self.proc)


# ---------------------------------------------------------------- Postfix

class PostfixDrain:
    """A private Postfix instance (own config and queue directories, loopback
    only, no chroot) relaying to relayhost; messages injected with
    smtp-source are put on hold, then released, and the drain is timed
    (= qmgr + smtp(8)). After ../shared/reference/peer-recipes/postfix-e2e.sh.

    With lmtp_socket (a UNIX socket path), the instance delivers everything
    with lmtp(8) to that socket instead (default_transport and
    relay_transport = lmtp:unix:PATH, no relayhost, XFORWARD sent unless
    lmtp_xforward is false) with
    lmtp_concurrency sessions at most (= qmgr + lmtp(8)). name: the
    instance's directory in the work directory (two instances can run at
    once)."""

    def __init__(self, bench, relay_port, concurrency=20, size=1024, name="postfix",
                 lmtp_socket=None, lmtp_concurrency=None, lmtp_xforward=True):
        self.b = bench
        self.base = bench.path(name)
        self.etc = os.path.join(self.base, "etc")
        self.spool = os.path.join(self.base, "spool")
        self.data = os.path.join(self.base, "data")
        self.maillog = os.path.join(self.base, "maillog")
        self.size = size
        self.smtpd_port = free_port()
        for d in (self.etc, self.spool, self.data):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.base, 0o755)
        shutil.chown(self.data, "postfix", "postfix")
        for f in ("dynamicmaps.cf",):
            if os.path.exists(f"/etc/postfix/{f}"):
                shutil.copy(f"/etc/postfix/{f}", self.etc)
        if os.path.isdir("/etc/postfix/dynamicmaps.cf.d"):
            shutil.copytree("/etc/postfix/dynamicmaps.cf.d",
                            os.path.join(self.etc, "dynamicmaps.cf.d"), dirs_exist_ok=True)
        if lmtp_socket:
            # relayhost would be overruled by default_transport's next hop
            # anyway; relay_transport too, for a destination in relay_domains.
            route = f"""relayhost =
default_transport = lmtp:unix:{lmtp_socket}
relay_transport = lmtp:unix:{lmtp_socket}
lmtp_destination_concurrency_limit = {lmtp_concurrency or concurrency}
lmtp_send_xforward_command = {"yes" if lmtp_xforward else "no"}
"""
        else:
            route = f"relayhost = [127.0.0.1]:{relay_port}\n"
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
maillog_file = {self.maillog}
maillog_file_prefixes = /var, /dev/stdout, {self.base}
myhostname = pfbench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
{route}smtp_destination_concurrency_limit = {concurrency}
default_destination_concurrency_limit = {concurrency}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_client_restrictions = check_client_access static:HOLD
biff = no
""")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(f"""127.0.0.1:{self.smtpd_port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
""")
        self.started = False

    def _postfix(self, *args, limit=60):
        # postfix(1) reports errors only to a tty or syslog: script(1) gives it one.
        cmd = " ".join([find_prog("postfix"), "-c", self.etc] + list(args))
        return subprocess.run([find_prog("script"), "-qec", cmd, "/dev/null"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=limit, check=False)

    def start(self):
        r = self._postfix("check")
        if r.returncode != 0:
            raise SystemExit(f"bench: postfix check failed: {r.stdout.decode()[-800:]}")
        r = self._postfix("start")
        if r.returncode != 0:
            raise SystemExit(f"bench: postfix start failed: {r.stdout.decode()[-800:]}")
        self.started = True
        self.b.stoppers.append(self.stop)
        if not wait_listen("127.0.0.1", self.smtpd_port, limit=15):
            raise SystemExit("bench: the private Postfix smtpd did not start listening")

    def stop(self):
        if self.started:
            self._postfix("stop")
            self.started = False

    def count(self, *queues):
        n = 0
        for q in queues:
            for _root, _dirs, files in os.walk(os.path.join(self.spool, q)):
                n += len(files)
        return n

    def statuses(self):
        """{"sent": n, "deferred": n, "bounced": n}: the delivery attempts'
        status= fields in the maillog so far."""
        try:
            with open(self.maillog, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        return {k: data.count(b"status=" + k.encode()) for k in ("sent", "deferred", "bounced")}

    def sent_count(self):
        return self.statuses()["sent"]

    def run(self, n, limit=600, probe=None):
        """Injects n messages (on hold), releases them, times the drain.
        The drain ends when the queue is empty, or when every released
        message has a delivery status in the maillog and only the deferred
        queue still holds some (a next hop that answers 4xx or is not
        there: no retry within the run). probe: a callable whose value is
        taken right before the release and right after the drain
        ("probe": [before, after]). Returns a dict."""
        st0 = self.statuses()
        inj = self.b.timed([find_prog("smtp-source"), "-s", "10", "-m", str(n), "-l",
                            str(self.size), "-f", "sender@source.test", "-t",
                            "rcpt@sink.test", f"127.0.0.1:{self.smtpd_port}"], limit)
        deadline = time.monotonic() + limit
        while self.count("hold") < n and time.monotonic() < deadline:
            time.sleep(0.1)
        held = self.count("hold")
        if held < n:
            say(f"postfix: only {held} of {n} messages on hold")
        p0 = probe() if probe else None
        sys0 = system_busy_jiffies()
        t0 = time.monotonic()
        subprocess.run([find_prog("postsuper"), "-c", self.etc, "-H", "ALL"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
        subprocess.run([find_prog("postqueue"), "-c", self.etc, "-f"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
        time.sleep(0.05)
        queues = ("incoming", "active", "deferred", "maildrop", "hold")
        moving = ("incoming", "active", "maildrop", "hold")
        checked = 0.0
        while self.count(*queues) > 0 and time.monotonic() < deadline:
            # Only deferred messages left (this is also the case for a moment
            # right after the release: "postsuper -H" moves the held messages
            # to the deferred queue): settled when each has a status.
            if self.count(*moving) == 0 and time.monotonic() - checked >= 0.5:
                checked = time.monotonic()
                st = self.statuses()
                if sum(st[k] - st0[k] for k in st) >= held:
                    break
            time.sleep(0.05)
        timed_out = time.monotonic() >= deadline
        secs = time.monotonic() - t0
        sys1 = system_busy_jiffies()
        p1 = probe() if probe else None
        left = self.count(*queues)
        # postlogd may lag a little behind the queue.
        for _ in range(50):
            st = self.statuses()
            if sum(st[k] - st0[k] for k in st) >= held:
                break
            time.sleep(0.1)
        st = self.statuses()
        out = {"n": held, "seconds": round(secs, 3), "msgs_per_s": round(held / secs, 1),
               "left_in_queue": left, "sent": st["sent"] - st0["sent"],
               "deferred": st["deferred"] - st0["deferred"],
               "bounced": st["bounced"] - st0["bounced"],
               "inject_seconds": inj[1], "system_cpu_s": round(sys1 - sys0, 3)}
        if timed_out:
            out["timed_out"] = True
        if probe:
            out["probe"] = [p0, p1]
        return out

    def purge(self):
        """Deletes every queued message (after a run that left some, so the
        next run starts from an empty queue); returns how many there were."""
        left = self.count("incoming", "active", "deferred", "maildrop", "hold")
        if left:
            subprocess.run([find_prog("postsuper"), "-c", self.etc, "-d", "ALL"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                           check=False)
        return left

    def log_samples(self, needle, count=3):
        """The last few maillog lines that contain needle (bytes)."""
        try:
            with open(self.maillog, "rb") as f:
                lines = [x for x in f.read().splitlines() if needle in x]
        except OSError:
            return []
        return [x.decode("utf-8", "replace")[-300:] for x in lines[-count:]]


# ---------------------------------------------------------------- config keys

_DEFAULTS = {}


def config_defaults(binary=None):
    """{"table.key": raw TOML value text} of the binary's embedded defaults
    ("mailhop config defaults"): which keys this tree knows. The scenarios
    run against any tree, so a key another part of the code base adds (the
    [shaping] table, [smtp] address_health, happy_eyeballs) is only written
    into a configuration when the binary knows it (unknown keys are errors)."""
    binary = binary or mailhop_binary()
    if binary in _DEFAULTS:
        return _DEFAULTS[binary]
    out = {}
    try:
        p = subprocess.run([binary, "config", "defaults"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
        table = ""
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                table = line.strip("[]")
            elif line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                out[f"{table}.{key.strip()}"] = value.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    _DEFAULTS[binary] = out
    return out


def has_key(name):
    """True when the measured binary knows the configuration key "table.key"."""
    return name in config_defaults()


def shaping_unlimited(workers):
    """The [shaping] table a scenario that measures raw throughput to one
    destination needs: no per-destination concurrency limit
    (destination_concurrency_limit = 0) and a first window as large as the
    worker pool, so the shaping code still runs (admission, feedback) but
    never holds a job back. Empty for a tree without [shaping]."""
    if not has_key("shaping.destination_concurrency_limit"):
        return ""
    if os.environ.get("SHAPING") == "off":
        # A/B runs: the same load without admission control.
        return "\n[shaping]\nenabled = false\n"
    return (f"\n[shaping]\ndestination_concurrency_limit = 0\n"
            f"initial_destination_concurrency = {workers}\n")


# ---------------------------------------------------------------- SYN counts

class SynCounter:
    """Counts connection attempts to dead addresses with iptables: a chain
    in INPUT with, per address, a rule that matches (and DROPs) the first
    SYN of each connection (hashlimit: one packet per source port,
    destination and port; an entry is forgotten after 5 s idle, so a port
    used again later counts again) and a rule that DROPs its retransmitted
    SYNs. The first rule's packet counter is the number of connection
    attempts, both rules' counters the SYNs. Only root, only when iptables
    works (the rules are removed when the scenario ends)."""

    def __init__(self, bench, addrs, port):
        self.addrs = list(addrs)
        self.port = port
        self.chain = f"MHBENCH{os.getpid()}"
        self.ipt = shutil.which("iptables") or (
            "/usr/sbin/iptables" if os.access("/usr/sbin/iptables", os.X_OK) else None)
        self.ok = False
        if os.geteuid() != 0 or not self.ipt:
            return
        self._remove_stale()
        if self._ipt("-N", self.chain).returncode != 0:
            return
        bench.stoppers.append(self.remove)
        for k, a in enumerate(self.addrs):
            base = ["-A", self.chain, "-p", "tcp", "--syn", "-d", a, "--dport", str(port)]
            r1 = self._ipt(*base, "-m", "hashlimit", "--hashlimit-upto", "1/hour",
                           "--hashlimit-burst", "1", "--hashlimit-mode",
                           "srcip,srcport,dstip,dstport", "--hashlimit-htable-expire", "5000",
                           "--hashlimit-name", f"mhb{os.getpid() % 100000}x{k}", "-j", "DROP")
            r2 = self._ipt(*base, "-j", "DROP")
            if r1.returncode != 0 or r2.returncode != 0:
                say(f"iptables rules failed: {r1.stdout.decode()[-200:]} "
                    f"{r2.stdout.decode()[-200:]}")
                return
        self.ok = self._ipt("-I", "INPUT", "-j", self.chain).returncode == 0

    def _ipt(self, *args):
        return subprocess.run([self.ipt, "-w", "5"] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=30, check=False)

    def counts(self):
        """{addr: (attempts, syns)} so far."""
        out = {a: [0, 0] for a in self.addrs}
        r = self._ipt("-L", self.chain, "-v", "-n", "-x")
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            f = line.split()
            if len(f) < 9 or not f[0].isdigit():
                continue
            addr = f[8]
            if addr in out:
                if "limit:" in line:
                    out[addr][0] += int(f[0])
                out[addr][1] += int(f[0])
        return {a: tuple(v) for a, v in out.items()}

    def remove(self, chain=None):
        chain = chain or self.chain
        if self.ipt and os.geteuid() == 0:
            self._ipt("-D", "INPUT", "-j", chain)
            self._ipt("-F", chain)
            self._ipt("-X", chain)

    def _remove_stale(self):
        """Chains left by a scenario that was killed (SIGKILL skips the
        cleanup): MHBENCH<pid> whose process is gone."""
        r = self._ipt("-S")
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            f = line.split()
            if len(f) == 2 and f[0] == "-N" and f[1].startswith("MHBENCH"):
                pid = f[1][len("MHBENCH"):]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    say(f"removing the stale iptables chain {f[1]}")
                    self.remove(f[1])


def listen_drops():
    """TcpExt ListenDrops (SYNs dropped at a full listen queue, machine-wide):
    the fallback SYN count when iptables is not there."""
    try:
        with open("/proc/net/netstat") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("ListenDrops")])
    except (OSError, IndexError, ValueError):
        return None


# ---------------------------------------------------------------- output

def write_result(scenario, data):
    os.makedirs(OUT_DIR, exist_ok=True)
    data = dict(data)
    data.setdefault("scenario", scenario)
    data["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["machine"] = machine()
    path = os.path.join(OUT_DIR, f"scenario-{scenario}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    say(f"wrote {path}")
    return path


def target(name, value, op, limit, unit=""):
    """A target line: value op limit (op: '>=', '<', '<=')."""
    if value is None:
        ok = False
    elif op == ">=":
        ok = value >= limit
    elif op == "<=":
        ok = value <= limit
    elif op == "<":
        ok = value < limit
    else:
        ok = value > limit
    return {"name": name, "value": value, "op": op, "limit": limit, "unit": unit,
            "pass": bool(ok)}


def order(rep):
    """Alternate who goes first: peers on even repetitions, mailhop on odd."""
    return ("peer", "mailhop") if rep % 2 == 0 else ("mailhop", "peer")
