#!/usr/bin/env python3
"""Faces at surveillance distance on N simultaneous 1080p25 H.264 RTSP cameras.

Starts `facestream simulate-camera` with LFW people crossing a 1080p25 surveillance scene
(`--look surveillance`: textured background, sensor noise in every frame, lighting drift,
blurred faces; faces of 40-70 px and of 100-200 px; two people at once; every fifth
person stops for 3 s), served as N RTSP cameras (the clip encoded once so serving costs
no encoding). Those people are enrolled from a *different* photo each, plus strangers
who are not enrolled. Each configuration runs `facestream serve` for one whole loop of
the clip per camera and reports:

- recall: enrolled appearances with the right `identity.recognized` (or an
  `identity.updated` that resolved them), appearances with a wrong identity, strangers
  matched to someone, appearances with exactly one identity event
  (`identity.recognized` or `identity.unknown`; an `identity.updated` of the same
  appearance is a correction, counted apart), with more than one, with none (scored
  against the simulator's schedule: time since the camera's first frame, and the lane of
  the event's box);

- per camera: decoded fps, analysed (sampled) fps, dropped %;
- end-to-end latency p50/p95 (frame out of the decoder → identity event in the outbox,
  interpolated inside the histogram buckets like PromQL's histogram_quantile);
- CPU: the service process in cores, split into the pipeline stages (time inside each
  stage's handler) and the rest (GStreamer: RTSP, depay, decode, frame copies);
  the simulator's CPU is reported separately;
- baseline, same run: `gst-launch-1.0` receiving and decoding the same N streams and
  throwing the frames away (rtspsrc ! rtph264depay ! h264parse ! avdec_h264 ! fakesink),
  its CPU over the same window length — the floor any RTSP face service pays.

Scenes (`--scenes`, both by default): `walk`, the scene above; `breaks`, the same people
where tracks break as they do in real scenes (turning away for a second, walking out of
the frame and back, passing behind a pillar: see BREAKS), scored the same way; its
configurations are named `breaks:…`.

Configurations, all in one run: an idle camera (nobody in view) against its decode-only
baseline; one camera with each detection mode (`regions`, the default; `downscale`, the
old default; `full`, full resolution on every analysed frame: the recall ceiling, with a
deep frame queue so it drops nothing); then N cameras in `regions` mode. With
`--standing`, also a scene of distant people who stand still from the first frame to the
last (faces of 30-45 px, never moving: motion never points at them), scored as who was
recognised and how long after the camera went live. A `--variant` of a
`cameras.detection` key (e.g. `cameras.detection.sweep_every=0`) applies to the cameras,
and is run on the idle and standing scenes too.

Usage: scripts/bench_cameras.py --lfw ../shared/datasets/lfw-gray/images --cameras 4,6,8
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("FACESTREAM_BIN", "target/release/facestream")
TICK = os.sysconf("SC_CLK_TCK")
# LFW photos are 250 px with the face ~0.42 of it: 95-165 px photos give 40-70 px faces,
# 240-480 px give 100-200 px; six small for every two large.
SCENE = ["--lanes", "2", "--show-seconds", "4", "--gap-seconds", "1", "--hold-every", "5",
         "--hold-seconds", "3", "--photo-heights", "95,120,145,165,110,240,135,480"]
# The same people where tracks break, as they do in real scenes: every third turns their
# back to the camera for a second, every fourth walks out of the frame, stays out 2 s and
# comes back across, and everyone passes behind a 150-px pillar at 30 % of the width.
BREAKS = SCENE + ["--turn-every", "3", "--turn-seconds", "1", "--exit-every", "4",
                  "--exit-seconds", "2", "--pillar", "0.3:150"]
SCENES = {"walk": SCENE, "breaks": BREAKS}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid):
    """CPU seconds per thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return out


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def delta(a, b, key):
    return b.get(key, 0.0) - a.get(key, 0.0)


def quantile(q, a, b, name):
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), delta(a, b, k))
        for k in b
        if k.startswith(name + "_bucket")
    )
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return None


def wait_ready(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/ready", timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise SystemExit("service did not become ready")


def cpu_flags():
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n")[0].split()
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]


