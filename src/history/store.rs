//! The appearance store on SQLite: one owner-only file (`history.database`, WAL,
//! `secure_delete`), times as epoch milliseconds so retention is one indexed range
//! delete, and a search audit table beside it.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{Appearance, AppearanceStore, AuditEntry, HistoryError, Stored};
use crate::vectors::{embedding_bytes, embedding_from};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS appearances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    track_id TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    node TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    model TEXT NOT NULL,
    template BLOB NOT NULL,
    quality REAL NOT NULL,
    event_id TEXT,
    identity_id TEXT,
    similarity REAL,
    shot BLOB
);
CREATE INDEX IF NOT EXISTS appearances_first_seen ON appearances(first_seen_ms);
CREATE INDEX IF NOT EXISTS appearances_last_seen ON appearances(last_seen_ms);
CREATE INDEX IF NOT EXISTS appearances_identity ON appearances(identity_id);
CREATE TABLE IF NOT EXISTS search_audit (
    at_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    key_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    results INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS search_audit_at ON search_audit(at_ms);
";

/// Columns of a [`Stored`] row, without the shot.
const COLUMNS: &str = "seq, track_id, camera, node, first_seen_ms, last_seen_ms, model, template, \
                       quality, event_id, identity_id, similarity, shot IS NOT NULL, spans";

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn uuid_column(raw: Option<String>) -> Option<Uuid> {
    raw.and_then(|s| Uuid::parse_str(&s).ok())
}

fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let template: Vec<u8> = row.get(7)?;
    let (first, last) = (time(row.get(4)?), time(row.get(5)?));
    let spans: Option<String> = row.get(13)?;
    Ok(Stored {
        seq: row.get(0)?,
        appearance: Appearance {
            track_id: uuid_column(Some(row.get(1)?)).unwrap_or_default(),
            camera: row.get(2)?,
            node: row.get(3)?,
            first_seen: first,
            last_seen: last,
            model: row.get(6)?,
            template: embedding_from(&template),
            quality: row.get(8)?,
            event_id: uuid_column(row.get(9)?),
            identity: uuid_column(row.get(10)?),
            similarity: row.get(11)?,
            shot: None,
            spans: Appearance::spans_from_column(spans.as_deref(), first, last),
        },
        has_shot: row.get(12)?,
    })
}

const INSERT: &str =
    "INSERT INTO appearances (track_id, camera, node, first_seen_ms, last_seen_ms, model, template,
                              quality, event_id, identity_id, similarity, shot, spans)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// Write one appearance with the (cached) insert statement; its row number.
fn insert_row(conn: &Connection, a: &Appearance) -> rusqlite::Result<i64> {
    conn.prepare_cached(INSERT)?.execute(params![
        a.track_id.to_string(),
        a.camera,
        a.node,
        a.first_seen.timestamp_millis(),
        a.last_seen.timestamp_millis(),
        a.model,
        embedding_bytes(&a.template),
        a.quality,
        a.event_id.map(|u| u.to_string()),
        a.identity.map(|u| u.to_string()),
        a.similarity,
        a.shot,
        a.spans_column(),
    ])?;
    Ok(conn.last_insert_rowid())
}

/// SQLite-backed appearance store.
pub struct SqliteHistory {
    conn: Mutex<Connection>,
}

