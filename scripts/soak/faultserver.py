#!/usr/bin/env python3
"""Fault-injecting SMTP/LMTP server for the mailhop soak (scripts/soak/soak.py).

One process serves one protocol on one or more listeners (TCP on loopback,
or a UNIX socket), one thread per connection. Faults are chosen per
connection and per transaction by a seeded RNG (seed, server name,
generation and connection number):

  connection  421 greeting; a throttling 421 4.7.0 greeting (the daemon
              pauses the destination and tries the job again); a garbage line before the 220 greeting (a
              Postfix client skips it); a greeting later than the client's
              timeout; an idle limit after which a session between
              transactions is closed (half of the time with a 421).
  MAIL        421 and close; a throttling 451 4.7.0 (rate limit); a
              garbage reply line.
  RCPT        450 / 550 per recipient; a garbage reply line; a 250 later
              than the client's timeout.
  DATA        a garbage reply line.
  end of data SMTP: 451, 554, garbage, the connection closed inside DATA,
              a 250 later than the client's timeout, a stray extra reply
              line after the 250 in the same write, a close right after
              the 250. LMTP: per recipient 250/452/552, garbage for one
              recipient, the connection closed between the per-recipient
              replies, late replies, a stray line after the last one.

The ledger: for every transaction one JSON line (a snapshot of what the
server replied to each command and per recipient, which recipients it
accepted, and the body's X-Soak-Job tag) is appended to --ledger with one
write(2) BEFORE any decisive reply (a refusal, garbage, the end-of-data
acceptance) is sent, and again when the transaction ends. A kill -9 can thus
only make the ledger claim more than the client saw (accepted, reply not
received: a duplicate-risk case), never less. The checker keeps the last
snapshot of each transaction.

Prints "ready NAME LISTENER..." (actual ports) on stdout once listening;
runs until SIGTERM/SIGKILL. Each connection also ends with one line of its
connection-level faults ("session"). Standard library only.
"""

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time

# Fault probabilities (per transaction unless said otherwise), scaled by
# --fault-scale. Kept small enough that most jobs go through.
P = {
    "greet_421": 0.01,
    "greet_throttle": 0.003,
    "greet_garbage": 0.005,
    "greet_late": 0.002,
    "idle_421": 0.5,  # of idle closes
    "mail_421": 0.01,
    "mail_throttle": 0.003,
    "mail_garbage": 0.004,
    "rcpt_450": 0.02,
    "rcpt_550": 0.02,
    "rcpt_garbage": 0.003,
    "rcpt_late": 0.002,
    "data_garbage": 0.003,
    "dot_451": 0.02,
    "dot_554": 0.015,
    "dot_garbage": 0.004,
    "dot_close_in_data": 0.01,
    "dot_late": 0.003,
    "dot_stray": 0.03,
    "dot_close_after": 0.02,
    "lmtp_452": 0.03,
    "lmtp_552": 0.02,
    "lmtp_garbage": 0.004,
    "lmtp_close_between": 0.015,
}

GARBAGE = [
    b"hello there\r\n",
    b"25O 2.0.0 ok\r\n",
    b"2500 too long\r\n",
    b"250x\r\n",
    b"ok\r\n",
    b"-250 dash\r\n",
    b"\x00\x01\x02\r\n",
]
STRAY = [
    b"250 2.0.0 Ok: stray extra reply\r\n",
    b"250 2.1.0 Ok\r\n",
    b"550 5.0.0 stray refusal\r\n",
    b"421 4.3.0 stray goodbye\r\n",
    b"354 stray go ahead\r\n",
]


class Ledger:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, data):
        os.write(self.fd, (data + "\n").encode())


