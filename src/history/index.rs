//! The appearances in memory, for search: one int8 row per appearance
//! (`round(127·v)`, 128 bytes for a 128-d template) with what the filters need (time,
//! camera, decision), kept in order of `first_seen` so a time window is a slice found by
//! binary search, not a scan of everything.
//!
//! A removal leaves a **tombstone** (the row is marked dead, found by binary search on its
//! time): nothing moves, so erasing a person from a million-appearance index costs a few
//! lookups, not a move of the whole index (`Vec::remove` moved ~160 MB at 1M). Searches
//! skip dead rows; once a quarter of the rows are dead the index is compacted in one pass,
//! so removal is amortised O(log N) and dead rows never hold more than a third of the
//! memory again.
//!
//! A search scans the window's int8 rows with the SIMD kernel of the gallery index and
//! returns every row whose approximate cosine is within [`SLACK`] of the bar; the caller
//! re-ranks those exactly in f32 from the store ([`super::History::search`]). The int8
//! score differs from the exact cosine by the rounding of both vectors: for unit vectors of
//! 128 dimensions its standard deviation is about 0.003, so [`SLACK`] (0.03) is some ten of
//! them — an appearance at or above the bar is not lost to rounding.

use crate::vectors::{kernels, quantize};

/// How far under the bar an int8 score may lie and still be re-ranked exactly.
pub const SLACK: f32 = 0.03;

/// What a filter needs of one appearance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// The store's row number.
    pub seq: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Index into [`AppearanceIndex`]'s camera names.
    pub camera: u32,
    /// Decided `identity.unknown` (no identity).
    pub unknown: bool,
    /// Removed, not yet compacted away (a tombstone; searches skip it).
    dead: bool,
}

/// Which rows a search looks at.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub camera: Option<&'a str>,
    /// Appearances overlapping [from, to] (epoch ms).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub only_unknown: bool,
}

/// A row whose int8 score reached the bar less [`SLACK`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub row: Row,
    pub approx: f32,
}

/// The int8 rows of one model's appearances, in order of `first_seen`.
pub struct AppearanceIndex {
    dim: usize,
    rows: Vec<Row>,
    codes: Vec<i8>,
    cameras: Vec<String>,
    /// The longest appearance so far: a window's slice starts this much before `from`.
    /// Recomputed at each compaction, so it also shrinks when the longest ones go.
    max_span_ms: i64,
    /// Rows marked dead and not yet compacted away.
    dead: usize,
}

