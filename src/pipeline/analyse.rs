//! The per-frame analysis actors: detect (the frame's [`DetectPlan`]: a downscaled copy,
//! full-resolution tiles where there is motion or a tracked face, or both), align (crops
//! from the full-resolution frame) and quality. Each runs on its own `SyncArbiter` threads, since
//! their work is CPU-bound and synchronous.

use std::time::Instant;

use actix::prelude::*;

use image::RgbImage;

use super::regions::{detection_step, DetectPlan};
use super::{guarded, FaceItem, Meter, Next, Work};
use crate::ingest::{I420Frame, Region};
use crate::stages::align;
use crate::stages::detect::{nms, DetectError, Detector};
use crate::stages::quality::{self, QualityConfig};
use crate::stages::Detection;
use crate::telemetry::faces::Reject;
use crate::telemetry::{metrics, Metrics};

/// Inter-ocular distance of the aligned template, in crop pixels.
const TEMPLATE_IOD: f32 = 35.2;

/// Runs the detector where each frame's plan says.
pub(super) struct DetectActor {
    detect: Box<dyn Detector>,
    max_side: u32,
    next: Next,
    meter: Meter,
}

impl DetectActor {
    pub(super) fn new(detect: Box<dyn Detector>, max_side: u32, next: Next) -> DetectActor {
        DetectActor {
            detect,
            max_side,
            next,
            meter: Meter::new("detect"),
        }
    }
}

impl Actor for DetectActor {
    type Context = SyncContext<Self>;
}

impl DetectActor {
    /// Run `plan` on `frame`: the passes and tiles it names, merged by NMS, then the
    /// camera's minimum face size and masks. Boxes and landmarks in full-frame pixels.
    fn run_plan(
        &mut self,
        frame: &I420Frame,
        plan: &DetectPlan,
    ) -> Result<Vec<Detection>, DetectError> {
        let (w, h) = (frame.width, frame.height);
        let mut found = Vec::new();
        if plan.full_resolution {
            let image = frame.to_rgb(frame.full(), 1);
            found.extend(self.detect.detect_with(&image, w.max(h))?);
        } else if plan.downscale {
            let step = detection_step(w, h, self.max_side);
            let small = frame.to_rgb(frame.full(), step);
            let faces = self.detect.detect_with(&small, self.max_side)?;
            found.extend(faces.into_iter().map(|d| scaled(d, step as f32, 0.0, 0.0)));
        }
        for tile in &plan.tiles {
            let side = tile.side();
            let crop = frame.to_rgb(
                Region {
                    x: tile.x,
                    y: tile.y,
                    width: side,
                    height: side,
                },
                tile.step,
            );
            let size = tile.size;
            let image = if crop.dimensions() == (size, size) {
                crop
            } else {
                // a frame smaller than the tile: same input shape, black beyond the frame
                let mut canvas = RgbImage::new(size, size);
                image::imageops::replace(&mut canvas, &crop, 0, 0);
                canvas
            };
            let faces = self.detect.detect_with(&image, size)?;
            found.extend(
                faces
                    .into_iter()
                    .map(|d| scaled(d, tile.step as f32, tile.x as f32, tile.y as f32))
                    .filter(|d| !tile.interior_edge(&d.bbox, w, h)),
            );
        }
        let config = self.detect.config();
        let candidates = found.len();
        let mut faces = nms(found, config.nms_threshold, config.top_k);
        tracing::debug!(
            downscale = plan.downscale,
            full_resolution = plan.full_resolution,
            tiles = plan.tiles.len(),
            candidates,
            faces = faces.len(),
            "detection plan run"
        );
        faces.retain(|f| {
            let [cx, cy] = f.bbox.centre();
            f.bbox.w >= plan.min_face_px
                && f.bbox.h >= plan.min_face_px
                && !plan
                    .mask
                    .as_ref()
                    .is_some_and(|m| m.contains([cx / w as f32, cy / h as f32]))
        });
        Ok(faces)
    }
}

/// A detection in an image read at `step` from (`x0`, `y0`) of the frame, in frame pixels.
fn scaled(mut d: Detection, step: f32, x0: f32, y0: f32) -> Detection {
    d.bbox.x = d.bbox.x * step + x0;
    d.bbox.y = d.bbox.y * step + y0;
    d.bbox.w *= step;
    d.bbox.h *= step;
    for p in &mut d.landmarks {
        p[0] = p[0] * step + x0;
        p[1] = p[1] * step + y0;
    }
    d
}

impl Handler<Work> for DetectActor {
    type Result = ();

    fn handle(&mut self, work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        let work = guarded("detect", work, |work| self.detect(work));
        self.meter.done(started);
        self.next.send(work);
    }
}

