#!/usr/bin/env python3
"""Soak: `facestream serve` on N simulated 1080p25 RTSP cameras for a long run.

The scene is the camera benchmark's (scripts/bench_cameras.py: LFW people crossing a
surveillance scene, enrolled from other photos, plus strangers), looped for the whole
run. Every identity and track event goes to a real HTTP webhook receiver in this script,
which checks each delivery's Standard Webhooks signature like a consumer would.

Sampled every `--every` seconds from /proc and /metrics: resident memory (VmRSS), open
file descriptors, threads, outbox depth, events accepted, frames decoded and dropped. At
the end the outbox is left to drain, the service is stopped with SIGTERM, and the script
reports:

- memory and descriptors: first sample after warm-up, last, maximum, and the slope of a
  least-squares line over the second half of the run (MB per hour, descriptors per hour)
  — flat is the expectation;
- nothing lost: after the service stopped, every event in its outbox (the durable record
  of all it published, read with sqlite3) was either received with a valid signature
  or is still pending there for the next start (events of the shutdown itself);
  duplicates (at-least-once delivery may repeat an id) and bad signatures are counted
  apart;
- frames: decoded, sampled, dropped per camera.

Exit status 1 when an event was lost, a signature was bad, or the service died.

Usage: scripts/soak.py --lfw ../shared/datasets/lfw-gray/images --cameras 4 --minutes 30
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cameras as bc  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"facestream-soak-secret-0123456789").decode()


class Receiver:
    """A webhook consumer: verifies signatures, records event ids by type."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = {}
        self.deliveries = 0
        self.bad_signatures = 0
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                msg_id = self.headers.get("webhook-id", "")
                ts = self.headers.get("webhook-timestamp", "")
                want = base64.b64encode(
                    hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
                sigs = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
                ok = any(hmac.compare_digest(want, s) for s in sigs)
                with receiver.lock:
                    receiver.deliveries += 1
                    if not ok:
                        receiver.bad_signatures += 1
                    else:
                        kind = json.loads(body).get("type", "?")
                        receiver.ids.setdefault(msg_id, kind)
                self.send_response(200 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_type(self):
        with self.lock:
            out = {}
            for kind in self.ids.values():
                out[kind] = out.get(kind, 0) + 1
            return out


def proc_sample(pid):
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(status.split(name + ":")[1].split()[0])
    return {"rss_mb": round(field("VmRSS") / 1024, 1), "threads": field("Threads"),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if den == 0 else 3600 * sum((p[0] - mx) * (p[1] - my) for p in points) / den


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", required=True, help="LFW images folder (one sub-folder per person)")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--every", type=float, default=30, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=120, help="seconds before the first sample counted")
    ap.add_argument("--json", default="target/soak.json")
    args = ap.parse_args()
    flags = bc.cpu_flags()
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    print(f"machine: {cpu}, {os.cpu_count()} cores, flags: {' '.join(flags)}", flush=True)
    work = tempfile.mkdtemp(prefix="facestream-soak-")
    enrolled, shown = bc.choose_people(args.lfw, 20, 10, work)
    sim, cam_port = bc.simulator(shown, args.cameras, os.path.join(work, "schedule.json"), bc.SCENE)
    subprocess.run([bc.BIN, "--config", "/dev/null", "enroll", "--dir", os.path.join(work, "enroll")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "FACESTREAM__GALLERY__DATABASE": f'"{work}/gallery.db"'})
    receiver = Receiver()
    config = os.path.join(work, "config.toml")
    cams = "".join(f'[[cameras]]\nid = "cam{i}"\nurl = "rtsp://127.0.0.1:{cam_port}/cam{i}"\n'
                   for i in range(1, args.cameras + 1))
    with open(config, "w") as f:
        f.write(f'[gallery]\ndatabase = "{work}/gallery.db"\n'
                f'[api]\nlisten = "127.0.0.1:0"\ngenerated_key_file = "{work}/key"\n'
                f'[events]\noutbox = "{work}/outbox.db"\n'
                f'[[events.webhooks]]\nname = "soak"\nurl = "http://127.0.0.1:{receiver.port}/hook"\n'
                f'secret = "{SECRET}"\n{cams}')
    log = os.path.join(work, "serve.log")
    serve = subprocess.Popen([bc.BIN, "--config", config, "serve"], stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
    samples, died = [], None
    try:
        port, deadline = None, time.time() + 180
        while port is None and time.time() < deadline:
            for line in open(log):
                if "API listening on http://" in line:
                    port = int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
            time.sleep(0.2)
        bc.wait_ready(port)
        t0 = time.time()
        end = t0 + args.minutes * 60
        while time.time() < end:
            time.sleep(min(args.every, max(end - time.time(), 0)))
            if serve.poll() is not None:
                died = f"the service exited with {serve.returncode}"
                break
            m = bc.scrape(port)
            s = {"t_s": round(time.time() - t0), **proc_sample(serve.pid),
                 "outbox_depth": total(m, "facestream_outbox_depth"),
                 "events_accepted": total(m, "facestream_events_published_total"),
                 "received": len(receiver.ids),
                 "decoded": total(m, "facestream_camera_frames_decoded_total"),
                 "sampled": total(m, "facestream_camera_frames_sampled_total"),
                 "dropped": total(m, "facestream_camera_frames_dropped_total"),
                 "stalls": total(m, "facestream_pipeline_stalls_total")}
            samples.append(s)
            print(json.dumps(s), flush=True)
        # let the outbox drain (at most 2 min), then stop as an operator would
        if died is None:
            drain = time.time() + 120
            while time.time() < drain and total(bc.scrape(port), "facestream_outbox_depth") > 0:
                time.sleep(1)
            final = bc.scrape(port)
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=120)
        sim.terminate()
        sim.wait()
        receiver.server.shutdown()
    if died is not None:
        print(f"FAIL: {died}; log: {log}")
        return 1
    db = sqlite3.connect(os.path.join(work, "outbox.db"))
    rows = db.execute("SELECT event_id, event_type, state FROM outbox WHERE endpoint = 'soak'").fetchall()
    db.close()
    accepted, pending, lost = {}, {}, []
    for event_id, kind, state in rows:
        accepted[kind] = accepted.get(kind, 0) + 1
        if event_id in receiver.ids:
            continue
        if state == "pending":
            pending[kind] = pending.get(kind, 0) + 1
        else:
            lost.append({"id": event_id, "type": kind, "state": state})
    got = receiver.by_type()
    counted = [s for s in samples if s["t_s"] >= args.warmup]
    half = counted[len(counted) // 2:]
    report = {
        "cpu": cpu, "flags": flags, "cores": os.cpu_count(), "cameras": args.cameras,
        "minutes": args.minutes, "samples": samples,
        "rss_mb": {"first": counted[0]["rss_mb"] if counted else None, "last": samples[-1]["rss_mb"],
                   "max": max(s["rss_mb"] for s in samples),
                   "slope_second_half_mb_per_h": round(slope_per_hour([(s["t_s"], s["rss_mb"]) for s in half]), 1)},
        "fds": {"first": counted[0]["fds"] if counted else None, "last": samples[-1]["fds"],
                "max": max(s["fds"] for s in samples),
                "slope_second_half_per_h": round(slope_per_hour([(s["t_s"], s["fds"]) for s in half]), 1)},
        "threads": {"min": min(s["threads"] for s in samples), "max": max(s["threads"] for s in samples)},
        "events_in_outbox": accepted, "events_received": got,
        "pending_for_next_start": pending, "lost": lost,
        "events_accepted_by_metrics_before_stop": int(total(final, "facestream_events_published_total")),
        "deliveries": receiver.deliveries, "duplicates": receiver.deliveries - receiver.bad_signatures - len(receiver.ids),
        "bad_signatures": receiver.bad_signatures,
        "frames": {"decoded": samples[-1]["decoded"], "sampled": samples[-1]["sampled"],
                   "dropped": samples[-1]["dropped"],
                   "dropped_pct": round(100 * samples[-1]["dropped"] / max(samples[-1]["sampled"], 1), 2)},
        "stage_stalls": samples[-1]["stalls"],
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    ok = not lost and receiver.bad_signatures == 0
    print("PASS: nothing lost" if ok else "FAIL: events lost or bad signatures")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
