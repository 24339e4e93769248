#!/usr/bin/env bash
# Desired-state benchmarks (issue 12) on a release build: one profile assigned to a smart group of 50,000 iPads
# (time until every InstallProfile is queued) and the reconciler's CPU per inventory report (tests/desired_bench.rs),
# then the declaration-items answer for a channel with 50 declarations (orchard-core's unit benchmark).
# PostgreSQL runs too when ORCHARD_TEST_POSTGRES_URL is set.
#   scripts/bench-desired.sh            # both databases (PostgreSQL skipped without the URL)
#   scripts/bench-desired.sh sqlite     # one
# ORCHARD_BENCH_SQL_LOG=1 logs each statement with its elapsed time to stderr, the assignment between
# "MARK assignment start" and "MARK assignment end", the arrivals between "MARK arrivals start" and "MARK arrivals end".
set -euo pipefail
cd "$(dirname "$0")/.."
filter="desired_state_50k"
case "${1:-}" in
  sqlite) filter="desired_state_50k_sqlite" ;;
  postgres) filter="desired_state_50k_postgres" ;;
esac
cargo test --release --all-features --test desired_bench -- --ignored --nocapture --test-threads 1 "$filter"
cargo test --release -p orchard-core --lib declaration_items_answer -- --nocapture
