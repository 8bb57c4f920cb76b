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
//! The schema is versioned by the SQL files in `src/gallery/migrations/`, applied in order
//! at start-up under an advisory lock (several nodes may start at once) and recorded in
//! `facestream_migrations`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, IsolationLevel, NoTls, Transaction};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::erasure::Erasure;
use super::{
    validate_metadata, validate_name, Change, Changes, GalleryError, GalleryStore, Identity,
    IdentityUpdate, NewIdentity, StaleIdentity, Template,
};
use crate::vectors::{embedding_bytes, embedding_from};

/// Schema migrations: (version, name, SQL), applied in order, each once.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "gallery", include_str!("migrations/0001_gallery.sql")),
    (2, "history", include_str!("migrations/0002_history.sql")),
    (3, "erasures", include_str!("migrations/0003_erasures.sql")),
];

/// Advisory lock keys ("fsgw", "fsgm"): writers, migrations.
const WRITE_LOCK: i64 = 0x6673_6777;
const MIGRATION_LOCK: i64 = 0x6673_676d;
/// The NOTIFY channel of the change feed.
pub const CHANNEL: &str = "facestream_gallery";
/// Feed rows older than this are pruned, at start-up and daily (a node offline longer
/// rebuilds from a snapshot).
pub const FEED_RETENTION_DAYS: i32 = 30;
/// How often a running node prunes the feed.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How long to wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection unused this long is checked (one round trip) before use. The synchronous
/// driver only notices a closed connection while a call runs, so a connection cut by a
/// database restart while idle still looks open, and a restart can be quick: without
/// fsync PostgreSQL stopped and accepted connections again 76 ms after a call here, and
/// with the former 1-s threshold the first request after it failed (test
/// `the_first_call_after_a_quick_postgres_restart_succeeds`). Only calls in a burst, a
/// few milliseconds apart, skip the check: no restart is that quick.
const IDLE_CHECK: Duration = Duration::from_millis(5);
/// Data sent and not acknowledged this long fails the connection (`TCP_USER_TIMEOUT`): a
/// silent network partition fails a query within this, not the kernel's ~15 minutes of
/// retransmissions.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection is probed after this long, every [`KEEPALIVE_INTERVAL`], and given
/// up after [`KEEPALIVE_RETRIES`] unanswered probes.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEPALIVE_RETRIES: u32 = 3;
/// Server-side bound on one statement (set at connection unless the URL sets `options`).
pub const STATEMENT_TIMEOUT_MS: u32 = 30_000;

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

/// PostgreSQL-backed [`GalleryStore`].
pub struct PostgresStore {
    config: ::postgres::Config,
    /// `host:port/dbname`, for messages (never the password).
    target: String,
    /// The connection, and when it last answered.
    client: Mutex<Option<(Client, Instant)>>,
    /// The connection that LISTENs to the feed ([`GalleryStore::wait_for_change`]).
    listener: Mutex<Option<Client>>,
    /// Identity names for search results, kept current by this node's writes and by the
    /// feed: recognition never reads the database.
    names: RwLock<HashMap<Uuid, String>>,
    /// When the feed was last pruned.
    pruned: Mutex<Instant>,
    /// The last failure to reach the database, and when: calls that were waiting for the
    /// connection meanwhile fail at once with it instead of each waiting out a timeout.
    failed: Mutex<Option<(Instant, GalleryError)>>,
}

/// Run `f` on a thread outside any async runtime: the synchronous driver runs its own
/// runtime, which must not start inside another (an actix handler, a tokio task).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Close and drop a connection off any async runtime: the synchronous driver's drop runs
/// its own runtime, which panics inside another (and would kill, say, an async task that
/// read the gallery when the database went away).
fn discard<C: Send>(client: Option<C>) {
    if let Some(client) = client {
        off_runtime(move || drop(client));
    }
}

