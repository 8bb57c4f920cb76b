//! In-memory exact 1:N search over one model's templates.
//!
//! Two forms of the same vectors: f32 (exact) and int8 (`round(127·v)`, a quarter of the
//! memory and bandwidth). [`SearchIndex::search`] either scans the f32 form, or scans the
//! int8 form, keeps the best `candidates` rows and re-ranks them exactly in f32, so the
//! scores it returns are always exact cosines.
//!
//! How an identity's templates make its score ([`Pooling`], `gallery.pooling`):
//! - `quality_mean` (default): the cosine to the mean of its templates weighted by their
//!   quality scores, renormalised; one row per identity, recomputed when a template of
//!   that identity is added or removed;
//! - `max`: the cosine to its closest template.
//!
//! With three enrolment photos per person on LFW the pooled row misses fewer people at the
//! same false-positive rate than the closest template, whether the photos are all good or
//! partly poor (BENCHMARKS.md section 3.4). `max` stays for galleries whose photos show a
//! person in deliberately different looks (day and infrared, with and without a mask),
//! which a mean would blur. A hit always names the identity's closest template.
//!
//! Kernels: AVX2+FMA (f32) and AVX2 `madd` (int8) chosen at run time on x86-64, portable
//! code elsewhere; both are tested against the scalar definition.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{GalleryError, Template};
use crate::vectors::{kernels, pooled_template, quantize};

pub use crate::stages::matching::IdentityHit;

/// How to scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// f32 over every row.
    Exact,
    /// int8 over every row, then exact f32 re-ranking of the best `candidates`.
    Compact { candidates: usize },
}

/// How an identity's templates are pooled into its score (`gallery.pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Cosine to the quality-weighted mean of the identity's templates.
    #[default]
    QualityMean,
    /// Cosine to the identity's closest template.
    Max,
}

/// Vectors in both forms, one row each, with the identity slot that owns each row.
struct Rows {
    dim: usize,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    /// Template ids (template rows) or identity ids (pooled rows).
    ids: Vec<Uuid>,
    owner: Vec<u32>,
}

impl Rows {
    fn new(dim: usize) -> Rows {
        Rows {
            dim,
            vectors: Vec::new(),
            codes: Vec::new(),
            ids: Vec::new(),
            owner: Vec::new(),
        }
    }

    fn reserve(&mut self, rows: usize) {
        self.vectors.reserve(rows * self.dim);
        self.codes.reserve(rows * self.dim);
        self.ids.reserve(rows);
        self.owner.reserve(rows);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    fn push(&mut self, id: Uuid, owner: u32, v: &[f32]) {
        self.vectors.extend_from_slice(v);
        self.codes.extend(quantize(v));
        self.ids.push(id);
        self.owner.push(owner);
    }

    fn set(&mut self, i: usize, v: &[f32]) {
        let range = i * self.dim..(i + 1) * self.dim;
        self.vectors[range.clone()].copy_from_slice(v);
        for (c, q) in self.codes[range].iter_mut().zip(quantize(v)) {
            *c = q;
        }
    }

    /// Remove row `i`, moving the last row into its place (the arrays stay dense).
    fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        self.ids.swap_remove(i);
        self.owner.swap_remove(i);
        if i != last {
            let (head, tail) = self.vectors.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(tail);
            let (head, tail) = self.codes.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(tail);
        }
        self.vectors.truncate(last * self.dim);
        self.codes.truncate(last * self.dim);
    }

    fn memory_bytes(&self) -> usize {
        self.vectors.capacity() * 4
            + self.codes.capacity()
            + self.ids.capacity() * 16
            + self.owner.capacity() * 4
    }

