#!/usr/bin/env python3
"""Scenario 2: relay with a new connection per message (connection cache
off: on_demand = false, no destinations, no hints). Peer:
"smtp-source -s 20 -m 20000 -l 1024". Environment: BENCH_N,
BENCH_SESSIONS, REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import relay

relay.main(2, reuse=False)
