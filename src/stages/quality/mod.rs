//! Quality: how usable a face is for recognition, as a score in [0, 1] plus components.
//!
//! Between alignment and embedding/matching; the streaming pipeline uses it to pick a
//! track's best shots and to refuse matching on poor faces, evaluation uses it to split
//! results into high/low quality. Each component is in [0, 1]:
//!
//! | component   | measure                                            | mapping                                        |
//! |-------------|----------------------------------------------------|------------------------------------------------|
//! | size        | inter-ocular distance `iod` in image pixels        | `clamp((iod − size_min_iod_px) / (size_full_iod_px − size_min_iod_px), 0, 1)` |
//! | sharpness   | variance `v` of the 4-neighbour Laplacian on the gray aligned crop (central 80×80) | `v / (v + sharpness_half_var)` |
//! | pose        | yaw from the nose's offset from the eye midpoint (roll-corrected, `yaw = atan(offset / (0.55·iod))`), roll from the eye line | `(1 − min(1, |yaw|/yaw_max)) · (1 − ½·min(1, |roll|/roll_max))` |
//! | exposure    | mean `μ` and clipped fraction `c` (≤5 or ≥250) of the gray crop | `(1 − ((μ−128)/128)²) · max(0, 1 − 2c)` |
//! | confidence  | detector score `s`                                 | `clamp((s − floor) / (full − floor), 0, 1)`     |
//!
//! The overall score is the weighted geometric mean `exp(Σ wᵢ ln max(qᵢ, 0.001) / Σ wᵢ)`,
//! so one bad component (a blurred or profile face) pulls the score down whatever the
//! others say. `class` is `high` when the score is at least `high_cut`, else `low`.
//! Size uses the full-resolution landmarks; sharpness and exposure are measured on the
//! aligned crop, so a small face upscaled to 112 px also reads as less sharp.

use serde::{Deserialize, Serialize};

use super::align::{AlignedFace, CROP};
use super::Detection;

/// Quality settings (section `[quality]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Inter-ocular distance, in image pixels, at or below which the size component is 0
    /// (too few pixels between the eyes for identity detail).
    pub size_min_iod_px: f32,
    /// Inter-ocular distance, in image pixels, at which the size component reaches 1
    /// (LFW's centred faces have about 38 px).
    pub size_full_iod_px: f32,
    /// Laplacian variance at which the sharpness component is 0.5.
    pub sharpness_half_var: f32,
    /// Yaw, in degrees, at which the pose component reaches 0.
    pub yaw_max_deg: f32,
    /// Roll, in degrees, at which roll halves the pose component.
    pub roll_max_deg: f32,
    /// Detector score at or below which the confidence component is 0.
    pub confidence_floor: f32,
    /// Detector score at or above which the confidence component is 1.
    pub confidence_full: f32,
    /// Weight of the size component in the geometric mean.
    pub weight_size: f32,
    /// Weight of the sharpness component.
    pub weight_sharpness: f32,
    /// Weight of the pose component.
    pub weight_pose: f32,
    /// Weight of the exposure component.
    pub weight_exposure: f32,
    /// Weight of the detector-confidence component.
    pub weight_confidence: f32,
    /// Score at or above which a face is `high` quality.
    pub high_cut: f32,
}

impl QualityConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let positive = [
            ("quality.size_full_iod_px", self.size_full_iod_px),
            ("quality.sharpness_half_var", self.sharpness_half_var),
            ("quality.yaw_max_deg", self.yaw_max_deg),
            ("quality.roll_max_deg", self.roll_max_deg),
        ];
        for (name, v) in positive {
            if v.is_nan() || v <= 0.0 {
                problems.push(format!("{name} = {v} must be > 0"));
            }
        }
        let weights = [
            self.weight_size,
            self.weight_sharpness,
            self.weight_pose,
            self.weight_exposure,
            self.weight_confidence,
        ];
        if weights.iter().any(|w| w.is_nan() || *w < 0.0) || weights.iter().sum::<f32>() <= 0.0 {
            problems.push("quality.weight_* must be ≥ 0 and not all 0".into());
        }
        if self.size_min_iod_px < 0.0 || self.size_full_iod_px <= self.size_min_iod_px {
            problems.push(format!(
                "quality.size_full_iod_px = {} must be above quality.size_min_iod_px = {} (≥ 0)",
                self.size_full_iod_px, self.size_min_iod_px
            ));
        }
        if self.confidence_full <= self.confidence_floor {
            problems.push(format!(
                "quality.confidence_full = {} must be above quality.confidence_floor = {}",
                self.confidence_full, self.confidence_floor
            ));
        }
        crate::validate::within(problems, "quality.high_cut", self.high_cut, 0.0..=1.0);
    }
}

