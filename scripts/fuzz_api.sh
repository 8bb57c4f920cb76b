#!/usr/bin/env bash
# Property-based fuzzing of the REST API from its own OpenAPI document (issue 11 item 4):
# schemathesis (PyPI) generates requests for every operation in /v1/openapi.json — valid
# and invalid bodies, parameters and headers — against a real `facestream serve` (API
# only, empty gallery in a temp folder) and fails on any 5xx or a response that does not
# match the document. Usage: scripts/fuzz_api.sh [MAX_EXAMPLES per operation, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-50}
VENV=${VENV:-.cache/venv}
BIN=${FACESTREAM_BIN:-target/release/facestream}
"$VENV/bin/pip" install -q "schemathesis==4.32.5"
WORK=$(mktemp -d /tmp/facestream-fuzz-api-XXXXXX)
trap 'kill $SERVE 2>/dev/null || true; wait $SERVE 2>/dev/null || true' EXIT
KEY=fuzz-admin-key-0123456789abcdef
cat > "$WORK/config.toml" <<EOT
[gallery]
database = "$WORK/gallery.db"
[api]
listen = "127.0.0.1:0"
keys = [{ name = "fuzz", key = "$KEY", scope = "admin" }]
[events]
outbox = "$WORK/outbox.db"
[demo]
mode = "off"
EOT
"$BIN" --config "$WORK/config.toml" serve 2> "$WORK/serve.log" &
SERVE=$!
PORT=""
for _ in $(seq 1 600); do
  PORT=$(sed -n 's/.*API listening on http:\/\/[^ ]*:\([0-9]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$WORK/serve.log"; echo "serve did not start" >&2; exit 1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) flags: $(grep -o -m1 -w 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
set +e
# positive_data_acceptance is left out: the document can say "a JPEG or PNG", not "a
# decodable photo with one face", so random bytes are schema-valid yet rightly refused
# (400/422); every other check runs, 5xx first among them.
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/v1/openapi.json" \
  --header "Authorization: Bearer $KEY" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$MAX" \
  --workers 1 \
  --report junit --report-dir "$WORK/report" \
  | tee "$WORK/schemathesis.txt"
RC=${PIPESTATUS[0]}
set -e
if ! kill -0 $SERVE 2>/dev/null; then
  echo "facestream serve died during the run:" >&2; tail -20 "$WORK/serve.log" >&2; exit 1
fi
grep -c " 5[0-9][0-9] " "$WORK/serve.log" >/dev/null && echo "server errors logged: $(grep -c ' 5[0-9][0-9] ' "$WORK/serve.log")" || true
echo "report: $WORK (schemathesis exit $RC)"
exit $RC
