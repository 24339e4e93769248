#!/usr/bin/env bash
# DEP sync (issue 4): a full sync of N devices (default 50,000) from the local DEP server (orchard-dep `fake`:
# TLS, real OAuth, pages of 1,000, no added latency) into a fresh database through Orchard::run_dep_sync, every
# device checked in the database afterwards. Prints wall time, devices/s and CPU (this process; on PostgreSQL
# also the backends serving the benchmark's database) for: the fetch alone, the first sync, the pages applied
# to the store alone, and a full resync with 1 % of the devices released.
# Usage: scripts/bench-dep-sync.sh [sqlite|postgres] [N] [RUNS]
# PostgreSQL: a fresh database per run on ORCHARD_TEST_POSTGRES_URL's server (or .ci/postgres-setup.sh's), dropped
# afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}; n=${2:-50000}; runs=${3:-3}
case "$backend" in
  sqlite) ;;
  postgres) export ORCHARD_TEST_POSTGRES_URL=${ORCHARD_TEST_POSTGRES_URL:-$(bash .ci/postgres-setup.sh | tail -n 1)} ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
cargo build --release -q -p orchard-core --example dep_sync_bench
echo "load average before: $(cat /proc/loadavg)"
"${CARGO_TARGET_DIR:-target}/release/examples/dep_sync_bench" "$backend" "$n" "$runs"
echo "load average after: $(cat /proc/loadavg)"
