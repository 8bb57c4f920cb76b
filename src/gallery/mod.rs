//! The gallery: enrolled identities and their face templates, and 1:N search over them.
//!
//! Sits after embedding: the match stage asks the [`index::SearchIndex`] for the nearest
//! identities of a probe embedding. Identities and templates live in a [`GalleryStore`]
//! (SQLite by default, [`sqlite::SqliteStore`]); the index is an in-memory copy of the
//! templates of **one** model, rebuilt from the store at start-up and updated on every
//! change, so templates of different models are never compared.
//!
//! Writes go to the store first and to the index only once the store has committed, so a
//! crash never leaves the index ahead of durable state.
//!
//! Several nodes share one gallery of record in PostgreSQL ([`postgres::PostgresStore`],
//! `gallery.store = "postgres"`): each keeps its own index and follows the store's change
//! feed ([`GalleryStore::changes_since`]), so search stays local and keeps running while
//! the database is away.

pub mod erasure;
pub mod index;
pub mod postgres;
pub mod service;
pub mod sqlite;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Gallery settings (section `[gallery]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GalleryConfig {
    /// Where identities and templates live: `sqlite` (one file, one machine) or
    /// `postgres` (the gallery of record shared by several nodes).
    pub store: StoreKind,
    /// SQLite database file (WAL mode). Relative paths are from the working directory.
    pub database: String,
    /// `gallery.store = "postgres"`: the connection URL
    /// (`postgresql://user:password@host:port/dbname`).
    pub postgres_url: String,
    /// Keep the aligned 112×112 crop of each enrolled face so a model change can re-embed
    /// without the original photos. Off by default: a crop is biometric data.
    pub keep_crops: bool,
    /// Candidates the int8 pre-selection passes to exact f32 re-ranking.
    pub rerank_candidates: usize,
    /// How an identity's templates make its score: `quality_mean` (the cosine to their
    /// quality-weighted mean) or `max` (to the closest one); see [`index::Pooling`].
    pub pooling: index::Pooling,
    /// Enrolment refuses a face whose quality score is under this (0: accept every face;
    /// a low-quality face then counts less through `pooling`).
    pub min_enroll_quality: f32,
}

/// The kind of [`GalleryStore`] (`gallery.store`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Postgres,
}

impl GalleryConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        match self.store {
            StoreKind::Sqlite if self.database.is_empty() => {
                problems.push("gallery.database must not be empty".into());
            }
            StoreKind::Postgres => match self.postgres_url.parse::<::postgres::Config>() {
                Err(e) => problems.push(format!(
                    "gallery.postgres_url is not a PostgreSQL connection URL ({e}); \
                         expected postgresql://user:password@host:port/dbname"
                )),
                Ok(c) if c.get_ssl_mode() == ::postgres::config::SslMode::Require => problems.push(
                    "gallery.postgres_url asks for sslmode=require: this build talks \
                             to PostgreSQL without TLS (keep it on a private network, or \
                             tunnel it)"
                        .into(),
                ),
                Ok(_) => {}
            },
            StoreKind::Sqlite => {}
        }
        crate::validate::within(
            problems,
            "gallery.min_enroll_quality",
            self.min_enroll_quality,
            0.0..=1.0,
        );
        crate::validate::within(
            problems,
            "gallery.rerank_candidates",
            self.rerank_candidates,
            1..=100_000,
        );
    }
}

/// Errors at the gallery boundary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GalleryError {
    #[error("identity {0} not found")]
    IdentityNotFound(Uuid),
    #[error("face {0} not found")]
    FaceNotFound(Uuid),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("embedding has {got} dimensions, the gallery's model {model} has {expected}")]
    Dimension {
        model: String,
        expected: usize,
        got: usize,
    },
    #[error("gallery storage failed: {0}")]
    Storage(String),
    /// The store cannot be reached now (a shared database down or cut off); reads and
    /// writes of the store fail, search on the node's index goes on.
    #[error("{0}")]
    Unavailable(String),
}

/// A person who can be recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub id: Uuid,
    pub name: String,
    /// Free-form JSON object (employee number, watch-list reason, …).
    pub metadata: serde_json::Value,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Number of templates, filled by reads that join them.
    pub faces: usize,
}

/// One enrolled face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: Uuid,
    pub identity_id: Uuid,
    /// `model@version` the embedding was made with.
    pub model: String,
    #[serde(skip)]
    pub embedding: Vec<f32>,
    pub quality: f32,
    /// Where the photo came from (file name, upload, camera).
    pub source: String,
    pub created: DateTime<Utc>,
    /// The aligned crop (RGB 112×112), only when `gallery.keep_crops` is on.
    #[serde(skip)]
    pub crop: Option<Vec<u8>>,
}

