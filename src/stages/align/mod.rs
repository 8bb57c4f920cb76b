//! Alignment: warp each face onto the fixed 112×112 ArcFace template.
//!
//! Between detection and embedding. The least-squares similarity transform (rotation,
//! uniform scale, translation; Umeyama's estimator, which in 2-D has the closed form
//! below) maps the 5 detected landmarks onto the standard template; the crop is then
//! sampled from the **full-resolution** image with bilinear interpolation, pixels outside
//! the image set to 0 (as OpenCV's `warpAffine` with a constant border).

use image::RgbImage;

use super::Landmarks;

/// Side of the aligned crop, in pixels.
pub const CROP: usize = 112;

/// The ArcFace/InsightFace 112×112 reference landmarks (eyes, nose, mouth corners).
pub const ARCFACE_TEMPLATE: Landmarks = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// `x' = a·x − b·y + tx`, `y' = b·x + a·y + ty`: scale `√(a²+b²)`, angle `atan2(b, a)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// The identity transform (a crop that is already aligned).
    pub const IDENTITY: Similarity = Similarity {
        a: 1.0,
        b: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    /// The inverse transform; `None` for a degenerate (zero-scale) one.
    pub fn inverse(&self) -> Option<Similarity> {
        let d = self.a * self.a + self.b * self.b;
        if d <= f32::EPSILON {
            return None;
        }
        let (a, b) = (self.a / d, -self.b / d);
        Some(Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// Least-squares similarity from `src` to `dst` (Umeyama 1991, reflection excluded).
/// `None` when the source points are all (numerically) the same point.
pub fn estimate_similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Similarity> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts[..n].iter().fold((0.0f64, 0.0f64), |(x, y), p| {
            (x + p[0] as f64, y + p[1] as f64)
        });
        (sx / n as f64, sy / n as f64)
    };
    let (mx, my) = mean(src);
    let (nx, ny) = mean(dst);
    let (mut dot, mut cross, mut var) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (x, y) = (src[i][0] as f64 - mx, src[i][1] as f64 - my);
        let (u, v) = (dst[i][0] as f64 - nx, dst[i][1] as f64 - ny);
        dot += x * u + y * v;
        cross += x * v - y * u;
        var += x * x + y * y;
    }
    if var < 1e-9 {
        return None;
    }
    let a = dot / var;
    let b = cross / var;
    Some(Similarity {
        a: a as f32,
        b: b as f32,
        tx: (nx - (a * mx - b * my)) as f32,
        ty: (ny - (b * mx + a * my)) as f32,
    })
}

/// An aligned 112×112 RGB face crop (interleaved, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedFace {
    pub rgb: Vec<u8>,
    /// The transform used, image → crop.
    pub transform: Similarity,
}

impl AlignedFace {
    /// A black crop (warm-up runs).
    pub fn blank() -> AlignedFace {
        AlignedFace {
            rgb: vec![0; CROP * CROP * 3],
            transform: Similarity::default(),
        }
    }

    pub fn to_image(&self) -> RgbImage {
        RgbImage::from_raw(CROP as u32, CROP as u32, self.rgb.clone())
            .expect("crop buffer has CROP*CROP*3 bytes")
    }
}

/// Align a face: estimate the transform from `landmarks` to the template and warp.
pub fn align(image: &RgbImage, landmarks: &Landmarks) -> Option<AlignedFace> {
    let transform = estimate_similarity(landmarks, &ARCFACE_TEMPLATE)?;
    let rgb = warp(image, &transform, CROP)?;
    Some(AlignedFace { rgb, transform })
}

