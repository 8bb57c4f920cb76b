//! The shared gallery of record: PostgreSQL, for several facestream nodes
//! (`gallery.store = "postgres"`).
//!
//! The tables mirror the SQLite store's, plus a **change feed**: every write transaction
//! appends its changes to `gallery_changes` and announces them with `NOTIFY
//! facestream_gallery`. Writers take one advisory transaction lock before they take a
//! feed position and keep it until they commit, so positions become visible in order;
//! a node that has applied every change up to N can ask for "after N" and never miss one
//! (a node that was offline, or started late, catches up exactly). Each node keeps its own
//! search index ([`super::service::GalleryService`] follows the feed), and this store
//! keeps the identity names search results need, so recognition never waits on the
//! database and goes on while it is down; writes then fail with
//! [`GalleryError::Unavailable`].
//!
//! The connection (reconnection, timeouts) and the schema (the SQL files in
//! `src/pg/migrations/`, applied at start-up) are [`crate::pg`]'s, shared with the
//! appearance history.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, IsolationLevel, Transaction};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::erasure::Erasure;
use super::{
    validate_metadata, validate_name, Change, Changes, GalleryError, GalleryStore, Identity,
    IdentityUpdate, NewIdentity, StaleIdentity, Template,
};
use crate::pg::{self, discard, off_runtime, CallError, Connection, Lost, MaybeLost};
use crate::vectors::{embedding_bytes, embedding_from};

/// Advisory lock key of writers ("fsgw").
const WRITE_LOCK: i64 = 0x6673_6777;
/// The NOTIFY channel of the change feed.
pub const CHANNEL: &str = "facestream_gallery";
/// Feed rows older than this are pruned, at start-up and daily (a node offline longer
/// rebuilds from a snapshot).
pub const FEED_RETENTION_DAYS: i32 = 30;
/// How often a running node prunes the feed.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A failure inside a database call: the driver's, or the gallery's own.
enum Fail {
    Pg(::postgres::Error),
    Gallery(GalleryError),
}

