//! Tracking and the identity decision: per-camera tracks, one decision per track.
//!
//! Frames arrive here with their embedded faces, possibly out of order (several detect
//! workers); each camera's frames are put back in sequence first. The [`Tracker`] assigns
//! faces to tracks and keeps each track's best shots. A confirmed track is searched with
//! its quality-pooled template as its shots improve:
//!
//! - a match → `identity.recognized`, once per track;
//! - no match after `track.unknown_after_ms` (or when the track ends) →
//!   `identity.unknown`, once per track;
//! - a track whose faces were all below `track.min_match_quality` is counted as
//!   `low_quality` and produces no identity event.
//!
//! Every confirmed track ends with `track.ended` carrying its final identity (if any).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::history::{Keeper, Record};
use super::publish::{Publish, PublishActor};
use super::review::{Keep, ReviewKeeper};
use super::sequence::Sequencer;
use super::snapshot::{SnapshotKeeper, TakeSnapshot};
use super::{epoch_ms, Credits, Meter, TrackBoard, TrackBox, Work};
use crate::events::{Event, EventIdentity, EventType};
use crate::gallery::service::GalleryService;
use crate::history::Appearance;
use crate::ingest::frame::I420Frame;
use crate::review::UnknownTrack;
use crate::stages::align::AlignedFace;
use crate::stages::matching::Decision;
use crate::telemetry::{metrics, Metrics};
use crate::track::{Observation, Track, TrackConfig, Tracker};

/// Decide every open track now and write its events (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackFlush;

#[derive(Default)]
struct TrackState {
    id: Option<Uuid>,
    counted: bool,
    decided: Option<Decided>,
    /// The track's identity event, once out.
    event_id: Option<Uuid>,
    /// The best aligned face (thumbnails, history).
    best_crop: Option<(f32, AlignedFace)>,
    /// Best shots with their crops, for review (`review.enabled`): (quality, crop,
    /// embedding), best first.
    review_shots: Vec<(f32, AlignedFace, Vec<f32>)>,
    /// Faces of this track whose embedding batch failed.
    embed_failures: u32,
}

/// Drop the state of every track the tracker no longer holds: confirmed tracks are
/// removed as they end (`end`), but a track that never reached `min_hits` ends silently
/// and its state (with a thumbnail, when enabled) would otherwise stay for the life of
/// the process.
fn prune_states(states: &mut HashMap<u64, TrackState>, tracker: &Tracker) {
    states.retain(|id, _| tracker.track(*id).is_some());
}

#[derive(Clone, Default)]
struct Decided {
    identity: Option<EventIdentity>,
    similarity: Option<f32>,
    calibrated: Option<f32>,
    margin: Option<f32>,
}

struct CameraTracks {
    tracker: Tracker,
    frames: Sequencer<Work>,
    states: HashMap<u64, TrackState>,
    last_frame: Instant,
}

/// What the decide stage keeps besides the events themselves.
pub(super) struct Keeping {
    /// The best aligned face as a JPEG in identity events (`events.thumbnails`).
    pub thumbnails: bool,
    /// Where ended unknown tracks go for review, and how many shots each keeps.
    pub review: Option<(Addr<ReviewKeeper>, usize)>,
    /// Where identity events' frames go to be kept (`events.snapshots`).
    pub snapshots: Option<Addr<SnapshotKeeper>>,
    /// Where decided tracks go to be kept as appearances (`history.enabled`), and this
    /// node's id.
    pub history: Option<(Keeper, String)>,
}