/// `high` or `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityClass {
    High,
    Low,
}

/// The components, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityComponents {
    pub size: f32,
    pub sharpness: f32,
    pub pose: f32,
    pub exposure: f32,
    pub confidence: f32,
}

impl QualityComponents {
    /// The lowest component and its value: what limits the face most.
    pub fn weakest(&self) -> (&'static str, f32) {
        [
            ("size", self.size),
            ("sharpness", self.sharpness),
            ("pose", self.pose),
            ("exposure", self.exposure),
            ("detector confidence", self.confidence),
        ]
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("five components")
    }
}

/// The raw measures behind the components.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityMeasures {
    pub interocular_px: f32,
    pub laplacian_var: f32,
    pub yaw_deg: f32,
    pub roll_deg: f32,
    pub brightness: f32,
    pub clipped_fraction: f32,
}

/// A face's quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    pub score: f32,
    pub class: QualityClass,
    pub components: QualityComponents,
    pub measures: QualityMeasures,
}

/// Score one face.
pub fn assess(detection: &Detection, crop: &AlignedFace, config: &QualityConfig) -> Quality {
    let (yaw_deg, roll_deg, interocular_px) = pose_from_landmarks(&detection.landmarks);
    let gray = crop_gray(crop);
    let laplacian_var = laplacian_variance(&gray, CROP, 16);
    let (brightness, clipped_fraction) = exposure(&gray, CROP, 16);

    let components = QualityComponents {
        size: ((interocular_px - config.size_min_iod_px)
            / (config.size_full_iod_px - config.size_min_iod_px))
            .clamp(0.0, 1.0),
        sharpness: laplacian_var / (laplacian_var + config.sharpness_half_var),
        pose: (1.0 - (yaw_deg.abs() / config.yaw_max_deg).min(1.0))
            * (1.0 - 0.5 * (roll_deg.abs() / config.roll_max_deg).min(1.0)),
        exposure: (1.0 - ((brightness - 128.0) / 128.0).powi(2)).clamp(0.0, 1.0)
            * (1.0 - 2.0 * clipped_fraction).max(0.0),
        confidence: ((detection.score - config.confidence_floor)
            / (config.confidence_full - config.confidence_floor))
            .clamp(0.0, 1.0),
    };
    let weighted = [
        (components.size, config.weight_size),
        (components.sharpness, config.weight_sharpness),
        (components.pose, config.weight_pose),
        (components.exposure, config.weight_exposure),
        (components.confidence, config.weight_confidence),
    ];
    let total: f32 = weighted.iter().map(|(_, w)| w).sum();
    let score = (weighted
        .iter()
        .map(|(q, w)| w * q.max(1e-3).ln())
        .sum::<f32>()
        / total)
        .exp()
        .clamp(0.0, 1.0);
    Quality {
        score,
        class: if score >= config.high_cut {
            QualityClass::High
        } else {
            QualityClass::Low
        },
        components,
        measures: QualityMeasures {
            interocular_px,
            laplacian_var,
            yaw_deg,
            roll_deg,
            brightness,
            clipped_fraction,
        },
    }
}

/// (yaw°, roll°, inter-ocular distance px) from the 5 landmarks.
/// Roll is the eye line's angle; yaw comes from the nose tip's horizontal offset from the
/// eye midpoint in the roll-corrected frame, assuming the nose tip stands ~0.55 iod in
/// front of the eye plane (so offset/iod = 0.55·tan(yaw)).
pub fn pose_from_landmarks(lm: &super::Landmarks) -> (f32, f32, f32) {
    let (e0, e1, nose) = (lm[0], lm[1], lm[2]);
    let (dx, dy) = (e1[0] - e0[0], e1[1] - e0[1]);
    let iod = dx.hypot(dy);
    if iod < 1e-3 {
        return (90.0, 0.0, 0.0);
    }
    let roll = dy.atan2(dx);
    let mid = [(e0[0] + e1[0]) / 2.0, (e0[1] + e1[1]) / 2.0];
    let (ux, uy) = (dx / iod, dy / iod);
    let offset = (nose[0] - mid[0]) * ux + (nose[1] - mid[1]) * uy;
    let yaw = (offset / (0.55 * iod)).atan();
    (yaw.to_degrees(), roll.to_degrees(), iod)
}

fn crop_gray(crop: &AlignedFace) -> Vec<f32> {
    crop.rgb
        .chunks_exact(3)
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect()
}

