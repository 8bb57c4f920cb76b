//! The streaming pipeline: every camera's frames through separate actix actors.
//!
//! ```text
//! camera (GStreamer, CameraActor) ─ring─▶ pump ─▶ detect ─▶ align ─▶ quality ─▶ embed ─▶ decide ─▶ publish
//!   drop-oldest ring per camera          (SyncArbiter, N)  (sync)    (sync)   (batches   (tracks,   (outbox)
//!                                                                              across     gallery
//!                                                                              cameras)   search)
//! ```
//!
//! One message type, [`Work`] (a frame and its faces), flows through the stages; each
//! stage fills in its part. Flow control is credit-based: a camera's pump takes a credit
//! before it sends a frame into the stages and the decide stage returns it, so at most
//! `pipeline.max_in_flight` frames per camera are inside the stages and every stage's
//! mailbox is bounded by cameras × that. When the stages fall behind, the pump stops
//! taking frames, the camera's ring fills and drops its oldest frame — GStreamer's
//! streaming thread never waits. Detect workers may finish frames out of order; the
//! decide stage restores each camera's order (sequence numbers) before tracking.
//!
//! Shutdown ([`crate::shutdown`]): pumps stop when the service's token is requested;
//! [`Pipeline::shutdown`] then stops the cameras, drains the frames in flight, decides
//! open tracks and writes their events to the outbox.

mod analyse;
mod batch;
mod decide;
mod history;
mod publish;
mod regions;
mod review;
mod sequence;
mod snapshot;

pub use snapshot::{
    forget_identity as forget_snapshots, preview, prune as prune_snapshots, snapshot_path,
};

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::engine::{EngineError, EngineSetup};
use crate::events::bus::EventBus;
use crate::events::config::EventsConfig;
use crate::gallery::service::GalleryService;
use crate::ingest::camera::{self, CameraActor};
use crate::ingest::{CameraRegistry, CameraState, CameraStatus, FrameRing, I420Frame};
use crate::shutdown::Shutdown;
use crate::stages::align::AlignedFace;
use crate::stages::Detection;
use crate::telemetry::{metrics, BackendLabel, Metrics};

pub use decide::TrackFlush;
pub use regions::{CameraPlanner, DetectPlan};

/// Errors starting the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("GStreamer cannot start: {0}")]
    Gstreamer(String),
    #[error("warming up the {stage} session failed: {reason}")]
    WarmUp { stage: &'static str, reason: String },
}

/// Threads per inference session for the streaming pipeline when `inference.threads = 0`:
/// the machine's cores split evenly between the detect workers and the embed stage, at
/// least one each. (Every session taking every core, next to GStreamer's decoder threads,
/// oversubscribes the machine: BENCHMARKS.md §7.)
pub fn session_threads(configured: usize, cores: usize, detect_workers: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    (cores / (detect_workers + 1)).max(1)
}

/// Camera runs started in this process: each start of a camera takes the next number,
/// so the decide stage tells a camera started again from its previous run.
static CAMERA_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a frame came from and when.
#[derive(Debug, Clone)]
pub struct FrameMeta {
    pub camera: Arc<str>,
    /// Which start of the camera on this node the frame belongs to (increasing).
    pub run: u64,
    /// Sequence number of the frames of this camera run sent into the stages, from 0
    /// (no gaps).
    pub seq: u64,
    pub captured_at: SystemTime,
    pub captured_instant: Instant,
    pub width: u32,
    pub height: u32,
}

/// One face as it moves through the stages.
#[derive(Debug, Clone)]
pub struct FaceItem {
    /// In full-frame pixels.
    pub detection: Detection,
    pub aligned: Option<AlignedFace>,
    pub quality: Option<f32>,
    pub embedding: Option<Vec<f32>>,
    /// Set by the embed stage: this face is to be embedded.
    pub wanted: bool,
    /// Set by the embed stage: its batch failed (counted apart from low quality).
    pub embed_failed: bool,
}

/// Each camera's live tracks as the decide stage last left them, for the stages before
/// it: the embed stage skips faces whose embedding could change nothing (on a decided
/// track, whose identity event is out — most faces of a person crossing the scene — or
/// below an undecided track's full best shots), and the camera's detection planner
/// searches around every live track at full resolution.
#[derive(Default)]
pub(crate) struct TrackBoard {
    /// The decided tracks only.
    cameras: Mutex<HashMap<Arc<str>, Vec<TrackBox>>>,
    live: Mutex<HashMap<Arc<str>, Vec<TrackBox>>>,
}

