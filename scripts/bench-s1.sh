#!/usr/bin/env bash
# S1 push-all: N enrolled simulated iPads that wake only on push (local APNs server inside orchard-sim), one
# command queued for all of them through the API, time until every result is stored; server CPU per device
# and peak memory.
# Usage: scripts/bench-s1.sh [sqlite|postgres] [N] [extra orchard-sim bench-push flags…]
#
# The server's data (SQLite data dir, or the PostgreSQL database orchard_bench_s1 on ORCHARD_TEST_POSTGRES_URL's
# server), the fleet state and the push topic are kept in ${ORCHARD_BENCH_S1_DIR:-target/bench-s1}/BACKEND and
# reused by later runs: enrolling thousands of iPads (real SCEP, RSA-2048) is slow, so it is done once and a
# larger N only enrolls the difference. Delete that directory (and DROP DATABASE orchard_bench_s1) to start over.
#
# Each run has two server lifetimes: a setup phase (enroll what is missing, wait for the enrollment inventory
# to be answered), then a fresh server for the measured phase, so its peak memory is the push-all's own.
# Server flags can be set through the environment (e.g. ORCHARD_PUSH_RATE, ORCHARD_PUSH_BURST).
# ORCHARD_BENCH_S1_NODES=2 (PostgreSQL only) runs the measured phase on that many `orchard serve` nodes on one
# database (ports PORT, PORT+1, …); the simulator spreads the devices over them as a load balancer would, and the
# server CPU and peak memory are reported for all of them and per node. Each device session opens its own TLS
# connection unless `--shared-connections` is passed (extra flags go to orchard-sim bench-push).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}; n=${2:-1000}; shift $(( $# > 2 ? 2 : $# ))
# ORCHARD_BENCH_S1_BIN=dir runs the orchard and orchard-sim binaries found there (another build, to compare)
# instead of building this checkout's.
if [ -n "${ORCHARD_BENCH_S1_BIN:-}" ]; then
  bin=$ORCHARD_BENCH_S1_BIN
else
  cargo build --release -q -p orchard -p orchard-sim
  bin=${CARGO_TARGET_DIR:-target}/release
fi
dir=${ORCHARD_BENCH_S1_DIR:-target/bench-s1}/$backend
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# A fixed port: the enrolled devices' ServerURL and CheckInURL name it.
case "$backend" in
  sqlite) port=${ORCHARD_BENCH_S1_PORT:-18443} ;;
  postgres) port=${ORCHARD_BENCH_S1_PORT:-18444} ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
db_args=(); db_name=""
if [ "$backend" = postgres ]; then
  base=${ORCHARD_TEST_POSTGRES_URL:-$(bash .ci/postgres-setup.sh | tail -n 1)}
  db_name=orchard_bench_s1
  if [ -z "$(psql "$base" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" ]; then
    psql "$base" -qc "CREATE DATABASE $db_name" >/dev/null
  fi
  db_args=(--database-url "${base%/*}/$db_name")
fi
nodes=${ORCHARD_BENCH_S1_NODES:-1}
if [ "$nodes" -gt 1 ] && [ "$backend" != postgres ]; then
  echo "several nodes need PostgreSQL" >&2; exit 2
fi
sim_pid=""; server_pids=""
trap 'for p in $sim_pid $server_pids; do kill "$p" 2>/dev/null || true; done' EXIT

# One server lifetime: orchard-sim starts the local APNs server and writes its URL and root, the server is
# started against them, and orchard-sim gets the server's URL, token and pid through server.json.
phase() {
  local count=$1; shift
  rm -f "$dir/server.json" "$dir/apns-url"
  "$bin/orchard-sim" bench-push --dir "$dir" --devices "$n" --clock-ticks "$(getconf CLK_TCK)" "$@" &
  sim_pid=$!
  for _ in $(seq 1 600); do [ -s "$dir/apns-url" ] && break; sleep 0.1; done
  [ -s "$dir/apns-url" ] || { echo "orchard-sim did not start the local APNs server" >&2; return 1; }
  local token
  token=$("$bin/orchard" token create --role operator --name bench-s1 --data-dir "$dir/data" "${db_args[@]}" 2>/dev/null)
  # The first node serves the API; every node serves devices.
  local node_json="" i
  server_pids=""
  for i in $(seq 0 $((count - 1))); do
    local out="$dir/server$i.out"
    : > "$out"
    ORCHARD_LINK_DOWNLOADS_PER_MINUTE=0 ORCHARD_MAX_CONNECTIONS_PER_IP=0 ORCHARD_LOG=${ORCHARD_LOG:-warn} "$bin/orchard" serve --data-dir "$dir/data" --listen "127.0.0.1:$((port + i))" "${db_args[@]}" \
      --apns-url "$(cat "$dir/apns-url")" --apns-ca "$dir/apns-root.pem" --wake-inactive-hours 0 \
      > "$out" 2> "$dir/server$i.log" &
    local pid=$!
    server_pids="$server_pids $pid"
    for _ in $(seq 1 300); do [ -s "$out" ] && break; sleep 0.1; done
    [ -s "$out" ] || { echo "orchard serve did not start; see $dir/server$i.log" >&2; return 1; }
    node_json="$node_json${node_json:+,}{\"url\":\"https://127.0.0.1:$((port + i))\",\"pid\":$pid}"
  done
  local first_pid=${server_pids# }; first_pid=${first_pid%% *}
  printf '{"url":"https://127.0.0.1:%s","token":"%s","ca":"%s","pid":%s,"db_name":%s,"nodes":[%s]}\n' \
    "$port" "$token" "$dir/data/server-ca.pem" "$first_pid" "$( [ -n "$db_name" ] && echo "\"$db_name\"" || echo null)" "$node_json" \
    > "$dir/server.json.tmp"
  mv "$dir/server.json.tmp" "$dir/server.json"
  local rc=0
  wait "$sim_pid" || rc=$?
  sim_pid=""
  for p in $server_pids; do
    echo "server lifetime (pid $p): cpu $(ps -o cputime= -p "$p" | tr -d ' '), $(grep VmHWM "/proc/$p/status" | tr -s ' ')"
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  server_pids=""
  return "$rc"
}

echo "== S1 backend=$backend n=$n $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "-- setup (enroll missing devices, answer their enrollment inventory)"
phase 1 --setup-only "$@"
if [ "$backend" = postgres ]; then
  # Enrolling thousands of iPads leaves PostgreSQL's autovacuum to do: done now, it is not paid inside the
  # measured window (session 28: 124.6 s for the first run after an enrollment of 47,000, 88.8 s after a VACUUM).
  vacuum_started=$(date +%s%N)
  psql "${db_args[1]}" -qc "VACUUM (ANALYZE)"
  echo "vacuumed in $(( ($(date +%s%N) - vacuum_started) / 1000000 )) ms"
fi
echo "-- measured run ($nodes node(s))"
phase "$nodes" "$@"
echo "== S1 backend=$backend n=$n done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