class Conn:
    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.sock = sock
        self.cid = cid
        self.rng = random.Random(f"{srv.seed}/{srv.name}/{srv.gen}/{cid}")
        self.events = []  # connection-level events
        self.txn = None
        self.tseq = 0
        self.written = None
        self.buf = b""
        self.closed = False

    # -- I/O
    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > 1 << 20:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def send(self, data):
        self.sock.sendall(data)

    def close(self, how="close"):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- ledger
    def p(self, key):
        return self.rng.random() < P[key] * self.srv.scale

    def new_txn(self, sender):
        self.end_txn()
        self.tseq += 1
        self.txn = {
            "s": self.srv.name, "g": self.srv.gen, "c": self.cid, "t": self.tseq,
            "proto": self.srv.proto, "from": sender, "mail": None, "rcpt": [],
            "data": None, "dot": None, "lmtp": [], "acc": [], "tag": None,
            "stray": [], "conn": list(self.events), "end": None,
        }

    def flush(self):
        """Writes the transaction's snapshot unless it is unchanged since
        the last write."""
        if self.txn is None:
            return
        data = json.dumps(self.txn, separators=(",", ":"))
        if data != self.written:
            self.srv.ledger.write(data)
            self.written = data

    def end_txn(self, why=None):
        if self.txn is not None:
            if why and not self.txn["end"]:
                self.txn["end"] = why
            self.flush()
        self.txn = None

    # -- protocol
    def run(self):
        srv = self.srv
        to = srv.timeout
        try:
            if self.rng.random() < P["greet_late"] * srv.scale:
                self.events.append("late-greeting")
                time.sleep(to + 1.0)
            if self.rng.random() < P["greet_421"] * srv.scale:
                self.events.append("421-greeting")
                self.send(b"421 4.3.2 soak: service not available\r\n")
                return
            if self.rng.random() < P["greet_throttle"] * srv.scale:
                self.events.append("421-throttle-greeting")
                self.send(b"421 4.7.0 soak: too many connections, slow down\r\n")
                return
            greet = b"220 soak.test ESMTP fault server\r\n"
            if self.rng.random() < P["greet_garbage"] * srv.scale:
                g = self.rng.choice(GARBAGE)
                self.events.append("garbage-before-greeting:" + g.decode("latin-1").strip())
                greet = g + greet
            self.send(greet)
            idle = self.rng.uniform(0.2, 3.0)
            idle_421 = self.rng.random() < P["idle_421"]
            while True:
                in_txn = self.txn is not None
                try:
                    line = self.readline(10.0 if in_txn else idle)
                except socket.timeout:
                    self.events.append("idle-close" + ("-421" if idle_421 and not in_txn else ""))
                    if idle_421 and not in_txn:
                        self.send(b"421 4.4.2 soak: idle timeout exceeded\r\n")
                    self.end_txn("timeout")
                    return
                if line is None:
                    self.end_txn("peer-closed")
                    return
                if not self.command(line):
                    return
        except OSError:
            self.end_txn("io-error")
        finally:
            self.end_txn("closed")
            self.close()
            # One record per connection: its connection-level faults.
            self.srv.ledger.write(json.dumps(
                {"s": self.srv.name, "g": self.srv.gen, "c": self.cid, "session": self.events,
                 "txns": self.tseq}, separators=(",", ":")))

    def command(self, line):
        """Handles one command line; False ends the session."""
        srv = self.srv
        text = line.decode("latin-1").rstrip("\r\n")
        verb = text.split(" ", 1)[0].upper()
        if verb in ("EHLO", "LHLO", "HELO"):
            if (verb == "LHLO") != (srv.proto == "lmtp"):
                self.send(b"500 5.5.1 wrong greeting command for this protocol\r\n")
                return True
            self.end_txn("helo")
            caps = [b"250-soak.test"]
            if srv.pipelining:
                caps.append(b"250-PIPELINING")
            caps += [b"250-ENHANCEDSTATUSCODES", b"250 8BITMIME"]
            self.send(b"\r\n".join(caps) + b"\r\n")
            return True
        if verb == "RSET":
            self.end_txn("rset")
            self.send(b"250 2.0.0 Ok\r\n")
            return True
        if verb == "NOOP":
            self.send(b"250 2.0.0 Ok\r\n")
            return True
        if verb == "QUIT":
            self.end_txn("quit")
            self.send(b"221 2.0.0 Bye\r\n")
            return False
        if verb == "MAIL":
            sender = text[10:].split(">", 1)[0].lstrip("<") if text.upper().startswith("MAIL FROM:") else text
            self.new_txn(sender)
            if self.p("mail_421"):
                self.txn["mail"] = "421"
                self.flush()
                self.send(b"421 4.3.0 soak: closing at MAIL\r\n")
                self.end_txn("421")
                return False
            if self.p("mail_throttle"):
                self.txn["mail"] = "451-throttle"
                self.flush()
                self.send(b"451 4.7.0 soak: rate limit exceeded\r\n")
                # No transaction: the pipelined RCPT and DATA get 503.
                self.end_txn("451-throttle")
                return True
            if self.p("mail_garbage"):
                g = self.rng.choice(GARBAGE)
                self.txn["mail"] = "garbage:" + g.decode("latin-1").strip()
                self.flush()
                self.send(g)
                return True
            self.txn["mail"] = "250"
            self.send(b"250 2.1.0 Ok\r\n")
            return True
        if verb == "RCPT":
            if self.txn is None:
                self.send(b"503 5.5.1 need MAIL\r\n")
                return True
            rcpt = text[8:].split(">", 1)[0].lstrip("<") if text.upper().startswith("RCPT TO:") else text
            r = self.rng.random() / max(self.srv.scale, 1e-9)
            if r < P["rcpt_450"]:
                reply, out = "450", b"450 4.2.0 soak: try later\r\n"
            elif r < P["rcpt_450"] + P["rcpt_550"]:
                reply, out = "550", b"550 5.1.1 soak: no such user\r\n"
            elif r < P["rcpt_450"] + P["rcpt_550"] + P["rcpt_garbage"]:
                out = self.rng.choice(GARBAGE)
                reply = "garbage:" + out.decode("latin-1").strip()
            else:
                reply, out = "250", b"250 2.1.5 Ok\r\n"
            late = self.p("rcpt_late")
            self.txn["rcpt"].append([rcpt, reply + ("-late" if late else "")])
            if reply != "250" or late:
                self.flush()
            if late:
                time.sleep(srv.timeout + 1.0)
            self.send(out)
            return True
        if verb == "DATA":
            if self.txn is None:
                self.send(b"503 5.5.1 need MAIL\r\n")
                return True
            good = [a for a, rep in self.txn["rcpt"] if rep.startswith("250")]
            if not good:
                self.txn["data"] = "554"
                self.flush()
                self.send(b"554 5.5.1 Error: no valid recipients\r\n")
                return True
            if self.p("data_garbage"):
                g = self.rng.choice(GARBAGE)
                self.txn["data"] = "garbage:" + g.decode("latin-1").strip()
                self.flush()
                self.send(g)
                # The client may still send the body: swallow it as DATA.
            else:
                self.txn["data"] = "354"
                self.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            return self.body(good)
        self.send(b"502 5.5.2 Error: command not recognized\r\n")
        return True

    def body(self, good):
        srv = self.srv
        txn = self.txn
        close_in_data = self.p("dot_close_in_data")
        cut = self.rng.randint(0, 12)
        n = 0
        tag = None
        in_header = True
        while True:
            if close_in_data and n >= cut:
                txn["dot"] = "close-in-data"
                self.end_txn("close-in-data")
                return False
            try:
                line = self.readline(10.0)
            except socket.timeout:
                txn["dot"] = "timeout-in-data"
                self.end_txn("timeout-in-data")
                return False
            if line is None:
                txn["dot"] = "peer-closed-in-data"
                self.end_txn("peer-closed-in-data")
                return False
            n += 1
            if line in (b".\r\n", b".\n"):
                break
            if in_header:
                if line in (b"\r\n", b"\n"):
                    in_header = False
                elif line.lower().startswith(b"x-soak-job:"):
                    tag = line[11:].strip().decode("latin-1")
        txn["tag"] = tag
        if txn["data"] != "354":
            # The client sent a body after a garbage DATA reply: refuse it.
            txn["dot"] = "554-after-garbage-data"
            self.flush()
            self.send(b"554 5.5.0 soak: body after bad DATA reply\r\n")
            return True
        if srv.proto == "lmtp":
            return self.lmtp_dot(good)
        return self.smtp_dot(good)

    def smtp_dot(self, good):
        txn = self.txn
        r = self.rng.random() / max(self.srv.scale, 1e-9)
        late = False
        tail = b""
        close_after = False
        if r < P["dot_451"]:
            txn["dot"], out = "451", b"451 4.3.0 soak: local error\r\n"
        elif (r := r - P["dot_451"]) < P["dot_554"]:
            txn["dot"], out = "554", b"554 5.7.1 soak: message refused\r\n"
        elif (r := r - P["dot_554"]) < P["dot_garbage"]:
            out = self.rng.choice(GARBAGE)
            txn["dot"] = "garbage:" + out.decode("latin-1").strip()
        else:
            txn["dot"], out = "250", b"250 2.0.0 Ok: queued as S" + str(txn["t"]).encode() + b"\r\n"
            txn["acc"] = list(good)
            late = self.p("dot_late")
            if self.p("dot_stray"):
                tail = self.rng.choice(STRAY)
                txn["stray"].append(tail.decode("latin-1").strip())
            close_after = self.p("dot_close_after")
            if late:
                txn["dot"] = "250-late"
            if close_after:
                txn["end"] = "close-after-dot"
        self.flush()  # before the reply: the ledger never claims less
        if late:
            time.sleep(self.srv.timeout + 1.0)
        self.send(out + tail)
        # The transaction is over: from here on the session is idle.
        self.end_txn("done")
        return not close_after

    def lmtp_dot(self, good):
        txn = self.txn
        replies = []
        for addr in good:
            r = self.rng.random() / max(self.srv.scale, 1e-9)
            if r < P["lmtp_452"]:
                replies.append((addr, "452", b"452 4.2.2 soak: mailbox full\r\n"))
            elif (r := r - P["lmtp_452"]) < P["lmtp_552"]:
                replies.append((addr, "552", b"552 5.2.2 soak: mailbox full for good\r\n"))
            elif (r := r - P["lmtp_552"]) < P["lmtp_garbage"]:
                g = self.rng.choice(GARBAGE)
                replies.append((addr, "garbage:" + g.decode("latin-1").strip(), g))
            else:
                replies.append((addr, "250", b"250 2.0.0 <" + addr.encode() + b"> delivered\r\n"))
        cut = len(replies)
        if len(replies) >= 1 and self.p("lmtp_close_between"):
            cut = self.rng.randint(0, len(replies) - 1)
            txn["end"] = f"close-between-replies-after-{cut}"
        late = self.p("dot_late")
        sent = replies[:cut]
        txn["lmtp"] = [[a, rep] for a, rep, _ in replies[:cut]] + [[a, "unsent:" + rep] for a, rep, _ in replies[cut:]]
        txn["acc"] = [a for a, rep, _ in sent if rep == "250"]
        txn["dot"] = "lmtp-late" if late else "lmtp"
        tail = b""
        if cut == len(replies) and self.p("dot_stray"):
            tail = self.rng.choice(STRAY)
            txn["stray"].append(tail.decode("latin-1").strip())
        self.flush()
        if late:
            time.sleep(self.srv.timeout + 1.0)
        # Half of the time one write for all replies, else one per reply.
        if self.rng.random() < 0.5:
            self.send(b"".join(out for _, _, out in sent) + tail)
        else:
            for _, _, out in sent:
                self.send(out)
            if tail:
                self.send(tail)
        self.end_txn("done")
        return cut == len(replies)


