#!/usr/bin/env python3
"""How many simultaneous 1080p25 H.264 RTSP cameras run in real time on this machine.

Starts `facestream simulate-camera` with LFW people walking across a 1080p25 scene
(served as N RTSP cameras, the clip encoded once so serving costs no encoding), enrols
those people from a *different* photo each (plus strangers who are not enrolled), then
for each camera count runs `facestream serve`, lets it warm up and measures over a
window from two /metrics scrapes and /proc CPU counters:

- per camera: decoded fps, analysed (sampled) fps, dropped %;
- end-to-end latency p50/p95 (frame out of the decoder → identity event in the outbox,
  interpolated inside the histogram buckets like PromQL's histogram_quantile);
- CPU: the service process in cores, split into the pipeline stages (time inside each
  stage's handler) and the rest (GStreamer: RTSP, depay, decode, frame copies);
  the simulator's CPU is reported separately;
- baseline, same run: `gst-launch-1.0` receiving and decoding the same N streams and
  throwing the frames away (rtspsrc ! rtph264depay ! h264parse ! avdec_h264 ! fakesink),
  its CPU over the same window length — the floor any RTSP face service pays.

Usage: scripts/bench_cameras.py --lfw ../shared/datasets/lfw-gray/images --cameras 2,4,6
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", required=True, help="LFW images folder (one sub-folder per person)")
    ap.add_argument("--cameras", default="2,4,6")
    ap.add_argument("--enrolled", type=int, default=24)
    ap.add_argument("--strangers", type=int, default=12)
    ap.add_argument("--lanes", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--json", default="target/bench-cameras.json")
    args = ap.parse_args()
    counts = [int(c) for c in args.cameras.split(",")]
    work = tempfile.mkdtemp(prefix="facestream-bench-cameras-")
    people = sorted(os.listdir(args.lfw))
    multi = [p for p in people if len(os.listdir(os.path.join(args.lfw, p))) >= 2]
    single = [p for p in people if len(os.listdir(os.path.join(args.lfw, p))) == 1]
    step_m, step_s = len(multi) // args.enrolled, len(single) // max(args.strangers, 1)
    enrolled = multi[::step_m][: args.enrolled]
    strangers = single[::step_s][: args.strangers]
    shown = []
    for i, p in enumerate(enrolled):
        imgs = sorted(os.listdir(os.path.join(args.lfw, p)))
        os.makedirs(os.path.join(work, "enroll", p))
        shutil.copy(os.path.join(args.lfw, p, imgs[1]), os.path.join(work, "enroll", p))
        shown.append(os.path.join(args.lfw, p, imgs[0]))
        if i % 2 == 1 and strangers:
            s = strangers.pop(0)
            shown.append(os.path.join(args.lfw, s, sorted(os.listdir(os.path.join(args.lfw, s)))[0]))
    shown.extend(os.path.join(args.lfw, s, sorted(os.listdir(os.path.join(args.lfw, s)))[0]) for s in strangers)

    cam_port = free_port()
    sim = subprocess.Popen(
        [BIN, "simulate-camera", *shown, "--port", str(cam_port), "--cameras", str(max(counts)),
         "--width", "1920", "--height", "1080", "--fps", "25", "--lanes", str(args.lanes),
         "--photo-height", "250", "--show-seconds", "4", "--gap-seconds", "1"],
        stdout=subprocess.PIPE, text=True)
    for line in sim.stdout:
        if line.strip() == "ready":
            break
    print(f"simulator ready: {len(shown)} people ({args.enrolled} enrolled) on {max(counts)} cameras", flush=True)

    results = []
    try:
        for n in counts:
            api_port = free_port()
            run_dir = os.path.join(work, f"run{n}")
            os.makedirs(run_dir)
            cams = "".join(
                f'[[cameras]]\nid = "cam{i}"\nurl = "rtsp://127.0.0.1:{cam_port}/cam{i}"\n'
                for i in range(1, n + 1))
            config = os.path.join(run_dir, "config.toml")
            with open(config, "w") as f:
                f.write(f'[gallery]\ndatabase = "{work}/gallery.db"\n'
                        f'[api]\nlisten = "127.0.0.1:{api_port}"\ngenerated_key_file = "{run_dir}/key"\n'
                        f'[events]\noutbox = "{run_dir}/outbox.db"\n{cams}')
            if n == counts[0]:
                subprocess.run([BIN, "--config", config, "enroll", "--dir", os.path.join(work, "enroll")],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            serve = subprocess.Popen([BIN, "--config", config, "serve"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(run_dir, "serve.log"), "w"))
            try:
                wait_ready(api_port)
                time.sleep(args.warmup)
                a, ta = scrape(api_port), time.time()
                cpu_a, sim_a, thr_a = cpu_seconds(serve.pid), cpu_seconds(sim.pid), thread_cpu(serve.pid)
                time.sleep(args.seconds)
                b, tb = scrape(api_port), time.time()
                cpu_b, sim_b, thr_b = cpu_seconds(serve.pid), cpu_seconds(sim.pid), thread_cpu(serve.pid)
            finally:
                serve.send_signal(signal.SIGTERM)
                serve.wait(timeout=60)
            # baseline: decode only, same streams, same window length
            launch = ["gst-launch-1.0", "-q"]
            for i in range(1, n + 1):
                launch += ["rtspsrc", f"location=rtsp://127.0.0.1:{cam_port}/cam{i}", "protocols=tcp", "latency=200",
                           "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!", "fakesink", "sync=false"]
            base = subprocess.Popen(launch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(args.warmup / 2)
                ba = cpu_seconds(base.pid)
                time.sleep(args.seconds / 2)
                base_cores = (cpu_seconds(base.pid) - ba) / (args.seconds / 2)
            finally:
                base.terminate()
                base.wait()
            dt = tb - ta
            per_cam = []
            for i in range(1, n + 1):
                lab = f'{{camera="cam{i}"}}'
                dec = delta(a, b, f"facestream_camera_frames_decoded_total{lab}") / dt
                smp = delta(a, b, f"facestream_camera_frames_sampled_total{lab}") / dt
                drp = delta(a, b, f"facestream_camera_frames_dropped_total{lab}")
                tot = delta(a, b, f"facestream_camera_frames_sampled_total{lab}")
                per_cam.append((dec, smp, 100.0 * drp / tot if tot else 0.0))
            stages = {}
            for st in ["detect", "align", "quality", "embed", "decide", "publish"]:
                stages[st] = delta(a, b, f'facestream_stage_latency_seconds_sum{{stage="{st}"}}') / dt
            service_cores = (cpu_b - cpu_a) / dt
            threads = {k: (thr_b.get(k, 0) - thr_a.get(k, 0)) / dt for k in thr_b}
            threads = dict(sorted(((k, v) for k, v in threads.items() if v > 0.005), key=lambda kv: -kv[1]))
            outcome = {o: sum(delta(a, b, f'facestream_matches_total{{camera="cam{i}",outcome="{o}"}}')
                              for i in range(1, n + 1)) for o in ["recognized", "unknown", "low_quality"]}
            r = {
                "cameras": n,
                "window_s": round(dt, 1),
                "decoded_fps_per_camera": round(sum(c[0] for c in per_cam) / n, 2),
                "analysed_fps_per_camera": round(sum(c[1] for c in per_cam) / n, 2),
                "dropped_pct_worst_camera": round(max(c[2] for c in per_cam), 2),
                "latency_p50_s": quantile(0.5, a, b, "facestream_end_to_end_latency_seconds"),
                "latency_p95_s": quantile(0.95, a, b, "facestream_end_to_end_latency_seconds"),
                "identity_events": outcome,
                "service_cores": round(service_cores, 3),
                "stage_cores": {k: round(v, 3) for k, v in stages.items()},
                "threads_cores": {k: round(v, 3) for k, v in threads.items()},
                "simulator_cores": round((sim_b - sim_a) / dt, 3),
                "baseline_decode_only_cores": round(base_cores, 3),
                "loadavg": os.getloadavg(),
            }
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        sim.terminate()
        sim.wait()
    with open(args.json, "w") as f:
        json.dump({"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
                   "cores": os.cpu_count(), "results": results}, f, indent=2)
    print("\n| cameras | decoded fps/cam | analysed fps/cam | worst drop % | p50 latency | p95 latency | service cores | decode-only baseline cores | stages (cores) | simulator cores |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fmt = lambda v: "–" if v is None else f"{v * 1000:.0f} ms"
        st = ", ".join(f"{k} {v:.3f}" for k, v in r["stage_cores"].items())
        print(f"| {r['cameras']} | {r['decoded_fps_per_camera']} | {r['analysed_fps_per_camera']} | "
              f"{r['dropped_pct_worst_camera']} | {fmt(r['latency_p50_s'])} | {fmt(r['latency_p95_s'])} | "
              f"{r['service_cores']} | {r['baseline_decode_only_cores']} | {st} | {r['simulator_cores']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
