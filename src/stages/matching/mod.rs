//! Matching: the open-set 1:N decision on top of a gallery search.
//!
//! After embedding. The gallery returns the best identities with exact cosines; this stage
//! decides whether the best one is *this* person or whether the face is unknown. Both must
//! hold for a match:
//!
//! - the best score, **calibrated against the gallery cohort**, is at least
//!   `match.threshold` (a stranger is far from everyone), and
//! - it beats the second-best **identity** by at least `match.margin` (a face equally close
//!   to two enrolled people is not confidently either).
//!
//! Otherwise the result is unknown, with the reason, so an operator can tell "no one like
//! this enrolled" from "looks like two people".
//!
//! **Cohort calibration.** A poor face (small, blurred, compressed) is more similar to
//! *everyone*: its impostor scores rise, so one raw threshold lets strangers through on low
//! quality while it holds on good faces. The probe's own scores against the other enrolled
//! identities measure that directly. The calibrated score is the best cosine minus how far
//! the mean of the next `match.cohort` identities' cosines lies above what it is for a good
//! face in a gallery of this size: the expected mean of the top k of n − 1 impostor scores,
//! from the model's impostor score distribution (mean and spread, in the model manifest;
//! a normal model, whose order statistics match LFW's measured ones within 0.01 from 21 to
//! 1,680 identities). For a good face it equals the raw cosine, so `match.threshold` keeps
//! its meaning at every gallery size; a gallery of fewer than [`MIN_COHORT`] + 1 identities
//! decides on the raw cosine (a cohort of a few is too noisy to correct by). On LFW
//! (BENCHMARKS.md §3) it holds the false-positive rate on low-quality faces near the one
//! on good faces (0.59 % on low/low where the raw cosine let 2.70 % through).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::models::calibration::ImpostorModel;

/// Open-set decision settings (section `[match]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Minimum cosine similarity to the best identity. Higher than the 1:1
    /// `verify.threshold` (0.363) because a probe is compared with every enrolled person:
    /// on LFW with 1,680 enrolled identities, 0.363 let 12.5% of strangers match someone,
    /// 0.5 lets 0.47% through at 90.4% true identification (BENCHMARKS.md, section 3).
    pub threshold: f32,
    /// Minimum lead of the best identity over the second best.
    pub margin: f32,
    /// Identities returned with each search result.
    pub top_k: usize,
    /// Search the int8 form with exact re-ranking (4× less memory traffic) instead of
    /// scanning every f32 template.
    pub compact: bool,
    /// Identities after the best whose mean score calibrates it (0 = decide on the raw
    /// cosine). See the module documentation.
    #[serde(default = "default_cohort")]
    pub cohort: usize,
    /// The model's impostor score distribution; set from the model manifest's
    /// `calibration` when the engine loads (not a setting).
    #[serde(skip, default)]
    pub impostors: ImpostorModel,
}

/// One identity in a 1:N result, with its closest template.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityHit {
    pub identity: uuid::Uuid,
    pub template: uuid::Uuid,
    /// Exact cosine similarity to the identity's pooled template (`gallery.pooling`).
    pub score: f32,
}

fn default_cohort() -> usize {
    20
}

impl MatchConfig {
    /// How many identities a search must return for [`decide`]: the best, the runner-up
    /// for the margin, and the cohort.
    pub fn hits_needed(&self, top_k: usize) -> usize {
        top_k.max(2).max(self.cohort + 1)
    }
}

impl MatchConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        crate::validate::within(problems, "match.threshold", self.threshold, -1.0..=1.0);
        crate::validate::within(problems, "match.margin", self.margin, 0.0..=2.0);
        crate::validate::within(problems, "match.cohort", self.cohort, 0..=1000);
        crate::validate::within(problems, "match.top_k", self.top_k, 1..=1000);
    }
}

/// Why a face was not matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownReason {
    EmptyGallery,
    BelowThreshold,
    AmbiguousMargin,
}

/// The decision for one face.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    Match {
        identity: Uuid,
        /// Raw cosine similarity to the identity.
        score: f32,
        /// The score the threshold was applied to (cohort-calibrated; see the module doc).
        calibrated: f32,
        /// Lead over the second-best identity (the score itself when there is none).
        margin: f32,
    },
    Unknown {
        reason: UnknownReason,
        /// The nearest identity and its score, for review.
        nearest: Option<Uuid>,
        score: Option<f32>,
        calibrated: Option<f32>,
    },
}

/// Fewest identities a cohort needs: the mean of fewer scores is itself too noisy (one
/// other identity alone moves a good face's score by ±0.09, the spread of impostor scores),
/// so a smaller gallery decides on the raw cosine.
pub const MIN_COHORT: usize = 10;

