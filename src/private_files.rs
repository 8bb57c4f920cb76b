//! Files that hold biometric data or secrets (the gallery, the event outbox, generated
//! keys): created owner-only — folders 0700, files 0600 — whatever the process umask.
//! SQLite creates its `-wal` and `-shm` files with the database file's permissions, so
//! preparing the database file covers them.

use std::path::Path;

/// Create `dir` and its missing parents as 0700 (existing folders are left as they are:
/// they may be shared system folders).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Make sure the SQLite database at `path` exists as an owner-only file (its folder is
/// created 0700 if missing); an existing file readable by others is tightened to 0600.
pub fn prepare_database(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // an empty file is a valid new SQLite database
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open the SQLite database at `path` as an owner-only file ([`prepare_database`]) in WAL
/// mode, with foreign keys enforced, `secure_delete` on (a deleted face does not linger in
/// the file's free pages), `synchronous = FULL` when `durable` (a committed
/// write survives a crash of the machine; else `NORMAL`: it survives a crash of the
/// process), a 5 s busy timeout, and `schema` applied.
/// Errors name the file.
pub fn open_database(
    path: &Path,
    schema: &str,
    durable: bool,
) -> Result<rusqlite::Connection, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    prepare_database(path).map_err(|e| format!("creating {}", at(&e)))?;
    let conn = rusqlite::Connection::open(path).map_err(|e| format!("opening {}", at(&e)))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| at(&e))?;
    let synchronous = if durable { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| at(&e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| at(&e))?;
    // biometric data: deleted rows are overwritten with zeros, not left in free pages
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(|e| at(&e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| at(&e))?;
    conn.execute_batch(schema).map_err(|e| at(&e))?;
    Ok(conn)
}

/// Add `column` (`definition`: its type and default) to `table` when a database written
/// before the column existed lacks it; whether it was added (the caller may then fill it
/// from older data).
pub fn add_column_if_missing(
    conn: &rusqlite::Connection,
    table: &str,
    column: &str,
    definition: &str,
) -> rusqlite::Result<bool> {
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    if has > 0 {
        return Ok(false);
    }
    conn.execute_batch(&format!(
        "ALTER TABLE {table} ADD COLUMN {column} {definition};"
    ))?;
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_column_is_added_once() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(add_column_if_missing(&conn, "t", "b", "TEXT").unwrap());
        assert!(!add_column_if_missing(&conn, "t", "b", "TEXT").unwrap());
        let b: Option<String> = conn.query_row("SELECT b FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(b, None, "rows written before have it empty");
    }

    #[test]
    fn deleted_rows_do_not_linger_in_the_file() {
        let root = std::env::temp_dir().join(format!("facestream-secdel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let path = root.join("faces.db");
        let conn = open_database(&path, "CREATE TABLE t (b BLOB);", true).unwrap();
        let marker: Vec<u8> = b"FACE-TEMPLATE-MARKER-".repeat(20);
        conn.execute("INSERT INTO t VALUES (?1)", [&marker])
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let contains = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker);
        assert!(contains(&std::fs::read(&path).unwrap()));
        conn.execute("DELETE FROM t", []).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        assert!(
            !contains(&std::fs::read(&path).unwrap()),
            "a deleted row is still in the database file"
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn databases_and_their_folders_are_owner_only() {
        let root = std::env::temp_dir().join(format!("facestream-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let db = root.join("data").join("gallery.db");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&root.join("data")), 0o700);
        assert_eq!(mode(&db), 0o600);
        // an existing world-readable file is tightened
        let old = root.join("data").join("outbox.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_database(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        // SQLite's WAL files follow the database file
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(mode(&root.join("data").join("gallery.db-wal")), 0o600);
        drop(conn);
        let _ = std::fs::remove_dir_all(&root);
    }
}
