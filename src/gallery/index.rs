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
}

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
                self.identity_slot.insert(identity, s);
                s
            }
        };
        self.vectors.extend_from_slice(embedding);
        self.codes.extend(quantize(embedding));
        self.template_ids.push(template);
        self.owner.push(slot);
        Ok(())
    }

    /// Remove templates matching `drop` (swap-remove keeps the arrays dense).
    fn remove_where(&mut self, mut drop: impl FnMut(Uuid, Uuid) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.template_ids.len() {
            let identity = self.identities[self.owner[i] as usize];
            if drop(identity, self.template_ids[i]) {
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
        let mut hits: Vec<IdentityHit> = match scan {
            Scan::Exact => {
                // Dense per-identity maxima: no hashing in the hot loop.
                let mut best = vec![(f32::NEG_INFINITY, 0u32); self.identities.len()];
                for i in 0..n {
                    let score = exact(i);
                    let slot = &mut best[self.owner[i] as usize];
                    if score > slot.0 {
                        *slot = (score, i as u32);
                    }
                }
                let mut top = std::collections::BinaryHeap::with_capacity(k + 1);
                for (slot, &(score, i)) in best.iter().enumerate() {
                    if score == f32::NEG_INFINITY {
                        continue;
                    }
                    top.push(std::cmp::Reverse((order_key(score), slot, i)));
                    if top.len() > k {
                        top.pop();
                    }
                }
                top.into_iter()
                    .map(|std::cmp::Reverse((_, slot, i))| IdentityHit {
                        identity: self.identities[slot],
                        template: self.template_ids[i as usize],
                        score: best[slot].0,
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
        let (index, vecs, ids) = index_with(300, 3);
        for probe_k in [0usize, 451, 899] {
            let probe = &vecs[probe_k];
            let exact = index.search(probe, 5, Scan::Exact).unwrap();
            let compact = index
                .search(probe, 5, Scan::Compact { candidates: 64 })
                .unwrap();
            assert_eq!(exact[0].identity, ids[probe_k / 3]);
            assert!((exact[0].score - 1.0).abs() < 1e-5);
            assert_eq!(exact.len(), 5);
            assert_eq!(exact[0], compact[0]);
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