impl SqliteHistory {
    /// Open (create) the store at `path`: an owner-only file in an owner-only folder.
    pub fn open(path: &Path) -> Result<SqliteHistory, HistoryError> {
        // a record people search, not a queue: committed appearances survive a power cut
        let conn = crate::private_files::open_database(path, SCHEMA, true).map_err(storage)?;
        // an appearance's spans (one per track of it), added after the first release: a
        // store written before gets the column; its rows are one span each
        crate::private_files::add_column_if_missing(&conn, "appearances", "spans", "TEXT")
            .map_err(storage)?;
        Ok(SqliteHistory {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AppearanceStore for SqliteHistory {
    /// Keep `a`: its row number, and that of the row it replaced (an appearance of the
    /// same track).
    fn insert(&self, a: &Appearance) -> Result<(i64, Option<i64>), HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        let replaced: Option<i64> = tx
            .query_row(
                "DELETE FROM appearances WHERE track_id = ?1 RETURNING seq",
                params![a.track_id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        let seq = insert_row(&tx, a).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok((seq, replaced))
    }

    /// Many appearances in one transaction (benchmarks, imports); their row numbers.
    fn insert_many(&self, all: &[Appearance]) -> Result<Vec<i64>, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        let seqs = all
            .iter()
            .map(|a| insert_row(&tx, a))
            .collect::<rusqlite::Result<Vec<i64>>>()
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(seqs)
    }

    /// Every appearance of `model`, in order of `first_seen`, handed to `f` one by one
    /// (the index is built from them at start).
    fn for_each(
        &self,
        model: &str,
        f: &mut (dyn FnMut(Stored) + Send),
    ) -> Result<(), HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM appearances WHERE model = ?1 ORDER BY first_seen_ms, seq"
            ))
            .map_err(storage)?;
        let rows = stmt.query_map(params![model], stored).map_err(storage)?;
        for row in rows {
            f(row.map_err(storage)?);
        }
        Ok(())
    }

    /// The rows numbered `seqs` (those still there), in no particular order.
    fn get_many(&self, seqs: &[i64]) -> Result<Vec<Stored>, HistoryError> {
        let conn = self.conn();
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM appearances WHERE seq IN ({marks})"
                ))
                .map_err(storage)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(chunk), stored)
                .map_err(storage)?;
            for row in rows {
                out.push(row.map_err(storage)?);
            }
        }
        Ok(out)
    }

    /// One appearance by its track id.
    fn get(&self, track: Uuid) -> Result<Stored, HistoryError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM appearances WHERE track_id = ?1"),
                params![track.to_string()],
                stored,
            )
            .optional()
            .map_err(storage)?
            .ok_or(HistoryError::NotFound(track))
    }

    /// The best shot (JPEG) of an appearance.
    fn shot(&self, track: Uuid) -> Result<Option<Vec<u8>>, HistoryError> {
        self.conn()
            .query_row(
                "SELECT shot FROM appearances WHERE track_id = ?1",
                params![track.to_string()],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map_err(storage)?
            .ok_or(HistoryError::NotFound(track))
    }

    /// The appearances recognised as `identity`, in order of `first_seen`.
    fn recognised_as(&self, identity: Uuid) -> Result<Vec<Stored>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM appearances WHERE identity_id = ?1 ORDER BY first_seen_ms"
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![identity.to_string()], stored)
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage)).collect()
    }

    /// Forget that these appearances were `identity` (it was erased); their row numbers.
    fn unlink(&self, identity: Uuid) -> Result<Vec<i64>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "UPDATE appearances SET identity_id = NULL WHERE identity_id = ?1 RETURNING seq",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![identity.to_string()], |r| r.get(0))
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage)).collect()
    }

    /// Delete the appearances numbered `seqs`; how many went.
    fn delete(&self, seqs: &[i64]) -> Result<usize, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        let mut n = 0;
        for chunk in seqs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            n += tx
                .execute(
                    &format!("DELETE FROM appearances WHERE seq IN ({marks})"),
                    rusqlite::params_from_iter(chunk),
                )
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(n)
    }

    /// Delete the appearances last seen before `cutoff`; their row numbers.
    fn delete_older(&self, cutoff: DateTime<Utc>) -> Result<Vec<i64>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("DELETE FROM appearances WHERE last_seen_ms < ?1 RETURNING seq")
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![cutoff.timestamp_millis()], |r| r.get(0))
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage)).collect()
    }

    fn count(&self) -> Result<usize, HistoryError> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM appearances", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(storage)
    }

    /// Write one audit entry.
    fn audit(&self, entry: &AuditEntry) -> Result<(), HistoryError> {
        self.conn()
            .execute(
                "INSERT INTO search_audit (at_ms, node, key_name, kind, detail, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    entry.at.timestamp_millis(),
                    entry.node,
                    entry.key,
                    entry.kind,
                    entry.detail,
                    entry.results as i64
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    /// The latest `limit` audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT at_ms, node, key_name, kind, detail, results FROM search_audit
                 ORDER BY at_ms DESC, rowid DESC LIMIT ?1",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(AuditEntry {
                    at: time(r.get(0)?),
                    node: r.get(1)?,
                    key: r.get(2)?,
                    kind: r.get(3)?,
                    detail: r.get(4)?,
                    results: r.get::<_, i64>(5)? as usize,
                })
            })
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage)).collect()
    }
}
