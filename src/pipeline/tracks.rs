//! The track board: each camera's live tracks as the decide stage last left them, read
//! by the stages before it (the embed stage's skip rule, the detection planner's search
//! around live tracks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Each camera's live tracks as the decide stage last left them, for the stages before
/// it: the embed stage skips faces whose embedding could change nothing (on a decided
/// track, whose identity event is out — most faces of a person crossing the scene — or
/// below an undecided track's full best shots), and the camera's detection planner
/// searches around every live track at full resolution.
#[derive(Default)]
pub(crate) struct TrackBoard {
    /// The decided tracks only.
    cameras: Mutex<HashMap<Arc<str>, Vec<TrackBox>>>,
    live: Mutex<HashMap<Arc<str>, Vec<TrackBox>>>,
}

/// Where a track was last seen and how it moves (for the embed stage and the detection
/// planner).
#[derive(Debug, Clone, Copy)]
pub struct TrackBox {
    pub bbox: crate::stages::BBox,
    /// Box centre velocity, pixels per millisecond.
    pub velocity: [f32; 2],
    pub last_seen_ms: i64,
    /// Its identity event is out: it only needs following, not embedding.
    pub decided: bool,
    /// Undecided with its best shots full: a face of quality at or below this cannot
    /// enter them, so its embedding would change nothing.
    pub shot_floor: Option<f32>,
}

/// Whether the embed stage embeds a face, and why not (`facestream_embed_faces_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbedNeed {
    Embed,
    /// On a track whose identity event is out.
    DecidedTrack,
    /// On an undecided track whose best shots are all better than this face.
    ShotsFull,
}

/// IoU with a track's predicted box above which a face is taken to be that track.
const DECIDED_IOU: f32 = 0.5;

impl TrackBox {
    /// Whether `bbox`, seen at `timestamp_ms`, is this track's face: where the motion
    /// model says, or where it was (a person who stopped).
    fn holds(&self, bbox: &crate::stages::BBox, timestamp_ms: i64) -> bool {
        let dt = (timestamp_ms - self.last_seen_ms) as f32;
        let predicted = crate::stages::BBox {
            x: self.bbox.x + self.velocity[0] * dt,
            y: self.bbox.y + self.velocity[1] * dt,
            ..self.bbox
        };
        predicted.iou(bbox).max(self.bbox.iou(bbox)) >= DECIDED_IOU
    }
}

impl TrackBoard {
    pub(crate) fn set(&self, camera: &Arc<str>, boxes: Vec<TrackBox>) {
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera.clone(), boxes);
    }

    pub(crate) fn set_live(&self, camera: &Arc<str>, boxes: Vec<TrackBox>) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera.clone(), boxes);
    }

    /// Every live track of `camera`.
    pub(crate) fn live(&self, camera: &Arc<str>) -> Vec<TrackBox> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(camera)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `bbox` (seen at `timestamp_ms`) lies on a decided track of `camera`.
    pub(crate) fn covers(
        &self,
        camera: &Arc<str>,
        bbox: &crate::stages::BBox,
        timestamp_ms: i64,
    ) -> bool {
        let cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        cameras
            .get(camera)
            .is_some_and(|boxes| boxes.iter().any(|d| d.holds(bbox, timestamp_ms)))
    }

    /// Whether a face of `quality` at `bbox` (seen at `timestamp_ms`) is worth embedding:
    /// not when it lies on a decided track, nor on an undecided track whose best shots
    /// are all better (it could not change the track's template).
    pub(crate) fn embed_need(
        &self,
        camera: &Arc<str>,
        bbox: &crate::stages::BBox,
        quality: f32,
        timestamp_ms: i64,
    ) -> EmbedNeed {
        if self.covers(camera, bbox, timestamp_ms) {
            return EmbedNeed::DecidedTrack;
        }
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let full = live.get(camera).is_some_and(|boxes| {
            boxes.iter().any(|t| {
                !t.decided
                    && t.shot_floor.is_some_and(|floor| quality <= floor)
                    && t.holds(bbox, timestamp_ms)
            })
        });
        if full {
            EmbedNeed::ShotsFull
        } else {
            EmbedNeed::Embed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_is_embedded_only_where_its_embedding_can_change_a_decision() {
        let camera: Arc<str> = Arc::from("need-test");
        let at = |x: f32| crate::stages::BBox {
            x,
            y: 100.0,
            w: 50.0,
            h: 60.0,
        };
        let track = |x: f32, decided: bool, shot_floor: Option<f32>| TrackBox {
            bbox: at(x),
            velocity: [0.0, 0.0],
            last_seen_ms: 0,
            decided,
            shot_floor,
        };
        let tracks = TrackBoard::default();
        let live = vec![
            track(100.0, true, None),
            track(400.0, false, Some(0.6)),
            track(700.0, false, None),
        ];
        tracks.set(
            &camera,
            live.iter().filter(|t| t.decided).copied().collect(),
        );
        tracks.set_live(&camera, live);
        let need = |x: f32, q: f32| tracks.embed_need(&camera, &at(x), q, 200);
        assert_eq!(need(102.0, 0.9), EmbedNeed::DecidedTrack);
        assert_eq!(
            need(402.0, 0.5),
            EmbedNeed::ShotsFull,
            "worse than every kept shot"
        );
        assert_eq!(
            need(402.0, 0.7),
            EmbedNeed::Embed,
            "better than the worst kept shot"
        );
        assert_eq!(
            need(702.0, 0.1),
            EmbedNeed::Embed,
            "best shots not full yet"
        );
        assert_eq!(need(1000.0, 0.1), EmbedNeed::Embed, "on no track");
        let other: Arc<str> = Arc::from("need-test-other");
        assert_eq!(
            tracks.embed_need(&other, &at(402.0), 0.5, 200),
            EmbedNeed::Embed,
            "another camera's tracks do not count"
        );
    }
}