pub(super) struct DecideActor {
    config: TrackConfig,
    thumbnails: bool,
    top_k: usize,
    gallery: Arc<GalleryService>,
    credits: HashMap<Arc<str>, Arc<Credits>>,
    publish: Addr<PublishActor>,
    cameras: HashMap<Arc<str>, CameraTracks>,
    decided: Arc<TrackBoard>,
    meter: Meter,
    /// Where ended unknown tracks go for review, and how many shots each keeps.
    review: Option<(Addr<ReviewKeeper>, usize)>,
    /// Where identity events' frames go to be kept (`events.snapshots`).
    snapshots: Option<Addr<SnapshotKeeper>>,
    /// Where decided tracks go to be kept as appearances, and this node's id.
    history: Option<(Keeper, String)>,
    /// The frame being tracked (kept by the align stage only with snapshots on).
    current_frame: Option<Arc<I420Frame>>,
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

impl DecideActor {
    pub(super) fn new(
        config: TrackConfig,
        top_k: usize,
        gallery: Arc<GalleryService>,
        credits: HashMap<Arc<str>, Arc<Credits>>,
        publish: Addr<PublishActor>,
        decided: Arc<TrackBoard>,
        keeping: Keeping,
    ) -> DecideActor {
        DecideActor {
            config,
            thumbnails: keeping.thumbnails,
            top_k,
            gallery,
            credits,
            publish,
            cameras: HashMap::new(),
            decided,
            meter: Meter::new("decide"),
            review: keeping.review,
            snapshots: keeping.snapshots,
            history: keeping.history,
            current_frame: None,
        }
    }

    fn camera(&mut self, id: &Arc<str>) -> &mut CameraTracks {
        let config = self.config.clone();
        self.cameras
            .entry(id.clone())
            .or_insert_with(|| CameraTracks {
                tracker: Tracker::new(config),
                frames: Sequencer::new(),
                states: HashMap::new(),
                last_frame: Instant::now(),
            })
    }

    /// Process `camera`'s held frames that are next in sequence (all of them when
    /// `force`, gaps or not).
    fn drain(&mut self, camera: &Arc<str>, force: bool) {
        while let Some(work) = self.camera(camera).frames.pop(force) {
            // a panic (a bug) loses this frame's tracking, not the stage
            let _ = super::catch_panic("decide", camera, || self.track_frame(camera, work));
        }
    }

    fn track_frame(&mut self, camera: &Arc<str>, work: Work) {
        let started = Instant::now();
        let ts = epoch_ms(work.meta.captured_at);
        let observations: Vec<Observation> = work
            .faces
            .iter()
            .map(|f| Observation {
                bbox: f.detection.bbox,
                quality: f.quality.unwrap_or(0.0),
                embedding: f.embedding.clone(),
            })
            .collect();
        // the best face is kept for thumbnails and for the history's best shot
        let thumbnails = self.thumbnails || self.history.is_some();
        let min_hits = self.config.min_hits;
        let review_shots = self.review.as_ref().map_or(0, |(_, n)| *n);
        let tracks = self.camera(camera);
        tracks.last_frame = Instant::now();
        let update = tracks.tracker.update(ts, &observations);
        let mut to_consider = Vec::new();
        for &(track_id, oi) in &update.assigned {
            let state = tracks.states.entry(track_id).or_default();
            let face = &work.faces[oi];
            state.embed_failures += u32::from(face.embed_failed);
            if thumbnails && face.embedding.is_some() {
                let q = face.quality.unwrap_or(0.0);
                if state.best_crop.as_ref().is_none_or(|(bq, _)| q > *bq) {
                    state.best_crop = face.aligned.clone().map(|a| (q, a));
                }
            }
            if let (Some(embedding), Some(crop)) = (&face.embedding, &face.aligned) {
                keep_best(
                    &mut state.review_shots,
                    review_shots,
                    (face.quality.unwrap_or(0.0), crop, embedding),
                );
            }
            if let Some(track) = tracks.tracker.track(track_id) {
                if track.hits >= min_hits {
                    if !state.counted {
                        state.counted = true;
                        state.id = Some(Uuid::now_v7());
                        metrics()
                            .tracks_started
                            .get_or_create(&Metrics::camera(camera))
                            .inc();
                    }
                    if state.decided.is_none() {
                        to_consider.push(track.clone());
                    }
                }
            }
        }
        let active = tracks.tracker.tracks().len() as i64;
        self.current_frame = work.frame.clone();
        for track in to_consider {
            self.consider(camera, &track, ts, Some(work.meta.captured_instant), false);
        }
        self.current_frame = None;
        for track in update.ended {
            self.end(camera, track);
        }
        let tracks = self.camera(camera);
        prune_states(&mut tracks.states, &tracks.tracker);
        metrics()
            .tracks_active
            .get_or_create(&Metrics::camera(camera))
            .set(active);
        self.publish_decided(camera);
        self.meter.done(started);
    }

