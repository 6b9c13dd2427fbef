//! The ledger owns the database: wallets (sealed keys), tokens, agents, credentials, payments
//! with their transactions, idempotency, and the append-only hash-chained audit log. Every
//! write runs in a `BEGIN IMMEDIATE` transaction, so a check and the write it guards are atomic
//! (SQLite has one writer; an immediate transaction takes the write lock before the first read).
//! Imports only `domain`.

pub mod agents;
pub mod audit;
pub mod bench;
pub mod deny_list;
pub mod payments;
pub mod reports;
pub mod tokens;
pub mod wallets;
pub mod webhooks;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// How long a writer waits for SQLite's lock before giving up.
const BUSY_TIMEOUT_MS: u64 = 10_000;
const MAX_CONNECTIONS: u32 = 8;
/// Rows per page, as API.md fixes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write transaction tried to commit without its audit event: a bug, refused.
    #[error("a state change tried to commit without an audit event")]
    Unaudited,
}

impl LedgerError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, LedgerError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// A write transaction: SQLite's write lock from its first statement, and a commit that fails
/// closed unless an audit event was appended in it (`audit::append` marks it). Every state change
/// of Bursar therefore carries its audit event by construction; the few writes that are
/// bookkeeping rather than a state change (a scan cursor, a delivery attempt, a checkpoint) say so
/// with `commit_unaudited`. Derefs to the connection, so queries run on `&mut **tx`.
pub struct Tx {
    inner: Transaction<'static, Sqlite>,
    audited: bool,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Tx {
    /// Records that an audit event was appended in this transaction.
    pub(crate) fn mark_audited(&mut self) {
        self.audited = true;
    }

    /// Commits; refuses (and rolls back) a transaction that appended no audit event.
    pub async fn commit(self) -> Result<(), LedgerError> {
        if !self.audited {
            return Err(LedgerError::Unaudited);
        }
        Ok(self.inner.commit().await?)
    }

    /// Commits a write that may or may not have changed state: with an audit event it is a state
    /// change, without one it must be the bookkeeping named by `what` (a confirmation count, a
    /// wait that did not change, a cursor with nothing found).
    pub async fn finish(self, what: &'static str) -> Result<(), LedgerError> {
        if self.audited {
            self.commit().await
        } else {
            self.commit_unaudited(what).await
        }
    }

    /// Commits a write that is bookkeeping, not a state change of Bursar's (named by `what`, for
    /// the reader of the code: a scan cursor, a delivery attempt, a checkpoint, a wait that did
    /// not change).
    pub async fn commit_unaudited(self, what: &'static str) -> Result<(), LedgerError> {
        let _ = what;
        Ok(self.inner.commit().await?)
    }
}

/// The write side of the database: only the `payments` use cases (and the CLI) hold one.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: SqlitePool,
    reader: LedgerReader,
}

/// A read-only handle on the database, for the API's queries. Its connections are opened with
/// SQLite's read-only flag, so a write through it fails in SQLite itself: the API cannot change
/// state except through a use case, by construction rather than by convention (reth's
/// `provider()` against `provider_rw()`).
#[derive(Clone, Debug)]
pub struct LedgerReader {
    pool: SqlitePool,
}

impl LedgerReader {
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Ledger {
    /// Opens (creating if needed) the database, in WAL mode with full fsync on commit, and
    /// applies every migration in `migrations/`.
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            && let Some(parent) =
                std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| LedgerError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.read_only(true).create_if_missing(false))
            .await?;
        Ok(Ledger {
            pool,
            reader: LedgerReader { pool: reader },
        })
    }

    /// The read-only handle on the same database.
    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction holding SQLite's write lock from its first statement.
    pub async fn begin(&self) -> Result<Tx, LedgerError> {
        Ok(Tx {
            inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            audited: false,
        })
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, LedgerError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `set_meta` inside a write transaction, so a cursor moves with the work it records.
    pub async fn set_meta_in(tx: &mut Tx, key: &str, value: &str) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.reader.pool.close().await;
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, as stored.
pub type Millis = i64;

/// A page request: newest first, `limit` rows after the opaque `cursor`.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub limit: u32,
    /// Rows strictly older than this cursor (a `(created_at, id)` or a sequence number).
    pub cursor: Option<String>,
}

impl Page {
    pub fn limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reader_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("reader.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let write = sqlx::query("INSERT INTO meta (key, value) VALUES ('k', 'v')");
        let refused = write.execute(ledger.reader().pool()).await;
        assert!(refused.is_err(), "a write through the reader must fail");
        ledger.set_meta("k", "v").await.unwrap();
        let read: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'k'")
            .fetch_one(ledger.reader().pool())
            .await
            .unwrap();
        assert_eq!(read, "v");
    }
}

#[cfg(test)]
mod write_path_tests {
    use super::*;

    #[tokio::test]
    async fn a_write_without_an_audit_event_does_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("write.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let mut tx = ledger.begin().await.unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('forgotten', 'x')")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert!(matches!(tx.commit().await, Err(LedgerError::Unaudited)));
        assert_eq!(ledger.meta("forgotten").await.unwrap(), None, "rolled back");

        let mut tx = ledger.begin().await.unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('audited', 'x')")
            .execute(&mut *tx)
            .await
            .unwrap();
        audit::append(
            &mut tx,
            0,
            audit::NewEvent::of(crate::domain::AuditKind::TokenCreated),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(ledger.meta("audited").await.unwrap().as_deref(), Some("x"));
    }
}