    /// The best row of each of the `k` best owners for `probe`, with its exact cosine,
    /// best first. `max_per_owner` bounds the rows any one owner has.
    fn best_per_owner(
        &self,
        probe: &[f32],
        k: usize,
        scan: Scan,
        max_per_owner: usize,
    ) -> Vec<(usize, f32)> {
        let n = self.len();
        let dim = self.dim;
        let dot = kernels::dot_f32_fn();
        let exact = |i: usize| dot(probe, self.row(i));
        let mut best: Vec<(usize, f32)> = match scan {
            Scan::Exact => {
                // Scores in cache-sized blocks (rows blocked inside the kernel, no per-row
                // dispatch) feeding a bounded min-heap of rows. Walking rows by descending
                // score, k distinct owners appear within the first k·max_per_owner rows,
                // so that heap size is exact.
                const BLOCK: usize = 1024;
                let cap = k.saturating_mul(max_per_owner.max(1)).min(n);
                let mut scores = [0.0f32; BLOCK];
                let mut heap = std::collections::BinaryHeap::with_capacity(cap + 1);
                for start in (0..n).step_by(BLOCK) {
                    let len = BLOCK.min(n - start);
                    let rows = &self.vectors[start * dim..(start + len) * dim];
                    kernels::scores_f32(probe, rows, dim, &mut scores[..len]);
                    // Most blocks hold nothing better than the current k-th best: one
                    // vectorised max decides that without touching the heap per score.
                    if heap.len() == cap {
                        let block_max = scores[..len]
                            .iter()
                            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        if let Some(&std::cmp::Reverse((worst, _))) = heap.peek() {
                            if order_key(block_max) <= worst {
                                continue;
                            }
                        }
                    }
                    for (j, &score) in scores[..len].iter().enumerate() {
                        let key = order_key(score);
                        if heap.len() == cap {
                            match heap.peek() {
                                Some(&std::cmp::Reverse((worst, _))) if key <= worst => continue,
                                _ => {
                                    heap.pop();
                                }
                            }
                        }
                        heap.push(std::cmp::Reverse((key, start + j)));
                    }
                }
                let mut ranked: Vec<(i32, usize)> =
                    heap.into_iter().map(|std::cmp::Reverse(e)| e).collect();
                ranked.sort_by_key(|&(key, _)| std::cmp::Reverse(key));
                let mut seen = std::collections::HashSet::with_capacity(k);
                ranked
                    .into_iter()
                    .filter(|&(_, i)| seen.insert(self.owner[i]))
                    .take(k)
                    .map(|(_, i)| (i, exact(i)))
                    .collect()
            }
            Scan::Compact { candidates } => {
                let q: Vec<i8> = quantize(probe).collect();
                let dot8 = kernels::dot_i8_fn();
                let keep = candidates.max(k).min(n);
                // Min-heap of the best `keep` int8 scores.
                let mut heap = std::collections::BinaryHeap::with_capacity(keep + 1);
                for i in 0..n {
                    let s = dot8(&q, &self.codes[i * dim..(i + 1) * dim]);
                    if heap.len() < keep {
                        heap.push(std::cmp::Reverse((s, i)));
                    } else if let Some(std::cmp::Reverse((worst, _))) = heap.peek() {
                        if s > *worst {
                            heap.pop();
                            heap.push(std::cmp::Reverse((s, i)));
                        }
                    }
                }
                // Exact re-ranking, then the best row per owner.
                let mut best: HashMap<u32, (f32, usize)> = HashMap::with_capacity(keep);
                for std::cmp::Reverse((_, i)) in heap {
                    let score = exact(i);
                    let e = best.entry(self.owner[i]).or_insert((f32::NEG_INFINITY, i));
                    if score > e.0 {
                        *e = (score, i);
                    }
                }
                best.into_values().map(|(score, i)| (i, score)).collect()
            }
        };
        best.sort_by(|a, b| b.1.total_cmp(&a.1));
        best.truncate(k);
        best
    }
}

/// The search index of one model.
pub struct SearchIndex {
    model: String,
    dim: usize,
    pooling: Pooling,
    templates: Rows,
    /// Quality score of each template row.
    qualities: Vec<f32>,
    identities: Vec<Uuid>,
    identity_slot: HashMap<Uuid, u32>,
    /// Template rows of each identity slot.
    members: Vec<Vec<u32>>,
    /// [`Pooling::QualityMean`]: one row per identity slot that has templates.
    pooled: Rows,
    /// The pooled row of each identity slot.
    pooled_row: Vec<Option<u32>>,
    /// Below this many rows `Scan::Compact` runs as `Scan::Exact`.
    compact_from: usize,
}

