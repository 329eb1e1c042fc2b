#!/usr/bin/env python3
"""Scenario 1: relay with reused connections. 20,000 x 1 KiB messages, one
recipient each, to one smtp-sink, 20 concurrent sessions. Peers:
"smtp-source -d -s 20 -m 20000 -l 1024" and the drain of a private Postfix's
held queue (qmgr + smtp(8)). mailhop: daemon with workers = 20 and
[cache] destinations = ["127.0.0.1"].
Environment: BENCH_N, BENCH_SESSIONS, PF_N (Postfix drain size, 0: skip),
REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import relay

relay.main(1, reuse=True)
