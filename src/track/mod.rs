//! Per-camera face tracks: association across frames, a constant-velocity motion model,
//! and the best shots of each track for the identity decision.
//!
//! Between quality/embedding and matching in the streaming pipeline. One [`Tracker`] per
//! camera takes each analysed frame's faces ([`Observation`]s) and assigns them to tracks
//! by greedy IoU matching against each track's *predicted* box (last box moved by its
//! velocity), with a centre-distance gate as a fallback for small, fast faces. A track
//! keeps its `best_shots` highest-quality faces; [`Track::template`] pools their
//! embeddings weighted by quality, so the identity decision is made once per track on
//! its best evidence — one person walking past gives one decision, not one per frame.
//! Faces below `min_match_quality` are tracked (the track stays continuous) but never
//! pooled. A track unseen for `lost_after_ms` ends and is returned by [`Tracker::update`].

use serde::{Deserialize, Serialize};

use crate::stages::embed::l2_normalised;
use crate::stages::BBox;

/// Tracking settings (section `[track]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// Minimum IoU between a predicted track box and a face to associate them.
    pub iou_threshold: f32,
    /// Fallback gate: centre distance, in units of the track's box width, under which a
    /// face may still continue a track whose IoU is too small (fast or tiny faces).
    pub max_centre_distance: f32,
    /// How fast a face may move, in its own widths per second, before its track knows its
    /// velocity: widens the centre gate of a track seen once by this × the time since
    /// (a 48-px face walking across a 1080p frame moves ~1.3 widths between two frames at
    /// 5 fps). Tracks with a velocity get half of it (a person who stops or starts
    /// walking), measured from the predicted box or the last one, whichever is closer.
    #[serde(default = "default_max_speed")]
    pub max_speed: f32,
    /// A track not seen for this long ends.
    pub lost_after_ms: i64,
    /// Faces a track needs before it is confirmed (filters one-frame false detections).
    pub min_hits: u32,
    /// Highest-quality faces kept per track for the decision.
    pub best_shots: usize,
    /// Faces below this quality are tracked but not used for recognition.
    pub min_match_quality: f32,
    /// A confirmed track that matches no one for this long is reported unknown (a match
    /// is reported as soon as it happens).
    pub unknown_after_ms: i64,
    /// Appearance gate: a face whose embedding has a cosine similarity below this with a
    /// track's pooled template does not continue that track, however well the boxes
    /// line up (two people crossing, or a track unseen for a while whose widened gate
    /// reaches someone else). Faces of one person in one track score far above it; two
    /// people rarely do. Applies when both sides have embeddings; -1 turns it off.
    #[serde(default = "default_min_appearance_similarity")]
    pub min_appearance_similarity: f32,
    /// One appearance, one identity event: a track that starts on the same camera at most
    /// this long after an appearance was last seen, and whose face is that appearance's
    /// (the same identity, or a template at least `rejoin_min_similarity` alike),
    /// continues it — the person turned away, passed behind something or someone, or
    /// left the frame and came back. Its events carry the appearance's `track_id`; the
    /// appearance's `track.ended`, history entry and review entry wait this long after
    /// its last track ended. 0 turns it off (every track is an appearance of its own).
    #[serde(default = "default_rejoin_within_ms")]
    pub rejoin_within_ms: i64,
    /// Cosine between the pooled templates of an appearance and of a new track for the
    /// track to continue it when the gallery does not name both the same.
    #[serde(default = "default_rejoin_min_similarity")]
    pub rejoin_min_similarity: f32,
    /// A continued appearance of the same identity sends `identity.updated` when its best
    /// face quality rose by at least this much since its last event (1 turns it off; an
    /// unknown resolved to someone always sends one).
    #[serde(default = "default_update_quality_gain")]
    pub update_quality_gain: f32,
}

fn default_rejoin_within_ms() -> i64 {
    4000
}

fn default_rejoin_min_similarity() -> f32 {
    0.5
}

fn default_update_quality_gain() -> f32 {
    0.15
}

fn default_max_speed() -> f32 {
    8.0
}