/// Variance of the 4-neighbour Laplacian over the square `margin..size-margin`.
pub fn laplacian_variance(gray: &[f32], size: usize, margin: usize) -> f32 {
    let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0usize);
    for y in margin.max(1)..size - margin.max(1) {
        for x in margin.max(1)..size - margin.max(1) {
            let i = y * size + x;
            let l = gray[i - 1] + gray[i + 1] + gray[i - size] + gray[i + size] - 4.0 * gray[i];
            sum += l as f64;
            sum_sq += (l as f64) * (l as f64);
            n += 1;
        }
    }
    if n == 0 {
        return 0.0;
    }
    let mean = sum / n as f64;
    (sum_sq / n as f64 - mean * mean).max(0.0) as f32
}

/// (mean, clipped fraction) over the square `margin..size-margin`.
pub fn exposure(gray: &[f32], size: usize, margin: usize) -> (f32, f32) {
    let (mut sum, mut clipped, mut n) = (0.0f64, 0usize, 0usize);
    for y in margin..size - margin {
        for &v in &gray[y * size + margin..y * size + size - margin] {
            sum += v as f64;
            clipped += usize::from(!(5.0..250.0).contains(&v));
            n += 1;
        }
    }
    if n == 0 {
        return (0.0, 1.0);
    }
    ((sum / n as f64) as f32, clipped as f32 / n as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::align::ARCFACE_TEMPLATE;
    use crate::stages::BBox;

    fn config() -> QualityConfig {
        // the embedded default's `[quality]` section
        let default: toml::Table = include_str!("../../../config/default.toml")
            .parse()
            .unwrap();
        default["quality"].clone().try_into().unwrap()
    }

    fn crop_from(f: impl Fn(usize, usize) -> u8) -> AlignedFace {
        let mut rgb = Vec::with_capacity(CROP * CROP * 3);
        for y in 0..CROP {
            for x in 0..CROP {
                let v = f(x, y);
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        AlignedFace {
            rgb,
            transform: crate::stages::align::Similarity::IDENTITY,
        }
    }

    fn detection(scale: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox {
                x: 0.0,
                y: 0.0,
                w: 112.0 * scale,
                h: 112.0 * scale,
            },
            landmarks: ARCFACE_TEMPLATE.map(|p| [p[0] * scale, p[1] * scale]),
            score,
        }
    }

    #[test]
    fn frontal_template_has_no_yaw_or_roll() {
        let (yaw, roll, iod) = pose_from_landmarks(&ARCFACE_TEMPLATE);
        assert!(yaw.abs() < 2.0 && roll.abs() < 1.0, "{yaw} {roll}");
        assert!((iod - 35.24).abs() < 0.1);
        let mut turned = ARCFACE_TEMPLATE;
        turned[2][0] += 0.55 * iod; // nose moved by 0.55 iod: tan(yaw) = 1
        let (yaw, _, _) = pose_from_landmarks(&turned);
        assert!((yaw - 45.0).abs() < 2.0, "{yaw}");
    }

    #[test]
    fn sharp_beats_flat_and_big_beats_small() {
        let c = config();
        let textured = crop_from(|x, y| if (x / 2 + y / 2) % 2 == 0 { 90 } else { 170 });
        let flat = crop_from(|_, _| 128);
        let sharp = assess(&detection(3.0, 0.95), &textured, &c);
        let blurred = assess(&detection(3.0, 0.95), &flat, &c);
        assert!(sharp.components.sharpness > 0.9 && blurred.components.sharpness < 0.01);
        assert!(sharp.score > blurred.score);
        assert_eq!(sharp.class, QualityClass::High);
        assert_eq!(blurred.class, QualityClass::Low);
        let small = assess(&detection(0.3, 0.95), &textured, &c);
        assert!(small.components.size < 0.3 && small.score < sharp.score);
    }

    #[test]
    fn exposure_penalises_dark_and_clipped_crops() {
        let c = config();
        let textured =
            |base: u8| crop_from(move |x, y| base.saturating_add(((x + y) % 2 * 40) as u8));
        let good = assess(&detection(3.0, 0.95), &textured(100), &c);
        let dark = assess(
            &detection(3.0, 0.95),
            &crop_from(|x, y| ((x + y) % 2 * 4) as u8),
            &c,
        );
        assert!(good.components.exposure > 0.9, "{:?}", good.components);
        assert!(dark.components.exposure < 0.1, "{:?}", dark.components);
        assert!(dark.measures.clipped_fraction > 0.9);
    }

    #[test]
    fn confidence_maps_linearly_between_floor_and_full() {
        let c = config();
        let crop = crop_from(|_, _| 128);
        assert_eq!(
            assess(&detection(1.0, 0.5), &crop, &c)
                .components
                .confidence,
            0.0
        );
        assert!(
            (assess(&detection(1.0, 0.7), &crop, &c)
                .components
                .confidence
                - 0.5)
                .abs()
                < 1e-5
        );
        assert_eq!(
            assess(&detection(1.0, 0.99), &crop, &c)
                .components
                .confidence,
            1.0
        );
    }
}
