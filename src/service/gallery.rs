//! The gallery of record (SQLite on this machine, or PostgreSQL shared by several nodes),
//! the service built on it, and the follower of changes made elsewhere.

use std::path::Path;
use std::sync::Arc;

use super::ServiceError;
use crate::engine::{EngineSetup, FaceEngine};
use crate::gallery::postgres::PostgresStore;
use crate::gallery::service::GalleryService;
use crate::gallery::sqlite::SqliteStore;
use crate::gallery::{GalleryConfig, GalleryStore, StoreKind};
use crate::shutdown::Shutdown;
use crate::stages::matching::MatchConfig;

/// Open the store of `gallery.store` and build the gallery service on the engine
/// start-up resolved (`serve`, `enroll` and `reembed` alike).
pub fn open_gallery(
    gallery: &GalleryConfig,
    matching: &MatchConfig,
    verify_threshold: f32,
    setup: &EngineSetup,
) -> Result<GalleryService, ServiceError> {
    let engine = FaceEngine::new(setup)?;
    let store: Arc<dyn GalleryStore> = match gallery.store {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(Path::new(&gallery.database)).map_err(
            |source| ServiceError::Gallery {
                path: gallery.database.clone(),
                source,
            },
        )?),
        StoreKind::Postgres => {
            let store = PostgresStore::open(&gallery.postgres_url).map_err(|source| {
                ServiceError::PostgresGallery {
                    target: crate::redact::secrets(&gallery.postgres_url),
                    source,
                }
            })?;
            tracing::info!(database = store.target(), "gallery of record in PostgreSQL");
            Arc::new(store)
        }
    };
    Ok(GalleryService::new(
        store,
        engine,
        matching.clone(),
        gallery.clone(),
        verify_threshold,
    )?)
}

/// Pick up gallery changes made elsewhere (another node, `facestream enroll`, an erasure
/// while the service runs) as soon as the store announces them and at least every
/// second, until `shutdown` is requested.
pub fn watch_gallery(service: &Arc<GalleryService>, shutdown: Shutdown) {
    let weak = Arc::downgrade(service);
    let _ = crate::tasks::thread("gallery-watch", &shutdown.clone(), move || {
        let mut outage = super::Outage::default();
        loop {
            let Some(service) = weak.upgrade().filter(|_| !shutdown.is_requested()) else {
                return;
            };
            service.wait_for_change(std::time::Duration::from_secs(1));
            let refreshed = service.refresh_if_changed();
            // erasures made elsewhere (a failed hook says so itself; an unreachable store
            // is said by the refresh)
            if refreshed.is_ok() {
                let _ = service.follow_erasures();
            }
            outage.round(
                &refreshed,
                "following gallery changes made elsewhere",
                "gallery store reachable again; changes followed",
            );
        }
    });
}
