//! Tracking and the identity decision: per-camera tracks, one decision per appearance.
//!
//! Frames arrive here with their embedded faces, possibly out of order (several detect
//! workers); each camera's frames are put back in sequence first. The [`Tracker`] assigns
//! faces to tracks and keeps each track's best shots. A confirmed track is searched with
//! its quality-pooled template as its shots improve, and decided:
//!
//! - a match → `identity.recognized`; no match after `track.unknown_after_ms` (or when the
//!   track ends) → `identity.unknown`: once per **appearance** (`appearances`): a track
//!   that continues an appearance seen just before (the person turned away, passed behind
//!   something, left the frame and came back) sends none, only one `identity.updated`
//!   when it resolves the unknown or shows the same person markedly better;
//! - a track whose faces were all below `track.min_match_quality` is counted as
//!   `low_quality` and produces no identity event.
//!
//! Every appearance ends with one `track.ended` carrying its final identity (if any), when
//! nothing can continue it any more; a confirmed track never decided gets its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::appearances::{change_reason, Appearance, Appearances, Decided, EndedTrack, ReviewShot};
use super::history::{Keeper, Record};
use super::publish::{Publish, PublishActor};
use super::review::{Keep, ReviewKeeper};
use super::sequence::Sequencer;
use super::snapshot::{SnapshotKeeper, TakeSnapshot};
use super::{epoch_ms, Credits, Meter, TrackBoard, TrackBox, Work};
use crate::events::{Event, EventIdentity, EventType, PreviousDecision};
use crate::gallery::service::GalleryService;
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
    /// The id its events carry: its own until it is decided, then its appearance's.
    id: Option<Uuid>,
    counted: bool,
    decided: Option<Decided>,
    /// The appearance it belongs to, once decided.
    appearance: Option<Uuid>,
    /// The best aligned face (thumbnails, history).
    best_crop: Option<(f32, AlignedFace)>,
    /// Best shots with their crops, for review (`review.enabled`): (quality, crop,
    /// embedding), best first.
    review_shots: Vec<ReviewShot>,
    /// Faces of this track whose embedding batch failed.
    embed_failures: u32,
    /// Faces of this track good enough to match (`track.min_match_quality`).
    usable_faces: u64,
}

/// Drop the state of every track the tracker no longer holds: confirmed tracks are
/// removed as they end (`end`), but a track that never reached `min_hits` ends silently
/// and its state (with a thumbnail, when enabled) would otherwise stay for the life of
/// the process.
fn prune_states(states: &mut HashMap<u64, TrackState>, tracker: &Tracker) {
    states.retain(|id, _| tracker.track(*id).is_some());
}

