#!/usr/bin/env python3
"""Appearance search at 1,000,000 appearances: facestream's history next to FAISS
IndexFlatIP, same vectors, same run, one core.

    make bench-history        # installs faiss-cpu into the venv, pins to core 0

Two kinds of appearances, each measured in the same run (`--vectors lfw,random`):

- `lfw` (the one that stands for a deployment): embeddings of real faces. Every image of
  LFW (../shared/datasets/lfw-gray, 13,233 images) is embedded once by `facestream embed`
  (cached in the output folder); each image's face is the one nearest the image centre.
  1,000,000 rows need more faces than LFW has, so the rest come from a generator fitted
  to those embeddings, the two-covariance model of face verification (PLDA without the
  projection): identity centres ~ N(mu, Sb), a face of an identity ~ centre + s N(0, Sw),
  normalised; mu, Sb and Sw are estimated from LFW's people with two or more images, and
  s (log-normal per face, E[s^2] = 1: some shots are worse than others) has the width
  that makes the generated genuine pairs as spread as LFW's. The
  script prints how the generator's genuine and impostor similarities compare with the
  real ones (mean, spread, and the share of impostor pairs near the bar), so the fit can
  be judged. The real LFW rows are placed among the generated ones. Probes: 100 real
  images of LFW people whose other images are in the history (held out; half of these
  people appear in the last hour), and 100 real images of people who are not in it.
- `random`: the earlier benchmark's seeded random 128-d unit vectors and noisy copies
  of them as probes. Random vectors sit almost orthogonal to each other (cosine ~ N(0,
  1/128)), so almost nothing comes near the bar and the int8 pre-filter passes almost
  nothing to the exact re-rank; real faces cluster, so it passes far more.

The question asked is the service's: every appearance at or above the bar (cosine 0.5,
match.threshold), so FAISS runs `range_search` (radius 0.5), one probe per call; for the
last-hour window it gets an `IDSelectorRange` over that hour's rows (the rows are in time
order). facestream runs `facestream bench-history`: the same vectors written to a history
file, its index built from the file as `serve` does at start, then whole-history searches
(newest first, and by similarity) and last-hour searches. The rows each engine found over
the whole history are compared.
"""
import argparse
import collections
import json
import os
import subprocess
import tempfile
import time

import numpy as np

LFW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets", "lfw-gray")


def cpu():
    info = open("/proc/cpuinfo").read()
    model = info.split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    flags = info.split("flags", 1)[1].split("\n")[0].split()
    return model, [f for f in ("avx2", "avx512f", "avx512_vnni") if f in flags]


def summary(times):
    times = sorted(times)
    return {"ms_mean": float(np.mean(times)), "ms_p50": times[len(times) // 2],
            "ms_p99": times[int((len(times) - 1) * 0.99)]}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def lfw_embeddings(args):
    """(person per row, unit embeddings) of every LFW image with a face, embedded once."""
    cache = f"{args.out}/lfw_embed.jsonl"
    if not os.path.exists(cache):
        images = os.path.join(os.path.realpath(args.lfw), "images")
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(images) for f in fs if f.endswith(".jpg"))
        listing = f"{args.out}/lfw_list.txt"
        open(listing, "w").write("\n".join(paths) + "\n")
        print(f"embedding {len(paths)} LFW images once (cached in {cache})", flush=True)
        with open(cache + ".part", "w") as out:
            # exit 3: some images had no readable face; their lines say so and are skipped
            code = subprocess.run([args.binary, "embed", "--list", listing], stdout=out).returncode
            if code not in (0, 3):
                raise SystemExit(f"facestream embed failed with exit {code}")
        os.rename(cache + ".part", cache)
    names, rows = [], []
    for line in open(cache):
        image = json.loads(line)
        faces = [f for f in image.get("faces", []) if f.get("embedding")]
        if not faces:
            continue
        cx, cy = image["width"] / 2, image["height"] / 2
        face = min(faces, key=lambda f: (f["box"]["x"] + f["box"]["w"] / 2 - cx) ** 2
                   + (f["box"]["y"] + f["box"]["h"] / 2 - cy) ** 2)
        names.append(os.path.basename(os.path.dirname(image["path"])))
        rows.append(face["embedding"])
    return names, unit(np.array(rows, dtype=np.float64))


