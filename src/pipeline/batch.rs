//! Dynamic embedding batches across cameras.
//!
//! Faces good enough to recognise (quality ≥ `track.min_match_quality`), not on a track
//! whose identity is already decided, and not on a track whose best shots are all
//! better than them (they could not change its template; see [`super::TrackBoard`])
//! wait until
//! `pipeline.embed_max_batch` faces are pending or the oldest has waited
//! `pipeline.embed_max_wait_ms`, then go through the embedder in one batch. Frames without
//! such faces pass straight on. The actor has its own thread (arbiter), so inference
//! blocks nothing else; frames arriving meanwhile queue and form the next batch.

use std::time::{Duration, Instant};

use actix::prelude::*;

use std::sync::Arc;

use super::{epoch_ms, EmbedNeed, Meter, Next, TrackBoard, Work};
use crate::stages::align::AlignedFace;
use crate::stages::embed::Embed;
use crate::telemetry::metrics;

pub(super) struct EmbedBatcher {
    embed: Embed,
    max_batch: usize,
    max_wait: Duration,
    min_quality: f32,
    decided: Arc<TrackBoard>,
    pending: Vec<Work>,
    pending_faces: usize,
    timer: Option<SpawnHandle>,
    next: Next,
    meter: Meter,
}

impl EmbedBatcher {
    pub(super) fn new(
        embed: Embed,
        max_batch: usize,
        max_wait: Duration,
        min_quality: f32,
        decided: Arc<TrackBoard>,
        next: Next,
    ) -> EmbedBatcher {
        EmbedBatcher {
            embed,
            max_batch,
            max_wait,
            min_quality,
            decided,
            pending: Vec::new(),
            pending_faces: 0,
            timer: None,
            next,
            meter: Meter::new("embed"),
        }
    }

    /// Mark the faces to embed; returns how many.
    fn select(&self, work: &mut Work) -> usize {
        let ts = epoch_ms(work.meta.captured_at);
        let m = metrics();
        let mut wanted = 0;
        for face in &mut work.faces {
            let quality = face.quality.unwrap_or(0.0);
            let outcome = if face.aligned.is_none() || quality < self.min_quality {
                "low_quality"
            } else {
                match self
                    .decided
                    .embed_need(&work.meta.camera, &face.detection.bbox, quality, ts)
                {
                    EmbedNeed::DecidedTrack => "decided_track",
                    EmbedNeed::ShotsFull => "shots_full",
                    EmbedNeed::Embed => "embedded",
                }
            };
            face.wanted = outcome == "embedded";
            wanted += usize::from(face.wanted);
            m.embed_faces
                .get_or_create(&crate::telemetry::Metrics::outcome(
                    &work.meta.camera,
                    outcome,
                ))
                .inc();
        }
        wanted
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if self.pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut pending = std::mem::take(&mut self.pending);
        self.pending_faces = 0;
        let slots: Vec<(usize, usize)> = pending
            .iter()
            .enumerate()
            .flat_map(|(wi, w)| {
                w.faces
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.wanted)
                    .map(move |(fi, _)| (wi, fi))
            })
            .collect();
        for chunk in slots.chunks(self.max_batch) {
            let crops: Vec<&AlignedFace> = chunk
                .iter()
                .filter_map(|&(wi, fi)| pending[wi].faces[fi].aligned.as_ref())
                .collect();
            metrics().embed_batch_size.observe(crops.len() as f64);
            let camera = pending[chunk[0].0].meta.camera.clone();
            let embedded = super::catch_panic("embed", &camera, || {
                self.embed.embed(&crops).map_err(|e| e.to_string())
            })
            .and_then(|r| r);
            match embedded {
                Ok(embeddings) => {
                    for (&(wi, fi), e) in chunk.iter().zip(embeddings) {
                        pending[wi].faces[fi].embedding = Some(e);
                    }
                }
                Err(e) => {
                    self.meter.error();
                    tracing::warn!(error = %e, faces = crops.len(), "embedding batch failed");
                    let m = metrics();
                    for &(wi, fi) in chunk {
                        pending[wi].faces[fi].embed_failed = true;
                        m.embed_faces
                            .get_or_create(&crate::telemetry::Metrics::outcome(
                                &pending[wi].meta.camera,
                                "failed",
                            ))
                            .inc();
                    }
                }
            }
        }
        self.meter.latency.observe(started.elapsed().as_secs_f64());
        self.meter.processed.inc_by(pending.len() as u64);
        for work in pending {
            self.next.send(work);
        }
    }
}

impl Actor for EmbedBatcher {
    type Context = Context<Self>;
}

impl Handler<Work> for EmbedBatcher {
    type Result = ();

    fn handle(&mut self, mut work: Work, ctx: &mut Context<Self>) {
        self.meter.take();
        let faces = self.select(&mut work);
        if faces == 0 {
            self.meter.processed.inc();
            self.next.send(work);
            return;
        }
        self.pending.push(work);
        self.pending_faces += faces;
        if self.pending_faces >= self.max_batch {
            self.flush(ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(self.max_wait, |actor, ctx| {
                actor.timer = None;
                actor.flush(ctx);
            }));
        }
    }
}