fn default_min_appearance_similarity() -> f32 {
    0.3
}

impl TrackConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        crate::validate::within(
            problems,
            "track.iou_threshold",
            self.iou_threshold,
            0.0..=1.0,
        );
        crate::validate::within(
            problems,
            "track.min_appearance_similarity",
            self.min_appearance_similarity,
            -1.0..=1.0,
        );
        if self.max_centre_distance.is_nan() || self.max_centre_distance < 0.0 {
            problems.push("track.max_centre_distance must be >= 0".into());
        }
        crate::validate::within_note(
            problems,
            "track.max_speed",
            self.max_speed,
            0.0..=100.0,
            "face widths per second",
        );
        crate::validate::within(
            problems,
            "track.lost_after_ms",
            self.lost_after_ms,
            100..=600_000,
        );
        crate::validate::within(problems, "track.min_hits", self.min_hits, 1..=100);
        crate::validate::within(problems, "track.best_shots", self.best_shots, 1..=64);
        crate::validate::within(
            problems,
            "track.min_match_quality",
            self.min_match_quality,
            0.0..=1.0,
        );
        crate::validate::within(
            problems,
            "track.unknown_after_ms",
            self.unknown_after_ms,
            0..=600_000,
        );
        crate::validate::within(
            problems,
            "track.rejoin_within_ms",
            self.rejoin_within_ms,
            0..=60_000,
        );
        crate::validate::within(
            problems,
            "track.rejoin_min_similarity",
            self.rejoin_min_similarity,
            -1.0..=1.0,
        );
        crate::validate::within(
            problems,
            "track.update_quality_gain",
            self.update_quality_gain,
            0.0..=1.0,
        );
    }
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            iou_threshold: 0.3,
            max_centre_distance: 1.0,
            max_speed: default_max_speed(),
            lost_after_ms: 1500,
            min_hits: 2,
            best_shots: 3,
            min_match_quality: 0.3,
            unknown_after_ms: 1000,
            min_appearance_similarity: default_min_appearance_similarity(),
            rejoin_within_ms: default_rejoin_within_ms(),
            rejoin_min_similarity: default_rejoin_min_similarity(),
            update_quality_gain: default_update_quality_gain(),
        }
    }
}

/// One analysed face in a frame.
#[derive(Debug, Clone)]
pub struct Observation {
    pub bbox: BBox,
    pub quality: f32,
    /// L2-normalised embedding (absent when the face was not embedded).
    pub embedding: Option<Vec<f32>>,
}

/// A face kept as one of a track's best shots.
#[derive(Debug, Clone)]
pub struct Shot {
    pub quality: f32,
    pub embedding: Vec<f32>,
    pub bbox: BBox,
    pub timestamp_ms: i64,
}

/// One tracked face.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub bbox: BBox,
    /// Box centre velocity, pixels per millisecond.
    pub velocity: [f32; 2],
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub hits: u32,
    /// Best shots, highest quality first.
    pub shots: Vec<Shot>,
}

impl Track {
    pub fn confirmed(&self, config: &TrackConfig) -> bool {
        self.hits >= config.min_hits
    }

    /// The box expected at `timestamp_ms` (constant velocity).
    pub fn predicted(&self, timestamp_ms: i64) -> BBox {
        let dt = (timestamp_ms - self.last_seen_ms) as f32;
        BBox {
            x: self.bbox.x + self.velocity[0] * dt,
            y: self.bbox.y + self.velocity[1] * dt,
            ..self.bbox
        }
    }

    /// Quality-weighted mean of the best shots' embeddings, L2-normalised; `None` when no
    /// face of the track was good enough to embed.
    pub fn template(&self) -> Option<Vec<f32>> {
        let first = self.shots.first()?;
        let mut sum = vec![0.0f32; first.embedding.len()];
        for shot in &self.shots {
            for (s, v) in sum.iter_mut().zip(&shot.embedding) {
                *s += shot.quality * v;
            }
        }
        Some(l2_normalised(&sum))
    }

    pub fn best_quality(&self) -> f32 {
        self.shots.first().map_or(0.0, |s| s.quality)
    }

