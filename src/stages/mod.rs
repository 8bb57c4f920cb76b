//! The per-face stages, in pipeline order: [`motion`] (cameras: where to look) → [`detect`] → [`align`] → [`quality`] → [`embed`]
//! → [`matching`] (the open-set decision over a gallery search).
//!
//! Each stage is plain synchronous code with its own config and error type; the pure math
//! (box decoding, NMS, the similarity transform, quality measures) is free functions with
//! inline tests. The still-image [`crate::engine`] and the streaming actors both call these.

pub mod align;
pub mod detect;
pub mod embed;
pub mod matching;
pub mod motion;
pub mod quality;

use serde::{Deserialize, Serialize};

/// An axis-aligned box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn centre(&self) -> [f32; 2] {
        [self.x + self.w / 2.0, self.y + self.h / 2.0]
    }

    /// Intersection over union; 0 for disjoint or empty boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let x1 = self.x.max(other.x);
        let y1 = self.y.max(other.y);
        let x2 = (self.x + self.w).min(other.x + other.w);
        let y2 = (self.y + self.h).min(other.y + other.h);
        let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    pub fn contains(&self, p: [f32; 2]) -> bool {
        p[0] >= self.x && p[0] <= self.x + self.w && p[1] >= self.y && p[1] <= self.y + self.h
    }
}

/// The five facial landmarks, in this order: right eye, left eye (of the image: smaller x
/// first), nose tip, right mouth corner, left mouth corner — the order YuNet emits and the
/// ArcFace template expects.
pub type Landmarks = [[f32; 2]; 5];

/// One detected face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub landmarks: Landmarks,
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_basics() {
        let a = BBox {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        let b = BBox {
            x: 5.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        let far = BBox {
            x: 100.0,
            y: 100.0,
            w: 1.0,
            h: 1.0,
        };
        assert_eq!(a.iou(&far), 0.0);
        let empty = BBox {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            h: 0.0,
        };
        assert_eq!(empty.iou(&empty), 0.0);
    }
}
