#!/usr/bin/env bash
# Fuzzes the admin API from its own OpenAPI document with schemathesis (PyPI): starts a real `orchard serve` on
# SQLite with its data in target/fuzz-api, makes an operator token, and runs every documented operation with
# generated valid and invalid input. Checks: no 5xx (not_a_server_error), every answer matches its documented
# schema (response_schema_conformance), and its status and content type are documented (status_code_conformance,
# content_type_conformance). Ends non-zero on any failure. Extra arguments go to `schemathesis run`.
#
#   scripts/fuzz-api.sh                 # 25 examples per operation (~20 s once built; ~2,250 requests)
#   FUZZ_MAX_EXAMPLES=200 scripts/fuzz-api.sh
#
# schemathesis is installed into target/fuzz-api/venv from PyPI (pip honours PIP_INDEX_URL / PIP_FIND_LINKS).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/fuzz-api
max_examples=${FUZZ_MAX_EXAMPLES:-25}
schemathesis_version=${SCHEMATHESIS_VERSION:-4.32.5}
mkdir -p "$dir"

if ! "$dir/venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet "schemathesis==$schemathesis_version"
fi

cargo build --quiet --bin orchard
cargo build --quiet -p orchard-sim --bin orchard-sim
bin=target/debug/orchard

# A fresh server each run: the fuzzer creates tenants, tokens and templates.
rm -rf "$dir/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$("$bin" token create --role operator --name fuzz-api --data-dir "$dir/data" 2>/dev/null)
ORCHARD_LOG=${ORCHARD_LOG:-warn} "$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" \
  > "$dir/server.out" 2> "$dir/server.log" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT

base="https://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -fsS --cacert "$dir/data/server-ca.pem" "$base/healthz" > /dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "orchard serve exited; see $dir/server.log" >&2; exit 1; }
  sleep 0.2
done

# The served document is the committed one.
curl -fsS --cacert "$dir/data/server-ca.pem" "$base/api/v1/openapi.json" > "$dir/openapi.json"
cmp -s "$dir/openapi.json" docs/openapi.json || {
  echo "the served /api/v1/openapi.json differs from docs/openapi.json" >&2; exit 1; }

# Real objects for the operations that take an id, so the fuzzer reaches past "not found": a tenant with one
# simulated iPad enrolled over the real protocol (orchard-sim), a DEP token (its key pair; no server token
# uploaded), an enrollment template on it, a spare API token and a role mapping.
api() { # METHOD PATH JSON FIELD → the answer's FIELD (default "id")
  curl -fsS --cacert "$dir/data/server-ca.pem" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -X "$1" -d "$3" "$base/api/v1$2" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "${4:-id}"
}
export FUZZ_CACHE_DIR="$PWD/$dir/cache"
export FUZZ_TENANT FUZZ_DEVICE FUZZ_DEP_TOKEN FUZZ_TEMPLATE FUZZ_API_TOKEN FUZZ_ROLE_MAPPING
FUZZ_TENANT=$(api POST /tenants '{"name": "Fuzz", "code": "fuzz"}')
link=$(api POST "/tenants/$FUZZ_TENANT/enrollment-links" '{"name": "fuzz"}' url)
rm -f "$dir/fleet.json"
target/debug/orchard-sim enroll --url "$link" --count 1 --state "$dir/fleet.json" --ca "$dir/data/server-ca.pem" \
  2> "$dir/sim.log"
FUZZ_DEVICE=$(curl -fsS --cacert "$dir/data/server-ca.pem" -H "Authorization: Bearer $token" "$base/api/v1/devices" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["id"])')
FUZZ_DEP_TOKEN=$(api POST /dep-tokens '{"name": "fuzz"}')
FUZZ_TEMPLATE=$(api POST "/dep-tokens/$FUZZ_DEP_TOKEN/templates" "{\"name\": \"fuzz\", \"tenant_id\": \"$FUZZ_TENANT\"}")
FUZZ_API_TOKEN=$(api POST /tokens "{\"name\": \"spare\", \"role\": \"viewer\", \"tenant_id\": \"$FUZZ_TENANT\"}")
FUZZ_ROLE_MAPPING=$(api POST /role-mappings \
  "{\"claim\": \"groups\", \"value\": \"fuzz\", \"role\": \"viewer\", \"tenant_id\": \"$FUZZ_TENANT\"}")
cat > "$dir/schemathesis.toml" <<'TOML'
# Crash cache in target/, not in the working tree.
[cache]
directory = "${FUZZ_CACHE_DIR}"

[[operations]]
include-path-regex = "^/api/v1/devices/\\{id\\}"
parameters = { "path.id" = "${FUZZ_DEVICE}" }

[[operations]]
include-path-regex = "^/api/v1/tenants/\\{id\\}"
parameters = { "path.id" = "${FUZZ_TENANT}" }

[[operations]]
include-path-regex = "^/api/v1/dep-tokens/\\{id\\}"
parameters = { "path.id" = "${FUZZ_DEP_TOKEN}" }

[[operations]]
include-path-regex = "^/api/v1/dep-templates/\\{id\\}"
parameters = { "path.id" = "${FUZZ_TEMPLATE}" }

[[operations]]
include-path-regex = "^/api/v1/tokens/\\{id\\}"
parameters = { "path.id" = "${FUZZ_API_TOKEN}" }

[[operations]]
include-path-regex = "^/api/v1/role-mappings/\\{id\\}"
parameters = { "path.id" = "${FUZZ_ROLE_MAPPING}" }
TOML

# The stateful phase is left out: it needs OpenAPI links, which the document does not define.
"$dir/venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$base/api/v1/openapi.json" \
  --url "$base" \
  --tls-verify "$dir/data/server-ca.pem" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --seed "${FUZZ_SEED:-1}" \
  --generation-database none \
  --request-timeout 30 \
  --report junit --report-dir "$dir/report" \
  "$@"
