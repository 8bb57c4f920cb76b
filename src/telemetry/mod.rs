//! Every Prometheus metric facestream exports, defined in one place.
//!
//! Names follow the Prometheus conventions: `facestream_<what>_<unit>`, `_total` for
//! counters, seconds for durations. Served at `GET /metrics` (text exposition format)
//! by the API server. Stages record through [`metrics()`], a process-wide registry.

pub mod faces;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

/// `endpoint` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// `endpoint` and `outcome` (`delivered` | `failed`) labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub endpoint: String,
    pub outcome: String,
}

/// `node` label (`cluster.node_id`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// `task` label: a background task of the service (`crate::tasks`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

/// `kind` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SearchKindLabel {
    pub kind: String,
}

/// `camera` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabel {
    pub camera: String,
}

/// `camera` and `state` labels (one series per state, 1 for the current one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraStateLabel {
    pub camera: String,
    pub state: String,
}

/// `stage` label: detect, align, quality, embed, track, publish.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

/// `camera` and `reason` labels (`faces::Reject`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub camera: String,
    pub reason: String,
}

/// `camera` and `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub camera: String,
    pub outcome: String,
}

/// `camera` and `kind` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub camera: String,
    pub kind: String,
}

/// `stage`, `backend` and `model` labels of the info metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub stage: String,
    pub backend: String,
    pub model: String,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// Faces not recognised, by camera and reason (`faces::Reject`).
    pub faces_rejected: Family<ReasonLabel, Counter>,
    /// Inter-ocular distance of the faces scored, by camera.
    pub face_interocular: Family<CameraLabel, Histogram>,
    /// The same counts per camera since start, for the camera page's verdict.
    face_counts: Mutex<HashMap<String, faces::CameraFaces>>,
    /// The inter-ocular distance recognition needs (set when the pipeline starts).
    face_size_needed: Mutex<Option<f32>>,
    /// Events accepted into the outbox, by type.
    pub events_published: Family<TypeLabel, Counter>,
    /// Delivery attempts by endpoint and outcome (a failed attempt is retried).
    pub event_deliveries: Family<DeliveryLabel, Counter>,
    /// Events moved to the dead letters, by endpoint.
    pub events_dead_lettered: Family<EndpointLabel, Counter>,
    /// Pending outbox rows, by endpoint.
    pub outbox_depth: Family<EndpointLabel, Gauge>,
    /// Enqueue → acknowledged, by endpoint.
    pub event_delivery_latency: Family<EndpointLabel, Histogram>,
    /// Templates in the search index.
    pub gallery_templates: Gauge,
    /// Clients connected to `GET /v1/events/stream`.
    pub event_streams: Gauge,
    /// Unknown tracks kept for review (`review.enabled`).
    pub review_tracks: Gauge,
    /// 1, labelled with this node's id (`cluster.node_id`): join it on `instance` to name
    /// the node of any series.
    pub node_info: Family<NodeLabel, Gauge>,
    /// Live nodes this node sees in the cluster (`cluster.camera_leases`).
    pub cluster_nodes: Gauge,
    /// Cameras whose lease this node holds (`cluster.camera_leases`).
    pub camera_leases: Gauge,
    /// Unknown tracks that could not be written to the review store.
    pub review_errors: Counter,
    /// Appearances kept in the history (`history.enabled`).
    pub history_appearances: Gauge,
    /// Appearances that could not be written to the history.
    pub history_errors: Counter,
    pub history_backlog: Gauge,
    pub history_dropped: Counter,
    /// Appearance searches (`POST /v1/search/faces`, identity timelines), by kind.
    pub history_searches: Family<SearchKindLabel, Counter>,
    /// Event snapshots that could not be written (`events.snapshots`).
    pub snapshot_errors: Counter,
    /// Background tasks that ended while the service still ran (a panic, an early
    /// return): each is fatal, the service stops and exits 1 (`crate::tasks`).
    pub background_task_failures: Family<TaskLabel, Counter>,
    /// 1 while the camera delivers frames.
    pub camera_up: Family<CameraLabel, Gauge>,
    /// 1 for the camera's current state (connecting, live, backing-off, failed, stopped).
    pub camera_state: Family<CameraStateLabel, Gauge>,
    /// Reconnect attempts.
    pub camera_reconnects: Family<CameraLabel, Counter>,
    /// Encoded frames into the decoder.
    pub camera_frames_received: Family<CameraLabel, Counter>,
    /// Frames out of the decoder.
    pub camera_frames_decoded: Family<CameraLabel, Counter>,
    /// Frames taken for analysis at the camera's detection rate.
    pub camera_frames_sampled: Family<CameraLabel, Counter>,
    /// Sampled frames dropped (oldest first) because analysis fell behind.
    pub camera_frames_dropped: Family<CameraLabel, Counter>,
    /// Items into each stage.
    pub stage_received: Family<StageLabel, Counter>,
    /// Items each stage finished.
    pub stage_processed: Family<StageLabel, Counter>,
    /// Items a stage failed on (the frame continues without that result).
    pub stage_errors: Family<StageLabel, Counter>,
    /// Items waiting for each stage.
    pub stage_queue_depth: Family<StageLabel, Gauge>,
    /// Time each stage spends on one item (one frame; one batch for embed).
    pub stage_latency: Family<StageLabel, Histogram>,
    /// Faces per embedding batch.
    pub embed_batch_size: Histogram,
    /// Faces reaching the embed stage by outcome: embedded, low_quality (below
    /// track.min_match_quality), decided_track (its track's identity event is out) or
    /// shots_full (its undecided track's best shots are all better).
    pub embed_faces: Family<OutcomeLabel, Counter>,
    /// Faces found by the detector.
    pub faces_detected: Family<CameraLabel, Counter>,
    /// Detector work per camera by kind: full_frame (a whole-frame pass), tile (one
    /// full-resolution tile), skipped (a frame with nothing to search).
    pub detect_passes: Family<KindLabel, Counter>,
    /// Motion regions found.
    pub motion_regions: Family<CameraLabel, Counter>,
    /// Times a camera's frames stayed inside the analysis stages past
    /// `pipeline.stage_timeout_ms` (a dead or stuck stage); its flow-control credits were
    /// reset so the camera keeps going.
    pub pipeline_stalls: Family<CameraLabel, Counter>,
    /// Panics caught in a stage (a bug on some input): the frame went on without that
    /// stage's results and the stage kept running.
    pub stage_panics: Family<StageLabel, Counter>,
    /// Overload shedding level per camera (0 none … 3), see `pipeline::regions`.
    pub detect_shed_level: Family<CameraLabel, Gauge>,
    /// Tracks confirmed.
    pub tracks_started: Family<CameraLabel, Counter>,
    /// Open tracks.
    pub tracks_active: Family<CameraLabel, Gauge>,
    /// Identity decisions on tracks, by outcome (recognized, unknown, low_quality;
    /// embed_failed: a track with no usable face because its embedding batches failed;
    /// continued: a track that continued an appearance seen just before, which sends no
    /// second identity event).
    pub matches: Family<OutcomeLabel, Counter>,
    /// Best similarity of each decision to the gallery.
    pub match_similarity: Histogram,
    /// Events waiting in memory because their outbox write failed (retried).
    pub publish_backlog: Gauge,
    /// Frame leaving the decoder → its identity event in the outbox.
    pub end_to_end_latency: Histogram,
    /// 1 per stage with the inference backend and model it runs.
    pub inference_info: Family<BackendLabel, Gauge>,
}

