//! Appearance history: "where was this person seen?"
//!
//! With `history.enabled = true`, every decided track — recognised or unknown — is kept
//! when it ends as an *appearance*: camera, node, first and last seen, the track's
//! quality-pooled template, its best shot (the aligned 112×112 face as JPEG), the id of
//! its identity event and the decision (the identity, or none). Appearances stay
//! `history.retention_s` (7 days by default, applied on the service's retention timer)
//! in an owner-only SQLite file of their own (`history.database`).
//!
//! **Search** ([`History::search`]) takes a probe template — a photo's face, an enrolled
//! identity's pooled templates, or a kept appearance's — and returns the appearances at or
//! above a cosine bar (by default `match.threshold`), newest first or most similar first,
//! filtered by camera and time window. It is exact: the int8 rows in memory
//! ([`index::AppearanceIndex`], 128 bytes an appearance) find the candidates, and each is
//! re-ranked with its f32 template from the store. A time window scans only its slice.
//!
//! **Retroactive recognition** ([`History::seen_before`]): when a face is enrolled, the
//! unknown appearances it matches say the person was already seen, and where.
//!
//! **Off by default**: it keeps biometric data of people who never consented
//! (docs/privacy.md). Every search is written to an audit table with the API key's name.

pub mod index;
pub mod postgres;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vectors::{kernels, pooled_template};
use index::{AppearanceIndex, Filter};
pub use postgres::PgHistory;
pub use store::SqliteHistory;

/// History settings (section `[history]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep every decided track as a searchable appearance. Off by default: biometric
    /// data of everyone who passed a camera, enrolled or not.
    pub enabled: bool,
    /// SQLite file of the appearances (created owner-only, like the gallery).
    pub database: PathBuf,
    /// An appearance is deleted this long after it was last seen.
    pub retention_s: u64,
    /// Appearances kept in memory while the store cannot be reached (each about 5–6 KB:
    /// the template and the best shot); past that the oldest waiting one is dropped,
    /// counted in `facestream_history_dropped_total`.
    pub backlog: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: false,
            database: PathBuf::from("data/history.db"),
            retention_s: 7 * 86_400,
            backlog: 10_000,
        }
    }
}

impl HistoryConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.database.as_os_str().is_empty() {
            problems.push("history.database must not be empty".into());
        }
        crate::validate::within(
            problems,
            "history.retention_s",
            self.retention_s,
            3600..=366 * 86_400,
        );
        crate::validate::within_note(
            problems,
            "history.backlog",
            self.backlog,
            1..=1_000_000,
            "appearances (each about 6 KB in memory)",
        );
    }
}

/// Errors of the appearance history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Storage(String),
    #[error("appearance {0} not found")]
    NotFound(Uuid),
    #[error("the probe has {got} dimensions; the appearances' model has {expected}")]
    Dimensions { got: usize, expected: usize },
    /// The shared store (PostgreSQL) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// One decided track, as kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Appearance {
    pub track_id: Uuid,
    pub camera: String,
    /// The node that watched the camera (`cluster.node_id`).
    pub node: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `model@version` of the template.
    pub model: String,
    #[serde(skip)]
    pub template: Vec<f32>,
    /// The track's best quality score.
    pub quality: f32,
    /// The track's identity event (`identity.recognized` or `identity.unknown`).
    pub event_id: Option<Uuid>,
    /// The identity it was recognised as; none for unknown (or since erased).
    pub identity: Option<Uuid>,
    /// Its similarity to that identity (or to the nearest, when unknown), at the time.
    pub similarity: Option<f32>,
    /// Best shot: the aligned face as JPEG.
    #[serde(skip)]
    pub shot: Option<Vec<u8>>,
    /// When it was in view, in order: one span per track of the appearance (the person
    /// turned away, passed behind something, left the frame and came back in between);
    /// empty means the one span `first_seen`..`last_seen`.
    pub spans: Vec<Span>,
}

