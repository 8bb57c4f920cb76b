#!/usr/bin/env python3
"""Write the Grafana dashboards in dashboards/ (JSON, provisioning-ready).

The dashboards are generated so their panels stay uniform; the JSON files are committed
and are what Grafana loads. Every query must reference metrics facestream exports:
tests/operations.rs checks each expression's metric names against a live /metrics scrape.

Usage: python3 scripts/make_dashboards.py   (rewrites dashboards/*.json)
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = os.path.join(os.path.dirname(__file__), "..", "dashboards")


def panel(title, exprs, unit="short", kind="timeseries", w=12, h=8, legend="", description="", stack=False, **extra):
    targets = [
        {"refId": chr(ord("A") + i), "expr": e, "legendFormat": l, "datasource": DS}
        for i, (e, l) in enumerate(exprs)
    ]
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "gridPos": {"w": w, "h": h},
    }
    if stack:
        p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 60}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "none"}
    if kind == "heatmap":
        for t in targets:
            t["format"] = "heatmap"
        p["options"] = {"calculate": False, "yAxis": {"unit": unit}}
    p.update(extra)
    return p


def layout(panels):
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = i
        x += w
        row_h = max(row_h, h)
    return panels


def dashboard(uid, title, description, panels, camera_var=True):
    variables = [{
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "refresh": 1, "options": [],
    }]
    if camera_var:
        variables.append({
            "name": "camera", "label": "Camera", "type": "query", "datasource": DS,
            "query": {"query": "label_values(facestream_camera_up, camera)", "refId": "cameras"},
            "definition": "label_values(facestream_camera_up, camera)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
        })
    return {
        "uid": uid, "title": title, "description": description, "tags": ["facestream"],
        "editable": True, "schemaVersion": 39, "version": 1, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": variables}, "annotations": {"list": []}, "links": [],
        "panels": layout(panels),
    }


C = 'camera=~"$camera"'

fleet = dashboard("facestream-fleet", "facestream / Fleet", "Cameras: up/down, frame rates, drops, reconnects", [
    panel("Cameras live", [(f"sum(facestream_camera_up{{{C}}})", "live")], kind="stat", w=6, h=4),
    panel("Cameras not live", [(f"count(facestream_camera_up{{{C}}} == 0) or vector(0)", "not live")], kind="stat", w=6, h=4),
    panel("Frames dropped (5 m)", [(f"sum(increase(facestream_camera_frames_dropped_total{{{C}}}[5m]))", "dropped")], kind="stat", w=6, h=4),
    panel("Reconnects (1 h)", [(f"sum(increase(facestream_camera_reconnects_total{{{C}}}[1h]))", "reconnects")], kind="stat", w=6, h=4),
    panel("Camera state", [(f"facestream_camera_state{{{C}}} == 1", "{{camera}}: {{state}}")], kind="state-timeline", w=24, h=6,
          description="connecting, live, backing-off, failed, stopped"),
    panel("Decoded frames per second", [(f"rate(facestream_camera_frames_decoded_total{{{C}}}[1m])", "{{camera}}")], unit="fps"),
    panel("Analysed frames per second", [(f"rate(facestream_camera_frames_sampled_total{{{C}}}[1m])", "{{camera}}")], unit="fps",
          description="frames taken for detection at each camera's detect_fps"),
    panel("Drop ratio (analysis behind)", [(
        f"rate(facestream_camera_frames_dropped_total{{{C}}}[5m]) / clamp_min(rate(facestream_camera_frames_sampled_total{{{C}}}[5m]), 1e-9)",
        "{{camera}}")], unit="percentunit"),
    panel("Reconnects", [(f"increase(facestream_camera_reconnects_total{{{C}}}[5m])", "{{camera}}")]),
    panel("Encoded frames received per second", [(f"rate(facestream_camera_frames_received_total{{{C}}}[1m])", "{{camera}}")], unit="fps"),
])

pipeline = dashboard("facestream-pipeline", "facestream / Pipeline", "Per-stage latency, queues, throughput, batches, backend", [
    panel("End-to-end latency (frame → event)", [
        ("histogram_quantile(0.5, sum by (le) (rate(facestream_end_to_end_latency_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.95, sum by (le) (rate(facestream_end_to_end_latency_seconds_bucket[5m])))", "p95"),
    ], unit="s", w=24),
    panel("Stage latency p95", [(
        "histogram_quantile(0.95, sum by (le, stage) (rate(facestream_stage_latency_seconds_bucket[5m])))", "{{stage}}")], unit="s"),
    panel("Stage busy (cores)", [("sum by (stage) (rate(facestream_stage_latency_seconds_sum[1m]))", "{{stage}}")], unit="short",
          description="seconds spent in each stage per second: the CPU share of the analysis"),
    panel("Queue depth", [("facestream_stage_queue_depth", "{{stage}}")]),
    panel("Stage throughput", [("sum by (stage) (rate(facestream_stage_processed_total[1m]))", "{{stage}}")], unit="ops"),
    panel("Stage errors", [("sum by (stage) (rate(facestream_stage_errors_total[5m]))", "{{stage}}")], unit="ops"),
    panel("Embedding batch size", [
        ("rate(facestream_embed_batch_size_sum[5m]) / clamp_min(rate(facestream_embed_batch_size_count[5m]), 1e-9)", "mean"),
        ("histogram_quantile(0.95, sum by (le) (rate(facestream_embed_batch_size_bucket[5m])))", "p95"),
    ]),
    panel("Faces at the embed stage", [("sum by (outcome) (rate(facestream_embed_faces_total[5m]))", "{{outcome}}")], unit="ops",
          description="embedded; low_quality: below track.min_match_quality; decided_track: the track's identity event is already out; shots_full: the undecided track's best shots are all better"),
    panel("Inference backend", [("facestream_inference_info", "{{stage}}: {{backend}} ({{model}})")], kind="table", w=24, h=5),
], camera_var=False)

recognition = dashboard("facestream-recognition", "facestream / Recognition", "Faces, tracks, decisions, unknown rate, similarity", [
    panel("Faces detected per second", [(f"rate(facestream_faces_detected_total{{{C}}}[1m])", "{{camera}}")], unit="ops"),
    panel("Tracks started per minute", [(f"rate(facestream_tracks_started_total{{{C}}}[5m]) * 60", "{{camera}}")]),
    panel("Open tracks", [(f"facestream_tracks_active{{{C}}}", "{{camera}}")]),
    panel("Decisions by outcome (per minute)", [(f"sum by (outcome) (rate(facestream_matches_total{{{C}}}[5m])) * 60", "{{outcome}}")]),
    panel("Unknown rate", [(
        f'sum(rate(facestream_matches_total{{{C},outcome="unknown"}}[15m])) / clamp_min(sum(rate(facestream_matches_total{{{C},outcome=~"recognized|unknown"}}[15m])), 1e-9)',
        "unknown / decided")], unit="percentunit",
        description="a sudden rise: lighting, camera moved, or people not enrolled"),
    panel("Best similarity of decisions", [("sum by (le) (increase(facestream_match_similarity_bucket[$__rate_interval]))", "{{le}}")],
          kind="heatmap", unit="short"),
    panel("Gallery templates", [("facestream_gallery_templates", "templates")], kind="stat", w=6, h=4),
    panel("Why faces are not recognised, per camera (faces per minute)", [(
        f"sum by (camera, reason) (rate(facestream_faces_rejected_total{{{C}}}[5m])) * 60", "{{camera}}: {{reason}}")],
        w=24, stack=True,
        description="faces detected but not recognised, by the component that limits them most (too_small, blurred, "
                    "pose, exposure, low_score: below track.min_match_quality) or no_match (usable faces of an "
                    "appearance that matched no one); the console's camera page turns this into advice"),
    panel("Median face size (px between the eyes)", [(
        f"histogram_quantile(0.5, sum by (le, camera) (rate(facestream_face_interocular_pixels_bucket{{{C}}}[15m])))",
        "{{camera}}")],
        description="quality.size_full_iod_px (36 by default) and above: size no longer limits recognition"),
    panel("Face yield (recognised appearances per 100 faces)", [(
        f'100 * sum by (camera) (rate(facestream_matches_total{{{C},outcome="recognized"}}[15m])) '
        f'/ clamp_min(sum by (camera) (rate(facestream_faces_detected_total{{{C}}}[15m])), 1e-9)', "{{camera}}")],
        description="falls to zero while faces are still detected: FacestreamCameraStoppedRecognising"),
])

delivery = dashboard("facestream-delivery", "facestream / Event delivery", "Events, deliveries, retries, dead letters, outbox", [
    panel("Events published per minute", [("sum by (type) (rate(facestream_events_published_total[5m])) * 60", "{{type}}")]),
    panel("Delivery attempts", [("sum by (endpoint, outcome) (rate(facestream_event_deliveries_total[5m]))", "{{endpoint}} {{outcome}}")], unit="ops",
          description="failed attempts are retried with backoff"),
    panel("Outbox depth (pending)", [("facestream_outbox_depth", "{{endpoint}}")]),
    panel("Dead letters (1 h)", [("sum by (endpoint) (increase(facestream_events_dead_lettered_total[1h]))", "{{endpoint}}")]),
    panel("Event stream clients", [("facestream_event_streams", "connected")],
          description="clients on GET /v1/events/stream (server-sent events)"),
    panel("Delivery latency p95 (enqueue → 2xx)", [(
        "histogram_quantile(0.95, sum by (le, endpoint) (rate(facestream_event_delivery_latency_seconds_bucket[5m])))", "{{endpoint}}")], unit="s", w=24),
], camera_var=False)

for name, d in [("fleet", fleet), ("pipeline", pipeline), ("recognition", recognition), ("delivery", delivery)]:
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
print("wrote dashboards/{fleet,pipeline,recognition,delivery}.json")