/// Where a track was last seen and how it moves (for the embed stage and the detection
/// planner).
#[derive(Debug, Clone, Copy)]
pub struct TrackBox {
    pub bbox: crate::stages::BBox,
    /// Box centre velocity, pixels per millisecond.
    pub velocity: [f32; 2],
    pub last_seen_ms: i64,
    /// Its identity event is out: it only needs following, not embedding.
    pub decided: bool,
    /// Undecided with its best shots full: a face of quality at or below this cannot
    /// enter them, so its embedding would change nothing.
    pub shot_floor: Option<f32>,
}

/// Whether the embed stage embeds a face, and why not (`facestream_embed_faces_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbedNeed {
    Embed,
    /// On a track whose identity event is out.
    DecidedTrack,
    /// On an undecided track whose best shots are all better than this face.
    ShotsFull,
}

/// IoU with a track's predicted box above which a face is taken to be that track.
const DECIDED_IOU: f32 = 0.5;

impl TrackBox {
    /// Whether `bbox`, seen at `timestamp_ms`, is this track's face: where the motion
    /// model says, or where it was (a person who stopped).
    fn holds(&self, bbox: &crate::stages::BBox, timestamp_ms: i64) -> bool {
        let dt = (timestamp_ms - self.last_seen_ms) as f32;
        let predicted = crate::stages::BBox {
            x: self.bbox.x + self.velocity[0] * dt,
            y: self.bbox.y + self.velocity[1] * dt,
            ..self.bbox
        };
        predicted.iou(bbox).max(self.bbox.iou(bbox)) >= DECIDED_IOU
    }
}

impl TrackBoard {
    pub(crate) fn set(&self, camera: &Arc<str>, boxes: Vec<TrackBox>) {
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera.clone(), boxes);
    }

    pub(crate) fn set_live(&self, camera: &Arc<str>, boxes: Vec<TrackBox>) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera.clone(), boxes);
    }

    /// Every live track of `camera`.
    pub(crate) fn live(&self, camera: &Arc<str>) -> Vec<TrackBox> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(camera)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `bbox` (seen at `timestamp_ms`) lies on a decided track of `camera`.
    pub(crate) fn covers(
        &self,
        camera: &Arc<str>,
        bbox: &crate::stages::BBox,
        timestamp_ms: i64,
    ) -> bool {
        let cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        cameras
            .get(camera)
            .is_some_and(|boxes| boxes.iter().any(|d| d.holds(bbox, timestamp_ms)))
    }

    /// Whether a face of `quality` at `bbox` (seen at `timestamp_ms`) is worth embedding:
    /// not when it lies on a decided track, nor on an undecided track whose best shots
    /// are all better (it could not change the track's template).
    pub(crate) fn embed_need(
        &self,
        camera: &Arc<str>,
        bbox: &crate::stages::BBox,
        quality: f32,
        timestamp_ms: i64,
    ) -> EmbedNeed {
        if self.covers(camera, bbox, timestamp_ms) {
            return EmbedNeed::DecidedTrack;
        }
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let full = live.get(camera).is_some_and(|boxes| {
            boxes.iter().any(|t| {
                !t.decided
                    && t.shot_floor.is_some_and(|floor| quality <= floor)
                    && t.holds(bbox, timestamp_ms)
            })
        });
        if full {
            EmbedNeed::ShotsFull
        } else {
            EmbedNeed::Embed
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A frame and its faces: the message every stage receives and passes on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Work {
    pub meta: FrameMeta,
    /// The full-resolution frame; released after alignment.
    pub frame: Option<Arc<I420Frame>>,
    /// Where the detector looks in this frame.
    pub plan: DetectPlan,
    pub faces: Vec<FaceItem>,
}

/// Runs `f`; a panic inside (a bug on some input) is caught, counted
/// (`facestream_stage_panics_total{stage}`) and logged, and comes back as an error: the
/// stage's thread lives on.
pub(crate) fn catch_panic<T>(
    stage: &str,
    camera: &str,
    f: impl FnOnce() -> T,
) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        metrics()
            .stage_panics
            .get_or_create(&Metrics::stage(stage))
            .inc();
        tracing::error!(
            stage,
            camera,
            panic = %message,
            "a pipeline stage panicked: its work on this frame is given up and the stage \
             keeps running (a bug: please report it with this line)"
        );
        format!("the {stage} stage panicked: {message}")
    })
}

