//! Unknown tracks kept for review: "this unknown is Alice" instead of hunting for photos.
//!
//! With `review.enabled = true`, every track decided `identity.unknown` is kept when it
//! ends: its quality-pooled template and its best shots (aligned 112×112 crops as JPEG,
//! each with its own embedding and quality score), in an SQLite file of its own
//! (`review.database`), for `review.retention_s` and at most `review.max_tracks` tracks
//! (the oldest go first). [`group`] puts the kept tracks into one group per probable
//! person; an operator then enrols a group to a new or an existing identity (each best
//! shot becomes a template whose source names the track and camera), or dismisses it.
//! Either way the tracks leave the review store.
//!
//! **Off by default**: the templates and crops of people who were never enrolled are
//! biometric data kept without their knowledge (README, Privacy).

pub mod store;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::gallery::index::pooling_weight;

pub use store::ReviewStore;

/// Review settings (section `[review]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Keep unknown tracks for review. Off by default: biometric data of people who were
    /// never enrolled.
    pub enabled: bool,
    /// SQLite file of the kept tracks (created owner-only, like the gallery).
    pub database: PathBuf,
    /// A kept track is deleted this long after it was last seen.
    pub retention_s: u64,
    /// Most tracks kept; past it the oldest are deleted first.
    pub max_tracks: usize,
    /// Best shots kept per track (the highest quality scores).
    pub shots: usize,
    /// Two tracks are grouped as one probable person when the cosine between a track's
    /// template and the group's pooled template reaches this. The default is the bar
    /// `match.threshold` sets between a track and an identity.
    pub group_similarity: f32,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            enabled: false,
            database: PathBuf::from("data/review.db"),
            retention_s: 7 * 86_400,
            max_tracks: 10_000,
            shots: 3,
            group_similarity: 0.5,
        }
    }
}

impl ReviewConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.database.as_os_str().is_empty() {
            problems.push("review.database must not be empty".into());
        }
        let ranges: [(&str, u64, u64, u64); 3] = [
            ("retention_s", self.retention_s, 60, 366 * 86_400),
            ("max_tracks", self.max_tracks as u64, 1, 1_000_000),
            ("shots", self.shots as u64, 1, 10),
        ];
        for (name, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                problems.push(format!(
                    "review.{name} = {value} must be within [{lo}, {hi}]"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.group_similarity) {
            problems.push(format!(
                "review.group_similarity = {} must be within [0, 1]",
                self.group_similarity
            ));
        }
    }
}

/// Errors at the review boundary.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("review storage: {0}")]
    Storage(String),
    #[error(
        "no unknown track {0} in the review queue (enrolled, dismissed or past review.retention_s)"
    )]
    NotFound(Uuid),
    #[error("track {track} has {shots} shot(s); shot {index} does not exist")]
    NoShot {
        track: Uuid,
        shots: usize,
        index: usize,
    },
}

/// One best shot of a kept track.
#[derive(Debug, Clone)]
pub struct ReviewShot {
    pub quality: f32,
    pub embedding: Vec<f32>,
    /// The aligned 112×112 crop, JPEG.
    pub jpeg: Vec<u8>,
}

/// An unknown track as kept.
#[derive(Debug, Clone)]
pub struct UnknownTrack {
    /// The track id of its events (`track_id` of `identity.unknown`).
    pub id: Uuid,
    pub camera: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `model@version` of the embeddings.
    pub model: String,
    /// The track's quality-pooled template (unit length).
    pub template: Vec<f32>,
    /// Best quality score among its faces.
    pub quality: f32,
    /// Best gallery similarity at its decision (none with an empty gallery).
    pub similarity: Option<f32>,
    /// Best shots, best first.
    pub shots: Vec<ReviewShot>,
}

/// A kept track as listed: everything but the shots' pixels and embeddings.
#[derive(Debug, Clone, Serialize)]
pub struct TrackSummary {
    pub id: Uuid,
    pub camera: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub model: String,
    #[serde(skip)]
    pub template: Vec<f32>,
    pub quality: f32,
    pub similarity: Option<f32>,
    /// Quality score of each shot, best first (shot `n` is `…/shots/{n}`).
    pub shots: Vec<f32>,
}

