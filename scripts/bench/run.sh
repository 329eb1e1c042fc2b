#!/usr/bin/env bash
# mailhop benchmark harness ("make bench"): runs the scenarios, each of
# which measures its reference peers and mailhop in the same run,
# alternating, REPS times, then prints the table and the PASS/FAIL line of
# each target and writes target/bench/results.json. Targets are reported,
# not enforced: the exit status is 0 unless the harness itself broke.
#
# Environment:
#   SCENARIOS  which to run, in order (default "1 2 lat 7 6 3 8 4 5 9 10
#              11 12 13 14"); names: 1 relay+reuse, 2 relay no reuse, lat latency,
#              3 many domains, 4 dead primaries, 5 large message,
#              6 slow sessions, 7 LMTP over a UNIX socket,
#              8 DNS burst (cold vs warm DNS cache, 500 workers),
#              9 throttling receiver, 10 head of line, 11 dead primaries
#              with address health memory, 12 Happy Eyeballs, 13 Postfix
#              -> mailhop's LMTP ingress vs Postfix's own smtp(8),
#              14 TLS (SMTPS through a socat front vs a Postfix TLS drain;
#              session resumption against Postfix's smtpd)
#   REPS       repetitions per scenario (default: 5 for scenarios 1 and
#              2, whose targets sit closest to their lines and whose runs
#              are short; 3 for the others)
#   QUICK=1    smaller N everywhere (a run of a few minutes)
#   MAILHOP    binary to measure (default target/release/mailhop, built here)
#   NO_BUILD=1 skip "cargo build --release"
#   BENCH_KEEP_WORK=1  keep the scenario work directories (logs, configs)
# Per-scenario sizes: see the header of each scripts/bench/s*.py.
set -uo pipefail

cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin"
BENCH=scripts/bench
OUT=target/bench

say() { printf 'bench: %s\n' "$*" >&2; }

SCENARIOS=${SCENARIOS:-"1 2 lat 7 6 3 8 4 5 9 10 11 12 13 14 15"}
# Empty: each scenario's own default.
export REPS=${REPS:-}
export PYTHONDONTWRITEBYTECODE=1

# Peers (Debian packages): smtp-sink/smtp-source/postfix, dnsmasq, time, ss.
need_deps=0
for prog in smtp-sink smtp-source postfix postsuper postqueue dnsmasq ss; do
    command -v "$prog" >/dev/null 2>&1 || need_deps=1
done
[ -x /usr/bin/time ] || need_deps=1
if [ "$need_deps" = 1 ]; then
    say "installing the benchmark peers (scripts/install-test-deps.sh)"
    scripts/install-test-deps.sh || { say "could not install the peers"; exit 1; }
fi
command -v python3 >/dev/null 2>&1 || { say "python3 is required"; exit 1; }
command -v script >/dev/null 2>&1 || { say "script(1) (bsdutils) is required"; exit 1; }

if [ "${NO_BUILD:-0}" = 0 ] && [ -z "${MAILHOP:-}" ]; then
    say "building mailhop (release)"
    cargo build --release --quiet || { say "build failed"; exit 1; }
fi

# Scenario 6 holds 1,000 SMTP sessions and 1,000 message files at once.
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

mkdir -p "$OUT"
rm -f "$OUT"/scenario-*.json "$OUT"/results.json

CHILD=""
cleanup() {
    # The running scenario and everything it started (its own process group).
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM -- "-$CHILD" 2>/dev/null || kill -TERM "$CHILD" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$CHILD" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

script_for() {
    case $1 in
        1) echo s1-relay-reuse.py ;;
        2) echo s2-relay-noreuse.py ;;
        lat | latency | 0) echo s0-latency.py ;;
        3) echo s3-many-domains.py ;;
        4) echo s4-dead-primaries.py ;;
        5) echo s5-large-message.py ;;
        6) echo s6-slow-sessions.py ;;
        7) echo s7-lmtp-unix.py ;;
        8) echo s8-dns-burst.py ;;
        9 | throttle) echo s9-throttling.py ;;
        10 | hol) echo s10-head-of-line.py ;;
        11 | health) echo s11-health-memory.py ;;
        12 | he) echo s12-happy-eyeballs.py ;;
        13 | ingress) echo s13-lmtp-ingress.py ;;
        14 | tls) echo s14-tls.py ;;
        15 | feed) echo s15-redis-feed.py ;;
        *) return 1 ;;
    esac
}

# Each scenario has a time limit (seconds); a scenario that overruns is
# stopped and the others go on.
SCENARIO_LIMIT=${SCENARIO_LIMIT:-600}
failed=()
start=$(date +%s)
for s in $SCENARIOS; do
    file=$(script_for "$s") || { say "unknown scenario: $s"; failed+=("$s"); continue; }
    say "=== scenario $s ($file) ==="
    t0=$(date +%s)
    setsid timeout --kill-after=10 "$SCENARIO_LIMIT" python3 "$BENCH/$file" &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    [ "$rc" -eq 0 ] || { say "scenario $s exited $rc"; failed+=("$s"); }
    say "scenario $s: $(($(date +%s) - t0)) s"
done
say "all scenarios: $(($(date +%s) - start)) s"

python3 "$BENCH/report.py"
if [ "${#failed[@]}" -gt 0 ]; then
    say "scenarios that did not complete: ${failed[*]}"
    exit 1
fi
exit 0
