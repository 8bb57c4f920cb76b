//! Where the detector looks in each frame of a camera, decided on the camera's pump
//! thread (one per camera, frames in order) before the frame enters the stages.
//!
//! In `regions` mode (the default) a frame gets: full-resolution tiles over its motion
//! regions (`stages::motion`; a region that holds a tracked face only every third frame,
//! for newcomers beside it) and around the predicted boxes of the camera's live tracks
//! (so a person who stops moving keeps being seen; a *decided* track, whose identity
//! event is out, only every second frame: it needs following, not embedding, and
//! `track.lost_after_ms` spans the gaps), and every `full_frame_every` frames a
//! pass over the whole frame on the downscale (`detect.max_side`), which finds whoever
//! arrived standing still or large. Every `sweep_every` frames one tile of the **sweep**
//! (a fixed full-resolution grid over the frame, [`plan::sweep_grid`]) is searched in
//! turn, so a face too small for the downscale is found even if it never moves: a
//! distant person standing still fades into the motion background within seconds and
//! would otherwise never be searched at full resolution. At 1080p and 5 fps the sweep
//! covers the frame every 6.4 s. It takes one tile of the `max_tiles` budget (with a
//! budget of one tile, it waits for a frame without motion); a tile whose corners and
//! centre lie in a mask is passed over. A frame with no motion, no track and no pass or
//! sweep due skips detection.
//!
//! **Overload** raises the camera's shed level one step per frame that finds the stages
//! behind — the frame waited in the camera's ring longer than one sampling period, or
//! the ring dropped frames since the last — and lowers it again after five quiet
//! seconds. Waiting is the early sign: shedding starts before the ring has to drop. The
//! order in which work is shed:
//! 1. level 1: the whole-frame pass every 2 × `full_frame_every` frames, the sweep's tile
//!    every 2 × `sweep_every`;
//! 2. level 2: every 4 ×, at most half of `max_tiles` tiles (coarser steps), and decided
//!    tracks followed every third frame;
//! 3. level 3: every 8 ×, and a quarter of `max_tiles`.
//!
//! Motion is searched at every level within the tile budget (over it, the largest
//! regions go to a coarser step first; separate regions that still do not fit take
//! turns frame by frame, so the smallest is not always the one left out); tracked
//! faces get their tiles on top of the budget, since a face left out would end its track
//! and come back as a second event. Frames the ring still has to drop are counted
//! (`facestream_camera_frames_dropped_total`), oldest first. The level is exported as
//! `facestream_detect_shed_level{camera}`; passes and tiles as
//! `facestream_detect_passes_total{camera,kind}` (`full_frame`, `tile`, `small_tile`,
//! `sweep`, `skipped`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::TrackBox;
use crate::ingest::I420Frame;
use crate::stages::motion::plan::{self, Tile};
use crate::stages::motion::{CameraDetection, DetectMode, Mask, Motion, MotionDetector};
use crate::stages::BBox;
use crate::telemetry::{metrics, Metrics};

/// What the detect stage runs on one frame.
#[derive(Debug, Clone, Default)]
pub struct DetectPlan {
    /// The whole frame on the downscale (`detect.max_side`).
    pub downscale: bool,
    /// The whole frame at full resolution (`mode = "full"`).
    pub full_resolution: bool,
    /// Full-resolution (or integer-step) tiles.
    pub tiles: Vec<Tile>,
    /// Faces smaller than this (full-frame pixels) are dropped.
    pub min_face_px: f32,
    /// Faces whose centre lies here are dropped.
    pub mask: Option<Arc<Mask>>,
}

impl DetectPlan {
    pub fn is_empty(&self) -> bool {
        !self.downscale && !self.full_resolution && self.tiles.is_empty()
    }
}

/// Motion cell side in pixels for a frame: 8 for HD, 4 below 720 lines (so a face still
/// covers several cells).
fn motion_cell(height: u32) -> u32 {
    if height >= 720 {
        8
    } else {
        4
    }
}

