//! Verification statistics over scored pairs (pure functions).

use serde::Serialize;

/// Mean and population standard deviation of the per-fold accuracies, and the threshold
/// each fold used (chosen on the other folds).
#[derive(Debug, Clone, Serialize)]
pub struct KFold {
    pub mean: f64,
    pub std: f64,
    pub fold_accuracies: Vec<f64>,
    pub fold_thresholds: Vec<f32>,
}

/// Split `0..n` into `folds` contiguous parts as `numpy.array_split` does.
pub fn array_split(n: usize, folds: usize) -> Vec<std::ops::Range<usize>> {
    let (base, extra) = (n / folds, n % folds);
    let mut start = 0;
    (0..folds)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The smallest threshold among the sample's scores that maximises the accuracy of
/// `score >= t` against `labels` (the reference's `max(np.unique(...))` tie rule).
pub fn best_threshold(samples: &[(f32, bool)]) -> f32 {
    let mut sorted: Vec<(f32, bool)> = samples.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|s| s.1).count();
    // Threshold at sorted[i].0: everything from i on is predicted positive.
    let (mut best_t, mut best_correct) = (f32::NEG_INFINITY, 0usize);
    let (mut neg_below, mut pos_below) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].0;
        let correct = (positives - pos_below) + neg_below;
        if correct > best_correct {
            best_correct = correct;
            best_t = t;
        }
        while i < sorted.len() && sorted[i].0 == t {
            if sorted[i].1 {
                pos_below += 1;
            } else {
                neg_below += 1;
            }
            i += 1;
        }
    }
    best_t
}

/// Fraction of `samples` where `score >= threshold` equals the label.
pub fn accuracy_at(samples: &[(f32, bool)], threshold: f32) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let correct = samples
        .iter()
        .filter(|(s, l)| (*s >= threshold) == *l)
        .count();
    correct as f64 / samples.len() as f64
}

/// 10-fold (or `folds`-fold) verification accuracy.
pub fn kfold_accuracy(samples: &[(f32, bool)], folds: usize) -> KFold {
    let mut fold_accuracies = Vec::new();
    let mut fold_thresholds = Vec::new();
    for test in array_split(samples.len(), folds) {
        let train: Vec<(f32, bool)> = samples[..test.start]
            .iter()
            .chain(&samples[test.end..])
            .copied()
            .collect();
        let t = best_threshold(&train);
        fold_thresholds.push(t);
        fold_accuracies.push(accuracy_at(&samples[test], t));
    }
    let mean = fold_accuracies.iter().sum::<f64>() / fold_accuracies.len() as f64;
    let var = fold_accuracies
        .iter()
        .map(|a| (a - mean).powi(2))
        .sum::<f64>()
        / fold_accuracies.len() as f64;
    KFold {
        mean,
        std: var.sqrt(),
        fold_accuracies,
        fold_thresholds,
    }
}

/// The score threshold that gives `far` on the impostor pairs (the same order statistic
/// [`tar_at_far`] uses: genuine pairs must score strictly above it).
pub fn threshold_at_far(samples: &[(f32, bool)], far: f64) -> f32 {
    let mut negatives: Vec<f32> = samples.iter().filter(|s| !s.1).map(|s| s.0).collect();
    if negatives.is_empty() {
        return f32::NAN;
    }
    negatives.sort_by(|a, b| b.total_cmp(a));
    let k = ((far * negatives.len() as f64) as usize).max(1) - 1;
    negatives[k.min(negatives.len() - 1)]
}

/// True accept rate at a false accept rate: the threshold is the `max(⌊far·n⌋, 1)`-th
/// highest impostor score and genuine pairs must score strictly above it.
pub fn tar_at_far(samples: &[(f32, bool)], far: f64) -> f64 {
    let mut negatives: Vec<f32> = samples.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let positives: Vec<f32> = samples.iter().filter(|s| s.1).map(|s| s.0).collect();
    if negatives.is_empty() || positives.is_empty() {
        return f64::NAN;
    }
    negatives.sort_by(|a, b| b.total_cmp(a));
    let k = ((far * negatives.len() as f64) as usize).max(1) - 1;
    let threshold = negatives[k.min(negatives.len() - 1)];
    positives.iter().filter(|&&s| s > threshold).count() as f64 / positives.len() as f64
}

/// ROC points `(false accept rate, true accept rate, threshold)`, thresholds descending.
pub fn roc(samples: &[(f32, bool)]) -> Vec<(f64, f64, f32)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let p = sorted.iter().filter(|s| s.1).count().max(1) as f64;
    let n = sorted.iter().filter(|s| !s.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0, f32::INFINITY)];
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == t {
            if sorted[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push((fp as f64 / n, tp as f64 / p, t));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_split_matches_numpy() {
        let parts = array_split(23, 10);
        let lens: Vec<usize> = parts.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(parts[9].end, 23);
    }

    #[test]
    fn best_threshold_separates_and_breaks_ties_low() {
        let s = [(0.1, false), (0.2, false), (0.6, true), (0.9, true)];
        assert_eq!(best_threshold(&s), 0.6);
        assert_eq!(accuracy_at(&s, 0.6), 1.0);
        // Overlap: 0.5 positive below a 0.55 negative; best is 3/4 at t = 0.5 or 0.6;
        // the smaller wins.
        let s = [(0.1, false), (0.5, true), (0.55, false), (0.6, true)];
        assert_eq!(best_threshold(&s), 0.5);
    }

    #[test]
    fn kfold_on_separable_data_is_perfect() {
        let samples: Vec<(f32, bool)> = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    (0.8, true)
                } else {
                    (0.1 + i as f32 * 1e-3, false)
                }
            })
            .collect();
        let k = kfold_accuracy(&samples, 10);
        assert_eq!(k.mean, 1.0);
        assert_eq!(k.std, 0.0);
        assert_eq!(k.fold_thresholds, vec![0.8; 10]);
        // The threshold is one of the training scores (as in the reference): a held-out
        // genuine pair scoring below every training genuine pair is misclassified.
        let mut s = samples.clone();
        s[0].0 = 0.5;
        assert_eq!(kfold_accuracy(&s, 10).fold_accuracies[0], 0.9);
    }

    #[test]
    fn tar_at_far_uses_the_kth_highest_impostor() {
        let mut s: Vec<(f32, bool)> = (0..1000).map(|i| (i as f32 / 1000.0, false)).collect();
        s.extend([(0.9995, true), (0.9985, true), (0.5, true), (0.999, true)]);
        // FAR 1e-3 of 1000 impostors -> threshold = highest impostor (0.999); strictly above.
        assert_eq!(tar_at_far(&s, 1e-3), 0.25);
        // FAR 1e-2 -> 10th highest = 0.990.
        assert_eq!(tar_at_far(&s, 1e-2), 0.75);
    }

    #[test]
    fn roc_runs_from_origin_to_one() {
        let s = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        let r = roc(&s);
        assert_eq!(r.first().unwrap().0, 0.0);
        assert_eq!((r.last().unwrap().0, r.last().unwrap().1), (1.0, 1.0));
        assert_eq!((r[1].0, r[1].1), (0.0, 0.5));
    }
}
