#!/usr/bin/env bash
# Runs every test: unit, store conformance and end-to-end, on SQLite and on PostgreSQL.
# PostgreSQL comes from ORCHARD_TEST_POSTGRES_URL; when it is unset, the local PostgreSQL 15 cluster is
# started and prepared by .ci/postgres-setup.sh (needs root, as on our development machines).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ORCHARD_TEST_POSTGRES_URL:-}" ]; then
  ORCHARD_TEST_POSTGRES_URL="$(bash .ci/postgres-setup.sh | tail -n 1)"
  export ORCHARD_TEST_POSTGRES_URL
fi
# The sign-in end-to-end test starts a real OpenID provider from npm (tests/oidc): install it if missing.
if [ ! -f tests/oidc/node_modules/oidc-provider/package.json ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund
fi
cargo test --workspace --all-targets --all-features --locked "$@"