/// A motion region holding a tracked face is searched whole every this many frames.
const EXPLAINED_EVERY: u64 = 3;

fn inside(r: &crate::stages::motion::Rect, p: [f32; 2]) -> bool {
    p[0] >= r.x as f32
        && p[0] <= r.right() as f32
        && p[1] >= r.y as f32
        && p[1] <= r.bottom() as f32
}

/// A decided track's face is searched every this many frames (one more from shed level
/// 2). At 5 fps that is a detection every 0.4 s, well inside `track.lost_after_ms`.
const DECIDED_EVERY: u64 = 2;

/// Frames in a row without drops before the shed level goes down (5 s at 5 fps).
const CALM_FRAMES: u32 = 25;
const MAX_SHED: u32 = 3;

/// One camera's detection planning.
pub struct CameraPlanner {
    config: CameraDetection,
    max_side: u32,
    min_face_px: f32,
    mask: Option<Arc<Mask>>,
    /// The camera's sampling period (`1 / detect_fps`).
    period: Duration,
    motion: Option<MotionDetector>,
    until_full: u32,
    /// The sweep's grid for the current frame size, the next tile in it, and the frames
    /// until its next tile is due.
    sweep: Vec<Tile>,
    sweep_size: (u32, u32),
    sweep_next: usize,
    until_sweep: u32,
    frame: u64,
    shed: u32,
    calm: u32,
    dropped_seen: u64,
    passes_full: Counter,
    passes_tile: Counter,
    passes_small_tile: Counter,
    passes_sweep: Counter,
    passes_skipped: Counter,
    motion_regions: Counter,
    shed_level: Gauge,
}

impl CameraPlanner {
    /// `max_side` and `min_face_px` from `[detect]` (the camera's own `min_face_px` wins
    /// when set); `detect_fps`, the camera's sampling rate.
    pub fn new(
        camera: &str,
        config: CameraDetection,
        max_side: u32,
        min_face_px: f32,
        detect_fps: f32,
    ) -> CameraPlanner {
        let m = metrics();
        let kind = |k: &str| {
            m.detect_passes
                .get_or_create(&Metrics::kind(camera, k))
                .clone()
        };
        let mask = (!config.masks.is_empty()).then(|| Arc::new(Mask::new(&config.masks)));
        let shed_level = m
            .detect_shed_level
            .get_or_create(&Metrics::camera(camera))
            .clone();
        shed_level.set(0);
        CameraPlanner {
            min_face_px: if config.min_face_px > 0.0 {
                config.min_face_px
            } else {
                min_face_px
            },
            max_side,
            mask,
            period: Duration::from_secs_f32(1.0 / detect_fps.max(0.01)),
            motion: None,
            until_full: 0,
            sweep: Vec::new(),
            sweep_size: (0, 0),
            sweep_next: 0,
            until_sweep: 0,
            frame: 0,
            shed: 0,
            calm: 0,
            dropped_seen: 0,
            passes_full: kind("full_frame"),
            passes_tile: kind("tile"),
            passes_small_tile: kind("small_tile"),
            passes_sweep: kind("sweep"),
            passes_skipped: kind("skipped"),
            motion_regions: m
                .motion_regions
                .get_or_create(&Metrics::camera(camera))
                .clone(),
            shed_level,
            config,
        }
    }

    /// The current shed level (0: none).
    pub fn shed_level(&self) -> u32 {
        self.shed
    }

    /// Update the shed level before planning a frame: `dropped_total` is the camera
    /// ring's drop counter (total so far), `waited` how long the frame sat in the ring.
    pub fn observe_load(&mut self, dropped_total: u64, waited: Duration) {
        let dropped = dropped_total > self.dropped_seen;
        if dropped || waited > self.period {
            self.dropped_seen = dropped_total;
            self.shed = (self.shed + 1).min(MAX_SHED);
            self.calm = 0;
        } else if self.shed > 0 {
            self.calm += 1;
            if self.calm >= CALM_FRAMES {
                self.shed -= 1;
                self.calm = 0;
            }
        }
        self.shed_level.set(i64::from(self.shed));
    }

