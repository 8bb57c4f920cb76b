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
"$VENV/bin/pip" install -q "schemathesis==4.32.5"
WORK=$(mktemp -d /tmp/facestream-fuzz-api-XXXXXX)
trap 'kill $API_PID 2>/dev/null || true; wait $API_PID 2>/dev/null || true' EXIT
KEY=fuzz-admin-key-0123456789abcdef
source scripts/lib/api_server.sh
start_api_server "$WORK" "$KEY"
PORT=$API_PORT
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
if ! kill -0 $API_PID 2>/dev/null; then
  echo "facestream serve died during the run:" >&2; tail -20 "$WORK/serve.log" >&2; exit 1
fi
echo "report: $WORK (schemathesis exit $RC)"
exit $RC
