//! In-memory exact 1:N search over one model's templates.
//!
//! Two forms of the same vectors: f32 (exact) and int8 (`round(127·v)`, a quarter of the
//! memory and bandwidth). [`SearchIndex::search`] either scans the f32 form, or scans the
//! int8 form, keeps the best `candidates` templates and re-ranks them exactly in f32, so
//! the scores it returns are always exact cosines. Identities are scored by the **max**
//! over their templates (a person is as close as their closest enrolled photo).
//!
//! Kernels: AVX2+FMA (f32) and AVX2 `madd` (int8) chosen at run time on x86-64, portable
//! code elsewhere; both are tested against the scalar definition.

use std::collections::HashMap;

use uuid::Uuid;

use super::{GalleryError, Template};

/// One identity in a result, with its best template.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityHit {
    pub identity: Uuid,
    pub template: Uuid,
    /// Exact cosine similarity of the best template.
    pub score: f32,
}

/// How to scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// f32 over every template.
    Exact,
    /// int8 over every template, then exact f32 re-ranking of the best `candidates`.
    Compact { candidates: usize },
}

/// The search index of one model.
pub struct SearchIndex {
    model: String,
    dim: usize,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    template_ids: Vec<Uuid>,
    owner: Vec<u32>,
    identities: Vec<Uuid>,
    identity_slot: HashMap<Uuid, u32>,
    /// Templates per identity slot.
    counts: Vec<u32>,
    /// Below this many templates `Scan::Compact` runs as `Scan::Exact`.
    compact_from: usize,
}

/// Below this many templates the f32 scan is cheaper than int8 + re-ranking (measured:
/// 0.07 vs 0.12 ms at 10k, 1.6 vs 0.5 ms at 100k; BENCHMARKS.md §4).
pub const COMPACT_FROM: usize = 32_768;

impl SearchIndex {
    pub fn new(model: &str, dim: usize) -> SearchIndex {
        SearchIndex {
            model: model.to_string(),
            dim,
            vectors: Vec::new(),
            codes: Vec::new(),
            template_ids: Vec::new(),
            owner: Vec::new(),
            identities: Vec::new(),
            identity_slot: HashMap::new(),
            counts: Vec::new(),
            compact_from: COMPACT_FROM,
        }
    }

    /// Build from templates; any template of another model is an error (never mixed).
    pub fn build(
        model: &str,
        dim: usize,
        templates: &[Template],
    ) -> Result<SearchIndex, GalleryError> {
        let mut index = SearchIndex::new(model, dim);
        index.reserve(templates.len());
        for t in templates {
            index.insert(t.identity_id, t.id, &t.model, &t.embedding)?;
        }
        Ok(index)
    }

    pub fn reserve(&mut self, templates: usize) {
        self.vectors.reserve(templates * self.dim);
        self.codes.reserve(templates * self.dim);
        self.template_ids.reserve(templates);
        self.owner.reserve(templates);
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.template_ids.len()
    }

