//! Appearances: one person's passage in front of a camera, across breaks in its track.
//!
//! The tracker loses people who turn away, pass behind a pillar or someone else, leave the
//! frame and come back, or stand still while the machine sheds frames; the next sighting
//! starts a new track. An [`Appearance`] groups those tracks so that a consumer hears of a
//! person once: the decide stage opens one when a track is decided, and a track decided
//! later on the same camera **continues** it ([`Appearances::continued_by`]) when
//!
//! - it started after the appearance was last seen (two faces seen at once are two
//!   people), at most `track.rejoin_within_ms` after, and
//! - the gallery names both the same identity, or their pooled templates are at least
//!   `track.rejoin_min_similarity` alike and the gallery does not name them differently.
//!
//! A continuing track sends no second `identity.recognized`/`identity.unknown`; the decide
//! stage sends one `identity.updated` when it resolves an unknown or shows the same person
//! markedly better. An appearance closes ([`Appearances::due`]) when its last track has
//! ended and nothing can continue it any more: `rejoin_within_ms` after it was last seen,
//! and no undecided track that started inside that window is still open. Its
//! `track.ended`, history entry and review entry are written then, once, with every span.
//!
//! Pure bookkeeping: no actor, no I/O, so its rules are tested here.

use uuid::Uuid;

use crate::events::{ChangeReason, EventIdentity};
use crate::stages::align::AlignedFace;
use crate::stages::BBox;
use crate::track::TrackConfig;
use crate::vectors::kernels;

/// What a track, or an appearance, was decided as.
#[derive(Clone, Debug, Default)]
pub(super) struct Decided {
    pub identity: Option<EventIdentity>,
    pub similarity: Option<f32>,
    pub calibrated: Option<f32>,
    pub margin: Option<f32>,
}

/// A shot kept for review: (quality, crop, embedding).
pub(super) type ReviewShot = (f32, AlignedFace, Vec<f32>);

/// One person's passage in front of one camera.
pub(super) struct Appearance {
    /// The appearance id: the `track_id` of all its events.
    pub id: Uuid,
    /// What its latest identity event said.
    pub decided: Decided,
    /// Its latest identity event.
    pub event_id: Option<Uuid>,
    /// The best face quality its latest identity event reported.
    pub reported_quality: f32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Where it was last seen.
    pub bbox: BBox,
    /// The spans of its ended tracks, in order.
    pub spans: Vec<(i64, i64)>,
    /// The tracker ids of its live tracks.
    pub live: Vec<u64>,
    /// The pooled template of its best track (highest best quality), and that quality.
    pub template: Vec<f32>,
    pub quality: f32,
    /// Its best aligned face (history, thumbnails).
    pub best_crop: Option<(f32, AlignedFace)>,
    /// Its best shots with their crops, best first (review).
    pub review_shots: Vec<ReviewShot>,
    /// Faces of its ended tracks good enough to match (`track.min_match_quality`).
    pub usable_faces: u64,
}

/// A track as it ends, for its appearance.
pub(super) struct EndedTrack {
    pub id: u64,
    pub span: (i64, i64),
    pub bbox: BBox,
    pub template: Option<Vec<f32>>,
    pub quality: f32,
    pub best_crop: Option<(f32, AlignedFace)>,
    pub review_shots: Vec<ReviewShot>,
    pub usable_faces: u64,
}

/// Whether a track that continues an appearance changes what the appearance's events
/// said, and why: it resolves an unknown to someone, or it shows the same identity with a
/// best face quality at least `gain` above the one last reported. Anything else (the
/// same identity no better, an unknown again, unknown after a match) changes nothing.
pub(super) fn change_reason(
    was: &Decided,
    reported_quality: f32,
    now: &Decided,
    quality: f32,
    gain: f32,
) -> Option<ChangeReason> {
    match (&was.identity, &now.identity) {
        (None, Some(_)) => Some(ChangeReason::Resolved),
        (Some(a), Some(b)) if a.id == b.id && quality >= reported_quality + gain => {
            Some(ChangeReason::BetterQuality)
        }
        _ => None,
    }
}