    /// The quality a new face must beat to enter the best shots (and so change the
    /// template): the worst kept shot's once `max` are kept, else none.
    pub fn shot_floor(&self, max: usize) -> Option<f32> {
        (self.shots.len() >= max)
            .then(|| self.shots.last().map(|s| s.quality))
            .flatten()
    }

    fn keep_shot(&mut self, shot: Shot, max: usize) {
        let at = self.shots.partition_point(|s| s.quality >= shot.quality);
        if at < max {
            self.shots.insert(at, shot);
            self.shots.truncate(max);
        }
    }
}

/// What one frame did to the tracks.
#[derive(Debug, Default)]
pub struct TrackUpdate {
    /// `(track id, observation index)` for every face of the frame.
    pub assigned: Vec<(u64, usize)>,
    /// Tracks that ended (not seen for `lost_after_ms`), confirmed ones only.
    pub ended: Vec<Track>,
}

/// The tracks of one camera.
pub struct Tracker {
    config: TrackConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackConfig) -> Tracker {
        Tracker {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn track(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Feed one frame's faces (timestamps must not go backwards).
    pub fn update(&mut self, timestamp_ms: i64, observations: &[Observation]) -> TrackUpdate {
        let mut update = TrackUpdate::default();
        // Candidate pairs, best first: IoU with the predicted box, else the centre gate.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        // the appearance gate needs templates only when some face was embedded
        let embedded = observations.iter().any(|o| o.embedding.is_some());
        for (ti, track) in self.tracks.iter().enumerate() {
            if timestamp_ms - track.last_seen_ms > self.config.lost_after_ms {
                continue; // lost: it ends below and takes no new face
            }
            let predicted = track.predicted(timestamp_ms);
            // A track seen once has no velocity: it may have moved up to max_speed. One
            // with a velocity is predicted, but people stop and start: the face may be
            // where it was (measured from the last box) or have sped up (half the speed
            // allowance).
            let elapsed_s = (timestamp_ms - track.last_seen_ms).max(0) as f32 / 1000.0;
            let template = if embedded { track.template() } else { None };
            let allowance = if track.hits == 1 { 1.0 } else { 0.5 };
            let gate =
                self.config.max_centre_distance + allowance * self.config.max_speed * elapsed_s;
            for (oi, obs) in observations.iter().enumerate() {
                let iou = predicted.iou(&obs.bbox).max(track.bbox.iou(&obs.bbox));
                let oc = obs.bbox.centre();
                let distance = [predicted.centre(), track.bbox.centre()]
                    .iter()
                    .map(|c| (c[0] - oc[0]).hypot(c[1] - oc[1]))
                    .fold(f32::INFINITY, f32::min)
                    / predicted.w.max(1.0);
                let score = if iou >= self.config.iou_threshold {
                    1.0 + iou
                } else if distance <= gate {
                    1.0 - distance / (gate + 1.0)
                } else {
                    continue;
                };
                if let (Some(t), Some(e)) = (&template, &obs.embedding) {
                    let similarity: f32 = t.iter().zip(e).map(|(a, b)| a * b).sum();
                    if similarity < self.config.min_appearance_similarity {
                        continue; // someone else where the track was expected
                    }
                }
                pairs.push((score, ti, oi));
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_used = vec![false; self.tracks.len()];
        let mut obs_used = vec![false; observations.len()];
        for (_, ti, oi) in pairs {
            if track_used[ti] || obs_used[oi] {
                continue;
            }
            track_used[ti] = true;
            obs_used[oi] = true;
            let track = &mut self.tracks[ti];
            let dt = (timestamp_ms - track.last_seen_ms).max(1) as f32;
            let [old, new] = [track.bbox.centre(), observations[oi].bbox.centre()];
            let measured = [(new[0] - old[0]) / dt, (new[1] - old[1]) / dt];
            // Smooth the velocity: a detector's box jitters frame to frame.
            track.velocity = if track.hits == 1 {
                measured
            } else {
                [
                    0.5 * track.velocity[0] + 0.5 * measured[0],
                    0.5 * track.velocity[1] + 0.5 * measured[1],
                ]
            };
            track.bbox = observations[oi].bbox;
            track.last_seen_ms = timestamp_ms;
            track.hits += 1;
            Self::add_shot(track, &observations[oi], timestamp_ms, &self.config);
            update.assigned.push((track.id, oi));
        }
        for (oi, obs) in observations
            .iter()
            .enumerate()
            .filter(|(oi, _)| !obs_used[*oi])
        {
            let mut track = Track {
                id: self.next_id,
                bbox: obs.bbox,
                velocity: [0.0, 0.0],
                first_seen_ms: timestamp_ms,
                last_seen_ms: timestamp_ms,
                hits: 1,
                shots: Vec::new(),
            };
            self.next_id += 1;
            Self::add_shot(&mut track, obs, timestamp_ms, &self.config);
            update.assigned.push((track.id, oi));
            self.tracks.push(track);
        }
        let lost_after = self.config.lost_after_ms;
        let (ended, live): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| timestamp_ms - t.last_seen_ms > lost_after);
        self.tracks = live;
        update.ended = ended
            .into_iter()
            .filter(|t| t.confirmed(&self.config))
            .collect();
        update
    }

    /// End every track (camera stopped); confirmed ones are returned.
    pub fn finish(&mut self) -> Vec<Track> {
        let config = self.config.clone();
        std::mem::take(&mut self.tracks)
            .into_iter()
            .filter(|t| t.confirmed(&config))
            .collect()
    }

    fn add_shot(track: &mut Track, obs: &Observation, timestamp_ms: i64, config: &TrackConfig) {
        if obs.quality < config.min_match_quality {
            return;
        }
        if let Some(embedding) = &obs.embedding {
            track.keep_shot(
                Shot {
                    quality: obs.quality,
                    embedding: embedding.clone(),
                    bbox: obs.bbox,
                    timestamp_ms,
                },
                config.best_shots,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, quality: f32, e: [f32; 2]) -> Observation {
        Observation {
            bbox: BBox {
                x,
                y,
                w: 40.0,
                h: 50.0,
            },
            quality,
            embedding: Some(l2_normalised(&e)),
        }
    }

    #[test]
    fn a_face_of_someone_else_does_not_continue_a_track_whose_gate_it_is_in() {
        /// A track of one person walking right for three frames.
        fn walked(config: TrackConfig) -> Tracker {
            let mut t = Tracker::new(config);
            for k in 0..3 {
                let x = 100.0 + 10.0 * k as f32;
                t.update(k * 200, &[face(x, 100.0, 0.8, [1.0, 0.0])]);
            }
            t
        }
        // a second later, 3 widths away (inside the widened gate), a different face
        let stranger = face(240.0, 100.0, 0.8, [0.0, 1.0]);
        let mut t = walked(TrackConfig::default());
        let first = t.tracks()[0].id;
        let update = t.update(1400, std::slice::from_ref(&stranger));
        assert!(
            update.assigned.iter().all(|&(id, _)| id != first),
            "{update:?}"
        );
        assert_eq!(
            t.tracks().len(),
            2,
            "the stranger starts a track of their own"
        );
        // the same person there continues the track
        let mut t = walked(TrackConfig::default());
        let update = t.update(1400, &[face(240.0, 100.0, 0.8, [0.9, 0.1])]);
        assert_eq!(update.assigned.len(), 1);
        assert_eq!(t.tracks().len(), 1);
        // with the gate off, position alone decides
        let mut t = walked(TrackConfig {
            min_appearance_similarity: -1.0,
            ..TrackConfig::default()
        });
        t.update(1400, &[stranger]);
        assert_eq!(t.tracks().len(), 1);
    }

    #[test]
    fn the_shot_floor_is_the_worst_kept_shot_once_the_best_shots_are_full() {
        let mut t = Tracker::new(TrackConfig::default()); // best_shots = 3
        let best = TrackConfig::default().best_shots;
        let mut floors = Vec::new();
        for (k, q) in [0.5, 0.7, 0.4, 0.6, 0.3].into_iter().enumerate() {
            t.update(
                k as i64 * 200,
                &[face(100.0 + k as f32, 100.0, q, [1.0, 0.0])],
            );
            floors.push(t.tracks()[0].shot_floor(best));
        }
        assert_eq!(floors, [None, None, Some(0.4), Some(0.5), Some(0.5)]);
    }

    #[test]
    fn two_people_walking_keep_their_tracks_and_end_once() {
        let mut t = Tracker::new(TrackConfig::default());
        let mut ids = (0, 0);
        // 25 fps frames every 40 ms; A walks right, B walks left, their paths cross.
        for k in 0..30 {
            let ts = k * 40;
            let a = face(10.0 + 12.0 * k as f32, 100.0, 0.8, [1.0, 0.0]);
            let b = face(400.0 - 12.0 * k as f32, 110.0, 0.8, [0.0, 1.0]);
            let u = t.update(ts, &[a, b]);
            assert!(u.ended.is_empty());
            let find = |oi| u.assigned.iter().find(|(_, o)| *o == oi).unwrap().0;
            if k == 0 {
                ids = (find(0), find(1));
            } else {
                assert_eq!(
                    (find(0), find(1)),
                    ids,
                    "frame {k}: identities swapped or lost"
                );
            }
        }
        assert_eq!(t.tracks().len(), 2);
        // Nobody for longer than lost_after_ms: both tracks end, once.
        assert!(t.update(30 * 40 + 1000, &[]).ended.is_empty());
        let ended = t.update(30 * 40 + 1600, &[]).ended;
        assert_eq!(ended.len(), 2);
        assert!(t.update(30 * 40 + 3000, &[]).ended.is_empty());
        for track in ended {
            assert_eq!(track.hits, 30);
            let tpl = track.template().unwrap();
            let expected = if track.id == ids.0 {
                [1.0, 0.0]
            } else {
                [0.0, 1.0]
            };
            assert!((tpl[0] - expected[0]).abs() < 1e-5 && (tpl[1] - expected[1]).abs() < 1e-5);
        }
    }

    #[test]
    fn a_small_fast_face_at_five_frames_a_second_is_confirmed() {
        let mut t = Tracker::new(TrackConfig::default());
        // 48-px face moving 63 px per 200 ms: 1.3 widths between frames
        let mut id = None;
        for k in 0..6 {
            let u = t.update(
                k * 200,
                &[face(100.0 + 63.0 * k as f32, 500.0, 0.8, [1.0, 0.0])],
            );
            let this = u.assigned[0].0;
            assert_eq!(*id.get_or_insert(this), this, "frame {k}: a new track");
        }
        assert_eq!(t.tracks().len(), 1);
        assert_eq!(t.tracks()[0].hits, 6);
        // with no speed allowance the second face starts a second track
        let mut strict = Tracker::new(TrackConfig {
            max_speed: 0.0,
            ..TrackConfig::default()
        });
        strict.update(0, &[face(100.0, 500.0, 0.8, [1.0, 0.0])]);
        strict.update(200, &[face(163.0, 500.0, 0.8, [1.0, 0.0])]);
        assert_eq!(strict.tracks().len(), 2);
    }

    #[test]
    fn a_lost_track_takes_no_new_face_however_close() {
        let mut t = Tracker::new(TrackConfig::default());
        let first = t.update(0, &[face(100.0, 100.0, 0.8, [1.0, 0.0])]).assigned[0].0;
        // seen again 1.6 s later (lost_after 1.5 s), 1.5 widths away: a new track
        let u = t.update(1600, &[face(160.0, 100.0, 0.8, [1.0, 0.0])]);
        assert_ne!(u.assigned[0].0, first);
        assert_eq!(t.tracks().len(), 1);
    }

    #[test]
    fn a_face_that_stops_and_walks_on_keeps_its_track() {
        let mut t = Tracker::new(TrackConfig::default());
        // 5 fps: 60 px a frame, then 15 frames (3 s) still, then 60 px a frame again
        let mut x = 100.0;
        let mut xs = Vec::new();
        for k in 0..30 {
            if !(6..21).contains(&k) {
                x += 60.0;
            }
            xs.push(x);
        }
        let mut id = None;
        for (k, &x) in xs.iter().enumerate() {
            let u = t.update(k as i64 * 200, &[face(x, 400.0, 0.8, [1.0, 0.0])]);
            let this = u.assigned[0].0;
            assert_eq!(
                *id.get_or_insert(this),
                this,
                "frame {k} at x={x}: a new track"
            );
        }
        assert_eq!(t.tracks().len(), 1);
    }

    #[test]
    fn a_frame_gap_is_bridged_by_the_motion_model() {
        let mut t = Tracker::new(TrackConfig::default());
        for k in 0..5 {
            t.update(k * 40, &[face(20.0 * k as f32, 0.0, 0.8, [1.0, 0.0])]);
        }
        // Missed three frames (detector at 5 fps or an occlusion): the face moved 80 px,
        // more than its width, but the predicted box still overlaps.
        let u = t.update(8 * 40, &[face(160.0, 0.0, 0.8, [1.0, 0.0])]);
        assert_eq!(u.assigned[0].0, 1);
        assert_eq!(t.tracks().len(), 1);
    }

    #[test]
    fn best_shots_keep_the_highest_quality_and_skip_poor_faces() {
        let config = TrackConfig {
            best_shots: 2,
            ..TrackConfig::default()
        };
        let mut t = Tracker::new(config);
        let qualities = [0.5, 0.9, 0.2, 0.7, 0.95];
        for (k, q) in qualities.iter().enumerate() {
            t.update(k as i64 * 40, &[face(0.0, 0.0, *q, [1.0, k as f32 * 0.1])]);
        }
        let track = &t.tracks()[0];
        let kept: Vec<f32> = track.shots.iter().map(|s| s.quality).collect();
        assert_eq!(kept, vec![0.95, 0.9]);
        assert_eq!(track.best_quality(), 0.95);
        // A track whose faces are all below min_match_quality has no template.
        let mut t = Tracker::new(TrackConfig::default());
        t.update(0, &[face(0.0, 0.0, 0.1, [1.0, 0.0])]);
        t.update(40, &[face(0.0, 0.0, 0.2, [1.0, 0.0])]);
        assert!(t.tracks()[0].template().is_none());
        assert_eq!(t.tracks()[0].hits, 2);
    }

    #[test]
    fn single_frame_detections_never_end_as_tracks() {
        let mut t = Tracker::new(TrackConfig::default());
        t.update(0, &[face(0.0, 0.0, 0.9, [1.0, 0.0])]);
        assert!(
            t.update(5000, &[]).ended.is_empty(),
            "one hit: not confirmed"
        );
        t.update(6000, &[face(500.0, 0.0, 0.9, [1.0, 0.0])]);
        t.update(6040, &[face(502.0, 0.0, 0.9, [1.0, 0.0])]);
        assert_eq!(t.finish().len(), 1);
    }

    #[test]
    fn pooled_template_is_quality_weighted() {
        let track = Track {
            id: 1,
            bbox: BBox {
                x: 0.0,
                y: 0.0,
                w: 1.0,
                h: 1.0,
            },
            velocity: [0.0, 0.0],
            first_seen_ms: 0,
            last_seen_ms: 0,
            hits: 2,
            shots: vec![
                Shot {
                    quality: 0.9,
                    embedding: vec![1.0, 0.0],
                    bbox: BBox {
                        x: 0.0,
                        y: 0.0,
                        w: 1.0,
                        h: 1.0,
                    },
                    timestamp_ms: 0,
                },
                Shot {
                    quality: 0.3,
                    embedding: vec![0.0, 1.0],
                    bbox: BBox {
                        x: 0.0,
                        y: 0.0,
                        w: 1.0,
                        h: 1.0,
                    },
                    timestamp_ms: 0,
                },
            ],
        };
        let t = track.template().unwrap();
        assert!((t[0] / t[1] - 3.0).abs() < 1e-5);
    }
}