def get_json(port, path, key):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


def iso(t):
    from datetime import datetime
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def straddles(a, offset):
    """Whether appearance `a` is in view at clip time `offset` > 0, where a staggered
    camera's stream starts: its two parts would be two appearances, so it is not scored."""
    return offset > 0 and a["start_s"] - 0.8 < offset < a["start_s"] + a["duration_s"] + 0.5


def score(events, schedule, enrolled, t0, offset=0):
    """Score one loop of one camera's events against the schedule; the camera's stream
    starts `offset` seconds into the clip."""
    apps = [a for a in schedule["appearances"] if not straddles(a, offset)]
    per = [[] for _ in apps]
    for e in events:
        if e["type"] not in ("identity.recognized", "identity.unknown", "identity.updated"):
            continue
        off = iso(e["first_seen"]) - t0
        if off < 0 or off >= schedule["duration_s"]:
            continue
        off = (off + offset) % schedule["duration_s"]
        cy = e["box"]["y"] + e["box"]["h"] / 2
        for i, a in enumerate(apps):
            if a["start_s"] - 0.8 <= off <= a["start_s"] + a["duration_s"] + 0.5 and \
                    a["from"][1] - 10 <= cy <= a["from"][1] + a["height"] + 10:
                per[i].append(e)
                break
    s = {"enrolled": 0, "recognised": 0, "wrong": 0, "strangers": 0, "strangers_matched": 0,
         "exactly_one": 0, "more_than_one": 0, "none": 0, "updated": 0, "appearances": len(apps),
         "misses": []}
    for a, all_evs in zip(apps, per):
        person = os.path.basename(os.path.dirname(a["photo"]))
        evs = [e for e in all_evs if e["type"] != "identity.updated"]
        names = {e["identity"]["name"] for e in all_evs
                 if e["type"] in ("identity.recognized", "identity.updated") and e.get("identity")}
        if len(evs) != 1 or (person in enrolled and person not in names):
            # what went wrong where: for reading, not for the table
            s["misses"].append({"person": person, "enrolled": person in enrolled, "photo_px": a["height"],
                                "held_s": a["hold_s"], "turned": a.get("turned"), "exit_s": a.get("exit_s"),
                                "events": len(evs), "updated": len(all_evs) - len(evs), "named": sorted(names),
                                "best_similarity": max((e.get("similarity") or 0 for e in evs), default=None)})
        s["exactly_one"] += len(evs) == 1
        s["more_than_one"] += len(evs) > 1
        s["none"] += len(evs) == 0
        s["updated"] += len(all_evs) - len(evs)
        if person in enrolled:
            s["enrolled"] += 1
            s["recognised"] += person in names
            s["wrong"] += bool(names - {person})
        else:
            s["strangers"] += 1
            s["strangers_matched"] += bool(names)
    return s


def score_standing(events, schedule, enrolled, t0):
    """Who of the standing people was recognised, and how many seconds after the camera's
    first frame (their box's centre inside their photo)."""
    s = {"enrolled": 0, "recognised": 0, "wrong": 0, "strangers": 0, "strangers_matched": 0,
         "exactly_one": 0, "none": 0, "appearances": len(schedule["appearances"]), "misses": [],
         "found_after_s": []}
    for a in schedule["appearances"]:
        person = os.path.basename(os.path.dirname(a["photo"]))
        x0, y0 = a["from"]
        mine = [e for e in events if e["type"].startswith("identity.")
                and x0 <= e["box"]["x"] + e["box"]["w"] / 2 <= x0 + a["width"]
                and y0 <= e["box"]["y"] + e["box"]["h"] / 2 <= y0 + a["height"]]
        names = {e["identity"]["name"] for e in mine if e["type"] == "identity.recognized"}
        s["exactly_one"] += len(mine) == 1
        s["none"] += not mine
        if person in enrolled:
            s["enrolled"] += 1
            hit = [e for e in mine if e["type"] == "identity.recognized" and e["identity"]["name"] == person]
            if hit:
                s["recognised"] += 1
                s["found_after_s"].append(round(min(iso(e["first_seen"]) for e in hit) - t0, 1))
            else:
                s["misses"].append({"person": person, "photo_px": a["height"], "events": len(mine)})
            s["wrong"] += bool(names - {person})
        else:
            s["strangers"] += 1
            s["strangers_matched"] += bool(names)
    return s


