//! The one message that flows through the stages — a frame and its faces ([`Work`]) —
//! and how a stage runs its part on it without a panic taking the stage down.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;

use super::DetectPlan;
use crate::ingest::I420Frame;
use crate::stages::align::AlignedFace;
use crate::stages::Detection;
use crate::telemetry::{metrics, Metrics};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