struct CameraTracks {
    tracker: Tracker,
    frames: Sequencer<Work>,
    states: HashMap<u64, TrackState>,
    /// Appearances that a later track may still continue.
    appearances: Appearances,
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
                appearances: Appearances::default(),
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
        let (min_hits, min_quality) = (self.config.min_hits, self.config.min_match_quality);
        let review_shots = self.review.as_ref().map_or(0, |(_, n)| *n);
        let tracks = self.camera(camera);
        tracks.last_frame = Instant::now();
        let update = tracks.tracker.update(ts, &observations);
        let mut to_consider = Vec::new();
        for &(track_id, oi) in &update.assigned {
            let state = tracks.states.entry(track_id).or_default();
            let face = &work.faces[oi];
            state.embed_failures += u32::from(face.embed_failed);
            state.usable_faces += u64::from(face.quality.unwrap_or(0.0) >= min_quality);
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
            if let Some(appearance) = state.appearance {
                tracks
                    .appearances
                    .seen(appearance, ts, work.faces[oi].detection.bbox);
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
        self.close_due(camera, ts);
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
        let config = self.config.clone();
        let continues = self.camera(camera).appearances.continued_by(
            &config,
            track.first_seen_ms,
            &template,
            decided.identity.as_ref().map(|i| i.id),
        );
        if let Some(appearance) = continues {
            self.continue_appearance(camera, track, appearance, decided, captured);
            return;
        }
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
        let event = self.track_event(kind, camera, track, &decided);
        let tracks = self.camera(camera);
        let state = tracks.states.entry(track.id).or_default();
        let id = state.id.expect("track_event gave the track an id");
        state.decided = Some(decided.clone());
        state.appearance = Some(id);
        tracks.appearances.open(Appearance {
            id,
            decided,
            event_id: Some(event.id),
            reported_quality: track.best_quality(),
            first_seen_ms: track.first_seen_ms,
            last_seen_ms: track.last_seen_ms,
            bbox: track.bbox,
            spans: Vec::new(),
            live: vec![track.id],
            template,
            quality: track.best_quality(),
            best_crop: None,
            review_shots: Vec::new(),
            usable_faces: 0,
        });
        self.publish_identity(camera, track, event, captured);
    }

    /// Thumbnail and snapshot of an identity event, then publish it.
    fn publish_identity(
        &mut self,
        camera: &Arc<str>,
        track: &Track,
        mut event: Event,
        captured: Option<Instant>,
    ) {
        let thumbnails = self.thumbnails;
        let state = self.camera(camera).states.entry(track.id).or_default();
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

    /// `track`, decided as `decided`, continues `appearance` (seen just before): no
    /// second identity event; one `identity.updated` when it resolves an unknown or shows
    /// the same person markedly better.
    fn continue_appearance(
        &mut self,
        camera: &Arc<str>,
        track: &Track,
        appearance: Uuid,
        decided: Decided,
        captured: Option<Instant>,
    ) {
        metrics()
            .matches
            .get_or_create(&Metrics::outcome(camera, "continued"))
            .inc();
        let gain = self.config.update_quality_gain;
        let tracks = self.camera(camera);
        let Some(a) = tracks.appearances.get_mut(appearance) else {
            return;
        };
        a.live.push(track.id);
        let quality = track.best_quality();
        let reason = change_reason(&a.decided, a.reported_quality, &decided, quality, gain);
        let previous = PreviousDecision {
            event_id: a.event_id,
            identity: a.decided.identity.clone(),
            similarity: a.decided.similarity,
            quality: Some(a.reported_quality),
        };
        let first_seen_ms = a.first_seen_ms;
        let kept = if reason.is_some() {
            decided
        } else {
            a.decided.clone()
        };
        let state = tracks.states.entry(track.id).or_default();
        state.id = Some(appearance);
        state.appearance = Some(appearance);
        state.decided = Some(kept.clone());
        tracing::debug!(camera = %camera, appearance = %appearance, track = track.id,
            "a new track continues an appearance seen just before");
        let Some(reason) = reason else {
            return;
        };
        let mut event = self.track_event(EventType::IdentityUpdated, camera, track, &kept);
        event.first_seen = time(first_seen_ms);
        event.reason = Some(reason);
        event.previous = Some(previous);
        if let Some(a) = self.camera(camera).appearances.get_mut(appearance) {
            a.decided = kept;
            a.event_id = Some(event.id);
            a.reported_quality = quality;
        }
        self.publish_identity(camera, track, event, captured);
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

    /// A track ended: decide it if still open; it joins its appearance, or, never
    /// decided (no usable face), gets its own `track.ended` now.
    fn end(&mut self, camera: &Arc<str>, track: Track) {
        let undecided = self
            .camera(camera)
            .states
            .get(&track.id)
            .is_none_or(|s| s.decided.is_none());
        if undecided {
            self.consider(camera, &track, track.last_seen_ms, None, true);
        }
        let review_shots = self.review.as_ref().map_or(0, |(_, n)| *n);
        let tracks = self.camera(camera);
        let state = tracks.states.remove(&track.id).unwrap_or_default();
        if let Some(appearance) = state.appearance {
            tracks.appearances.track_ended(
                appearance,
                EndedTrack {
                    id: track.id,
                    span: (track.first_seen_ms, track.last_seen_ms),
                    bbox: track.bbox,
                    template: track.template(),
                    quality: track.best_quality(),
                    best_crop: state.best_crop,
                    review_shots: state.review_shots,
                    usable_faces: state.usable_faces,
                },
                review_shots,
            );
            return;
        }
        let mut event =
            self.track_event(EventType::TrackEnded, camera, &track, &Decided::default());
        if let Some(id) = state.id {
            event.track_id = Some(id.to_string());
        }
        self.send(Publish {
            event,
            captured: None,
        });
    }

    /// Close the appearances of `camera` that nothing can continue any more at `now_ms`.
    fn close_due(&mut self, camera: &Arc<str>, now_ms: i64) {
        let config = self.config.clone();
        let tracks = self.camera(camera);
        if tracks.appearances.is_empty() {
            return; // no open appearance: nothing to close
        }
        let undecided: Vec<i64> = tracks
            .tracker
            .tracks()
            .iter()
            .filter(|t| tracks.states.get(&t.id).is_none_or(|s| s.decided.is_none()))
            .map(|t| t.first_seen_ms)
            .collect();
        let due = tracks.appearances.due(&config, now_ms, &undecided);
        for appearance in due {
            self.close(camera, appearance);
        }
    }

    /// An appearance is over: its `track.ended`, its history entry (every span), and,
    /// unknown, its review entry.
    fn close(&mut self, camera: &Arc<str>, a: Appearance) {
        if a.decided.identity.is_none() {
            metrics().faces_unmatched(camera, a.usable_faces);
        }
        let model = self.gallery.model().to_string();
        let mut event = Event::new(EventType::TrackEnded);
        event.camera_id = Some(camera.to_string());
        event.track_id = Some(a.id.to_string());
        event.identity = a.decided.identity.clone();
        event.similarity = a.decided.similarity;
        event.calibrated_similarity = a.decided.calibrated;
        event.margin = a.decided.margin;
        event.quality = Some(a.quality);
        event.first_seen = time(a.first_seen_ms);
        event.last_seen = time(a.last_seen_ms);
        event.bbox = Some(a.bbox);
        event.model = Some(model.clone());
        let template = (!a.template.is_empty()).then_some(a.template);
        if let (Some((keeper, node)), Some(template)) = (&self.history, &template) {
            keeper.record(Record {
                appearance: crate::history::Appearance {
                    track_id: a.id,
                    camera: camera.to_string(),
                    node: node.clone(),
                    first_seen: time(a.first_seen_ms).unwrap_or_default(),
                    last_seen: time(a.last_seen_ms).unwrap_or_default(),
                    model: model.clone(),
                    template: template.clone(),
                    quality: a.quality,
                    event_id: a.event_id,
                    identity: a.decided.identity.as_ref().map(|i| i.id),
                    similarity: a.decided.similarity,
                    shot: None,
                    spans: a
                        .spans
                        .iter()
                        .map(|&(first, last)| crate::history::Span {
                            first_seen: time(first).unwrap_or_default(),
                            last_seen: time(last).unwrap_or_default(),
                        })
                        .collect(),
                },
                best: a.best_crop.map(|(_, crop)| crop),
            });
        }
        if let (Some((keeper, _)), Some(template), None) =
            (&self.review, template, &a.decided.identity)
        {
            // an `identity.unknown` went out for this appearance: keep it for review
            keeper.do_send(Keep {
                track: UnknownTrack {
                    id: a.id,
                    camera: camera.to_string(),
                    first_seen: time(a.first_seen_ms).unwrap_or_default(),
                    last_seen: time(a.last_seen_ms).unwrap_or_default(),
                    model,
                    template,
                    quality: a.quality,
                    similarity: a.decided.similarity,
                    shots: Vec::new(),
                },
                shots: a.review_shots,
            });
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
            .filter(|(_, t)| {
                t.last_frame.elapsed() > quiet_for
                    && !(t.tracker.tracks().is_empty() && t.appearances.is_empty())
            })
            .map(|(id, _)| id.clone())
            .collect();
        let now = epoch_ms(std::time::SystemTime::now());
        for camera in quiet {
            let ended = self.camera(&camera).tracker.update(now, &[]).ended;
            for track in ended {
                self.end(&camera, track);
            }
            self.close_due(&camera, now);
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
    shots: &mut Vec<ReviewShot>,
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
            for appearance in self.camera(&camera).appearances.close_all() {
                self.close(&camera, appearance);
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
