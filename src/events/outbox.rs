//! The durable outbox: every (event, endpoint) pair as a row, written before delivery.
//!
//! States: `pending` (due at `next_attempt_ms`), `delivered`, `dead`. Rows only change
//! state inside SQLite transactions (WAL, `synchronous = FULL`), so a crash at any point
//! leaves each row either still pending — delivered again after restart, which is what
//! at-least-once means — or recorded as delivered.

use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::Event;

/// Errors from the outbox.
#[derive(Debug, thiserror::Error)]
#[error("event outbox: {0}")]
pub struct OutboxError(String);

fn err(e: impl std::fmt::Display) -> OutboxError {
    OutboxError(e.to_string())
}

/// One row due for delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub seq: i64,
    pub event_id: String,
    pub endpoint: String,
    pub payload: String,
    pub attempts: u32,
    pub created_ms: i64,
}

/// A dead-lettered row.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub seq: i64,
    pub event_id: String,
    pub endpoint: String,
    pub event_type: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_ms: i64,
}

/// The outbox.
pub struct Outbox {
    conn: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The rows an erasure scrubs: found by the `outbox_identity` index.
const SCRUB_ROWS: &str = "SELECT seq, event_id, payload, endpoint, state FROM outbox
     WHERE identity_id = ?1 OR previous_identity_id = ?1";

/// What an erasure did to the outbox ([`Outbox::scrub_identity`]).
#[derive(Debug, Default)]
pub struct Scrubbed {
    /// The events that named the identity (their snapshots go too).
    pub events: Vec<uuid::Uuid>,
    /// The endpoint of each pending row deleted.
    pub dropped_pending: Vec<String>,
}

impl Outbox {
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        // events carry identities and thumbnails: owner-only folder and file
        crate::private_files::prepare_database(path).map_err(err)?;
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // events carry names and face thumbnails: deleted rows are overwritten
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                event_type TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms INTEGER NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending',
                last_error TEXT,
                delivered_ms INTEGER,
                UNIQUE (event_id, endpoint)
            );
            CREATE INDEX IF NOT EXISTS outbox_due ON outbox (endpoint, state, next_attempt_ms);
            CREATE INDEX IF NOT EXISTS outbox_age ON outbox (state, created_ms);",
        )
        .map_err(err)?;
        // The identity an event names, in a column of its own, so an erasure finds its
        // rows by index instead of reading every payload under the lock (which held
        // delivery back for seconds on a large outbox). An outbox written before the
        // column existed gets it, filled from the payloads, once (in one transaction).
        let tx = conn.unchecked_transaction().map_err(err)?;
        if crate::private_files::add_column_if_missing(&tx, "outbox", "identity_id", "TEXT")
            .map_err(err)?
        {
            tx.execute(
                "UPDATE outbox SET identity_id = json_extract(payload, '$.identity.id')
                 WHERE json_valid(payload)",
                [],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        // The identity an appearance was before its decision changed (`identity.updated`'s
        // `previous`), likewise; no event written before the column existed has one.
        crate::private_files::add_column_if_missing(
            &conn,
            "outbox",
            "previous_identity_id",
            "TEXT",
        )
        .map_err(err)?;
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS outbox_identity ON outbox (identity_id)
                 WHERE identity_id IS NOT NULL;
             CREATE INDEX IF NOT EXISTS outbox_previous_identity ON outbox (previous_identity_id)
                 WHERE previous_identity_id IS NOT NULL;
             CREATE TABLE IF NOT EXISTS erasure_position (
                 id INTEGER PRIMARY KEY CHECK (id = 0),
                 seq INTEGER NOT NULL
             );",
        )
        .map_err(err)?;
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store `event` once per endpoint, in one transaction; returns rows written. An event
    /// already enqueued for an endpoint is not duplicated.
    pub fn enqueue(&self, event: &Event, endpoints: &[&str]) -> Result<usize, OutboxError> {
        let payload = serde_json::to_string(event).map_err(err)?;
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        let mut written = 0;
        for endpoint in endpoints {
            written += tx
                .execute(
                    "INSERT OR IGNORE INTO outbox (event_id, endpoint, event_type, payload, created_ms, next_attempt_ms,
                                                   identity_id, previous_identity_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
                    params![
                        event.id.to_string(),
                        endpoint,
                        event.kind.as_str(),
                        payload,
                        now,
                        event.identity.as_ref().map(|i| i.id.to_string()),
                        event
                            .previous
                            .as_ref()
                            .and_then(|p| p.identity.as_ref())
                            .map(|i| i.id.to_string())
                    ],
                )
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(written)
    }

    /// Pending rows of `endpoint` due by `now`, oldest first.
    pub fn due(&self, endpoint: &str, now: i64, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, event_id, endpoint, payload, attempts, created_ms FROM outbox
                 WHERE endpoint = ?1 AND state = 'pending' AND next_attempt_ms <= ?2
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![endpoint, now, limit as i64], |r| {
                Ok(Pending {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    endpoint: r.get(2)?,
                    payload: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    created_ms: r.get(5)?,
                })
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(rows)
    }

    /// Earliest `next_attempt_ms` of `endpoint`'s pending rows.
    pub fn next_due(&self, endpoint: &str) -> Result<Option<i64>, OutboxError> {
        self.conn()
            .query_row(
                "SELECT MIN(next_attempt_ms) FROM outbox WHERE endpoint = ?1 AND state = 'pending'",
                params![endpoint],
                |r| r.get(0),
            )
            .map_err(err)
    }

    pub fn mark_delivered(&self, seq: i64) -> Result<(), OutboxError> {
        self.conn()
            .execute(
                "UPDATE outbox SET state = 'delivered', delivered_ms = ?2, attempts = attempts + 1 WHERE seq = ?1",
                params![seq, now_ms()],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// Record a failed attempt; the row is retried at `next_attempt_ms`.
    pub fn mark_failed(
        &self,
        seq: i64,
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<(), OutboxError> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE seq = ?1",
                params![seq, error.chars().take(500).collect::<String>(), next_attempt_ms],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// Move `endpoint`'s pending rows created before `older_than_ms` to the dead letters.
    pub fn dead_letter_expired(
        &self,
        endpoint: &str,
        older_than_ms: i64,
    ) -> Result<usize, OutboxError> {
        self.conn()
            .execute(
                "UPDATE outbox SET state = 'dead' WHERE endpoint = ?1 AND state = 'pending' AND created_ms < ?2",
                params![endpoint, older_than_ms],
            )
            .map_err(err)
    }

    /// Move the pending rows of endpoints not in `configured` (removed from the
    /// configuration) to the dead letters, with that reason: nothing waits forever for a
    /// deliverer that no longer exists, the rows stay visible (`GET
    /// /v1/events/dead-letters`) and are purged after `events.retention_s` like any dead
    /// letter. Returns how many rows moved, per endpoint.
    pub fn dead_letter_removed_endpoints(
        &self,
        configured: &[&str],
    ) -> Result<Vec<(String, usize)>, OutboxError> {
        let conn = self.conn();
        let pending: Vec<String> = conn
            .prepare("SELECT DISTINCT endpoint FROM outbox WHERE state = 'pending'")
            .map_err(err)?
            .query_map([], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut moved = Vec::new();
        for endpoint in pending
            .into_iter()
            .filter(|e| !configured.contains(&e.as_str()))
        {
            let n = conn
                .execute(
                    "UPDATE outbox SET state = 'dead', last_error = 'endpoint removed from the configuration'
                     WHERE endpoint = ?1 AND state = 'pending'",
                    params![endpoint],
                )
                .map_err(err)?;
            moved.push((endpoint, n));
        }
        Ok(moved)
    }

    /// Delete delivered and dead-lettered rows created before `older_than_ms`.
    pub fn purge(&self, older_than_ms: i64) -> Result<usize, OutboxError> {
        self.conn()
            .execute(
                "DELETE FROM outbox WHERE state IN ('delivered', 'dead') AND created_ms < ?1",
                params![older_than_ms],
            )
            .map_err(err)
    }

    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, event_id, endpoint, event_type, attempts, last_error, created_ms FROM outbox
                 WHERE state = 'dead' ORDER BY seq LIMIT ?1",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(DeadLetter {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    endpoint: r.get(2)?,
                    event_type: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    last_error: r.get(5)?,
                    created_ms: r.get(6)?,
                })
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(rows)
    }

    /// Put dead letters back in the queue (all, or one `seq`), due now, with a fresh age.
    pub fn redeliver(&self, seq: Option<i64>) -> Result<usize, OutboxError> {
        let now = now_ms();
        self.conn()
            .execute(
                "UPDATE outbox SET state = 'pending', next_attempt_ms = ?1, created_ms = ?1, attempts = 0
                 WHERE state = 'dead' AND (?2 IS NULL OR seq = ?2)",
                params![now, seq],
            )
            .map_err(err)
    }

    /// Erasure of identity `id`: every row (pending, delivered or dead) of an event naming
    /// it is rewritten without the identity ([`super::Event::forget_identity`]), or
    /// deleted when the event only named it (a recognition: see
    /// [`super::Event::only_names_identity`]). Returns the ids of those events and the
    /// endpoint of each pending row deleted (their depth went down).
    pub fn scrub_identity(&self, id: uuid::Uuid) -> Result<Scrubbed, OutboxError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(err)?;
        let rows: Vec<(i64, String, String, String, String)> = {
            let mut stmt = tx.prepare(SCRUB_ROWS).map_err(err)?;
            let rows = stmt
                .query_map([id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            rows
        };
        let mut done = Scrubbed::default();
        for (seq, event_id, payload, endpoint, state) in rows {
            let event = serde_json::from_str::<super::Event>(&payload).ok();
            match event {
                Some(mut event) if !event.only_names_identity() => {
                    event.forget_identity();
                    let scrubbed = serde_json::to_string(&event).map_err(err)?;
                    tx.execute(
                        "UPDATE outbox SET payload = ?1, identity_id = NULL, previous_identity_id = NULL
                         WHERE seq = ?2",
                        rusqlite::params![scrubbed, seq],
                    )
                    .map_err(err)?;
                }
                // a recognition, or a payload that cannot be read: it names the person
                _ => {
                    tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq])
                        .map_err(err)?;
                    if state == "pending" {
                        done.dropped_pending.push(endpoint);
                    }
                }
            }
            if let Ok(e) = uuid::Uuid::parse_str(&event_id) {
                done.events.push(e);
            }
        }
        tx.commit().map_err(err)?;
        done.events.sort();
        done.events.dedup();
        Ok(done)
    }

    /// How far this node applied the gallery's erasure log
    /// ([`crate::gallery::erasure`]); `None` for an outbox that never recorded it (new).
    pub fn erasure_position(&self) -> Result<Option<i64>, OutboxError> {
        self.conn()
            .query_row("SELECT seq FROM erasure_position WHERE id = 0", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)
    }

    /// Every erasure up to `seq` was applied here.
    pub fn set_erasure_position(&self, seq: i64) -> Result<(), OutboxError> {
        self.conn()
            .execute(
                "INSERT INTO erasure_position (id, seq) VALUES (0, ?1)
                 ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq)",
                [seq],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// Pending rows per endpoint (the outbox depth).
    pub fn depth(&self, endpoint: &str) -> Result<usize, OutboxError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE endpoint = ?1 AND state = 'pending'",
                params![endpoint],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    fn outbox() -> (std::path::PathBuf, Outbox) {
        let dir = std::env::temp_dir().join(format!("fs-outbox-{}", uuid::Uuid::now_v7()));
        let o = Outbox::open(&dir.join("o.db")).unwrap();
        (dir, o)
    }

    #[test]
    fn rows_of_a_removed_endpoint_become_dead_letters_with_the_reason() {
        let (dir, o) = outbox();
        for _ in 0..3 {
            o.enqueue(&Event::new(EventType::CameraDown), &["kept", "removed"])
                .unwrap();
        }
        let moved = o.dead_letter_removed_endpoints(&["kept"]).unwrap();
        assert_eq!(moved, vec![("removed".to_string(), 3)]);
        assert_eq!(o.depth("kept").unwrap(), 3);
        assert_eq!(o.depth("removed").unwrap(), 0);
        let dead = o.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 3);
        assert!(dead.iter().all(|d| d.endpoint == "removed"
            && d.last_error.as_deref() == Some("endpoint removed from the configuration")));
        // and they age out like any dead letter
        assert_eq!(o.purge(now_ms() + 1).unwrap(), 3);
        assert!(o
            .dead_letter_removed_endpoints(&["kept"])
            .unwrap()
            .is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fan_out_retry_delivery_and_dead_letters() {
        let (dir, o) = outbox();
        let e = Event::new(EventType::CameraDown);
        assert_eq!(o.enqueue(&e, &["a", "b"]).unwrap(), 2);
        assert_eq!(
            o.enqueue(&e, &["a", "b"]).unwrap(),
            0,
            "idempotent by (event, endpoint)"
        );
        let now = now_ms();
        let due = o.due("a", now, 10).unwrap();
        assert_eq!(due.len(), 1);
        o.mark_failed(due[0].seq, "HTTP 500", now + 60_000).unwrap();
        assert!(o.due("a", now, 10).unwrap().is_empty(), "backing off");
        assert_eq!(o.due("a", now + 60_000, 10).unwrap()[0].attempts, 1);
        o.mark_delivered(due[0].seq).unwrap();
        assert_eq!(o.depth("a").unwrap(), 0);
        assert_eq!(o.depth("b").unwrap(), 1);
        assert_eq!(o.dead_letter_expired("a", now_ms() + 1).unwrap(), 0);
        assert_eq!(o.dead_letter_expired("b", now_ms() + 1).unwrap(), 1);
        let dead = o.dead_letters(10).unwrap();
        assert_eq!((dead.len(), dead[0].endpoint.as_str()), (1, "b"));
        assert_eq!(o.redeliver(None).unwrap(), 1);
        assert_eq!(o.due("b", now_ms(), 10).unwrap().len(), 1);
        drop(o);
        // Reopened (as after a crash): pending rows are still there.
        let o = Outbox::open(&dir.join("o.db")).unwrap();
        assert_eq!(o.depth("b").unwrap(), 1);
        // retention: the delivered row of `a` goes, the pending row of `b` stays
        assert_eq!(o.purge(now_ms() - 60_000).unwrap(), 0);
        assert_eq!(o.purge(now_ms() + 1).unwrap(), 1);
        assert_eq!(o.depth("b").unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn naming(id: uuid::Uuid, name: &str) -> Event {
        let mut e = Event::new(EventType::IdentityRecognized);
        e.identity = Some(crate::events::EventIdentity {
            id,
            name: name.into(),
            face_id: None,
        });
        e
    }

    /// An erasure finds its rows by the identity's index, not by reading every payload;
    /// an outbox written before the column existed is given it, filled from its payloads,
    /// and scrubbed the same.
    #[test]
    fn erasure_finds_its_rows_by_index_also_in_an_outbox_from_before_the_column() {
        let dir = std::env::temp_dir().join(format!("fs-outbox-{}", uuid::Uuid::now_v7()));
        let path = dir.join("o.db");
        let (alice, bob) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let old = naming(alice, "Alice");
        {
            // the schema of the release before: no identity column
            crate::private_files::prepare_database(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
                    endpoint TEXT NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL,
                    created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_ms INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                    last_error TEXT, delivered_ms INTEGER, UNIQUE (event_id, endpoint))",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO outbox (event_id, endpoint, event_type, payload, created_ms, next_attempt_ms)
                 VALUES (?1, 'hook', 'identity.recognized', ?2, 0, 0)",
                params![old.id.to_string(), serde_json::to_string(&old).unwrap()],
            )
            .unwrap();
        }
        let o = Outbox::open(&path).unwrap();
        let new = naming(alice, "Alice");
        o.enqueue(&new, &["hook", "bus"]).unwrap();
        o.enqueue(&naming(bob, "Bob"), &["hook"]).unwrap();
        let plan: Vec<String> = o
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {SCRUB_ROWS}"))
            .unwrap()
            .query_map([alice.to_string()], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX outbox_identity")),
            "{plan:?}"
        );
        let mut ended = Event::new(EventType::TrackEnded);
        ended.identity = naming(alice, "Alice").identity;
        o.enqueue(&ended, &["hook"]).unwrap();
        let scrubbed = o.scrub_identity(alice).unwrap();
        let mut expected = vec![old.id, new.id, ended.id];
        expected.sort();
        assert_eq!(scrubbed.events, expected);
        // the recognitions are gone (three pending rows), the track's end stays without her
        let mut dropped = scrubbed.dropped_pending.clone();
        dropped.sort();
        assert_eq!(dropped, ["bus", "hook", "hook"]);
        let payloads: Vec<String> = o
            .conn()
            .prepare("SELECT payload FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(payloads.len(), 2, "{payloads:?}");
        assert!(
            !payloads
                .iter()
                .any(|p| p.contains("Alice") || p.contains(&alice.to_string())),
            "{payloads:?}"
        );
        assert!(payloads.iter().any(|p| p.contains("Bob")));
        std::fs::remove_dir_all(dir).ok();
    }
}
