//! Detection: YuNet (OpenCV Zoo, 2023mar) finds faces, boxes and 5 landmarks.
//!
//! First stage after decoding. Only what detection needs is converted: the image is
//! scaled so its longer side is at most `detect.max_side`, written straight into a BGR
//! planar f32 tensor padded to a multiple of 32 (YuNet's largest stride), run through the
//! backend, decoded per stride (8/16/32) exactly as OpenCV's `FaceDetectorYN` does, then
//! filtered by score and non-maximum suppression and mapped back to full-image pixels.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{BBox, Detection};
use crate::inference::{Backend, InferenceError, Session, SessionOptions, Tensor};
use crate::models::VerifiedModel;

/// Detection settings (section `[detect]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Minimum detector confidence, in [0, 1], for a face to be kept (OpenCV's reference
    /// uses 0.6; raise it to trade recall for fewer false faces).
    pub score_threshold: f32,
    /// IoU above which the lower-scoring of two overlapping boxes is suppressed.
    pub nms_threshold: f32,
    /// Most faces kept per image after NMS.
    pub top_k: usize,
    /// Images are scaled so that their longer side is at most this many pixels before
    /// detection (landmarks and crops still come from the full-resolution image).
    /// Smaller is faster; faces smaller than ~10 px at this scale are missed.
    pub max_side: u32,
    /// Faces whose box is narrower or shorter than this, in full-image pixels, are dropped.
    pub min_face_px: f32,
}

impl DetectConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        crate::validate::within(
            problems,
            "detect.score_threshold",
            self.score_threshold,
            0.0..=1.0,
        );
        crate::validate::within(
            problems,
            "detect.nms_threshold",
            self.nms_threshold,
            0.0..=1.0,
        );
        if self.top_k == 0 {
            problems.push("detect.top_k must be at least 1".into());
        }
        crate::validate::within(problems, "detect.max_side", self.max_side, 32..=8192);
        if self.min_face_px < 0.0 {
            problems.push("detect.min_face_px must be ≥ 0".into());
        }
    }
}

/// Errors from detection.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("detector output `{0}` is missing or has the wrong size for the input")]
    BadOutput(String),
}

const STRIDES: [usize; 3] = [8, 16, 32];

/// A face detector: what the still-image engine and the streaming pipeline's detect
/// workers call. [`Detect`] (YuNet) is the one there is; another model is another
/// implementation, chosen where [`crate::engine::EngineSetup`] resolves the models.
pub trait Detector: Send {
    /// Its settings (`[detect]`).
    fn config(&self) -> &DetectConfig;
    /// Faces in an RGB image scaled to at most `detect.max_side`, boxes and landmarks in
    /// its pixel coordinates, highest score first, smaller than `detect.min_face_px`
    /// dropped.
    fn detect(&mut self, image: &RgbImage) -> Result<Vec<Detection>, DetectError>;
    /// As [`Detector::detect`], scaling to at most `max_side` and keeping every size.
    fn detect_with(
        &mut self,
        image: &RgbImage,
        max_side: u32,
    ) -> Result<Vec<Detection>, DetectError>;
}

/// The detection stage: a YuNet session plus its settings.
pub struct Detect {
    session: Box<dyn Session>,
    config: DetectConfig,
    /// Output index for cls/obj/bbox/kps at each stride.
    outputs: [[usize; 3]; 4],
    input: Vec<f32>,
}

impl Detect {
    pub fn new(
        backend: &dyn Backend,
        model: &VerifiedModel,
        options: &SessionOptions,
        config: DetectConfig,
    ) -> Result<Detect, DetectError> {
        let session = backend.load(model, options)?;
        let names = session.output_names();
        let mut outputs = [[0usize; 3]; 4];
        for (k, head) in ["cls", "obj", "bbox", "kps"].iter().enumerate() {
            for (s, stride) in STRIDES.iter().enumerate() {
                let name = format!("{head}_{stride}");
                outputs[k][s] = names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or(DetectError::BadOutput(name))?;
            }
        }
        Ok(Detect {
            session,
            config,
            outputs,
            input: Vec::new(),
        })
    }
}

impl Detector for Detect {
    fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// Detect faces in an RGB image; boxes and landmarks are in its pixel coordinates,
    /// sorted by descending score.
    fn detect(&mut self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let mut faces = self.detect_with(image, self.config.max_side)?;
        faces
            .retain(|f| f.bbox.w >= self.config.min_face_px && f.bbox.h >= self.config.min_face_px);
        Ok(faces)
    }