/// Sample an `size×size` crop: each crop pixel (x, y) takes the bilinear sample at
/// `transform⁻¹(x, y)` in `image`; samples outside the image contribute 0.
pub fn warp(image: &RgbImage, transform: &Similarity, size: usize) -> Option<Vec<u8>> {
    let inv = transform.inverse()?;
    let (w, h) = (image.width() as i64, image.height() as i64);
    let src = image.as_raw();
    let mut out = vec![0u8; size * size * 3];
    let fetch = |x: i64, y: i64, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            src[((y * w + x) * 3) as usize + c] as f32
        }
    };
    for y in 0..size {
        for x in 0..size {
            let [sx, sy] = inv.apply([x as f32, y as f32]);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let o = (y * size + x) * 3;
            for c in 0..3 {
                let v = fetch(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                    + fetch(x0 + 1, y0, c) * fx * (1.0 - fy)
                    + fetch(x0, y0 + 1, c) * (1.0 - fx) * fy
                    + fetch(x0 + 1, y0 + 1, c) * fx * fy;
                out[o + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f32; 2], b: [f32; 2], tol: f32) -> bool {
        (a[0] - b[0]).abs() < tol && (a[1] - b[1]).abs() < tol
    }

    #[test]
    fn recovers_a_known_transform_exactly() {
        let angle = 0.3f32;
        let scale = 1.7f32;
        let t = Similarity {
            a: scale * angle.cos(),
            b: scale * angle.sin(),
            tx: 12.0,
            ty: -5.0,
        };
        let src = [
            [10.0, 20.0],
            [50.0, 22.0],
            [30.0, 40.0],
            [15.0, 60.0],
            [45.0, 61.0],
        ];
        let dst: Vec<[f32; 2]> = src.iter().map(|&p| t.apply(p)).collect();
        let est = estimate_similarity(&src, &dst).unwrap();
        assert!(
            (est.a - t.a).abs() < 1e-4 && (est.b - t.b).abs() < 1e-4,
            "{est:?}"
        );
        assert!(
            (est.tx - t.tx).abs() < 1e-3 && (est.ty - t.ty).abs() < 1e-3,
            "{est:?}"
        );
        assert!((est.scale() - scale).abs() < 1e-4);
    }

    #[test]
    fn identity_on_the_template_and_inverse_roundtrip() {
        let est = estimate_similarity(&ARCFACE_TEMPLATE, &ARCFACE_TEMPLATE).unwrap();
        assert!(
            close([est.a, est.b], [1.0, 0.0], 1e-6) && close([est.tx, est.ty], [0.0, 0.0], 1e-4)
        );
        let t = Similarity {
            a: 0.5,
            b: -0.8,
            tx: 3.0,
            ty: 9.0,
        };
        let p = [7.0, -2.0];
        assert!(close(t.inverse().unwrap().apply(t.apply(p)), p, 1e-4));
        assert!(Similarity {
            a: 0.0,
            b: 0.0,
            tx: 1.0,
            ty: 1.0
        }
        .inverse()
        .is_none());
    }

    #[test]
    fn least_squares_with_noise_and_degenerate_input() {
        // A mirrored point set cannot be matched by a rotation: the fit is the best
        // similarity, never a reflection (scale stays positive, a < 0 would be 180°).
        let mirrored: Vec<[f32; 2]> = ARCFACE_TEMPLATE
            .iter()
            .map(|p| [112.0 - p[0], p[1]])
            .collect();
        let est = estimate_similarity(&mirrored, &ARCFACE_TEMPLATE).unwrap();
        assert!(est.scale() < 1.0);
        assert!(estimate_similarity(&[[1.0, 1.0]; 5], &ARCFACE_TEMPLATE).is_none());
    }

    #[test]
    fn warp_samples_through_the_inverse() {
        // Image with a single bright pixel at (20, 10); a pure translation by (-10, -5)
        // must move it to (10, 5) in the crop.
        let mut img = RgbImage::new(40, 30);
        img.put_pixel(20, 10, image::Rgb([255, 128, 0]));
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: -10.0,
            ty: -5.0,
        };
        let out = warp(&img, &t, 16).unwrap();
        let at = |x: usize, y: usize| &out[(y * 16 + x) * 3..(y * 16 + x) * 3 + 3];
        assert_eq!(at(10, 5), &[255, 128, 0]);
        assert_eq!(at(11, 5), &[0, 0, 0]);
        // Half-pixel shift blends neighbours.
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: -9.5,
            ty: -5.0,
        };
        let out = warp(&img, &t, 16).unwrap();
        assert_eq!(out[(5 * 16 + 10) * 3], 128);
    }

    #[test]
    fn aligned_landmarks_land_on_the_template() {
        let t = Similarity {
            a: 2.0 * 0.2f32.cos(),
            b: 2.0 * 0.2f32.sin(),
            tx: 40.0,
            ty: 30.0,
        };
        let inv = t.inverse().unwrap();
        let lm: Landmarks = ARCFACE_TEMPLATE.map(|p| inv.apply(p));
        let img = RgbImage::new(200, 200);
        let face = align(&img, &lm).unwrap();
        for (p, q) in lm.iter().zip(ARCFACE_TEMPLATE.iter()) {
            assert!(close(face.transform.apply(*p), *q, 1e-3));
        }
        assert_eq!(face.rgb.len(), CROP * CROP * 3);
    }
}