/// A stretch of time an appearance was in view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Appearance {
    /// Its spans as stored: `[[first_ms, last_ms], …]` in JSON, none when it is one span.
    pub fn spans_column(&self) -> Option<String> {
        (self.spans.len() > 1).then(|| {
            let ms: Vec<[i64; 2]> = self
                .spans
                .iter()
                .map(|s| {
                    [
                        s.first_seen.timestamp_millis(),
                        s.last_seen.timestamp_millis(),
                    ]
                })
                .collect();
            serde_json::to_string(&ms).expect("integers serialise")
        })
    }

    /// Its spans: as stored, or the one span `first_seen`..`last_seen`.
    pub fn spans_from_column(
        column: Option<&str>,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Vec<Span> {
        let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        column
            .and_then(|c| serde_json::from_str::<Vec<[i64; 2]>>(c).ok())
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.into_iter()
                    .map(|[a, b]| Span {
                        first_seen: time(a),
                        last_seen: time(b),
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![Span {
                    first_seen: first,
                    last_seen: last,
                }]
            })
    }
}

/// An appearance read back, with its row number.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: i64,
    pub appearance: Appearance,
    pub has_shot: bool,
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Found {
    pub stored: Stored,
    /// Exact cosine to the probe.
    pub similarity: f32,
}

/// Result order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most recently seen first.
    #[default]
    Newest,
    /// Most similar first.
    Similarity,
}

/// What a search returns.
#[derive(Debug, Clone)]
pub struct Query {
    pub camera: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub min_similarity: f32,
    pub limit: usize,
    pub order: Order,
    /// Only appearances decided unknown.
    pub only_unknown: bool,
}

/// The results of a search: at most `limit`, and whether more reached the bar.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub items: Vec<Found>,
    pub more: bool,
    /// Appearances the time window let the scan look at.
    pub scanned: usize,
}

/// One search, as audited.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The node that served the search.
    pub node: String,
    /// The API key's name.
    pub key: String,
    /// `photo`, `identity`, `track`, `appearances`, `delete`, `erase`.
    pub kind: String,
    /// What was searched for (an id, the filters), never a face.
    pub detail: String,
    pub results: usize,
}

/// One change of a shared store's feed, at its position.
#[derive(Debug, Clone)]
pub enum HistoryChange {
    Added(i64, Box<Stored>),
    /// (position, row number, first seen in ms)
    Removed(i64, i64, i64),
    Unlinked(i64, i64, i64),
    /// An addition whose row was deleted since (its removal follows).
    Skip(i64),
}

impl HistoryChange {
    fn position(&self) -> i64 {
        match self {
            HistoryChange::Added(p, _)
            | HistoryChange::Removed(p, ..)
            | HistoryChange::Unlinked(p, ..)
            | HistoryChange::Skip(p) => *p,
        }
    }
}

