//! The appearance history on PostgreSQL (`gallery.store = "postgres"`): every node writes
//! the tracks it decided to one `appearances` table, and every node's index follows the
//! `history_changes` feed, whose positions are taken under an advisory lock held until
//! commit (as the gallery's feed), so an appearance recorded on one node is found from
//! any node within a second, and a deletion or an erasure anywhere is applied everywhere.
//! The connection is [`crate::pg`]'s (reconnection, TCP and statement timeouts, the
//! shared schema); a lost database is [`HistoryError::Unavailable`].

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::Transaction;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Appearance, AppearanceStore, AuditEntry, HistoryChange, HistoryError, Stored};
use crate::pg::{CallError, Connection};
use crate::vectors::{embedding_bytes, embedding_from};

/// Advisory lock key of history writers ("fsgh").
const WRITE_LOCK: i64 = 0x6673_6768;
/// Feed rows older than this are pruned with retention (a node behind rebuilds).
const FEED_RETENTION_DAYS: i32 = 30;

const COLUMNS: &str = "seq, track_id, camera, node, first_seen_ms, last_seen_ms, model, template, \
                       quality, event_id, identity_id, similarity, shot IS NOT NULL, spans";

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn fail(e: CallError<::postgres::Error>) -> HistoryError {
    match e {
        CallError::Lost(lost) => HistoryError::Unavailable(format!(
            "the gallery database (PostgreSQL at {}) cannot be reached: {}; appearances are \
             not kept or searched until it is back",
            lost.target, lost.cause
        )),
        CallError::Failed(e) => HistoryError::Storage(e.to_string()),
    }
}

/// A row of [`COLUMNS`] starting at column `at`.
fn stored(r: &::postgres::Row, at: usize) -> Stored {
    let (first, last) = (time(r.get(at + 4)), time(r.get(at + 5)));
    Stored {
        seq: r.get(at),
        appearance: Appearance {
            track_id: r.get(at + 1),
            camera: r.get(at + 2),
            node: r.get(at + 3),
            first_seen: first,
            last_seen: last,
            model: r.get(at + 6),
            template: embedding_from(r.get::<_, &[u8]>(at + 7)),
            quality: r.get(at + 8),
            event_id: r.get(at + 9),
            identity: r.get(at + 10),
            similarity: r.get(at + 11),
            shot: None,
            spans: Appearance::spans_from_column(r.get(at + 13), first, last),
        },
        has_shot: r.get(at + 12),
    }
}

/// Append one change to the feed.
fn change(
    tx: &mut Transaction<'_>,
    kind: &str,
    seq: i64,
    first_ms: i64,
) -> Result<(), ::postgres::Error> {
    tx.execute(
        "INSERT INTO history_changes (pos, kind, seq, first_seen_ms)
         VALUES (nextval('history_change_seq'), $1, $2, $3)",
        &[&kind, &seq, &first_ms],
    )?;
    Ok(())
}

