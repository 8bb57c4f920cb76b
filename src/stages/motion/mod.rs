//! Motion: where in a camera frame something changed, so the face detector can run at
//! full resolution there instead of on a downscale of the whole frame.
//!
//! Runs per camera, before detection, on the luma plane only. The frame is averaged in
//! `cell`×`cell` blocks (1080p, cell 8 → a 240×135 grid: sensor noise averages out over
//! 64 pixels), compared with a running background, thresholded, dilated by one cell and
//! split into connected components whose bounding boxes (in full-frame pixels) are the
//! motion regions. Two things that are not motion are taken out first: a global
//! brightness shift (lighting drift, auto-exposure: the median difference is subtracted)
//! and a change of most of the frame (lights switched, camera moved: the background is
//! reset and the caller told to look at the whole frame). Masked cells (a TV screen, a
//! poster, a flag in the wind) never count.
//!
//! [`plan`] turns motion regions and tracked faces into fixed-size detector tiles.

pub mod mask;
pub mod plan;

use serde::{Deserialize, Serialize};

pub use mask::Mask;

/// How a camera's frames are searched for faces (`[cameras.detection]`; every key
/// optional, defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraDetection {
    /// `regions` (default): full resolution where there is motion and where faces are
    /// tracked, plus the whole frame on the downscale (`detect.max_side`) every
    /// `full_frame_every` analysed frames. `downscale`: every analysed frame on the
    /// downscale only (cheapest; faces under ~60 px in 1080p are missed). `full`: every
    /// analysed frame at full resolution (the recall ceiling; ~9× the detector time of
    /// `downscale` at 1080p).
    pub mode: DetectMode,
    /// In `regions` mode, every this many analysed frames the whole frame is searched on
    /// the downscale too (so a person who arrives standing still is found). 1 = every
    /// frame.
    pub full_frame_every: u32,
    /// In `regions` mode, every this many analysed frames one more full-resolution tile
    /// of a grid over the whole frame is searched, in turn (the sweep: 32 tiles at
    /// 1080p, so at 5 fps the whole frame every 6.4 s), for faces too small for the
    /// downscale that do not move: a distant person standing still. It takes one tile of
    /// `max_tiles` and is spaced out like the whole-frame pass under overload. 0: off.
    pub sweep_every: u32,
    /// Luma change, in levels (0–255) of the cell average, that counts as motion.
    pub motion_threshold: f32,
    /// Motion components smaller than this, in full-frame pixels², are ignored (noise,
    /// leaves, rain).
    pub min_region_area: u32,
    /// Padding added around each motion region, as a fraction of its smaller side (for a
    /// walking body about a head's width, so a face at its edge is whole).
    pub region_padding: f32,
    /// Most full-resolution tiles searched per frame over motion; when motion needs
    /// more, the largest regions are searched at a coarser step (their faces are large).
    /// Tracked faces get their tiles on top (a face left out would lose its track).
    pub max_tiles: usize,
    /// Faces narrower or shorter than this, in full-frame pixels, are dropped; 0 takes
    /// `detect.min_face_px`.
    pub min_face_px: f32,
    /// Areas to ignore: polygons of at least three `[x, y]` points in fractions of the
    /// frame (0–1, so they survive a resolution change), e.g.
    /// `masks = [[[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]]`. Motion there does
    /// not count and faces whose centre lies there are dropped.
    pub masks: Vec<Vec<[f32; 2]>>,
}

/// Where the detector looks (see [`CameraDetection::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectMode {
    Regions,
    Downscale,
    Full,
}

impl Default for CameraDetection {
    fn default() -> Self {
        CameraDetection {
            mode: DetectMode::Regions,
            full_frame_every: 5,
            sweep_every: 1,
            motion_threshold: 8.0,
            min_region_area: 600,
            region_padding: 0.25,
            max_tiles: 6,
            min_face_px: 0.0,
            masks: Vec::new(),
        }
    }
}