fn interocular_histogram() -> Histogram {
    Histogram::new(faces::INTEROCULAR_BUCKETS)
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn stage_histogram() -> Histogram {
    // 100 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("facestream");
        let events_published = Family::<TypeLabel, Counter>::default();
        let event_deliveries = Family::<DeliveryLabel, Counter>::default();
        let events_dead_lettered = Family::<EndpointLabel, Counter>::default();
        let outbox_depth = Family::<EndpointLabel, Gauge>::default();
        let event_delivery_latency = Family::<EndpointLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let gallery_templates = Gauge::default();
        let event_streams = Gauge::default();
        let review_tracks = Gauge::default();
        let node_info = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "node_info",
            "This node (cluster.node_id); always 1",
            node_info.clone(),
        );
        let cluster_nodes = Gauge::default();
        registry.register(
            "cluster_nodes",
            "Live facestream nodes seen through PostgreSQL (cluster.camera_leases)",
            cluster_nodes.clone(),
        );
        let camera_leases = Gauge::default();
        registry.register(
            "camera_leases",
            "Cameras whose lease this node holds, so it watches them (cluster.camera_leases)",
            camera_leases.clone(),
        );
        registry.register(
            "review_tracks",
            "Unknown tracks kept for review (review.enabled)",
            review_tracks.clone(),
        );
        let background_task_failures = Family::<TaskLabel, Counter>::default();
        registry.register(
            "background_task_failures",
            "Background tasks that ended while the service ran (panic or early return); the \
             service then stops and exits 1",
            background_task_failures.clone(),
        );
        let snapshot_errors = Counter::default();
        registry.register(
            "snapshot_errors",
            "Event snapshots that could not be written (events.snapshots)",
            snapshot_errors.clone(),
        );
        let review_errors = Counter::default();
        registry.register(
            "review_errors",
            "Unknown tracks that could not be written to the review store",
            review_errors.clone(),
        );
        let history_appearances = Gauge::default();
        registry.register(
            "history_appearances",
            "Appearances kept in the searchable history (history.enabled)",
            history_appearances.clone(),
        );
        let history_errors = Counter::default();
        registry.register(
            "history_errors",
            "Appearances that could not be written to the history",
            history_errors.clone(),
        );
        let history_backlog = Gauge::default();
        registry.register(
            "history_backlog",
            "Appearances waiting in memory for the history store to be reachable again",
            history_backlog.clone(),
        );
        let history_dropped = Counter::default();
        registry.register(
            "history_dropped",
            "Appearances dropped before they were written: the waiting backlog or the stage's mailbox was full, or the store was unreachable at shutdown",
            history_dropped.clone(),
        );
        let history_searches = Family::<SearchKindLabel, Counter>::default();
        registry.register(
            "history_searches",
            "Searches of the appearance history, by kind (photo, identity, track)",
            history_searches.clone(),
        );
        registry.register(
            "event_streams",
            "Clients connected to GET /v1/events/stream",
            event_streams.clone(),
        );
        registry.register(
            "events_published",
            "Events accepted into the outbox",
            events_published.clone(),
        );
        registry.register(
            "event_deliveries",
            "Event delivery attempts by endpoint and outcome",
            event_deliveries.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events moved to the dead letters",
            events_dead_lettered.clone(),
        );
        registry.register(
            "outbox_depth",
            "Pending outbox rows per endpoint",
            outbox_depth.clone(),
        );
        registry.register_with_unit(
            "event_delivery_latency",
            "Time from enqueue to acknowledgement by the endpoint",
            prometheus_client::registry::Unit::Seconds,
            event_delivery_latency.clone(),
        );
        registry.register(
            "gallery_templates",
            "Templates in the search index",
            gallery_templates.clone(),
        );
        let camera_up = Family::<CameraLabel, Gauge>::default();
        let camera_state = Family::<CameraStateLabel, Gauge>::default();
        let camera_reconnects = Family::<CameraLabel, Counter>::default();
        let camera_frames_received = Family::<CameraLabel, Counter>::default();
        let camera_frames_decoded = Family::<CameraLabel, Counter>::default();
        let camera_frames_sampled = Family::<CameraLabel, Counter>::default();
        let camera_frames_dropped = Family::<CameraLabel, Counter>::default();
        let stage_received = Family::<StageLabel, Counter>::default();
        let stage_processed = Family::<StageLabel, Counter>::default();
        let stage_errors = Family::<StageLabel, Counter>::default();
        let stage_queue_depth = Family::<StageLabel, Gauge>::default();
        let stage_latency = Family::<StageLabel, Histogram>::new_with_constructor(
            stage_histogram as fn() -> Histogram,
        );
        let embed_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let faces_detected = Family::<CameraLabel, Counter>::default();
        let detect_passes = Family::<KindLabel, Counter>::default();
        let motion_regions = Family::<CameraLabel, Counter>::default();
        let pipeline_stalls = Family::<CameraLabel, Counter>::default();
        let stage_panics = Family::<StageLabel, Counter>::default();
        let detect_shed_level = Family::<CameraLabel, Gauge>::default();
        let embed_faces = Family::<OutcomeLabel, Counter>::default();
        let tracks_started = Family::<CameraLabel, Counter>::default();
        let tracks_active = Family::<CameraLabel, Gauge>::default();
        let matches = Family::<OutcomeLabel, Counter>::default();
        let match_similarity = Histogram::new(linear_buckets(0.0, 0.1, 10));
        let end_to_end_latency = Histogram::new([
            0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
        ]);
        let inference_info = Family::<BackendLabel, Gauge>::default();
        let publish_backlog = Gauge::default();
        registry.register(
            "publish_backlog",
            "Events waiting in memory because their outbox write failed (retried)",
            publish_backlog.clone(),
        );
        use prometheus_client::registry::Unit;
        let counters: [(&str, &str, &Family<CameraLabel, Counter>); 9] = [
            (
                "camera_reconnects",
                "Camera reconnect attempts",
                &camera_reconnects,
            ),
            (
                "camera_frames_received",
                "Encoded frames into the decoder",
                &camera_frames_received,
            ),
            (
                "camera_frames_decoded",
                "Frames out of the decoder",
                &camera_frames_decoded,
            ),
            (
                "camera_frames_sampled",
                "Frames taken for analysis at the detection rate",
                &camera_frames_sampled,
            ),
            (
                "camera_frames_dropped",
                "Sampled frames dropped because analysis fell behind",
                &camera_frames_dropped,
            ),
            (
                "faces_detected",
                "Faces found by the detector",
                &faces_detected,
            ),
            ("tracks_started", "Face tracks confirmed", &tracks_started),
            (
                "motion_regions",
                "Motion regions found (searched at full resolution)",
                &motion_regions,
            ),
            (
                "pipeline_stalls",
                "Frames stuck in the analysis stages past pipeline.stage_timeout_ms",
                &pipeline_stalls,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "stage_panics",
            "Panics caught in a pipeline stage (the frame went on without its results)",
            stage_panics.clone(),
        );
        registry.register(
            "camera_up",
            "1 while the camera delivers frames",
            camera_up.clone(),
        );
        registry.register(
            "camera_state",
            "1 for the camera's current state",
            camera_state.clone(),
        );
        registry.register(
            "stage_received",
            "Items into each pipeline stage",
            stage_received.clone(),
        );
        registry.register(
            "stage_processed",
            "Items each pipeline stage finished",
            stage_processed.clone(),
        );
        registry.register(
            "stage_errors",
            "Items a pipeline stage failed on",
            stage_errors.clone(),
        );
        registry.register(
            "stage_queue_depth",
            "Items waiting for each pipeline stage",
            stage_queue_depth.clone(),
        );
        registry.register_with_unit(
            "stage_latency",
            "Processing time of one item (a frame; a batch for embed) per stage",
            Unit::Seconds,
            stage_latency.clone(),
        );
        registry.register(
            "embed_faces",
            "Faces at the embed stage by outcome (embedded, low_quality, decided_track, shots_full; failed: embedded but the batch failed)",
            embed_faces.clone(),
        );
        registry.register(
            "embed_batch_size",
            "Faces per embedding batch",
            embed_batch_size.clone(),
        );
        registry.register("tracks_active", "Open face tracks", tracks_active.clone());
        registry.register(
            "detect_passes",
            "Detector work by kind: full_frame pass, full-resolution tile, skipped frame",
            detect_passes.clone(),
        );
        registry.register(
            "detect_shed_level",
            "Overload shedding level of the camera's detection (0 none to 3)",
            detect_shed_level.clone(),
        );
        registry.register(
            "matches",
            "Identity decisions on tracks by outcome",
            matches.clone(),
        );
        registry.register(
            "match_similarity",
            "Best gallery similarity of each identity decision",
            match_similarity.clone(),
        );
        registry.register_with_unit(
            "end_to_end_latency",
            "Frame out of the decoder to its identity event in the outbox",
            Unit::Seconds,
            end_to_end_latency.clone(),
        );
        registry.register(
            "inference_info",
            "Inference backend and model per stage (value 1)",
            inference_info.clone(),
        );
        let faces_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "faces_rejected",
            "Faces detected but not recognised, by reason: too_small, blurred, pose, exposure, \
             low_score (below track.min_match_quality, by the weakest quality component) or \
             no_match (usable faces of an appearance that matched no one)",
            faces_rejected.clone(),
        );
        let face_interocular = Family::<CameraLabel, Histogram>::new_with_constructor(
            interocular_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "face_interocular",
            "Distance between the eyes of the faces scored, in pixels of the camera's frame",
            prometheus_client::registry::Unit::Other("pixels".into()),
            face_interocular.clone(),
        );
        Metrics {
            registry,
            faces_rejected,
            face_interocular,
            face_counts: Mutex::new(HashMap::new()),
            face_size_needed: Mutex::new(None),
            camera_up,
            camera_state,
            camera_reconnects,
            camera_frames_received,
            camera_frames_decoded,
            camera_frames_sampled,
            camera_frames_dropped,
            stage_received,
            stage_processed,
            stage_errors,
            stage_queue_depth,
            stage_latency,
            embed_batch_size,
            embed_faces,
            faces_detected,
            detect_passes,
            motion_regions,
            pipeline_stalls,
            stage_panics,
            detect_shed_level,
            tracks_started,
            tracks_active,
            matches,
            match_similarity,
            publish_backlog,
            end_to_end_latency,
            inference_info,
            events_published,
            event_deliveries,
            events_dead_lettered,
            outbox_depth,
            event_delivery_latency,
            gallery_templates,
            event_streams,
            review_tracks,
            node_info,
            cluster_nodes,
            camera_leases,
            review_errors,
            history_appearances,
            history_errors,
            history_backlog,
            history_dropped,
            history_searches,
            snapshot_errors,
            background_task_failures,
        }
    }

    /// A face of `camera` was scored: its inter-ocular distance, and why it cannot be
    /// recognised when it cannot (too poor to match).
    pub fn face_assessed(
        &self,
        camera: &str,
        interocular_px: f32,
        rejected: Option<faces::Reject>,
    ) {
        self.face_interocular
            .get_or_create(&Metrics::camera(camera))
            .observe(f64::from(interocular_px));
        let mut counts = self.face_counts.lock().unwrap_or_else(|p| p.into_inner());
        // per face: the camera's name is copied only for its first face
        if !counts.contains_key(camera) {
            counts.insert(camera.to_string(), faces::CameraFaces::default());
        }
        let c = counts.get_mut(camera).expect("inserted above");
        c.observe_size(interocular_px);
        if let Some(reason) = rejected {
            *c.rejected.entry(reason).or_default() += 1;
            drop(counts);
            self.count_rejected(camera, reason, 1);
        }
    }

    /// `camera`'s face series at zero, from its start (`rate()` has a base, a dashboard
    /// no gap).
    pub fn init_face_series(&self, camera: &str) {
        let _ = self
            .face_interocular
            .get_or_create(&Metrics::camera(camera));
        for reason in faces::Reject::ALL {
            self.count_rejected(camera, reason, 0);
        }
    }

    /// `faces` usable faces of an appearance of `camera` matched no one.
    pub fn faces_unmatched(&self, camera: &str, faces: u64) {
        if faces == 0 {
            return;
        }
        let mut counts = self.face_counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .entry(camera.to_string())
            .or_default()
            .rejected
            .entry(faces::Reject::NoMatch)
            .or_default() += faces;
        drop(counts);
        self.count_rejected(camera, faces::Reject::NoMatch, faces);
    }

    fn count_rejected(&self, camera: &str, reason: faces::Reject, n: u64) {
        self.faces_rejected
            .get_or_create(&ReasonLabel {
                camera: camera.to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc_by(n);
    }

    /// Say the inter-ocular distance recognition needs (the pipeline, at start).
    pub fn set_face_size_needed(&self, interocular_px: f32) {
        *self
            .face_size_needed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(interocular_px);
    }

    /// The camera page's verdict on `camera`'s faces; none before its first face.
    pub fn camera_verdict(&self, camera: &str) -> Option<faces::Verdict> {
        let needed = self
            .face_size_needed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(0.0);
        let counts = self.face_counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(camera).map(|c| c.verdict(needed))
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Drop a camera's up/state series: it is watched by another node of the cluster now,
    /// and a lingering `camera_up 0` here would raise `FacestreamCameraDown`.
    pub fn forget_camera_state(&self, camera: &str, states: &[&str]) {
        self.camera_up.remove(&Metrics::camera(camera));
        for state in states {
            self.camera_state.remove(&CameraStateLabel {
                camera: camera.to_string(),
                state: state.to_string(),
            });
        }
    }

    pub fn camera(id: &str) -> CameraLabel {
        CameraLabel {
            camera: id.to_string(),
        }
    }

    pub fn kind(camera: &str, kind: &str) -> KindLabel {
        KindLabel {
            camera: camera.to_string(),
            kind: kind.to_string(),
        }
    }

    pub fn stage(name: &str) -> StageLabel {
        StageLabel {
            stage: name.to_string(),
        }
    }

    pub fn outcome(camera: &str, outcome: &str) -> OutcomeLabel {
        OutcomeLabel {
            camera: camera.to_string(),
            outcome: outcome.to_string(),
        }
    }

    pub fn endpoint(name: &str) -> EndpointLabel {
        EndpointLabel {
            endpoint: name.to_string(),
        }
    }

    pub fn delivery(name: &str, delivered: bool) -> DeliveryLabel {
        DeliveryLabel {
            endpoint: name.to_string(),
            outcome: if delivered { "delivered" } else { "failed" }.to_string(),
        }
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: counter families are named with
/// their `_total` suffix in `# HELP`/`# TYPE`, `# UNIT` and `# EOF` are dropped.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.events_published
            .get_or_create(&TypeLabel {
                r#type: "test".into(),
            })
            .inc();
        m.event_delivery_latency
            .get_or_create(&Metrics::endpoint("a"))
            .observe(0.01);
        m.event_deliveries
            .get_or_create(&Metrics::delivery("a", true))
            .inc();
        m.outbox_depth.get_or_create(&Metrics::endpoint("a")).set(3);
        let text = m.encode();
        let classic = to_text_format(&text);
        assert!(classic.contains("# TYPE facestream_events_published_total counter"));
        assert!(classic.contains("# HELP facestream_events_published_total "));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        for name in [
            "facestream_events_published_total{type=\"test\"}",
            "facestream_event_deliveries_total{endpoint=\"a\",outcome=\"delivered\"}",
            "facestream_event_delivery_latency_seconds_bucket",
            "# TYPE facestream_outbox_depth gauge",
            "facestream_outbox_depth{endpoint=\"a\"} 3",
            "# UNIT facestream_event_delivery_latency_seconds seconds",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