    /// As [`Detector::detect`], scaling the image to at most `max_side` (instead of
    /// `detect.max_side`) and keeping faces of every size: the streaming pipeline's tiles
    /// and full-resolution passes, which apply the camera's own minimum face size.
    fn detect_with(
        &mut self,
        image: &RgbImage,
        max_side: u32,
    ) -> Result<Vec<Detection>, DetectError> {
        let plan = InputPlan::new(image.width(), image.height(), max_side);
        fill_bgr_planar(image, &plan, &mut self.input);
        let shape = [1, 3, plan.pad_h as usize, plan.pad_w as usize];
        let outputs = self.session.run(&shape, &self.input)?;
        let pick = |k: usize, s: usize| -> &Tensor { &outputs[self.outputs[k][s]] };
        let mut candidates = Vec::new();
        for (s, &stride) in STRIDES.iter().enumerate() {
            let heads = HeadOutputs {
                cls: &pick(0, s).data,
                obj: &pick(1, s).data,
                bbox: &pick(2, s).data,
                kps: &pick(3, s).data,
            };
            decode_stride(
                &heads,
                stride,
                plan.pad_w as usize,
                plan.pad_h as usize,
                self.config.score_threshold,
                &mut candidates,
            )?;
        }
        let mut faces = nms(candidates, self.config.nms_threshold, self.config.top_k);
        let inv = 1.0 / plan.scale;
        for face in &mut faces {
            face.bbox = BBox {
                x: face.bbox.x * inv,
                y: face.bbox.y * inv,
                w: face.bbox.w * inv,
                h: face.bbox.h * inv,
            };
            for p in &mut face.landmarks {
                p[0] *= inv;
                p[1] *= inv;
            }
        }
        Ok(faces)
    }
}

/// How an image maps onto the detector input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputPlan {
    /// Detector pixels per image pixel (≤ 1).
    pub scale: f32,
    pub width: u32,
    pub height: u32,
    pub pad_w: u32,
    pub pad_h: u32,
}

impl InputPlan {
    pub fn new(width: u32, height: u32, max_side: u32) -> InputPlan {
        let longest = width.max(height).max(1);
        let scale = if longest > max_side {
            max_side as f32 / longest as f32
        } else {
            1.0
        };
        let w = ((width as f32 * scale).round() as u32).max(1);
        let h = ((height as f32 * scale).round() as u32).max(1);
        InputPlan {
            scale,
            width: w,
            height: h,
            pad_w: w.div_ceil(32) * 32,
            pad_h: h.div_ceil(32) * 32,
        }
    }
}

/// Write the (scaled) image into a zero-padded BGR planar tensor, values 0–255 as YuNet
/// expects. Scaling is bilinear with pixel-centre alignment.
pub fn fill_bgr_planar(image: &RgbImage, plan: &InputPlan, out: &mut Vec<f32>) {
    let (pw, ph) = (plan.pad_w as usize, plan.pad_h as usize);
    let plane = pw * ph;
    out.clear();
    out.resize(3 * plane, 0.0);
    let src = image.as_raw();
    let sw = image.width() as usize;
    let sh = image.height() as usize;
    if plan.scale == 1.0 {
        for y in 0..sh {
            let row = &src[y * sw * 3..(y + 1) * sw * 3];
            for x in 0..sw {
                let o = y * pw + x;
                out[o] = row[x * 3 + 2] as f32;
                out[plane + o] = row[x * 3 + 1] as f32;
                out[2 * plane + o] = row[x * 3] as f32;
            }
        }
        return;
    }
    let fx = sw as f32 / plan.width as f32;
    let fy = sh as f32 / plan.height as f32;
    let xs: Vec<(usize, usize, f32)> = (0..plan.width as usize)
        .map(|x| sample_axis(x, fx, sw))
        .collect();
    for y in 0..plan.height as usize {
        let (y0, y1, wy) = sample_axis(y, fy, sh);
        let r0 = &src[y0 * sw * 3..(y0 + 1) * sw * 3];
        let r1 = &src[y1 * sw * 3..(y1 + 1) * sw * 3];
        for (x, &(x0, x1, wx)) in xs.iter().enumerate() {
            let o = y * pw + x;
            for c in 0..3 {
                let top = r0[x0 * 3 + c] as f32 * (1.0 - wx) + r0[x1 * 3 + c] as f32 * wx;
                let bottom = r1[x0 * 3 + c] as f32 * (1.0 - wx) + r1[x1 * 3 + c] as f32 * wx;
                out[(2 - c) * plane + o] = top * (1.0 - wy) + bottom * wy;
            }
        }
    }
}

fn sample_axis(i: usize, factor: f32, len: usize) -> (usize, usize, f32) {
    let s = ((i as f32 + 0.5) * factor - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, s - i0 as f32)
}

/// One stride's raw head outputs, flattened row-major over the anchor grid.
pub struct HeadOutputs<'a> {
    pub cls: &'a [f32],
    pub obj: &'a [f32],
    pub bbox: &'a [f32],
    pub kps: &'a [f32],
}

