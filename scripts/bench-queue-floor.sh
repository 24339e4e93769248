#!/usr/bin/env bash
# The floor of queueing one command per device in the database alone (issue 12's assignment benchmark): what
# the set-based statements cost for N devices with no Orchard code at all — no planning, no binding, one
# statement per step — on the real schema (every migration applied) with the same settings Orchard uses
# (SQLite: WAL, synchronous NORMAL, foreign keys on). Any design that writes these rows per device at
# assignment time costs at least this; compare with the goal (0.5 s on SQLite, 1 s on PostgreSQL, N = 50,000).
#
# Steps timed, each one statement inside one transaction, as the reconciler would commit them:
#   mark    the work set: one reconcile_dirty row per device (what an assignment does today);
#   claim   the work set taken back (the reconciler's claim);
#   pending one device_profiles row per device (the guard that a command is pending);
#   queue   one commands row per device (an InstallProfile naming a shared body);
#   push    one push mark per device channel.
#
#   scripts/bench-queue-floor.sh sqlite [N]
#   scripts/bench-queue-floor.sh postgres [N]     # needs ORCHARD_TEST_POSTGRES_URL; uses a scratch database
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
n=${2:-50000}
work=$(mktemp -d)
# A one-byte and an empty blob literal in each dialect.
case "$backend" in
  postgres) one="'\\x00'::bytea" empty="''::bytea" ;;
  *) one="X'00'" empty="X''" ;;
esac
trap '[ -n "${FLOOR_KEEP:-}" ] || rm -rf "$work"' EXIT

seed="
INSERT INTO tenants (id, name, code, created_at) VALUES ('t', 'Music', 'mus', 1);
INSERT INTO device_groups (id, tenant_id, name, kind, created_at, updated_at) VALUES ('g', 't', 'older', 'static', 1, 1);
INSERT INTO profiles (id, tenant_id, owner_key, name, identifier, latest_version, created_at, updated_at)
  VALUES ('p', 't', 't', 'Wi-Fi', 'edu.example.wifi', 1, 1, 1);
INSERT INTO command_bodies (id, source, body, body_sealed, created_at, last_used_at)
  VALUES ('b', 'profile:p:1', $one, 0, 1, 1);
INSERT INTO devices (id, udid, tenant_id, state, os_version, enrolled_at, created_at, updated_at)
  SELECT 'd' || i, 'u' || i, 't', 'enrolled', '18.1', 1, 1, 1 FROM series;
INSERT INTO channels (id, device_id, push_token, push_magic, created_at)
  SELECT 'c' || i, 'd' || i, $one, 'magic', 1 FROM series;
INSERT INTO device_group_members (group_id, device_id, joined_at) SELECT 'g', 'd' || i, 1 FROM series;
"
# Each step is its own transaction so the figures add up to what one big unit would cost.
steps=(
  "mark|INSERT INTO reconcile_dirty (device_id, marked_at) SELECT device_id, 2 FROM device_group_members WHERE group_id = 'g'"
  "claim|DELETE FROM reconcile_dirty WHERE device_id IN (SELECT device_id FROM reconcile_dirty ORDER BY marked_at, device_id LIMIT $n)"
  "pending|INSERT INTO device_profiles (device_id, profile_id, pending_action, pending_version, pending_command, reconciled, updated_at) SELECT device_id, 'p', 'install', 1, 'q' || device_id, 1, 2 FROM device_group_members WHERE group_id = 'g' ON CONFLICT (device_id, profile_id) DO UPDATE SET pending_command = excluded.pending_command WHERE device_profiles.pending_command IS NULL"
  "queue|INSERT INTO commands (command_uuid, device_id, tenant_id, channel_id, request_type, status, payload, queued_by, queued_at, body_id) SELECT 'q' || m.device_id, m.device_id, 't', c.id, 'InstallProfile', 'queued', $empty, 'reconciler', 2, 'b' FROM device_group_members m JOIN channels c ON c.device_id = m.device_id WHERE m.group_id = 'g'"
  "push|UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = 2 WHERE device_id IN (SELECT device_id FROM device_group_members WHERE group_id = 'g')"
)

case "$backend" in
  sqlite)
    db="$work/floor.db"
    {
      echo "PRAGMA journal_mode = WAL;"
      for f in migrations/sqlite/*.sql; do cat "$f"; echo ";"; done
    } | sqlite3 "$db" >/dev/null
    sqlite3 "$db" "PRAGMA foreign_keys = ON; CREATE TEMP TABLE series (i INTEGER PRIMARY KEY);
      WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $n) INSERT INTO series SELECT i FROM s;
      $seed"
    script=$'PRAGMA synchronous = NORMAL;\nPRAGMA foreign_keys = ON;\n.timer on'
    for s in "${steps[@]}"; do script+=$'\n'"BEGIN; ${s#*|}; COMMIT;"; done
    # The timer prints one line per input line, and each step is one line (BEGIN, the step, COMMIT).
    printf '%s\n' "$script" | sqlite3 "$db" 2>&1 | tee "$work/raw" | awk -v names="$(printf '%s ' "${steps[@]%%|*}")" '
      BEGIN { split(names, name, " ") }
      /Run Time/ { k = ++i; real[k] = $4; cpu[k] = $6 + $8 }
      END { for (k = 1; k <= length(name); k++) { printf "%-8s %7.3f s wall %7.3f s CPU\n", name[k], real[k], cpu[k]; tr += real[k]; tc += cpu[k] }
            printf "%-8s %7.3f s wall %7.3f s CPU (sqlite3 process)\n", "total", tr, tc }'
    ;;
  postgres)
    url=${ORCHARD_TEST_POSTGRES_URL:?set ORCHARD_TEST_POSTGRES_URL}
    name="orchard_queue_floor"
    psql -q "$url" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
    scratch="${url%/*}/$name"
    cat migrations/postgres/*.sql | psql -q -v ON_ERROR_STOP=1 "$scratch" >/dev/null
    psql -q -v ON_ERROR_STOP=1 "$scratch" -c "CREATE TABLE series AS SELECT generate_series(1, $n) AS i" -c "$seed" -c "VACUUM ANALYZE" >/dev/null
    for s in "${steps[@]}"; do
      # The server's own CPU is not visible from here; wall time on a quiet machine is close to it.
      ms=$(printf 'BEGIN;\n\\timing on\n%s;\nCOMMIT;\n' "${s#*|}" | psql -q -v ON_ERROR_STOP=1 "$scratch" | awk '/^Time/ { t += $2 } END { print t }')
      printf "%-8s %7.3f s wall\n" "${s%%|*}" "$(echo "$ms / 1000" | bc -l)"
      total_ms=$(echo "${total_ms:-0} + $ms" | bc -l)
    done
    printf "%-8s %7.3f s wall\n" total "$(echo "$total_ms / 1000" | bc -l)"
    psql -q "$url" -c "DROP DATABASE $name" >/dev/null
    ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
[ ! -f "$work/raw" ] || ! grep -i error "$work/raw" >&2
echo "($n devices; load: $(cut -d' ' -f1-3 /proc/loadavg))"
