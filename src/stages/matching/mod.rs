//! Matching: the open-set 1:N decision on top of a gallery search.
//!
//! After embedding. The gallery returns the best identities with exact cosines; this stage
//! decides whether the best one is *this* person or whether the face is unknown. Both must
//! hold for a match:
//!
//! - the best score is at least `match.threshold` (a stranger is far from everyone), and
//! - it beats the second-best **identity** by at least `match.margin` (a face equally close
//!   to two enrolled people is not confidently either).
//!
//! Otherwise the result is unknown, with the reason, so an operator can tell "no one like
//! this enrolled" from "looks like two people".

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::gallery::index::IdentityHit;

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
}

impl MatchConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if !(-1.0..=1.0).contains(&self.threshold) {
            problems.push(format!(
                "match.threshold = {} must be within [-1, 1]",
                self.threshold
            ));
        }
        if !(0.0..=2.0).contains(&self.margin) {
            problems.push(format!(
                "match.margin = {} must be within [0, 2]",
                self.margin
            ));
        }
        if !(1..=1000).contains(&self.top_k) {
            problems.push(format!(
                "match.top_k = {} must be within [1, 1000]",
                self.top_k
            ));
        }
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
        score: f32,
        /// Lead over the second-best identity (the score itself when there is none).
        margin: f32,
    },
    Unknown {
        reason: UnknownReason,
        /// The nearest identity and its score, for review.
        nearest: Option<Uuid>,
        score: Option<f32>,
    },
}

/// Apply threshold and margin to search hits (best first).
pub fn decide(hits: &[IdentityHit], config: &MatchConfig) -> Decision {
    let Some(best) = hits.first() else {
        return Decision::Unknown {
            reason: UnknownReason::EmptyGallery,
            nearest: None,
            score: None,
        };
    };
    let margin = best.score - hits.get(1).map_or(0.0, |h| h.score.max(0.0));
    let unknown = |reason| Decision::Unknown {
        reason,
        nearest: Some(best.identity),
        score: Some(best.score),
    };
    if best.score < config.threshold {
        unknown(UnknownReason::BelowThreshold)
    } else if margin < config.margin {
        unknown(UnknownReason::AmbiguousMargin)
    } else {
        Decision::Match {
            identity: best.identity,
            score: best.score,
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
        }
    }

    #[test]
    fn threshold_and_margin_both_gate_a_match() {
        let (a, b) = (hit(0.7), hit(0.3));
        assert!(
            matches!(decide(&[a.clone(), b], &cfg()), Decision::Match { margin, .. } if (margin - 0.4).abs() < 1e-6)
        );
        assert!(matches!(
            decide(&[hit(0.39)], &cfg()),
            Decision::Unknown {
                reason: UnknownReason::BelowThreshold,
                ..
            }
        ));
        let close = decide(&[hit(0.62), hit(0.60)], &cfg());
        assert!(
            matches!(close, Decision::Unknown { reason: UnknownReason::AmbiguousMargin, score: Some(s), .. } if s == 0.62)
        );
        assert!(matches!(
            decide(&[], &cfg()),
            Decision::Unknown {
                reason: UnknownReason::EmptyGallery,
                ..
            }
        ));
        // A lone identity: margin is its score.
        assert!(matches!(decide(&[a], &cfg()), Decision::Match { .. }));
    }
}
