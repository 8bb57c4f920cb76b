# Sourced by the API scripts (bench_enroll.sh, fuzz_api.sh): start `facestream serve` with
# the API only (no cameras, no demo, a fresh gallery and outbox in $1) and one admin key
# ($2), on a port the service picks itself; sets API_PORT and API_PID once /v1/ready
# answers. The caller stops it (kill "$API_PID").
start_api_server() {
  local work=$1 key=$2 bin=${FACESTREAM_BIN:-target/release/facestream}
  cat > "$work/config.toml" <<TOML
[gallery]
database = "$work/gallery.db"
[api]
listen = "127.0.0.1:0"
keys = [{ name = "script", key = "$key", scope = "admin" }]
[events]
outbox = "$work/outbox.db"
[demo]
mode = "off"
TOML
  "$bin" --config "$work/config.toml" serve 2> "$work/serve.log" &
  API_PID=$!
  API_PORT=""
  for _ in $(seq 1 600); do
    API_PORT=$(sed -n 's/.*API listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' "$work/serve.log" | head -1)
    [ -n "$API_PORT" ] && break
    kill -0 "$API_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$API_PORT" ]; then
    cat "$work/serve.log" >&2
    echo "facestream serve did not start" >&2
    return 1
  fi
  until curl -sf "http://127.0.0.1:$API_PORT/v1/ready" >/dev/null; do sleep 0.2; done
}
