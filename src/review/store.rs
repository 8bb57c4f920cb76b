//! The review store: kept unknown tracks in one SQLite file (WAL), shots in their own
//! table deleted with their track (`ON DELETE CASCADE`). Times are kept as epoch
//! milliseconds so retention is one indexed range delete.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{Grouping, ReviewError, TrackSummary, UnknownTrack};
use crate::vectors::{embedding_bytes, embedding_from};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS unknown_tracks (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    model TEXT NOT NULL,
    template BLOB NOT NULL,
    quality REAL NOT NULL,
    similarity REAL
);
CREATE INDEX IF NOT EXISTS unknown_tracks_last_seen ON unknown_tracks(last_seen_ms);
CREATE TABLE IF NOT EXISTS shots (
    track_id TEXT NOT NULL REFERENCES unknown_tracks(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    quality REAL NOT NULL,
    embedding BLOB NOT NULL,
    jpeg BLOB NOT NULL,
    PRIMARY KEY (track_id, n)
);
";

fn storage(e: impl std::fmt::Display) -> ReviewError {
    ReviewError::Storage(e.to_string())
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// SQLite-backed store of unknown tracks kept for review.
///
/// One lock guards the connection and the groups together: every call takes it once and
/// nothing inside takes another, so no two calls can wait on each other (a removal that
/// held the connection and waited for the groups, beside a listing that held the groups
/// and waited for the connection, hung both and every later call).
pub struct ReviewStore {
    inner: Mutex<Inner>,
    /// Held by an enrolment or a dismissal from reading its tracks to removing them, so a
    /// track is either enrolled or dismissed, never both ([`ReviewStore::decision`]).
    decisions: Mutex<()>,
}

struct Inner {
    conn: Connection,
    /// The tracks' groups, kept up to date as tracks are stored and removed (built at the
    /// first listing).
    grouping: Option<Grouping>,
}

impl ReviewStore {
    /// Open (create) the store at `path`: an owner-only file in an owner-only folder.
    pub fn open(path: &Path) -> Result<ReviewStore, ReviewError> {
        // a convenience queue, not a record: no fsync per track
        let conn = crate::private_files::open_database(path, SCHEMA, false).map_err(storage)?;
        Ok(ReviewStore {
            inner: Mutex::new(Inner {
                conn,
                grouping: None,
            }),
            decisions: Mutex::new(()),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // transactions roll back on a panic, so a poisoned lock is still usable
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guard one decision on tracks (an enrolment or a dismissal) holds from reading
    /// its tracks to removing them: a track being enrolled cannot be dismissed meanwhile
    /// (nor enrolled twice); the second request finds the tracks gone.
    pub fn decision(&self) -> std::sync::MutexGuard<'_, ()> {
        self.decisions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `track` (replacing a track of the same id), and put it into its group.
    pub fn insert(&self, track: &UnknownTrack) -> Result<(), ReviewError> {
        let mut inner = self.inner();
        write(&mut inner.conn, track)?;
        if let Some(g) = inner.grouping.as_mut() {
            g.add(track.id, &track.model, &track.template, track.quality);
        }
        Ok(())
    }

    /// Kept tracks last seen at or after `since`, most recently seen first.
    pub fn list(&self, since: Option<DateTime<Utc>>) -> Result<Vec<TrackSummary>, ReviewError> {
        rows(&self.inner().conn, since, true)
    }

    /// Every kept track without its template (empty), most recently seen first: what a
    /// listing shows, read without the template blobs.
    pub fn summaries(&self) -> Result<Vec<TrackSummary>, ReviewError> {
        rows(&self.inner().conn, None, false)
    }

    /// Run `f` on the tracks' groups (by `threshold`), brought up to date with `all`, the
    /// store's current tracks ([`ReviewStore::summaries`]): tracks gone are taken out,
    /// tracks stored by another process are put in. Built from every track at the first
    /// call (or when the threshold changes).
    pub fn with_groups<R>(
        &self,
        threshold: f32,
        all: &[TrackSummary],
        f: impl FnOnce(&Grouping) -> R,
    ) -> Result<R, ReviewError> {
        let mut inner = self.inner();
        let Inner { conn, grouping } = &mut *inner;
        if grouping.as_ref().is_none_or(|g| g.threshold() != threshold) {
            *grouping = Some(Grouping::build(threshold, &rows(conn, None, true)?));
        }
        let grouping = grouping.as_mut().expect("built above");
        let present: std::collections::HashSet<Uuid> = all.iter().map(|t| t.id).collect();
        grouping.retain(|id| present.contains(&id));
        let missing: Vec<Uuid> = all
            .iter()
            .map(|t| t.id)
            .filter(|&id| !grouping.contains(id))
            .collect();
        for id in missing {
            match get(conn, id) {
                Ok(track) => grouping.add(track.id, &track.model, &track.template, track.quality),
                Err(ReviewError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(f(grouping))
    }

    /// One kept track with its shots.
    pub fn get(&self, id: Uuid) -> Result<UnknownTrack, ReviewError> {
        get(&self.inner().conn, id)
    }

    /// Shot `n` of track `id`, JPEG.
    pub fn shot_jpeg(&self, id: Uuid, n: usize) -> Result<Vec<u8>, ReviewError> {
        let conn = &self.inner().conn;
        let key = id.to_string();
        let jpeg: Option<Vec<u8>> = conn
            .query_row(
                "SELECT jpeg FROM shots WHERE track_id = ?1 AND n = ?2",
                params![key, n as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(storage)?;
        if let Some(jpeg) = jpeg {
            return Ok(jpeg);
        }
        let shots: Option<i64> = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM shots WHERE track_id = t.id) FROM unknown_tracks t WHERE t.id = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(storage)?;
        match shots {
            None => Err(ReviewError::NotFound(id)),
            Some(shots) => Err(ReviewError::NoShot {
                track: id,
                shots: shots as usize,
                index: n,
            }),
        }
    }

    /// Delete the tracks `ids` (with their shots); returns how many were kept.
    pub fn remove(&self, ids: &[Uuid]) -> Result<usize, ReviewError> {
        let mut inner = self.inner();
        let tx = inner.conn.transaction().map_err(storage)?;
        let mut removed = 0;
        for id in ids {
            removed += tx
                .execute(
                    "DELETE FROM unknown_tracks WHERE id = ?1",
                    params![id.to_string()],
                )
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        if let Some(g) = inner.grouping.as_mut() {
            ids.iter().for_each(|id| g.remove(*id));
        }
        Ok(removed)
    }

    /// Delete tracks last seen before `now - retention_s`, then the oldest past
    /// `max_tracks`; returns how many went.
    pub fn prune(
        &self,
        now: DateTime<Utc>,
        retention_s: u64,
        max_tracks: usize,
    ) -> Result<usize, ReviewError> {
        let conn = &self.inner().conn;
        let cutoff = now.timestamp_millis() - (retention_s as i64).saturating_mul(1000);
        let expired = conn
            .execute(
                "DELETE FROM unknown_tracks WHERE last_seen_ms < ?1",
                params![cutoff],
            )
            .map_err(storage)?;
        let over = conn
            .execute(
                "DELETE FROM unknown_tracks WHERE id IN (
                     SELECT id FROM unknown_tracks ORDER BY last_seen_ms DESC, id LIMIT -1 OFFSET ?1)",
                params![max_tracks as i64],
            )
            .map_err(storage)?;
        Ok(expired + over)
    }

    /// Number of kept tracks.
    pub fn count(&self) -> Result<usize, ReviewError> {
        self.inner()
            .conn
            .query_row("SELECT COUNT(*) FROM unknown_tracks", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(storage)
    }
}

/// The kept tracks last seen at or after `since`, most recently seen first; without their
/// templates (empty) unless `templates`.
fn rows(
    conn: &Connection,
    since: Option<DateTime<Utc>>,
    templates: bool,
) -> Result<Vec<TrackSummary>, ReviewError> {
    let template_column = if templates { "t.template" } else { "x''" };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT t.id, t.camera, t.first_seen_ms, t.last_seen_ms, t.model, {template_column}, t.quality, t.similarity,
                    (SELECT group_concat(s.quality, ',') FROM (SELECT quality FROM shots WHERE track_id = t.id ORDER BY n) s)
             FROM unknown_tracks t WHERE t.last_seen_ms >= ?1 ORDER BY t.last_seen_ms DESC, t.id"
        ))
        .map_err(storage)?;
    let since = since.map_or(i64::MIN, |t| t.timestamp_millis());
    let rows = stmt
        .query_map(params![since], |row| {
            let id: String = row.get(0)?;
            let template: Vec<u8> = row.get(5)?;
            let shots: Option<String> = row.get(8)?;
            Ok((
                id,
                TrackSummary {
                    id: Uuid::nil(),
                    camera: row.get(1)?,
                    first_seen: time(row.get(2)?),
                    last_seen: time(row.get(3)?),
                    model: row.get(4)?,
                    template: embedding_from(&template),
                    quality: row.get(6)?,
                    similarity: row.get(7)?,
                    shots: shots
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|q| q.parse().ok())
                        .collect(),
                },
            ))
        })
        .map_err(storage)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mut summary) = row.map_err(storage)?;
        summary.id = Uuid::parse_str(&id).map_err(storage)?;
        out.push(summary);
    }
    Ok(out)
}

/// One kept track with its shots.
fn get(conn: &Connection, id: Uuid) -> Result<UnknownTrack, ReviewError> {
    let key = id.to_string();
    let track = conn
        .query_row(
            "SELECT camera, first_seen_ms, last_seen_ms, model, template, quality, similarity
             FROM unknown_tracks WHERE id = ?1",
            params![key],
            |row| {
                let template: Vec<u8> = row.get(4)?;
                Ok(UnknownTrack {
                    id,
                    camera: row.get(0)?,
                    first_seen: time(row.get(1)?),
                    last_seen: time(row.get(2)?),
                    model: row.get(3)?,
                    template: embedding_from(&template),
                    quality: row.get(5)?,
                    similarity: row.get(6)?,
                    shots: Vec::new(),
                })
            },
        )
        .optional()
        .map_err(storage)?
        .ok_or(ReviewError::NotFound(id))?;
    let mut stmt = conn
        .prepare("SELECT quality, embedding, jpeg FROM shots WHERE track_id = ?1 ORDER BY n")
        .map_err(storage)?;
    let shots = stmt
        .query_map(params![key], |row| {
            let embedding: Vec<u8> = row.get(1)?;
            Ok(super::ReviewShot {
                quality: row.get(0)?,
                embedding: embedding_from(&embedding),
                jpeg: row.get(2)?,
            })
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    Ok(UnknownTrack { shots, ..track })
}

/// Store `track` in one transaction, replacing a track of the same id.
fn write(conn: &mut Connection, track: &UnknownTrack) -> Result<(), ReviewError> {
    let tx = conn.transaction().map_err(storage)?;
    let id = track.id.to_string();
    tx.execute("DELETE FROM unknown_tracks WHERE id = ?1", params![id])
        .map_err(storage)?;
    tx.execute(
        "INSERT INTO unknown_tracks (id, camera, first_seen_ms, last_seen_ms, model, template, quality, similarity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            track.camera,
            track.first_seen.timestamp_millis(),
            track.last_seen.timestamp_millis(),
            track.model,
            embedding_bytes(&track.template),
            track.quality,
            track.similarity,
        ],
    )
    .map_err(storage)?;
    for (n, shot) in track.shots.iter().enumerate() {
        tx.execute(
            "INSERT INTO shots (track_id, n, quality, embedding, jpeg) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                n as i64,
                shot.quality,
                embedding_bytes(&shot.embedding),
                shot.jpeg
            ],
        )
        .map_err(storage)?;
    }
    tx.commit().map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::ReviewShot;

    fn kept(n: u128, seen_s: i64, shots: usize) -> UnknownTrack {
        let t = DateTime::from_timestamp(1_800_000_000 + seen_s, 0).unwrap();
        UnknownTrack {
            id: Uuid::from_u128(n),
            camera: format!("cam{}", n % 2),
            first_seen: t - chrono::Duration::seconds(3),
            last_seen: t,
            model: "sface@1".into(),
            template: vec![0.6, 0.8],
            quality: 0.7,
            similarity: Some(0.21),
            shots: (0..shots)
                .map(|k| ReviewShot {
                    quality: 0.7 - k as f32 * 0.1,
                    embedding: vec![1.0, k as f32],
                    jpeg: vec![0xFF, 0xD8, k as u8],
                })
                .collect(),
        }
    }

    fn store() -> (ReviewStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("facestream-review-{}", Uuid::now_v7()));
        (ReviewStore::open(&dir.join("review.db")).unwrap(), dir)
    }

    #[test]
    fn tracks_round_trip_with_their_shots_and_leave_with_them() {
        let (store, dir) = store();
        store.insert(&kept(1, 10, 3)).unwrap();
        store.insert(&kept(2, 20, 1)).unwrap();
        let listed = store.list(None).unwrap();
        assert_eq!(
            listed.iter().map(|t| t.id.as_u128()).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(listed[1].shots.len(), 3);
        assert!((listed[1].shots[2] - 0.5).abs() < 1e-6);
        assert_eq!(listed[1].template, vec![0.6, 0.8]);
        assert_eq!(listed[1].similarity, Some(0.21));
        let one = store.get(Uuid::from_u128(1)).unwrap();
        assert_eq!(one.shots[1].embedding, vec![1.0, 1.0]);
        assert_eq!(one.camera, "cam1");
        assert_eq!(
            store.shot_jpeg(Uuid::from_u128(1), 2).unwrap(),
            vec![0xFF, 0xD8, 2]
        );
        assert!(matches!(
            store.shot_jpeg(Uuid::from_u128(2), 1),
            Err(ReviewError::NoShot {
                shots: 1,
                index: 1,
                ..
            })
        ));
        // since: only the track seen at 20 s
        let since = DateTime::from_timestamp(1_800_000_015, 0);
        assert_eq!(store.list(since).unwrap().len(), 1);
        assert_eq!(
            store
                .remove(&[Uuid::from_u128(1), Uuid::from_u128(9)])
                .unwrap(),
            1
        );
        assert!(matches!(
            store.get(Uuid::from_u128(1)),
            Err(ReviewError::NotFound(_))
        ));
        assert!(matches!(
            store.shot_jpeg(Uuid::from_u128(1), 0),
            Err(ReviewError::NotFound(_))
        ));
        let shots: i64 = store
            .inner()
            .conn
            .query_row("SELECT COUNT(*) FROM shots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(shots, 1, "the removed track's shots went with it");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn retention_and_the_track_cap_delete_the_oldest() {
        let (store, dir) = store();
        for n in 0..6 {
            store.insert(&kept(n, n as i64 * 100, 1)).unwrap();
        }
        // now = 550 s, retention 300 s: tracks seen before 250 s go (0, 100, 200)
        let now = DateTime::from_timestamp(1_800_000_550, 0).unwrap();
        assert_eq!(store.prune(now, 300, 100).unwrap(), 3);
        // then keep at most 2: the oldest remaining (300) goes
        assert_eq!(store.prune(now, 300, 2).unwrap(), 1);
        let left: Vec<u128> = store
            .list(None)
            .unwrap()
            .iter()
            .map(|t| t.id.as_u128())
            .collect();
        assert_eq!(left, vec![5, 4]);
        assert_eq!(store.count().unwrap(), 2);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Removals beside listings that find tracks stored by another process (the grouping
    /// then reads them through the connection): with the connection and the groups under
    /// two locks taken in opposite orders this hung within a few rounds; a watchdog fails
    /// the test instead of hanging it.
    #[test]
    fn removals_and_listings_running_together_never_hang() {
        let (store, dir) = store();
        let store = std::sync::Arc::new(store);
        let other = ReviewStore::open(&dir.join("review.db")).unwrap();
        store.with_groups(0.5, &[], |_| ()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let worker = store.clone();
        std::thread::spawn(move || {
            for round in 0..200u128 {
                // another process stores tracks; this one lists them and removes others
                let ids: Vec<Uuid> = (0..8).map(|k| Uuid::from_u128(round * 8 + k + 1)).collect();
                for (k, id) in ids.iter().enumerate() {
                    other.insert(&kept(id.as_u128(), k as i64, 1)).unwrap();
                }
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let all = worker.summaries().unwrap();
                        worker
                            .with_groups(0.5, &all, |g| g.groups_of(&all).len())
                            .unwrap();
                    });
                    s.spawn(|| {
                        let gone: Vec<Uuid> =
                            (0..8).map(|k| Uuid::from_u128(round * 8 + k + 1)).collect();
                        worker.remove(&gone).unwrap();
                    });
                });
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a removal and a listing hung each other (lock order)");
        assert_eq!(store.count().unwrap(), 0);
        std::fs::remove_dir_all(dir).ok();
    }
}
