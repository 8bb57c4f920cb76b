//! The per-frame analysis actors: detect (on a downscaled copy), align (crops from the
//! full-resolution frame) and quality. Each runs on its own `SyncArbiter` threads, since
//! their work is CPU-bound and synchronous.

use std::time::Instant;

use actix::prelude::*;

use super::{FaceItem, Meter, Next, Work};
use crate::ingest::{I420Frame, Region};
use crate::stages::align;
use crate::stages::detect::Detect;
use crate::stages::quality::{self, QualityConfig};
use crate::stages::Detection;
use crate::telemetry::{metrics, Metrics};

/// Inter-ocular distance of the aligned template, in crop pixels.
const TEMPLATE_IOD: f32 = 35.2;

/// Runs the detector on a downscaled RGB copy of each frame.
pub(super) struct DetectActor {
    detect: Detect,
    max_side: u32,
    next: Next,
    meter: Meter,
}

impl DetectActor {
    pub(super) fn new(detect: Detect, max_side: u32, next: Next) -> DetectActor {
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

/// Integer shrink factor that brings the longer side to at most `max_side`.
pub(crate) fn detection_step(width: u32, height: u32, max_side: u32) -> u32 {
    width.max(height).div_ceil(max_side.max(1)).max(1)
}

impl Handler<Work> for DetectActor {
    type Result = ();

    fn handle(&mut self, mut work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        if let Some(frame) = &work.frame {
            let step = detection_step(frame.width, frame.height, self.max_side);
            let small = frame.to_rgb(frame.full(), step);
            match self.detect.detect(&small) {
                Ok(found) => {
                    let s = step as f32;
                    work.faces = found
                        .into_iter()
                        .map(|mut d| {
                            d.bbox.x *= s;
                            d.bbox.y *= s;
                            d.bbox.w *= s;
                            d.bbox.h *= s;
                            for p in &mut d.landmarks {
                                p[0] *= s;
                                p[1] *= s;
                            }
                            FaceItem {
                                detection: d,
                                aligned: None,
                                quality: None,
                                embedding: None,
                                wanted: false,
                            }
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
        self.meter.done(started);
        self.next.send(work);
    }
}

/// Cuts each face from the full-resolution frame and aligns it to the 112×112 template.
pub(super) struct AlignActor {
    next: Next,
    meter: Meter,
}

impl AlignActor {
    pub(super) fn new(next: Next) -> AlignActor {
        AlignActor {
            next,
            meter: Meter::new("align"),
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

    fn handle(&mut self, mut work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        if let Some(frame) = work.frame.take() {
            let before = work.faces.len();
            work.faces.retain_mut(|face| {
                face.aligned = align_from_frame(&frame, &face.detection);
                face.aligned.is_some()
            });
            if work.faces.len() < before {
                self.meter.error();
            }
        }
        self.meter.done(started);
        self.next.send(work);
    }
}

/// Scores each aligned face (size, sharpness, pose, exposure, detector confidence).
pub(super) struct QualityActor {
    config: QualityConfig,
    next: Next,
    meter: Meter,
}

impl QualityActor {
    pub(super) fn new(config: QualityConfig, next: Next) -> QualityActor {
        QualityActor {
            config,
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

    fn handle(&mut self, mut work: Work, _: &mut SyncContext<Self>) {
        self.meter.take();
        let started = Instant::now();
        for face in &mut work.faces {
            if let Some(crop) = &face.aligned {
                face.quality = Some(quality::assess(&face.detection, crop, &self.config).score);
            }
        }
        self.meter.done(started);
        self.next.send(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_step_brings_the_long_side_under_the_limit() {
        assert_eq!(detection_step(1920, 1080, 640), 3);
        assert_eq!(detection_step(1280, 720, 640), 2);
        assert_eq!(detection_step(640, 480, 640), 1);
        assert_eq!(detection_step(3840, 2160, 640), 6);
    }
}