impl DetectActor {
    fn detect(&mut self, mut work: Work) -> Work {
        if let Some(frame) = &work.frame {
            match self.run_plan(frame, &work.plan) {
                Ok(found) => {
                    work.faces = found
                        .into_iter()
                        .map(|detection| FaceItem {
                            detection,
                            aligned: None,
                            quality: None,
                            embedding: None,
                            wanted: false,
                            embed_failed: false,
                        })
                        .collect();
                    metrics()
                        .faces_detected
                        .get_or_create(&Metrics::camera(&work.meta.camera))
                        .inc_by(work.faces.len() as u64);
                }
                Err(e) => {
                    self.meter.error();
                    tracing::warn!(camera = %work.meta.camera, error = %e, "detection failed on a frame");
                }
            }
        }
        work
    }
}

/// Cuts each face from the full-resolution frame and aligns it to the 112×112 template.
pub(super) struct AlignActor {
    next: Next,
    meter: Meter,
    /// Pass frames with faces on (for event snapshots) instead of releasing them here.
    keep_frames: bool,
}

impl AlignActor {
    pub(super) fn new(next: Next, keep_frames: bool) -> AlignActor {
        AlignActor {
            next,
            meter: Meter::new("align"),
            keep_frames,
        }
    }
}

impl Actor for AlignActor {
    type Context = SyncContext<Self>;
}

/// Align one face from the frame: convert only a region around it to RGB, shrunk by an
/// integer factor when the face is much larger than the template (so the bilinear warp
/// does not alias).
pub(crate) fn align_from_frame(frame: &I420Frame, d: &Detection) -> Option<align::AlignedFace> {
    let side = d.bbox.w.max(d.bbox.h);
    let pad = 0.6 * side;
    let x0 = (d.bbox.x - pad).max(0.0);
    let y0 = (d.bbox.y - pad).max(0.0);
    let region = frame.clamp(Region {
        x: x0 as u32,
        y: y0 as u32,
        width: (d.bbox.w + 2.0 * pad) as u32 + 1,
        height: (d.bbox.h + 2.0 * pad) as u32 + 1,
    });
    let [r, l] = [d.landmarks[0], d.landmarks[1]];
    let iod = (l[0] - r[0]).hypot(l[1] - r[1]);
    let step = ((iod / (2.0 * TEMPLATE_IOD)).floor() as u32).max(1);
    let crop = frame.to_rgb(region, step);
    let s = step as f32;
    let landmarks = d
        .landmarks
        .map(|p| [(p[0] - region.x as f32) / s, (p[1] - region.y as f32) / s]);
    align::align(&crop, &landmarks)
}

impl Handler<Work> for AlignActor {
    type Result = ();

    fn handle(&mut self, work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        let meter = &self.meter;
        let keep_frames = self.keep_frames;
        let work = guarded("align", work, |mut work| {
            if let Some(frame) = work.frame.take() {
                let before = work.faces.len();
                work.faces.retain_mut(|face| {
                    face.aligned = align_from_frame(&frame, &face.detection);
                    face.aligned.is_some()
                });
                if work.faces.len() < before {
                    meter.error();
                }
                if keep_frames && !work.faces.is_empty() {
                    work.frame = Some(frame);
                }
            }
            work
        });
        self.meter.done(started);
        self.next.send(work);
    }
}

/// Scores each aligned face (size, sharpness, pose, exposure, detector confidence).
/// Each face is counted for its camera's diagnosis (`telemetry::faces`): its size, and
/// why it cannot be recognised when it is below `track.min_match_quality`.
pub(super) struct QualityActor {
    config: QualityConfig,
    min_quality: f32,
    next: Next,
    meter: Meter,
}

impl QualityActor {
    pub(super) fn new(config: QualityConfig, min_quality: f32, next: Next) -> QualityActor {
        // past this size, size no longer limits a face's quality
        metrics().set_face_size_needed(config.size_full_iod_px);
        QualityActor {
            config,
            min_quality,
            next,
            meter: Meter::new("quality"),
        }
    }
}

impl Actor for QualityActor {
    type Context = SyncContext<Self>;
}

impl Handler<Work> for QualityActor {
    type Result = ();

    fn handle(&mut self, work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        let (config, min_quality) = (&self.config, self.min_quality);
        let work = guarded("quality", work, |mut work| {
            let camera = work.meta.camera.clone();
            for face in &mut work.faces {
                if let Some(crop) = &face.aligned {
                    let q = quality::assess(&face.detection, crop, config);
                    let rejected = (q.score < min_quality)
                        .then(|| Reject::of_component(q.components.weakest().0));
                    metrics().face_assessed(&camera, q.measures.interocular_px, rejected);
                    face.quality = Some(q.score);
                }
            }
            work
        });
        self.meter.done(started);
        self.next.send(work);
    }
}
