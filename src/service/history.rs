//! The appearance history's store (this machine's SQLite, or the gallery's PostgreSQL
//! database when the gallery is shared) and the feed of what other nodes record.

use std::sync::Arc;

use super::ServiceError;
use crate::gallery::service::GalleryService;
use crate::gallery::{GalleryConfig, StoreKind};
use crate::history::{AppearanceStore, History, HistoryConfig, PgHistory, SqliteHistory};
use crate::shutdown::Shutdown;

/// The appearance history of `history.enabled`: in the gallery's PostgreSQL database
/// when the gallery is shared (every node writes there; each follows the others), else in
/// `history.database` on this machine. `node` is this node's id (`cluster.node_id`).
pub fn open_history(
    config: &HistoryConfig,
    gallery: &GalleryConfig,
    service: &GalleryService,
    node: &str,
) -> Result<History, ServiceError> {
    let store: Box<dyn AppearanceStore> = match gallery.store {
        StoreKind::Postgres => {
            Box::new(PgHistory::open(&gallery.postgres_url).map_err(|source| {
                ServiceError::History {
                    what: "opening the appearance history in the gallery's PostgreSQL database"
                        .into(),
                    source,
                }
            })?)
        }
        _ => Box::new(SqliteHistory::open(&config.database).map_err(|source| {
            ServiceError::History {
                what: format!(
                    "opening the appearance history {}",
                    config.database.display()
                ),
                source,
            }
        })?),
    };
    History::with_store(store, config, service.model(), service.dim(), node).map_err(|source| {
        ServiceError::History {
            what: "loading the appearance history".into(),
            source,
        }
    })
}

/// A shared history: follow the appearances the other nodes record (and their deletions)
/// into this node's index, every second until `shutdown`.
pub fn follow_history(history: &Arc<History>, shutdown: Shutdown) {
    if !history.is_shared() {
        return;
    }
    let weak = Arc::downgrade(history);
    let _ = crate::tasks::thread("history-feed", &shutdown.clone(), move || {
        let mut outage = super::Outage::default();
        while !shutdown.is_requested() {
            let Some(history) = weak.upgrade() else {
                return;
            };
            outage.round(
                &history.follow(),
                "following the appearances other nodes record",
                "appearance history reachable again; changes followed",
            );
            drop(history);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
}
