//! From regions worth searching (motion, tracked faces) to detector tiles.
//!
//! A tile is a square of `size × step` full-frame pixels read at an integer `step` (1 =
//! full resolution), where `size` is [`TILE`] or, for a region that fits, [`SMALL_TILE`]:
//! every tile reaches the detector as one of two inputs, so a backend compiles two
//! shapes, whatever the regions look like. A region larger than
//! one tile is covered by a grid of tiles that overlap by a quarter of a tile, so a face
//! cut by one tile's edge lies whole in its neighbour (detections touching an inner tile
//! edge are discarded by the caller, [`Tile::interior_edge`]). When the regions of a frame
//! need more than `max_tiles`, the region needing the most is read at a coarser step
//! until they fit: the faces in a region that large are large too. Regions that still do
//! not fit (many separate ones) take turns from frame to frame, so the smallest — a
//! distant person — is not the one always left out.
//!
//! The **sweep** ([`sweep_grid`]) is a fixed grid of full-resolution tiles over the whole
//! frame that the camera's planner walks one tile at a time, for faces too small for the
//! downscale and too still for motion.

use super::Rect;

/// Detector input side for tiles, in pixels (a multiple of 32, YuNet's largest stride).
pub const TILE: u32 = 320;
/// The small tile: a region that fits in it (a tracked face of up to ~50 px with its
/// margin) is searched at a quarter of the large tile's cost.
pub const SMALL_TILE: u32 = 160;
/// Both input sides, for warm-up.
pub const TILE_SIZES: [u32; 2] = [SMALL_TILE, TILE];

/// A place to search and the finest step it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Want {
    pub rect: Rect,
    pub step: u32,
}

/// One detector input: the square at (`x`, `y`) of side `size × step`, read at `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub step: u32,
    /// Detector input side: [`TILE`] or [`SMALL_TILE`].
    pub size: u32,
}

impl Tile {
    /// Side in full-frame pixels.
    pub fn side(&self) -> u32 {
        self.size * self.step
    }

    /// Detector work relative to a large tile (input pixels).
    pub fn cost(&self) -> f32 {
        (self.size * self.size) as f32 / (TILE * TILE) as f32
    }

    pub fn rect(&self) -> Rect {
        Rect {
            x: self.x,
            y: self.y,
            w: self.side(),
            h: self.side(),
        }
    }

    /// Whether a box (full-frame pixels) touches an edge of this tile that is not an edge
    /// of the frame — a face the tile cut, to be found whole by a neighbour.
    pub fn interior_edge(&self, b: &crate::stages::BBox, width: u32, height: u32) -> bool {
        let margin = 2.0 * self.step as f32;
        let (x0, y0) = (self.x as f32, self.y as f32);
        let (x1, y1) = (
            (self.x + self.side()).min(width) as f32,
            (self.y + self.side()).min(height) as f32,
        );
        (self.x > 0 && b.x <= x0 + margin)
            || (self.y > 0 && b.y <= y0 + margin)
            || (x1 < width as f32 && b.x + b.w >= x1 - margin)
            || (y1 < height as f32 && b.y + b.h >= y1 - margin)
    }
}

/// Side of the region searched around a tracked face, in face sizes: the predicted box
/// with a face's width on every side for the prediction's error (a person who stops or
/// turns). Faces up to 53 px fit a [`SMALL_TILE`] at full resolution. 2.5 face sizes
/// (faces up to 64 px in a small tile) was measured and not kept: no fewer dropped frames
/// on 4 cameras and more appearances split in two (BENCHMARKS.md §7).
pub const FACE_REGION: f32 = 3.0;

/// A region around a tracked face ([`FACE_REGION`] face sizes on a side), at the step
/// that fits it in one tile.
pub fn around_face(b: &crate::stages::BBox, width: u32, height: u32) -> Want {
    let side = b.w.max(b.h).max(1.0);
    let [cx, cy] = b.centre();
    let half = FACE_REGION / 2.0 * side;
    let rect = clamp_rect(cx - half, cy - half, 2.0 * half, 2.0 * half, width, height);
    let step = ((2.0 * half) / TILE as f32).ceil().max(1.0) as u32;
    Want { rect, step }
    // (`cover` picks the small tile when the region fits in it at this step)
}

