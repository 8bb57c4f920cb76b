//! The one PostgreSQL connection every part that keeps data in the shared database uses
//! (`gallery.store = "postgres"`): the gallery store, the appearance history and the
//! camera leases (`cluster/`).
//!
//! It owns what they must agree on and what none of them should own for the others:
//! - the connection settings ([`harden`], [`harden_async`]): connect timeout, TCP
//!   keepalives and `TCP_USER_TIMEOUT` (a silent partition fails a call within seconds,
//!   not the kernel's minutes), the server-side statement timeout, the application name;
//! - one reconnecting connection ([`Connection::call`]): a connection idle for a moment
//!   is checked before use, a lost one is dropped and remade on the next call, and calls
//!   that waited while another failed to reach the database fail at once with that
//!   failure ([`Lost`]) instead of each waiting out a timeout;
//! - running the synchronous driver off any async runtime ([`off_runtime`], [`discard`]);
//! - the database's schema: the versioned SQL files in `src/pg/migrations/` for every
//!   table the nodes share ([`Connection::migrate`]).
//!
//! What a lost database means to a caller (enrolment refused, appearances kept in memory)
//! is the caller's: this module reports [`Lost`] and each maps it to its own error.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::postgres::{Client, NoTls};

/// Schema migrations: (version, name, SQL), applied in order, each once.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "gallery", include_str!("migrations/0001_gallery.sql")),
    (2, "history", include_str!("migrations/0002_history.sql")),
    (3, "erasures", include_str!("migrations/0003_erasures.sql")),
    (
        4,
        "appearance spans",
        include_str!("migrations/0004_appearance_spans.sql"),
    ),
];
/// Advisory lock key of migrations ("fsgm"): several nodes may start at once.
const MIGRATION_LOCK: i64 = 0x6673_676d;

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

/// The database could not be reached, or the connection was lost during a call.
#[derive(Debug, Clone)]
pub struct Lost {
    /// `host:port/dbname` (never the password).
    pub target: String,
    /// The driver's message.
    pub cause: String,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL at {} cannot be reached: {}",
            self.target, self.cause
        )
    }
}

/// How a call failed: the database was lost ([`Lost`]), or the call's own error.
#[derive(Debug)]
pub enum CallError<E> {
    Lost(Lost),
    Failed(E),
}

/// An error a call may end with, which may be the connection's (then the connection is
/// dropped and remade on the next call).
pub trait MaybeLost {
    /// The driver's error if this is one that lost the connection.
    fn lost(&self) -> Option<&::postgres::Error>;
}

impl MaybeLost for ::postgres::Error {
    fn lost(&self) -> Option<&::postgres::Error> {
        is_lost(self).then_some(self)
    }
}

/// Whether a driver error is a connection-level failure: no SQLSTATE (I/O, closed), class
/// 08 (connection exception) or 57 (operator intervention: shutdown, crash).
pub fn is_lost(e: &::postgres::Error) -> bool {
    let by_code = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            class == "08" || class == "57"
        }
    };
    by_code || e.is_closed()
}

/// The settings every connection to the shared database gets, unless the URL sets them:
/// connect timeout, application name and statement timeout; and always keepalives and
/// `TCP_USER_TIMEOUT`, so a dead peer or a silent partition is noticed within seconds
/// instead of the kernel's two hours (idle) or ~15 minutes (a query waiting on its
/// answer).
pub fn harden(config: &mut ::postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("facestream");
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
    if config.get_options().is_none() {
        config.options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    }
}

/// The timeouts of [`harden`] for an asynchronous connection (the camera leases, which
/// set their own application name and bound each round themselves).
pub fn harden_async(config: &mut tokio_postgres::Config) {
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
}

/// Run `f` on a thread outside any async runtime: the synchronous driver runs its own
/// runtime, which must not start inside another (an actix handler, a tokio task).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
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
pub fn discard<C: Send>(client: Option<C>) {
    if let Some(client) = client {
        off_runtime(move || drop(client));
    }
}

