//! Keeps every decided track as an appearance (`history.enabled`): a stage on its own
//! thread, since encoding the best shot and the durable write are slow next to tracking.
//! A write that fails is counted (`facestream_history_errors_total`) and logged; the
//! appearance is then missing from searches, and nothing else is affected.

use std::sync::Arc;

use actix::prelude::*;

use crate::history::{Appearance, History};
use crate::stages::align::AlignedFace;
use crate::telemetry::metrics;

/// An ended, decided track and its best aligned face (not yet encoded).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Record {
    pub appearance: Appearance,
    pub best: Option<AlignedFace>,
}

pub(super) struct HistoryKeeper {
    history: Arc<History>,
}

impl HistoryKeeper {
    pub(super) fn new(history: Arc<History>) -> HistoryKeeper {
        HistoryKeeper { history }
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
        let (track, camera) = (appearance.track_id, appearance.camera.clone());
        match self.history.record(&appearance) {
            Ok(()) => {
                metrics().history_appearances.set(self.history.len() as i64);
            }
            Err(e) => {
                metrics().history_errors.inc();
                tracing::error!(track = %track, camera = %camera, error = %e, "appearance not kept in the history");
            }
        }
    }
}
