#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database with cargo-audit,
# offline: the database is ../shared/advisory-db (beside the checkout, as CI
# has it) or $MAILHOP_ADVISORY_DB. Installs cargo-audit (cargo install
# --locked) when it is missing. Any advisory fails the run.
#
# Without a database: fails under CI=true, otherwise skips with a loud note.
set -euo pipefail
cd "$(dirname "$0")/.."

db=${MAILHOP_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db/crates" ]; then
    if [ "${CI:-}" = true ]; then
        echo "audit: error: advisory database not found at $db" >&2
        exit 1
    fi
    echo "audit: SKIPPED: no advisory database at $db (set MAILHOP_ADVISORY_DB)" >&2
    exit 0
fi
if ! cargo audit --version >/dev/null 2>&1; then
    echo "audit: installing cargo-audit (cargo install --locked cargo-audit)"
    cargo install --locked cargo-audit
fi
cargo audit --db "$db" --no-fetch --deny warnings
