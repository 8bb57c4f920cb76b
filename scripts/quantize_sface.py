#!/usr/bin/env python3
"""Add a post-training-quantized int8 SFace to the prepared models (`make models`).

Runs after `prepare_models.py`, in the set-up's virtualenv, offline:

1. calibration faces: every face YuNet (the prepared fp32 file, run by OpenCV's
   `FaceDetectorYN`) finds in the pinned test photos of `make fixtures`, aligned to the
   112x112 template by `FaceRecognizerSF.alignCrop` (the template facestream aligns to),
   each in eight forms a camera produces: as is, mirrored, darker, brighter, blurred,
   shrunk to 40 px and blown up again, JPEG quality 30, grey;
2. ONNX Runtime's static quantizer (QDQ format, per-channel symmetric int8 weights,
   asymmetric uint8 activations, min/max ranges) on the fp32 SFace, with the first
   convolution and the first depthwise convolution kept in fp32: quantized alone, the
   first cost 0.13 of mean cosine to the fp32 embedding on these faces, the second 0.014,
   every later layer under 0.005 (BENCHMARKS.md section 2.1);
3. check: cosine between the int8 and the fp32 embedding of every calibration face,
   refused below `MIN_COSINE`;
4. record it as `models.sface.variants.int8` in `manifest.json`, with its sha256 (the
   Rust side refuses a mismatch, as for every model file), the fp32 file it was made
   from and the cosine check.

`inference.precision = "int8"` selects it (src/engine). The ranges come from inference,
so the file can differ in its last bits between CPU kinds; its sha256 is taken on the
machine that made it. Idempotent: nothing is done when the variant exists, matches its
sha256 and was made from the current fp32 file.
"""
import argparse
import glob
import json
import os
import sys
import tempfile

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from prepare_models import sha256_file

# Kept in fp32 (see step 2 of the docstring).
EXCLUDED_NODES = ["conv_1_conv2d", "conv_2_dw_conv2d"]
# Below this cosine to the fp32 embedding on any calibration face the variant is refused.
MIN_COSINE = 0.9
# Bump when the recipe changes, so existing variants are made again.
RECIPE_VERSION = 1


def calibration_faces(fixtures, detector_path, recognizer_path):
    detector = cv2.FaceDetectorYN.create(detector_path, "", (320, 320), 0.7)
    aligner = cv2.FaceRecognizerSF.create(recognizer_path, "")
    crops = []
    for path in sorted(glob.glob(os.path.join(fixtures, "*"))):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            continue
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        for face in faces if faces is not None else []:
            crops.append(aligner.alignCrop(image, face))
    return crops


def camera_forms(crop):
    """The crop as a camera may deliver it."""
    small = cv2.resize(crop, (40, 40), interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 30])
    grey = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return [
        crop,
        np.ascontiguousarray(crop[:, ::-1]),
        np.clip(crop.astype(np.float32) * 0.6, 0, 255).astype(np.uint8),
        np.clip(crop.astype(np.float32) * 1.5, 0, 255).astype(np.uint8),
        cv2.GaussianBlur(crop, (0, 0), 1.2),
        cv2.resize(small, (112, 112), interpolation=cv2.INTER_LINEAR),
        cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
        grey,
    ]


def tensor(bgr):
    """The embedding stage's input: RGB planar, 0..255 (src/stages/embed)."""
    return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32))


class Faces(CalibrationDataReader):
    def __init__(self, batch, input_name):
        self.rows = iter(batch)
        self.input_name = input_name

    def get_next(self):
        row = next(self.rows, None)
        return None if row is None else {self.input_name: row[None]}


def embeddings(path, batch):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=".cache/models")
    ap.add_argument("--fixtures", default=".cache/fixtures")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--keep-fp32", default=",".join(EXCLUDED_NODES),
                    help="comma-separated nodes left in fp32 (for measuring other recipes)")
    args = ap.parse_args()
    keep_fp32 = [n for n in args.keep_fp32.split(",") if n]
    manifest_path = os.path.join(args.models, "manifest.json")
    manifest = json.load(open(manifest_path))
    sface = manifest["models"]["sface"]
    fp32 = os.path.join(args.models, sface["file"])
    variant = sface.get("variants", {}).get("int8")
    if (not args.force and variant and variant.get("recipe") == RECIPE_VERSION
            and variant.get("source_sha256") == sface["sha256"]
            and variant.get("kept_fp32") == keep_fp32
            and os.path.exists(os.path.join(args.models, variant["file"]))
            and sha256_file(os.path.join(args.models, variant["file"])) == variant["sha256"]):
        print(f"int8: {variant['file']} is up to date")
        return
    detector = os.path.join(args.models, manifest["models"]["yunet"]["file"])
    crops = calibration_faces(args.fixtures, detector, fp32)
    if len(crops) < 8:
        sys.exit(f"int8: only {len(crops)} faces in {args.fixtures}; run `make fixtures`")
    batch = np.concatenate([tensor(form) for crop in crops for form in camera_forms(crop)])
    out_name = sface["file"].replace("_fp32.onnx", "_int8.onnx")
    out = os.path.join(args.models, out_name)
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and Conv+BatchNormalization folding, as the quantizer expects.
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)
        quantize_static(pre, out + ".tmp", Faces(batch, sface["input"]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=["Conv", "Gemm"],
                        nodes_to_exclude=keep_fp32,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    cosine = (embeddings(fp32, batch) * embeddings(out + ".tmp", batch)).sum(axis=1)
    if cosine.min() < MIN_COSINE:
        os.remove(out + ".tmp")
        sys.exit(f"int8: cosine to fp32 {cosine.min():.4f} on a calibration face is under {MIN_COSINE}")
    os.replace(out + ".tmp", out)
    sface.setdefault("variants", {})["int8"] = {
        "file": out_name,
        "sha256": sha256_file(out),
        "precision": "int8",
        "recipe": RECIPE_VERSION,
        "source_sha256": sface["sha256"],
        "quantizer": f"onnxruntime {ort.__version__} quantize_static, QDQ, per-channel int8 "
                     f"weights, uint8 activations, MinMax",
        "calibration_faces": len(crops),
        "calibration_inputs": int(batch.shape[0]),
        "kept_fp32": keep_fp32,
        "cosine_vs_fp32": {"min": round(float(cosine.min()), 4),
                           "mean": round(float(cosine.mean()), 4)},
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(manifest_path + ".tmp", manifest_path)
    print(f"int8: wrote {out_name} from {len(crops)} faces x 8 forms; cosine to fp32 "
          f"min {cosine.min():.4f} mean {cosine.mean():.4f}")


if __name__ == "__main__":
    main()