impl AppearanceIndex {
    pub fn new(dim: usize) -> AppearanceIndex {
        AppearanceIndex {
            dim,
            rows: Vec::new(),
            codes: Vec::new(),
            cameras: Vec::new(),
            max_span_ms: 0,
            dead: 0,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Live rows (tombstones not counted).
    pub fn len(&self) -> usize {
        self.rows.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removed rows still held (until the next compaction).
    pub fn tombstones(&self) -> usize {
        self.dead
    }

    /// Bytes held (rows and codes).
    pub fn memory_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>() + self.codes.capacity()
    }

    pub fn reserve(&mut self, n: usize) {
        self.rows.reserve(n);
        self.codes.reserve(n * self.dim);
    }

    fn camera_index(&mut self, camera: &str) -> u32 {
        match self.cameras.iter().position(|c| c == camera) {
            Some(i) => i as u32,
            None => {
                self.cameras.push(camera.to_string());
                (self.cameras.len() - 1) as u32
            }
        }
    }

    /// Where the row (`first_ms`, `seq`) is or would go: rows are in that order.
    fn slot(&self, first_ms: i64, seq: i64) -> usize {
        self.rows
            .partition_point(|r| (r.first_ms, r.seq) < (first_ms, seq))
    }

    /// Add an appearance; `false` (nothing added) for a template of another length or a
    /// row already here (a shared store's feed repeats what the index was built with).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        seq: i64,
        first_ms: i64,
        last_ms: i64,
        camera: &str,
        unknown: bool,
        template: &[f32],
    ) -> bool {
        if template.len() != self.dim {
            return false;
        }
        let at = self.slot(first_ms, seq);
        let here = self.rows.get(at).filter(|r| r.seq == seq).map(|r| r.dead);
        if here == Some(false) {
            return false;
        }
        let row = Row {
            seq,
            first_ms,
            last_ms,
            camera: self.camera_index(camera),
            unknown,
            dead: false,
        };
        self.max_span_ms = self.max_span_ms.max(last_ms - first_ms);
        let codes: Vec<i8> = quantize(template).collect();
        if here == Some(true) {
            // its tombstone, brought back
            self.rows[at] = row;
            self.codes[at * self.dim..(at + 1) * self.dim].copy_from_slice(&codes);
            self.dead -= 1;
            return true;
        }
        // appearances mostly arrive in time order: at the end, nothing moves
        self.rows.insert(at, row);
        self.codes
            .splice(at * self.dim..at * self.dim, codes)
            .for_each(drop);
        true
    }

    /// The position of live row `seq`, first seen at `first_ms`.
    fn find(&self, seq: i64, first_ms: i64) -> Option<usize> {
        let at = self.slot(first_ms, seq);
        self.rows
            .get(at)
            .is_some_and(|r| r.seq == seq && !r.dead)
            .then_some(at)
    }

    /// Mark row `at` dead.
    fn kill(&mut self, at: usize) {
        self.rows[at].dead = true;
        self.dead += 1;
    }

    /// Drop one row (found by binary search, left as a tombstone); whether it was here.
    pub fn remove_one(&mut self, seq: i64, first_ms: i64) -> bool {
        let Some(at) = self.find(seq, first_ms) else {
            return false;
        };
        self.kill(at);
        self.compact_if_due();
        true
    }

    /// Drop row `seq` whose time is not known: a scan of the rows (no move), for the rare
    /// replacement of an appearance by a newer one of the same track.
    pub fn remove_seq(&mut self, seq: i64) -> bool {
        let Some(at) = self.rows.iter().position(|r| r.seq == seq && !r.dead) else {
            return false;
        };
        self.kill(at);
        self.compact_if_due();
        true
    }

    /// Compact once a quarter of the rows are tombstones (amortised: each compaction is
    /// paid for by the N/4 removals before it).
    fn compact_if_due(&mut self) {
        if self.dead > 0 && self.dead * 4 >= self.rows.len() {
            self.compact();
        }
    }

    /// Drop the tombstones in one pass, keeping the order; the longest span is measured
    /// again over the rows left.
    pub fn compact(&mut self) {
        let dim = self.dim;
        let mut kept = 0;
        let mut span = 0;
        for i in 0..self.rows.len() {
            if self.rows[i].dead {
                continue;
            }
            span = span.max(self.rows[i].last_ms - self.rows[i].first_ms);
            if kept != i {
                self.rows[kept] = self.rows[i];
                self.codes.copy_within(i * dim..(i + 1) * dim, kept * dim);
            }
            kept += 1;
        }
        self.rows.truncate(kept);
        self.codes.truncate(kept * dim);
        self.dead = 0;
        self.max_span_ms = span;
    }

    /// Mark one row as no longer recognised (its identity was erased).
    pub fn set_unknown_one(&mut self, seq: i64, first_ms: i64) {
        if let Some(at) = self.find(seq, first_ms) {
            self.rows[at].unknown = true;
        }
    }

    /// Drop the rows `remove` picks (a scan: for retention's batches); how many went.
    pub fn remove(&mut self, mut remove: impl FnMut(&Row) -> bool) -> usize {
        let mut removed = 0;
        for at in 0..self.rows.len() {
            if !self.rows[at].dead && remove(&self.rows[at]) {
                self.kill(at);
                removed += 1;
            }
        }
        self.compact_if_due();
        removed
    }

    /// Mark a row as no longer recognised (its identity was erased).
    pub fn set_unknown(&mut self, seqs: &std::collections::HashSet<i64>) {
        for r in self
            .rows
            .iter_mut()
            .filter(|r| !r.dead && seqs.contains(&r.seq))
        {
            r.unknown = true;
        }
    }

    /// The slice of rows that can overlap the filter's window.
    fn window(&self, filter: &Filter) -> std::ops::Range<usize> {
        let start = filter.from_ms.map_or(0, |from| {
            let earliest = from.saturating_sub(self.max_span_ms);
            self.rows.partition_point(|r| r.first_ms < earliest)
        });
        let end = filter.to_ms.map_or(self.rows.len(), |to| {
            self.rows.partition_point(|r| r.first_ms <= to)
        });
        start..end.max(start)
    }

    /// How many rows a search with `filter` scans.
    pub fn scanned(&self, filter: &Filter) -> usize {
        self.window(filter).len()
    }

    /// Every row passing `filter` whose int8 cosine to `probe` is at least
    /// `min_similarity - SLACK`.
    pub fn candidates(
        &self,
        probe: &[f32],
        filter: &Filter,
        min_similarity: f32,
    ) -> Vec<Candidate> {
        if probe.len() != self.dim {
            return Vec::new();
        }
        let camera = match filter.camera {
            Some(name) => match self.cameras.iter().position(|c| c == name) {
                Some(i) => Some(i as u32),
                None => return Vec::new(),
            },
            None => None,
        };
        let q: Vec<i8> = quantize(probe).collect();
        let dot = kernels::dot_i8_fn();
        let bar = ((min_similarity - SLACK) * 127.0 * 127.0).floor() as i32;
        let (from, to) = (
            filter.from_ms.unwrap_or(i64::MIN),
            filter.to_ms.unwrap_or(i64::MAX),
        );
        let dim = self.dim;
        let mut out = Vec::new();
        for i in self.window(filter) {
            let r = &self.rows[i];
            if r.dead
                || camera.is_some_and(|c| c != r.camera)
                || (filter.only_unknown && !r.unknown)
                || r.last_ms < from
                || r.first_ms > to
            {
                continue;
            }
            let s = dot(&q, &self.codes[i * dim..(i + 1) * dim]);
            if s >= bar {
                out.push(Candidate {
                    row: *r,
                    approx: s as f32 / (127.0 * 127.0),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::random_unit;

    fn exact(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `base` moved towards `seed`'s random direction: a cosine to `base` of about `c`.
    fn near(base: &[f32], c: f32, seed: u64) -> Vec<f32> {
        let noise = random_unit(seed, base.len());
        let k = (1.0 - c * c).sqrt();
        let v: Vec<f32> = base
            .iter()
            .zip(&noise)
            .map(|(b, n)| c * b + k * n)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn every_row_at_or_above_the_bar_is_a_candidate() {
        let probe = random_unit(1, 128);
        let mut index = AppearanceIndex::new(128);
        let mut templates = Vec::new();
        for i in 0..3000u64 {
            // cosines spread around the bar of 0.5
            let t = near(&probe, 0.3 + 0.4 * (i % 100) as f32 / 100.0, 1000 + i);
            index.insert(
                i as i64,
                i as i64 * 1000,
                i as i64 * 1000 + 500,
                "cam",
                true,
                &t,
            );
            templates.push(t);
        }
        let found: std::collections::HashSet<i64> = index
            .candidates(&probe, &Filter::default(), 0.5)
            .iter()
            .map(|c| c.row.seq)
            .collect();
        let above = templates
            .iter()
            .enumerate()
            .filter(|(_, t)| exact(&probe, t) >= 0.5)
            .count();
        assert!(above > 1000);
        for (i, t) in templates.iter().enumerate() {
            if exact(&probe, t) >= 0.5 {
                assert!(
                    found.contains(&(i as i64)),
                    "row {i} at {}",
                    exact(&probe, t)
                );
            }
        }
        // and the candidates are not everything: most rows well under the bar are not
        assert!(found.len() < above + 400, "{} of {above}", found.len());
    }

    #[test]
    fn filters_and_windows_pick_rows_and_removal_keeps_the_rest_intact() {
        let probe = random_unit(2, 128);
        let mut index = AppearanceIndex::new(128);
        // out of order on purpose; appearance k spans [k s, k s + 2 s]
        for k in [5i64, 1, 3, 2, 4, 0, 6, 8, 7, 9] {
            let camera = if k % 2 == 0 { "even" } else { "odd" };
            index.insert(k, k * 1000, k * 1000 + 2000, camera, k >= 5, &probe);
        }
        assert!(!index.insert(99, 0, 0, "x", true, &[0.0; 64]));
        let seqs_of = |index: &AppearanceIndex, f: &Filter| -> Vec<i64> {
            let mut s: Vec<i64> = index
                .candidates(&probe, f, 0.9)
                .iter()
                .map(|c| c.row.seq)
                .collect();
            s.sort();
            s
        };
        let seqs = |f: &Filter| seqs_of(&index, f);
        assert_eq!(seqs(&Filter::default()), (0..10).collect::<Vec<_>>());
        let window = Filter {
            from_ms: Some(4500),
            to_ms: Some(6500),
            ..Filter::default()
        };
        // overlapping [4.5 s, 6.5 s]: 3 (3-5 s), 4, 5, 6
        assert_eq!(seqs(&window), vec![3, 4, 5, 6]);
        assert!(index.scanned(&window) <= 5, "a slice, not the whole index");
        let odd = Filter {
            camera: Some("odd"),
            only_unknown: true,
            ..Filter::default()
        };
        assert_eq!(seqs(&odd), vec![5, 7, 9]);
        assert!(seqs(&Filter {
            camera: Some("nowhere"),
            ..Filter::default()
        })
        .is_empty());
        // the same row again (a feed repeating what the index was built with) is not added
        assert!(!index.insert(5, 5000, 7000, "odd", true, &probe));
        assert_eq!(index.len(), 10);
        assert!(index.remove_one(8, 8000) && !index.remove_one(8, 8000));
        assert!(
            !index.remove_one(7, 1234),
            "the row is found by its time too"
        );
        index.insert(8, 8000, 10_000, "even", false, &probe);
        assert_eq!(index.remove(|r| r.seq % 3 == 0), 4);
        assert_eq!(seqs_of(&index, &Filter::default()), vec![1, 2, 4, 5, 7, 8]);
        let all = index.candidates(&probe, &Filter::default(), 0.9);
        assert!(
            all.iter().all(|c| c.approx > 0.99),
            "codes moved with their rows"
        );
    }

    #[test]
    fn removals_leave_tombstones_that_searches_skip_until_a_compaction() {
        let probe = random_unit(3, 128);
        let mut index = AppearanceIndex::new(128);
        // appearance k spans [k s, k s + 1 s]; the longest (seq 7) spans 100 s
        for k in 0..40i64 {
            let last = if k == 7 {
                k * 1000 + 100_000
            } else {
                k * 1000 + 1000
            };
            index.insert(k, k * 1000, last, "cam", true, &probe);
        }
        let seqs = |index: &AppearanceIndex| -> Vec<i64> {
            let mut s: Vec<i64> = index
                .candidates(&probe, &Filter::default(), 0.9)
                .iter()
                .map(|c| c.row.seq)
                .collect();
            s.sort();
            s
        };
        // under a quarter removed: tombstones, nothing moved
        for k in [3, 7, 11] {
            assert!(index.remove_one(k, k * 1000));
        }
        assert!(index.remove_seq(20) && !index.remove_seq(20));
        assert_eq!((index.len(), index.tombstones()), (36, 4));
        let left = seqs(&index);
        assert!(![3, 7, 11, 20].iter().any(|k| left.contains(k)), "{left:?}");
        assert_eq!(left.len(), 36);
        // a removed row's seq brought back by the feed is live again
        assert!(index.insert(11, 11_000, 12_000, "cam", true, &probe));
        assert_eq!((index.len(), index.tombstones()), (37, 3));
        // a quarter of the rows dead: compacted, the longest span measured again
        for k in 21..28 {
            index.remove_one(k, k * 1000);
        }
        assert_eq!(index.tombstones(), 0, "compacted at a quarter dead");
        assert_eq!(index.len(), 30);
        assert_eq!(index.max_span_ms, 1000, "the 100 s appearance went");
        assert_eq!(seqs(&index).len(), 30);
        assert!(index
            .candidates(&probe, &Filter::default(), 0.9)
            .iter()
            .all(|c| c.approx > 0.99));
        // a window starts at most one (current) longest span before `from`
        let window = Filter {
            from_ms: Some(30_500),
            to_ms: Some(31_500),
            ..Filter::default()
        };
        assert!(index.scanned(&window) <= 3, "{}", index.scanned(&window));
    }
}