/// Below this many rows the f32 scan is cheaper than int8 + re-ranking (measured:
/// 0.07 vs 0.12 ms at 10k, 1.6 vs 0.5 ms at 100k; BENCHMARKS.md §4).
pub const COMPACT_FROM: usize = 32_768;

impl SearchIndex {
    /// An empty index that pools by quality-weighted mean ([`Pooling::QualityMean`]).
    pub fn new(model: &str, dim: usize) -> SearchIndex {
        SearchIndex::with_pooling(model, dim, Pooling::default())
    }

    pub fn with_pooling(model: &str, dim: usize, pooling: Pooling) -> SearchIndex {
        SearchIndex {
            model: model.to_string(),
            dim,
            pooling,
            templates: Rows::new(dim),
            qualities: Vec::new(),
            identities: Vec::new(),
            identity_slot: HashMap::new(),
            members: Vec::new(),
            pooled: Rows::new(dim),
            pooled_row: Vec::new(),
            compact_from: COMPACT_FROM,
        }
    }

    /// Build from templates; any template of another model is an error (never mixed).
    pub fn build(
        model: &str,
        dim: usize,
        pooling: Pooling,
        templates: &[Template],
    ) -> Result<SearchIndex, GalleryError> {
        let mut index = SearchIndex::with_pooling(model, dim, pooling);
        index.reserve(templates.len());
        for t in templates {
            index.insert(t.identity_id, t.id, &t.model, &t.embedding, t.quality)?;
        }
        Ok(index)
    }