/// The connection target of `config`, without credentials.
fn describe(config: &::postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            ::postgres::config::Host::Tcp(name) => name.clone(),
            ::postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

impl PostgresStore {
    /// Connect to `url`, bring the schema up to date, and load the identity names.
    /// The database must be reachable at start-up.
    pub fn open(url: &str) -> Result<PostgresStore, GalleryError> {
        let mut config: ::postgres::Config = url.parse().map_err(|e| GalleryError::Invalid {
            field: "gallery.postgres_url",
            message: format!("{e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("facestream");
        }
        // a dead peer or a silent partition is noticed within seconds instead of the
        // kernel's two hours (idle) or ~15 minutes (a query waiting on its answer)
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        if config.get_options().is_none() {
            config.options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        }
        let store = PostgresStore {
            target: describe(&config),
            config,
            client: Mutex::new(None),
            listener: Mutex::new(None),
            names: RwLock::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
            failed: Mutex::new(None),
        };
        store.call(|c| migrate(c).map_err(Fail::from))?;
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

    /// Run `f` on this store's connection with its failure handling (reconnection,
    /// timeouts, a lost database answered as [`GalleryError::Unavailable`]): for the other
    /// tables kept in the same database (the appearance history).
    pub fn run<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error> + Send,
    ) -> Result<T, GalleryError> {
        self.call(|c| f(c).map_err(Fail::from))
    }

    /// The database as `host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn unavailable(&self, e: &::postgres::Error) -> GalleryError {
        GalleryError::Unavailable(format!(
            "the gallery database (PostgreSQL at {}) cannot be reached: {e}; enrolment and \
             gallery changes are refused until it is back (recognition goes on with this \
             node's copy of the gallery)",
            self.target
        ))
    }

    /// Map a driver error: connection-level failures are [`GalleryError::Unavailable`].
    fn classify(&self, e: ::postgres::Error) -> GalleryError {
        let lost = match e.code() {
            None => true,
            Some(code) => {
                let class = &code.code()[..2];
                // 08: connection exception; 57: operator intervention (shutdown, crash)
                class == "08" || class == "57"
            }
        };
        if lost || e.is_closed() {
            self.unavailable(&e)
        } else {
            GalleryError::Storage(e.to_string())
        }
    }

    fn connect(&self) -> Result<Client, GalleryError> {
        let config = self.config.clone();
        off_runtime(move || config.connect(NoTls)).map_err(|e| self.unavailable(&e))
    }

    /// Run `f` on the connection (made or remade as needed). A connection-level failure
    /// drops the connection so the next call reconnects.
    fn call<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, Fail> + Send,
    ) -> Result<T, GalleryError> {
        let waiting = Instant::now();
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        // A call that failed to reach the database while this one waited for the
        // connection: its answer is this one's too, rather than a second timeout.
        self.failed_since(waiting)?;
        // A connection idle for a while may have been cut (a database restart): check it
        // first rather than fail the caller's request on it.
        let stale = slot.as_mut().is_none_or(|(client, used)| {
            client.is_closed()
                || (used.elapsed() > IDLE_CHECK
                    && off_runtime(|| client.is_valid(CONNECT_TIMEOUT)).is_err())
        });
        if stale {
            discard(slot.take());
            let client = self.connect().inspect_err(|e| self.remember_failure(e))?;
            *slot = Some((client, Instant::now()));
        }
        let (client, used) = slot.as_mut().expect("connected above");
        match off_runtime(move || f(client)) {
            Ok(v) => {
                *used = Instant::now();
                Ok(v)
            }
            Err(Fail::Gallery(e)) => Err(e),
            Err(Fail::Pg(e)) => {
                let e = self.classify(e);
                if matches!(e, GalleryError::Unavailable(_)) {
                    discard(slot.take());
                    self.remember_failure(&e);
                }
                Err(e)
            }
        }
    }

    /// A failure to reach the database after `since`, if any.
    fn failed_since(&self, since: Instant) -> Result<(), GalleryError> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, e)) if *at > since => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn remember_failure(&self, e: &GalleryError) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.clone()));
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
    /// The connections close off any async runtime (see [`discard`]).
    fn drop(&mut self) {
        discard(
            self.client
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
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

/// Apply the migrations this database has not had yet.
fn migrate(client: &mut Client) -> Result<(), ::postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS facestream_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM facestream_migrations", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO facestream_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )?;
        tracing::info!(version, name, "gallery schema migration applied");
    }
    tx.commit()?;
    if let Some(newest) = applied.iter().max() {
        let known = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
        if *newest > known {
            tracing::warn!(
                database = newest,
                known,
                "the gallery schema is newer than this build knows; upgrade this node"
            );
        }
    }
    Ok(())
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
            let listening = self.connect().and_then(|mut c| {
                off_runtime(|| c.batch_execute(&format!("LISTEN {CHANNEL}")))
                    .map_err(|e| self.classify(e))
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