    /// Search a track's template; publish its identity event when the decision is due.
    fn consider(
        &mut self,
        camera: &Arc<str>,
        track: &Track,
        now_ms: i64,
        captured: Option<Instant>,
        last_chance: bool,
    ) {
        let outcome = |o: &str| Metrics::outcome(camera, o);
        let Some(template) = track.template() else {
            if last_chance {
                // no usable face: all too poor to judge, or their embeddings failed
                let failed = self
                    .camera(camera)
                    .states
                    .get(&track.id)
                    .is_some_and(|s| s.embed_failures > 0);
                metrics()
                    .matches
                    .get_or_create(&outcome(if failed {
                        "embed_failed"
                    } else {
                        "low_quality"
                    }))
                    .inc();
            }
            return;
        };
        let (decision, candidates) = match self.gallery.identify(&template, self.top_k) {
            Ok(found) => found,
            Err(e) => {
                self.meter.error();
                tracing::error!(camera = %camera, error = %e, "gallery search failed");
                return;
            }
        };
        let decided = match decision {
            Decision::Match {
                identity,
                score,
                calibrated,
                margin,
            } => {
                let hit = candidates.iter().find(|c| c.identity == identity);
                Decided {
                    identity: Some(EventIdentity {
                        id: identity,
                        name: hit.map(|c| c.name.clone()).unwrap_or_default(),
                        face_id: hit.map(|c| c.face),
                    }),
                    similarity: Some(score),
                    calibrated: Some(calibrated),
                    margin: Some(margin),
                }
            }
            Decision::Unknown {
                score, calibrated, ..
            } if last_chance || now_ms - track.first_seen_ms >= self.config.unknown_after_ms => {
                Decided {
                    identity: None,
                    similarity: score,
                    calibrated,
                    margin: None,
                }
            }
            Decision::Unknown { .. } => return,
        };
        let m = metrics();
        let recognized = decided.identity.is_some();
        m.matches
            .get_or_create(&outcome(if recognized { "recognized" } else { "unknown" }))
            .inc();
        if let Some(s) = decided.similarity {
            m.match_similarity.observe(s as f64);
        }
        let kind = if recognized {
            EventType::IdentityRecognized
        } else {
            EventType::IdentityUnknown
        };
        let mut event = self.track_event(kind, camera, track, &decided);
        let thumbnails = self.thumbnails;
        let state = self.camera(camera).states.entry(track.id).or_default();
        state.decided = Some(decided);
        state.event_id = Some(event.id);
        if let (true, Some((_, crop))) = (thumbnails, &state.best_crop) {
            event.thumbnail_jpeg = jpeg_base64(crop);
        }
        if let (Some(keeper), Some(frame)) = (&self.snapshots, &self.current_frame) {
            keeper.do_send(TakeSnapshot {
                event: event.id,
                identity: event.identity.as_ref().map(|i| i.id),
                frame: frame.clone(),
                bbox: track.bbox,
            });
        }
        self.send(Publish { event, captured });
    }

    fn track_event(
        &mut self,
        kind: EventType,
        camera: &Arc<str>,
        track: &Track,
        decided: &Decided,
    ) -> Event {
        let model = self.gallery.model().to_string();
        let state = self.camera(camera).states.entry(track.id).or_default();
        let id = *state.id.get_or_insert_with(Uuid::now_v7);
        let mut event = Event::new(kind);
        event.camera_id = Some(camera.to_string());
        event.track_id = Some(id.to_string());
        event.identity = decided.identity.clone();
        event.similarity = decided.similarity;
        event.calibrated_similarity = decided.calibrated;
        event.margin = decided.margin;
        event.quality = Some(track.best_quality());
        event.first_seen = time(track.first_seen_ms);
        event.last_seen = time(track.last_seen_ms);
        event.bbox = Some(track.bbox);
        event.model = Some(model);
        event
    }

