#!/usr/bin/env python3
"""Produce the LiteRT (TFLite) embedding model from the prepared ONNX (`make models-tflite`).

Runs in its own virtualenv (`.cache/venv-tflite`: onnx2tf==1.29.24 with the TensorFlow it
pins, ~2.6 GB), so the default set-up stays light. Converts `sface` with onnx2tf (NCHW →
NHWC, batch dimension left dynamic), checks the float32 .tflite against the ONNX model on
ONNX Runtime (cosine ≥ 0.99999 on random and batch-3 inputs), and records the file under
`models.sface.variants.tflite` in `.cache/models/manifest.json` with its sha256 — the Rust
side verifies that hash before LiteRT loads it. Idempotent: a recorded variant whose hash
matches is left alone.

The detector stays ONNX: YuNet's spatial dimensions are dynamic and its 12 outputs share
shapes, which a fixed-size TFLite conversion without output names cannot keep apart; on a
LiteRT build detection runs on the next usable backend (`facestream backends` says which).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

CONVERTER = "onnx2tf==1.29.24"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=".cache/models")
    args = ap.parse_args()
    manifest_path = os.path.join(args.models, "manifest.json")
    manifest = json.load(open(manifest_path))
    entry = manifest["models"]["sface"]
    variant = entry.get("variants", {}).get("tflite")
    if variant:
        path = os.path.join(args.models, variant["file"])
        if (os.path.exists(path) and sha256_file(path) == variant["sha256"]
                and variant.get("source_sha256") == entry["sha256"]):
            print(f"tflite: {variant['file']} is up to date")
            return
    onnx_path = os.path.join(args.models, entry["file"])
    out_name = entry["file"].replace(".onnx", ".tflite")
    with tempfile.TemporaryDirectory() as tmp:
        # onnx2tf rewrites its input in place (onnxsim); give it a copy so the prepared
        # model keeps the hash the manifest records.
        work = os.path.join(tmp, os.path.basename(onnx_path))
        shutil.copyfile(onnx_path, work)
        subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "onnx2tf"), "-i", work,
             "-o", os.path.join(tmp, "out"), "-ois", "data:1,3,112,112", "-n"],
            check=True, stdout=subprocess.DEVNULL)
        produced = os.path.join(tmp, "out", os.path.basename(onnx_path).replace(".onnx", "_float32.tflite"))
        shutil.copyfile(produced, os.path.join(args.models, out_name + ".tmp"))
    os.replace(os.path.join(args.models, out_name + ".tmp"), os.path.join(args.models, out_name))

    from ai_edge_litert.interpreter import Interpreter
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    interpreter = Interpreter(model_path=os.path.join(args.models, out_name))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rng = np.random.default_rng(0)
    worst = 1.0
    for batch in (1, 3):
        x = rng.uniform(0, 255, size=(batch, 3, 112, 112)).astype(np.float32)
        interpreter.resize_tensor_input(inp["index"], [batch, 112, 112, 3])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x.transpose(0, 2, 3, 1))
        interpreter.invoke()
        a = interpreter.get_tensor(out["index"])
        b = session.run(None, {"data": x})[0]
        for u, v in zip(a, b):
            worst = min(worst, float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))
    if worst < 0.99999:
        sys.exit(f"tflite: {out_name} disagrees with the ONNX model (cosine {worst})")
    entry.setdefault("variants", {})["tflite"] = {
        "file": out_name,
        "sha256": sha256_file(os.path.join(args.models, out_name)),
        "layout": "NHWC",
        "converter": CONVERTER,
        "source_sha256": entry["sha256"],
        "min_cosine_vs_onnx": worst,
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(manifest_path + ".tmp", manifest_path)
    print(f"tflite: wrote {out_name} (cosine vs ONNX ≥ {worst:.7f})")


if __name__ == "__main__":
    main()
