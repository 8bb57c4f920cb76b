//! The calibration a model's manifest carries: how its scores between different people
//! are distributed, from which the open-set decision calibrates its threshold for the
//! gallery's size (`match.cohort`).

use serde::{Deserialize, Serialize};

/// Cosine similarity between faces of different people, for good faces of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImpostorModel {
    pub mean: f32,
    pub std: f32,
}

impl Default for ImpostorModel {
    /// SFace 2021dec on LFW (BENCHMARKS.md §3), for a manifest without calibration.
    fn default() -> Self {
        ImpostorModel {
            mean: 0.079,
            std: 0.090,
        }
    }
}

impl ImpostorModel {
    /// Expected mean of the `k` highest of `n` impostor scores (Blom's approximation of
    /// normal order statistics).
    pub fn expected_top_mean(&self, k: usize, n: usize) -> f32 {
        let k = k.min(n);
        if k == 0 {
            return self.mean;
        }
        let nf = n as f64;
        let sum: f64 = (1..=k)
            .map(|i| probit((nf - i as f64 + 1.0 - 0.375) / (nf + 0.25)))
            .sum();
        self.mean + self.std * (sum / k as f64) as f32
    }
}

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// below 1.2e-9).
pub(crate) fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_top_scores_follow_normal_order_statistics() {
        assert!((probit(0.975) - 1.959964).abs() < 1e-5);
        assert!((probit(0.5)).abs() < 1e-9);
        assert!((probit(0.001) + 3.090232).abs() < 1e-5);
        let m = ImpostorModel::default();
        // LFW's measured medians of the top-20 mean (BENCHMARKS.md §3): 0.071 with 21
        // identities, 0.227 with 200, 0.304 with 1,680.
        for (n, measured) in [(20, 0.071), (199, 0.227), (1679, 0.304)] {
            let e = m.expected_top_mean(20, n);
            assert!((e - measured).abs() < 0.012, "n={n}: {e} vs {measured}");
        }
        assert!(m.expected_top_mean(20, 5000) > m.expected_top_mean(20, 1000));
    }
}