    /// Hand an event to the publish stage. Its mailbox is unbounded, so this fails only
    /// when the stage is gone: said loudly, since the event is then lost.
    fn send(&self, msg: Publish) {
        if !self.publish.connected() {
            self.meter.error();
            tracing::error!(
                event = %msg.event.id,
                kind = msg.event.kind.as_str(),
                "the publish stage is gone: this event cannot reach the outbox"
            );
            return;
        }
        self.publish.do_send(msg);
    }

    /// A track ended: decide it if still open, then `track.ended`.
    fn end(&mut self, camera: &Arc<str>, track: Track) {
        let undecided = self
            .camera(camera)
            .states
            .get(&track.id)
            .is_none_or(|s| s.decided.is_none());
        if undecided {
            self.consider(camera, &track, track.last_seen_ms, None, true);
        }
        let decided = self
            .camera(camera)
            .states
            .get(&track.id)
            .and_then(|s| s.decided.clone())
            .unwrap_or_default();
        let event = self.track_event(EventType::TrackEnded, camera, &track, &decided);
        let mut state = self.camera(camera).states.remove(&track.id);
        if let (Some((keeper, node)), Some(state)) = (&self.history, state.as_mut()) {
            if let (Some(_), Some(id), Some(template)) =
                (&state.decided, state.id, track.template())
            {
                keeper.record(Record {
                    appearance: Appearance {
                        track_id: id,
                        camera: camera.to_string(),
                        node: node.clone(),
                        first_seen: time(track.first_seen_ms).unwrap_or_default(),
                        last_seen: time(track.last_seen_ms).unwrap_or_default(),
                        model: self.gallery.model().to_string(),
                        template,
                        quality: track.best_quality(),
                        event_id: state.event_id,
                        identity: decided.identity.as_ref().map(|i| i.id),
                        similarity: decided.similarity,
                        shot: None,
                    },
                    best: state.best_crop.take().map(|(_, crop)| crop),
                });
            }
        }
        if let (Some((keeper, _)), Some(state)) = (&self.review, state) {
            // an `identity.unknown` went out for this track: keep it for review
            let unknown = state.decided.as_ref().is_some_and(|d| d.identity.is_none());
            if let (true, Some(id), Some(template)) = (unknown, state.id, track.template()) {
                keeper.do_send(Keep {
                    track: UnknownTrack {
                        id,
                        camera: camera.to_string(),
                        first_seen: time(track.first_seen_ms).unwrap_or_default(),
                        last_seen: time(track.last_seen_ms).unwrap_or_default(),
                        model: self.gallery.model().to_string(),
                        template,
                        quality: track.best_quality(),
                        similarity: decided.similarity,
                        shots: Vec::new(),
                    },
                    shots: state.review_shots,
                });
            }
        }
        self.send(Publish {
            event,
            captured: None,
        });
    }

    /// Tell the embed stage where this camera's decided tracks are, and the detection
    /// planner where all its live tracks are.
    fn publish_decided(&mut self, camera: &Arc<str>) {
        let best_shots = self.config.best_shots;
        let tracks = self.camera(camera);
        let live: Vec<TrackBox> = tracks
            .tracker
            .tracks()
            .iter()
            .map(|t| TrackBox {
                bbox: t.bbox,
                velocity: t.velocity,
                last_seen_ms: t.last_seen_ms,
                decided: tracks
                    .states
                    .get(&t.id)
                    .is_some_and(|s| s.decided.is_some()),
                shot_floor: t.shot_floor(best_shots),
            })
            .collect();
        let boxes = live.iter().filter(|t| t.decided).copied().collect();
        self.decided.set_live(camera, live);
        self.decided.set(camera, boxes);
    }

