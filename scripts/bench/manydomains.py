"""The many-domain setup of scenarios 3 and 4: a dnsmasq on 127.0.0.1:PORT
serving D domains dN.bench.test whose MX records are spread over 10
smtp-sinks on 127.0.0.10-19 (all on one port, mailhop's [smtp] port), and
optionally, for a share of the domains, a blackholed primary MX
(deadK.bench.test on 127.0.0.50-59, see blackhole.py) with the live sink
as the backup (preference 20)."""

import os
import re
import socket
import sys
import time

from benchlib import Bench, find_prog, free_port, say, shaping_unlimited, wait_listen

SINKS = 10


class ManyDomains:
    def __init__(self, b: Bench, domains, sets=(("d", 0),)):
        """sets: (prefix, dead_every) per domain set; dead_every = 5: every
        5th domain of the set has a dead primary (20 %). Domains are
        PREFIX<i>.bench.test; self.files[prefix] is submit.py's domain file
        ("domain group" lines, group healthy or dead)."""
        self.b = b
        self.domains = domains
        self.port = free_port()
        self.sink_addrs = [f"127.0.0.{10 + k}" for k in range(SINKS)]
        self.dead_addrs = [f"127.0.0.{50 + k}" for k in range(SINKS)]
        self.sinks = [b.sink(f"{a}:{self.port}", name=f"sink-{a}") for a in self.sink_addrs]
        self.dns_port = free_port()
        conf = b.path("dnsmasq.conf")
        self.files = {}
        any_dead = any(d for _, d in sets)
        with open(conf, "w") as f:
            f.write("local=/bench.test/\n")
            for k, a in enumerate(self.sink_addrs):
                f.write(f"host-record=mx{k}.bench.test,{a}\n")
            for k, a in enumerate(self.dead_addrs):
                f.write(f"host-record=dead{k}.bench.test,{a}\n")
            for prefix, dead_every in sets:
                path = b.path(f"domains-{prefix}.txt")
                self.files[prefix] = path
                with open(path, "w") as df:
                    for i in range(domains):
                        k = i % SINKS
                        name = f"{prefix}{i}.bench.test"
                        if dead_every and i % dead_every == 0:
                            f.write(f"mx-host={name},dead{k}.bench.test,10\n")
                            f.write(f"mx-host={name},mx{k}.bench.test,20\n")
                            df.write(f"{name} dead\n")
                        else:
                            f.write(f"mx-host={name},mx{k}.bench.test,10\n")
                            df.write(f"{name} healthy\n")
        self.dnsmasq = b.spawn([
            find_prog("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null",
            f"--conf-file={conf}", f"--port={self.dns_port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll", "--user=nobody",
            "--group=nogroup", "--pid-file=", "--cache-size=10000", "--local-ttl=300",
        ], stderr=b.path("dnsmasq.log"))
        if not self._dns_ready():
            raise SystemExit(f"bench: dnsmasq did not start: "
                             f"{open(b.path('dnsmasq.log')).read()[-500:]}")
        self.blackhole = None
        if any_dead:
            out = b.path("blackhole.out")
            self.blackhole = b.spawn([sys.executable,
                                      os.path.join(os.path.dirname(__file__), "blackhole.py"),
                                      "--port", str(self.port)] + self.dead_addrs, stdout=out,
                                     stderr=out)
            for _ in range(200):
                if "ready" in open(out).read() or self.blackhole.poll() is not None:
                    break
                time.sleep(0.05)
            if "ready" not in open(out).read():
                raise SystemExit(f"bench: blackhole.py failed: {open(out).read()[-500:]}")
        self.domain_file = self.files[sets[0][0]]
        say(f"dnsmasq on 127.0.0.1:{self.dns_port} with {domains} domains per set "
            f"{[p for p, _ in sets]}; sinks {self.sink_addrs[0]}..{self.sink_addrs[-1]}:"
            f"{self.port}" + (f"; blackholed primaries on {self.dead_addrs[0]}.."
                              f"{self.dead_addrs[-1]}" if any_dead else ""))

    def _dns_ready(self):
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x02d0\x05bench\x04test\x00\x00\x0f\x00\x01")
        for _ in range(100):
            if self.dnsmasq.poll() is not None:
                return False
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.1)
            try:
                s.sendto(q, ("127.0.0.1", self.dns_port))
                data, _ = s.recvfrom(512)
                if data[:2] == b"\x12\x34":
                    return True
            except OSError:
                time.sleep(0.05)
            finally:
                s.close()
        return False

    def config(self, workers, connect_timeout=None, extra=""):
        return f"""[smtp]
port = {self.port}
""" + (f'connect_timeout = "{connect_timeout}"\n' if connect_timeout else "") + f"""
[dns]
nameservers = ["127.0.0.1:{self.dns_port}"]
# IPv4-only test bed (as the private Postfix's inet_protocols). With "all"
# (scenario 8), jobs also ask AAAA for their MX host; dnsmasq's NODATA
# carries no SOA and is cached for 60 s.
inet_protocols = "ipv4"

[daemon]
workers = {workers}
queue_capacity = {max(1000, self.domains)}
""" + extra + shaping_unlimited(workers)

    def sessions(self):
        return sum(s.counters()[0] for s in self.sinks)

    def messages(self):
        return sum(s.counters()[2] for s in self.sinks)


LOG_RE = re.compile(r" (\S+): to=<[^>]*>, .*? delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+),")


def worker_seconds(log_path):
    """job id -> seconds it held a worker (delays b+c+d of its log line)."""
    out = {}
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                m = LOG_RE.search(line)
                if m:
                    out[m.group(1)] = max(out.get(m.group(1), 0.0),
                                          float(m.group(3)) + float(m.group(4)) + float(m.group(5)))
    except OSError:
        pass
    return out
