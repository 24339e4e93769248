#!/usr/bin/env bash
# Web UI render benchmark (issue 14): 10,000 iPads in one department, the dashboard, device list and device page
# timed over 100 requests each on a release build. PostgreSQL runs too when ORCHARD_TEST_POSTGRES_URL is set.
#   scripts/bench-webui.sh            # both databases (PostgreSQL skipped without the URL)
#   scripts/bench-webui.sh sqlite     # one
set -euo pipefail
cd "$(dirname "$0")/.."
filter="webui_render_10k"
case "${1:-}" in
  sqlite) filter="webui_render_10k_sqlite" ;;
  postgres) filter="webui_render_10k_postgres" ;;
esac
cargo test --release --all-features --test webui_bench -- --ignored --nocapture --test-threads 1 "$filter"
