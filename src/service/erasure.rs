//! Erasure beyond the gallery: what this node holds that names an erased person (outbox
//! rows, recent events, snapshots, appearances), applied for every erasure of the log —
//! made here, on another node, or while this node was down.

use std::path::PathBuf;
use std::sync::Arc;

use super::ServiceError;
use crate::events::bus::EventBus;
use crate::events::outbox::Outbox;
use crate::gallery::erasure::ErasureCursor;
use crate::gallery::service::GalleryService;
use crate::history::History;

/// For each erasure of the log, the events this node holds that name the person lose the
/// identity or go (outbox rows and the recent events of `/v1/events/recent` and stream
/// replays), its event snapshots in `snapshots` are deleted, and the appearances
/// recognised as the person are unlinked (kept as unknown) or, when the erasure took the
/// appearances too, deleted. Every step is idempotent: a failed one fails the hook and
/// the erasure is applied again at the next round.
pub fn forget_erased_identities(
    service: &Arc<GalleryService>,
    events: &EventBus,
    history: Option<Arc<History>>,
    snapshots: Option<PathBuf>,
) {
    let events = events.clone();
    service.on_erasure(move |erasure| {
        let identity = erasure.identity;
        let scrubbed = events
            .forget_identity(identity)
            .map_err(|e| format!("scrubbing the events naming it: {e}"))?;
        let deleted = match &snapshots {
            Some(dir) => crate::pipeline::forget_snapshots(dir, identity, &scrubbed)
                .map_err(|e| format!("deleting its snapshots in {}: {e}", dir.display()))?,
            None => 0,
        };
        let (unlinked, erased) = match &history {
            Some(h) if erasure.appearances => (
                0,
                h.erase_recognised(identity)
                    .map_err(|e| format!("erasing its appearances: {e}"))?,
            ),
            Some(h) => (
                h.unlink(identity)
                    .map_err(|e| format!("unlinking its appearances: {e}"))?,
                0,
            ),
            None => (0, 0),
        };
        tracing::info!(
            %identity,
            seq = erasure.seq,
            events = scrubbed.len(),
            snapshots = deleted,
            appearances_unlinked = unlinked,
            appearances_erased = erased,
            "erasure applied on this node: no event, snapshot or appearance kept here names the person"
        );
        Ok(())
    });
}

/// How far this node applied the erasure log, kept in its outbox database (the node's own
/// durable state: a restart replays only the erasures it missed).
struct OutboxCursor(Arc<Outbox>);

impl ErasureCursor for OutboxCursor {
    fn position(&self) -> Result<i64, String> {
        Ok(self
            .0
            .erasure_position()
            .map_err(|e| e.to_string())?
            .unwrap_or(0))
    }

    fn advance(&self, seq: i64) -> Result<(), String> {
        self.0.set_erasure_position(seq).map_err(|e| e.to_string())
    }
}

/// Apply the erasure log on this node before it serves: the erasures made while it was
/// down (or since its change feed was pruned). A new outbox starts at the log's head: a
/// node with no outbox of its own holds no event of anyone.
pub fn replay_erasures(service: &GalleryService, outbox: &Arc<Outbox>) -> Result<(), ServiceError> {
    if outbox.erasure_position()?.is_none() {
        let head = service
            .store()
            .erasure_head()
            .map_err(ServiceError::ErasureHead)?;
        outbox.set_erasure_position(head)?;
    }
    service.set_erasure_cursor(Box::new(OutboxCursor(outbox.clone())));
    match service.follow_erasures() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            erasures = n,
            "erasures made while this node was down applied before serving"
        ),
        // the gallery watcher tries again every round
        Err(e) => {
            tracing::error!(error = %e, "erasures made while this node was down: not all applied yet")
        }
    }
    Ok(())
}