def fit(names, x):
    """mu, Sb, Sw of the two-covariance model from the people with two or more images."""
    by = collections.defaultdict(list)
    for i, n in enumerate(names):
        by[n].append(i)
    many = [ix for ix in by.values() if len(ix) >= 2]
    dev, means, inv = [], [], []
    for ix in many:
        m = x[ix].mean(axis=0)
        dev.append(x[ix] - m)
        means.append(m)
        inv.append(1.0 / len(ix))
    dev = np.concatenate(dev)
    sw = dev.T @ dev / (len(dev) - len(many))
    means = np.array(means)
    mu = x.mean(axis=0)
    # a person's mean image carries 1/n of the within-person spread: take it out
    sb = np.cov(means.T) - sw * float(np.mean(inv))
    w, v = np.linalg.eigh(sb)
    sb = (v * np.clip(w, 0, None)) @ v.T
    return mu, sb, sw


def cosine_stats(x, person, rng, pairs=200_000):
    """Genuine and impostor cosine figures over sampled pairs of rows."""
    by = collections.defaultdict(list)
    for i, p in enumerate(person):
        by[p].append(i)
    groups = [ix for ix in by.values() if len(ix) >= 2]
    g = [rng.choice(ix, 2, replace=False) for ix in (groups[k] for k in rng.integers(0, len(groups), pairs // 10))]
    g = np.array(g)
    a, b = rng.integers(0, len(x), pairs), rng.integers(0, len(x), pairs)
    keep = np.array(person)[a] != np.array(person)[b]
    gen = np.einsum("ij,ij->i", x[g[:, 0]], x[g[:, 1]])
    imp = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    return {"genuine_mean": float(gen.mean()), "genuine_std": float(gen.std()),
            "genuine_at_bar": float((gen >= 0.5).mean()),
            "impostor_mean": float(imp.mean()), "impostor_std": float(imp.std()),
            "impostor_p99_9": float(np.quantile(imp, 0.999)),
            "impostor_near_bar": float((imp >= 0.47).mean()), "impostor_at_bar": float((imp >= 0.5).mean())}


def vectors_lfw(args, rng, n, last_hour):
    names, x = lfw_embeddings(args)
    mu, sb, sw = fit(names, x)
    by = collections.defaultdict(list)
    for i, p in enumerate(names):
        by[p].append(i)
    people = sorted(by)
    rng.shuffle(people)
    half = args.probes // 2
    # people with 2 to 20 images: their rows fit in the last hour of a smaller history too
    known = [p for p in people if 2 <= len(by[p]) <= 20][:half]
    strangers = [p for p in people if len(by[p]) == 1][:args.probes - half]
    probe_rows = [by[p][int(rng.integers(0, len(by[p])))] for p in known] + [by[p][0] for p in strangers]
    left_out = set(probe_rows) | {i for p in strangers for i in by[p]}
    real = [i for i in range(len(x)) if i not in left_out]
    recent = {p for p in known[: half // 2]}
    # generated identities: about 10 appearances each (a visitor seen a few times a week)
    k = n // 10
    lb = np.linalg.cholesky(sb + 1e-9 * np.eye(128))
    lw = np.linalg.cholesky(sw + 1e-9 * np.eye(128))
    centres = mu + rng.standard_normal((k, 128)) @ lb.T
    who = rng.integers(0, k, n - len(real))
    g = np.empty((n, 128), dtype=np.float32)
    person = np.empty(n, dtype=object)
    free = np.ones(n, dtype=bool)
    recent_rows = [i for i in real if names[i] in recent]
    other_rows = [i for i in real if names[i] not in recent]
    slots_recent = rng.choice(np.arange(*last_hour), len(recent_rows), replace=False)
    free[slots_recent] = False
    slots_other = rng.choice(np.flatnonzero(free), len(other_rows), replace=False)
    free[slots_other] = False
    for slots, rows in ((slots_recent, recent_rows), (slots_other, other_rows)):
        g[slots] = x[rows]
        person[slots] = [names[i] for i in rows]
    rest = np.flatnonzero(free)
    # faces of one person differ more on some shots than others (pose, light, blur): the
    # within-person spread is scaled per face by s, log-normal with E[s^2] = 1, its width
    # chosen so the generator's genuine spread matches LFW's
    real_stats = cosine_stats(x, names, rng)

    def faces(ids, width, r):
        s = np.exp(width * r.standard_normal((len(ids), 1)) - width ** 2)
        return unit(centres[ids] + s * (r.standard_normal((len(ids), 128)) @ lw.T))

    def genuine_std(width):
        r = np.random.default_rng(5)
        ids = np.repeat(r.integers(0, k, 20_000), 2)
        f = faces(ids, width, r)
        return float(np.einsum("ij,ij->i", f[0::2], f[1::2]).std())

    width = min(np.arange(0.0, 1.01, 0.05), key=lambda w: abs(genuine_std(w) - real_stats["genuine_std"]))
    for start in range(0, len(rest), 100_000):
        part = who[start:start + 100_000]
        g[rest[start:start + 100_000]] = faces(part, width, rng)
    person[rest] = [f"#{w}" for w in who]
    p = x[probe_rows]
    gen_rows = rng.choice(rest, min(200_000, len(rest)), replace=False)
    gen_stats = cosine_stats(g[gen_rows], list(person[gen_rows]), rng)
    info = {"lfw_faces": len(x), "real_rows_in_history": len(real), "generated_rows": len(rest),
            "generated_identities": k, "spread_width": float(width), "fit": {"lfw": real_stats, "generator": gen_stats}}
    print(f"generator fit (cosine over sampled pairs; per-face spread width {width:.2f}):", flush=True)
    for key in real_stats:
        print(f"  {key:>18}: LFW {real_stats[key]:.3g}  generator {gen_stats[key]:.3g}", flush=True)
    expected = {"person": list(person), "probe_people": known + strangers}
    return g, p, info, expected


def vectors_random(args, rng, n, last_hour):
    g = rng.standard_normal((n, 128), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    half = args.probes // 2
    src = np.concatenate([rng.integers(0, n, half // 2), rng.integers(last_hour[0], n, half - half // 2)])
    near = g[src] + 0.05 * rng.standard_normal((half, 128), dtype=np.float32)
    far = rng.standard_normal((args.probes - half, 128), dtype=np.float32)
    p = np.concatenate([near, far]).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return g, p, {}, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--span-days", type=float, default=7.0)
    ap.add_argument("--vectors", default="lfw,random", help="lfw, random, or both (comma-separated)")
    ap.add_argument("--lfw", default=LFW)
    ap.add_argument("--binary", default="target/release/facestream")
    ap.add_argument("--out", default=".cache/bench/history")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    model, flags = cpu()
    print(f"machine: {model}, {os.cpu_count()} cores (pinned to one), flags: {' '.join(flags)}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for kind in args.vectors.split(","):
        print(f"\n== {kind} ==", flush=True)
        results[kind] = one(args, faiss, kind)
    json.dump({"machine": model, "flags": flags, **results}, open(f"{args.out}/results.json", "w"), indent=1)


def one(args, faiss, kind):
    rng = np.random.default_rng(11)
    n = args.n
    per_hour = n / (args.span_days * 24)
    last_hour = (int(n - per_hour), n)
    make = {"lfw": vectors_lfw, "random": vectors_random}[kind]
    g, p, info, expected = make(args, rng, n, last_hour)
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
    result = {"vectors": kind, **info, "n": n, "probes": len(p), "faiss": rows, "facestream": ours,
              "probes_with_identical_results": same, "faiss_index_bytes": n * 128 * 4}
    if expected is not None:
        # what the results mean for the people searched: the known half should find
        # their own held-out images, the strangers should find no one
        person, wanted = expected["person"], expected["probe_people"]
        half = len(p) // 2
        own = [sum(person[r] == wanted[i] for r in ours_found[i]) for i in range(len(p))]
        others = [len(ours_found[i]) - own[i] for i in range(len(p))]
        result["people"] = {
            "known_probes_finding_themselves": sum(o > 0 for o in own[:half]),
            "known_probes": half,
            "known_probes_finding_someone_else": sum(o > 0 for o in others[:half]),
            "stranger_probes_finding_someone": sum(o > 0 for o in others[half:]),
            "stranger_probes": len(p) - half,
        }
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
    return result


if __name__ == "__main__":
    main()
