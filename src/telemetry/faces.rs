//! Why a camera does not recognise: its faces by what kept them from being recognised,
//! and their size.
//!
//! Installers aim cameras by trial and error; these numbers say what is wrong. Every
//! face the quality stage scores is counted here with its inter-ocular distance
//! (`facestream_face_interocular_pixels{camera}`) and, when it is too poor to match
//! (below `track.min_match_quality`), with the component that limits it most
//! (`facestream_faces_rejected_total{camera,reason}`: `too_small`, `blurred`, `pose`,
//! `exposure`, `low_score`); the usable faces of an appearance that matched no one are
//! counted as `no_match` when it ends. The same counts, kept per camera since the
//! service started ([`CameraFaces`]), give the camera page its verdict
//! ([`CameraFaces::verdict`]).

use std::collections::BTreeMap;

use serde::Serialize;

/// Upper bounds of the inter-ocular distance histogram, in pixels.
pub const INTEROCULAR_BUCKETS: [f64; 12] = [
    8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 40.0, 48.0, 64.0, 96.0, 128.0,
];

/// Why a detected face was not recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Too few pixels between the eyes.
    TooSmall,
    /// Out of focus, motion blur, compression.
    Blurred,
    /// Turned away from the camera (yaw) or tilted (roll).
    Pose,
    /// Too dark, too bright or clipped.
    Exposure,
    /// The detector was barely sure it is a face.
    LowScore,
    /// Good enough to match, and matched no one enrolled.
    NoMatch,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::TooSmall,
        Reject::Blurred,
        Reject::Pose,
        Reject::Exposure,
        Reject::LowScore,
        Reject::NoMatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooSmall => "too_small",
            Reject::Blurred => "blurred",
            Reject::Pose => "pose",
            Reject::Exposure => "exposure",
            Reject::LowScore => "low_score",
            Reject::NoMatch => "no_match",
        }
    }

    /// The reason for a face whose weakest quality component is `component` (the names
    /// of `stages::quality::QualityComponents::weakest`).
    pub fn of_component(component: &str) -> Reject {
        match component {
            "size" => Reject::TooSmall,
            "sharpness" => Reject::Blurred,
            "pose" => Reject::Pose,
            "exposure" => Reject::Exposure,
            _ => Reject::LowScore,
        }
    }
}

/// One camera's faces since the service started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CameraFaces {
    /// Faces the quality stage scored.
    pub assessed: u64,
    /// Faces not recognised, by reason.
    pub rejected: BTreeMap<Reject, u64>,
    /// Faces per [`INTEROCULAR_BUCKETS`] bucket (the last: above the largest bound).
    pub interocular: [u64; INTEROCULAR_BUCKETS.len() + 1],
}

/// What the camera page says about a camera's faces.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// `ok`, `few_faces`, or the main reason faces are not recognised (a [`Reject`]).
    pub kind: &'static str,
    /// One sentence for the installer, with the numbers.
    pub text: String,
    pub faces: u64,
    pub median_interocular_px: Option<f32>,
    pub rejected: BTreeMap<&'static str, u64>,
}

/// Fewer faces than this and the camera page says it has not seen enough to judge.
pub const VERDICT_MIN_FACES: u64 = 20;

impl CameraFaces {
    pub(super) fn observe_size(&mut self, interocular_px: f32) {
        let at = INTEROCULAR_BUCKETS
            .iter()
            .position(|&b| f64::from(interocular_px) <= b)
            .unwrap_or(INTEROCULAR_BUCKETS.len());
        self.interocular[at] += 1;
        self.assessed += 1;
    }

    /// The median inter-ocular distance, interpolated inside its bucket (as PromQL's
    /// `histogram_quantile`); none before any face.
    pub fn median_interocular_px(&self) -> Option<f32> {
        let total: u64 = self.interocular.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = total as f64 / 2.0;
        let (mut below, mut lower) = (0u64, 0.0f64);
        for (i, &count) in self.interocular.iter().enumerate() {
            let Some(&upper) = INTEROCULAR_BUCKETS.get(i) else {
                return Some(lower as f32); // above the largest bound: say the bound
            };
            if (below + count) as f64 >= rank && count > 0 {
                let within = (rank - below as f64) / count as f64;
                return Some((lower + (upper - lower) * within) as f32);
            }
            below += count;
            lower = upper;
        }
        Some(lower as f32)
    }

