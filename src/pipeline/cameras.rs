//! Starting and stopping one camera on the running stages (at start, or round by round
//! when the cluster's camera leases decide which cameras run here).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::pump::{spawn_pump, Pump};
use super::{CameraPlanner, Pipeline, RunningCamera, CAMERA_RUNS};
use crate::ingest::camera::{self, CameraActor};
use crate::ingest::{CameraState, FrameRing};
use crate::telemetry::metrics;

impl Pipeline {
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

    pub(super) async fn stop_running(camera: RunningCamera) {
        let _ = camera.actor.send(camera::Stop).await;
        camera.stop.request();
        let pump = camera.pump;
        let _ = tokio::task::spawn_blocking(move || pump.join()).await;
    }
}