    pub fn reserve(&mut self, templates: usize) {
        self.templates.reserve(templates);
        self.qualities.reserve(templates);
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Templates held.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Identities with at least one template.
    pub fn identities(&self) -> usize {
        self.members.iter().filter(|m| !m.is_empty()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.len() == 0
    }

    /// Bytes held by the vectors, codes, ids and pooled rows.
    pub fn memory_bytes(&self) -> usize {
        self.templates.memory_bytes() + self.pooled.memory_bytes() + self.qualities.capacity() * 4
    }

    /// Add one template (its embedding must be L2-normalised) of quality score `quality`
    /// (its weight in the identity's pooled row, which is recomputed).
    pub fn insert(
        &mut self,
        identity: Uuid,
        template: Uuid,
        model: &str,
        embedding: &[f32],
        quality: f32,
    ) -> Result<(), GalleryError> {
        if model != self.model {
            return Err(GalleryError::Invalid {
                field: "model",
                message: format!(
                    "template {template} is from model {model}, the index holds {}",
                    self.model
                ),
            });
        }
        if embedding.len() != self.dim {
            return Err(GalleryError::Dimension {
                model: self.model.clone(),
                expected: self.dim,
                got: embedding.len(),
            });
        }
        let slot = match self.identity_slot.get(&identity) {
            Some(&s) => s,
            None => {
                let s = self.identities.len() as u32;
                self.identities.push(identity);
                self.members.push(Vec::new());
                self.pooled_row.push(None);
                self.identity_slot.insert(identity, s);
                s
            }
        };
        self.members[slot as usize].push(self.templates.len() as u32);
        self.templates.push(template, slot, embedding);
        self.qualities.push(quality);
        self.repool(slot as usize);
        Ok(())
    }

    /// Recompute the pooled row of `slot` from its templates (none: the row goes).
    fn repool(&mut self, slot: usize) {
        if self.pooling != Pooling::QualityMean {
            return;
        }
        if self.members[slot].is_empty() {
            if let Some(row) = self.pooled_row[slot].take() {
                let row = row as usize;
                self.pooled.swap_remove(row);
                if row < self.pooled.len() {
                    let moved = self.pooled.owner[row] as usize;
                    self.pooled_row[moved] = Some(row as u32);
                }
            }
            return;
        }
        let members = self.members[slot].iter().map(|&row| {
            (
                self.templates.row(row as usize),
                self.qualities[row as usize],
            )
        });
        // Templates that cancel out exactly: fall back to the first one.
        let mean = pooled_template(members, self.dim)
            .unwrap_or_else(|| self.templates.row(self.members[slot][0] as usize).to_vec());
        match self.pooled_row[slot] {
            Some(row) => self.pooled.set(row as usize, &mean),
            None => {
                self.pooled_row[slot] = Some(self.pooled.len() as u32);
                self.pooled.push(self.identities[slot], slot as u32, &mean);
            }
        }
    }

    /// Remove templates matching `drop` (swap-remove keeps the arrays dense), then
    /// recompute the pooled rows of the identities that lost some.
    fn remove_where(&mut self, mut drop: impl FnMut(Uuid, Uuid) -> bool) -> usize {
        let mut removed = 0;
        let mut touched = Vec::new();
        let mut i = 0;
        while i < self.templates.len() {
            let slot = self.templates.owner[i] as usize;
            if !drop(self.identities[slot], self.templates.ids[i]) {
                i += 1;
                continue;
            }
            let members = &mut self.members[slot];
            if let Some(p) = members.iter().position(|&r| r as usize == i) {
                members.swap_remove(p);
            }
            touched.push(slot);
            let last = self.templates.len() - 1;
            self.templates.swap_remove(i);
            self.qualities.swap_remove(i);
            if i != last {
                let moved = self.templates.owner[i] as usize;
                if let Some(r) = self.members[moved]
                    .iter_mut()
                    .find(|r| **r as usize == last)
                {
                    *r = i as u32;
                }
            }
            removed += 1;
        }
        touched.sort_unstable();
        touched.dedup();
        for slot in touched {
            self.repool(slot);
        }
        removed
    }

    /// Use the compact scan from this many rows on (tests set 0 to force it).
    pub fn set_compact_from(&mut self, rows: usize) {
        self.compact_from = rows;
    }

    /// The most templates any one identity has.
    pub fn max_templates_per_identity(&self) -> usize {
        self.members.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether the template is held (a scan of the ids: for changes, not per probe).
    pub fn contains_template(&self, template: Uuid) -> bool {
        self.templates.ids.contains(&template)
    }

    pub fn remove_template(&mut self, template: Uuid) -> usize {
        self.remove_where(|_, t| t == template)
    }

    pub fn remove_identity(&mut self, identity: Uuid) -> usize {
        self.remove_where(|i, _| i == identity)
    }

    /// The best `k` identities for `probe` (L2-normalised), best first.
    pub fn search(
        &self,
        probe: &[f32],
        k: usize,
        scan: Scan,
    ) -> Result<Vec<IdentityHit>, GalleryError> {
        if probe.len() != self.dim {
            return Err(GalleryError::Dimension {
                model: self.model.clone(),
                expected: self.dim,
                got: probe.len(),
            });
        }
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let (rows, max_per_owner) = match self.pooling {
            Pooling::QualityMean => (&self.pooled, 1),
            Pooling::Max => (&self.templates, self.max_templates_per_identity()),
        };
        let scan = match scan {
            Scan::Compact { .. } if rows.len() < self.compact_from => Scan::Exact,
            other => other,
        };
        let dot = kernels::dot_f32_fn();
        let mut hits: Vec<IdentityHit> = rows
            .best_per_owner(probe, k, scan, max_per_owner)
            .into_iter()
            .map(|(row, score)| {
                let slot = rows.owner[row] as usize;
                let template = match self.pooling {
                    Pooling::Max => self.templates.ids[row],
                    Pooling::QualityMean => {
                        let closest = self.members[slot]
                            .iter()
                            .map(|&r| (dot(probe, self.templates.row(r as usize)), r))
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                            .map(|(_, r)| r as usize)
                            .unwrap_or(0);
                        self.templates.ids[closest]
                    }
                };
                IdentityHit {
                    identity: self.identities[slot],
                    template,
                    score,
                }
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.identity.cmp(&b.identity))
        });
        hits.truncate(k);
        Ok(hits)
    }
}

/// An integer with the same order as the (non-NaN) float, for heaps.
fn order_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::pooling_weight;

    /// Deterministic pseudo-random unit vectors (xorshift), no extra dependency.
    pub(crate) fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[test]
    fn simd_kernels_match_the_scalar_definition() {
        for dim in [1, 7, 16, 33, 128, 512] {
            let v = unit_vectors(2, dim, dim as u64);
            let exact: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
            assert!((kernels::dot_f32_fn()(&v[0], &v[1]) - exact).abs() < 1e-5);
            assert!((kernels::dot_f32_scalar(&v[0], &v[1]) - exact).abs() < 1e-5);
            let a: Vec<i8> = quantize(&v[0]).collect();
            let b: Vec<i8> = quantize(&v[1]).collect();
            assert_eq!(kernels::dot_i8_fn()(&a, &b), kernels::dot_i8_scalar(&a, &b));
        }
        for n in [0usize, 1, 3, 4, 5, 9] {
            let rows = unit_vectors(n, 128, 99);
            let flat: Vec<f32> = rows.concat();
            let probe = &unit_vectors(1, 128, 5)[0];
            let mut out = vec![0.0; n];
            kernels::scores_f32(probe, &flat, 128, &mut out);
            for (r, o) in rows.iter().zip(&out) {
                assert!((kernels::dot_f32_scalar(probe, r) - o).abs() < 1e-5);
            }
        }
        let extreme = vec![-127i8; 128];
        assert_eq!(kernels::dot_i8_fn()(&extreme, &extreme), 127 * 127 * 128);
    }

    fn index_with(
        n_ident: usize,
        per: usize,
        pooling: Pooling,
    ) -> (SearchIndex, Vec<Vec<f32>>, Vec<Uuid>) {
        let vecs = unit_vectors(n_ident * per, 128, 42);
        let ids: Vec<Uuid> = (0..n_ident).map(|_| Uuid::now_v7()).collect();
        let mut index = SearchIndex::with_pooling("m", 128, pooling);
        for (k, v) in vecs.iter().enumerate() {
            index
                .insert(ids[k / per], Uuid::now_v7(), "m", v, 0.8)
                .unwrap();
        }
        (index, vecs, ids)
    }

    /// The quality-weighted mean of `rows`, renormalised (the definition).
    fn weighted_mean(rows: &[(&[f32], f32)]) -> Vec<f32> {
        let mut m = vec![0.0f32; rows[0].0.len()];
        for (v, q) in rows {
            for (a, x) in m.iter_mut().zip(v.iter()) {
                *a += pooling_weight(*q) * x;
            }
        }
        let norm = m.iter().map(|x| x * x).sum::<f32>().sqrt();
        m.into_iter().map(|x| x / norm).collect()
    }

    #[test]
    fn pooled_rows_are_the_quality_weighted_mean_and_follow_removals() {
        let vecs = unit_vectors(12, 128, 7);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let qualities = [0.9f32, 0.2, 0.6];
        let mut templates = Vec::new();
        let mut index = SearchIndex::new("m", 128);
        for (k, v) in vecs.iter().enumerate() {
            let t = Uuid::now_v7();
            index
                .insert(ids[k / 3], t, "m", v, qualities[k % 3])
                .unwrap();
            templates.push(t);
        }
        assert_eq!((index.len(), index.identities()), (12, 4));
        let probe = &unit_vectors(1, 128, 99)[0];
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let expected = |index: &SearchIndex, who: usize, rows: &[usize]| {
            let mean = weighted_mean(
                &rows
                    .iter()
                    .map(|&r| (vecs[r].as_slice(), qualities[r % 3]))
                    .collect::<Vec<_>>(),
            );
            let hit = index
                .search(probe, 4, Scan::Exact)
                .unwrap()
                .into_iter()
                .find(|h| h.identity == ids[who])
                .expect("identity in the results");
            assert!((hit.score - dot(probe, &mean)).abs() < 1e-5, "{who}");
            // The hit names the identity's closest template.
            let closest = rows
                .iter()
                .max_by(|&&a, &&b| dot(probe, &vecs[a]).total_cmp(&dot(probe, &vecs[b])))
                .unwrap();
            assert_eq!(hit.template, templates[*closest]);
        };
        for who in 0..4 {
            expected(&index, who, &[3 * who, 3 * who + 1, 3 * who + 2]);
        }
        // A template of identity 1 goes; identity 0 goes entirely (its pooled row is
        // swapped out, the others' rows must still belong to them).
        assert_eq!(index.remove_template(templates[4]), 1);
        assert_eq!(index.remove_identity(ids[0]), 3);
        assert_eq!((index.len(), index.identities()), (8, 3));
        expected(&index, 1, &[3, 5]);
        expected(&index, 2, &[6, 7, 8]);
        expected(&index, 3, &[9, 10, 11]);
        let hits = index.search(probe, 10, Scan::Exact).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(hits.iter().all(|h| h.identity != ids[0]));
        // Exact and compact scans agree on pooled rows too.
        index.set_compact_from(0);
        let compact = index
            .search(probe, 3, Scan::Compact { candidates: 8 })
            .unwrap();
        for (a, b) in hits.iter().zip(&compact) {
            assert_eq!((a.identity, a.template), (b.identity, b.template));
            assert!((a.score - b.score).abs() < 1e-5);
        }
    }

    #[test]
    fn a_poor_template_moves_the_pooled_row_less_than_a_good_one() {
        let v = unit_vectors(2, 128, 3);
        let (good, other) = (&v[0], &v[1]);
        let id = Uuid::now_v7();
        let pooled_score = |q_other: f32| {
            let mut index = SearchIndex::new("m", 128);
            index.insert(id, Uuid::now_v7(), "m", good, 0.9).unwrap();
            index
                .insert(id, Uuid::now_v7(), "m", other, q_other)
                .unwrap();
            index.search(good, 1, Scan::Exact).unwrap()[0].score
        };
        assert!(pooled_score(0.1) > pooled_score(0.9) + 0.1);
        // Max pooling ignores the second template for this probe.
        let mut index = SearchIndex::with_pooling("m", 128, Pooling::Max);
        index.insert(id, Uuid::now_v7(), "m", good, 0.9).unwrap();
        index.insert(id, Uuid::now_v7(), "m", other, 0.1).unwrap();
        assert!((index.search(good, 1, Scan::Exact).unwrap()[0].score - 1.0).abs() < 1e-5);
        assert_eq!(pooling_weight(f32::NAN), crate::vectors::MIN_POOLING_WEIGHT);
        assert_eq!(pooling_weight(0.0), crate::vectors::MIN_POOLING_WEIGHT);
        assert_eq!(pooling_weight(2.0), 1.0);
    }

    #[test]
    fn exact_and_compact_agree_and_fuse_by_max() {
        let (mut index, vecs, ids) = index_with(300, 3, Pooling::Max);
        index.set_compact_from(0);
        for probe_k in [0usize, 451, 899] {
            let probe = &vecs[probe_k];
            let exact = index.search(probe, 5, Scan::Exact).unwrap();
            let compact = index
                .search(probe, 5, Scan::Compact { candidates: 64 })
                .unwrap();
            assert_eq!(exact[0].identity, ids[probe_k / 3]);
            assert!((exact[0].score - 1.0).abs() < 1e-5);
            assert_eq!(exact.len(), 5);
            assert_eq!(
                (exact[0].identity, exact[0].template),
                (compact[0].identity, compact[0].template)
            );
            // Both report exact cosines (summation order may differ in the last bit).
            assert!((exact[0].score - compact[0].score).abs() < 1e-5);
            // Scores are exact cosines in both modes, sorted, one entry per identity.
            for w in exact.windows(2) {
                assert!(w[0].score >= w[1].score && w[0].identity != w[1].identity);
            }
        }
    }

    #[test]
    fn order_key_preserves_float_order() {
        let xs = [-1.0f32, -0.5, -0.0, 0.0, 1e-9, 0.3, 0.9, 1.0];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn removal_and_model_guard() {
        let (mut index, vecs, ids) = index_with(10, 2, Pooling::QualityMean);
        assert_eq!(index.remove_identity(ids[3]), 2);
        assert_eq!(index.len(), 18);
        let hits = index.search(&vecs[6], 10, Scan::Exact).unwrap();
        assert!(hits.iter().all(|h| h.identity != ids[3]));
        assert!(index
            .insert(ids[0], Uuid::now_v7(), "other@1", &vecs[0], 0.8)
            .is_err());
        assert!(matches!(
            index.search(&[0.0; 3], 1, Scan::Exact),
            Err(GalleryError::Dimension { .. })
        ));
        let t = hits[0].template;
        assert_eq!(index.remove_template(t), 1);
        assert!(index
            .search(&vecs[0], 50, Scan::Exact)
            .unwrap()
            .iter()
            .all(|h| h.template != t));
    }
}
