#!/usr/bin/env python3
"""Appearance search at 1,000,000 appearances: facestream's history next to FAISS
IndexFlatIP, same vectors, same run, one core.

    make bench-history        # installs faiss-cpu into the venv, pins to core 0

Appearances: random 128-d unit vectors (seeded), in time order over 7 days. Probes: noisy
copies of random appearances (a re-photographed face: one clear match each), half of them
from the last hour, plus as many pure random vectors (strangers, no match). The question
asked is the service's: every appearance at or above the bar (cosine 0.5, match.threshold),
so FAISS runs `range_search` (radius 0.5), one probe per call; for the last-hour window it
gets an `IDSelectorRange` over that hour's rows (the rows are in time order). facestream
runs `facestream bench-history`: the same vectors written to a history file, its index
built from the file as `serve` does at start, then whole-history searches (newest first,
and by similarity) and last-hour searches. The rows each engine found over the whole
history are compared.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np


def cpu():
    info = open("/proc/cpuinfo").read()
    model = info.split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    flags = info.split("flags", 1)[1].split("\n")[0].split()
    return model, [f for f in ("avx2", "avx512f", "avx512_vnni") if f in flags]


def summary(times):
    times = sorted(times)
    return {"ms_mean": float(np.mean(times)), "ms_p50": times[len(times) // 2],
            "ms_p99": times[int((len(times) - 1) * 0.99)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--span-days", type=float, default=7.0)
    ap.add_argument("--binary", default="target/release/facestream")
    ap.add_argument("--out", default=".cache/bench/history")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    model, flags = cpu()
    print(f"machine: {model}, {os.cpu_count()} cores (pinned to one), flags: {' '.join(flags)}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(11)
    n = args.n
    g = rng.standard_normal((n, 128), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    per_hour = n / (args.span_days * 24)
    last_hour = (int(n - per_hour), n)
    half = args.probes // 2
    src = np.concatenate([rng.integers(0, n, half // 2), rng.integers(last_hour[0], n, half - half // 2)])
    near = g[src] + 0.05 * rng.standard_normal((half, 128), dtype=np.float32)
    far = rng.standard_normal((args.probes - half, 128), dtype=np.float32)
    p = np.concatenate([near, far]).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    gf, pf = f"{args.out}/appearances.f32", f"{args.out}/probes.f32"
    g.astype("<f4").tofile(gf)
    p.astype("<f4").tofile(pf)

    index = faiss.IndexFlatIP(128)
    index.add(g)
    rows = {}
    times, found = [], []
    for q in p:
        t = time.perf_counter()
        lims, _, ids = index.range_search(q[None, :], 0.5)
        times.append((time.perf_counter() - t) * 1e3)
        found.append(sorted(int(i) for i in ids[lims[0]:lims[1]]))
    rows["faiss_all"] = {**summary(times), "results": sum(len(f) for f in found)}
    try:
        params = faiss.SearchParameters(sel=faiss.IDSelectorRange(*last_hour))
        times, hits = [], 0
        for q in p:
            t = time.perf_counter()
            lims, _, _ = index.range_search(q[None, :], 0.5, params=params)
            times.append((time.perf_counter() - t) * 1e3)
            hits += int(lims[1] - lims[0])
        rows["faiss_window"] = {**summary(times), "results": hits}
    except Exception as e:  # an older FAISS without selectors on range_search
        rows["faiss_window"] = {"error": str(e)}
    del index

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        found_file = f"{tmp}/found.txt"
        out = subprocess.run(
            [args.binary, "bench-history", "--appearances", gf, "--probes", pf, "--db", f"{tmp}/history.db",
             "--span-days", str(args.span_days), "--window-hours", "1", "--found", found_file],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(out.strip().splitlines()[-1])
        ours_found = [sorted(int(x) for x in line.split()) for line in open(found_file).read().split("\n")[:len(p)]]
    same = sum(a == b for a, b in zip(ours_found, found))
    os.remove(gf)
    os.remove(pf)
    result = {"machine": model, "flags": flags, "n": n, "probes": len(p), "faiss": rows, "facestream": ours,
              "probes_with_identical_results": same, "faiss_index_bytes": n * 128 * 4}
    json.dump(result, open(f"{args.out}/results.json", "w"), indent=1)
    print(json.dumps(result, indent=1))
    fa, fw = rows["faiss_all"], rows["faiss_window"]
    print(f"\n| search over {n:,} appearances, one core | mean | p50 | p99 | results |")
    print("|---|---|---|---|---|")
    print(f"| FAISS IndexFlatIP range_search ≥ 0.5 | {fa['ms_mean']:.1f} ms | {fa['ms_p50']:.1f} | {fa['ms_p99']:.1f} | {fa['results']} |")
    for label, key in [("facestream, whole history, newest first", "all_newest"),
                       ("facestream, whole history, by similarity", "all_similarity")]:
        r = ours[key]
        print(f"| {label} | {r['ms_mean']:.1f} ms | {r['ms_p50']:.1f} | {r['ms_p99']:.1f} | {r['results']} |")
    if "ms_mean" in fw:
        print(f"| FAISS, last hour (IDSelectorRange) | {fw['ms_mean']:.2f} ms | {fw['ms_p50']:.2f} | {fw['ms_p99']:.2f} | {fw['results']} |")
    r = ours["window_newest"]
    print(f"| facestream, last hour | {r['ms_mean']:.2f} ms | {r['ms_p50']:.2f} | {r['ms_p99']:.2f} | {r['results']} |")
    print(f"\nidentical result sets: {same} of {len(p)} probes; facestream index {ours['rss_growth_kib'] / 1024:.0f} MiB "
          f"(FAISS {n * 512 / 2**20:.0f} MiB), history file {ours['file_bytes'] / 2**20:.0f} MiB, "
          f"written in {ours['write_s']} s, index built from it in {ours['build_s']} s")


if __name__ == "__main__":
    main()