/// A motion region padded by `padding` × its smaller side (about a head's width for a
/// walking body), at full resolution.
pub fn around_motion(r: &Rect, padding: f32, width: u32, height: u32) -> Want {
    let pad = padding * r.w.min(r.h) as f32;
    Want {
        rect: clamp_rect(
            r.x as f32 - pad,
            r.y as f32 - pad,
            r.w as f32 + 2.0 * pad,
            r.h as f32 + 2.0 * pad,
            width,
            height,
        ),
        step: 1,
    }
}

fn clamp_rect(x: f32, y: f32, w: f32, h: f32, width: u32, height: u32) -> Rect {
    let x0 = x.max(0.0).min(width.saturating_sub(1) as f32) as u32;
    let y0 = y.max(0.0).min(height.saturating_sub(1) as f32) as u32;
    let x1 = ((x + w).ceil().max(0.0) as u32).clamp(x0 + 1, width.max(x0 + 1));
    let y1 = ((y + h).ceil().max(0.0) as u32).clamp(y0 + 1, height.max(y0 + 1));
    Rect {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

/// The tiles that cover `wants` in a `width`×`height` frame, at most `max_tiles`
/// large-tile equivalents. `turn` (the camera's frame count) rotates which tiles are left
/// out when separate regions still need more than the budget.
pub fn tiles(wants: &[Want], width: u32, height: u32, max_tiles: usize, turn: u64) -> Vec<Tile> {
    let mut wants = merge(wants);
    // the step at which a tile covers the whole frame: no want needs to go coarser
    let coarsest = width.max(height).div_ceil(TILE).max(1);
    loop {
        let per_want: Vec<Vec<Tile>> = wants.iter().map(|w| cover(w, width, height)).collect();
        // the budget counts large-tile equivalents: four small tiles cost one large
        let total = per_want
            .iter()
            .flatten()
            .map(Tile::cost)
            .sum::<f32>()
            .ceil() as usize;
        let widest = per_want
            .iter()
            .enumerate()
            .filter(|(i, t)| t.len() > 1 && wants[*i].step < coarsest)
            .max_by_key(|(_, t)| t.len())
            .map(|(i, _)| i);
        match widest {
            Some(i) if total > max_tiles => {
                wants[i].step += 1;
                wants = merge(&wants);
            }
            _ => {
                let mut all: Vec<Tile> = Vec::new();
                for tile in per_want.into_iter().flatten() {
                    if !all.iter().any(|t| contains(t, &tile)) {
                        all.retain(|t| !contains(&tile, t));
                        all.push(tile);
                    }
                }
                // still over budget (many separate regions, each one tile): they take
                // turns, in a fixed order rotated by one each frame, so every region is
                // searched within a few frames and the smallest (a distant person, the
                // cheapest to search) is not the one always left out
                all.sort_by_key(|t| (t.y, t.x, t.step, t.size));
                if !all.is_empty() {
                    let n = all.len();
                    all.rotate_left((turn % n as u64) as usize);
                }
                let mut spent = 0.0;
                all.retain(|t| {
                    let fits = spent + t.cost() <= max_tiles as f32 + 1e-3;
                    if fits {
                        spent += t.cost();
                    }
                    fits
                });
                return all;
            }
        }
    }
}

/// Overlap of the sweep grid's neighbouring tiles, in pixels: a face up to about this
/// size lies whole inside one of two neighbours. Larger faces are the downscale pass's
/// (64 px at 1080p is 21 px on the default 640-px downscale, within YuNet's reach).
pub const SWEEP_OVERLAP: u32 = 64;

/// The rotating sweep's grid over a `width`×`height` frame: large tiles at full
/// resolution, overlapping by [`SWEEP_OVERLAP`], row by row. 32 tiles for 1080p, 15 for
/// 720p; empty when the frame fits one tile (the downscale pass is full resolution then).
pub fn sweep_grid(width: u32, height: u32) -> Vec<Tile> {
    if width <= TILE && height <= TILE {
        return Vec::new();
    }
    let axis = |len: u32| -> Vec<u32> {
        if len <= TILE {
            return vec![0];
        }
        let n = (len - SWEEP_OVERLAP).div_ceil(TILE - SWEEP_OVERLAP);
        let span = len - TILE;
        (0..n).map(|k| span * k / (n - 1)).collect()
    };
    let xs = axis(width);
    axis(height)
        .into_iter()
        .flat_map(|y| {
            xs.iter().map(move |&x| Tile {
                x,
                y,
                step: 1,
                size: TILE,
            })
        })
        .collect()
}

/// Whether `tile` holds the face of `want` (a region from [`around_face`]) with half a
/// face size around it, at least as finely: the middle two thirds of the region.
pub fn holds_face(tile: &Tile, want: &Want) -> bool {
    let (rt, rw) = (tile.rect(), want.rect);
    let (mx, my) = (rw.w / 6, rw.h / 6);
    tile.step <= want.step
        && rt.x <= rw.x + mx
        && rt.y <= rw.y + my
        && rt.right() >= rw.right() - mx
        && rt.bottom() >= rw.bottom() - my
}

/// Whether tile `a` covers tile `b` at least as finely.
pub fn contains(a: &Tile, b: &Tile) -> bool {
    let (ra, rb) = (a.rect(), b.rect());
    a.step <= b.step
        && ra.x <= rb.x
        && ra.y <= rb.y
        && ra.right() >= rb.right()
        && ra.bottom() >= rb.bottom()
}

/// Union overlapping wants of the same step until none overlap; a finer want swallowed by
/// a coarser one keeps the finer step.
fn merge(wants: &[Want]) -> Vec<Want> {
    let mut out: Vec<Want> = wants.to_vec();
    loop {
        let mut merged = false;
        'outer: for i in 0..out.len() {
            for j in i + 1..out.len() {
                if out[i].rect.overlaps(&out[j].rect) {
                    let step = out[i].step.min(out[j].step);
                    out[i] = Want {
                        rect: out[i].rect.union(&out[j].rect),
                        step,
                    };
                    out.swap_remove(j);
                    merged = true;
                    break 'outer;
                }
            }
        }
        if !merged {
            return out;
        }
    }
}

/// Tiles of one want's step covering its rectangle, inside the frame where the frame is
/// large enough.
fn cover(want: &Want, width: u32, height: u32) -> Vec<Tile> {
    let size = if want.rect.w.max(want.rect.h) <= SMALL_TILE * want.step {
        SMALL_TILE
    } else {
        TILE
    };
    let side = size * want.step;
    let overlap = side / 4;
    let axis = |start: u32, len: u32, frame: u32| -> Vec<u32> {
        let n = if len <= side {
            1
        } else {
            (len - overlap).div_ceil(side - overlap)
        };
        let place = |p: i64| -> u32 { p.clamp(0, i64::from(frame.saturating_sub(side))) as u32 };
        if n == 1 {
            let centre = i64::from(start) + i64::from(len) / 2;
            return vec![place(centre - i64::from(side) / 2)];
        }
        let span = i64::from(len) - i64::from(side);
        (0..n)
            .map(|k| place(i64::from(start) + span * i64::from(k) / i64::from(n - 1)))
            .collect()
    };
    let xs = axis(want.rect.x, want.rect.w, width);
    let ys = axis(want.rect.y, want.rect.h, height);
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &y in &ys {
        for &x in &xs {
            let tile = Tile {
                x,
                y,
                step: want.step,
                size,
            };
            if !out.contains(&tile) {
                out.push(tile);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::BBox;

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    fn covered(tiles: &[Tile], r: &Rect) -> bool {
        tiles.iter().any(|t| {
            let tr = t.rect();
            tr.x <= r.x && tr.y <= r.y && tr.right() >= r.right() && tr.bottom() >= r.bottom()
        })
    }

    #[test]
    fn a_small_region_gets_one_full_resolution_tile_centred_on_it() {
        let t = tiles(
            &[Want {
                rect: rect(900, 500, 100, 120),
                step: 1,
            }],
            1920,
            1080,
            8,
            0,
        );
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].step, t[0].size), (1, SMALL_TILE));
        assert!(covered(&t, &rect(900, 500, 100, 120)));
        assert_eq!((t[0].x, t[0].y), (950 - 80, 560 - 80));
        // a region too large for the small tile gets the large one, centred the same way
        let t = tiles(
            &[Want {
                rect: rect(900, 500, 200, 220),
                step: 1,
            }],
            1920,
            1080,
            8,
            0,
        );
        assert_eq!((t[0].size, t[0].x, t[0].y), (TILE, 1000 - 160, 610 - 160));
    }

    #[test]
    fn a_small_tracked_face_gets_a_small_tile_and_a_large_region_a_large_one() {
        let face = around_face(
            &BBox {
                x: 1000.0,
                y: 500.0,
                w: 44.0,
                h: 52.0,
            },
            1920,
            1080,
        );
        let t = tiles(&[face], 1920, 1080, 8, 0);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].size, t[0].step), (SMALL_TILE, 1));
        assert!(covered(&t, &rect(1000, 500, 44, 52)), "{t:?}");
        let body = tiles(
            &[Want {
                rect: rect(900, 500, 100, 200),
                step: 1,
            }],
            1920,
            1080,
            8,
            0,
        );
        assert!(body.iter().all(|t| t.size == TILE), "{body:?}");
        // the budget counts four small tiles as one large
        let faces: Vec<Want> = (0..8)
            .map(|k| {
                around_face(
                    &BBox {
                        x: 100.0 + 200.0 * k as f32,
                        y: 300.0,
                        w: 40.0,
                        h: 40.0,
                    },
                    1920,
                    1080,
                )
            })
            .collect();
        assert_eq!(tiles(&faces, 1920, 1080, 2, 0).len(), 8);
        assert_eq!(tiles(&faces, 1920, 1080, 1, 0).len(), 4);
    }

    #[test]
    fn tiles_stay_inside_the_frame() {
        let t = tiles(
            &[Want {
                rect: rect(1900, 1060, 20, 20),
                step: 1,
            }],
            1920,
            1080,
            8,
            0,
        );
        assert_eq!((t[0].x, t[0].y), (1920 - 160, 1080 - 160));
    }

    #[test]
    fn a_tall_region_is_covered_by_overlapping_tiles_and_every_face_lies_whole_in_one() {
        let body = rect(600, 100, 200, 800);
        let t = tiles(
            &[Want {
                rect: body,
                step: 1,
            }],
            1920,
            1080,
            8,
            0,
        );
        assert!(t.len() >= 3 && t.len() <= 4, "{t:?}");
        assert!(t.iter().all(|t| t.step == 1));
        // any 64-px face inside the body lies whole inside some tile
        for y in (100..=836).step_by(16) {
            assert!(covered(&t, &rect(650, y, 64, 64)), "face at y={y}: {t:?}");
        }
    }

    #[test]
    fn overlapping_regions_merge_and_the_budget_coarsens_the_largest() {
        let wants = [
            Want {
                rect: rect(100, 100, 300, 300),
                step: 1,
            },
            Want {
                rect: rect(350, 350, 300, 300),
                step: 1,
            },
        ];
        let merged = merge(&wants);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].rect, rect(100, 100, 550, 550));
        let fine = tiles(&wants, 1920, 1080, 64, 0);
        assert!(
            fine.iter().all(|t| t.step == 1) && fine.len() == 4,
            "{fine:?}"
        );
        let coarse = tiles(&wants, 1920, 1080, 2, 0);
        assert!(coarse.len() <= 2, "{coarse:?}");
        assert!(coarse.iter().all(|t| t.step == 2));
        assert!(covered(&coarse, &rect(100, 100, 550, 550)), "{coarse:?}");
    }

    #[test]
    fn a_tracked_face_gets_a_region_at_a_step_that_fits_it() {
        let small = around_face(
            &BBox {
                x: 1000.0,
                y: 500.0,
                w: 50.0,
                h: 60.0,
            },
            1920,
            1080,
        );
        assert_eq!(small.step, 1);
        assert!(small.rect.x <= 1000 && small.rect.right() >= 1050);
        let large = around_face(
            &BBox {
                x: 800.0,
                y: 300.0,
                w: 200.0,
                h: 240.0,
            },
            1920,
            1080,
        );
        // 720 px: a large tile at step 3
        assert_eq!(large.step, 3);
        let t = tiles(&[large], 1920, 1080, 8, 0);
        assert_eq!(t.len(), 1);
        assert!(covered(&t, &rect(800, 300, 200, 240)), "{t:?}");
    }

    #[test]
    fn a_box_on_an_inner_tile_edge_is_flagged_and_on_the_frame_edge_is_not() {
        let tile = Tile {
            x: 320,
            y: 0,
            step: 1,
            size: TILE,
        };
        let cut = BBox {
            x: 321.0,
            y: 100.0,
            w: 40.0,
            h: 40.0,
        };
        let inside = BBox {
            x: 400.0,
            y: 0.0,
            w: 40.0,
            h: 40.0,
        };
        assert!(tile.interior_edge(&cut, 1920, 1080));
        assert!(!tile.interior_edge(&inside, 1920, 1080));
    }

    #[test]
    fn the_sweep_grid_holds_every_small_face_whole_and_away_from_inner_edges() {
        for (w, h, n) in [
            (1920u32, 1080u32, 32usize),
            (1280, 720, 15),
            (2560, 1440, 60),
        ] {
            let grid = sweep_grid(w, h);
            assert_eq!(grid.len(), n, "{w}x{h}");
            assert!(grid
                .iter()
                .all(|t| t.x + t.side() <= w && t.y + t.side() <= h));
            // a 56-px face anywhere lies in some tile without touching its inner edges
            for y in (0..h - 56).step_by(13) {
                for x in (0..w - 56).step_by(13) {
                    let face = BBox {
                        x: x as f32,
                        y: y as f32,
                        w: 56.0,
                        h: 56.0,
                    };
                    assert!(
                        grid.iter().any(|t| covered(&[*t], &rect(x, y, 56, 56))
                            && !t.interior_edge(&face, w, h)),
                        "{w}x{h}: face at ({x}, {y})"
                    );
                }
            }
        }
        assert!(sweep_grid(320, 240).is_empty());
    }

    #[test]
    fn separate_regions_over_the_budget_take_turns_the_smallest_included() {
        // one large region and six small ones, far apart; the budget holds two large tiles
        let mut wants = vec![Want {
            rect: rect(100, 100, 300, 300),
            step: 1,
        }];
        wants.extend((0..6).map(|k| Want {
            rect: rect(700 + 200 * k, 800, 60, 60),
            step: 1,
        }));
        let mut searched = vec![0; wants.len()];
        for turn in 0..7 {
            let t = tiles(&wants, 1920, 1080, 2, turn);
            assert!(t.iter().map(Tile::cost).sum::<f32>() <= 2.0 + 1e-3, "{t:?}");
            for (i, w) in wants.iter().enumerate() {
                searched[i] += usize::from(covered(&t, &w.rect));
            }
        }
        assert!(
            searched.iter().all(|&n| n >= 2),
            "every region searched in at least 2 of 7 frames: {searched:?}"
        );
    }

    #[test]
    fn motion_regions_are_padded_and_clamped() {
        let w = around_motion(&rect(10, 10, 100, 40), 0.25, 640, 360);
        assert_eq!(w.rect, rect(0, 0, 120, 60));
        assert_eq!(w.step, 1);
    }
}
