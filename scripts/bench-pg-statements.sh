#!/usr/bin/env bash
# What PostgreSQL statements cost, alone: runs pgbench scripts (scripts/pg-statements/*.sql, or the files given)
# alternately against a copy of the S1 bench database's schema, tenants and devices, and prints each run's
# transactions per second and the whole machine's CPU per transaction (pgbench included), so two ways of writing
# the same work (e.g. two statements against one) can be compared without the noise of a whole S1 run.
# Each script's transaction starts by looking up a random device's id (`:did`) from the table `ids` (which also has
# its `tenant_id` and `udid`).
# Usage: scripts/bench-pg-statements.sh [ROUNDS] [script.sql …]   (needs the database of
# `scripts/bench-s1.sh postgres N`, orchard_bench_s1, on ORCHARD_TEST_POSTGRES_URL's server, and pgbench)
# Keep the machine otherwise idle: the CPU figure is the whole machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; shift $(( $# > 0 ? 1 : 0 ))
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(scripts/pg-statements/*.sql)
base=${ORCHARD_TEST_POSTGRES_URL:-$(bash .ci/postgres-setup.sh | tail -n 1)}
server=${base%/*}
source_db=orchard_bench_s1; scratch=orchard_bench_statements
if [ -z "$(psql "$base" -tAc "SELECT 1 FROM pg_database WHERE datname = '$source_db'")" ]; then
  echo "no $source_db: run scripts/bench-s1.sh postgres N first" >&2; exit 2
fi
psql "$base" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $scratch" -c "CREATE DATABASE $scratch"
pg_dump --schema-only "$server/$source_db" | psql -q "$server/$scratch" > /dev/null
pg_dump --data-only -t tenants -t devices "$server/$source_db" | psql -q "$server/$scratch" > /dev/null
psql -q "$server/$scratch" -c "CREATE TABLE ids AS SELECT row_number() OVER (ORDER BY id) AS n, id, tenant_id, udid FROM devices" \
  -c "CREATE UNIQUE INDEX ON ids (n)" -c "ANALYZE"
devices=$(psql -tA "$server/$scratch" -c "SELECT count(*) FROM devices")
echo "$devices devices; $rounds rounds of ${#scripts[@]} scripts, 15 s each (4 clients, 2 threads, prepared statements)"
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
ticks=$(getconf CLK_TCK)
for round in $(seq 1 "$rounds"); do
  for script in "${scripts[@]}"; do
    before=$(busy)
    out=$(pgbench -n -M prepared -c 4 -j 2 -T 15 -D devices="$devices" -D setup=orchard:setup -f "$script" "$server/$scratch" 2>&1)
    after=$(busy)
    done_tx=$(echo "$out" | awk '/processed:/ {split($NF, a, "/"); print a[1]}')
    tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
    cpu=$(awk -v b="$before" -v a="$after" -v t="$ticks" -v n="$done_tx" 'BEGIN {printf "%.1f", (a - b) / t * 1e6 / n}')
    echo "round $round $(basename "$script" .sql): $tps transactions/s, $cpu µs of CPU per transaction"
  done
done
psql "$base" -qc "DROP DATABASE $scratch"
