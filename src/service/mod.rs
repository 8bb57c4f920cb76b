//! The service's own long-running parts, which `facestream serve` composes (the binary
//! keeps only the order of start and stop): opening the gallery of record and following
//! changes made elsewhere, erasure beyond the gallery (events, snapshots, appearances) and
//! its replay at start, the appearance history and its feed from other nodes, and the
//! retention timer.
//!
//! Each part is handed its own config sections, never the whole `Config`, so a test of
//! the library reaches it as the binary does.

mod erasure;
mod gallery;
mod history;
mod retention;

pub use erasure::{forget_erased_identities, replay_erasures};
pub use gallery::{open_gallery, watch_gallery};
pub use history::{follow_history, open_history};
pub use retention::{keep_retention, Retention, RETENTION_EVERY};

/// A follower's reachability, said once per outage (a warning when it starts, a line
/// when it ends) rather than every round.
#[derive(Default)]
struct Outage {
    failing: bool,
}

impl Outage {
    /// Record one round's outcome: `what` names the round in the warning, `back` is said
    /// when a failing follower succeeds again.
    fn round<T, E: std::fmt::Display>(&mut self, outcome: &Result<T, E>, what: &str, back: &str) {
        match outcome {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("{back}");
            }
            Ok(_) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "{what}");
            }
            Err(_) => {}
        }
    }
}

/// Errors from starting the service's parts, each naming what was being opened; the
/// cause is the error's source (printed after it by `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("opening gallery {path}")]
    Gallery {
        path: String,
        #[source]
        source: crate::gallery::GalleryError,
    },
    #[error("opening the PostgreSQL gallery at {target}")]
    PostgresGallery {
        /// The connection string, credentials redacted.
        target: String,
        #[source]
        source: crate::gallery::GalleryError,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    GalleryService(#[from] crate::gallery::service::ServiceError),
    #[error("{what}")]
    History {
        what: String,
        #[source]
        source: crate::history::HistoryError,
    },
    #[error("the erasure log's position in the outbox")]
    Outbox(#[from] crate::events::outbox::OutboxError),
    #[error("the erasure log's head in the gallery")]
    ErasureHead(#[source] crate::gallery::GalleryError),
}

#[cfg(test)]
mod tests {
    use super::Outage;

    #[test]
    fn an_outage_is_said_when_it_starts_and_when_it_ends() {
        let mut outage = Outage::default();
        let ok: Result<(), &str> = Ok(());
        let down: Result<(), &str> = Err("unreachable");
        outage.round(&ok, "following", "back");
        assert!(!outage.failing);
        outage.round(&down, "following", "back");
        assert!(outage.failing);
        outage.round(&down, "following", "back");
        assert!(outage.failing, "a second failed round is the same outage");
        outage.round(&ok, "following", "back");
        assert!(!outage.failing);
    }
}