    /// The camera page's verdict: reliable recognition needs faces of at least
    /// `needed_iod_px` between the eyes (`quality.size_full_iod_px`, past which size no
    /// longer limits a face's quality).
    pub fn verdict(&self, needed_iod_px: f32) -> Verdict {
        let median = self.median_interocular_px();
        let rejected: BTreeMap<&'static str, u64> = self
            .rejected
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        let verdict = |kind, text| Verdict {
            kind,
            text,
            faces: self.assessed,
            median_interocular_px: median.map(|m| m.round()),
            rejected: rejected.clone(),
        };
        if self.assessed < VERDICT_MIN_FACES {
            return verdict(
                "few_faces",
                format!(
                    "{} face(s) seen so far: too few to judge how well this camera is placed",
                    self.assessed
                ),
            );
        }
        let not_recognised: u64 = self.rejected.values().sum();
        let share = |n: u64| 100.0 * n as f64 / self.assessed.max(1) as f64;
        let main = self
            .rejected
            .iter()
            .max_by_key(|(r, n)| (**n, std::cmp::Reverse(**r)))
            .map(|(r, n)| (*r, *n));
        let Some((reason, count)) = main.filter(|_| share(not_recognised) >= 50.0) else {
            return verdict(
                "ok",
                format!(
                    "{:.0} % of {} faces were good enough to recognise{}",
                    100.0 - share(not_recognised),
                    self.assessed,
                    median.map_or(String::new(), |m| format!(
                        "; median face {m:.0} px between the eyes"
                    ))
                ),
            );
        };
        let pct = share(count);
        let text = match reason {
            Reject::TooSmall => format!(
                "median face {} px between the eyes; reliable recognition needs ≥ {needed_iod_px:.0}: \
                 zoom in or move the camera closer ({pct:.0} % of {} faces too small)",
                median.map_or("?".to_string(), |m| format!("{m:.0}")),
                self.assessed
            ),
            Reject::Blurred => format!(
                "{pct:.0} % of {} faces are blurred: check the focus, a shorter shutter for \
                 people walking, or the stream's bitrate",
                self.assessed
            ),
            Reject::Pose => format!(
                "{pct:.0} % of {} faces are turned away or tilted: aim the camera along the \
                 way people walk, at head height",
                self.assessed
            ),
            Reject::Exposure => format!(
                "{pct:.0} % of {} faces are too dark or too bright: light the faces, or turn on \
                 backlight compensation / WDR",
                self.assessed
            ),
            Reject::LowScore => format!(
                "{pct:.0} % of {} faces are barely recognisable as faces: too far, too dark or \
                 partly hidden",
                self.assessed
            ),
            Reject::NoMatch => format!(
                "faces are good enough, but {pct:.0} % of {} match no one enrolled: strangers, \
                 or enrol these people from photos closer to this camera's view",
                self.assessed
            ),
        };
        verdict(reason.as_str(), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(sizes: &[(f32, u64)], rejected: &[(Reject, u64)]) -> CameraFaces {
        let mut c = CameraFaces::default();
        for &(px, n) in sizes {
            for _ in 0..n {
                c.observe_size(px);
            }
        }
        c.rejected = rejected.iter().copied().collect();
        c
    }

    #[test]
    fn small_faces_get_the_zoom_in_verdict_with_the_median_and_the_size_needed() {
        // 90 faces of ~22 px, 10 of ~60 px: the median lies in the 20–24 bucket
        let c = seen(&[(22.0, 90), (60.0, 10)], &[(Reject::TooSmall, 85)]);
        let m = c.median_interocular_px().unwrap();
        assert!((20.0..=24.0).contains(&m), "{m}");
        let v = c.verdict(40.0);
        assert_eq!(v.kind, "too_small");
        assert!(
            v.text
                .starts_with("median face 22 px between the eyes; reliable recognition needs ≥ 40"),
            "{}",
            v.text
        );
        assert_eq!(v.faces, 100);
        assert_eq!(v.rejected["too_small"], 85);
    }

    #[test]
    fn the_main_reason_names_the_verdict_and_a_good_camera_is_ok() {
        let c = seen(&[(50.0, 100)], &[(Reject::Pose, 40), (Reject::Blurred, 30)]);
        assert_eq!(c.verdict(40.0).kind, "pose");
        let c = seen(&[(50.0, 100)], &[(Reject::NoMatch, 70)]);
        assert_eq!(c.verdict(40.0).kind, "no_match");
        let c = seen(&[(50.0, 100)], &[(Reject::Blurred, 20)]);
        let v = c.verdict(40.0);
        assert_eq!(v.kind, "ok");
        assert!(v.text.starts_with("80 % of 100 faces"), "{}", v.text);
        // too few faces to say anything
        assert_eq!(
            seen(&[(10.0, 5)], &[(Reject::TooSmall, 5)])
                .verdict(40.0)
                .kind,
            "few_faces"
        );
    }

    #[test]
    fn every_component_name_maps_to_a_reason() {
        for (component, reason) in [
            ("size", "too_small"),
            ("sharpness", "blurred"),
            ("pose", "pose"),
            ("exposure", "exposure"),
            ("detector confidence", "low_score"),
        ] {
            assert_eq!(Reject::of_component(component).as_str(), reason);
        }
    }
}
