#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the orchard-store conformance suite: installs it if missing (a fresh
# machine), starts the cluster if stopped, and creates the superuser role `orchard` (password `orchard`)
# that the tests use to create and drop their own databases.
# Idempotent. Exports nothing. Diagnostics go to stderr; stdout is one line, the URL, e.g.
#   ORCHARD_TEST_POSTGRES_URL="$(bash .ci/postgres-setup.sh | tail -n 1)"
set -euo pipefail

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    echo "postgres-setup: installing postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# The newest cluster named main (Debian creates one per installed major version).
read -r version port status < <(pg_lsclusters -h | awk '$2 == "main" { print $1, $3, $4 }' | sort -V | tail -n 1)
if [ -z "${version:-}" ]; then
    echo "postgres-setup: no PostgreSQL cluster named main" >&2
    exit 1
fi
if [ "$status" != "online" ]; then
    echo "postgres-setup: starting cluster $version/main on port $port" >&2
    pg_ctlcluster "$version" main start >&2
fi

psql_as_postgres() {
    (cd /tmp && runuser -u postgres -- psql -p "$port" -qAtX "$@")
}

for _ in $(seq 1 30); do
    if psql_as_postgres -c 'SELECT 1' >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

psql_as_postgres -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orchard') THEN
        CREATE ROLE orchard LOGIN SUPERUSER PASSWORD 'orchard';
    END IF;
END
$$;
SQL

echo "postgres://orchard:orchard@127.0.0.1:${port}/postgres"