def run_service(name, work, cam_port, n, detection, schedule, enrolled, sim, extra="", settle=5.0, binary=None,
                offsets=None, standing=False):
    """One `facestream serve` over n cameras for one loop of the clip; the metrics. With
    `offsets` (mount → seconds into the clip), camera i watches the staggered mount."""
    run_dir = os.path.join(work, name)
    os.makedirs(run_dir)
    mount = "staggered" if offsets else "cam"
    cams = "".join(
        f'[[cameras]]\nid = "cam{i}"\nurl = "rtsp://127.0.0.1:{cam_port}/{mount}{i}"\n'
        f"[cameras.detection]\n{detection}\n" for i in range(1, n + 1))
    config = os.path.join(run_dir, "config.toml")
    with open(config, "w") as f:
        f.write(f'[gallery]\ndatabase = "{work}/gallery.db"\n'
                f'[api]\nlisten = "127.0.0.1:0"\ngenerated_key_file = "{run_dir}/key"\n'
                f'[events]\noutbox = "{run_dir}/outbox.db"\n{extra}\n{cams}')
    log = os.path.join(run_dir, "serve.log")
    serve = subprocess.Popen([binary or BIN, "--config", config, "serve"], stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
    seen, events = set(), []
    try:
        port = None
        deadline = time.time() + 180
        while port is None and time.time() < deadline:
            for line in open(log):
                if "API listening on http://" in line:
                    port = int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
            time.sleep(0.2)
        wait_ready(port)
        key = open(os.path.join(run_dir, "key")).read().strip()

        def poll():
            for e in get_json(port, "/v1/events/recent?limit=200", key)["items"]:
                if e["id"] not in seen:
                    seen.add(e["id"])
                    events.append(e)
        # every camera live: its first frame is the clip's time zero
        t0 = {}
        while len(t0) < n and time.time() < deadline:
            poll()
            for e in events:
                if e["type"] == "camera.up" and e["camera_id"] not in t0:
                    t0[e["camera_id"]] = iso(e["occurred_at"])
            time.sleep(0.5)
        if len(t0) < n:
            raise SystemExit(f"{name}: only {len(t0)} of {n} cameras went live")
        start = max(t0.values())
        while time.time() < start + settle:
            poll(); time.sleep(1)
        a, ta = scrape(port), time.time()
        cpu_a, sim_a, thr_a = cpu_seconds(serve.pid), cpu_seconds(sim.pid), thread_cpu(serve.pid)
        end = start + schedule["duration_s"]
        while time.time() < end:
            poll(); time.sleep(2)
        b, tb = scrape(port), time.time()
        cpu_b, sim_b, thr_b = cpu_seconds(serve.pid), cpu_seconds(sim.pid), thread_cpu(serve.pid)
        # a configuration slower than real time works off its queue: wait until every
        # sampled frame was decided or dropped (at most 10 min), then the last tracks end
        # (track.lost_after_ms) and their events arrive
        drain_until = time.time() + 600
        sampled = sum(v for k, v in b.items() if k.startswith("facestream_camera_frames_sampled_total"))
        while time.time() < drain_until:
            m = scrape(port)
            dropped = sum(v for k, v in m.items() if k.startswith("facestream_camera_frames_dropped_total"))
            decided = m.get('facestream_stage_processed_total{stage="decide"}', 0)
            if decided + dropped >= sampled:
                break
            poll(); time.sleep(2)
        for _ in range(4):
            time.sleep(1); poll()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    dt = tb - ta
    per_cam = []
    for i in range(1, n + 1):
        lab = f'{{camera="cam{i}"}}'
        dec = delta(a, b, f"facestream_camera_frames_decoded_total{lab}") / dt
        smp = delta(a, b, f"facestream_camera_frames_sampled_total{lab}") / dt
        drp = delta(a, b, f"facestream_camera_frames_dropped_total{lab}")
        tot = delta(a, b, f"facestream_camera_frames_sampled_total{lab}")
        per_cam.append((dec, smp, 100.0 * drp / tot if tot else 0.0))
    stages = {st: round(delta(a, b, f'facestream_stage_latency_seconds_sum{{stage="{st}"}}') / dt, 3)
              for st in ["detect", "align", "quality", "embed", "decide", "publish"]}
    passes = {k: round(sum(delta(a, b, f'facestream_detect_passes_total{{camera="cam{i}",kind="{k}"}}')
                           for i in range(1, n + 1)) / dt / n, 2)
              for k in ["full_frame", "tile", "small_tile", "sweep", "skipped"]}
    threads = {k: (thr_b.get(k, 0) - thr_a.get(k, 0)) / dt for k in thr_b}
    threads = dict(sorted(((k, round(v, 3)) for k, v in threads.items() if v > 0.005), key=lambda kv: -kv[1]))
    recall = None
    if schedule["appearances"]:
        total = {}
        for i in range(1, n + 1):
            cam = f"cam{i}"
            offset = (offsets or {}).get(f"staggered{i}", 0)
            mine = [e for e in events if e.get("camera_id") == cam]
            sc = (score_standing(mine, schedule, enrolled, t0[cam]) if standing
                  else score(mine, schedule, enrolled, t0[cam], offset))
            for k, v in sc.items():
                total[k] = total.get(k, [] if isinstance(v, list) else 0) + v
        recall = total
    return {
        "config": name, "cameras": n, "detection": detection.replace("\n", "; "),
        "window_s": round(dt, 1),
        "decoded_fps_per_camera": round(sum(c[0] for c in per_cam) / n, 2),
        "analysed_fps_per_camera": round(sum(c[1] for c in per_cam) / n, 2),
        "dropped_pct_worst_camera": round(max(c[2] for c in per_cam), 2),
        "latency_p50_s": quantile(0.5, a, b, "facestream_end_to_end_latency_seconds"),
        "latency_p95_s": quantile(0.95, a, b, "facestream_end_to_end_latency_seconds"),
        "recall": recall,
        "service_cores": round((cpu_b - cpu_a) / dt, 3),
        "service_cores_per_camera": round((cpu_b - cpu_a) / dt / n, 3),
        "stage_cores": stages,
        "detect_passes_per_s_per_camera": passes,
        "threads_cores": threads,
        "simulator_cores": round((sim_b - sim_a) / dt, 3),
        "backends": sorted(k.split("{", 1)[1].rstrip("}") for k in b if k.startswith("facestream_inference_info")),
    }


def baseline(cam_port, n, seconds):
    """CPU of gst-launch receiving and decoding the same n streams, frames thrown away."""
    launch = ["gst-launch-1.0", "-q"]
    for i in range(1, n + 1):
        launch += ["rtspsrc", f"location=rtsp://127.0.0.1:{cam_port}/cam{i}", "protocols=tcp", "latency=200",
                   "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!", "fakesink", "sync=false"]
    base = subprocess.Popen(launch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        ba, ta = cpu_seconds(base.pid), time.time()
        time.sleep(seconds)
        return round((cpu_seconds(base.pid) - ba) / (time.time() - ta), 3)
    finally:
        base.terminate()
        base.wait()


def one_face_photos(paths):
    """The photos in which the detector finds exactly one face (`facestream embed`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(os.path.abspath(p) for p in paths))
    out = subprocess.run([BIN, "embed", "--list", f.name], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    found = {}
    for line in out.splitlines():
        d = json.loads(line)
        found[os.path.abspath(d["path"])] = len(d.get("faces") or [])
    return {p for p in paths if found.get(os.path.abspath(p)) == 1}


def simulator(shown, n, schedule_file, extra):
    """The simulator; its port and the staggered mounts' offsets (seconds into the clip)."""
    port = free_port()
    sim = subprocess.Popen(
        [BIN, "simulate-camera", *shown, "--port", str(port), "--cameras", str(n),
         "--width", "1920", "--height", "1080", "--fps", "25", "--look", "surveillance",
         "--schedule", schedule_file, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    offsets = {}
    for line in sim.stdout:
        if line.strip() == "ready":
            break
        if line.startswith("offset "):
            _, mount, seconds = line.split()
            offsets[mount] = float(seconds)
    return sim, port, offsets


def choose_people(lfw, n_enrolled, n_strangers, work):
    """People spread over the alphabet: `n_enrolled` with >= 2 photos (the second copied to
    `work/enroll/<name>/` for enrolment, the first shown) and `n_strangers` with one.
    A photo that shows a second face (about one LFW photo in ten: someone at the edge) is
    passed over for the next person, since its appearance would rightly produce several
    events and enrolment would refuse it. Returns (enrolled names, photos shown)."""
    people = sorted(os.listdir(lfw))
    multi = [p for p in people if len(os.listdir(os.path.join(lfw, p))) >= 2]
    single = [p for p in people if len(os.listdir(os.path.join(lfw, p))) == 1]
    step_m, step_s = len(multi) // n_enrolled, len(single) // max(n_strangers, 1)
    photo = lambda p, k: os.path.join(lfw, p, sorted(os.listdir(os.path.join(lfw, p)))[k])
    cand_m = [p for k in range(3) for p in multi[k::step_m]]
    cand_s = [p for k in range(3) for p in single[k::step_s]]
    single_face = one_face_photos([photo(p, k) for p in cand_m for k in (0, 1)] + [photo(p, 0) for p in cand_s])
    enrolled = [p for p in cand_m if photo(p, 0) in single_face and photo(p, 1) in single_face][: n_enrolled]
    strangers = [p for p in cand_s if photo(p, 0) in single_face][: n_strangers]
    print(f"people: {len(enrolled)} enrolled, {len(strangers)} strangers; "
          f"{len(set(cand_m[:n_enrolled]) - set(enrolled)) + len(set(cand_s[:n_strangers]) - set(strangers))} "
          "first choices passed over for a second face in a photo", flush=True)
    shown = []
    for i, p in enumerate(enrolled):
        imgs = sorted(os.listdir(os.path.join(lfw, p)))
        os.makedirs(os.path.join(work, "enroll", p))
        shutil.copy(os.path.join(lfw, p, imgs[1]), os.path.join(work, "enroll", p))
        shown.append(os.path.join(lfw, p, imgs[0]))
        if i % 2 == 1 and strangers:
            s = strangers.pop(0)
            shown.append(os.path.join(lfw, s, sorted(os.listdir(os.path.join(lfw, s)))[0]))
    shown.extend(os.path.join(lfw, s, sorted(os.listdir(os.path.join(lfw, s)))[0]) for s in strangers)
    return enrolled, shown


def scene_runs(first, prefix, sim, port, schedule_file, regions, variants, work, enrolled, **kw):
    """One camera on a scene of its own simulator (stopped after): the defaults, then each
    detection variant, with one decode-only baseline for all."""
    out = []
    try:
        schedule = json.load(open(schedule_file))
        base = None
        for name, detection, extra in [(first, regions, "")] + [(f"{prefix}-{label}", d, e)
                                                                for label, d, e in variants]:
            r = run_service(name, work, port, 1, detection, schedule, enrolled, sim, extra, **kw)
            base = base if base is not None else baseline(port, 1, 30)
            r["baseline_decode_only_cores"] = base
            out.append(r)
            print(json.dumps(r), flush=True)
    finally:
        sim.terminate()
        sim.wait()
    return out


def variant(v, regions):
    """A `--variant SECTION.KEY=VALUE`: (label, the cameras' detection table, extra config)."""
    key, value = v.split("=", 1)
    section, key = key.rsplit(".", 1)
    label = f"{key}={value.strip(chr(34))}"
    if section == "cameras.detection":
        return label, f"{regions}\n{key} = {value}", ""
    return label, regions, f"[{section}]\n{key} = {value}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", required=True, help="LFW images folder (one sub-folder per person)")
    ap.add_argument("--cameras", default="4,6,8")
    ap.add_argument("--enrolled", type=int, default=20)
    ap.add_argument("--strangers", type=int, default=10)
    ap.add_argument("--modes", default="regions,downscale,full", help="detection modes compared on 1 camera")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--variant", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="also run the first camera count with this setting (TOML value), beside the "
                    "defaults; repeatable, e.g. inference.threads=2 or 'inference.detect_backend=\"openvino\"'")
    ap.add_argument("--compare-bin", action="append", default=[], metavar="LABEL=PATH",
                    help="another facestream binary (e.g. a build of the previous commit) run on the "
                         "first camera count right after this one's, in the same run; repeatable")
    ap.add_argument("--stagger", action="store_true",
                    help="also run each camera count on cameras that do not show the clip in step "
                         "(camera i starts (i-1)/N of the way into it), in the same run; appearances in "
                         "view where a camera's stream starts are not scored")
    ap.add_argument("--standing", action="store_true",
                    help="also run one camera on a scene of distant people standing still (see above)")
    ap.add_argument("--scenes", default="walk,breaks",
                    help="scenes, each on its own simulator: walk (the surveillance walk) and breaks (the same "
                         "people where tracks break: turning away, out of the frame and back, behind a pillar)")
    ap.add_argument("--json", default="target/bench-cameras.json")
    args = ap.parse_args()
    counts = [int(c) for c in args.cameras.split(",") if c]
    flags = cpu_flags()
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    print(f"machine: {cpu}, {os.cpu_count()} cores, flags: {' '.join(flags)}", flush=True)
    work = tempfile.mkdtemp(prefix="facestream-bench-cameras-")
    enrolled, shown = choose_people(args.lfw, args.enrolled, args.strangers, work)
    enrolled_set = set(enrolled)
    results = []
    modes = {"regions": 'mode = "regions"', "downscale": 'mode = "downscale"', "full": 'mode = "full"'}
    max_n = max(counts + [1])
    enrolled_once = False
    for scene in [sc for sc in args.scenes.split(",") if sc]:
        if scene not in SCENES:
            raise SystemExit(f"--scenes: {scene!r} is not one of {', '.join(SCENES)}")
        # the walk scene keeps its configurations' names; the others are prefixed
        tag = "" if scene == "walk" else f"{scene}:"
        stagger = args.stagger and scene == "walk"
        sched_file = os.path.join(work, f"schedule-{scene}.json")
        sim, cam_port, offsets = simulator(shown, max_n, sched_file, SCENES[scene] + (["--stagger"] if stagger else []))
        schedule = json.load(open(sched_file))
        print(f"simulator ready ({scene}): {len(shown)} people ({len(enrolled)} enrolled), loop "
              f"{schedule['duration_s']:.1f} s, on up to {max_n} cameras", flush=True)
        if not enrolled_once:
            subprocess.run([BIN, "--config", "/dev/null", "enroll", "--dir", os.path.join(work, "enroll")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "FACESTREAM__GALLERY__DATABASE": f'"{work}/gallery.db"'})
            enrolled_once = True
        try:
            for mode in [m for m in args.modes.split(",") if m]:
                extra = "[pipeline]\nframe_queue = 1000\n" if mode == "full" else ""
                r = run_service(f"{tag}1cam-{mode}", work, cam_port, 1, modes[mode], schedule, enrolled_set, sim,
                                extra)
                r["baseline_decode_only_cores"] = baseline(cam_port, 1, 20)
                results.append(r)
                print(json.dumps(r), flush=True)
            for n in counts:
                r = run_service(f"{tag}{n}cam-regions", work, cam_port, n, modes["regions"], schedule, enrolled_set,
                                sim)
                r["baseline_decode_only_cores"] = baseline(cam_port, n, 30)
                results.append(r)
                print(json.dumps(r), flush=True)
                if stagger:
                    mine = {f"staggered{i}": offsets[f"staggered{i}"] for i in range(1, n + 1)}
                    r = run_service(f"{n}cam-regions-staggered", work, cam_port, n, modes["regions"], schedule,
                                    enrolled_set, sim, offsets=mine)
                    r["offsets_s"] = mine
                    r["baseline_decode_only_cores"] = results[-1]["baseline_decode_only_cores"]
                    results.append(r)
                    print(json.dumps(r), flush=True)
                if n == counts[0]:
                    for c in args.compare_bin:
                        label, path = c.split("=", 1)
                        r = run_service(f"{tag}{n}cam-regions-bin={label}", work, cam_port, n, modes["regions"],
                                        schedule, enrolled_set, sim, binary=path)
                        r["baseline_decode_only_cores"] = results[-1]["baseline_decode_only_cores"]
                        results.append(r)
                        print(json.dumps(r), flush=True)
                    for v in args.variant:
                        label, detection, extra = variant(v, modes["regions"])
                        r = run_service(f"{tag}{n}cam-regions-{label}", work, cam_port, n, detection, schedule,
                                        enrolled_set, sim, extra)
                        r["baseline_decode_only_cores"] = results[-1]["baseline_decode_only_cores"]
                        results.append(r)
                        print(json.dumps(r), flush=True)
        finally:
            sim.terminate()
            sim.wait()
    detection_variants = [variant(v, modes["regions"]) for v in args.variant
                          if v.startswith("cameras.detection.")]
    if args.standing:
        # six enrolled people, shown from the photo they were not enrolled with, standing
        # still for the whole 30-s loop; faces of 30-45 px (LFW faces are ~0.42 of the photo)
        stand_sched = os.path.join(work, "standing.json")
        standing = [p for p in shown if os.path.basename(os.path.dirname(p)) in enrolled_set][:6]
        sim, port, _ = simulator(standing, 1, stand_sched,
                                 ["--standing", "--show-seconds", "30", "--photo-heights", "75,90,105"])
        results += scene_runs("1cam-standing-default", "1cam-standing", sim, port, stand_sched, modes["regions"],
                              detection_variants, work, enrolled_set, standing=True)
    if not args.skip_idle:
        idle_sched = os.path.join(work, "idle.json")
        sim, port, _ = simulator(shown[:1], 1, idle_sched, ["--empty-seconds", "40"])
        results += scene_runs("1cam-idle", "1cam-idle", sim, port, idle_sched, modes["regions"], detection_variants,
                              work, enrolled_set, settle=10)
    with open(args.json, "w") as f:
        json.dump({"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "results": results}, f, indent=2)
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, flags: {' '.join(flags)}")
    print("\n| config | recognised / enrolled | wrong | strangers matched | exactly one event | more than one | no event | updated | worst drop % | p50 | p95 | service cores/cam | decode-only cores/cam | detect cores | tiles/s/cam (320 + 160 + sweep) | full passes/s/cam |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fmt = lambda v: "–" if v is None else f"{v * 1000:.0f} ms"
        rc = r["recall"]
        rec = "–" if rc is None else f"{rc['recognised']} / {rc['enrolled']}"
        wrong = "–" if rc is None else rc["wrong"]
        sm = "–" if rc is None else f"{rc['strangers_matched']} / {rc['strangers']}"
        one = "–" if rc is None else f"{rc['exactly_one']} / {rc['appearances']}"
        none = "–" if rc is None else rc["none"]
        more = "–" if rc is None else rc.get("more_than_one", "–")
        upd = "–" if rc is None else rc.get("updated", "–")
        base = r["baseline_decode_only_cores"] / r["cameras"]
        p = r["detect_passes_per_s_per_camera"]
        print(f"| {r['config']} | {rec} | {wrong} | {sm} | {one} | {more} | {none} | {upd} | {r['dropped_pct_worst_camera']} | "
              f"{fmt(r['latency_p50_s'])} | {fmt(r['latency_p95_s'])} | {r['service_cores_per_camera']} | "
              f"{base:.3f} | {r['stage_cores']['detect']} | {p['tile']} + {p['small_tile']} + {p['sweep']} | "
              f"{p['full_frame']} |")
    standing = [r for r in results if r["config"].startswith("1cam-standing")]
    if standing:
        print("\n| standing scene | recognised / standing | found after (s, from camera up) | wrong | service cores |")
        print("|---|---|---|---|---|")
        for r in standing:
            rc = r["recall"]
            print(f"| {r['config']} | {rc['recognised']} / {rc['enrolled']} | "
                  f"{', '.join(str(t) for t in sorted(rc['found_after_s'])) or '–'} | {rc['wrong']} | "
                  f"{r['service_cores']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
