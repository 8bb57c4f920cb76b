#!/usr/bin/env python3
"""1:N search: facestream's index next to FAISS IndexFlatIP, same vectors, same run.

    .cache/venv/bin/pip install faiss-cpu==1.13.0   # once (make bench-search does it)
    taskset -c 0 .cache/venv/bin/python scripts/bench_search.py [--sizes 10000,100000,1000000] [--probes 200]

For each gallery size: random 128-d unit vectors (seeded), probes = noisy copies of random
gallery rows (so each has a clear nearest neighbour, like a re-photographed face) plus
pure random vectors (strangers). FAISS runs single-threaded, one probe per call (k=1);
facestream runs `bench-search` (one core) in exact f32 and compact int8+re-rank modes.
Reports per-probe latency, index memory and whether the top-1 results are identical.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--binary", default="target/release/facestream")
    ap.add_argument("--out", default=".cache/bench/search")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        g = rng.standard_normal((n, 128), dtype=np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        half = args.probes // 2
        near = g[rng.integers(0, n, half)] + 0.05 * rng.standard_normal((half, 128), dtype=np.float32)
        far = rng.standard_normal((args.probes - half, 128), dtype=np.float32)
        p = np.concatenate([near, far]).astype(np.float32)
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        gf, pf = f"{args.out}/gallery_{n}.f32", f"{args.out}/probes_{n}.f32"
        g.astype("<f4").tofile(gf)
        p.astype("<f4").tofile(pf)

        index = faiss.IndexFlatIP(128)
        index.add(g)
        times, faiss_top1 = [], []
        for q in p:
            t = time.perf_counter()
            _, ids = index.search(q[None, :], 1)
            times.append((time.perf_counter() - t) * 1e3)
            faiss_top1.append(int(ids[0, 0]))
        times.sort()
        faiss_row = {"n": n, "engine": "faiss IndexFlatIP", "ms_mean": float(np.mean(times)),
                     "ms_p50": times[len(times) // 2], "ms_p99": times[int((len(times) - 1) * 0.99)],
                     "index_bytes": n * 128 * 4, "top1_identical": True}
        del index
        rows.append(faiss_row)
        for mode in ("exact", "compact"):
            top1_file = f"{args.out}/top1_{n}_{mode}.txt"
            out = subprocess.run(
                [args.binary, "bench-search", "--gallery", gf, "--probes", pf,
                 "--mode", mode, "--top1", top1_file],
                check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            ours = [int(x) for x in open(top1_file).read().split()]
            r["engine"] = f"facestream {mode}"
            r["top1_identical"] = ours == faiss_top1
            r["top1_mismatches"] = sum(a != b for a, b in zip(ours, faiss_top1))
            rows.append(r)
        os.remove(gf)
        os.remove(pf)
        for r in rows[-3:]:
            print(f"n={r['n']:>8}  {r['engine']:<20} mean {r['ms_mean']:8.3f} ms  p50 {r['ms_p50']:8.3f}  "
                  f"p99 {r['ms_p99']:8.3f}  index {r['index_bytes'] / 2**20:8.1f} MiB  "
                  f"top-1 identical to FAISS: {r['top1_identical']}", flush=True)
    json.dump(rows, open(f"{args.out}/results.json", "w"), indent=1)


if __name__ == "__main__":
    main()
