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
    ///
    /// Fixed-point arithmetic (coefficients × 256, as the video standards' integer forms),
    /// row by row: this runs on every detector tile and whole-frame pass, and the float
    /// version with a rounding call per channel cost as much CPU as the detector itself
    /// (`perf` on 4 cameras, BENCHMARKS.md §7). Within one level of the float formula.
    pub fn to_rgb(&self, region: Region, step: u32) -> RgbImage {
        let step = step.max(1) as usize;
        let region = self.clamp(region);
        let (ow, oh) = (
            (region.width as usize / step).max(1),
            (region.height as usize / step).max(1),
        );
        let (w, cw) = (self.width as usize, self.width.div_ceil(2) as usize);
        let ch = self.height.div_ceil(2) as usize;
        // (luma, v→r, u→g, v→g, u→b) × 256
        let (ky, rv, gu, gv, bu): (i32, i32, i32, i32, i32) = match self.matrix {
            ColorMatrix::Bt601 => (298, 409, 100, 208, 516),
            ColorMatrix::Bt709 => (298, 459, 55, 136, 541),
        };
        let mut buf = vec![0u8; ow * oh * 3];
        let area = (step * step) as u32;
        let mut luma = vec![0u32; ow];
        // chroma column of each output column (the block's centre)
        let cols: Vec<usize> = (0..ow)
            .map(|ox| ((region.x as usize + ox * step + step / 2) / 2).min(cw - 1))
            .collect();
        for (oy, out_row) in buf.chunks_exact_mut(ow * 3).enumerate() {
            let y0 = region.y as usize + oy * step;
            let x0 = region.x as usize;
            if step == 1 {
                for (l, &v) in luma.iter_mut().zip(&self.y[y0 * w + x0..y0 * w + x0 + ow]) {
                    *l = u32::from(v);
                }
            } else {
                luma.fill(0);
                for yy in y0..y0 + step {
                    let row = &self.y[yy * w + x0..yy * w + x0 + ow * step];
                    for (l, block) in luma.iter_mut().zip(row.chunks_exact(step)) {
                        *l += block.iter().map(|&v| u32::from(v)).sum::<u32>();
                    }
                }
                for l in &mut luma {
                    *l = (*l + area / 2) / area;
                }
            }
            let crow = ((y0 + step / 2) / 2).min(ch - 1) * cw;
            let (u_row, v_row) = (&self.u[crow..crow + cw], &self.v[crow..crow + cw]);
            for ((px, &l), &cx) in out_row.chunks_exact_mut(3).zip(&luma).zip(&cols) {
                let c = ky * (l as i32 - 16) + 128;
                let (u, v) = (i32::from(u_row[cx]) - 128, i32::from(v_row[cx]) - 128);
                px[0] = ((c + rv * v) >> 8).clamp(0, 255) as u8;
                px[1] = ((c - gu * u - gv * v) >> 8).clamp(0, 255) as u8;
                px[2] = ((c + bu * u) >> 8).clamp(0, 255) as u8;
            }
        }
        RgbImage::from_raw(ow as u32, oh as u32, buf).expect("buffer sized to the image")
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

    /// The float formula `to_rgb` implements in fixed point.
    fn to_rgb_reference(f: &I420Frame, region: Region, step: u32) -> RgbImage {
        let region = f.clamp(region);
        let (ow, oh) = ((region.width / step).max(1), (region.height / step).max(1));
        let (w, cw) = (f.width as usize, f.width.div_ceil(2) as usize);
        let (rv, gu, gv, bu) = match f.matrix {
            ColorMatrix::Bt601 => (1.596, 0.392, 0.813, 2.017),
            ColorMatrix::Bt709 => (1.793, 0.213, 0.533, 2.112),
        };
        let area = step * step;
        RgbImage::from_fn(ow, oh, |ox, oy| {
            let (x0, y0) = (
                (region.x + ox * step) as usize,
                (region.y + oy * step) as usize,
            );
            let mut sum = 0u32;
            for yy in y0..y0 + step as usize {
                sum += f.y[yy * w + x0..yy * w + x0 + step as usize]
                    .iter()
                    .map(|&v| v as u32)
                    .sum::<u32>();
            }
            let luma = (sum + area / 2) / area;
            let (cx, cy) = ((x0 + step as usize / 2) / 2, (y0 + step as usize / 2) / 2);
            let ci = cy.min(f.height.div_ceil(2) as usize - 1) * cw + cx.min(cw - 1);
            let yf = 1.164 * (luma as f32 - 16.0);
            let (u, v) = (f.u[ci] as f32 - 128.0, f.v[ci] as f32 - 128.0);
            image::Rgb(
                [yf + rv * v, yf - gu * u - gv * v, yf + bu * u]
                    .map(|c| c.round().clamp(0.0, 255.0) as u8),
            )
        })
    }

    #[test]
    fn fixed_point_conversion_matches_the_float_formula() {
        // every luma and chroma level, both matrices, several steps and odd regions
        let (w, h) = (97u32, 61u32);
        let mut frame = I420Frame::from_rgb(&gradient(w, h));
        let n = |i: usize, k: usize| ((i * k) % 256) as u8;
        frame
            .y
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = n(i, 37));
        frame
            .u
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = n(i, 53));
        frame
            .v
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = n(i, 71));
        for matrix in [ColorMatrix::Bt601, ColorMatrix::Bt709] {
            frame.matrix = matrix;
            for (region, step) in [
                (frame.full(), 1),
                (frame.full(), 3),
                (
                    Region {
                        x: 13,
                        y: 7,
                        width: 50,
                        height: 41,
                    },
                    1,
                ),
                (
                    Region {
                        x: 13,
                        y: 7,
                        width: 50,
                        height: 41,
                    },
                    4,
                ),
                (
                    Region {
                        x: 90,
                        y: 55,
                        width: 40,
                        height: 40,
                    },
                    2,
                ),
            ] {
                let (fast, slow) = (
                    frame.to_rgb(region, step),
                    to_rgb_reference(&frame, region, step),
                );
                assert_eq!(fast.dimensions(), slow.dimensions());
                let worst = fast
                    .as_raw()
                    .iter()
                    .zip(slow.as_raw())
                    .map(|(a, b)| (*a as i32 - *b as i32).abs())
                    .max()
                    .unwrap();
                assert!(
                    worst <= 1,
                    "{matrix:?} {region:?} step {step}: off by {worst}"
                );
            }
        }
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