/// Where appearances are kept: an SQLite file of this machine ([`SqliteHistory`]), or the
/// PostgreSQL database a cluster shares ([`PgHistory`]), which also has a change feed the
/// nodes' indexes follow.
pub trait AppearanceStore: Send + Sync {
    /// Keep `a`: its row number, and that of the row it replaced (the same track).
    fn insert(&self, a: &Appearance) -> Result<(i64, Option<i64>), HistoryError>;
    /// Many appearances in one transaction (benchmarks, imports); their row numbers.
    fn insert_many(&self, all: &[Appearance]) -> Result<Vec<i64>, HistoryError>;
    /// Every appearance of `model`, in order of `first_seen`, one by one.
    fn for_each(&self, model: &str, f: &mut (dyn FnMut(Stored) + Send))
        -> Result<(), HistoryError>;
    /// The rows numbered `seqs` that are still there, in no particular order.
    fn get_many(&self, seqs: &[i64]) -> Result<Vec<Stored>, HistoryError>;
    fn get(&self, track: Uuid) -> Result<Stored, HistoryError>;
    /// The best shot (JPEG) of an appearance.
    fn shot(&self, track: Uuid) -> Result<Option<Vec<u8>>, HistoryError>;
    /// The appearances recognised as `identity`, in order of `first_seen`.
    fn recognised_as(&self, identity: Uuid) -> Result<Vec<Stored>, HistoryError>;
    /// Forget that appearances were `identity` (erased); their row numbers.
    fn unlink(&self, identity: Uuid) -> Result<Vec<i64>, HistoryError>;
    /// Delete the rows numbered `seqs`; how many went.
    fn delete(&self, seqs: &[i64]) -> Result<usize, HistoryError>;
    /// Delete the appearances last seen before `cutoff`; their row numbers.
    fn delete_older(&self, cutoff: DateTime<Utc>) -> Result<Vec<i64>, HistoryError>;
    fn count(&self) -> Result<usize, HistoryError>;
    fn audit(&self, entry: &AuditEntry) -> Result<(), HistoryError>;
    /// The latest `limit` audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, HistoryError>;
    /// Shared stores: the feed's position now (read before the rows the index is built
    /// from). `None`: no feed, only this process writes.
    fn feed_head(&self) -> Result<Option<i64>, HistoryError> {
        Ok(None)
    }
    /// The feed's changes after `after`, at most `limit`; `None` when the feed was pruned
    /// past `after` (the index is then rebuilt).
    fn changes_since(
        &self,
        _after: i64,
        _limit: usize,
    ) -> Result<Option<Vec<HistoryChange>>, HistoryError> {
        Ok(Some(Vec::new()))
    }
}

/// Feed changes read at once.
const FEED_BATCH: usize = 10_000;

/// Re-ranked in batches of this many rows read from the store.
const RERANK_BATCH: usize = 256;

/// The appearance history: the store and its index for the current model.
pub struct History {
    store: Box<dyn AppearanceStore>,
    index: RwLock<AppearanceIndex>,
    model: String,
    config: HistoryConfig,
    /// This node's id, in the audit.
    node: String,
    /// How far the index follows a shared store's feed (none: not shared).
    position: std::sync::Mutex<Option<i64>>,
}

impl History {
    /// Open the SQLite store of `config` and index its appearances of `model` (`dim`
    /// dimensions).
    pub fn open(config: &HistoryConfig, model: &str, dim: usize) -> Result<History, HistoryError> {
        let store = SqliteHistory::open(&config.database)?;
        History::with_store(Box::new(store), config, model, dim, "")
    }

    /// Index the appearances of `model` already in `store`; `node` names this node in
    /// the audit.
    pub fn with_store(
        store: Box<dyn AppearanceStore>,
        config: &HistoryConfig,
        model: &str,
        dim: usize,
        node: &str,
    ) -> Result<History, HistoryError> {
        let (index, head) = build_index(store.as_ref(), model, dim)?;
        Ok(History {
            store,
            index: RwLock::new(index),
            model: model.to_string(),
            config: config.clone(),
            node: node.to_string(),
            position: std::sync::Mutex::new(head),
        })
    }

