#!/bin/sh
# make fuzz: runs each coverage-guided fuzz target (tests/fuzz, cargo-fuzz /
# libFuzzer) for FUZZ_SECONDS (default 300) or FUZZ_RUNS executions,
# whichever ends first, one target at a time at the lowest CPU priority,
# then prints executions, time and exec/s per target.
#
#   FUZZ_SECONDS=600 make fuzz
#   FUZZ_TARGETS="nexthop config" FUZZ_RUNS=10000000 make fuzz
#
# Installs cargo-fuzz when it is missing. cargo-fuzz passes -Z flags to
# rustc/cargo: on a stable toolchain RUSTC_BOOTSTRAP=1 lets them through.
# Built with debug assertions and overflow checks, no sanitizer (the code
# is safe Rust; a sanitizer would only slow the search). New inputs go to
# tests/fuzz/runs/<target>/ (not committed), crashes and hangs to
# tests/fuzz/artifacts/<target>/; the committed seeds in
# tests/fuzz/corpus/<target>/ are read only. To keep a finding: minimize
# it (cargo fuzz tmin), copy it into the corpus and fix the code;
# "cargo test --test fuzz_corpora" replays every corpus file.
# Exit status: 0 when no target crashed or hung, else 1.
set -eu
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_RUNS=${FUZZ_RUNS:--1}
FUZZ_TARGETS=${FUZZ_TARGETS:-smtp_reply job_line nexthop config dns_mx throttle_verdict lmtp_ingress lmtp_data tlsa message_facts mta_sts_policy tlsrpt_record mime_downgrade sasl_exchange feed_replies}
DIR=tests/fuzz

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
FLAGS="--fuzz-dir $DIR -O -a -s none"
# shellcheck disable=SC2086
nice -n 19 cargo fuzz build $FLAGS

failed=0
summary=""
for target in $FUZZ_TARGETS; do
    mkdir -p "$DIR/runs/$target" "$DIR/artifacts/$target"
    log="$DIR/runs/$target.log"
    echo "fuzz: $target for ${FUZZ_SECONDS}s (log: $log)"
    status=ok
    # shellcheck disable=SC2086
    if ! nice -n 19 cargo fuzz run $FLAGS "$target" "$DIR/runs/$target" "$DIR/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -runs="$FUZZ_RUNS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$DIR/artifacts/$target/" >"$log" 2>&1; then
        status="FAILED: $(grep -m1 -o "$DIR/artifacts/$target/[^ ]*" "$log" || echo "see $log")"
        failed=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    line=$(awk -v t="$target" -v r="${runs:-0}" -v s="${secs:-0}" -v st="$status" \
        'BEGIN { printf "%-11s %12d runs %6d s %9d exec/s  %s", t, r, s, (s > 0 ? r / s : 0), st }')
    echo "$line"
    summary="$summary$line
"
done
echo "fuzz summary:"
printf '%s' "$summary"
exit "$failed"
