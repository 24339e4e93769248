#!/usr/bin/env bash
# Apps and Books benchmark (issue 13): one app assigned to 5,000 iPads of a department against the local Apps and
# Books server — associations batched within the announced limits, time until every InstallApplication is queued.
# Release build; PostgreSQL runs too when ORCHARD_TEST_POSTGRES_URL is set. ORCHARD_BENCH_DEVICES changes the size.
#   scripts/bench-app-installs.sh            # both databases (PostgreSQL skipped without the URL)
#   scripts/bench-app-installs.sh sqlite     # one
set -euo pipefail
cd "$(dirname "$0")/.."
filter="app_installs_bench"
case "${1:-}" in
  sqlite) filter="app_installs_bench_sqlite" ;;
  postgres) filter="app_installs_bench_postgres" ;;
esac
cargo test --release --all-features --test app_installs_bench -- --ignored --nocapture --test-threads 1 "$filter"