    /// Plan the detector's work on `frame`, seen at `timestamp_ms`, given the camera's
    /// live tracks.
    pub fn plan(
        &mut self,
        frame: &I420Frame,
        timestamp_ms: i64,
        tracks: &[TrackBox],
    ) -> DetectPlan {
        let mut out = DetectPlan {
            min_face_px: self.min_face_px,
            mask: self.mask.clone(),
            ..DetectPlan::default()
        };
        let mut swept = false;
        match self.config.mode {
            DetectMode::Downscale => out.downscale = true,
            DetectMode::Full => out.full_resolution = true,
            DetectMode::Regions => swept = self.plan_regions(frame, timestamp_ms, tracks, &mut out),
        }
        if out.downscale || out.full_resolution {
            self.passes_full.inc();
        }
        let small = out
            .tiles
            .iter()
            .filter(|t| t.size == plan::SMALL_TILE)
            .count() as u64;
        self.passes_small_tile.inc_by(small);
        self.passes_sweep.inc_by(u64::from(swept));
        self.passes_tile
            .inc_by(out.tiles.len() as u64 - small - u64::from(swept));
        if out.is_empty() {
            self.passes_skipped.inc();
        }
        out
    }

    /// Plan a frame in `regions` mode; whether the last of `out.tiles` is the sweep's.
    fn plan_regions(
        &mut self,
        frame: &I420Frame,
        timestamp_ms: i64,
        tracks: &[TrackBox],
        out: &mut DetectPlan,
    ) -> bool {
        let (w, h) = (frame.width, frame.height);
        let cell = motion_cell(h);
        let motion = self
            .motion
            .get_or_insert_with(|| MotionDetector::new(&self.config, cell))
            .update(&frame.y, w, h);
        let interval = self.config.full_frame_every << self.shed;
        let mut full_due = self.until_full == 0;
        self.frame = self.frame.wrapping_add(1);
        let follow_decided = self
            .frame
            .is_multiple_of(DECIDED_EVERY + u64::from(self.shed >= 2));
        let predicted: Vec<BBox> = tracks
            .iter()
            .map(|t| {
                let dt = (timestamp_ms - t.last_seen_ms) as f32;
                BBox {
                    x: t.bbox.x + t.velocity[0] * dt,
                    y: t.bbox.y + t.velocity[1] * dt,
                    ..t.bbox
                }
            })
            .collect();
        let mut motion_wants = Vec::new();
        match motion {
            Motion::Started | Motion::Global => full_due = true,
            Motion::Regions(regions) => {
                self.motion_regions.inc_by(regions.len() as u64);
                // Motion that a tracked face explains (the face's own body moving) is
                // searched every EXPLAINED_EVERY frames, for newcomers in the same blob;
                // the face itself has its own tile below.
                let recheck = self.frame.is_multiple_of(EXPLAINED_EVERY);
                motion_wants.extend(
                    regions
                        .iter()
                        .filter(|r| recheck || !predicted.iter().any(|b| inside(r, b.centre())))
                        .map(|r| plan::around_motion(r, self.config.region_padding, w, h)),
                );
            }
        }
        let face_wants: Vec<plan::Want> = tracks
            .iter()
            .zip(&predicted)
            .filter(|(t, _)| !t.decided || follow_decided)
            .map(|(_, b)| plan::around_face(b, w, h))
            .collect();
        let mut swept = false;
        if detection_step(w, h, self.max_side) == 1 {
            // The downscale is the full frame: one pass covers every region.
            full_due |= !motion_wants.is_empty() || !face_wants.is_empty();
        } else {
            // Level 2: half the budget, level 3: a quarter (the module doc's order).
            // Tracked faces are never left out for it: a face the budgeted tiles do not
            // cover gets its own tile on top, since it would otherwise end its track and
            // come back as a second event.
            let max_tiles = (self.config.max_tiles >> self.shed.saturating_sub(1)).max(1);
            let mut wants = motion_wants;
            wants.extend(&face_wants);
            let sweep = self.sweep_tile(w, h, max_tiles >= 2 || wants.is_empty());
            let budget = max_tiles - usize::from(sweep.is_some() && max_tiles >= 2);
            out.tiles = plan::tiles(&wants, w, h, budget, self.frame);
            for face in &face_wants {
                if !out.tiles.iter().any(|t| plan::holds_face(t, face)) {
                    out.tiles.extend(plan::tiles(&[*face], w, h, 1, 0));
                }
            }
            if let Some(tile) = sweep {
                if !out.tiles.iter().any(|t| plan::contains(t, &tile)) {
                    out.tiles.push(tile);
                    swept = true;
                }
            }
        }
        if full_due {
            out.downscale = true;
            self.until_full = interval.saturating_sub(1);
        } else {
            self.until_full -= 1;
        }
        swept
    }

