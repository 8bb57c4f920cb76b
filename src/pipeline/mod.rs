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
//! The files: [`Work`] and its faces in `work`, credits and meters in `flow`, the track
//! board the stages before decide read in `tracks`, a camera's pump in `pump`, building
//! the stages in `start`, one camera's start and stop in `cameras`, and one file per
//! stage (`analyse`: detect, align and quality; `batch`: embed; `decide`; `publish`; the
//! keepers `snapshot`, `review`, `history`), with the detection plan in `regions` and the
//! appearances the decide stage groups tracks into (one person's passage) in `appearances`.
//!
//! Shutdown ([`crate::shutdown`]): pumps stop when the service's token is requested;
//! [`Pipeline::shutdown`] then stops the cameras, drains the frames in flight, decides
//! open tracks and writes their events to the outbox.

mod analyse;
mod appearances;
mod batch;
mod cameras;
mod decide;
mod flow;
mod history;
mod publish;
mod pump;
mod regions;
mod review;
mod sequence;
mod snapshot;
mod start;
mod tracks;
mod work;

pub use snapshot::{
    forget_identity as forget_snapshots, preview, prune as prune_snapshots, snapshot_path,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::engine::{EngineError, EngineSetup};
use crate::events::config::EventsConfig;
use crate::ingest::camera::CameraActor;
use crate::ingest::CameraRegistry;
use crate::shutdown::Shutdown;

pub use decide::TrackFlush;
pub use regions::{CameraPlanner, DetectPlan};
pub use tracks::TrackBox;
pub use work::{FaceItem, FrameMeta, Work};

pub(crate) use flow::{Credits, Meter, Next};
pub(crate) use tracks::{EmbedNeed, TrackBoard};
pub(crate) use work::{catch_panic, epoch_ms, guarded};

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

/// The shared stages a camera is connected to, and what a camera's start needs.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_splits_the_cores_between_detect_and_embed() {
        assert_eq!(session_threads(0, 2, 1), 1);
        assert_eq!(session_threads(0, 16, 1), 8);
        assert_eq!(session_threads(0, 16, 3), 4);
        assert_eq!(session_threads(0, 1, 2), 1);
        assert_eq!(session_threads(3, 2, 1), 3);
    }
}
