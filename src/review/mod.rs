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
//! biometric data kept without their knowledge (docs/privacy.md).

pub mod store;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vectors::pooling_weight;

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
            crate::validate::within(problems, &format!("review.{name}"), value, lo..=hi);
        }
        crate::validate::within(
            problems,
            "review.group_similarity",
            self.group_similarity,
            0.0..=1.0,
        );
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
    let grouping = Grouping::build(threshold, tracks);
    grouping.groups_of(tracks)
}

/// One group of [`Grouping`]: its model, the weighted sum of its members' templates and
/// that sum normalised (the pooled template).
struct GroupState {
    model: String,
    sum: Vec<f32>,
    pooled: Vec<f32>,
    members: usize,
}

/// A kept track's place in [`Grouping`].
struct Member {
    group: u64,
    weight: f32,
    template: Vec<f32>,
}

/// The groups of [`group`], kept up to date as tracks are stored and removed, so listing
/// them costs a lookup per track instead of comparing every track with every group: a
/// stored track joins the most similar group of its model whose pooled template it
/// reaches `threshold` with, or starts its own; a removed track's template is taken out
/// of its group's sum. Built from a batch in quality order (best first), it gives what
/// [`group`] gives.
pub struct Grouping {
    threshold: f32,
    next: u64,
    groups: std::collections::HashMap<u64, GroupState>,
    tracks: std::collections::HashMap<Uuid, Member>,
}

impl Grouping {
    pub fn new(threshold: f32) -> Grouping {
        Grouping {
            threshold,
            next: 0,
            groups: Default::default(),
            tracks: Default::default(),
        }
    }

    /// The grouping of `tracks`, added best quality first (ties: by id).
    pub fn build(threshold: f32, tracks: &[TrackSummary]) -> Grouping {
        let mut order: Vec<&TrackSummary> = tracks.iter().collect();
        order.sort_by(|a, b| b.quality.total_cmp(&a.quality).then(a.id.cmp(&b.id)));
        let mut grouping = Grouping::new(threshold);
        for t in order {
            grouping.add(t.id, &t.model, &t.template, t.quality);
        }
        grouping
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn contains(&self, id: Uuid) -> bool {
        self.tracks.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Store track `id` (again, if it was there): into its best group, or a new one.
    pub fn add(&mut self, id: Uuid, model: &str, template: &[f32], quality: f32) {
        self.remove(id);
        let best = self
            .groups
            .iter()
            .filter(|(_, g)| g.model == model && g.pooled.len() == template.len())
            .map(|(&g, state)| (g, dot(&state.pooled, template)))
            .filter(|&(_, s)| s >= self.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let weight = pooling_weight(quality);
        let group = match best {
            Some((g, _)) => g,
            None => {
                let g = self.next;
                self.next += 1;
                self.groups.insert(
                    g,
                    GroupState {
                        model: model.to_string(),
                        sum: vec![0.0; template.len()],
                        pooled: Vec::new(),
                        members: 0,
                    },
                );
                g
            }
        };
        let state = self
            .groups
            .get_mut(&group)
            .expect("group just found or made");
        state
            .sum
            .iter_mut()
            .zip(template)
            .for_each(|(s, x)| *s += weight * x);
        state.pooled = normalised(state.sum.clone());
        state.members += 1;
        self.tracks.insert(
            id,
            Member {
                group,
                weight,
                template: template.to_vec(),
            },
        );
    }

    /// Take track `id` out (enrolled, dismissed, expired).
    pub fn remove(&mut self, id: Uuid) {
        let Some(member) = self.tracks.remove(&id) else {
            return;
        };
        let Some(state) = self.groups.get_mut(&member.group) else {
            return;
        };
        state.members -= 1;
        if state.members == 0 {
            self.groups.remove(&member.group);
            return;
        }
        state
            .sum
            .iter_mut()
            .zip(&member.template)
            .for_each(|(s, x)| *s -= member.weight * x);
        state.pooled = normalised(state.sum.clone());
    }

    /// Keep only the tracks for which `present` holds (the store's current tracks).
    pub fn retain(&mut self, present: impl Fn(Uuid) -> bool) {
        let gone: Vec<Uuid> = self
            .tracks
            .keys()
            .copied()
            .filter(|&id| !present(id))
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// The groups of `tracks` (each must be in this grouping; others are left out): most
    /// recently seen first, members best quality first, each with its pooled template.
    pub fn groups_of(&self, tracks: &[TrackSummary]) -> Vec<Group> {
        let mut at: std::collections::HashMap<u64, usize> = Default::default();
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        let mut order: Vec<usize> = (0..tracks.len()).collect();
        order.sort_by(|&a, &b| {
            tracks[b]
                .last_seen
                .cmp(&tracks[a].last_seen)
                .then(a.cmp(&b))
        });
        for i in order {
            let Some(member) = self.tracks.get(&tracks[i].id) else {
                continue;
            };
            let slot = *at.entry(member.group).or_insert_with(|| {
                groups.push((member.group, Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(i);
        }
        groups
            .into_iter()
            .map(|(g, mut members)| {
                members.sort_by(|&a, &b| {
                    tracks[b]
                        .quality
                        .total_cmp(&tracks[a].quality)
                        .then(tracks[a].id.cmp(&tracks[b].id))
                });
                Group {
                    members,
                    template: self.groups[&g].pooled.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        crate::vectors::random_unit(seed, 128)
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
    fn groups_kept_as_tracks_come_and_go_match_a_fresh_grouping() {
        let people: Vec<Vec<f32>> = (0..5).map(|p| unit(100 + p)).collect();
        let mut tracks = Vec::new();
        for n in 0..40u128 {
            let p = (n % 5) as usize;
            tracks.push(track(
                n,
                near(&people[p], 1000 + n as u64, 0.5),
                0.3 + (n % 7) as f32 / 10.0,
                n as i64,
            ));
        }
        let mut kept = Grouping::build(0.5, &tracks[..30]);
        // stored one at a time, and some removed (enrolled or dismissed)
        for t in &tracks[30..] {
            kept.add(t.id, &t.model, &t.template, t.quality);
        }
        for gone in [3u128, 8, 31] {
            kept.remove(Uuid::from_u128(gone));
        }
        tracks.retain(|t| ![3u128, 8, 31].contains(&t.id.as_u128()));
        let ids = |groups: &[Group]| -> Vec<Vec<u128>> {
            let mut v: Vec<Vec<u128>> = groups
                .iter()
                .map(|g| {
                    let mut m: Vec<u128> =
                        g.members.iter().map(|&i| tracks[i].id.as_u128()).collect();
                    m.sort();
                    m
                })
                .collect();
            v.sort();
            v
        };
        let incremental = kept.groups_of(&tracks);
        // one group per person either way
        assert_eq!(incremental.len(), 5);
        assert_eq!(ids(&incremental), ids(&group(&tracks, 0.5)));
        // a pooled template after removals is the normalised weighted mean of the rest
        for g in &incremental {
            let mut sum = vec![0f32; 128];
            for &i in &g.members {
                let w = pooling_weight(tracks[i].quality);
                sum.iter_mut()
                    .zip(&tracks[i].template)
                    .for_each(|(s, x)| *s += w * x);
            }
            assert!(dot(&normalised(sum), &g.template) > 0.9999);
        }
        // the last member gone: the group goes
        let lone = Grouping::build(0.5, &tracks[..1]);
        let mut lone = lone;
        lone.remove(tracks[0].id);
        assert!(lone.is_empty() && lone.groups.is_empty());
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
