//! Keeps every decided track as an appearance (`history.enabled`): a stage on its own
//! thread, since encoding the best shot and the durable write are slow next to tracking.
//! A write that fails is counted (`facestream_history_errors_total`) and logged. When the
//! store cannot be reached (PostgreSQL down) the appearance waits in memory and is written
//! before the next one, up to [`BACKLOG`] of them (past that the oldest is dropped, and
//! said); any other failure leaves the appearance out of searches, nothing else affected.
//!
//! Erasure ([`crate::gallery::erasure`]): each write asks the erasure register first. An
//! appearance decided as a person erased since (a track that ended during or after the
//! erasure, or waited in the mailbox or the backlog meanwhile) is kept as unknown, naming
//! nobody, or not kept at all when the erasure took the person's appearances too.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use crate::gallery::erasure::Erasures;
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
    erasures: Arc<Erasures>,
    /// Encoded appearances waiting for the store to be reachable again, oldest first.
    backlog: VecDeque<Appearance>,
}

impl HistoryKeeper {
    pub(super) fn new(history: Arc<History>, erasures: Arc<Erasures>) -> HistoryKeeper {
        HistoryKeeper {
            history,
            erasures,
            backlog: VecDeque::new(),
        }
    }

    /// Write the backlog, then `appearance`; what cannot be written for want of the store
    /// stays in the backlog.
    fn write(&mut self, appearance: Appearance) {
        self.backlog.push_back(appearance);
        while let Some(next) = self.backlog.front_mut() {
            let (track, camera) = (next.track_id, next.camera.clone());
            if let Some(erased) = next.identity.and_then(|i| self.erasures.get(i)) {
                if erased {
                    tracing::info!(track = %track, camera = %camera, "appearance not kept: its person was erased with their appearances");
                    self.backlog.pop_front();
                    continue;
                }
                // the recognition event (which named them) is not linked either
                next.identity = None;
                next.similarity = None;
                next.event_id = None;
            }
            let next = &*next;
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