    /// Shared stores: apply the changes other nodes (and this one) made since the last
    /// call, rebuilding the index when the feed was pruned past it; how many changes were
    /// applied. Called every second by `serve`.
    pub fn follow(&self) -> Result<usize, HistoryError> {
        let mut position = self.position.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut at) = *position else {
            return Ok(0);
        };
        let mut applied = 0;
        loop {
            let Some(changes) = self.store.changes_since(at, FEED_BATCH)? else {
                let dim = self.index().dim();
                let (index, head) = build_index(self.store.as_ref(), &self.model, dim)?;
                *self.index_mut() = index;
                *position = head;
                tracing::warn!("appearance history: the feed was pruned past this node's position; index rebuilt");
                return Ok(applied);
            };
            let n = changes.len();
            {
                let mut index = self.index_mut();
                for change in changes {
                    at = change.position();
                    match change {
                        HistoryChange::Added(_, s) if s.appearance.model == self.model => {
                            add(&mut index, s.seq, &s.appearance);
                        }
                        HistoryChange::Removed(_, seq, first_ms) => {
                            index.remove_one(seq, first_ms);
                        }
                        HistoryChange::Unlinked(_, seq, first_ms) => {
                            index.set_unknown_one(seq, first_ms);
                        }
                        _ => {}
                    }
                }
            }
            applied += n;
            *position = Some(at);
            if n < FEED_BATCH {
                return Ok(applied);
            }
        }
    }

    /// Whether the store is shared with other nodes (it has a feed to follow).
    pub fn is_shared(&self) -> bool {
        self.position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    pub fn store(&self) -> &dyn AppearanceStore {
        self.store.as_ref()
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, AppearanceIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, AppearanceIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appearances indexed (of the current model).
    pub fn len(&self) -> usize {
        self.index().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep an appearance: stored, then searchable (when of the current model).
    pub fn record(&self, a: &Appearance) -> Result<(), HistoryError> {
        let (seq, replaced) = self.store.insert(a)?;
        let mut index = self.index_mut();
        if let Some(old) = replaced {
            index.remove_seq(old);
        }
        if a.model == self.model {
            add(&mut index, seq, a);
        }
        Ok(())
    }

    /// The appearances at or above `query.min_similarity` to `probe` (a unit vector),
    /// exact, in `query.order`, at most `query.limit`.
    pub fn search(&self, probe: &[f32], query: &Query) -> Result<Results, HistoryError> {
        let (mut candidates, scanned) = {
            let index = self.index();
            if probe.len() != index.dim() {
                return Err(HistoryError::Dimensions {
                    got: probe.len(),
                    expected: index.dim(),
                });
            }
            let filter = Filter {
                camera: query.camera.as_deref(),
                from_ms: query.from.map(|t| t.timestamp_millis()),
                to_ms: query.to.map(|t| t.timestamp_millis()),
                only_unknown: query.only_unknown,
            };
            (
                index.candidates(probe, &filter, query.min_similarity),
                index.scanned(&filter),
            )
        };
        match query.order {
            Order::Newest => {
                candidates.sort_by_key(|c| std::cmp::Reverse((c.row.last_ms, c.row.seq)))
            }
            Order::Similarity => candidates.sort_by(|a, b| b.approx.total_cmp(&a.approx)),
        }
        let dot = kernels::dot_f32_fn();
        let mut items: Vec<Found> = Vec::new();
        let mut more = false;
        'batches: for batch in candidates.chunks(RERANK_BATCH) {
            if query.order == Order::Similarity && items.len() >= query.limit {
                // exact scores are within SLACK of the int8 ones: a candidate whose int8
                // score is that far under the limit-th exact score cannot displace it
                let floor = items[query.limit - 1].similarity;
                if batch[0].approx + index::SLACK < floor {
                    more |= batch
                        .iter()
                        .any(|c| c.approx + index::SLACK >= query.min_similarity);
                    break;
                }
            }
            let seqs: Vec<i64> = batch.iter().map(|c| c.row.seq).collect();
            let mut rows: std::collections::HashMap<i64, Stored> = self
                .store
                .get_many(&seqs)?
                .into_iter()
                .map(|s| (s.seq, s))
                .collect();
            for c in batch {
                let Some(stored) = rows.remove(&c.row.seq) else {
                    continue; // deleted meanwhile
                };
                let similarity = dot(probe, &stored.appearance.template);
                if similarity < query.min_similarity {
                    continue;
                }
                if query.order == Order::Newest && items.len() == query.limit {
                    more = true;
                    break 'batches;
                }
                items.push(Found { stored, similarity });
            }
            if query.order == Order::Similarity {
                items.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
                if items.len() > query.limit {
                    items.truncate(query.limit);
                    more = true;
                }
            }
        }
        Ok(Results {
            items,
            more,
            scanned,
        })
    }

    /// The appearances of an enrolled identity: those recognised as it, and those its
    /// pooled templates (`(embedding, quality)`) match at `query.min_similarity` — an
    /// unknown appearance from before its enrolment included.
    pub fn appearances_of(
        &self,
        identity: Uuid,
        templates: &[(Vec<f32>, f32)],
        query: &Query,
    ) -> Result<Results, HistoryError> {
        let Some(probe) = pooled(templates) else {
            return Ok(Results::default());
        };
        let mut results = self.search(&probe, query)?;
        let have: HashSet<i64> = results.items.iter().map(|f| f.stored.seq).collect();
        let (from, to) = (
            query.from.unwrap_or(DateTime::<Utc>::MIN_UTC),
            query.to.unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        let dot = kernels::dot_f32_fn();
        for stored in self.store.recognised_as(identity)? {
            let a = &stored.appearance;
            if have.contains(&stored.seq)
                || query.camera.as_ref().is_some_and(|c| *c != a.camera)
                || a.last_seen < from
                || a.first_seen > to
                || a.model != self.model
            {
                continue;
            }
            let similarity = dot(&probe, &a.template);
            results.items.push(Found { stored, similarity });
        }
        match query.order {
            Order::Newest => results
                .items
                .sort_by_key(|f| std::cmp::Reverse((f.stored.appearance.last_seen, f.stored.seq))),
            Order::Similarity => results
                .items
                .sort_by(|a, b| b.similarity.total_cmp(&a.similarity)),
        }
        if results.items.len() > query.limit {
            results.items.truncate(query.limit);
            results.more = true;
        }
        Ok(results)
    }

    /// Unknown appearances that `template` (a face just enrolled) matches at `threshold`:
    /// the person was seen before being enrolled. Newest first, at most `limit`.
    pub fn seen_before(
        &self,
        template: &[f32],
        threshold: f32,
        limit: usize,
    ) -> Result<Results, HistoryError> {
        self.search(
            template,
            &Query {
                camera: None,
                from: None,
                to: None,
                min_similarity: threshold,
                limit,
                order: Order::Newest,
                only_unknown: true,
            },
        )
    }

    /// Delete one appearance by its track id.
    pub fn delete(&self, track: Uuid) -> Result<(), HistoryError> {
        let stored = self.store.get(track)?;
        self.store.delete(&[stored.seq])?;
        self.index_mut()
            .remove_one(stored.seq, stored.appearance.first_seen.timestamp_millis());
        Ok(())
    }

    /// An identity was erased: its appearances no longer name it (they stay, as unknown).
    pub fn unlink(&self, identity: Uuid) -> Result<usize, HistoryError> {
        let seqs: HashSet<i64> = self.store.unlink(identity)?.into_iter().collect();
        self.index_mut().set_unknown(&seqs);
        Ok(seqs.len())
    }

    /// An identity was erased with its appearances, on another node: delete those
    /// recognised as it (its templates are gone; the erasing node deleted those they
    /// matched). How many were deleted.
    pub fn erase_recognised(&self, identity: Uuid) -> Result<usize, HistoryError> {
        let rows: Vec<(i64, i64)> = self
            .store
            .recognised_as(identity)?
            .iter()
            .map(|s| (s.seq, s.appearance.first_seen.timestamp_millis()))
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let n = self.store.delete(&seqs)?;
        let mut index = self.index_mut();
        for (seq, first_ms) in rows {
            index.remove_one(seq, first_ms);
        }
        Ok(n)
    }

    /// Erase an identity's appearances: those recognised as it and those its templates
    /// match at `threshold`. How many were deleted.
    pub fn erase(
        &self,
        identity: Uuid,
        templates: &[(Vec<f32>, f32)],
        threshold: f32,
    ) -> Result<usize, HistoryError> {
        let all = self.appearances_of(
            identity,
            templates,
            &Query {
                camera: None,
                from: None,
                to: None,
                min_similarity: threshold,
                limit: usize::MAX,
                order: Order::Newest,
                only_unknown: false,
            },
        )?;
        // (seq, first seen): each row found again by binary search, left as a tombstone
        let mut rows: HashMap<i64, i64> = all
            .items
            .iter()
            .map(|f| {
                (
                    f.stored.seq,
                    f.stored.appearance.first_seen.timestamp_millis(),
                )
            })
            .collect();
        // recognised rows of another model too
        rows.extend(
            self.store
                .recognised_as(identity)?
                .iter()
                .map(|s| (s.seq, s.appearance.first_seen.timestamp_millis())),
        );
        let seqs: Vec<i64> = rows.keys().copied().collect();
        let n = self.store.delete(&seqs)?;
        let mut index = self.index_mut();
        for (seq, first_ms) in rows {
            index.remove_one(seq, first_ms);
        }
        Ok(n)
    }

    /// Apply `history.retention_s`; how many appearances were deleted.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<usize, HistoryError> {
        let cutoff = now - chrono::TimeDelta::seconds(self.config.retention_s as i64);
        let gone: HashSet<i64> = self.store.delete_older(cutoff)?.into_iter().collect();
        if !gone.is_empty() {
            self.index_mut().remove(|r| gone.contains(&r.seq));
        }
        Ok(gone.len())
    }

    /// Write an audit entry (and log it).
    pub fn audit(&self, key: &str, kind: &str, detail: &str, results: usize) {
        tracing::info!(target: "facestream::audit", key, kind, detail, results, "appearance search");
        let entry = AuditEntry {
            at: Utc::now(),
            node: self.node.clone(),
            key: key.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            results,
        };
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, key, kind, "the search audit entry could not be written");
        }
    }
}

