//! Building the stages: publish, decide (with the snapshot, review and history keepers),
//! embed, quality, align and the detect workers, each session warmed up before the
//! first frame, then every enabled camera started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{
    analyse, batch, decide, history, publish, review, session_threads, snapshot, Credits, Kept,
    Launcher, Next, Pipeline, PipelineError, PipelineSetup, TrackBoard,
};
use crate::events::bus::EventBus;
use crate::gallery::service::GalleryService;
use crate::ingest::{CameraRegistry, CameraState, CameraStatus};
use crate::shutdown::Shutdown;
use crate::telemetry::{metrics, BackendLabel};

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
            let min_quality = config.track.min_match_quality;
            move || analyse::QualityActor::new(qc.clone(), min_quality, next.clone())
        });
        let align = SyncArbiter::start(1, {
            let next = Next::new(quality.recipient(), "quality");
            move || analyse::AlignActor::new(next.clone(), snapshots_on)
        });
        let mut detectors = Vec::new();
        for _ in 0..pc.detect_workers {
            let (mut detect, backend) = engine.detector()?;
            warm_up_detect(detect.as_mut(), engine.detect.max_side).map_err(|e| {
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
}

/// Run the detector once on every input shape it will meet before frames arrive: both
/// tile sizes, and the downscale (`detect.max_side`) of a 16:9 and a 4:3 frame (backends
/// compile per shape).
fn warm_up_detect(
    detect: &mut dyn crate::stages::detect::Detector,
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