    /// The sweep's next tile if one is due on this frame and `room` (a tile of the
    /// budget is free for it); a due tile without room waits for the next frame.
    fn sweep_tile(&mut self, w: u32, h: u32, room: bool) -> Option<Tile> {
        if self.config.sweep_every == 0 {
            return None;
        }
        if self.until_sweep > 0 {
            self.until_sweep -= 1;
            return None;
        }
        if !room {
            return None;
        }
        self.until_sweep = (self.config.sweep_every << self.shed) - 1;
        if self.sweep_size != (w, h) {
            self.sweep = plan::sweep_grid(w, h);
            self.sweep_size = (w, h);
            self.sweep_next = 0;
        }
        let masked = |t: &Tile| {
            self.mask.as_ref().is_some_and(|m| {
                let (x0, y0) = (t.x as f32 / w as f32, t.y as f32 / h as f32);
                // the last pixel, not the edge past it (a mask that ends at the frame's
                // edge holds the tile's last column and row)
                let (x1, y1) = (
                    (t.x + t.side() - 1) as f32 / w as f32,
                    (t.y + t.side() - 1) as f32 / h as f32,
                );
                [
                    [x0, y0],
                    [x1, y0],
                    [x0, y1],
                    [x1, y1],
                    [(x0 + x1) / 2.0, (y0 + y1) / 2.0],
                ]
                .into_iter()
                .all(|p| m.contains(p))
            })
        };
        for _ in 0..self.sweep.len() {
            let tile = self.sweep[self.sweep_next];
            self.sweep_next = (self.sweep_next + 1) % self.sweep.len();
            if !masked(&tile) {
                return Some(tile);
            }
        }
        None
    }
}