/// The open appearances of one camera.
#[derive(Default)]
pub(super) struct Appearances {
    open: Vec<Appearance>,
}

impl Appearances {
    pub fn open(&mut self, appearance: Appearance) {
        self.open.push(appearance);
    }

    pub fn get_mut(&mut self, id: Uuid) -> Option<&mut Appearance> {
        self.open.iter_mut().find(|a| a.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The open appearance a track first seen at `first_seen_ms`, with pooled template
    /// `template`, decided as `identity`, continues (see the module doc); the most alike
    /// when several could.
    pub fn continued_by(
        &self,
        config: &TrackConfig,
        first_seen_ms: i64,
        template: &[f32],
        identity: Option<Uuid>,
    ) -> Option<Uuid> {
        if config.rejoin_within_ms <= 0 {
            return None;
        }
        self.open
            .iter()
            .filter(|a| {
                a.last_seen_ms < first_seen_ms
                    && first_seen_ms - a.last_seen_ms <= config.rejoin_within_ms
                    && a.template.len() == template.len()
            })
            .filter_map(|a| {
                let similarity = kernels::dot_f32_scalar(&a.template, template);
                let theirs = a.decided.identity.as_ref().map(|i| i.id);
                let same = identity.is_some() && theirs == identity;
                let conflict = identity.is_some() && theirs.is_some() && theirs != identity;
                let continues = same || (!conflict && similarity >= config.rejoin_min_similarity);
                continues.then_some((same, similarity, a.id))
            })
            .max_by(|x, y| (x.0, x.1).partial_cmp(&(y.0, y.1)).expect("no NaN"))
            .map(|(_, _, id)| id)
    }

    /// Appearance `id` was seen at `timestamp_ms` in `bbox`.
    pub fn seen(&mut self, id: Uuid, timestamp_ms: i64, bbox: BBox) {
        if let Some(a) = self.get_mut(id) {
            if timestamp_ms >= a.last_seen_ms {
                a.last_seen_ms = timestamp_ms;
                a.bbox = bbox;
            }
        }
    }

    /// A track of appearance `id` ended: its span, template, crop and shots join it.
    pub fn track_ended(&mut self, id: Uuid, track: EndedTrack, review_shots: usize) {
        let Some(a) = self.get_mut(id) else {
            return;
        };
        a.live.retain(|t| *t != track.id);
        a.usable_faces += track.usable_faces;
        a.spans.push(track.span);
        a.spans.sort_unstable();
        a.first_seen_ms = a.first_seen_ms.min(track.span.0);
        if track.span.1 >= a.last_seen_ms {
            a.last_seen_ms = track.span.1;
            a.bbox = track.bbox;
        }
        if let Some(template) = track.template {
            if track.quality > a.quality || a.template.is_empty() {
                a.template = template;
                a.quality = track.quality;
            }
        }
        if let Some((q, crop)) = track.best_crop {
            if a.best_crop.as_ref().is_none_or(|(bq, _)| q > *bq) {
                a.best_crop = Some((q, crop));
            }
        }
        for shot in track.review_shots {
            if a.review_shots.len() >= review_shots
                && a.review_shots.last().is_some_and(|s| s.0 >= shot.0)
            {
                continue;
            }
            let at = a.review_shots.partition_point(|s| s.0 >= shot.0);
            a.review_shots.insert(at, shot);
            a.review_shots.truncate(review_shots);
        }
    }

    /// The appearances that close at `now_ms`: no live track, last seen more than
    /// `rejoin_within_ms` ago (at once when it is 0), and none of the camera's undecided
    /// tracks (first seen at `undecided`) started inside that window and may still
    /// continue it. Taken out, oldest first.
    pub fn due(&mut self, config: &TrackConfig, now_ms: i64, undecided: &[i64]) -> Vec<Appearance> {
        let within = config.rejoin_within_ms.max(0);
        let closes = |a: &Appearance| {
            a.live.is_empty()
                && (within == 0
                    || (now_ms - a.last_seen_ms > within
                        && !undecided
                            .iter()
                            .any(|&s| s > a.last_seen_ms && s - a.last_seen_ms <= within)))
        };
        let (due, open): (Vec<Appearance>, Vec<Appearance>) =
            std::mem::take(&mut self.open).into_iter().partition(closes);
        self.open = open;
        due
    }

    /// Every open appearance, taken out (the camera stopped, the service stops).
    pub fn close_all(&mut self) -> Vec<Appearance> {
        std::mem::take(&mut self.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::embed::l2_normalised;

    fn bbox() -> BBox {
        BBox {
            x: 0.0,
            y: 0.0,
            w: 40.0,
            h: 50.0,
        }
    }

    fn named(id: Uuid) -> Decided {
        Decided {
            identity: Some(EventIdentity {
                id,
                name: "someone".into(),
                face_id: None,
            }),
            ..Decided::default()
        }
    }

    fn appearance(decided: Decided, template: [f32; 2], seen: (i64, i64)) -> Appearance {
        Appearance {
            id: Uuid::now_v7(),
            decided,
            event_id: Some(Uuid::now_v7()),
            reported_quality: 0.5,
            first_seen_ms: seen.0,
            last_seen_ms: seen.1,
            bbox: bbox(),
            spans: Vec::new(),
            live: Vec::new(),
            template: l2_normalised(&template),
            quality: 0.5,
            best_crop: None,
            review_shots: Vec::new(),
            usable_faces: 0,
        }
    }

    #[test]
    fn a_track_continues_the_appearance_of_the_same_face_seen_just_before() {
        let config = TrackConfig::default(); // 4 s, 0.5
        let mut open = Appearances::default();
        let unknown = appearance(Decided::default(), [1.0, 0.1], (0, 2000));
        let id = unknown.id;
        open.open(unknown);
        let alike = l2_normalised(&[1.0, 0.2]);
        let other = l2_normalised(&[0.1, 1.0]);
        // the same unknown face 2 s later
        assert_eq!(open.continued_by(&config, 4000, &alike, None), Some(id));
        // it resolved to someone: still the same face, so the same appearance
        assert_eq!(
            open.continued_by(&config, 4000, &alike, Some(Uuid::now_v7())),
            Some(id)
        );
        // someone else's face
        assert_eq!(open.continued_by(&config, 4000, &other, None), None);
        // too late, or overlapping in time (two faces at once are two people)
        assert_eq!(open.continued_by(&config, 6001, &alike, None), None);
        assert_eq!(open.continued_by(&config, 1500, &alike, None), None);
        // turned off
        let off = TrackConfig {
            rejoin_within_ms: 0,
            ..TrackConfig::default()
        };
        assert_eq!(open.continued_by(&off, 4000, &alike, None), None);
    }

    #[test]
    fn the_gallery_naming_both_the_same_or_differently_decides_over_the_template() {
        let config = TrackConfig::default();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut open = Appearances::default();
        let a = appearance(named(alice), [1.0, 0.0], (0, 1000));
        let id = a.id;
        open.open(a);
        let far = l2_normalised(&[0.2, 1.0]);
        let alike = l2_normalised(&[1.0, 0.1]);
        // Alice again, from a face the template does not resemble (turned, blurred)
        assert_eq!(
            open.continued_by(&config, 2000, &far, Some(alice)),
            Some(id)
        );
        // a face alike but named Bob: someone else walking in Alice's steps
        assert_eq!(open.continued_by(&config, 2000, &alike, Some(bob)), None);
        // the same face undecided by the gallery (unknown): Alice's appearance goes on
        assert_eq!(open.continued_by(&config, 2000, &alike, None), Some(id));
    }

    #[test]
    fn a_continuing_track_updates_the_appearance_only_when_it_resolves_or_shows_it_better() {
        let alice = named(Uuid::now_v7());
        let unknown = Decided::default();
        let gain = TrackConfig::default().update_quality_gain; // 0.15
        assert_eq!(
            change_reason(&unknown, 0.5, &alice, 0.4, gain),
            Some(ChangeReason::Resolved),
            "an unknown resolved, whatever the quality"
        );
        assert_eq!(
            change_reason(&alice, 0.5, &alice, 0.7, gain),
            Some(ChangeReason::BetterQuality)
        );
        assert_eq!(
            change_reason(&alice, 0.5, &alice, 0.6, gain),
            None,
            "not enough better"
        );
        assert_eq!(
            change_reason(&alice, 0.5, &unknown, 0.9, gain),
            None,
            "a match stays"
        );
        assert_eq!(change_reason(&unknown, 0.5, &unknown, 0.9, gain), None);
        let bob = named(Uuid::now_v7());
        assert_eq!(change_reason(&alice, 0.5, &bob, 0.9, gain), None);
        // 1 turns the quality updates off, a resolution still goes out
        assert_eq!(change_reason(&alice, 0.5, &alice, 1.0, 1.0), None);
        assert!(change_reason(&unknown, 0.5, &alice, 0.4, 1.0).is_some());
    }

    #[test]
    fn an_appearance_closes_once_nothing_can_continue_it() {
        let config = TrackConfig::default();
        let mut open = Appearances::default();
        let mut a = appearance(Decided::default(), [1.0, 0.0], (0, 1000));
        a.live = vec![7];
        let id = a.id;
        open.open(a);
        // a live track holds it open however long ago the appearance was seen
        assert!(open.due(&config, 60_000, &[]).is_empty());
        open.track_ended(
            id,
            EndedTrack {
                id: 7,
                span: (0, 1000),
                bbox: bbox(),
                template: None,
                quality: 0.4,
                best_crop: None,
                review_shots: Vec::new(),
                usable_faces: 4,
            },
            3,
        );
        // within the window it waits; an undecided track that began inside it holds it
        assert!(open.due(&config, 4500, &[]).is_empty());
        assert!(open.due(&config, 5500, &[3000]).is_empty());
        // a track that began after the window cannot continue it
        let closed = open.due(&config, 5500, &[5200]);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].spans, vec![(0, 1000)]);
        assert_eq!(closed[0].usable_faces, 4);
        assert!(open.is_empty());
    }

    #[test]
    fn an_ended_track_brings_its_span_its_better_template_and_its_best_shots() {
        let mut open = Appearances::default();
        let mut a = appearance(Decided::default(), [1.0, 0.0], (0, 1000));
        a.spans = vec![(0, 1000)];
        a.quality = 0.5;
        a.review_shots = vec![(0.6, AlignedFace::blank(), vec![1.0])];
        a.live = vec![2];
        let id = a.id;
        open.open(a);
        let better = l2_normalised(&[0.9, 0.3]);
        open.track_ended(
            id,
            EndedTrack {
                id: 2,
                span: (3000, 5000),
                bbox: BBox { x: 9.0, ..bbox() },
                template: Some(better.clone()),
                quality: 0.8,
                best_crop: Some((0.8, AlignedFace::blank())),
                review_shots: vec![
                    (0.9, AlignedFace::blank(), vec![2.0]),
                    (0.3, AlignedFace::blank(), vec![3.0]),
                ],
                usable_faces: 0,
            },
            2,
        );
        let a = open.get_mut(id).unwrap();
        assert_eq!(a.spans, vec![(0, 1000), (3000, 5000)]);
        assert_eq!((a.first_seen_ms, a.last_seen_ms), (0, 5000));
        assert_eq!(a.bbox.x, 9.0);
        assert_eq!(a.template, better);
        assert_eq!(a.quality, 0.8);
        let kept: Vec<f32> = a.review_shots.iter().map(|s| s.2[0]).collect();
        assert_eq!(kept, vec![2.0, 1.0], "the two best of both tracks");
        assert!(a.live.is_empty());
    }
}
