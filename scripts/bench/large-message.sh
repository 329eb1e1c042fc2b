#!/usr/bin/env bash
# Large-message benchmark: delivers one 200 MB message over loopback to
# Postfix's smtp-sink and reports mailhop's peak RSS and throughput.
#
# Target: peak RSS below 50 MB, i.e. memory stays flat whatever the message
# size. 1 MB = 1,048,576 bytes here.
#
# Prints the figures and a PASS/FAIL line, writes them to
# target/bench/large-message.json, and exits 0 on PASS, 1 on FAIL.
# Loopback only; smtp-sink is stopped and the message removed on exit.
#
# Environment: BENCH_SIZE_MB (default 200), BENCH_RSS_TARGET_MB (default 50),
# BENCH_TIMEOUT (seconds, default 600).
set -euo pipefail

cd "$(dirname "$0")/../.."

SIZE_MB=${BENCH_SIZE_MB:-200}
RSS_TARGET_MB=${BENCH_RSS_TARGET_MB:-50}
TIMEOUT=${BENCH_TIMEOUT:-600}
OUT_DIR=target/bench
OUT_JSON=$OUT_DIR/large-message.json

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

find_prog() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    for dir in /usr/sbin /sbin; do
        if [ -x "$dir/$name" ]; then printf '%s\n' "$dir/$name"; return 0; fi
    done
    return 1
}

SMTP_SINK=$(find_prog smtp-sink) || die "smtp-sink not found: run 'make deps'"
[ -x /usr/bin/time ] || die "/usr/bin/time not found: run 'make deps'"
command -v ss >/dev/null 2>&1 || die "ss (iproute2) not found: run 'make deps'"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mailhop-bench.XXXXXX")
SINK_PID=""
cleanup() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build (a no-op when up to date).
say "building mailhop (release)"
cargo build --release --quiet
MAILHOP=target/release/mailhop

# The message: headers, then 78-character text lines, about SIZE_MB in all.
MSG=$WORK/message.eml
target_bytes=$((SIZE_MB * 1024 * 1024))
line='The quick brown fox jumps over the lazy dog; mailhop large message benchmark.'
line=${line}$(printf '%*s' $((78 - ${#line})) '' | tr ' ' '.')
[ ${#line} -eq 78 ] || die "internal: body line is ${#line} characters"
{
    printf 'From: a@x.test\nTo: b@y.test\nSubject: mailhop %s MB benchmark\n' "$SIZE_MB"
    printf 'Date: %s\nMessage-ID: <bench.%s@x.test>\nMIME-Version: 1.0\n' \
        "$(date -R)" "$$"
    printf 'Content-Type: text/plain; charset=us-ascii\n\n'
} >"$MSG"
header_bytes=$(stat -c %s "$MSG")
lines=$(((target_bytes - header_bytes) / 79))
say "generating a ${SIZE_MB} MB message ($lines lines of 78 characters)"
set +o pipefail # yes(1) ends with SIGPIPE when head(1) has enough
yes "$line" | head -n "$lines" >>"$MSG"
set -o pipefail
msg_bytes=$(stat -c %s "$MSG")

# smtp-sink on a free loopback port. As root it must drop privileges (-u).
sink_user=()
[ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
port=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    candidate=$((20000 + RANDOM % 40000))
    if ss -Htln "sport = :$candidate" | grep -q .; then continue; fi
    "$SMTP_SINK" "${sink_user[@]}" "127.0.0.1:$candidate" 10 >"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 50); do
        if ss -Htln "sport = :$candidate" | grep -q .; then port=$candidate; break; fi
        kill -0 "$SINK_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] && break
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
done
[ -n "$port" ] || die "could not start smtp-sink: $(cat "$WORK/sink.log" 2>/dev/null)"
say "smtp-sink listening on 127.0.0.1:$port (pid $SINK_PID)"

say "delivering: mailhop send --direct --nexthop [127.0.0.1]:$port"
set +e
timeout "$TIMEOUT" /usr/bin/time -f '%M %e' -o "$WORK/time.out" \
    "$MAILHOP" send --direct --nexthop "[127.0.0.1]:$port" \
    --from a@x.test --to b@y.test "$MSG" >"$WORK/result.out" 2>"$WORK/mailhop.err"
rc=$?
set -e
result=$(cat "$WORK/result.out")
[ -z "$result" ] || say "result: $result"
[ -s "$WORK/mailhop.err" ] && sed 's/^/bench: mailhop stderr: /' "$WORK/mailhop.err"
[ "$rc" -eq 124 ] && say "mailhop did not finish within ${TIMEOUT}s"

read -r rss_kb elapsed < <(tail -n 1 "$WORK/time.out" 2>/dev/null || true) || true
rss_kb=${rss_kb:-0}
elapsed=${elapsed:-0}
case $rss_kb in '' | *[!0-9]*) rss_kb=0 ;; esac
case $elapsed in '' | *[!0-9.]*) elapsed=0 ;; esac

sent=false
if [ "$rc" -eq 0 ] && grep -q 'status=sent' <<<"$result"; then sent=true; fi

read -r msg_mb rss_mb mbps < <(awk -v b="$msg_bytes" -v k="$rss_kb" -v e="$elapsed" 'BEGIN {
    mb = b / 1048576
    printf "%.1f %.1f %s\n", mb, k / 1024, (e > 0 ? sprintf("%.1f", mb / e) : "null")
}')
rss_ok=$(awk -v k="$rss_kb" -v t="$RSS_TARGET_MB" 'BEGIN { print (k > 0 && k / 1024 < t) ? "true" : "false" }')
pass=false
[ "$sent" = true ] && [ "$rss_ok" = true ] && pass=true

cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
cpus=$(nproc)
version=$("$MAILHOP" --version 2>/dev/null || echo unknown)

printf '\n'
printf 'message size : %s MB (%s bytes)\n' "$msg_mb" "$msg_bytes"
printf 'status       : %s\n' "$([ "$sent" = true ] && echo sent || echo "NOT sent (exit $rc)")"
printf 'peak RSS     : %s MB\n' "$rss_mb"
printf 'elapsed      : %s s\n' "$elapsed"
printf 'throughput   : %s MB/s\n' "$mbps"
printf 'machine      : %s CPUs, %s\n' "$cpus" "${cpu:-unknown CPU}"
if [ "$pass" = true ]; then
    printf 'PASS: delivered, peak RSS %s MB < %s MB\n' "$rss_mb" "$RSS_TARGET_MB"
else
    printf 'FAIL: delivered=%s, peak RSS %s MB (target < %s MB)\n' "$sent" "$rss_mb" "$RSS_TARGET_MB"
fi

json_string() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\000-\037'; }
mkdir -p "$OUT_DIR"
cat >"$OUT_JSON" <<JSON
{
  "benchmark": "large-message",
  "mailhop_version": "$(json_string "$version")",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "message_bytes": $msg_bytes,
  "message_mb": $msg_mb,
  "sent": $sent,
  "exit_code": $rc,
  "peak_rss_kb": $rss_kb,
  "peak_rss_mb": $rss_mb,
  "elapsed_s": $elapsed,
  "throughput_mb_s": $mbps,
  "rss_target_mb": $RSS_TARGET_MB,
  "pass": $pass,
  "result": "$(json_string "$result")",
  "nproc": $cpus,
  "cpu": "$(json_string "$cpu")"
}
JSON
say "wrote $OUT_JSON"
[ "$pass" = true ]