/// Runs a stage's work on one frame under [`catch_panic`]. After a panic the frame comes
/// back with its metadata only — no image, no faces — so it still reaches the decide
/// stage in its camera's order with its flow-control credit.
pub(crate) fn guarded(stage: &str, work: Work, f: impl FnOnce(Work) -> Work) -> Work {
    let meta = work.meta.clone();
    catch_panic(stage, &meta.camera.clone(), || f(work)).unwrap_or_else(|_| Work {
        meta,
        frame: None,
        plan: DetectPlan::default(),
        faces: Vec::new(),
    })
}

/// A stage's metrics.
pub(crate) struct Meter {
    pub(crate) received: Counter,
    pub(crate) processed: Counter,
    pub(crate) errors: Counter,
    pub(crate) depth: Gauge,
    pub(crate) latency: Histogram,
}

impl Meter {
    pub(crate) fn new(stage: &str) -> Meter {
        let m = metrics();
        let label = Metrics::stage(stage);
        // at 0 from the start, so the first panic is an increase Prometheus sees
        let _ = m.stage_panics.get_or_create(&label);
        Meter {
            received: m.stage_received.get_or_create(&label).clone(),
            processed: m.stage_processed.get_or_create(&label).clone(),
            errors: m.stage_errors.get_or_create(&label).clone(),
            depth: m.stage_queue_depth.get_or_create(&label).clone(),
            latency: m.stage_latency.get_or_create(&label).clone(),
        }
    }

    /// An item left the queue.
    pub(crate) fn take(&self) {
        self.depth.dec();
        self.received.inc();
    }

    pub(crate) fn done(&self, started: Instant) {
        self.latency.observe(started.elapsed().as_secs_f64());
        self.processed.inc();
    }

    pub(crate) fn error(&self) {
        self.errors.inc();
    }
}

/// The next stage: its mailbox and its queue-depth gauge.
#[derive(Clone)]
pub(crate) struct Next {
    recipient: Recipient<Work>,
    depth: Gauge,
}

impl Next {
    pub(crate) fn new(recipient: Recipient<Work>, stage: &str) -> Next {
        Next {
            recipient,
            depth: metrics()
                .stage_queue_depth
                .get_or_create(&Metrics::stage(stage))
                .clone(),
        }
    }

    pub(crate) fn send(&self, work: Work) {
        self.depth.inc();
        // Unbounded in itself; bounded by the per-camera credits.
        self.recipient.do_send(work);
    }
}

/// Frames a camera may have inside the stages.
pub(crate) struct Credits {
    /// Credits available, and when one last came back.
    state: Mutex<(usize, Instant)>,
    returned: Condvar,
    capacity: usize,
}

impl Credits {
    fn new(capacity: usize) -> Credits {
        Credits {
            state: Mutex::new((capacity, Instant::now())),
            returned: Condvar::new(),
            capacity,
        }
    }

    /// Take a credit, waiting up to `wait`.
    fn acquire(&self, wait: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .returned
            .wait_timeout_while(guard, wait, |s| s.0 == 0)
            .unwrap_or_else(|p| p.into_inner());
        if guard.0 == 0 {
            return false;
        }
        guard.0 -= 1;
        true
    }

    pub(crate) fn release(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = (guard.0 + 1).min(self.capacity);
        guard.1 = Instant::now();
        self.returned.notify_all();
    }

    fn all_returned(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 == self.capacity
    }

    /// Every credit has been out for longer than `after` with none coming back: a stage
    /// lost or is stuck on this camera's frames.
    fn stalled(&self, after: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 == 0 && guard.1.elapsed() >= after
    }

    /// Give every credit back (the frames they stood for are given up on).
    fn reset(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *guard = (self.capacity, Instant::now());
        self.returned.notify_all();
    }
}

/// The running pipeline.
pub struct Pipeline {
    /// What it takes to start one more camera on the running stages.
    launcher: Launcher,
    /// The cameras running now, by id.
    running: Mutex<HashMap<String, RunningCamera>>,
    /// The pumps' token: a child of the service's, also requested by [`Pipeline::shutdown`].
    stop: Shutdown,
    credits: Vec<Arc<Credits>>,
    decide: Addr<decide::DecideActor>,
    publish: Addr<publish::PublishActor>,
    /// The history stage (`history.enabled`), flushed last at shutdown.
    history: Option<history::Keeper>,
    arbiters: Vec<Arbiter>,
    registry: Arc<CameraRegistry>,
}