impl CameraDetection {
    /// Append every problem to `problems`, naming the camera.
    pub fn validate(&self, camera: &str, problems: &mut Vec<String>) {
        let key = |k: &str| format!("cameras[{camera}].detection.{k}");
        crate::validate::within(
            problems,
            &key("full_frame_every"),
            self.full_frame_every,
            1..=1000,
        );
        crate::validate::within_note(
            problems,
            &key("sweep_every"),
            self.sweep_every,
            0..=1000,
            "(0: no sweep)",
        );
        crate::validate::within(
            problems,
            &key("motion_threshold"),
            self.motion_threshold,
            1.0..=128.0,
        );
        crate::validate::within(
            problems,
            &key("region_padding"),
            self.region_padding,
            0.0..=2.0,
        );
        crate::validate::within(problems, &key("max_tiles"), self.max_tiles, 1..=64);
        if self.min_face_px.is_nan() || self.min_face_px < 0.0 {
            problems.push(format!("{} must be ≥ 0", key("min_face_px")));
        }
        for (i, polygon) in self.masks.iter().enumerate() {
            if let Err(e) = Mask::check_polygon(polygon) {
                problems.push(format!("{}[{i}]: {e}", key("masks")));
            }
        }
    }
}

/// What one frame's motion analysis found.
#[derive(Debug, Clone, PartialEq)]
pub enum Motion {
    /// No background yet (first frame, or a resolution change): look everywhere.
    Started,
    /// Most of the frame changed at once (lights, camera moved): the background was
    /// reset; look everywhere.
    Global,
    /// Moving regions in full-frame pixels (empty: nothing moved).
    Regions(Vec<Rect>),
}

/// An integer rectangle in full-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn right(&self) -> u32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }
    pub fn area(&self) -> u64 {
        u64::from(self.w) * u64::from(self.h)
    }
    /// Whether the two share at least one pixel.
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }
    pub fn union(&self, o: &Rect) -> Rect {
        let (x, y) = (self.x.min(o.x), self.y.min(o.y));
        Rect {
            x,
            y,
            w: self.right().max(o.right()) - x,
            h: self.bottom().max(o.bottom()) - y,
        }
    }
}

/// Fraction of unmasked cells that must change at once to count as a global change.
const GLOBAL_CHANGE: f32 = 0.4;
/// Background learning rate per analysed frame where nothing moves, and where something
/// does (slower, so a person who stops is absorbed over ~10 s at 5 fps, not at once).
const ALPHA_STILL: f32 = 0.1;
const ALPHA_MOVING: f32 = 0.02;

/// A camera's running background and its motion analysis.
pub struct MotionDetector {
    cell: u32,
    threshold: f32,
    min_cells: usize,
    mask: Mask,
    /// Frame size the background belongs to.
    size: (u32, u32),
    grid: (usize, usize),
    background: Vec<f32>,
    masked: Vec<bool>,
    current: Vec<f32>,
}

