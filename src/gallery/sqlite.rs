//! The embedded gallery store: one SQLite file in WAL mode.
//!
//! `synchronous = FULL`: an enrolment acknowledged to the client survives a crash of the
//! process (SIGKILL) and of the machine. Templates reference their identity with
//! `ON DELETE CASCADE`, so erasing an identity erases its templates in the same
//! transaction.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::erasure::Erasure;
use super::{
    validate_metadata, validate_name, GalleryError, GalleryStore, Identity, IdentityUpdate,
    NewIdentity, StaleIdentity, Template,
};
use crate::vectors::{embedding_bytes, embedding_from};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    quality REAL NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL,
    crop BLOB
);
CREATE INDEX IF NOT EXISTS templates_identity ON templates(identity_id);
CREATE INDEX IF NOT EXISTS templates_model ON templates(model);
-- the erasure log (src/gallery/erasure.rs): identity ids only, written with the deletion
CREATE TABLE IF NOT EXISTS erasures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id TEXT NOT NULL,
    erased_at TEXT NOT NULL,
    appearances INTEGER NOT NULL
);
";

/// SQLite-backed [`GalleryStore`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn storage(e: impl std::fmt::Display) -> GalleryError {
    GalleryError::Storage(e.to_string())
}

fn parse_uuid(s: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_time(s: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

const IDENTITY_COLUMNS: &str =
    "i.id, i.name, i.metadata, i.created, i.updated, (SELECT COUNT(*) FROM templates t WHERE t.identity_id = i.id)";

fn identity_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Identity> {
    let metadata: String = row.get(2)?;
    Ok(Identity {
        id: parse_uuid(row.get(0)?)?,
        name: row.get(1)?,
        metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
        created: parse_time(row.get(3)?)?,
        updated: parse_time(row.get(4)?)?,
        faces: row.get::<_, i64>(5)? as usize,
    })
}

fn template_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Template> {
    let embedding: Vec<u8> = row.get(3)?;
    Ok(Template {
        id: parse_uuid(row.get(0)?)?,
        identity_id: parse_uuid(row.get(1)?)?,
        model: row.get(2)?,
        embedding: embedding_from(&embedding),
        quality: row.get::<_, f64>(4)? as f32,
        source: row.get(5)?,
        created: parse_time(row.get(6)?)?,
        crop: row.get(7)?,
    })
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, GalleryError> {
        // biometric templates: owner-only folder and file
        let conn = crate::private_files::open_database(path, SCHEMA, true).map_err(storage)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GalleryStore for SqliteStore {
    fn external_version(&self) -> Result<Option<i64>, GalleryError> {
        // SQLite's data_version changes when another connection commits
        self.conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map(Some)
            .map_err(storage)
    }

    fn create_identity(&self, new: NewIdentity) -> Result<Identity, GalleryError> {
        let identity = new.into_identity()?;
        self.conn()
            .execute(
                "INSERT INTO identities (id, name, metadata, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![
                    identity.id.to_string(),
                    identity.name,
                    identity.metadata.to_string(),
                    identity.created.to_rfc3339()
                ],
            )
            .map_err(storage)?;
        Ok(identity)
    }

    fn list_identities(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Identity>, usize), GalleryError> {
        let conn = self.conn();
        let total: i64 = conn
            .query_row("SELECT COUNT(*) FROM identities", [], |r| r.get(0))
            .map_err(storage)?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities i ORDER BY i.created, i.id LIMIT ?1 OFFSET ?2"
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![limit as i64, offset as i64], identity_row)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok((rows, total as usize))
    }

    fn get_identity(&self, id: Uuid) -> Result<Identity, GalleryError> {
        self.conn()
            .query_row(
                &format!("SELECT {IDENTITY_COLUMNS} FROM identities i WHERE i.id = ?1"),
                params![id.to_string()],
                identity_row,
            )
            .optional()
            .map_err(storage)?
            .ok_or(GalleryError::IdentityNotFound(id))
    }

    fn update_identity(&self, id: Uuid, update: IdentityUpdate) -> Result<Identity, GalleryError> {
        let name = update.name.as_deref().map(validate_name).transpose()?;
        let metadata = match update.metadata {
            Some(m) => Some(validate_metadata(Some(m))?),
            None => None,
        };
        let changed = self
            .conn()
            .execute(
                "UPDATE identities SET name = COALESCE(?2, name), metadata = COALESCE(?3, metadata), updated = ?4 WHERE id = ?1",
                params![
                    id.to_string(),
                    name,
                    metadata.map(|m| m.to_string()),
                    Utc::now().to_rfc3339()
                ],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(GalleryError::IdentityNotFound(id));
        }
        self.get_identity(id)
    }

    fn delete_identity(&self, id: Uuid, appearances: bool) -> Result<usize, GalleryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        let templates = tx
            .execute(
                "DELETE FROM templates WHERE identity_id = ?1",
                params![id.to_string()],
            )
            .map_err(storage)?;
        let identities = tx
            .execute(
                "DELETE FROM identities WHERE id = ?1",
                params![id.to_string()],
            )
            .map_err(storage)?;
        if identities == 0 {
            return Err(GalleryError::IdentityNotFound(id));
        }
        tx.execute(
            "INSERT INTO erasures (identity_id, erased_at, appearances) VALUES (?1, ?2, ?3)",
            params![id.to_string(), Utc::now().to_rfc3339(), appearances],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(templates)
    }

    fn erasures_since(&self, after: i64, limit: usize) -> Result<Vec<Erasure>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, identity_id, erased_at, appearances FROM erasures
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![after, limit.max(1) as i64], |r| {
                Ok(Erasure {
                    seq: r.get(0)?,
                    identity: parse_uuid(r.get(1)?)?,
                    at: parse_time(r.get(2)?)?,
                    appearances: r.get(3)?,
                })
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows)
    }

    fn erasure_head(&self) -> Result<i64, GalleryError> {
        self.conn()
            .query_row("SELECT COALESCE(max(seq), 0) FROM erasures", [], |r| {
                r.get(0)
            })
            .map_err(storage)
    }

    fn add_template(&self, t: &Template) -> Result<(), GalleryError> {
        self.add_templates(std::slice::from_ref(t))
    }

    fn add_templates(&self, templates: &[Template]) -> Result<(), GalleryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        for t in templates {
            let result = tx.execute(
                "INSERT INTO templates (id, identity_id, model, embedding, quality, source, created, crop)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t.id.to_string(),
                    t.identity_id.to_string(),
                    t.model,
                    embedding_bytes(&t.embedding),
                    f64::from(t.quality),
                    t.source,
                    t.created.to_rfc3339(),
                    t.crop
                ],
            );
            match result {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(GalleryError::IdentityNotFound(t.identity_id));
                }
                Err(e) => return Err(storage(e)),
            }
        }
        // dropped without commit on an error above: nothing was added
        tx.commit().map_err(storage)
    }

    fn list_templates(&self, identity: Uuid) -> Result<Vec<Template>, GalleryError> {
        self.get_identity(identity)?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, identity_id, model, embedding, quality, source, created, crop
                 FROM templates WHERE identity_id = ?1 ORDER BY created, id",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![identity.to_string()], template_row)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows)
    }

    fn delete_template(&self, identity: Uuid, face: Uuid) -> Result<(), GalleryError> {
        self.get_identity(identity)?;
        let n = self
            .conn()
            .execute(
                "DELETE FROM templates WHERE id = ?1 AND identity_id = ?2",
                params![face.to_string(), identity.to_string()],
            )
            .map_err(storage)?;
        if n == 0 {
            return Err(GalleryError::FaceNotFound(face));
        }
        Ok(())
    }

    fn templates_for_model(&self, model: &str) -> Result<Vec<Template>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, identity_id, model, embedding, quality, source, created, NULL
                 FROM templates WHERE model = ?1 ORDER BY identity_id, id",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![model], template_row)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows)
    }

    fn stale_identities(&self, model: &str) -> Result<Vec<StaleIdentity>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT i.id, i.name, group_concat(DISTINCT t.model), MIN(t.crop IS NOT NULL)
                 FROM identities i JOIN templates t ON t.identity_id = i.id
                 WHERE t.model != ?1 GROUP BY i.id ORDER BY i.name",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![model], |r| {
                let models: String = r.get(2)?;
                Ok(StaleIdentity {
                    id: parse_uuid(r.get(0)?)?,
                    name: r.get(1)?,
                    models: models.split(',').map(str::to_string).collect(),
                    crops_kept: r.get::<_, i64>(3)? == 1,
                })
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows)
    }

    fn names(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name FROM identities WHERE id = ?1")
            .map_err(storage)?;
        ids.iter()
            .map(|id| {
                stmt.query_row(params![id.to_string()], |r| r.get::<_, String>(0))
                    .optional()
                    .map_err(storage)
                    .map(|name| (*id, name.unwrap_or_default()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempdir::Dir, SqliteStore) {
        let dir = tempdir::Dir::new();
        let store = SqliteStore::open(&dir.0.join("g.db")).unwrap();
        (dir, store)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!("fs-gallery-{}", uuid::Uuid::now_v7()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn template(identity: Uuid, model: &str, v: f32, crop: bool) -> Template {
        Template {
            id: Uuid::now_v7(),
            identity_id: identity,
            model: model.into(),
            embedding: vec![v; 4],
            quality: 0.8,
            source: "test".into(),
            created: Utc::now(),
            crop: crop.then(|| vec![1, 2, 3]),
        }
    }

    #[test]
    fn templates_added_together_are_all_kept_or_none() {
        let (_d, s) = store();
        let a = s
            .create_identity(NewIdentity {
                name: "Ada".into(),
                metadata: None,
            })
            .unwrap();
        let both = [
            template(a.id, "m@1", 0.5, false),
            template(a.id, "m@1", 0.25, true),
        ];
        s.add_templates(&both).unwrap();
        assert_eq!(s.get_identity(a.id).unwrap().faces, 2);
        // the second names an identity that does not exist: the first is not kept either
        let gone = Uuid::now_v7();
        let mixed = [
            template(a.id, "m@1", 0.1, false),
            template(gone, "m@1", 0.2, false),
        ];
        assert!(matches!(
            s.add_templates(&mixed),
            Err(GalleryError::IdentityNotFound(id)) if id == gone
        ));
        assert_eq!(s.get_identity(a.id).unwrap().faces, 2);
    }

    #[test]
    fn identity_lifecycle_and_cascading_erasure() {
        let (_d, s) = store();
        let a = s
            .create_identity(NewIdentity {
                name: "  Ada ".into(),
                metadata: Some(serde_json::json!({"k": 1})),
            })
            .unwrap();
        assert_eq!(a.name, "Ada");
        s.add_template(&template(a.id, "m@1", 0.5, false)).unwrap();
        s.add_template(&template(a.id, "m@1", 0.25, false)).unwrap();
        assert_eq!(s.get_identity(a.id).unwrap().faces, 2);
        let t = s.list_templates(a.id).unwrap();
        assert_eq!(t[1].embedding, vec![0.25; 4]);
        let u = s
            .update_identity(
                a.id,
                IdentityUpdate {
                    name: Some("Ada L".into()),
                    metadata: None,
                },
            )
            .unwrap();
        assert_eq!(
            (u.name.as_str(), u.metadata["k"].as_i64()),
            ("Ada L", Some(1))
        );
        assert_eq!(s.templates_for_model("m@1").unwrap().len(), 2);
        assert_eq!(s.delete_identity(a.id, false).unwrap(), 2);
        assert!(matches!(
            s.get_identity(a.id),
            Err(GalleryError::IdentityNotFound(_))
        ));
        assert!(s.templates_for_model("m@1").unwrap().is_empty());
        assert!(matches!(
            s.delete_identity(a.id, false),
            Err(GalleryError::IdentityNotFound(_))
        ));
    }

    #[test]
    fn rejects_bad_input_and_unknown_ids() {
        let (_d, s) = store();
        assert!(matches!(
            s.create_identity(NewIdentity {
                name: " ".into(),
                metadata: None
            }),
            Err(GalleryError::Invalid { field: "name", .. })
        ));
        let bad_meta = NewIdentity {
            name: "x".into(),
            metadata: Some(serde_json::json!([1])),
        };
        assert!(matches!(
            s.create_identity(bad_meta),
            Err(GalleryError::Invalid {
                field: "metadata",
                ..
            })
        ));
        let ghost = Uuid::now_v7();
        assert!(matches!(
            s.add_template(&template(ghost, "m", 0.1, false)),
            Err(GalleryError::IdentityNotFound(_))
        ));
        let a = s
            .create_identity(NewIdentity {
                name: "a".into(),
                metadata: None,
            })
            .unwrap();
        assert!(matches!(
            s.delete_template(a.id, ghost),
            Err(GalleryError::FaceNotFound(_))
        ));
    }

    #[test]
    fn reports_identities_enrolled_with_another_model() {
        let (_d, s) = store();
        let a = s
            .create_identity(NewIdentity {
                name: "old".into(),
                metadata: None,
            })
            .unwrap();
        let b = s
            .create_identity(NewIdentity {
                name: "new".into(),
                metadata: None,
            })
            .unwrap();
        s.add_template(&template(a.id, "sface@2021dec", 0.1, true))
            .unwrap();
        s.add_template(&template(b.id, "next@2027", 0.1, false))
            .unwrap();
        let stale = s.stale_identities("next@2027").unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!((stale[0].name.as_str(), stale[0].crops_kept), ("old", true));
        assert_eq!(stale[0].models, vec!["sface@2021dec".to_string()]);
        // Matching never mixes models: only this model's templates are indexed.
        assert_eq!(s.templates_for_model("next@2027").unwrap().len(), 1);
    }

    #[test]
    fn survives_reopen() {
        let (d, s) = store();
        let a = s
            .create_identity(NewIdentity {
                name: "kept".into(),
                metadata: None,
            })
            .unwrap();
        s.add_template(&template(a.id, "m", 0.3, false)).unwrap();
        drop(s);
        let s = SqliteStore::open(&d.0.join("g.db")).unwrap();
        assert_eq!(s.get_identity(a.id).unwrap().faces, 1);
        let (list, total) = s.list_identities(0, 10).unwrap();
        assert_eq!((list.len(), total), (1, 1));
    }
}