/// One camera's ingest: its actor, its pump thread and the pump's token.
struct RunningCamera {
    actor: Addr<CameraActor>,
    pump: std::thread::JoinHandle<()>,
    stop: Shutdown,
}

/// The shared stages a camera is connected to.
/// The stores the pipeline keeps tracks in, besides the events.
#[derive(Default)]
pub struct Kept {
    /// Ended unknown tracks for review (`review.enabled`).
    pub review: Option<Arc<crate::review::ReviewStore>>,
    /// Every decided track as an appearance (`history.enabled`).
    pub history: Option<Arc<crate::history::History>>,
}

/// What the streaming pipeline is built from, assembled by the configuration
/// (`Config::pipeline_setup`) or by a test: the engine start-up resolved, and the sections
/// the stages use.
#[derive(Clone)]
pub struct PipelineSetup {
    pub engine: EngineSetup,
    pub cameras: Vec<crate::ingest::CameraConfig>,
    pub pipeline: crate::ingest::PipelineConfig,
    pub track: crate::track::TrackConfig,
    pub events: EventsConfig,
    pub review: crate::review::ReviewConfig,
    /// `match.top_k`: candidates kept per decided track.
    pub top_k: usize,
    /// This node's id (`cluster.node_id`, resolved).
    pub node_id: String,
    /// `cluster.camera_leases`: the cluster decides which cameras run here.
    pub camera_leases: bool,
}

struct Launcher {
    cameras: Vec<crate::ingest::CameraConfig>,
    pipeline: crate::ingest::PipelineConfig,
    max_side: u32,
    min_face_px: f32,
    /// camera.up / camera.down, through the publish stage (kept and retried there).
    events: crate::ingest::camera::CameraEvents,
    credits: HashMap<Arc<str>, Arc<Credits>>,
    detect: Next,
    decided: Arc<TrackBoard>,
    /// This node's id in the cameras' status (`cluster.node_id`).
    node: String,
}

