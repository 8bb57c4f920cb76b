//! Keeps every decided track as an appearance (`history.enabled`): a stage on its own
//! thread, since encoding the best shot and the durable write are slow next to tracking.
//! A write that fails is counted (`facestream_history_errors_total`) and logged. When the
//! store cannot be reached (PostgreSQL down) the appearance waits in memory and is written
//! before the next one, up to [`BACKLOG`] of them (past that the oldest is dropped, and
//! said); any other failure leaves the appearance out of searches, nothing else affected.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use crate::history::{Appearance, History, HistoryError};
use crate::stages::align::AlignedFace;
use crate::telemetry::metrics;

/// An ended, decided track and its best aligned face (not yet encoded).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Record {
    pub appearance: Appearance,
    pub best: Option<AlignedFace>,
}

/// Appearances kept in memory while the store cannot be reached.
pub(super) const BACKLOG: usize = 10_000;

pub(super) struct HistoryKeeper {
    history: Arc<History>,
    /// Encoded appearances waiting for the store to be reachable again, oldest first.
    backlog: VecDeque<Appearance>,
}

impl HistoryKeeper {
    pub(super) fn new(history: Arc<History>) -> HistoryKeeper {
        HistoryKeeper {
            history,
            backlog: VecDeque::new(),
        }
    }

    /// Write the backlog, then `appearance`; what cannot be written for want of the store
    /// stays in the backlog.
    fn write(&mut self, appearance: Appearance) {
        self.backlog.push_back(appearance);
        while let Some(next) = self.backlog.front() {
            let (track, camera) = (next.track_id, next.camera.clone());
            match self.history.record(next) {
                Ok(()) => {
                    self.backlog.pop_front();
                }
                Err(HistoryError::Unavailable(reason)) => {
                    metrics().history_errors.inc();
                    if self.backlog.len() > BACKLOG {
                        let dropped = self.backlog.pop_front().map(|a| a.track_id);
                        tracing::error!(track = ?dropped, "history backlog full: the oldest waiting appearance is dropped");
                    }
                    tracing::warn!(waiting = self.backlog.len(), %reason, "appearance kept in memory until the history store is back");
                    return;
                }
                Err(e) => {
                    metrics().history_errors.inc();
                    self.backlog.pop_front();
                    tracing::error!(track = %track, camera = %camera, error = %e, "appearance not kept in the history");
                }
            }
        }
        metrics().history_appearances.set(self.history.len() as i64);
    }
}

impl Actor for HistoryKeeper {
    type Context = SyncContext<Self>;
}

impl Handler<Record> for HistoryKeeper {
    type Result = ();

    fn handle(&mut self, msg: Record, _: &mut SyncContext<Self>) {
        let mut appearance = msg.appearance;
        appearance.shot = msg.best.as_ref().and_then(super::review::jpeg);
        self.write(appearance);
    }
}
