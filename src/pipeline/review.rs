//! Keeps ended unknown tracks for review (`review.enabled`): a stage on its own thread,
//! since encoding the shots and writing them is slow next to tracking. A write that fails
//! is counted (`facestream_review_errors_total`) and logged; the track is then not kept,
//! and nothing else is affected (review is a convenience, not a record).

use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;

use crate::review::{ReviewConfig, ReviewShot, ReviewStore, UnknownTrack};
use crate::stages::align::AlignedFace;
use crate::telemetry::metrics;

/// An ended unknown track (its `shots` empty) and its best shots, crops not yet encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Keep {
    pub track: UnknownTrack,
    /// (quality, crop, embedding), best first.
    pub shots: Vec<(f32, AlignedFace, Vec<f32>)>,
}

pub(super) struct ReviewKeeper {
    store: Arc<ReviewStore>,
    config: ReviewConfig,
}

impl ReviewKeeper {
    pub(super) fn new(store: Arc<ReviewStore>, config: ReviewConfig) -> ReviewKeeper {
        ReviewKeeper { store, config }
    }

    fn keep(&self, msg: Keep) -> Result<(), crate::review::ReviewError> {
        let shots = msg
            .shots
            .into_iter()
            .filter_map(|(quality, crop, embedding)| {
                Some(ReviewShot {
                    quality,
                    embedding,
                    jpeg: jpeg(&crop)?,
                })
            })
            .collect();
        self.store.insert(&UnknownTrack { shots, ..msg.track })?;
        self.store
            .prune(Utc::now(), self.config.retention_s, self.config.max_tracks)?;
        metrics().review_tracks.set(self.store.count()? as i64);
        Ok(())
    }
}

/// The aligned crop as JPEG (quality 90: a 112×112 face is 4–6 kB).
pub(crate) fn jpeg(crop: &AlignedFace) -> Option<Vec<u8>> {
    crate::imageio::encode_jpeg(&crop.to_image(), 90).ok()
}

impl Actor for ReviewKeeper {
    type Context = SyncContext<Self>;
}

impl Handler<Keep> for ReviewKeeper {
    type Result = ();

    fn handle(&mut self, msg: Keep, _: &mut SyncContext<Self>) {
        let (id, camera) = (msg.track.id, msg.track.camera.clone());
        if let Err(e) = self.keep(msg) {
            metrics().review_errors.inc();
            tracing::error!(track = %id, camera = %camera, error = %e, "unknown track not kept for review");
        }
    }
}
