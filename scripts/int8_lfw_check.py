#!/usr/bin/env python3
"""LFW 1:1 with the f32 and the int8 SFace side by side, and mixed (BENCHMARKS.md 2.1).

Every image is detected and aligned once (OpenCV's FaceDetectorYN on the prepared YuNet,
FaceRecognizerSF.alignCrop; the face nearest the centre), then embedded by both SFace
files on OpenVINO (f32 hint, 1 thread). Prints the cosine between the two embeddings of
the same image, and 10-fold accuracy (LFW protocol) for f32 pairs, int8 pairs and mixed
pairs (first image f32, as an enrolled template; second int8, as a probe) - whether
templates stay comparable when `inference.precision` changes.

    .cache/venv/bin/python scripts/int8_lfw_check.py ../shared/datasets/lfw-gray
"""
import sys

import cv2
import numpy as np
import openvino as ov

M = ".cache/models"
L = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/lfw-gray"
det = cv2.FaceDetectorYN.create(M + "/yunet_2023mar_fp32.onnx", "", (250, 250), 0.6)
rec = cv2.FaceRecognizerSF.create(M + "/sface_2021dec_fp32.onnx", "")
core = ov.Core(); cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
nets = {p: core.compile_model(f"{M}/sface_2021dec_{p}.onnx", "CPU", cfg) for p in ("fp32", "int8")}
lines = open(L + "/pairs.txt").read().split("\n")[1:]
pairs = []
for l in lines:
    t = l.split()
    if len(t) == 3: pairs.append(((t[0], int(t[1])), (t[0], int(t[2])), 1))
    elif len(t) == 4: pairs.append(((t[0], int(t[1])), (t[2], int(t[3])), 0))
cache = {}
def emb(key):
    if key in cache: return cache[key]
    img = cv2.imread(f"{L}/images/{key[0]}/{key[0]}_{key[1]:04d}.jpg")
    det.setInputSize((img.shape[1], img.shape[0])); _, f = det.detect(img)
    if f is None: crop = cv2.resize(img[61:189, 61:189], (112, 112))
    else:
        c = np.array([(r[0] + r[2] / 2 - 125) ** 2 + (r[1] + r[3] / 2 - 125) ** 2 for r in f])
        crop = rec.alignCrop(img, f[c.argmin()])
    x = crop[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    out = {}
    for p, n in nets.items():
        e = np.asarray(n(x)[0])[0]; out[p] = e / np.linalg.norm(e)
    cache[key] = out; return out
s = {k: [] for k in ("fp32", "int8", "mixed")}; y = []
for a, b, same in pairs:
    ea, eb = emb(a), emb(b)
    s["fp32"].append(ea["fp32"] @ eb["fp32"]); s["int8"].append(ea["int8"] @ eb["int8"])
    s["mixed"].append(ea["fp32"] @ eb["int8"]); y.append(same)
y = np.array(y)
cross = np.array([c["fp32"] @ c["int8"] for c in cache.values()])
print(f"images {len(cache)}: cosine(f32, int8) of the same image: min {cross.min():.4f} p1 {np.percentile(cross,1):.4f} mean {cross.mean():.4f}")
def tenfold(sc):
    sc = np.array(sc); acc = []
    for k in range(10):
        test = np.zeros(len(y), bool); test[k * 600:(k + 1) * 600] = True
        ths = np.sort(sc[~test]); best = max(ths, key=lambda t: np.mean((sc[~test] >= t) == y[~test]))
        acc.append(np.mean((sc[test] >= best) == y[test]))
    return np.mean(acc) * 100, np.std(acc) * 100
for k, v in s.items():
    m, sd = tenfold(v); print(f"{k}: 10-fold accuracy {m:.2f}% +- {sd:.2f}")
