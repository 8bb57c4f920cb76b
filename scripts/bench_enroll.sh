#!/usr/bin/env bash
# Enrolment throughput through the REST API: create N identities and upload one LFW photo
# each, over HTTP on 127.0.0.1, with C concurrent clients (curl), against `facestream serve`
# on a fresh gallery.   scripts/bench_enroll.sh [LFW_IMAGES] [N=300] [C=2]
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-../shared/datasets/lfw-gray/images}
n=${2:-300}
c=${3:-2}
work=$(mktemp -d)
trap 'kill $API_PID 2>/dev/null || true; rm -rf "$work"' EXIT
key=bench-admin-key-0123456789
source scripts/lib/api_server.sh
start_api_server "$work" "$key"
port=$API_PORT
ls "$images" | sed -n "1,${n}p" | while read -r person; do
  echo "$images/$person/$(ls "$images/$person" | sed -n 1p)"
done > "$work/photos"
enrol() {
  id=$(curl -sf -H "Authorization: Bearer $2" -H 'content-type: application/json' \
    -d "{\"name\":\"$(basename "$(dirname "$1")")\"}" "http://127.0.0.1:$3/v1/identities" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $2" --data-binary @"$1" \
    "http://127.0.0.1:$3/v1/identities/$id/faces"
}
export -f enrol
start=$(date +%s.%N)
xargs -P "$c" -I{} bash -c 'enrol "$@"' _ {} "$key" "$port" < "$work/photos" > "$work/codes"
end=$(date +%s.%N)
ok=$(grep -c '^201$' "$work/codes" || true)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "enrolled $ok of $(wc -l < "$work/photos") photos (others: $(grep -v '^201$' "$work/codes" | sort | uniq -c | tr '\n' ' '))"
python3 -c "print(f'throughput: {$ok/($end-$start):.1f} images/s with $c clients ({$end-$start:.1f} s)')"
