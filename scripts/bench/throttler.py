#!/usr/bin/env python3
"""An SMTP server for the shaping scenarios (9 and 10), a thread per session.

Throttling receiver (scenario 9), as the large providers behave:
  --max-conns N  a connection beyond N concurrent ones from the same client
                 address gets "421 4.7.0 Too many connections" at once and is
                 closed (0: no limit);
  --rate R       a message (counted at its first accepted RCPT) beyond R in
                 the last second (sliding window) gets "451 4.7.0 Rate limit
                 exceeded" to RCPT; DATA then gets "554 5.5.1 Error: no valid
                 recipients" as from Postfix's smtpd (0: no limit).
Slow receiver (scenario 10):
  --delay S      every reply, the greeting included, is sent S seconds late.
Everything else is accepted (EHLO with PIPELINING and ENHANCEDSTATUSCODES).

Counters (sessions, 421s, 451s, every 4xx, messages accepted, most sessions
at once) are written as JSON to --stats FILE every 0.2 s and at exit.
Prints "ready" once listening. Stops on SIGTERM/SIGINT or after --lifetime
seconds (default 1800); a session idle for 120 s is closed. Loopback only.

Usage: throttler.py --listen 127.0.0.1:PORT --stats FILE [--max-conns 5]
       [--rate 200] [--delay 1] [--lifetime SECS]"""
import argparse
import collections
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time

EHLO = (b"250-throttler.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n")


class State:
    def __init__(self, max_conns, rate, delay):
        self.max_conns = max_conns
        self.rate = rate
        self.delay = delay
        self.lock = threading.Lock()
        self.active = collections.Counter()   # client address -> sessions now
        self.window = collections.deque()     # admission times of the last second
        self.c = {"sessions": 0, "refused_421": 0, "rate_451": 0, "replies_4xx": 0,
                  "accepted": 0, "max_active": 0, "errors": 0}

    def admit_session(self, addr):
        with self.lock:
            if self.max_conns and self.active[addr] >= self.max_conns:
                self.c["refused_421"] += 1
                self.c["replies_4xx"] += 1
                return False
            self.active[addr] += 1
            self.c["sessions"] += 1
            self.c["max_active"] = max(self.c["max_active"], sum(self.active.values()))
            return True

    def end_session(self, addr):
        with self.lock:
            self.active[addr] -= 1
            if self.active[addr] <= 0:
                del self.active[addr]

    def admit_message(self):
        if not self.rate:
            return True
        now = time.monotonic()
        with self.lock:
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            if len(self.window) >= self.rate:
                self.c["rate_451"] += 1
                self.c["replies_4xx"] += 1
                return False
            self.window.append(now)
            return True

    def count(self, key):
        with self.lock:
            self.c[key] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.c, active=sum(self.active.values()))


def session(st, conn, addr):
    try:
        conn.settimeout(120)
        # Each reply is its own write: without TCP_NODELAY, a reply that
        # follows another one to the same pipelined group waits for the
        # client's delayed ACK (40 ms): 110 msg/s over 5 sessions.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rf = conn.makefile("rb")

        def reply(data):
            if st.delay:
                time.sleep(st.delay)
            conn.sendall(data)

        reply(b"220 throttler.test ESMTP\r\n")
        mail = False
        rcpts = 0
        while True:
            line = rf.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"LHLO"):
                mail, rcpts = False, 0
                reply(EHLO)
            elif verb == b"HELO":
                mail, rcpts = False, 0
                reply(b"250 throttler.test\r\n")
            elif verb == b"MAIL":
                mail, rcpts = True, 0
                reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                if not mail:
                    reply(b"503 5.5.1 Error: need MAIL command\r\n")
                elif rcpts == 0 and not st.admit_message():
                    reply(b"451 4.7.0 Rate limit exceeded\r\n")
                else:
                    rcpts += 1
                    reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if not mail:
                    reply(b"503 5.5.1 Error: need MAIL command\r\n")
                    continue
                if rcpts == 0:
                    mail = False
                    reply(b"554 5.5.1 Error: no valid recipients\r\n")
                    continue
                reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                while True:
                    body = rf.readline(65536)
                    if not body:
                        return
                    if body in (b".\r\n", b".\n"):
                        break
                mail, rcpts = False, 0
                st.count("accepted")
                reply(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"RSET":
                mail, rcpts = False, 0
                reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                reply(b"221 2.0.0 Bye\r\n")
                return
            else:
                reply(b"502 5.5.2 Error: command not recognized\r\n")
    except OSError:
        st.count("errors")
    finally:
        try:
            conn.close()
        except OSError:
            pass
        st.end_session(addr)


def write_stats(st, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st.snapshot(), f)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="ADDR:PORT (IPv6: [ADDR]:PORT)")
    p.add_argument("--stats", required=True)
    p.add_argument("--max-conns", type=int, default=0)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--lifetime", type=float, default=1800)
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]")
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        sys.exit(f"throttler.py: {host} is not a loopback address")
    ls = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                       socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(1024)
    ls.settimeout(0.2)
    st = State(a.max_conns, a.rate, a.delay)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    write_stats(st, a.stats)
    print("ready", flush=True)
    deadline = time.monotonic() + a.lifetime
    next_stats = 0.0
    while not stop and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_stats:
            write_stats(st, a.stats)
            next_stats = now + 0.2
        try:
            conn, peer = ls.accept()
        except (socket.timeout, TimeoutError):
            continue
        except OSError:
            continue
        if not st.admit_session(peer[0]):
            try:
                conn.sendall(b"421 4.7.0 Too many connections\r\n")
            except OSError:
                pass
            conn.close()
            continue
        threading.Thread(target=session, args=(st, conn, peer[0]), daemon=True).start()
    ls.close()
    write_stats(st, a.stats)


if __name__ == "__main__":
    main()
