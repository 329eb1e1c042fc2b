#!/usr/bin/env python3
"""Blackholed SMTP servers without firewall tools: on each ADDR:PORT, a
listening socket with backlog 0 whose accept queue is filled by our own
connections and never accepted. Linux then drops further SYNs, so a client's
connect() hangs until its own timeout, as with a dead host.

Usage: blackhole.py --port PORT [--lifetime SECS] ADDR... (IPv4 or IPv6)
Prints "ready" once every address drops SYNs (checked), then sleeps until
SIGTERM/SIGINT or --lifetime (default 1800 s). Loopback addresses only."""
import argparse
import ipaddress
import signal
import socket
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("addrs", nargs="+")
    a = p.parse_args()
    keep = []
    for addr in a.addrs:
        ip = ipaddress.ip_address(addr)
        if not ip.is_loopback:
            sys.exit(f"blackhole.py: {addr} is not a loopback address")
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, a.port))
        ls.listen(0)
        keep.append(ls)
        # Fill the accept queue (backlog 0 holds one; make sure with a few).
        for _ in range(8):
            c = socket.socket(family, socket.SOCK_STREAM)
            c.settimeout(0.3)
            try:
                c.connect((addr, a.port))
                keep.append(c)
            except OSError:
                c.close()
                break
        # Check: a further connect must not complete.
        c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(0.5)
        try:
            c.connect((addr, a.port))
            sys.exit(f"blackhole.py: {addr}:{a.port} still accepts connections")
        except (socket.timeout, TimeoutError):
            pass
        finally:
            c.close()
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    deadline = time.monotonic() + a.lifetime
    while not stop and time.monotonic() < deadline:
        time.sleep(0.2)
    for s in keep:
        s.close()


if __name__ == "__main__":
    main()