impl From<::postgres::Error> for Fail {
    fn from(e: ::postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<GalleryError> for Fail {
    fn from(e: GalleryError) -> Self {
        Fail::Gallery(e)
    }
}

impl MaybeLost for Fail {
    fn lost(&self) -> Option<&::postgres::Error> {
        match self {
            Fail::Pg(e) => e.lost(),
            Fail::Gallery(_) => None,
        }
    }
}

/// PostgreSQL-backed [`GalleryStore`].
pub struct PostgresStore {
    /// The connection ([`crate::pg`]: reconnection, timeouts).
    conn: Connection,
    /// The connection that LISTENs to the feed ([`GalleryStore::wait_for_change`]).
    listener: Mutex<Option<Client>>,
    /// Identity names for search results, kept current by this node's writes and by the
    /// feed: recognition never reads the database.
    names: RwLock<HashMap<Uuid, String>>,
    /// When the feed was last pruned.
    pruned: Mutex<Instant>,
}

impl PostgresStore {
    /// Connect to `url`, bring the schema up to date, and load the identity names.
    /// The database must be reachable at start-up.
    pub fn open(url: &str) -> Result<PostgresStore, GalleryError> {
        let conn = Connection::new(url).map_err(|message| GalleryError::Invalid {
            field: "gallery.postgres_url",
            message,
        })?;
        let store = PostgresStore {
            conn,
            listener: Mutex::new(None),
            names: RwLock::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
        };
        store.call(|c| pg::migrate(c).map_err(Fail::from))?;
        store.prune_feed()?;
        let names = store.call(|c| {
            Ok(c.query("SELECT id, name FROM identities", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect::<HashMap<Uuid, String>>())
        })?;
        *store.names.write().unwrap_or_else(|p| p.into_inner()) = names;
        Ok(store)
    }

    /// Delete feed rows older than [`FEED_RETENTION_DAYS`] (the newest always stays) and
    /// record how far: at start-up and then once a day, from the node's feed follower.
    fn prune_feed(&self) -> Result<(), GalleryError> {
        *self.pruned.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let pruned = self.write(|tx| {
            let rows = tx.query(
                "DELETE FROM gallery_changes WHERE at < now() - make_interval(days => $1)
                 AND seq < (SELECT max(seq) FROM gallery_changes) RETURNING seq",
                &[&FEED_RETENTION_DAYS],
            )?;
            if let Some(newest) = rows.iter().map(|r| r.get::<_, i64>(0)).max() {
                tx.execute(
                    "UPDATE gallery_feed SET pruned_through = greatest(pruned_through, $1)",
                    &[&newest],
                )?;
            }
            Ok(rows.len())
        })?;
        if pruned > 0 {
            tracing::info!(
                pruned,
                days = FEED_RETENTION_DAYS,
                "gallery change feed: old entries pruned"
            );
        }
        Ok(())
    }

    /// The database as `host:port/dbname`.
    pub fn target(&self) -> &str {
        self.conn.target()
    }

    fn unavailable(lost: &Lost) -> GalleryError {
        GalleryError::Unavailable(format!(
            "the gallery database (PostgreSQL at {}) cannot be reached: {}; enrolment and \
             gallery changes are refused until it is back (recognition goes on with this \
             node's copy of the gallery)",
            lost.target, lost.cause
        ))
    }

    /// Run `f` on the connection (made or remade as needed): a lost database is
    /// [`GalleryError::Unavailable`], another driver error [`GalleryError::Storage`].
    fn call<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, Fail> + Send,
    ) -> Result<T, GalleryError> {
        self.conn.call(f).map_err(|e| match e {
            CallError::Lost(lost) => Self::unavailable(&lost),
            CallError::Failed(Fail::Pg(e)) => GalleryError::Storage(e.to_string()),
            CallError::Failed(Fail::Gallery(e)) => e,
        })
    }

    /// Run `f` in a write transaction holding the writers' lock, so its feed positions
    /// are taken and committed in order.
    fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, Fail> + Send,
    ) -> Result<T, GalleryError> {
        self.call(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn set_name(&self, id: Uuid, name: Option<&str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => names.insert(id, n.to_string()),
            None => names.remove(&id),
        };
    }
}

impl Drop for PostgresStore {
    /// The listening connection closes off any async runtime (see [`discard`]).
    fn drop(&mut self) {
        discard(
            self.listener
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

/// Append one change to the feed and announce it (delivered at commit).
fn record(
    tx: &mut Transaction<'_>,
    kind: &str,
    identity: Uuid,
    template: Option<Uuid>,
) -> Result<i64, ::postgres::Error> {
    let seq: i64 = tx
        .query_one(
            "INSERT INTO gallery_changes (seq, kind, identity_id, template_id)
             VALUES (nextval('gallery_change_seq'), $1, $2, $3) RETURNING seq",
            &[&kind, &identity, &template],
        )?
        .get(0);
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])?;
    Ok(seq)
}

const IDENTITY_COLUMNS: &str = "i.id, i.name, i.metadata, i.created, i.updated, \
     (SELECT count(*) FROM templates t WHERE t.identity_id = i.id)";

fn identity_row(r: &::postgres::Row) -> Identity {
    Identity {
        id: r.get(0),
        name: r.get(1),
        metadata: r.get(2),
        created: r.get(3),
        updated: r.get(4),
        faces: r.get::<_, i64>(5) as usize,
    }
}

const TEMPLATE_COLUMNS: &str = "id, identity_id, model, embedding, quality, source, created";

fn template_row(r: &::postgres::Row, crop: Option<Vec<u8>>) -> Template {
    Template {
        id: r.get(0),
        identity_id: r.get(1),
        model: r.get(2),
        embedding: embedding_from(r.get::<_, &[u8]>(3)),
        quality: r.get(4),
        source: r.get(5),
        created: r.get::<_, DateTime<Utc>>(6),
        crop,
    }
}

fn get_identity(c: &mut impl ::postgres::GenericClient, id: Uuid) -> Result<Identity, Fail> {
    c.query_opt(
        &format!("SELECT {IDENTITY_COLUMNS} FROM identities i WHERE i.id = $1"),
        &[&id],
    )?
    .map(|r| identity_row(&r))
    .ok_or(Fail::Gallery(GalleryError::IdentityNotFound(id)))
}

/// Every template of `model`, streamed (a million rows are never all held as rows).
fn templates_of(
    c: &mut impl ::postgres::GenericClient,
    model: &str,
) -> Result<Vec<Template>, ::postgres::Error> {
    let mut out = Vec::new();
    let mut rows = c.query_raw(
        &format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE model = $1 ORDER BY identity_id, id"
        ),
        &[&model],
    )?;
    while let Some(r) = rows.next()? {
        out.push(template_row(&r, None));
    }
    Ok(out)
}

impl GalleryStore for PostgresStore {
    fn create_identity(&self, new: NewIdentity) -> Result<Identity, GalleryError> {
        let identity = new.into_identity()?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO identities (id, name, metadata, created, updated) VALUES ($1, $2, $3, $4, $4)",
                &[&identity.id, &identity.name, &identity.metadata, &identity.created],
            )?;
            record(tx, "identity_named", identity.id, None)?;
            Ok(())
        })?;
        self.set_name(identity.id, Some(&identity.name));
        Ok(identity)
    }

    fn list_identities(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Identity>, usize), GalleryError> {
        self.call(|c| {
            let total: i64 = c.query_one("SELECT count(*) FROM identities", &[])?.get(0);
            let rows = c.query(
                &format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities i ORDER BY i.created, i.id LIMIT $1 OFFSET $2"
                ),
                &[&(limit as i64), &(offset as i64)],
            )?;
            Ok((rows.iter().map(identity_row).collect(), total as usize))
        })
    }

    fn get_identity(&self, id: Uuid) -> Result<Identity, GalleryError> {
        self.call(|c| get_identity(c, id))
    }

    fn update_identity(&self, id: Uuid, update: IdentityUpdate) -> Result<Identity, GalleryError> {
        let name = update.name.as_deref().map(validate_name).transpose()?;
        let metadata = match update.metadata {
            Some(m) => Some(validate_metadata(Some(m))?),
            None => None,
        };
        let identity = self.write(|tx| {
            let changed = tx.execute(
                "UPDATE identities SET name = COALESCE($2, name), metadata = COALESCE($3, metadata), updated = $4 WHERE id = $1",
                &[&id, &name, &metadata, &Utc::now()],
            )?;
            if changed == 0 {
                return Err(GalleryError::IdentityNotFound(id).into());
            }
            if name.is_some() {
                record(tx, "identity_named", id, None)?;
            }
            get_identity(tx, id)
        })?;
        self.set_name(id, Some(&identity.name));
        Ok(identity)
    }

    fn delete_identity(&self, id: Uuid, appearances: bool) -> Result<usize, GalleryError> {
        let removed = self.write(|tx| {
            let templates = tx.execute("DELETE FROM templates WHERE identity_id = $1", &[&id])?;
            if tx.execute("DELETE FROM identities WHERE id = $1", &[&id])? == 0 {
                return Err(GalleryError::IdentityNotFound(id).into());
            }
            record(tx, "identity_removed", id, None)?;
            // positions are taken under the write lock, so the log is in commit order
            tx.execute(
                "INSERT INTO erasures (identity_id, appearances) VALUES ($1, $2)",
                &[&id, &appearances],
            )?;
            Ok(templates as usize)
        })?;
        self.set_name(id, None);
        Ok(removed)
    }

    fn add_template(&self, t: &Template) -> Result<(), GalleryError> {
        self.add_templates(std::slice::from_ref(t))
    }

    fn add_templates(&self, templates: &[Template]) -> Result<(), GalleryError> {
        self.write(|tx| {
            for t in templates {
                let inserted = tx.execute(
                    "INSERT INTO templates (id, identity_id, model, embedding, quality, source, created, crop)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &t.id,
                        &t.identity_id,
                        &t.model,
                        &embedding_bytes(&t.embedding),
                        &t.quality,
                        &t.source,
                        &t.created,
                        &t.crop,
                    ],
                );
                match inserted {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                        return Err(GalleryError::IdentityNotFound(t.identity_id).into());
                    }
                    Err(e) => return Err(e.into()),
                }
                record(tx, "template_added", t.identity_id, Some(t.id))?;
            }
            // dropped without commit on an error above: nothing was added
            Ok(())
        })
    }

    fn list_templates(&self, identity: Uuid) -> Result<Vec<Template>, GalleryError> {
        self.call(|c| {
            get_identity(c, identity)?;
            Ok(c.query(
                &format!(
                    "SELECT {TEMPLATE_COLUMNS}, crop FROM templates WHERE identity_id = $1 ORDER BY created, id"
                ),
                &[&identity],
            )?
            .iter()
            .map(|r| template_row(r, r.get(7)))
            .collect())
        })
    }

    fn delete_template(&self, identity: Uuid, face: Uuid) -> Result<(), GalleryError> {
        self.write(|tx| {
            get_identity(tx, identity)?;
            let n = tx.execute(
                "DELETE FROM templates WHERE id = $1 AND identity_id = $2",
                &[&face, &identity],
            )?;
            if n == 0 {
                return Err(GalleryError::FaceNotFound(face).into());
            }
            record(tx, "template_removed", identity, Some(face))?;
            Ok(())
        })
    }

    fn templates_for_model(&self, model: &str) -> Result<Vec<Template>, GalleryError> {
        self.call(|c| Ok(templates_of(c, model)?))
    }

    fn stale_identities(&self, model: &str) -> Result<Vec<StaleIdentity>, GalleryError> {
        self.call(|c| {
            Ok(c.query(
                "SELECT i.id, i.name, array_agg(DISTINCT t.model ORDER BY t.model), bool_and(t.crop IS NOT NULL)
                 FROM identities i JOIN templates t ON t.identity_id = i.id
                 WHERE t.model != $1 GROUP BY i.id, i.name ORDER BY i.name",
                &[&model],
            )?
            .iter()
            .map(|r| StaleIdentity {
                id: r.get(0),
                name: r.get(1),
                models: r.get(2),
                crops_kept: r.get(3),
            })
            .collect())
        })
    }

    fn erasures_since(&self, after: i64, limit: usize) -> Result<Vec<Erasure>, GalleryError> {
        let rows = self.call(|c| {
            Ok(c.query(
                &format!(
                    "SELECT seq, identity_id, erased_at, appearances FROM erasures
                     WHERE seq > $1 ORDER BY seq LIMIT {}",
                    limit.max(1)
                ),
                &[&after],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| Erasure {
                seq: r.get(0),
                identity: r.get(1),
                at: r.get(2),
                appearances: r.get(3),
            })
            .collect())
    }

    fn erasure_head(&self) -> Result<i64, GalleryError> {
        self.call(|c| {
            Ok(
                c.query_one("SELECT COALESCE(max(seq), 0) FROM erasures", &[])?
                    .get(0),
            )
        })
    }

    fn names(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, GalleryError> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        Ok(ids
            .iter()
            .map(|id| (*id, names.get(id).cloned().unwrap_or_default()))
            .collect())
    }

    fn snapshot(&self, model: &str) -> Result<Option<(Vec<Template>, i64)>, GalleryError> {
        let (templates, head, names) = self.call(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let head: i64 = tx
                .query_one("SELECT COALESCE(max(seq), 0) FROM gallery_changes", &[])?
                .get(0);
            let templates = templates_of(&mut tx, model)?;
            let names: HashMap<Uuid, String> = tx
                .query("SELECT id, name FROM identities", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            tx.commit()?;
            Ok((templates, head, names))
        })?;
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = names;
        Ok(Some((templates, head)))
    }

    fn changes_since(
        &self,
        after: i64,
        model: &str,
        limit: usize,
    ) -> Result<Changes, GalleryError> {
        let prune_due = self
            .pruned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            > PRUNE_EVERY;
        if prune_due {
            self.prune_feed()?;
        }
        let rows = self.call(|c| {
            let pruned: i64 = c
                .query_one("SELECT pruned_through FROM gallery_feed", &[])?
                .get(0);
            if after < pruned {
                return Ok(None);
            }
            Ok(Some(c.query(
                &format!(
                    "SELECT c.seq, c.kind, c.identity_id, c.template_id, i.name, t.model,
                            t.embedding, t.quality, t.source, t.created
                     FROM gallery_changes c
                     LEFT JOIN identities i ON i.id = c.identity_id
                     LEFT JOIN templates t ON t.id = c.template_id AND t.model = $2
                     WHERE c.seq > $1 ORDER BY c.seq LIMIT {}",
                    limit.max(1)
                ),
                &[&after, &model],
            )?))
        })?;
        let Some(rows) = rows else {
            return Ok(Changes::Gap);
        };
        let mut changes = Vec::with_capacity(rows.len());
        for r in &rows {
            let identity: Uuid = r.get(2);
            let template: Option<Uuid> = r.get(3);
            let kind: &str = r.get(1);
            let change = match (kind, template) {
                ("identity_named", _) => {
                    // gone since: its removal follows in the feed
                    if let Some(name) = r.get::<_, Option<String>>(4) {
                        self.set_name(identity, Some(&name));
                    }
                    Change::IdentityNamed(identity)
                }
                ("identity_removed", _) => {
                    self.set_name(identity, None);
                    Change::IdentityRemoved(identity)
                }
                ("template_added", Some(id)) => {
                    Change::TemplateAdded(r.get::<_, Option<&[u8]>>(6).map(|embedding| Template {
                        id,
                        identity_id: identity,
                        model: model.to_string(),
                        embedding: embedding_from(embedding),
                        quality: r.get(7),
                        source: r.get(8),
                        created: r.get(9),
                        crop: None,
                    }))
                }
                ("template_removed", Some(id)) => Change::TemplateRemoved(id),
                (other, _) => {
                    return Err(GalleryError::Storage(format!(
                        "gallery change {} has unknown kind {other:?}",
                        r.get::<_, i64>(0)
                    )))
                }
            };
            changes.push((r.get(0), change));
        }
        Ok(Changes::Since(changes))
    }

    fn wait_for_change(&self, timeout: Duration) {
        let mut slot = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(Client::is_closed) {
            let listening = self
                .conn
                .connect()
                .map_err(|l| Self::unavailable(&l))
                .and_then(|mut c| {
                    off_runtime(|| c.batch_execute(&format!("LISTEN {CHANNEL}")))
                        .map_err(|e| GalleryError::Storage(e.to_string()))
                        .map(|()| c)
                });
            match listening {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "gallery feed: not listening");
                    drop(slot);
                    std::thread::sleep(timeout);
                    return;
                }
            }
        }
        let client = slot.as_mut().expect("connected above");
        let failed = off_runtime(move || {
            let mut notifications = client.notifications();
            let first = notifications.timeout_iter(timeout).next();
            if let Err(e) = first {
                return Some(e);
            }
            // announcements that arrived meanwhile: one catch-up covers them all
            let mut pending = notifications.iter();
            while let Ok(Some(_)) = pending.next() {}
            None
        });
        if let Some(e) = failed {
            tracing::debug!(error = %e, "gallery feed: listening connection lost");
            discard(slot.take());
        }
    }
}
