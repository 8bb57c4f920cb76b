//! Dot-product kernels with run-time CPU dispatch (AVX-512, AVX2+FMA, scalar), for the
//! gallery's and the history's searches.

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
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
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
                a = _mm512_fmadd_ps(_mm512_loadu_ps(base.add(j)), _mm512_loadu_ps(pp.add(j)), a);
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