    /// Identities with at least one template.
    pub fn identities(&self) -> usize {
        self.counts.iter().filter(|&&c| c > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.template_ids.is_empty()
    }

    /// Bytes held by the vectors, codes and ids.
    pub fn memory_bytes(&self) -> usize {
        self.vectors.capacity() * 4
            + self.codes.capacity()
            + self.template_ids.capacity() * 16
            + self.owner.capacity() * 4
    }

    /// Add one template (its embedding must be L2-normalised).
    pub fn insert(
        &mut self,
        identity: Uuid,
        template: Uuid,
        model: &str,
        embedding: &[f32],
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
                self.counts.push(0);
                self.identity_slot.insert(identity, s);
                s
            }
        };
        self.vectors.extend_from_slice(embedding);
        self.codes.extend(quantize(embedding));
        self.template_ids.push(template);
        self.owner.push(slot);
        self.counts[slot as usize] += 1;
        Ok(())
    }

    /// Remove templates matching `drop` (swap-remove keeps the arrays dense).
    fn remove_where(&mut self, mut drop: impl FnMut(Uuid, Uuid) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.template_ids.len() {
            let identity = self.identities[self.owner[i] as usize];
            if drop(identity, self.template_ids[i]) {
                self.counts[self.owner[i] as usize] -= 1;
                let last = self.template_ids.len() - 1;
                self.template_ids.swap(i, last);
                self.owner.swap(i, last);
                for k in 0..self.dim {
                    self.vectors.swap(i * self.dim + k, last * self.dim + k);
                    self.codes.swap(i * self.dim + k, last * self.dim + k);
                }
                self.template_ids.pop();
                self.owner.pop();
                self.vectors.truncate(last * self.dim);
                self.codes.truncate(last * self.dim);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Use the compact scan from this many templates on (tests set 0 to force it).
    pub fn set_compact_from(&mut self, templates: usize) {
        self.compact_from = templates;
    }

    /// The most templates any one identity has.
    pub fn max_templates_per_identity(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(0) as usize
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
        let n = self.len();
        let dim = self.dim;
        let dot = kernels::dot_f32_fn();
        let exact = |i: usize| dot(probe, &self.vectors[i * dim..(i + 1) * dim]);
        let scan = match scan {
            Scan::Compact { .. } if n < self.compact_from => Scan::Exact,
            other => other,
        };
        let mut hits: Vec<IdentityHit> = match scan {
            Scan::Exact => {
                // Scores in cache-sized blocks (rows blocked inside the kernel, no per-row
                // dispatch) feeding a bounded min-heap of templates. Walking templates by
                // descending score, k distinct identities appear within the first
                // k·(most templates of one identity) templates, so that heap size is exact.
                const BLOCK: usize = 1024;
                let cap = k
                    .saturating_mul(self.max_templates_per_identity().max(1))
                    .min(n);
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
                    .map(|(_, i)| IdentityHit {
                        identity: self.identities[self.owner[i] as usize],
                        template: self.template_ids[i],
                        score: exact(i),
                    })
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
                // Exact re-ranking, then the best template per identity.
                let mut best: HashMap<u32, (f32, usize)> = HashMap::with_capacity(keep);
                for std::cmp::Reverse((_, i)) in heap {
                    let score = exact(i);
                    let e = best.entry(self.owner[i]).or_insert((f32::NEG_INFINITY, i));
                    if score > e.0 {
                        *e = (score, i);
                    }
                }
                best.into_iter()
                    .map(|(slot, (score, i))| IdentityHit {
                        identity: self.identities[slot as usize],
                        template: self.template_ids[i],
                        score,
                    })
                    .collect()
            }
        };
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

/// `round(127·v)`, clamped; embeddings are unit vectors so |v| ≤ 1.
fn quantize(v: &[f32]) -> impl Iterator<Item = i8> + '_ {
    v.iter()
        .map(|x| (x * 127.0).round().clamp(-127.0, 127.0) as i8)
}

/// Dot-product kernels with run-time CPU dispatch.
pub mod kernels {
    /// Scalar definition (the reference the SIMD versions are tested against).
    pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let chunks = a.len() / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += a[c * 8 + l] * b[c * 8 + l];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..a.len() {
            sum += a[i] * b[i];
        }
        sum
    }

    pub fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum()
    }

    /// The fastest f32 dot this CPU supports.
    pub fn dot_f32_fn() -> fn(&[f32], &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return |a, b| unsafe { x86::dot_f32_avx2(a, b) };
            }
        }
        dot_f32_scalar
    }

    /// `out[i] = probe · rows[i]` for every `dim`-long row, with the fastest kernel here.
    pub fn scores_f32(probe: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if dim.is_multiple_of(16) && is_x86_feature_detected!("avx512f") {
                // SAFETY: feature checked above; lengths checked inside.
                unsafe { x86::scores_f32_avx512(probe, rows, dim, out) };
                return;
            }
            if dim.is_multiple_of(8)
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                // SAFETY: features checked above; lengths checked inside.
                unsafe { x86::scores_f32_avx2(probe, rows, dim, out) };
                return;
            }
        }
        let dot = dot_f32_fn();
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot(probe, &rows[i * dim..(i + 1) * dim]);
        }
    }

    /// The fastest int8 dot this CPU supports.
    pub fn dot_i8_fn() -> fn(&[i8], &[i8]) -> i32 {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                return |a, b| unsafe { x86::dot_i8_avx2(a, b) };
            }
        }
        dot_i8_scalar
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// # Safety
        /// The CPU must support AVX2 and FMA; `a` and `b` have the same length.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let hi = _mm256_extractf128_ps(acc, 1);
            let lo = _mm256_castps256_ps128(acc);
            let s = _mm_add_ps(hi, lo);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            let mut sum = _mm_cvtss_f32(s);
            while i < n {
                sum += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            sum
        }

        /// Four rows per step: the probe chunk is loaded once for four FMAs, and the four
        /// horizontal sums share one `hadd` tree.
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA; `dim.is_multiple_of(8)`, `probe.len() >= dim`,
        /// `rows.len() >= out.len() * dim`.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn scores_f32_avx2(probe: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
            assert!(dim.is_multiple_of(8) && probe.len() >= dim && rows.len() >= out.len() * dim);
            let n = out.len();
            let (pp, pr) = (probe.as_ptr(), rows.as_ptr());
            let mut r = 0;
            while r + 4 <= n {
                let base = pr.add(r * dim);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut j = 0;
                while j < dim {
                    let p = _mm256_loadu_ps(pp.add(j));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(base.add(j)), p, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(base.add(dim + j)), p, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(base.add(2 * dim + j)), p, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(base.add(3 * dim + j)), p, a3);
                    j += 8;
                }
                let s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
                let sum = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
                _mm_storeu_ps(out.as_mut_ptr().add(r), sum);
                r += 4;
            }
            while r < n {
                out[r] = dot_f32_avx2(probe, &rows[r * dim..(r + 1) * dim]);
                r += 1;
            }
        }

        /// AVX-512 version of [`scores_f32_avx2`]: 16 lanes, eight rows per step, rows
        /// prefetched two steps ahead.
        ///
        /// # Safety
        /// The CPU must support AVX-512F; `dim.is_multiple_of(16)`, `probe.len() >= dim`,
        /// `rows.len() >= out.len() * dim`.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn scores_f32_avx512(probe: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
            assert!(dim.is_multiple_of(16) && probe.len() >= dim && rows.len() >= out.len() * dim);
            let n = out.len();
            let (pp, pr) = (probe.as_ptr(), rows.as_ptr());
            let mut r = 0;
            while r + 8 <= n {
                let base = pr.add(r * dim);
                // Ask for the rows two blocks ahead now: the scan is memory-bound and the
                // hardware prefetcher alone leaves bandwidth unused.
                if r + 24 <= n {
                    let ahead = base.add(16 * dim) as *const i8;
                    let mut line = 0;
                    while line < 8 * dim * 4 {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(line));
                        line += 64;
                    }
                }
                let mut acc = [_mm512_setzero_ps(); 8];
                let mut j = 0;
                while j < dim {
                    let p = _mm512_loadu_ps(pp.add(j));
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(base.add(k * dim + j)), p, *a);
                    }
                    j += 16;
                }
                for (k, a) in acc.iter().enumerate() {
                    out[r + k] = _mm512_reduce_add_ps(*a);
                }
                r += 8;
            }
            while r < n {
                let base = pr.add(r * dim);
                let mut a = _mm512_setzero_ps();
                let mut j = 0;
                while j < dim {
                    a = _mm512_fmadd_ps(
                        _mm512_loadu_ps(base.add(j)),
                        _mm512_loadu_ps(pp.add(j)),
                        a,
                    );
                    j += 16;
                }
                out[r] = _mm512_reduce_add_ps(a);
                r += 1;
            }
        }

        /// # Safety
        /// The CPU must support AVX2; `a` and `b` have the same length.
        #[target_feature(enable = "avx2")]
        pub unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = _mm256_setzero_si256();
            let mut i = 0;
            while i + 16 <= n {
                let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
                let y = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
                i += 16;
            }
            let hi = _mm256_extracti128_si256(acc, 1);
            let lo = _mm256_castsi256_si128(acc);
            let s = _mm_add_epi32(hi, lo);
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            let mut sum = _mm_cvtsi128_si32(s);
            while i < n {
                sum += i32::from(*pa.add(i)) * i32::from(*pb.add(i));
                i += 1;
            }
            sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn index_with(n_ident: usize, per: usize) -> (SearchIndex, Vec<Vec<f32>>, Vec<Uuid>) {
        let vecs = unit_vectors(n_ident * per, 128, 42);
        let ids: Vec<Uuid> = (0..n_ident).map(|_| Uuid::now_v7()).collect();
        let mut index = SearchIndex::new("m", 128);
        for (k, v) in vecs.iter().enumerate() {
            index.insert(ids[k / per], Uuid::now_v7(), "m", v).unwrap();
        }
        (index, vecs, ids)
    }

    #[test]
    fn exact_and_compact_agree_and_fuse_by_max() {
        let (mut index, vecs, ids) = index_with(300, 3);
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
        let (mut index, vecs, ids) = index_with(10, 2);
        assert_eq!(index.remove_identity(ids[3]), 2);
        assert_eq!(index.len(), 18);
        let hits = index.search(&vecs[6], 10, Scan::Exact).unwrap();
        assert!(hits.iter().all(|h| h.identity != ids[3]));
        assert!(index
            .insert(ids[0], Uuid::now_v7(), "other@1", &vecs[0])
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
