//! A camera's pump: the thread that moves its frames from the drop-oldest ring into the
//! stages, one credit per frame, each with its detection plan, and says when the stages
//! stopped giving credits back (an analysis stall).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{epoch_ms, CameraPlanner, Credits, FrameMeta, Next, TrackBoard, Work};
use crate::ingest::{CameraStatus, FrameRing};
use crate::shutdown::Shutdown;
use crate::telemetry::{metrics, Metrics};

/// What a camera's pump thread owns.
pub(super) struct Pump {
    pub(super) camera: Arc<str>,
    pub(super) run: u64,
    pub(super) ring: FrameRing,
    pub(super) credits: Arc<Credits>,
    pub(super) detect: Next,
    pub(super) stop: Shutdown,
    pub(super) planner: CameraPlanner,
    pub(super) tracks: Arc<TrackBoard>,
    pub(super) status: Arc<Mutex<CameraStatus>>,
    pub(super) stage_timeout: Duration,
}

/// Moves a camera's frames from its ring into the stages, one credit per frame, each with
/// its detection plan (motion, live tracks, overload level: see [`regions`]).
pub(super) fn spawn_pump(pump: Pump) -> std::thread::JoinHandle<()> {
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
