//! A decoded camera frame kept in the decoder's own YUV 4:2:0 layout, and the two
//! conversions the pipeline needs from it: a downscaled RGB image for the detector and
//! RGB crops around faces at (close to) full resolution for alignment.
//!
//! The full frame is never converted to RGB: at 1080p that would cost about twice the
//! decode. Detection needs ~640 px; alignment needs only the pixels around each face.

use image::RgbImage;

/// YUV → RGB coefficients (limited range).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorMatrix {
    Bt601,
    Bt709,
}

/// One frame, I420 planes packed without padding.
#[derive(Debug, Clone)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    pub matrix: ColorMatrix,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// A rectangle of a frame, in full-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl I420Frame {
    /// Copy planes with arbitrary strides (`planes[i] = (data, stride)`).
    pub fn from_planes(
        width: u32,
        height: u32,
        matrix: ColorMatrix,
        planes: [(&[u8], usize); 3],
    ) -> I420Frame {
        let (cw, ch) = (width.div_ceil(2) as usize, height.div_ceil(2) as usize);
        let copy = |(data, stride): (&[u8], usize), w: usize, h: usize| {
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                out.extend_from_slice(&data[row * stride..row * stride + w]);
            }
            out
        };
        I420Frame {
            width,
            height,
            matrix,
            y: copy(planes[0], width as usize, height as usize),
            u: copy(planes[1], cw, ch),
            v: copy(planes[2], cw, ch),
        }
    }

    /// Encode an RGB image as I420 (BT.601) — for tests and the camera simulator.
    pub fn from_rgb(image: &RgbImage) -> I420Frame {
        let (w, h) = image.dimensions();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut y = Vec::with_capacity((w * h) as usize);
        for p in image.pixels() {
            let [r, g, b] = p.0.map(f32::from);
            y.push(
                (16.0 + 0.257 * r + 0.504 * g + 0.098 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
        let (mut u, mut v) = (Vec::new(), Vec::new());
        for cy in 0..ch {
            for cx in 0..cw {
                let p = image.get_pixel((cx * 2).min(w - 1), (cy * 2).min(h - 1));
                let [r, g, b] = p.0.map(f32::from);
                u.push(
                    (128.0 - 0.148 * r - 0.291 * g + 0.439 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
                v.push(
                    (128.0 + 0.439 * r - 0.368 * g - 0.071 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
        I420Frame {
            width: w,
            height: h,
            matrix: ColorMatrix::Bt601,
            y,
            u,
            v,
        }
    }

    pub fn full(&self) -> Region {
        Region {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        }
    }

    /// `region` as RGB, shrunk by the integer factor `step` (1 = full resolution) with a
    /// box filter on luma (no aliasing when the detector sees a third of the pixels) and
    /// nearest chroma (chroma is already at half resolution and smooth).
    pub fn to_rgb(&self, region: Region, step: u32) -> RgbImage {
        let step = step.max(1);
        let region = self.clamp(region);
        let (ow, oh) = ((region.width / step).max(1), (region.height / step).max(1));
        let (w, cw) = (self.width as usize, self.width.div_ceil(2) as usize);
        let mut out = RgbImage::new(ow, oh);
        let coeffs = match self.matrix {
            ColorMatrix::Bt601 => (1.596, 0.392, 0.813, 2.017),
            ColorMatrix::Bt709 => (1.793, 0.213, 0.533, 2.112),
        };
        let area = step * step;
        for oy in 0..oh {
            let y0 = (region.y + oy * step) as usize;
            for ox in 0..ow {
                let x0 = (region.x + ox * step) as usize;
                let mut sum = 0u32;
                for yy in y0..y0 + step as usize {
                    let row = &self.y[yy * w + x0..yy * w + x0 + step as usize];
                    sum += row.iter().map(|&v| v as u32).sum::<u32>();
                }
                let luma = (sum + area / 2) / area;
                let (cx, cy) = ((x0 + step as usize / 2) / 2, (y0 + step as usize / 2) / 2);
                let ci = cy.min(self.height.div_ceil(2) as usize - 1) * cw + cx.min(cw - 1);
                let yf = 1.164 * (luma as f32 - 16.0);
                let (u, v) = (self.u[ci] as f32 - 128.0, self.v[ci] as f32 - 128.0);
                let (rv, gu, gv, bu) = coeffs;
                let px = [yf + rv * v, yf - gu * u - gv * v, yf + bu * u]
                    .map(|c| c.round().clamp(0.0, 255.0) as u8);
                out.put_pixel(ox, oy, image::Rgb(px));
            }
        }
        out
    }

    /// `region` cut to the frame, with even-free bounds kept inside it.
    pub fn clamp(&self, region: Region) -> Region {
        let x = region.x.min(self.width - 1);
        let y = region.y.min(self.height - 1);
        Region {
            x,
            y,
            width: region.width.min(self.width - x).max(1),
            height: region.height.min(self.height - y).max(1),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.y.len() + self.u.len() + self.v.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        })
    }

    #[test]
    fn round_trip_through_i420_keeps_colours() {
        let rgb = gradient(64, 48);
        let frame = I420Frame::from_rgb(&rgb);
        let back = frame.to_rgb(frame.full(), 1);
        let worst = rgb
            .pixels()
            .zip(back.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| (a.0[c] as i32 - b.0[c] as i32).abs()))
            .max()
            .unwrap();
        // chroma is subsampled 2×2, so a steep gradient moves a few levels
        assert!(worst <= 8, "max channel error {worst}");
    }

    #[test]
    fn downscale_averages_luma_and_crops_regions() {
        let rgb = gradient(120, 80);
        let frame = I420Frame::from_rgb(&rgb);
        let small = frame.to_rgb(frame.full(), 4);
        assert_eq!(small.dimensions(), (30, 20));
        let region = Region {
            x: 40,
            y: 20,
            width: 30,
            height: 30,
        };
        let crop = frame.to_rgb(region, 1);
        assert_eq!(crop.dimensions(), (30, 30));
        let (a, b) = (crop.get_pixel(5, 5), rgb.get_pixel(45, 25));
        assert!((a.0[0] as i32 - b.0[0] as i32).abs() <= 6, "{a:?} vs {b:?}");
        // a region past the edge is cut, not a panic
        let edge = frame.to_rgb(
            Region {
                x: 110,
                y: 70,
                width: 50,
                height: 50,
            },
            1,
        );
        assert_eq!(edge.dimensions(), (10, 10));
    }
}
