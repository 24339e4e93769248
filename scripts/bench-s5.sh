#!/usr/bin/env bash
# S5: does a check-in cost more after a month of finished commands? Against a local Orchard: enroll DEVICES
# simulated iPads, measure signed Idle round trips (round 1, "day one"), then put DAYS days × PER_DAY finished
# commands per device into the queue (as a month of sessions leaves them), wait until the server's
# command-hygiene job moved them to the history, and measure the same devices again (round 2). Prints round
# trips/s, latency and the server's CPU time per round trip for each round.
# Usage: scripts/bench-s5.sh [sqlite|postgres] [devices] [seconds] [days] [per_day] [concurrency]
# ORCHARD_BENCH_PROFILE=debug uses target/debug (no release build; only the ratio of the two rounds means
# anything then).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}; devices=${2:-200}; seconds=${3:-20}; days=${4:-30}; per_day=${5:-20}; concurrency=${6:-32}
profile=${ORCHARD_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p orchard -p orchard-sim; fi
bin=${CARGO_TARGET_DIR:-target}/$profile
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
db_args=(); sql=()
if [ "$backend" = postgres ]; then
  base=${ORCHARD_TEST_POSTGRES_URL:-$(bash .ci/postgres-setup.sh | tail -n 1)}
  name="orchard_bench_s5_$$"
  psql "$base" -qc "CREATE DATABASE $name" >/dev/null
  db_args=(--database-url "${base%/*}/$name")
  sql=(psql -qtA "${base%/*}/$name" -c)
else
  sql=(sqlite3 "$work/data/orchard.db")
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
echo "S5 backend=$backend profile=$profile devices=$devices seconds=$seconds days=$days per_day=$per_day concurrency=$concurrency"
hs="$work/hs"
$bin/orchard-sim bench --url "$link" --ca "$ca" --devices "$devices" --seconds "$seconds" --concurrency "$concurrency" --pause-between "$hs" > "$work/sim" &
sim_pid=$!
# Server CPU time in clock ticks (utime + stime of the process).
ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)
while [ ! -e "$hs.enrolled" ]; do sleep 0.1; done
cpu0=$(ticks); touch "$hs.go"
while [ ! -e "$hs.ready" ]; do sleep 0.1; done
cpu1=$(ticks)
# A month of finished commands per device channel, as sessions leave them in the queue.
rows=$((days * per_day))
now=$(date +%s)
if [ "$backend" = postgres ]; then
  "${sql[@]}" "INSERT INTO commands (command_uuid, device_id, tenant_id, channel_id, request_type, status, payload,
      result, queued_at, sent_at, completed_at, attempts)
    SELECT upper(gen_random_uuid()::text), d.id, d.tenant_id, c.id, 'DeviceInformation', 'acknowledged',
      convert_to(repeat('p', 400), 'UTF8'), convert_to(repeat('r', 1500), 'UTF8'),
      $now - (i * 86400 * $days / $rows) - 20, $now - (i * 86400 * $days / $rows) - 10,
      $now - (i * 86400 * $days / $rows), 1
    FROM devices d JOIN channels c ON c.device_id = d.id AND c.user_short_name IS NULL,
         generate_series(0, $rows - 1) AS i" >/dev/null
else
  "${sql[@]}" "PRAGMA busy_timeout = 10000; WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $rows - 1)
    INSERT INTO commands (command_uuid, device_id, tenant_id, channel_id, request_type, status, payload, result,
      queued_at, sent_at, completed_at, attempts)
    SELECT upper(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-8' || substr(h, 18, 3)
                 || '-' || substr(h, 21, 12)), id, tenant_id, channel, 'DeviceInformation', 'acknowledged',
      randomblob(400), randomblob(1500), $now - (i * 86400 * $days / $rows) - 20,
      $now - (i * 86400 * $days / $rows) - 10, $now - (i * 86400 * $days / $rows), 1
    FROM (SELECT lower(hex(randomblob(16))) AS h, d.id, d.tenant_id, c.id AS channel, i
          FROM devices d JOIN channels c ON c.device_id = d.id AND c.user_short_name IS NULL, n);" >/dev/null
fi
echo "inserted $(( rows )) finished commands per device; waiting for the command-hygiene job to move them"
while [ "$("${sql[@]}" "SELECT COUNT(*) FROM commands WHERE status = 'acknowledged'" | tail -1)" != 0 ]; do sleep 2; done
echo "history rows: $("${sql[@]}" "SELECT COUNT(*) FROM command_history" | tail -1), hot rows: $("${sql[@]}" "SELECT COUNT(*) FROM commands" | tail -1)"
cpu2=$(ticks); touch "$hs"
wait "$sim_pid"
cpu3=$(ticks)
cat "$work/sim"
python3 - "$work/sim" "$cpu0" "$cpu1" "$cpu2" "$cpu3" "$hz" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
trips = [int(m) for m in re.findall(r"^(\d+) signed Idle round trips", text, re.M)]
c0, c1, c2, c3, hz = map(int, sys.argv[2:7])
for n, (trip, cpu) in enumerate(zip(trips, [c1 - c0, c3 - c2]), 1):
    print(f"round {n}: server cpu {cpu / hz:.2f} s for {trip} round trips = {1000 * cpu / hz / max(trip, 1):.3f} ms per round trip")
PY