/// The index of `model`'s appearances in `store`, and the feed position it is current to
/// (read first: a change committed meanwhile is applied again, harmlessly).
fn build_index(
    store: &dyn AppearanceStore,
    model: &str,
    dim: usize,
) -> Result<(AppearanceIndex, Option<i64>), HistoryError> {
    let head = store.feed_head()?;
    let mut index = AppearanceIndex::new(dim);
    index.reserve(store.count()?);
    store.for_each(model, &mut |s: Stored| {
        add(&mut index, s.seq, &s.appearance);
    })?;
    Ok((index, head))
}

/// Put appearance `a`, row `seq`, into `index`.
fn add(index: &mut AppearanceIndex, seq: i64, a: &Appearance) -> bool {
    index.insert(
        seq,
        a.first_seen.timestamp_millis(),
        a.last_seen.timestamp_millis(),
        &a.camera,
        a.identity.is_none(),
        &a.template,
    )
}

/// The quality-weighted mean of `(embedding, quality)` templates, renormalised: the
/// gallery's pooled template ([`crate::vectors::pooled_template`]).
pub fn pooled(templates: &[(Vec<f32>, f32)]) -> Option<Vec<f32>> {
    let dim = templates.first()?.0.len();
    pooled_template(templates.iter().map(|(t, q)| (t.as_slice(), *q)), dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::random_unit;

    const MODEL: &str = "test@1";

    fn open() -> (History, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("facestream-history-{}", Uuid::now_v7()));
        let config = HistoryConfig {
            enabled: true,
            database: dir.join("history.db"),
            retention_s: 3600,
            ..HistoryConfig::default()
        };
        (History::open(&config, MODEL, 128).unwrap(), dir)
    }

    /// A unit vector at cosine `c` from `base`.
    fn near(base: &[f32], c: f32, seed: u64) -> Vec<f32> {
        let noise = random_unit(seed, base.len());
        let along: f32 = noise.iter().zip(base).map(|(n, b)| n * b).sum();
        let ortho: Vec<f32> = noise.iter().zip(base).map(|(n, b)| n - along * b).collect();
        let n = ortho.iter().map(|x| x * x).sum::<f32>().sqrt();
        let k = (1.0 - c * c).sqrt();
        base.iter()
            .zip(&ortho)
            .map(|(b, o)| c * b + k * o / n)
            .collect()
    }

    fn appearance(template: Vec<f32>, minute: i64, camera: &str) -> Appearance {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Appearance {
            track_id: Uuid::now_v7(),
            camera: camera.into(),
            node: "n1".into(),
            first_seen: t0 + chrono::TimeDelta::minutes(minute),
            last_seen: t0 + chrono::TimeDelta::minutes(minute) + chrono::TimeDelta::seconds(5),
            model: MODEL.into(),
            template,
            quality: 0.8,
            event_id: Some(Uuid::now_v7()),
            identity: None,
            similarity: Some(0.2),
            shot: Some(vec![0xFF, 0xD8, 0xFF]),
            spans: Vec::new(),
        }
    }

    /// A person (their template, their identity), recorded recognised as that identity at
    /// minute 0 (cosine 0.8) and unknown at minute `earlier` (0.7), and a stranger at
    /// minute 10: (person, identity, [recognised, earlier, stranger]).
    fn person_seen_twice(
        h: &History,
        seed: u64,
        earlier: i64,
    ) -> (Vec<f32>, Uuid, [Appearance; 3]) {
        let person = random_unit(seed, 128);
        let identity = Uuid::now_v7();
        let mut recognised = appearance(near(&person, 0.8, seed + 1), 0, "door");
        recognised.identity = Some(identity);
        let before = appearance(near(&person, 0.7, seed + 2), earlier, "hall");
        let stranger = appearance(random_unit(seed + 3, 128), 10, "door");
        for a in [&recognised, &before, &stranger] {
            h.record(a).unwrap();
        }
        (person, identity, [recognised, before, stranger])
    }

    fn query(min: f32, limit: usize, order: Order) -> Query {
        Query {
            camera: None,
            from: None,
            to: None,
            min_similarity: min,
            limit,
            order,
            only_unknown: false,
        }
    }

    #[test]
    fn search_is_exact_in_both_orders_and_says_when_there_is_more() {
        let (h, dir) = open();
        let probe = random_unit(7, 128);
        // 400 appearances at cosines 0.30 … 0.70 to the probe, in time order
        let cosines: Vec<f32> = (0..400)
            .map(|i| 0.3005 + 0.4 * ((i * 37) % 400) as f32 / 400.0)
            .collect();
        for (i, c) in cosines.iter().enumerate() {
            h.record(&appearance(
                near(&probe, *c, 100 + i as u64),
                i as i64,
                "door",
            ))
            .unwrap();
        }
        let above: Vec<usize> = (0..400).filter(|&i| cosines[i] >= 0.5).collect();
        // newest first: the most recent appearances at or above the bar
        let newest = h.search(&probe, &query(0.5, 10, Order::Newest)).unwrap();
        let want: Vec<usize> = above.iter().rev().take(10).copied().collect();
        let got: Vec<i64> = newest
            .items
            .iter()
            .map(|f| (f.stored.appearance.first_seen.timestamp() - 1_800_000_000) / 60)
            .collect();
        assert_eq!(got, want.iter().map(|&i| i as i64).collect::<Vec<_>>());
        assert!(newest.more);
        for f in &newest.items {
            let exact: f32 = f
                .stored
                .appearance
                .template
                .iter()
                .zip(&probe)
                .map(|(a, b)| a * b)
                .sum();
            assert!((f.similarity - exact).abs() < 1e-5);
        }
        // most similar first: the highest cosines, exactly
        let best = h.search(&probe, &query(0.5, 5, Order::Similarity)).unwrap();
        let mut sorted: Vec<f32> = above.iter().map(|&i| cosines[i]).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for (f, c) in best.items.iter().zip(&sorted) {
            assert!((f.similarity - c).abs() < 1e-4, "{} vs {c}", f.similarity);
        }
        // all of them when the limit allows
        let all = h
            .search(&probe, &query(0.5, 1000, Order::Similarity))
            .unwrap();
        assert_eq!(all.items.len(), above.len());
        assert!(!all.more);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn filters_deletion_unlinking_retention_and_a_reopen() {
        let (h, dir) = open();
        let (alice, identity, [recognised, earlier, _]) = person_seen_twice(&h, 1, -30);
        let ids = |r: &Results| -> Vec<Uuid> {
            r.items
                .iter()
                .map(|f| f.stored.appearance.track_id)
                .collect()
        };
        let all = h.search(&alice, &query(0.5, 100, Order::Newest)).unwrap();
        assert_eq!(ids(&all), vec![recognised.track_id, earlier.track_id]);
        let door = Query {
            camera: Some("door".into()),
            ..query(0.5, 100, Order::Newest)
        };
        assert_eq!(
            ids(&h.search(&alice, &door).unwrap()),
            vec![recognised.track_id]
        );
        let before = Query {
            to: Some(recognised.first_seen - chrono::TimeDelta::minutes(1)),
            ..query(0.5, 100, Order::Newest)
        };
        assert_eq!(
            ids(&h.search(&alice, &before).unwrap()),
            vec![earlier.track_id]
        );
        // enrolment: only the unknown one is "seen before"
        let seen = h.seen_before(&alice, 0.5, 10).unwrap();
        assert_eq!(ids(&seen), vec![earlier.track_id]);
        // the identity's timeline holds both
        let of = h
            .appearances_of(
                identity,
                &[(alice.clone(), 0.9)],
                &query(0.5, 100, Order::Newest),
            )
            .unwrap();
        assert_eq!(ids(&of), vec![recognised.track_id, earlier.track_id]);
        // erasure without the appearances: they stay, as unknown
        assert_eq!(h.unlink(identity).unwrap(), 1);
        assert_eq!(h.seen_before(&alice, 0.5, 10).unwrap().items.len(), 2);
        assert!(h.store().recognised_as(identity).unwrap().is_empty());
        // one deleted by id
        h.delete(earlier.track_id).unwrap();
        assert!(matches!(
            h.delete(earlier.track_id),
            Err(HistoryError::NotFound(_))
        ));
        assert_eq!(
            ids(&h.search(&alice, &query(0.5, 100, Order::Newest)).unwrap()),
            vec![recognised.track_id]
        );
        // reopened: the index is rebuilt from the file
        drop(h);
        let config = HistoryConfig {
            enabled: true,
            database: dir.join("history.db"),
            retention_s: 3600,
            ..HistoryConfig::default()
        };
        let h = History::open(&config, MODEL, 128).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            ids(&h.search(&alice, &query(0.5, 100, Order::Newest)).unwrap()),
            vec![recognised.track_id]
        );
        // retention: everything recorded (in 2027) is past an hour by 2028
        let later = recognised.last_seen + chrono::TimeDelta::days(400);
        assert_eq!(h.prune(later).unwrap(), 2);
        assert!(h.is_empty());
        assert_eq!(h.store().count().unwrap(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn erasing_with_the_appearances_deletes_the_recognised_and_the_matching_ones() {
        let (h, dir) = open();
        let (bob, identity, [_, _, other]) = person_seen_twice(&h, 11, -60);
        assert_eq!(h.erase(identity, &[(bob.clone(), 0.9)], 0.5).unwrap(), 2);
        assert_eq!(h.len(), 1);
        let left = h.store().get(other.track_id).unwrap();
        assert_eq!(left.appearance.track_id, other.track_id);
        // a track recorded again replaces its row
        let mut again = other.clone();
        again.last_seen += chrono::TimeDelta::seconds(30);
        h.record(&again).unwrap();
        assert_eq!((h.len(), h.store().count().unwrap()), (1, 1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
