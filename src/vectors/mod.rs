//! Vectors shared by every part that stores or searches embeddings: the gallery, the
//! appearance history and the review queue.
//!
//! The SIMD dot-product [`kernels`], int8 [`quantize`]-ation for the compact search form,
//! the quality-weighted [`pooled_template`] of several faces, the byte [`embedding_bytes`]
//! codec of the stores, and [`random_unit`] vectors for tests and benchmarks. It imports
//! nothing of the crate, so the gallery and the history use it without reaching into each
//! other.

pub mod kernels;

/// `round(127·v)`, clamped; embeddings are unit vectors so |v| ≤ 1.
pub fn quantize(v: &[f32]) -> impl Iterator<Item = i8> + '_ {
    v.iter()
        .map(|x| (x * 127.0).round().clamp(-127.0, 127.0) as i8)
}

/// The weight of a template of quality `q` in the pooled mean: its quality, with a floor so
/// that an identity enrolled from poor photos only still has a direction.
pub fn pooling_weight(q: f32) -> f32 {
    if q.is_nan() {
        MIN_POOLING_WEIGHT
    } else {
        q.clamp(MIN_POOLING_WEIGHT, 1.0)
    }
}

/// An identity's pooled template: the mean of its `dim`-long templates weighted by
/// [`pooling_weight`] of their qualities, renormalised; `None` when there are none or they
/// cancel out. Shared by the index, the appearance history and the review queue's pooling
/// of enrolled shots.
pub fn pooled_template<'a>(
    templates: impl IntoIterator<Item = (&'a [f32], f32)>,
    dim: usize,
) -> Option<Vec<f32>> {
    let mut mean = vec![0.0f32; dim];
    for (t, q) in templates.into_iter().filter(|(t, _)| t.len() == dim) {
        let w = pooling_weight(q);
        for (m, x) in mean.iter_mut().zip(t) {
            *m += w * x;
        }
    }
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm > 0.0).then(|| mean.into_iter().map(|x| x / norm).collect())
}

/// Floor of [`pooling_weight`].
pub const MIN_POOLING_WEIGHT: f32 = 0.05;

/// A vector as stored: little-endian f32s.
pub fn embedding_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector read back (the inverse of [`embedding_bytes`]).
pub fn embedding_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A unit vector of `dim` pseudo-random components, the same for the same `seed`
/// (xorshift): synthetic embeddings for tests and benchmarks.
pub fn random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}