/// The connection target of `config`, without credentials.
pub fn describe(config: &::postgres::Config) -> String {
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

/// One reconnecting connection to the shared database.
pub struct Connection {
    config: ::postgres::Config,
    /// `host:port/dbname`, for messages (never the password).
    target: String,
    /// The connection, and when it last answered.
    client: Mutex<Option<(Client, Instant)>>,
    /// The last failure to reach the database, and when: calls that were waiting for the
    /// connection meanwhile fail at once with it instead of each waiting out a timeout.
    failed: Mutex<Option<(Instant, Lost)>>,
}

impl Connection {
    /// The settings of `url` ([`harden`]ed); nothing is connected until the first call.
    /// An unparsable URL is the driver's message.
    pub fn new(url: &str) -> Result<Connection, String> {
        let mut config: ::postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        harden(&mut config);
        Ok(Connection {
            target: describe(&config),
            config,
            client: Mutex::new(None),
            failed: Mutex::new(None),
        })
    }

    /// The database as `host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn lost(&self, e: &::postgres::Error) -> Lost {
        Lost {
            target: self.target.clone(),
            cause: e.to_string(),
        }
    }

    /// A new connection of its own (the feed's listener), off any async runtime.
    pub fn connect(&self) -> Result<Client, Lost> {
        let config = self.config.clone();
        off_runtime(move || config.connect(NoTls)).map_err(|e| self.lost(&e))
    }

    /// Run `f` on the connection (made or remade as needed). A connection-level failure
    /// drops the connection so the next call reconnects.
    pub fn call<T: Send, E: MaybeLost + Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, E> + Send,
    ) -> Result<T, CallError<E>> {
        let waiting = Instant::now();
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        // A call that failed to reach the database while this one waited for the
        // connection: its answer is this one's too, rather than a second timeout.
        if let Some((at, lost)) = &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            if *at > waiting {
                return Err(CallError::Lost(lost.clone()));
            }
        }
        // A connection idle for a while may have been cut (a database restart): check it
        // first rather than fail the caller's request on it.
        let stale = slot.as_mut().is_none_or(|(client, used)| {
            client.is_closed()
                || (used.elapsed() > IDLE_CHECK
                    && off_runtime(|| client.is_valid(CONNECT_TIMEOUT)).is_err())
        });
        if stale {
            discard(slot.take());
            let client = self
                .connect()
                .inspect_err(|e| self.remember(e))
                .map_err(CallError::Lost)?;
            *slot = Some((client, Instant::now()));
        }
        let (client, used) = slot.as_mut().expect("connected above");
        match off_runtime(move || f(client)) {
            Ok(v) => {
                *used = Instant::now();
                Ok(v)
            }
            Err(e) => match e.lost().map(|db| self.lost(db)) {
                Some(lost) => {
                    discard(slot.take());
                    self.remember(&lost);
                    Err(CallError::Lost(lost))
                }
                None => Err(CallError::Failed(e)),
            },
        }
    }

    fn remember(&self, lost: &Lost) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), lost.clone()));
    }

    /// Apply the migrations this database has not had yet (under an advisory lock:
    /// several nodes may start at once).
    pub fn migrate(&self) -> Result<(), CallError<::postgres::Error>> {
        self.call(migrate)
    }
}

impl Drop for Connection {
    /// The connection closes off any async runtime (see [`discard`]).
    fn drop(&mut self) {
        discard(
            self.client
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

/// Apply the migrations this database has not had yet, on `client`, in one transaction
/// under the migrations' advisory lock.
pub fn migrate(client: &mut Client) -> Result<(), ::postgres::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_never_shows_the_password() {
        let config: ::postgres::Config = "postgres://gallery:s3cret@db.example:6543/faces"
            .parse()
            .unwrap();
        assert_eq!(describe(&config), "db.example:6543/faces");
        let config: ::postgres::Config = "host=/run/postgresql user=fs password=s3cret"
            .parse()
            .unwrap();
        assert_eq!(describe(&config), "/run/postgresql:5432/fs");
    }

    #[test]
    fn the_url_keeps_what_it_sets_and_gets_the_rest() {
        let mut own: ::postgres::Config =
            "host=db connect_timeout=1 application_name=mine options='-c statement_timeout=5'"
                .parse()
                .unwrap();
        harden(&mut own);
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert_eq!(own.get_application_name(), Some("mine"));
        assert_eq!(own.get_options(), Some("-c statement_timeout=5"));
        assert_eq!(own.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));

        let mut bare: ::postgres::Config = "host=db".parse().unwrap();
        harden(&mut bare);
        assert_eq!(bare.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(bare.get_application_name(), Some("facestream"));
        assert_eq!(
            bare.get_options(),
            Some(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}").as_str())
        );
        assert!(bare.get_keepalives());
        assert_eq!(bare.get_keepalives_idle(), KEEPALIVE_IDLE);
    }

    #[test]
    fn a_database_nobody_serves_is_lost_naming_its_target() {
        // a port just released: nothing listens there
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conn = Connection::new(&format!(
            "host=127.0.0.1 port={port} user=fs password=s3cret"
        ))
        .unwrap();
        let err = conn
            .call(|c| c.simple_query("SELECT 1").map(|_| ()))
            .unwrap_err();
        match err {
            CallError::Lost(lost) => {
                assert_eq!(lost.target, format!("127.0.0.1:{port}/fs"));
                assert!(!lost.to_string().contains("s3cret"), "{lost}");
            }
            CallError::Failed(e) => panic!("expected the database lost, got {e}"),
        }
        assert!(Connection::new("host=db port=notaport").is_err());
    }
}