    /// End the tracks of cameras that stopped sending frames.
    fn expire(&mut self) {
        let quiet_for = Duration::from_millis(self.config.lost_after_ms.max(0) as u64 + 500);
        let quiet: Vec<Arc<str>> = self
            .cameras
            .iter()
            .filter(|(_, t)| t.last_frame.elapsed() > quiet_for && !t.tracker.tracks().is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        let now = epoch_ms(std::time::SystemTime::now());
        for camera in quiet {
            let ended = self.camera(&camera).tracker.update(now, &[]).ended;
            for track in ended {
                self.end(&camera, track);
            }
            let tracks = self.camera(&camera);
            prune_states(&mut tracks.states, &tracks.tracker);
            let active = self.camera(&camera).tracker.tracks().len() as i64;
            metrics()
                .tracks_active
                .get_or_create(&Metrics::camera(&camera))
                .set(active);
        }
    }
}

/// Keep `shot` among the `max` best of `shots` (best first); the crop and embedding are
/// copied only when the shot gets in.
fn keep_best(
    shots: &mut Vec<(f32, AlignedFace, Vec<f32>)>,
    max: usize,
    (quality, crop, embedding): (f32, &AlignedFace, &Vec<f32>),
) {
    if max == 0 || (shots.len() >= max && shots.last().is_some_and(|s| s.0 >= quality)) {
        return;
    }
    let at = shots.partition_point(|s| s.0 >= quality);
    shots.insert(at, (quality, crop.clone(), embedding.clone()));
    shots.truncate(max);
}

fn jpeg_base64(crop: &AlignedFace) -> Option<String> {
    let bytes = crate::imageio::encode_jpeg(&crop.to_image(), 85).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl Actor for DecideActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(500), |actor, _| actor.expire());
    }
}

impl Handler<Work> for DecideActor {
    type Result = ();

    fn handle(&mut self, work: Work, _: &mut Context<Self>) {
        self.meter.take();
        let camera = work.meta.camera.clone();
        if let Some(c) = self.credits.get(&camera) {
            c.release();
        }
        let (run, seq) = (work.meta.run, work.meta.seq);
        if self.camera(&camera).frames.push(run, seq, work).is_some() {
            // the last frames of a stopped run, after the camera started again
            return;
        }
        self.drain(&camera, false);
    }
}

impl Handler<TrackFlush> for DecideActor {
    type Result = ();

    fn handle(&mut self, _: TrackFlush, _: &mut Context<Self>) {
        let cameras: Vec<Arc<str>> = self.cameras.keys().cloned().collect();
        for camera in cameras {
            self.drain(&camera, true);
            let ended = self.camera(&camera).tracker.finish();
            for track in ended {
                self.end(&camera, track);
            }
            self.camera(&camera).states.clear();
            metrics()
                .tracks_active
                .get_or_create(&Metrics::camera(&camera))
                .set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::BBox;

    #[test]
    fn states_of_tracks_that_never_confirm_are_pruned() {
        let mut tracker = Tracker::new(TrackConfig::default());
        let mut states: HashMap<u64, TrackState> = HashMap::new();
        // 50 one-frame false detections, far apart: none reaches min_hits
        for k in 0..50 {
            let obs = Observation {
                bbox: BBox {
                    x: (k % 10) as f32 * 150.0,
                    y: (k / 10) as f32 * 150.0,
                    w: 40.0,
                    h: 40.0,
                },
                quality: 0.9,
                embedding: None,
            };
            let update = tracker.update(k * 2000, &[obs]);
            for (id, _) in update.assigned {
                states.entry(id).or_default();
            }
            assert!(update.ended.is_empty(), "unconfirmed tracks end silently");
            prune_states(&mut states, &tracker);
            assert!(states.len() <= 1, "frame {k}: {} states kept", states.len());
        }
        tracker.update(1_000_000, &[]);
        prune_states(&mut states, &tracker);
        assert!(states.is_empty());
    }

    #[test]
    fn review_keeps_the_best_shots_best_first() {
        let crop = AlignedFace::blank();
        let mut shots = Vec::new();
        for (k, q) in [0.4f32, 0.9, 0.1, 0.7, 0.9, 0.5].into_iter().enumerate() {
            keep_best(&mut shots, 3, (q, &crop, &vec![k as f32]));
        }
        let kept: Vec<(f32, f32)> = shots.iter().map(|s| (s.0, s.2[0])).collect();
        // ties keep the earlier shot first
        assert_eq!(kept, vec![(0.9, 1.0), (0.9, 4.0), (0.7, 3.0)]);
        let mut none = Vec::new();
        keep_best(&mut none, 0, (0.9, &crop, &vec![0.0]));
        assert!(none.is_empty(), "review off: nothing copied");
    }
}