class Server:
    def __init__(self, args):
        self.name = args.name
        self.proto = args.proto
        self.seed = args.seed
        self.gen = args.gen
        self.scale = args.fault_scale
        self.timeout = args.client_timeout
        self.pipelining = not args.no_pipelining
        self.ledger = Ledger(args.ledger)
        self.cid = 0
        self.lock = threading.Lock()

    def serve(self, lsock):
        while True:
            try:
                sock, _ = lsock.accept()
            except OSError:
                continue
            with self.lock:
                self.cid += 1
                cid = self.cid
            t = threading.Thread(target=Conn(self, sock, cid).run, daemon=True)
            t.start()


def listen(spec):
    kind, _, rest = spec.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(256)
        return s, f"tcp:{host}:{s.getsockname()[1]}"
    if kind == "unix":
        try:
            os.unlink(rest)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(rest)
        os.chmod(rest, 0o777)  # a daemon that dropped root can connect too
        s.listen(256)
        return s, f"unix:{rest}"
    raise SystemExit(f"faultserver: bad listener {spec}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--proto", choices=("smtp", "lmtp"), required=True)
    ap.add_argument("--listen", action="append", required=True,
                    help="tcp:HOST:PORT (0: any) or unix:PATH")
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--gen", type=int, default=0, help="restart generation")
    ap.add_argument("--fault-scale", type=float, default=1.0)
    ap.add_argument("--client-timeout", type=float, default=2.0,
                    help="the client's reply timeout: late replies come 1 s after it")
    ap.add_argument("--no-pipelining", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = Server(args)
    names = []
    for spec in args.listen:
        lsock, name = listen(spec)
        names.append(name)
        threading.Thread(target=srv.serve, args=(lsock,), daemon=True).start()
    print("ready", args.name, " ".join(names), flush=True)
    # Bounded life: exit when the soak that started us is gone.
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    main()