/// New identity fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIdentity {
    pub name: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Changes to an identity; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityUpdate {
    pub name: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// Identities whose templates were made with another model than the current one.
#[derive(Debug, Clone, Serialize)]
pub struct StaleIdentity {
    pub id: Uuid,
    pub name: String,
    /// Models their templates were made with.
    pub models: Vec<String>,
    /// Whether every stale template kept its crop (so it can be re-embedded).
    pub crops_kept: bool,
}

/// Persistent identities and templates. Implementations must be safe to share between
/// threads; every method is one transaction.
pub trait GalleryStore: Send + Sync {
    fn create_identity(&self, new: NewIdentity) -> Result<Identity, GalleryError>;
    fn list_identities(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Identity>, usize), GalleryError>;
    fn get_identity(&self, id: Uuid) -> Result<Identity, GalleryError>;
    fn update_identity(&self, id: Uuid, update: IdentityUpdate) -> Result<Identity, GalleryError>;
    /// Delete the identity and every template of it, and write the erasure to the
    /// erasure log ([`erasure`]) in the same transaction (`appearances`: their
    /// appearances go too); returns the number of templates removed.
    fn delete_identity(&self, id: Uuid, appearances: bool) -> Result<usize, GalleryError>;
    /// The erasure log after position `after`, oldest first, at most `limit`.
    fn erasures_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<erasure::Erasure>, GalleryError>;
    /// The erasure log's last position (0: empty).
    fn erasure_head(&self) -> Result<i64, GalleryError>;
    fn add_template(&self, template: &Template) -> Result<(), GalleryError>;
    /// Add every template or none (one transaction).
    fn add_templates(&self, templates: &[Template]) -> Result<(), GalleryError>;
    fn list_templates(&self, identity: Uuid) -> Result<Vec<Template>, GalleryError>;
    fn delete_template(&self, identity: Uuid, face: Uuid) -> Result<(), GalleryError>;
    /// Every template of `model` with its embedding (to build the search index).
    fn templates_for_model(&self, model: &str) -> Result<Vec<Template>, GalleryError>;
    /// Identities with templates of other models than `model`.
    fn stale_identities(&self, model: &str) -> Result<Vec<StaleIdentity>, GalleryError>;
    /// Identity names by id, for search results.
    fn names(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, GalleryError>;
    /// A value that changes when **another** writer (another process, e.g.
    /// `facestream enroll` while `serve` runs) committed to the store since the last
    /// call; `None` for stores that cannot tell (their index is then only what this
    /// process wrote).
    fn external_version(&self) -> Result<Option<i64>, GalleryError> {
        Ok(None)
    }
    /// Stores shared by several nodes: the templates of `model` and the position of the
    /// change feed they are current to, read in one snapshot. `None` for stores without a
    /// feed (the index then follows [`GalleryStore::external_version`]).
    fn snapshot(&self, _model: &str) -> Result<Option<(Vec<Template>, i64)>, GalleryError> {
        Ok(None)
    }
    /// The changes committed after position `after`, oldest first (at most `limit`), as
    /// they apply to an index of `model`. [`Changes::Gap`] when the feed no longer holds
    /// them all (pruned): the index must be rebuilt from a [`GalleryStore::snapshot`].
    fn changes_since(
        &self,
        _after: i64,
        _model: &str,
        _limit: usize,
    ) -> Result<Changes, GalleryError> {
        Ok(Changes::Gap)
    }
    /// Block until the store announces a change or `timeout` passes (stores without
    /// announcements just wait).
    fn wait_for_change(&self, timeout: std::time::Duration) {
        std::thread::sleep(timeout);
    }
}

/// What a change in the feed does to a node's index.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A template of the index's model was added (absent when it is already gone again,
    /// or of another model: nothing to index).
    TemplateAdded(Option<Template>),
    TemplateRemoved(Uuid),
    IdentityRemoved(Uuid),
    /// Created or renamed: its name as of the read.
    IdentityNamed(Uuid),
}

/// The answer of [`GalleryStore::changes_since`].
#[derive(Debug, Clone, PartialEq)]
pub enum Changes {
    /// Changes with their feed positions, oldest first.
    Since(Vec<(i64, Change)>),
    /// The feed was pruned past the position asked for.
    Gap,
}

impl NewIdentity {
    /// The identity to store: name and metadata checked, a new id, created now, no faces.
    pub fn into_identity(self) -> Result<Identity, GalleryError> {
        let now = chrono::Utc::now();
        Ok(Identity {
            id: Uuid::now_v7(),
            name: validate_name(&self.name)?,
            metadata: validate_metadata(self.metadata)?,
            created: now,
            updated: now,
            faces: 0,
        })
    }
}

/// Check a display name: non-empty after trimming, at most 200 characters.
pub fn validate_name(name: &str) -> Result<String, GalleryError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(GalleryError::Invalid {
            field: "name",
            message: "must not be empty".into(),
        });
    }
    if trimmed.chars().count() > 200 {
        return Err(GalleryError::Invalid {
            field: "name",
            message: format!(
                "is {} characters, the limit is 200",
                trimmed.chars().count()
            ),
        });
    }
    Ok(trimmed.to_string())
}

/// Check metadata: a JSON object of at most 16 KiB.
pub fn validate_metadata(
    metadata: Option<serde_json::Value>,
) -> Result<serde_json::Value, GalleryError> {
    let value = metadata.unwrap_or_else(|| serde_json::json!({}));
    if !value.is_object() {
        return Err(GalleryError::Invalid {
            field: "metadata",
            message: "must be a JSON object".into(),
        });
    }
    let size = value.to_string().len();
    if size > 16 * 1024 {
        return Err(GalleryError::Invalid {
            field: "metadata",
            message: format!("is {size} bytes, the limit is 16384"),
        });
    }
    Ok(value)
}