fn insert(
    tx: &mut Transaction<'_>,
    a: &Appearance,
) -> Result<(i64, Option<i64>), ::postgres::Error> {
    let replaced = tx.query_opt(
        "DELETE FROM appearances WHERE track_id = $1 RETURNING seq, first_seen_ms",
        &[&a.track_id],
    )?;
    if let Some(r) = &replaced {
        change(tx, "removed", r.get(0), r.get(1))?;
    }
    let first_ms = a.first_seen.timestamp_millis();
    let seq: i64 = tx
        .query_one(
            "INSERT INTO appearances (seq, track_id, camera, node, first_seen_ms, last_seen_ms, model,
                                      template, quality, event_id, identity_id, similarity, shot, spans)
             VALUES (nextval('appearance_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             RETURNING seq",
            &[
                &a.track_id,
                &a.camera,
                &a.node,
                &first_ms,
                &a.last_seen.timestamp_millis(),
                &a.model,
                &embedding_bytes(&a.template),
                &a.quality,
                &a.event_id,
                &a.identity,
                &a.similarity,
                &a.shot,
                &a.spans_column(),
            ],
        )?
        .get(0);
    change(tx, "added", seq, first_ms)?;
    Ok((seq, replaced.map(|r| r.get(0))))
}

/// Rows `(seq, first_seen_ms)` a statement returned, each recorded as `kind`.
fn record_all(
    tx: &mut Transaction<'_>,
    kind: &str,
    rows: &[::postgres::Row],
) -> Result<Vec<i64>, ::postgres::Error> {
    let mut seqs = Vec::with_capacity(rows.len());
    for r in rows {
        change(tx, kind, r.get(0), r.get(1))?;
        seqs.push(r.get(0));
    }
    Ok(seqs)
}

/// The shared appearance store.
pub struct PgHistory {
    db: Connection,
    /// Rows read per statement when the index is built ([`LOAD_PAGE`]).
    page: usize,
}

/// Rows one statement reads when a node builds its index (about 30 MB): each page is one
/// statement well within the 30-s statement timeout, where one statement for every row
/// failed start-up at a few million appearances.
pub const LOAD_PAGE: usize = 50_000;

impl PgHistory {
    /// Connect to `url` (the gallery's database) and bring its schema up to date.
    pub fn open(url: &str) -> Result<PgHistory, HistoryError> {
        Ok(PgHistory {
            db: {
                let db = Connection::new(url).map_err(|message| {
                    HistoryError::Storage(format!("invalid gallery.postgres_url: {message}"))
                })?;
                db.migrate().map_err(fail)?;
                db
            },
            page: LOAD_PAGE,
        })
    }

    /// Read `page` rows per statement when the index is built (tests: small pages).
    pub fn with_load_page(mut self, page: usize) -> PgHistory {
        self.page = page.max(1);
        self
    }

    fn run<T: Send>(
        &self,
        f: impl FnOnce(&mut ::postgres::Client) -> Result<T, ::postgres::Error> + Send,
    ) -> Result<T, HistoryError> {
        self.db.call(f).map_err(fail)
    }

    /// A transaction holding the writers' lock, so feed positions commit in order.
    fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, ::postgres::Error> + Send,
    ) -> Result<T, HistoryError> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl AppearanceStore for PgHistory {
    fn insert(&self, a: &Appearance) -> Result<(i64, Option<i64>), HistoryError> {
        self.write(|tx| insert(tx, a))
    }

    fn insert_many(&self, all: &[Appearance]) -> Result<Vec<i64>, HistoryError> {
        self.write(|tx| all.iter().map(|a| Ok(insert(tx, a)?.0)).collect())
    }

    fn for_each(
        &self,
        model: &str,
        f: &mut (dyn FnMut(Stored) + Send),
    ) -> Result<(), HistoryError> {
        // Keyset pages in (first_seen_ms, seq) order, each its own statement: a row added
        // or removed meanwhile is in the feed the index follows from its head (read
        // before), so nothing is lost between pages.
        let (mut after_ms, mut after_seq) = (i64::MIN, i64::MIN);
        let (mut loaded, started) = (0usize, std::time::Instant::now());
        let page = self.page as i64;
        loop {
            // each page streamed: the index takes a row while the server sends the next
            let (n, last) = self.run(|c| {
                let mut rows = c.query_raw(
                    &format!(
                        "SELECT {COLUMNS} FROM appearances
                         WHERE model = $1 AND (first_seen_ms, seq) > ($2, $3)
                         ORDER BY first_seen_ms, seq LIMIT $4"
                    ),
                    [
                        &model as &(dyn ::postgres::types::ToSql + Sync),
                        &after_ms,
                        &after_seq,
                        &page,
                    ],
                )?;
                let (mut n, mut last) = (0usize, (after_ms, after_seq));
                while let Some(r) = rows.next()? {
                    let s = stored(&r, 0);
                    last = (s.appearance.first_seen.timestamp_millis(), s.seq);
                    f(s);
                    n += 1;
                }
                Ok((n, last))
            })?;
            (after_ms, after_seq) = last;
            loaded += n;
            if n < self.page {
                if loaded > self.page {
                    tracing::info!(
                        loaded,
                        seconds = started.elapsed().as_secs_f32(),
                        "appearance index loaded"
                    );
                }
                return Ok(());
            }
            tracing::info!(loaded, "appearance index: loading");
        }
    }

    fn get_many(&self, seqs: &[i64]) -> Result<Vec<Stored>, HistoryError> {
        let seqs = seqs.to_vec();
        self.run(move |c| {
            Ok(c.query(
                &format!("SELECT {COLUMNS} FROM appearances WHERE seq = ANY($1)"),
                &[&seqs],
            )?
            .iter()
            .map(|r| stored(r, 0))
            .collect())
        })
    }

    fn get(&self, track: Uuid) -> Result<Stored, HistoryError> {
        self.run(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM appearances WHERE track_id = $1"),
                &[&track],
            )
        })?
        .map(|r| stored(&r, 0))
        .ok_or(HistoryError::NotFound(track))
    }

    fn shot(&self, track: Uuid) -> Result<Option<Vec<u8>>, HistoryError> {
        self.run(|c| {
            c.query_opt(
                "SELECT shot FROM appearances WHERE track_id = $1",
                &[&track],
            )
        })?
        .map(|r| r.get::<_, Option<Vec<u8>>>(0))
        .ok_or(HistoryError::NotFound(track))
    }

    fn recognised_as(&self, identity: Uuid) -> Result<Vec<Stored>, HistoryError> {
        self.run(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {COLUMNS} FROM appearances WHERE identity_id = $1 ORDER BY first_seen_ms"
                ),
                &[&identity],
            )?
            .iter()
            .map(|r| stored(r, 0))
            .collect())
        })
    }

    fn unlink(&self, identity: Uuid) -> Result<Vec<i64>, HistoryError> {
        self.write(|tx| {
            let rows = tx.query(
                "UPDATE appearances SET identity_id = NULL WHERE identity_id = $1
                 RETURNING seq, first_seen_ms",
                &[&identity],
            )?;
            record_all(tx, "unlinked", &rows)
        })
    }

    fn delete(&self, seqs: &[i64]) -> Result<usize, HistoryError> {
        let seqs = seqs.to_vec();
        self.write(move |tx| {
            let rows = tx.query(
                "DELETE FROM appearances WHERE seq = ANY($1) RETURNING seq, first_seen_ms",
                &[&seqs],
            )?;
            Ok(record_all(tx, "removed", &rows)?.len())
        })
    }

    fn delete_older(&self, cutoff: DateTime<Utc>) -> Result<Vec<i64>, HistoryError> {
        self.write(|tx| {
            let rows = tx.query(
                "DELETE FROM appearances WHERE last_seen_ms < $1 RETURNING seq, first_seen_ms",
                &[&cutoff.timestamp_millis()],
            )?;
            let seqs = record_all(tx, "removed", &rows)?;
            // the feed itself: old positions go, and how far is recorded (a node that was
            // away longer rebuilds its index from the table)
            let pruned = tx.query(
                "DELETE FROM history_changes WHERE at < now() - make_interval(days => $1)
                 AND pos < (SELECT max(pos) FROM history_changes) RETURNING pos",
                &[&FEED_RETENTION_DAYS],
            )?;
            if let Some(newest) = pruned.iter().map(|r| r.get::<_, i64>(0)).max() {
                tx.execute(
                    "UPDATE history_feed SET pruned_through = greatest(pruned_through, $1)",
                    &[&newest],
                )?;
            }
            Ok(seqs)
        })
    }

    fn count(&self) -> Result<usize, HistoryError> {
        self.run(|c| c.query_one("SELECT count(*) FROM appearances", &[]))
            .map(|r| r.get::<_, i64>(0) as usize)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), HistoryError> {
        self.run(|c| {
            c.execute(
                "INSERT INTO search_audit (at_ms, node, key_name, kind, detail, results)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &entry.at.timestamp_millis(),
                    &entry.node,
                    &entry.key,
                    &entry.kind,
                    &entry.detail,
                    &(entry.results as i32),
                ],
            )
        })?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, HistoryError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT at_ms, node, key_name, kind, detail, results FROM search_audit
                 ORDER BY at_ms DESC LIMIT $1",
                &[&(limit as i64)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: time(r.get(0)),
                node: r.get(1),
                key: r.get(2),
                kind: r.get(3),
                detail: r.get(4),
                results: r.get::<_, i32>(5) as usize,
            })
            .collect())
    }

    fn feed_head(&self) -> Result<Option<i64>, HistoryError> {
        self.run(|c| c.query_one("SELECT COALESCE(max(pos), 0) FROM history_changes", &[]))
            .map(|r| Some(r.get(0)))
    }

    fn changes_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryChange>>, HistoryError> {
        let rows = self.run(|c| {
            let pruned: i64 = c
                .query_one("SELECT pruned_through FROM history_feed", &[])?
                .get(0);
            if after < pruned {
                return Ok(None);
            }
            Ok(Some(c.query(
                &format!(
                    "SELECT ch.pos, ch.kind, ch.seq, ch.first_seen_ms, {}
                     FROM history_changes ch
                     LEFT JOIN appearances a ON a.seq = ch.seq AND ch.kind = 'added'
                     WHERE ch.pos > $1 ORDER BY ch.pos LIMIT {}",
                    COLUMNS
                        .split(", ")
                        .map(|c| format!("a.{c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    limit.max(1)
                ),
                &[&after],
            )?))
        })?;
        let Some(rows) = rows else {
            return Ok(None);
        };
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let (pos, kind, seq, first_ms): (i64, &str, i64, i64) =
                        (r.get(0), r.get(1), r.get(2), r.get(3));
                    match kind {
                        "added" => match r.get::<_, Option<i64>>(4) {
                            Some(_) => HistoryChange::Added(pos, Box::new(stored(r, 4))),
                            // deleted since: its removal follows in the feed
                            None => HistoryChange::Skip(pos),
                        },
                        "unlinked" => HistoryChange::Unlinked(pos, seq, first_ms),
                        _ => HistoryChange::Removed(pos, seq, first_ms),
                    }
                })
                .collect(),
        ))
    }
}
