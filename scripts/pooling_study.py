#!/usr/bin/env python3
"""How should an identity's several enrolment faces make its score? (BENCHMARKS.md 3.4)

Reads the embeddings `facestream eval lfw-identify --embeddings FILE` writes (every LFW
photo as taken and as its low-quality copy, with the quality score facestream gave each)
and runs a multi-photo enrolment protocol on them:

- people with at least 4 photos enrol their first 3; each enrolment photo is taken as it
  is or as its low-quality copy, chosen by a fixed hash of its file name with probability
  `--poor-share` ("a few photos each, some of them poor");
- probes: those people's other photos (mated) and every photo of the people with fewer
  than 4 (strangers, open-set), once as taken (high) and once as the copy (low);
- per rule: rank-1, and FNIR at FPIR 1 % and 0.1 % (rank 1, as in eval lfw-identify),
  on the raw cosine.

Rules: `max` (closest template, facestream's `gallery.pooling = "max"`), the mean score,
the plain mean template, the quality-weighted mean template (`"quality_mean"`, weights
max(quality, 0.05) as in src/gallery/index.rs), weights squared, and refusing enrolment
faces under a quality (`gallery.min_enroll_quality`) before the weighted mean.

    make bench-identify   # or: facestream eval lfw-identify ... --embeddings emb.jsonl
    .cache/venv/bin/python scripts/pooling_study.py emb.jsonl --poor-share 0.34
"""
import argparse
import json
import zlib
from collections import defaultdict

import numpy as np

from opencv_identify_reference import fnir_at_fpir

ENROLLED_PHOTOS = 3
MIN_WEIGHT = 0.05  # gallery::index::MIN_POOLING_WEIGHT


def load(path):
    by = defaultdict(dict)
    for line in open(path):
        r = json.loads(line)
        by[(r["person"], r["file"])][r["variant"]] = (np.array(r["embedding"], np.float32),
                                                      r["quality"])
    return by


def fnir_at(correct, score, stranger_scores, fpir):
    return fnir_at_fpir(correct, score, stranger_scores, fpir)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("embeddings")
    ap.add_argument("--poor-share", type=float, default=0.34)
    args = ap.parse_args()
    by = load(args.embeddings)
    people = defaultdict(list)
    for person, file in sorted(by):
        if {"high", "low"} <= by[(person, file)].keys():
            people[person].append(file)
    gallery, gallery_q, gallery_id, probes = [], [], [], []
    identities = 0
    for person in sorted(people):
        files = people[person]
        enrolled = len(files) > ENROLLED_PHOTOS
        for i, file in enumerate(files):
            photo = by[(person, file)]
            if enrolled and i < ENROLLED_PHOTOS:
                poor = (zlib.crc32(file.encode()) % 1000) / 1000 < args.poor_share
                e, q = photo["low" if poor else "high"]
                gallery.append(e)
                gallery_q.append(q)
                gallery_id.append(identities)
            else:
                probes.append((identities if enrolled else -1, photo))
        identities += enrolled
    G, qg, gid = np.stack(gallery), np.array(gallery_q), np.array(gallery_id)
    truth = np.array([t for t, _ in probes])
    mated = truth >= 0
    print(f"{identities} identities x {ENROLLED_PHOTOS} photos ({np.mean(qg < 0.5) * 100:.0f} % "
          f"of them under quality 0.5, poor share {args.poor_share}); {mated.sum()} mated probes, "
          f"{(~mated).sum()} strangers")

    def report(name, scores_of):
        cells = []
        for variant in ("high", "low"):
            P = np.stack([photo[variant][0] for _, photo in probes])
            S = scores_of(P)
            best = S.argmax(1)
            top = S[np.arange(len(P)), best]
            ok = best == truth
            cells.append(f"{variant} probes: rank-1 {np.mean(ok[mated]) * 100:6.2f}  "
                         f"FNIR@1% {fnir_at(ok[mated], top[mated], top[~mated], 1e-2) * 100:6.2f}  "
                         f"FNIR@0.1% {fnir_at(ok[mated], top[mated], top[~mated], 1e-3) * 100:6.2f}")
        print(f"{name:<34} " + " | ".join(cells), flush=True)

    def per_identity(P, reduce):
        S = P @ G.T
        out = np.full((len(P), identities), -2.0, np.float32)
        for i in range(identities):
            out[:, i] = reduce(S[:, gid == i])
        return out

    def mean_template(weight, min_quality=0.0):
        C = np.zeros((identities, G.shape[1]), np.float32)
        for i in range(identities):
            rows = (gid == i) & (qg >= min_quality)
            if not rows.any():
                continue  # every face refused: the identity is not enrolled
            c = (G[rows] * weight(qg[rows])[:, None]).sum(0)
            C[i] = c / np.linalg.norm(c)
        return lambda P: P @ C.T

    report('max (gallery.pooling = "max")', lambda P: per_identity(P, lambda s: s.max(1)))
    report("mean score", lambda P: per_identity(P, lambda s: s.mean(1)))
    report("mean template", mean_template(np.ones_like))
    report('quality-weighted mean ("quality_mean")',
           mean_template(lambda q: np.maximum(q, MIN_WEIGHT)))
    report("quality^2-weighted mean", mean_template(lambda q: np.maximum(q, MIN_WEIGHT) ** 2))
    for q0 in (0.2, 0.3, 0.5):
        share = np.mean(qg < q0) * 100
        report(f"refuse under {q0} ({share:.1f} %), then weighted",
               mean_template(lambda q: np.maximum(q, MIN_WEIGHT), q0))


if __name__ == "__main__":
    main()