impl Pipeline {
    /// Build the stages and start every enabled camera (with `cluster.camera_leases`,
    /// none: the lease loop starts and stops them). Call inside an actix `System`.
    /// The pumps stop handing frames to the stages once `shutdown` is requested; the
    /// rest stops in [`Pipeline::shutdown`].
    pub fn start(
        setup: &PipelineSetup,
        gallery: Arc<GalleryService>,
        events: EventBus,
        keep: Kept,
        shutdown: &Shutdown,
    ) -> Result<Pipeline, PipelineError> {
        let Kept { review, history } = keep;
        // with camera leases the cluster decides which cameras run here
        let leased = setup.camera_leases;
        gstreamer::init().map_err(|e| PipelineError::Gstreamer(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = session_threads(
            setup.engine.options.threads,
            cores,
            setup.pipeline.detect_workers,
        );
        let config = &{
            let mut c = setup.clone();
            c.engine.options.threads = threads;
            c
        };
        let engine = &config.engine;
        let pc = &config.pipeline;
        let m = metrics();
        let publish_arbiter = Arbiter::new();
        let publish = publish::PublishActor::start_in_arbiter(&publish_arbiter.handle(), {
            let events = events.clone();
            move |_| publish::PublishActor::new(events)
        });
        let decide_arbiter = Arbiter::new();
        let cameras: Vec<_> = config.cameras.iter().filter(|c| c.enabled).collect();
        let credits: HashMap<Arc<str>, Arc<Credits>> = cameras
            .iter()
            .map(|c| {
                (
                    Arc::from(c.id.as_str()),
                    Arc::new(Credits::new(pc.max_in_flight)),
                )
            })
            .collect();
        let decided = Arc::new(TrackBoard::default());
        let snapshots_on = config.events.snapshots.enabled;
        let snapshots = snapshots_on.then(|| {
            let sc = config.events.snapshots.clone();
            let events = events.clone();
            SyncArbiter::start(1, move || {
                snapshot::SnapshotKeeper::new(
                    std::path::PathBuf::from(&sc.dir),
                    sc.retention_s,
                    sc.max_side,
                    events.clone(),
                )
            })
        });
        let review = review.map(|store| {
            let config = config.review.clone();
            let shots = config.shots;
            let keeper = SyncArbiter::start(1, move || {
                review::ReviewKeeper::new(store.clone(), config.clone())
            });
            (keeper, shots)
        });
        let history_keeper = history.map(|h| history::Keeper::start(h, gallery.erasures().clone()));
        // the history stage's timer: what waits for the store is written when it is back,
        // new tracks or not
        if let Some(keeper) = &history_keeper {
            let (keeper, stop) = (keeper.clone(), shutdown.clone());
            actix::spawn(async move {
                while !stop.is_requested() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    keeper.flush();
                }
            });
        }
        let history = history_keeper
            .clone()
            .map(|keeper| (keeper, config.node_id.clone()));
        let decide = decide::DecideActor::start_in_arbiter(&decide_arbiter.handle(), {
            let (track, events_cfg) = (config.track.clone(), config.events.clone());
            let (credits, publish, decided) = (credits.clone(), publish.clone(), decided.clone());
            let top_k = config.top_k;
            move |_| {
                decide::DecideActor::new(
                    track,
                    top_k,
                    gallery,
                    credits,
                    publish,
                    decided,
                    decide::Keeping {
                        thumbnails: events_cfg.thumbnails,
                        review,
                        snapshots,
                        history,
                    },
                )
            }
        });
        let warm_started = Instant::now();
        let (mut embed, embed_backend) = engine.embedder()?;
        embed
            .warm_up(pc.embed_max_batch)
            .map_err(|e| PipelineError::WarmUp {
                stage: "embed",
                reason: e.to_string(),
            })?;
        let model = embed.model_id().to_string();
        m.inference_info
            .get_or_create(&BackendLabel {
                stage: "embed".into(),
                backend: embed_backend,
                model: model.clone(),
            })
            .set(1);
        let embed_arbiter = Arbiter::new();
        let embed_addr = batch::EmbedBatcher::start_in_arbiter(&embed_arbiter.handle(), {
            let next = Next::new(decide.clone().recipient(), "decide");
            let (max_batch, wait) = (
                pc.embed_max_batch,
                Duration::from_millis(pc.embed_max_wait_ms),
            );
            let min_quality = config.track.min_match_quality;
            let decided = decided.clone();
            move |_| batch::EmbedBatcher::new(embed, max_batch, wait, min_quality, decided, next)
        });
        let quality = SyncArbiter::start(1, {
            let next = Next::new(embed_addr.recipient(), "embed");
            let qc = engine.quality.clone();
            move || analyse::QualityActor::new(qc.clone(), next.clone())
        });
        let align = SyncArbiter::start(1, {
            let next = Next::new(quality.recipient(), "quality");
            move || analyse::AlignActor::new(next.clone(), snapshots_on)
        });
        let mut detectors = Vec::new();
        for _ in 0..pc.detect_workers {
            let (mut detect, backend) = engine.detector()?;
            warm_up_detect(&mut detect, engine.detect.max_side).map_err(|e| {
                PipelineError::WarmUp {
                    stage: "detect",
                    reason: e.to_string(),
                }
            })?;
            m.inference_info
                .get_or_create(&BackendLabel {
                    stage: "detect".into(),
                    backend,
                    model: engine.detector_name().into(),
                })
                .set(1);
            detectors.push(detect);
        }
        tracing::info!(
            threads_per_session = threads,
            cores,
            seconds = warm_started.elapsed().as_secs_f32(),
            "inference sessions warmed up"
        );
        let detectors = Arc::new(Mutex::new(detectors));
        let detect = SyncArbiter::start(pc.detect_workers, {
            let next = Next::new(align.recipient(), "align");
            let max_side = engine.detect.max_side;
            move || {
                let detect = detectors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop()
                    .expect("one detector session per worker");
                analyse::DetectActor::new(detect, max_side, next.clone())
            }
        });
        let detect_next = Next::new(detect.recipient(), "detect");

        let registry = Arc::new(CameraRegistry::default());
        let stop = shutdown.child();
        let launcher = Launcher {
            cameras: cameras.iter().map(|c| (*c).clone()).collect(),
            pipeline: pc.clone(),
            max_side: engine.detect.max_side,
            min_face_px: engine.detect.min_face_px,
            events: {
                let publish = publish.clone();
                Arc::new(move |event| {
                    publish.do_send(publish::Publish {
                        event,
                        captured: None,
                    })
                })
            },
            credits: credits.clone(),
            detect: detect_next,
            decided,
            node: config.node_id.clone(),
        };
        for camera in &cameras {
            registry.add(CameraStatus {
                id: camera.id.clone(),
                url: camera.redacted_url(),
                source: camera.source.clone(),
                state: CameraState::Standby,
                since: chrono::Utc::now(),
                last_error: None,
                reconnects: 0,
                frames_decoded: 0,
                frames_analysed: 0,
                frames_dropped: 0,
                analysis_stalls: 0,
                last_analysis_stall: None,
                width: None,
                height: None,
                latest_frame: None,
                node: None,
            });
        }
        let pipeline = Pipeline {
            launcher,
            running: Mutex::new(HashMap::new()),
            stop,
            credits: credits.into_values().collect(),
            decide,
            publish,
            history: history_keeper,
            arbiters: vec![publish_arbiter, decide_arbiter, embed_arbiter],
            registry,
        };
        if !leased {
            for camera in &cameras {
                pipeline.start_camera(&camera.id);
            }
        }
        tracing::info!(
            cameras = cameras.len(),
            started = pipeline.running_cameras().len(),
            leased,
            detect_workers = pc.detect_workers,
            model = %model,
            "streaming pipeline started"
        );
        Ok(pipeline)
    }

    /// The ids of the cameras this pipeline may run (the enabled ones).
    pub fn camera_ids(&self) -> Vec<String> {
        self.launcher.cameras.iter().map(|c| c.id.clone()).collect()
    }

    /// The ids of the cameras running now.
    pub fn running_cameras(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Start watching camera `id` on the running stages (nothing when it runs already or
    /// is not one of the enabled cameras). Call inside the actix `System`.
    pub fn start_camera(&self, id: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(camera) = self.launcher.cameras.iter().find(|c| c.id == id) else {
            return false;
        };
        if running.contains_key(id) || self.stop.is_requested() {
            return false;
        }
        let l = &self.launcher;
        let status = self
            .registry
            .entry(id)
            .expect("every enabled camera is registered");
        {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.state = CameraState::Connecting;
            s.since = chrono::Utc::now();
            s.node = Some(l.node.clone());
        }
        let ring = FrameRing::new(l.pipeline.frame_queue);
        let key: Arc<str> = Arc::from(id);
        let stop = self.stop.child();
        let planner = CameraPlanner::new(
            &camera.id,
            camera.detection.clone(),
            l.max_side,
            l.min_face_px,
            camera.detect_fps,
        );
        let pump = spawn_pump(Pump {
            camera: key.clone(),
            run: CAMERA_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ring: ring.clone(),
            credits: l.credits[&key].clone(),
            detect: l.detect.clone(),
            stop: stop.clone(),
            planner,
            tracks: l.decided.clone(),
            status: status.clone(),
            stage_timeout: Duration::from_millis(l.pipeline.stage_timeout_ms),
        });
        let actor = CameraActor::new(
            camera.clone(),
            l.pipeline.clone(),
            status,
            ring,
            Some(l.events.clone()),
        )
        .start();
        running.insert(id.to_string(), RunningCamera { actor, pump, stop });
        tracing::info!(camera = %id, "camera started");
        true
    }

    /// Record which node watches camera `id` while this one does not (`None`: nobody).
    pub fn set_watcher(&self, id: &str, node: Option<String>) {
        if self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            return;
        }
        if let Some(status) = self.registry.entry(id) {
            status.lock().unwrap_or_else(|p| p.into_inner()).node = node;
        }
    }

    /// Stop watching camera `id` (its frames in flight still finish); it is left in
    /// `standby`. Returns once its ingest has stopped.
    pub async fn stop_camera(&self, id: &str) -> bool {
        let Some(camera) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        else {
            return false;
        };
        Self::stop_running(camera).await;
        let states: Vec<&str> = CameraState::ALL.iter().map(|s| s.as_str()).collect();
        metrics().forget_camera_state(id, &states);
        if let Some(status) = self.registry.entry(id) {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.state = CameraState::Standby;
            s.since = chrono::Utc::now();
            s.node = None;
        }
        tracing::info!(camera = %id, "camera stopped");
        true
    }

    async fn stop_running(camera: RunningCamera) {
        let _ = camera.actor.send(camera::Stop).await;
        camera.stop.request();
        let pump = camera.pump;
        let _ = tokio::task::spawn_blocking(move || pump.join()).await;
    }

    /// Every camera's status (for the API).
    pub fn registry(&self) -> Arc<CameraRegistry> {
        self.registry.clone()
    }

    /// Stop ingest, drain the stages, decide open tracks and write their events.
    pub async fn shutdown(self, drain: Duration) {
        // every camera tears down at once (each waits up to 5 s for GStreamer)
        self.stop.request();
        let running: Vec<RunningCamera> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        futures_util::future::join_all(running.into_iter().map(Self::stop_running)).await;
        let deadline = Instant::now() + drain;
        while !self.credits.iter().all(|c| c.all_returned()) {
            if Instant::now() > deadline {
                tracing::warn!("frames still in the stages at shutdown; their faces are lost");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.decide.send(TrackFlush).await;
        let _ = self.publish.send(publish::Barrier).await;
        // the tracks just ended, and what waited for the store, written once more
        if let Some(keeper) = &self.history {
            keeper.last_flush().await;
        }
        // Stop the stage threads and wait for them, so their inference sessions are gone
        // before the process exits (native runtimes crash when torn down under a live
        // session on another thread).
        drop(self.decide);
        drop(self.publish);
        let arbiters = self.arbiters;
        let _ = tokio::task::spawn_blocking(move || {
            for a in arbiters {
                a.stop();
                let _ = a.join();
            }
        })
        .await;
        tracing::info!("streaming pipeline stopped");
    }
}

/// Run the detector once on every input shape it will meet before frames arrive: both
/// tile sizes, and the downscale (`detect.max_side`) of a 16:9 and a 4:3 frame (backends
/// compile per shape).
fn warm_up_detect(
    detect: &mut crate::stages::detect::Detect,
    max_side: u32,
) -> Result<(), crate::stages::detect::DetectError> {
    use crate::stages::motion::plan::TILE_SIZES;
    for size in TILE_SIZES {
        detect.detect_with(&image::RgbImage::new(size, size), size)?;
    }
    let side = max_side;
    for (w, h) in [(side, side * 9 / 16), (side, side * 3 / 4)] {
        detect.detect_with(&image::RgbImage::new(w, h.max(1)), side)?;
    }
    Ok(())
}

/// What a camera's pump thread owns.
struct Pump {
    camera: Arc<str>,
    run: u64,
    ring: FrameRing,
    credits: Arc<Credits>,
    detect: Next,
    stop: Shutdown,
    planner: CameraPlanner,
    tracks: Arc<TrackBoard>,
    status: Arc<Mutex<CameraStatus>>,
    stage_timeout: Duration,
}

/// Moves a camera's frames from its ring into the stages, one credit per frame, each with
/// its detection plan (motion, live tracks, overload level: see [`regions`]).
fn spawn_pump(pump: Pump) -> std::thread::JoinHandle<()> {
    let Pump {
        camera,
        run,
        ring,
        credits,
        detect,
        stop,
        mut planner,
        tracks,
        status,
        stage_timeout,
    } = pump;
    let stalls = metrics()
        .pipeline_stalls
        .get_or_create(&Metrics::camera(&camera))
        .clone();
    std::thread::Builder::new()
        .name(format!("pump-{camera}"))
        .spawn(move || {
            let mut seq = 0u64;
            let tick = Duration::from_millis(100);
            while !stop.is_requested() {
                if !credits.acquire(tick) {
                    if credits.stalled(stage_timeout) {
                        stalls.inc();
                        {
                            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                            s.analysis_stalls += 1;
                            s.last_analysis_stall = Some(chrono::Utc::now());
                        }
                        tracing::error!(
                            camera = %camera,
                            timeout_ms = stage_timeout.as_millis() as u64,
                            "no frame of this camera came out of the analysis stages in time: \
                             a stage is dead or stuck; its frames are given up and the camera goes on"
                        );
                        credits.reset();
                    }
                    continue;
                }
                match ring.receiver().recv_timeout(tick) {
                    Ok(captured) => {
                        let meta = FrameMeta {
                            camera: camera.clone(),
                            run,
                            seq,
                            captured_at: captured.captured_at,
                            captured_instant: captured.captured_instant,
                            width: captured.frame.width,
                            height: captured.frame.height,
                        };
                        seq += 1;
                        planner.observe_load(
                            ring.dropped(),
                            captured.captured_instant.elapsed(),
                        );
                        let plan = planner.plan(
                            &captured.frame,
                            epoch_ms(captured.captured_at),
                            &tracks.live(&camera),
                        );
                        detect.send(Work {
                            meta,
                            frame: Some(captured.frame),
                            plan,
                            faces: Vec::new(),
                        });
                    }
                    Err(_) => credits.release(),
                }
            }
        })
        .expect("spawning a pump thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_is_embedded_only_where_its_embedding_can_change_a_decision() {
        let camera: Arc<str> = Arc::from("need-test");
        let at = |x: f32| crate::stages::BBox {
            x,
            y: 100.0,
            w: 50.0,
            h: 60.0,
        };
        let track = |x: f32, decided: bool, shot_floor: Option<f32>| TrackBox {
            bbox: at(x),
            velocity: [0.0, 0.0],
            last_seen_ms: 0,
            decided,
            shot_floor,
        };
        let tracks = TrackBoard::default();
        let live = vec![
            track(100.0, true, None),
            track(400.0, false, Some(0.6)),
            track(700.0, false, None),
        ];
        tracks.set(
            &camera,
            live.iter().filter(|t| t.decided).copied().collect(),
        );
        tracks.set_live(&camera, live);
        let need = |x: f32, q: f32| tracks.embed_need(&camera, &at(x), q, 200);
        assert_eq!(need(102.0, 0.9), EmbedNeed::DecidedTrack);
        assert_eq!(
            need(402.0, 0.5),
            EmbedNeed::ShotsFull,
            "worse than every kept shot"
        );
        assert_eq!(
            need(402.0, 0.7),
            EmbedNeed::Embed,
            "better than the worst kept shot"
        );
        assert_eq!(
            need(702.0, 0.1),
            EmbedNeed::Embed,
            "best shots not full yet"
        );
        assert_eq!(need(1000.0, 0.1), EmbedNeed::Embed, "on no track");
        let other: Arc<str> = Arc::from("need-test-other");
        assert_eq!(
            tracks.embed_need(&other, &at(402.0), 0.5, 200),
            EmbedNeed::Embed,
            "another camera's tracks do not count"
        );
    }

    #[test]
    fn a_panic_in_a_stage_is_counted_and_the_frame_goes_on_without_faces() {
        let meta = FrameMeta {
            camera: Arc::from("guard-test"),
            run: 1,
            seq: 7,
            captured_at: SystemTime::now(),
            captured_instant: Instant::now(),
            width: 64,
            height: 48,
        };
        let panics = metrics()
            .stage_panics
            .get_or_create(&Metrics::stage("guard-test-stage"))
            .clone();
        let work = Work {
            meta: meta.clone(),
            frame: Some(Arc::new(I420Frame::from_rgb(&image::RgbImage::new(64, 48)))),
            plan: DetectPlan::default(),
            faces: Vec::new(),
        };
        let out = guarded("guard-test-stage", work, |_| panic!("bad input"));
        assert_eq!(panics.get(), 1);
        assert_eq!((&*out.meta.camera, out.meta.seq), ("guard-test", 7));
        assert!(out.frame.is_none() && out.faces.is_empty());
        // no panic: the stage's result passes through untouched
        let work = Work {
            meta,
            frame: None,
            plan: DetectPlan::default(),
            faces: Vec::new(),
        };
        let out = guarded("guard-test-stage", work, |mut w| {
            w.meta.seq = 8;
            w
        });
        assert_eq!(out.meta.seq, 8);
        assert_eq!(panics.get(), 1);
        let err = catch_panic("guard-test-stage", "c", || -> u32 { panic!("{}", 42) });
        assert!(err.unwrap_err().contains("42"));
        assert_eq!(panics.get(), 2);
    }

    #[test]
    fn credits_that_never_come_back_are_a_stall_and_a_reset_restores_them() {
        let credits = Credits::new(2);
        assert!(credits.acquire(Duration::ZERO) && credits.acquire(Duration::ZERO));
        assert!(!credits.acquire(Duration::ZERO));
        assert!(credits.stalled(Duration::ZERO));
        assert!(!credits.stalled(Duration::from_secs(3600)));
        credits.release();
        assert!(!credits.stalled(Duration::ZERO), "one came back");
        assert!(credits.acquire(Duration::ZERO));
        credits.reset();
        assert!(credits.all_returned());
        assert!(!credits.stalled(Duration::ZERO));
    }

    #[test]
    fn zero_threads_splits_the_cores_between_detect_and_embed() {
        assert_eq!(session_threads(0, 2, 1), 1);
        assert_eq!(session_threads(0, 16, 1), 8);
        assert_eq!(session_threads(0, 16, 3), 4);
        assert_eq!(session_threads(0, 1, 2), 1);
        assert_eq!(session_threads(3, 2, 1), 3);
    }
}