/// The best hit's score calibrated against the cohort of the next `config.cohort`
/// identities, in a gallery of `identities` (see the module documentation); the raw score
/// when the cohort is off or smaller than [`MIN_COHORT`]. `hits` are best first.
pub fn calibrated_score(
    hits: &[IdentityHit],
    config: &MatchConfig,
    identities: usize,
) -> Option<f32> {
    let best = hits.first()?.score;
    let cohort = &hits[1..hits.len().min(config.cohort + 1)];
    if cohort.len() < MIN_COHORT {
        return Some(best);
    }
    let mean = cohort.iter().map(|h| h.score).sum::<f32>() / cohort.len() as f32;
    let expected = config
        .impostors
        .expected_top_mean(cohort.len(), identities.saturating_sub(1).max(cohort.len()));
    Some(best - (mean - expected))
}

/// Apply threshold (to the calibrated score) and margin to search hits (best first) from a
/// gallery of `identities`.
pub fn decide(hits: &[IdentityHit], config: &MatchConfig, identities: usize) -> Decision {
    let (Some(best), Some(calibrated)) = (hits.first(), calibrated_score(hits, config, identities))
    else {
        return Decision::Unknown {
            reason: UnknownReason::EmptyGallery,
            nearest: None,
            score: None,
            calibrated: None,
        };
    };
    let margin = best.score - hits.get(1).map_or(0.0, |h| h.score.max(0.0));
    let unknown = |reason| Decision::Unknown {
        reason,
        nearest: Some(best.identity),
        score: Some(best.score),
        calibrated: Some(calibrated),
    };
    if calibrated < config.threshold {
        unknown(UnknownReason::BelowThreshold)
    } else if margin < config.margin {
        unknown(UnknownReason::AmbiguousMargin)
    } else {
        Decision::Match {
            identity: best.identity,
            score: best.score,
            calibrated,
            margin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(score: f32) -> IdentityHit {
        IdentityHit {
            identity: Uuid::now_v7(),
            template: Uuid::now_v7(),
            score,
        }
    }

    fn cfg() -> MatchConfig {
        MatchConfig {
            threshold: 0.4,
            margin: 0.05,
            top_k: 5,
            compact: true,
            cohort: 0,
            impostors: ImpostorModel::default(),
        }
    }

    #[test]
    fn threshold_and_margin_both_gate_a_match() {
        let (a, b) = (hit(0.7), hit(0.3));
        assert!(
            matches!(decide(&[a.clone(), b], &cfg(), 2), Decision::Match { margin, .. } if (margin - 0.4).abs() < 1e-6)
        );
        assert!(matches!(
            decide(&[hit(0.39)], &cfg(), 1),
            Decision::Unknown {
                reason: UnknownReason::BelowThreshold,
                ..
            }
        ));
        let close = decide(&[hit(0.62), hit(0.60)], &cfg(), 2);
        assert!(
            matches!(close, Decision::Unknown { reason: UnknownReason::AmbiguousMargin, score: Some(s), .. } if s == 0.62)
        );
        assert!(matches!(
            decide(&[], &cfg(), 0),
            Decision::Unknown {
                reason: UnknownReason::EmptyGallery,
                ..
            }
        ));
        // A lone identity: margin is its score.
        assert!(matches!(decide(&[a], &cfg(), 1), Decision::Match { .. }));
    }

    #[test]
    fn the_cohort_calibrates_the_threshold_at_every_gallery_size() {
        let config = MatchConfig {
            cohort: 10,
            ..cfg()
        };
        let with_cohort = |best: f32, other: f32, k: usize| {
            let mut v = vec![hit(best)];
            v.extend((0..k).map(|_| hit(other)));
            v
        };
        let strict = MatchConfig {
            threshold: 0.5,
            margin: 0.0,
            ..config.clone()
        };
        let expected = config.impostors.expected_top_mean(10, 10);
        // A poor face close to everyone: its cohort sits 0.3 above a good face's.
        let poor = with_cohort(0.6, expected + 0.3, 10);
        let c = calibrated_score(&poor, &config, 11).unwrap();
        assert!((c - 0.3).abs() < 1e-5, "{c}");
        assert!(matches!(
            decide(&poor, &strict, 11),
            Decision::Unknown { reason: UnknownReason::BelowThreshold, calibrated: Some(x), .. } if (x - 0.3).abs() < 1e-5
        ));
        // The same raw score from a clear face (cohort as expected) stays and matches.
        let clear = with_cohort(0.6, expected, 10);
        assert!(matches!(
            decide(&clear, &strict, 11),
            Decision::Match { calibrated, .. } if (calibrated - 0.6).abs() < 1e-5
        ));
        // A larger gallery expects a higher cohort: the same cohort is then "clearer".
        assert!(calibrated_score(&poor, &config, 2000).unwrap() > c + 0.2);
        // Fewer than MIN_COHORT others, or the cohort off: the raw score.
        let small = with_cohort(0.6, 0.5, MIN_COHORT - 1);
        assert_eq!(calibrated_score(&small, &config, MIN_COHORT), Some(0.6));
        assert_eq!(calibrated_score(&[hit(0.52)], &config, 1), Some(0.52));
        let off = MatchConfig {
            cohort: 0,
            ..config.clone()
        };
        assert_eq!(calibrated_score(&poor, &off, 11), Some(0.6));
        assert_eq!(config.hits_needed(5), 11);
        assert_eq!(off.hits_needed(5), 5);
    }
}