/// Tracks of one probable person: indices into the list given to [`group`], best
/// quality first, and their pooled template.
#[derive(Debug, Clone)]
pub struct Group {
    pub members: Vec<usize>,
    pub template: Vec<f32>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Group tracks into probable people, greedily and deterministically: tracks in order of
/// quality (best first) each join the group whose pooled template (the quality-weighted
/// mean of its members, as the gallery pools an identity) is most similar, when that
/// cosine reaches `threshold`, or start a group of their own. Tracks of another model
/// than the first track's never share its groups (their cosines mean nothing together).
/// Groups come out most recently seen first.
pub fn group(tracks: &[TrackSummary], threshold: f32) -> Vec<Group> {
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by(|&a, &b| {
        tracks[b]
            .quality
            .total_cmp(&tracks[a].quality)
            .then(tracks[a].id.cmp(&tracks[b].id))
    });
    // per group: members, weighted sum of templates, model
    let mut groups: Vec<(Vec<usize>, Vec<f32>, Vec<f32>)> = Vec::new();
    for i in order {
        let t = &tracks[i];
        let best = groups
            .iter()
            .enumerate()
            .filter(|(_, (members, _, _))| tracks[members[0]].model == t.model)
            .filter(|(_, (_, _, pooled))| pooled.len() == t.template.len())
            .map(|(g, (_, _, pooled))| (g, dot(pooled, &t.template)))
            .filter(|&(_, s)| s >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let w = pooling_weight(t.quality);
        match best {
            Some((g, _)) => {
                let (members, sum, pooled) = &mut groups[g];
                members.push(i);
                sum.iter_mut()
                    .zip(&t.template)
                    .for_each(|(s, x)| *s += w * x);
                *pooled = normalised(sum.clone());
            }
            None => {
                let sum: Vec<f32> = t.template.iter().map(|x| w * x).collect();
                let pooled = normalised(sum.clone());
                groups.push((vec![i], sum, pooled));
            }
        }
    }
    let last_seen =
        |g: &(Vec<usize>, Vec<f32>, Vec<f32>)| g.0.iter().map(|&i| tracks[i].last_seen).max();
    groups.sort_by_key(|g| std::cmp::Reverse(last_seen(g)));
    groups
        .into_iter()
        .map(|(members, _, template)| Group { members, template })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        normalised(
            (0..128)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
                })
                .collect(),
        )
    }

    /// `base` moved towards noise: cosine to `base` about `1 / sqrt(1 + amount²)`.
    fn near(base: &[f32], seed: u64, amount: f32) -> Vec<f32> {
        let noise = unit(seed);
        normalised(
            base.iter()
                .zip(&noise)
                .map(|(b, n)| b + amount * n)
                .collect(),
        )
    }

    fn track(n: u128, template: Vec<f32>, quality: f32, seen_s: i64) -> TrackSummary {
        let t = DateTime::from_timestamp(1_800_000_000 + seen_s, 0).unwrap();
        TrackSummary {
            id: Uuid::from_u128(n),
            camera: "cam".into(),
            first_seen: t,
            last_seen: t,
            model: "sface@1".into(),
            template,
            quality,
            similarity: None,
            shots: vec![quality],
        }
    }

    #[test]
    fn tracks_of_one_person_group_together_and_strangers_stay_apart() {
        let (alice, bob) = (unit(1), unit(2));
        let tracks = vec![
            track(1, near(&alice, 10, 0.6), 0.9, 10),
            track(2, near(&bob, 11, 0.6), 0.8, 50),
            track(3, near(&alice, 12, 0.8), 0.4, 20),
            track(4, unit(3), 0.7, 30), // a third person, seen once
            track(5, near(&bob, 13, 0.7), 0.6, 40),
            track(6, near(&alice, 14, 0.6), 0.7, 5),
        ];
        let groups = group(&tracks, 0.5);
        let members: Vec<Vec<u128>> = groups
            .iter()
            .map(|g| g.members.iter().map(|&i| tracks[i].id.as_u128()).collect())
            .collect();
        // most recently seen first; inside a group, best quality first
        assert_eq!(members, vec![vec![2, 5], vec![4], vec![1, 6, 3]]);
        // the pooled template is closer to the person than any one noisy track
        let alice_group = &groups[2];
        assert!(dot(&alice_group.template, &alice) > dot(&tracks[2].template, &alice));
    }

    #[test]
    fn a_threshold_of_one_keeps_every_track_apart_and_other_models_never_mix() {
        let alice = unit(1);
        let mut tracks = vec![
            track(1, near(&alice, 10, 0.3), 0.9, 1),
            track(2, near(&alice, 11, 0.3), 0.8, 2),
        ];
        assert_eq!(group(&tracks, 1.0).len(), 2);
        assert_eq!(group(&tracks, 0.5).len(), 1);
        tracks[1].model = "sface@2".into();
        assert_eq!(group(&tracks, 0.5).len(), 2, "templates of two models");
        assert!(group(&[], 0.5).is_empty());
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let mut problems = Vec::new();
        ReviewConfig {
            retention_s: 10,
            shots: 0,
            group_similarity: 1.5,
            ..ReviewConfig::default()
        }
        .validate(&mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("review.retention_s = 10 must be within [60,"));
        assert!(problems[1].contains("review.shots = 0"));
        assert!(problems[2].contains("review.group_similarity = 1.5"));
        let mut none = Vec::new();
        ReviewConfig::default().validate(&mut none);
        assert!(none.is_empty());
    }
}