/// Integer shrink factor that brings the longer side to at most `max_side`.
pub(crate) fn detection_step(width: u32, height: u32, max_side: u32) -> u32 {
    width.max(height).div_ceil(max_side.max(1)).max(1)
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

    /// A `w`×`h` checkerboard frame with a bright rectangle `(x, y, width, height)`.
    fn painted(w: u32, h: u32, bright: Option<(u32, u32, u32, u32)>) -> I420Frame {
        let img = image::RgbImage::from_fn(w, h, |px, py| {
            let inside = bright.is_some_and(|(x, y, bw, bh)| {
                (x..x + bw).contains(&px) && (y..y + bh).contains(&py)
            });
            let v = if inside {
                240
            } else {
                (60 + (px / 32 + py / 32) % 2 * 40) as u8
            };
            image::Rgb([v, v, v])
        });
        I420Frame::from_rgb(&img)
    }

    /// A frame with a 64-px bright square at `blob`.
    fn frame(w: u32, h: u32, blob: Option<(u32, u32)>) -> I420Frame {
        painted(w, h, blob.map(|(x, y)| (x, y, 64, 64)))
    }

    fn planner(config: CameraDetection) -> CameraPlanner {
        CameraPlanner::new("plan-test", config, 640, 0.0, 5.0)
    }

    /// The defaults without the sweep, for the tests of everything else.
    fn no_sweep() -> CameraDetection {
        CameraDetection {
            sweep_every: 0,
            ..CameraDetection::default()
        }
    }

    /// The sweep's tiles in a plan: step-1 large tiles on the sweep grid.
    fn swept(plan: &DetectPlan, grid: &[Tile]) -> Vec<Tile> {
        plan.tiles
            .iter()
            .filter(|t| grid.contains(t))
            .copied()
            .collect()
    }

    #[test]
    fn a_still_frame_is_swept_one_tile_a_frame_until_the_whole_frame_is_covered() {
        let mut p = planner(CameraDetection::default());
        let still = frame(1920, 1080, None);
        let grid = plan::sweep_grid(1920, 1080);
        let plans: Vec<DetectPlan> = (0..grid.len() as i64)
            .map(|i| p.plan(&still, i * 200, &[]))
            .collect();
        assert!(
            plans.iter().all(|pl| pl.tiles.len() == 1),
            "one tile a frame"
        );
        let mut seen: Vec<Tile> = plans.iter().flat_map(|pl| swept(pl, &grid)).collect();
        seen.sort_by_key(|t| (t.y, t.x));
        seen.dedup();
        assert_eq!(seen.len(), grid.len(), "every grid tile once per round");
        // the whole-frame pass on the downscale keeps its own rhythm
        assert_eq!(
            plans.iter().filter(|pl| pl.downscale).count(),
            grid.len() / 5 + 1
        );
        // the next round starts over
        assert_eq!(p.plan(&still, 9_000, &[]).tiles, vec![grid[0]]);
    }

    #[test]
    fn the_sweep_takes_one_tile_of_the_budget_and_is_spaced_out_under_overload() {
        let mut p = planner(CameraDetection::default());
        let grid = plan::sweep_grid(1920, 1080);
        p.plan(&frame(1920, 1080, None), 0, &[]);
        // motion over most of the frame wants far more than the 6-tile budget
        let busy = painted(1920, 1080, Some((300, 200, 900, 500)));
        let plan = p.plan(&busy, 200, &[]);
        let cost: f32 = plan.tiles.iter().map(Tile::cost).sum();
        assert!(cost <= 6.0 + 1e-3, "{:?}", plan.tiles);
        assert_eq!(swept(&plan, &grid).len(), 1, "{:?}", plan.tiles);
        // level 2: a sweep tile every fourth frame
        for d in 1..=2 {
            p.observe_load(d, Duration::ZERO);
        }
        assert_eq!(p.shed_level(), 2);
        let still = frame(1920, 1080, None);
        let with_sweep = (2..14)
            .filter(|&k| !swept(&p.plan(&still, k * 200, &[]), &grid).is_empty())
            .count();
        assert_eq!(with_sweep, 3, "12 frames at level 2");
    }

    #[test]
    fn masked_sweep_tiles_are_passed_over() {
        // the left half of the frame is masked
        let mut p = planner(CameraDetection {
            masks: vec![vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]],
            ..CameraDetection::default()
        });
        let still = frame(1920, 1080, None);
        let grid = plan::sweep_grid(1920, 1080);
        let seen: Vec<Tile> = (0..grid.len() as i64)
            .flat_map(|i| swept(&p.plan(&still, i * 200, &[]), &grid))
            .collect();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|t| t.x + t.side() > 960), "{seen:?}");
        let distinct: std::collections::HashSet<(u32, u32)> =
            seen.iter().map(|t| (t.x, t.y)).collect();
        // 8 columns, 3 of them wholly in the masked half
        assert_eq!(distinct.len(), grid.len() - 3 * 4);
    }

    #[test]
    fn a_frame_the_downscale_covers_at_full_resolution_is_not_swept() {
        let mut p = planner(CameraDetection::default());
        let small = frame(640, 360, None);
        assert!((0..10).all(|i| p.plan(&small, i * 200, &[]).tiles.is_empty()));
    }

    #[test]
    fn still_frames_skip_detection_between_full_frame_passes() {
        let mut p = planner(no_sweep());
        let f = frame(1920, 1080, None);
        let plans: Vec<DetectPlan> = (0..10).map(|i| p.plan(&f, i * 200, &[])).collect();
        let full: Vec<bool> = plans.iter().map(|p| p.downscale).collect();
        assert_eq!(
            full,
            [true, false, false, false, false, true, false, false, false, false]
        );
        assert!(plans.iter().all(|p| p.tiles.is_empty()));
    }

    #[test]
    fn motion_and_tracks_get_full_resolution_tiles() {
        let mut p = planner(no_sweep());
        p.plan(&frame(1920, 1080, None), 0, &[]);
        let moved = p.plan(&frame(1920, 1080, Some((1200, 600))), 200, &[]);
        assert!(!moved.downscale);
        assert_eq!(moved.tiles.len(), 1, "{:?}", moved.tiles);
        let t = moved.tiles[0];
        assert_eq!(t.step, 1);
        assert!(t.x <= 1200 && t.x + t.side() >= 1264 && t.y <= 600 && t.y + t.side() >= 664);
        // a track moving right at 0.1 px/ms, last seen 200 ms ago at x=400
        let track = TrackBox {
            bbox: BBox {
                x: 400.0,
                y: 300.0,
                w: 50.0,
                h: 60.0,
            },
            velocity: [0.1, 0.0],
            last_seen_ms: 200,
            decided: false,
            shot_floor: None,
        };
        let tracked = p.plan(&frame(1920, 1080, Some((1200, 600))), 400, &[track]);
        assert!(
            tracked
                .tiles
                .iter()
                .any(|t| t.x <= 420 && t.x + t.side() >= 470),
            "{:?}",
            tracked.tiles
        );
    }

    #[test]
    fn motion_a_tracked_face_explains_is_searched_every_third_frame() {
        /// A 200×600 "body" at x, with the tracked face at its top.
        fn body(x: u32) -> I420Frame {
            painted(1920, 1080, Some((x, 200, 200, 600)))
        }
        let mut p = planner(no_sweep());
        p.plan(&frame(1920, 1080, None), 0, &[]);
        let plans: Vec<(usize, usize)> = (1..=6)
            .map(|k| {
                // the body steps 40 px a frame: motion in every frame
                let x = 800 + 40 * k as u32;
                let face = TrackBox {
                    bbox: BBox {
                        x: (x + 80) as f32,
                        y: 210.0,
                        w: 44.0,
                        h: 44.0,
                    },
                    velocity: [0.0, 0.0],
                    last_seen_ms: k as i64 * 200,
                    decided: false,
                    shot_floor: None,
                };
                let with_track = p.plan(&body(x), k as i64 * 200, &[face]).tiles.len();
                (k, with_track)
            })
            .collect();
        // one frame in three searches the whole body, the others only the face's tile
        let whole: Vec<usize> = plans
            .iter()
            .filter(|(_, t)| *t >= 2)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(whole.len(), 2, "{plans:?}");
        assert_eq!(whole[1] - whole[0], 3, "{plans:?}");
        assert!(
            plans.iter().all(|(k, t)| whole.contains(k) || *t == 1),
            "{plans:?}"
        );
    }

    #[test]
    fn shedding_rises_with_drops_and_spaces_out_full_frame_passes() {
        let mut p = planner(no_sweep());
        let prompt = Duration::from_millis(10);
        p.observe_load(1, prompt);
        p.observe_load(3, prompt);
        assert_eq!(p.shed_level(), 2);
        let f = frame(1920, 1080, None);
        let full = (0..40)
            .filter(|i| p.plan(&f, i * 200, &[]).downscale)
            .count();
        assert_eq!(full, 2, "every 20th frame at level 2 (5 × 4)");
        for _ in 0..CALM_FRAMES {
            p.observe_load(3, prompt);
        }
        assert_eq!(p.shed_level(), 1);
    }

    #[test]
    fn a_frame_that_waited_longer_than_a_sampling_period_starts_shedding_before_any_drop() {
        let mut p = planner(no_sweep());
        p.observe_load(0, Duration::from_millis(150));
        assert_eq!(p.shed_level(), 0, "waited less than 200 ms at 5 fps");
        p.observe_load(0, Duration::from_millis(450));
        assert_eq!(p.shed_level(), 1, "behind, though nothing was dropped");
        for _ in 0..CALM_FRAMES {
            p.observe_load(0, Duration::from_millis(20));
        }
        assert_eq!(p.shed_level(), 0);
    }

    #[test]
    fn a_decided_track_is_followed_every_second_frame_an_undecided_one_every_frame() {
        let mut p = planner(no_sweep());
        let still = frame(1920, 1080, None);
        p.plan(&still, 0, &[]);
        let track = |x: f32, decided: bool| TrackBox {
            bbox: BBox {
                x,
                y: 300.0,
                w: 50.0,
                h: 60.0,
            },
            velocity: [0.0, 0.0],
            last_seen_ms: 0,
            decided,
            shot_floor: None,
        };
        let (open, done) = (track(300.0, false), track(1400.0, true));
        let covers = |plan: &DetectPlan, x: u32| {
            plan.tiles
                .iter()
                .any(|t| t.x <= x && t.x + t.side() >= x + 50)
        };
        let plans: Vec<DetectPlan> = (1..=6)
            .map(|k| p.plan(&still, k * 200, &[open, done]))
            .collect();
        assert!(
            plans.iter().all(|pl| covers(pl, 300)),
            "undecided: every frame"
        );
        let followed = plans.iter().filter(|pl| covers(pl, 1400)).count();
        assert_eq!(followed, 3, "decided: one frame in two");
        // under overload (level 2) one in three
        let prompt = Duration::ZERO;
        p.observe_load(1, prompt);
        p.observe_load(2, prompt);
        assert_eq!(p.shed_level(), 2);
        let followed = (7..=12)
            .filter(|&k| covers(&p.plan(&still, k * 200, &[open, done]), 1400))
            .count();
        assert_eq!(followed, 2);
    }

    #[test]
    fn under_the_tightest_budget_every_tracked_face_still_gets_a_tile() {
        let mut p = planner(no_sweep());
        p.plan(&frame(1920, 1080, None), 0, &[]);
        for d in 1..=3 {
            p.observe_load(d, Duration::ZERO);
        }
        assert_eq!(p.shed_level(), 3, "budget: a quarter of 6 tiles, i.e. one");
        let face = |x: f32| TrackBox {
            bbox: BBox {
                x,
                y: 500.0,
                w: 45.0,
                h: 50.0,
            },
            velocity: [0.0, 0.0],
            last_seen_ms: 200,
            decided: false,
            shot_floor: None,
        };
        // motion far from both faces takes the one budgeted tile
        let plan = p.plan(
            &painted(1920, 1080, Some((900, 100, 300, 300))),
            400,
            &[face(100.0), face(1700.0)],
        );
        for x in [100u32, 1700] {
            assert!(
                plan.tiles
                    .iter()
                    .any(|t| t.step == 1 && t.x <= x && t.x + t.side() >= x + 45),
                "face at x={x}: {:?}",
                plan.tiles
            );
        }
    }

    #[test]
    fn the_other_modes_do_what_they_say() {
        let f = frame(1920, 1080, None);
        let mut down = planner(CameraDetection {
            mode: DetectMode::Downscale,
            ..CameraDetection::default()
        });
        assert!((0..3).all(|i| down.plan(&f, i, &[]).downscale));
        let mut full = planner(CameraDetection {
            mode: DetectMode::Full,
            ..CameraDetection::default()
        });
        assert!(full.plan(&f, 0, &[]).full_resolution);
    }
}
