//! The retention timer: kept biometric data (unknown tracks for review, appearances,
//! event snapshots) expires on schedule also when nothing new arrives (a quiet night, a
//! camera down).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::history::History;
use crate::review::{ReviewConfig, ReviewStore};
use crate::shutdown::Shutdown;

/// How often retention runs while the service is up.
pub const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// What retention applies to; each part is `None` when it is off.
#[derive(Default)]
pub struct Retention {
    /// The review store with `review.retention_s` and `review.max_tracks`.
    pub review: Option<(Arc<ReviewStore>, ReviewConfig)>,
    /// The history with its own `history.retention_s`.
    pub history: Option<Arc<History>>,
    /// The snapshot folder with `events.snapshots.retention_s`.
    pub snapshots: Option<(PathBuf, Duration)>,
}

/// Apply each part's retention every [`RETENTION_EVERY`] on a thread of its own, until
/// `shutdown`. Nothing to keep: no thread.
pub fn keep_retention(retention: Retention, shutdown: Shutdown) {
    let Retention {
        review,
        history,
        snapshots,
    } = retention;
    if review.is_none() && snapshots.is_none() && history.is_none() {
        return;
    }
    let _ = crate::tasks::thread("retention", &shutdown.clone(), move || loop {
        if let Some((store, rc)) = &review {
            match store.prune(chrono::Utc::now(), rc.retention_s, rc.max_tracks) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(tracks = n, "review: tracks past review.retention_s deleted");
                    if let Ok(count) = store.count() {
                        crate::telemetry::metrics().review_tracks.set(count as i64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "review: applying retention"),
            }
        }
        if let Some(h) = &history {
            match h.prune(chrono::Utc::now()) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        appearances = n,
                        "history: appearances past history.retention_s deleted"
                    );
                    crate::telemetry::metrics()
                        .history_appearances
                        .set(h.len() as i64);
                }
                Err(e) => tracing::warn!(error = %e, "history: applying retention"),
            }
        }
        if let Some((dir, retention)) = &snapshots {
            match crate::pipeline::prune_snapshots(dir, *retention) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    snapshots = n,
                    "event snapshots past events.snapshots.retention_s deleted"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "pruning old snapshots")
                }
            }
        }
        let next = std::time::Instant::now() + RETENTION_EVERY;
        while std::time::Instant::now() < next {
            if shutdown.is_requested() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}
