#!/usr/bin/env bash
# S2: signed check-in/command round trips per second against a local release-built Orchard.
# Usage: scripts/bench-roundtrips.sh [sqlite|postgres] [devices] [seconds] [concurrency] [extra orchard-sim bench flags…]
# PostgreSQL uses ORCHARD_TEST_POSTGRES_URL's server (a fresh database is created), as the tests do.
# On a machine with two or more cores the server (and PostgreSQL's processes) are pinned to core 0 and the
# simulator to core 1 while measuring, and the server's (and the database's) CPU time per round trip is printed:
# that, not round trips/s, is the figure to compare (issue 11, point 9). ORCHARD_BENCH_PIN=0 turns pinning off.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}; devices=${2:-200}; seconds=${3:-20}; concurrency=${4:-32}; shift $(( $# > 4 ? 4 : $# ))
cargo build --release -q -p orchard -p orchard-sim
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
db_args=(); cpu_args=()
if [ "$backend" = postgres ]; then
  cpu_args=(--db-process-name postgres)
  base=${ORCHARD_TEST_POSTGRES_URL:-$(bash .ci/postgres-setup.sh | tail -n 1)}
  name="orchard_bench_$$"
  psql "$base" -qc "CREATE DATABASE $name" >/dev/null
  db_args=(--database-url "${base%/*}/$name")
fi
token=$($bin/orchard token create --role operator --name bench --data-dir "$work/data" "${db_args[@]}" 2>/dev/null)
ORCHARD_LINK_DOWNLOADS_PER_MINUTE=0 ORCHARD_MAX_CONNECTIONS_PER_IP=0 ORCHARD_LOG=warn $bin/orchard serve --data-dir "$work/data" --listen 127.0.0.1:0 "${db_args[@]}" > "$work/out" &
server_pid=$!
for _ in $(seq 1 100); do [ -s "$work/out" ] && break; sleep 0.1; done
url=$(head -1 "$work/out" | awk '{print $3}')
ca="$work/data/server-ca.pem"
api() { curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
tenant=$(api -d '{"name":"Bench","code":"bench"}' "$url/api/v1/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
link=$(api -d '{"name":"bench"}' "$url/api/v1/tenants/$tenant/enrollment-links" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
echo "backend=$backend devices=$devices seconds=$seconds concurrency=$concurrency $*"
cpu_args+=(--server-pid "$server_pid")
if [ "${ORCHARD_BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  cpu_args+=(--pin-server 0 --pin-self 1)
  if [ "$backend" = postgres ]; then
    cpu_args+=(--pin-db 0)
    # PostgreSQL's processes get all cores back afterwards (new backends inherit the postmaster's pinning).
    trap 'for p in $(pgrep -x postgres); do taskset -a -p -c 0-$(($(nproc) - 1)) "$p" >/dev/null; done; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
  fi
fi
$bin/orchard-sim bench --url "$link" --ca "$ca" --devices "$devices" --seconds "$seconds" --concurrency "$concurrency" "${cpu_args[@]}" "$@"
cpu=$(ps -o cputime= -p "$server_pid" | tr -d ' ')
rss=$(ps -o rss= -p "$server_pid" | tr -d ' ')
echo "server cpu time (whole run incl. enrollment): $cpu, rss now: ${rss} KiB"