impl MotionDetector {
    /// `cell`: block side in pixels (8 for HD); `min_region_area` in full-frame pixels².
    pub fn new(config: &CameraDetection, cell: u32) -> MotionDetector {
        let cell = cell.max(1);
        MotionDetector {
            cell,
            threshold: config.motion_threshold,
            min_cells: (config.min_region_area as usize).div_ceil((cell * cell) as usize),
            mask: Mask::new(&config.masks),
            size: (0, 0),
            grid: (0, 0),
            background: Vec::new(),
            masked: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Analyse the next frame's luma plane (`width`×`height`, rows packed).
    pub fn update(&mut self, luma: &[u8], width: u32, height: u32) -> Motion {
        let (gw, gh) = (
            (width / self.cell).max(1) as usize,
            (height / self.cell).max(1) as usize,
        );
        block_means(
            luma,
            width as usize,
            self.cell as usize,
            gw,
            gh,
            &mut self.current,
        );
        if self.size != (width, height) {
            self.size = (width, height);
            self.grid = (gw, gh);
            self.background = self.current.clone();
            self.masked = (0..gw * gh)
                .map(|i| {
                    let (cx, cy) = ((i % gw) as f32 + 0.5, (i / gw) as f32 + 0.5);
                    self.mask.contains([cx / gw as f32, cy / gh as f32])
                })
                .collect();
            return Motion::Started;
        }
        // Global brightness shift: the median difference over unmasked cells.
        let mut diffs: Vec<f32> = self
            .current
            .iter()
            .zip(&self.background)
            .zip(&self.masked)
            .filter(|(_, &m)| !m)
            .map(|((c, b), _)| c - b)
            .collect();
        if diffs.is_empty() {
            return Motion::Regions(Vec::new());
        }
        let mid = diffs.len() / 2;
        let shift = *diffs.select_nth_unstable_by(mid, f32::total_cmp).1;
        let changed: Vec<bool> = self
            .current
            .iter()
            .zip(&self.background)
            .zip(&self.masked)
            .map(|((c, b), &m)| !m && (c - b - shift).abs() > self.threshold)
            .collect();
        let count = changed.iter().filter(|&&c| c).count();
        if count as f32 > GLOBAL_CHANGE * diffs.len() as f32 {
            self.background.copy_from_slice(&self.current);
            return Motion::Global;
        }
        let moving = dilate(&changed, gw, gh);
        for (i, b) in self.background.iter_mut().enumerate() {
            let alpha = if moving[i] { ALPHA_MOVING } else { ALPHA_STILL };
            // follow the global shift at once, the local content at the learning rate
            *b += shift + alpha * (self.current[i] - shift - *b);
        }
        let cell = self.cell;
        let regions = components(&moving, &changed, gw, gh, self.min_cells)
            .into_iter()
            .map(|(x0, y0, x1, y1)| {
                let x = x0 as u32 * cell;
                let y = y0 as u32 * cell;
                Rect {
                    x,
                    y,
                    w: ((x1 as u32 + 1) * cell).min(width) - x,
                    h: ((y1 as u32 + 1) * cell).min(height) - y,
                }
            })
            .collect();
        Motion::Regions(regions)
    }

    /// Whether a point in full-frame pixels lies in a mask.
    pub fn masked(&self, p: [f32; 2], width: u32, height: u32) -> bool {
        self.mask
            .contains([p[0] / width.max(1) as f32, p[1] / height.max(1) as f32])
    }
}

/// Mean luma of each `cell`×`cell` block (a partial last row/column is left out).
fn block_means(luma: &[u8], width: usize, cell: usize, gw: usize, gh: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(gw * gh, 0.0);
    let mut sums = vec![0u32; gw];
    let area = (cell * cell) as f32;
    for gy in 0..gh {
        sums.fill(0);
        for row in gy * cell..(gy + 1) * cell {
            let line = &luma[row * width..row * width + gw * cell];
            for (gx, chunk) in line.chunks_exact(cell).enumerate() {
                sums[gx] += chunk.iter().map(|&v| u32::from(v)).sum::<u32>();
            }
        }
        for gx in 0..gw {
            out[gy * gw + gx] = sums[gx] as f32 / area;
        }
    }
}

/// 3×3 dilation of a cell mask.
fn dilate(cells: &[bool], gw: usize, gh: usize) -> Vec<bool> {
    let mut out = vec![false; cells.len()];
    for y in 0..gh {
        for x in 0..gw {
            if !cells[y * gw + x] {
                continue;
            }
            for ny in y.saturating_sub(1)..=(y + 1).min(gh - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(gw - 1) {
                    out[ny * gw + nx] = true;
                }
            }
        }
    }
    out
}

/// 8-connected components of `cells`, as cell bounding boxes `(x0, y0, x1, y1)`
/// (inclusive); a component counts when it holds at least `min_cells` changed cells
/// (`changed`, before dilation).
fn components(
    cells: &[bool],
    changed: &[bool],
    gw: usize,
    gh: usize,
    min_cells: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let mut seen = vec![false; cells.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..cells.len() {
        if !cells[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (gw, gh, 0, 0);
        let mut size = 0;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % gw, i / gw);
            size += usize::from(changed[i]);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            for ny in y.saturating_sub(1)..=(y + 1).min(gh - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(gw - 1) {
                    let j = ny * gw + nx;
                    if cells[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if size >= min_cells.max(1) {
            out.push((x0, y0, x1, y1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source (xorshift), so the tests need no RNG crate seed.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 1000) as f32 / 1000.0
        }
    }

    /// A textured 320×240 scene with per-frame sensor noise of ±`noise` levels, shifted
    /// by `brightness`, with an optional bright square at `blob`.
    fn frame(
        rng: &mut Noise,
        noise: f32,
        brightness: f32,
        blob: Option<(u32, u32, u32)>,
    ) -> Vec<u8> {
        let (w, h) = (320u32, 240u32);
        let mut out = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                let texture =
                    100.0 + 40.0 * ((x / 16 + y / 16) % 2) as f32 + ((x * 7 + y * 3) % 23) as f32;
                let mut v = texture + brightness + (rng.next() - 0.5) * 2.0 * noise;
                if let Some((bx, by, side)) = blob {
                    if (bx..bx + side).contains(&x) && (by..by + side).contains(&y) {
                        v = 230.0 + (rng.next() - 0.5) * 2.0 * noise;
                    }
                }
                out.push(v.clamp(0.0, 255.0) as u8);
            }
        }
        out
    }

    fn detector(masks: Vec<Vec<[f32; 2]>>) -> MotionDetector {
        let config = CameraDetection {
            masks,
            ..CameraDetection::default()
        };
        MotionDetector::new(&config, 8)
    }

    #[test]
    fn a_moving_blob_on_noise_is_found_where_it_is() {
        let mut rng = Noise(7);
        let mut m = detector(vec![]);
        assert_eq!(
            m.update(&frame(&mut rng, 12.0, 0.0, None), 320, 240),
            Motion::Started
        );
        for _ in 0..5 {
            assert_eq!(
                m.update(&frame(&mut rng, 12.0, 0.0, None), 320, 240),
                Motion::Regions(vec![])
            );
        }
        let Motion::Regions(found) =
            m.update(&frame(&mut rng, 12.0, 0.0, Some((200, 80, 40))), 320, 240)
        else {
            panic!("expected regions");
        };
        assert_eq!(found.len(), 1, "{found:?}");
        let r = found[0];
        // the blob (200..240, 80..120) inside the region, the region not much larger
        assert!(
            r.x <= 200 && r.right() >= 240 && r.y <= 80 && r.bottom() >= 120,
            "{r:?}"
        );
        assert!(r.w <= 40 + 3 * 8 && r.h <= 40 + 3 * 8, "{r:?}");
    }

    #[test]
    fn static_noise_and_a_lighting_change_are_not_motion() {
        let mut rng = Noise(11);
        let mut m = detector(vec![]);
        m.update(&frame(&mut rng, 20.0, 0.0, None), 320, 240);
        // heavy sensor noise, frame after frame
        for _ in 0..20 {
            assert_eq!(
                m.update(&frame(&mut rng, 20.0, 0.0, None), 320, 240),
                Motion::Regions(vec![])
            );
        }
        // slow drift and a sudden +30 levels (lights on, auto exposure): no regions
        for step in 1..=10 {
            assert_eq!(
                m.update(&frame(&mut rng, 20.0, step as f32 * 1.5, None), 320, 240),
                Motion::Regions(vec![])
            );
        }
        assert_eq!(
            m.update(&frame(&mut rng, 20.0, 45.0, None), 320, 240),
            Motion::Regions(vec![])
        );
    }

    #[test]
    fn a_change_of_the_whole_scene_resets_the_background() {
        let mut rng = Noise(3);
        let mut m = detector(vec![]);
        m.update(&frame(&mut rng, 5.0, 0.0, None), 320, 240);
        let inverted: Vec<u8> = frame(&mut rng, 5.0, 0.0, None)
            .into_iter()
            .map(|v| 255 - v)
            .collect();
        assert_eq!(m.update(&inverted, 320, 240), Motion::Global);
        let inverted: Vec<u8> = frame(&mut rng, 5.0, 0.0, None)
            .into_iter()
            .map(|v| 255 - v)
            .collect();
        assert_eq!(m.update(&inverted, 320, 240), Motion::Regions(vec![]));
    }

    #[test]
    fn motion_inside_a_mask_does_not_count() {
        let mut rng = Noise(5);
        // the right half of the frame is a TV screen
        let mut m = detector(vec![vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]]);
        m.update(&frame(&mut rng, 5.0, 0.0, None), 320, 240);
        assert_eq!(
            m.update(&frame(&mut rng, 5.0, 0.0, Some((220, 100, 48))), 320, 240),
            Motion::Regions(vec![])
        );
        let Motion::Regions(found) =
            m.update(&frame(&mut rng, 5.0, 0.0, Some((40, 100, 48))), 320, 240)
        else {
            panic!("expected regions");
        };
        assert_eq!(found.len(), 1);
        assert!(m.masked([300.0, 10.0], 320, 240) && !m.masked([10.0, 10.0], 320, 240));
    }

    #[test]
    fn small_components_are_ignored() {
        let mut rng = Noise(9);
        let mut m = detector(vec![]);
        m.update(&frame(&mut rng, 2.0, 0.0, None), 320, 240);
        // 8×8 px = one cell < 600 px²
        assert_eq!(
            m.update(&frame(&mut rng, 2.0, 0.0, Some((160, 160, 8))), 320, 240),
            Motion::Regions(vec![])
        );
    }

    #[test]
    fn validation_names_the_camera_and_key() {
        let mut problems = Vec::new();
        CameraDetection {
            full_frame_every: 0,
            masks: vec![vec![[0.0, 0.0], [1.0, 0.0]]],
            ..CameraDetection::default()
        }
        .validate("door", &mut problems);
        let text = problems.join("\n");
        assert!(
            text.contains("cameras[door].detection.full_frame_every = 0"),
            "{text}"
        );
        assert!(text.contains("cameras[door].detection.masks[0]"), "{text}");
    }
}