/// Decode one stride's heads into candidate faces (detector-input pixel coordinates).
/// Score is `sqrt(clamp(cls) * clamp(obj))`, box centre is `(col + dx, row + dy) * stride`,
/// size `exp(dw|dh) * stride`, landmarks `(col|row + d) * stride` — OpenCV's decoding.
pub fn decode_stride(
    heads: &HeadOutputs<'_>,
    stride: usize,
    pad_w: usize,
    pad_h: usize,
    score_threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), DetectError> {
    let cols = pad_w / stride;
    let rows = pad_h / stride;
    let n = cols * rows;
    if heads.cls.len() < n
        || heads.obj.len() < n
        || heads.bbox.len() < 4 * n
        || heads.kps.len() < 10 * n
    {
        return Err(DetectError::BadOutput(format!(
            "stride {stride}: fewer than {n} anchors"
        )));
    }
    let s = stride as f32;
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            let score = (heads.cls[i].clamp(0.0, 1.0) * heads.obj[i].clamp(0.0, 1.0)).sqrt();
            if score < score_threshold {
                continue;
            }
            let b = &heads.bbox[i * 4..i * 4 + 4];
            let cx = (c as f32 + b[0]) * s;
            let cy = (r as f32 + b[1]) * s;
            let w = b[2].exp() * s;
            let h = b[3].exp() * s;
            let k = &heads.kps[i * 10..i * 10 + 10];
            let mut landmarks = [[0.0f32; 2]; 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                *p = [(k[2 * j] + c as f32) * s, (k[2 * j + 1] + r as f32) * s];
            }
            out.push(Detection {
                bbox: BBox {
                    x: cx - w / 2.0,
                    y: cy - h / 2.0,
                    w,
                    h,
                },
                landmarks,
                score,
            });
        }
    }
    Ok(())
}

/// Greedy non-maximum suppression: highest score first, drop anything overlapping a kept
/// box by more than `iou_threshold`, keep at most `top_k`.
pub fn nms(mut candidates: Vec<Detection>, iou_threshold: f32, top_k: usize) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for c in candidates {
        if kept.len() >= top_k {
            break;
        }
        if kept.iter().all(|k| k.bbox.iou(&c.bbox) <= iou_threshold) {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, w: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox { x, y, w, h: w },
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn nms_keeps_best_of_overlaps_and_disjoint_boxes() {
        let kept = nms(
            vec![
                det(0.0, 0.0, 10.0, 0.7),
                det(1.0, 1.0, 10.0, 0.9),
                det(50.0, 50.0, 10.0, 0.8),
            ],
            0.3,
            10,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
        assert_eq!(
            nms(
                vec![det(0.0, 0.0, 1.0, 0.5), det(9.0, 9.0, 1.0, 0.6)],
                0.3,
                1
            )
            .len(),
            1
        );
    }

    #[test]
    fn input_plan_pads_to_32_and_limits_the_long_side() {
        let p = InputPlan::new(250, 250, 640);
        assert_eq!((p.scale, p.pad_w, p.pad_h), (1.0, 256, 256));
        let p = InputPlan::new(1920, 1080, 640);
        assert_eq!((p.width, p.height, p.pad_w, p.pad_h), (640, 360, 640, 384));
        assert!((p.scale - 1.0 / 3.0).abs() < 1e-6);
        let p = InputPlan::new(1, 1, 640);
        assert_eq!((p.pad_w, p.pad_h), (32, 32));
    }

    #[test]
    fn decode_places_anchor_offsets_on_the_grid() {
        // 64x32 input at stride 32: a 2x1 grid. Anchor (row 0, col 1) fires.
        let cls = [0.0, 0.81];
        let obj = [1.0, 1.0];
        let bbox = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, (2.0f32).ln()];
        let mut kps = [0.0f32; 20];
        kps[10] = 0.25; // landmark 0 x offset of anchor 1
        kps[11] = -0.25;
        let mut out = Vec::new();
        let heads = HeadOutputs {
            cls: &cls,
            obj: &obj,
            bbox: &bbox,
            kps: &kps,
        };
        decode_stride(&heads, 32, 64, 32, 0.5, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre (1.5*32, 0.5*32) = (48, 16), size 32 x 64
        assert!((d.bbox.x - 32.0).abs() < 1e-4 && (d.bbox.y + 16.0).abs() < 1e-4);
        assert!((d.bbox.w - 32.0).abs() < 1e-4 && (d.bbox.h - 64.0).abs() < 1e-4);
        assert!((d.landmarks[0][0] - 40.0).abs() < 1e-4 && (d.landmarks[0][1] + 8.0).abs() < 1e-4);
        assert!(decode_stride(&heads, 16, 64, 32, 0.5, &mut out).is_err());
    }

    #[test]
    fn bgr_planar_swaps_channels_and_pads_with_zeros() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([10, 20, 30]));
        let plan = InputPlan::new(2, 1, 640);
        let mut out = Vec::new();
        fill_bgr_planar(&img, &plan, &mut out);
        let plane = 32 * 32;
        assert_eq!(out.len(), 3 * plane);
        assert_eq!((out[0], out[plane], out[2 * plane]), (30.0, 20.0, 10.0));
        assert_eq!(out[2], 0.0);
        assert_eq!(out[32], 0.0);
    }

    #[test]
    fn downscale_averages_neighbours() {
        let mut img = RgbImage::new(4, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if x % 2 == 0 { 0 } else { 200 }; 3]);
        }
        let plan = InputPlan::new(4, 2, 2);
        let mut out = Vec::new();
        fill_bgr_planar(&img, &plan, &mut out);
        assert_eq!((plan.width, plan.height), (2, 1));
        assert!((out[0] - 100.0).abs() < 1e-3, "{}", out[0]);
    }
}
