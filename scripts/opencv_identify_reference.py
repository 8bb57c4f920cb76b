#!/usr/bin/env python3
"""OpenCV's own YuNet + SFace (cv2.FaceDetectorYN / cv2.FaceRecognizerSF, used as
../shared/bench/opencv_reference.py uses them) on facestream's open-set 1:N protocol,
split by image quality. The yardstick for `facestream eval lfw-identify --reference`.

    opencv_identify_reference.py IMAGES LOW_IMAGES YUNET.onnx SFACE.onnx --report ref.json

IMAGES is an LFW-style folder (<Name>/<Name>_NNNN.jpg); LOW_IMAGES its low-quality
copies made by `facestream eval degrade` (same layout plus DEGRADE.json), so both tools
analyse the same pixels. Protocol, written independently of facestream's Rust code:
- gallery: the first photo (sorted by file name) of every person with >= 2 photos;
- mated probes: their other photos; non-mated probes: people with a single photo;
- per image: detect, keep the face nearest the image centre (none: LFW's canonical box
  and landmarks scaled to the image, counted as a detector miss), alignCrop, feature,
  L2-normalise;
- splits: high_high (high probes, high gallery), low_high (low probes, high gallery),
  low_low (both low);
- rank-1: mated probes whose best gallery identity is right;
- FNIR at FPIR x: threshold = the (floor(x * n_non_mated) + 1)-th highest non-mated
  rank-1 score; a probe is accepted when its rank-1 score is strictly above it; FNIR =
  share of mated probes not accepted with the right identity.
"""
import argparse, json, os, time
import numpy as np, cv2

CANONICAL = np.array([68, 68, 114, 114, 106, 110, 144, 110, 125, 132, 110, 155, 140, 155], np.float32)


def list_people(root):
    people = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isdir(d):
            files = sorted(f for f in os.listdir(d) if not f.startswith('.'))
            if files:
                people.append((name, files))
    return people


def fnir_at_fpir(mated_ok, mated_score, non_mated, fpir):
    nm = np.sort(non_mated)[::-1]
    allowed = int(np.floor(fpir * len(nm)))
    t = nm[allowed] if allowed < len(nm) else -np.inf
    return float(1.0 - np.mean(mated_ok & (mated_score > t))), float(t)


def split_metrics(mated_ok, mated_score, non_mated):
    f2, t2 = fnir_at_fpir(mated_ok, mated_score, non_mated, 1e-2)
    f3, t3 = fnir_at_fpir(mated_ok, mated_score, non_mated, 1e-3)
    det = []
    for k in range(41):
        fnir, t = fnir_at_fpir(mated_ok, mated_score, non_mated, 10 ** (-4 + 0.1 * k))
        det.append((float(np.mean(non_mated > t)), fnir))
    return dict(mated_probes=int(len(mated_ok)), non_mated_probes=int(len(non_mated)),
                rank1=float(np.mean(mated_ok)), fnir_at_fpir_1e2=f2, fnir_at_fpir_1e3=f3,
                threshold_at_fpir_1e2=t2, threshold_at_fpir_1e3=t3, det=det)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('images'); ap.add_argument('low_images'); ap.add_argument('yunet'); ap.add_argument('sface')
    ap.add_argument('--threads', type=int, default=0, help='cv2.setNumThreads; 0 = OpenCV default')
    ap.add_argument('--max-people', type=int, default=0, help='first N people only (quick runs)')
    ap.add_argument('--report', default='opencv-identify.json')
    a = ap.parse_args()
    if a.threads:
        cv2.setNumThreads(a.threads)
    low_quality = json.load(open(os.path.join(a.low_images, 'DEGRADE.json')))
    det = cv2.FaceDetectorYN.create(a.yunet, '', (320, 320), 0.6, 0.3, 5000)
    rec = cv2.FaceRecognizerSF.create(a.sface, '')
    people = list_people(a.images)
    if a.max_people:
        people = people[:a.max_people]
    misses, busy, count = {'high': 0, 'low': 0}, 0.0, 0

    def embed(path, variant):
        nonlocal busy, count
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        t0 = time.perf_counter()
        h, w = img.shape[:2]
        det.setInputSize((w, h))
        _, faces = det.detect(img)
        if faces is None or len(faces) == 0:
            misses[variant] += 1
            faces = np.array([np.append(CANONICAL * (w / 250.0), 0.0)], np.float32)
        centre = np.array([w / 2, h / 2])
        face = min(faces, key=lambda f: np.linalg.norm(f[0:2] + f[2:4] / 2 - centre))
        v = rec.feature(rec.alignCrop(img, face)).flatten()
        busy += time.perf_counter() - t0
        count += 1
        return v / np.linalg.norm(v)

    # (identity index or -1, is gallery, high embedding, low embedding)
    photos, identities = [], 0
    for name, files in people:
        enrolled = len(files) >= 2
        for i, f in enumerate(files):
            photos.append((identities if enrolled else -1, enrolled and i == 0,
                           embed(os.path.join(a.images, name, f), 'high'),
                           embed(os.path.join(a.low_images, name, f), 'low')))
        identities += enrolled
    splits = {}
    for split, probe_v, gallery_v in [('high_high', 2, 2), ('low_high', 3, 2), ('low_low', 3, 3)]:
        gallery = [p for p in photos if p[1]]
        g = np.stack([p[gallery_v] for p in gallery])
        g_id = np.array([p[0] for p in gallery])
        probes = [p for p in photos if not p[1]]
        scores = np.stack([p[probe_v] for p in probes]) @ g.T
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(probes)), best]
        truth = np.array([p[0] for p in probes])
        mated = truth >= 0
        ok = g_id[best] == truth
        splits[split] = split_metrics(ok[mated], top[mated], top[~mated])
    report = dict(splits=splits, detector_misses_high=misses['high'], detector_misses_low=misses['low'],
                  seconds_per_image=busy / max(count, 1), low_quality=low_quality,
                  opencv_version=cv2.__version__, threads=a.threads, max_people=a.max_people)
    json.dump(report, open(a.report, 'w'), indent=1)
    print(f"gallery={identities} identities  detector misses high={misses['high']} low={misses['low']}  "
          f"seconds/image={busy / max(count, 1):.4f} (OpenCV {cv2.__version__})")
    for k, s in splits.items():
        print(f"{k:<10} mated={s['mated_probes']} non-mated={s['non_mated_probes']}  rank-1={s['rank1'] * 100:.2f}%  "
              f"FNIR@FPIR1%={s['fnir_at_fpir_1e2'] * 100:.2f}%  FNIR@FPIR0.1%={s['fnir_at_fpir_1e3'] * 100:.2f}%")
    print(f'report: {a.report}')


if __name__ == '__main__':
    main()
