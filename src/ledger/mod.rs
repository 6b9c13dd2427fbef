//! The ledger owns the database: wallets (sealed keys), tokens, agents, credentials, payments
//! with their transactions, idempotency, and the append-only hash-chained audit log. Every
//! write runs on the one writer connection, in a savepoint of a `BEGIN IMMEDIATE` transaction, so
//! a check and the write it guards are atomic; writes that arrive together share one commit and
//! its fsync (group commit), and a write's commit returns only once it is durable.
//! Imports only `domain`.

/// Maps a row of a synchronous query to `$row` by column position, and names the column list
/// (`$columns`) to select in that same order: rusqlite looks a column up by name by comparing it
/// with every column's name, which costs more than the read itself on wide rows.
macro_rules! read_by_position {
    ($columns:ident, $read:ident, $row:ident { $($field:ident),* $(,)? }) => {
        const $columns: &str = stringify!($($field),*);

        #[allow(unused_assignments)]
        fn $read(row: &rusqlite::Row<'_>) -> rusqlite::Result<$row> {
            let mut at = 0usize;
            Ok($row {
                $($field: {
                    let value = row.get(at)?;
                    at += 1;
                    value
                }),*
            })
        }
    };
}

pub mod agents;
pub mod audit;
pub mod bench;
pub mod deny_list;
pub mod payments;
pub mod reports;
pub mod scopes;
pub mod sessions;
pub mod tokens;
pub mod wallets;
pub mod webhooks;
pub mod x402;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

/// How long a writer waits for SQLite's lock before giving up.
const BUSY_TIMEOUT_MS: u64 = 10_000;
/// Connections of each read pool. Reads are short index lookups; each connection keeps its own
/// page cache (up to 2 MB) and statement cache, so more than the cores can use only costs memory
/// (with 8 per pool the bench's peak RSS was 133 MB at 100k stored payments; with 4, 88 MB).
const MAX_CONNECTIONS: u32 = 4;
/// WAL pages (4 KiB each) after which a commit copies the log back into the database file.
/// SQLite's default, 1,000, made the writer run that checkpoint every seven group commits or so,
/// on its own thread between batches: 11% of its samples while accepting. Most of a commit's
/// pages are the same few (each index's rightmost leaf, the credential's hold and window rows),
/// and a checkpoint copies a page once however often it was logged, so a longer log copies far
/// less per commit. `bursar bench --payments 20000`, idle acceptance, five runs each: 1,000
/// pages 5,062-6,395/s (median 5,617); 4,000 pages 5,684-6,911/s (median 6,858), p99 17.9-21.4
/// ms. 8,000 pages was no faster and its p99 higher (a longer checkpoint stalls the batch behind
/// it). The log then stays under about 16 MiB between checkpoints.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 4_000;
/// Read-only handles kept for point reads: they run on the runtime's threads, two on this
/// machine's two cores, so more would only sit idle.
const POINT_READERS: usize = 2;
/// Rows per page, as API.md fixes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of a statement run synchronously on the writer's handle (`SyncTx`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The group commit this write joined failed: none of the group's writes happened.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// A write transaction tried to commit without its audit event: a bug, refused.
    #[error("a state change tried to commit without an audit event")]
    Unaudited,
}

impl LedgerError {
    pub fn is_unique_violation(&self) -> bool {
        match self {
            LedgerError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        e.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    )
            }
            _ => false,
        }
    }
}

/// The one connection that writes, and the SQLite transaction open on it. Every `Tx` is a
/// savepoint inside that transaction; the flusher commits it (or the batch runner, at the end of
/// its batch), so the writes of many requests share one fsync (group commit) while each keeps
/// its own atomicity.
struct Writer {
    /// The same SQLite handle as `connection`, for statements run synchronously (`SyncTx`):
    /// used only while `connection`'s handle is locked (`lock_handle`), when sqlx's thread for it
    /// is parked, so the two never touch the handle at once. Dropped before `connection` closes:
    /// by `close_connection`, or, for a ledger dropped without `close`, by field order (this one
    /// is declared first, so its statements are finalized before sqlx closes the handle).
    direct: Option<rusqlite::Connection>,
    connection: Option<SqliteConnection>,
    /// `BEGIN IMMEDIATE` was issued and not yet committed.
    open: bool,
    /// A `Tx` was dropped without finishing: its savepoint is rolled back before anything else.
    abandoned: bool,
    /// Callers whose savepoint was released into the open transaction, waiting for its commit.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// The last audit event's sequence number and hash, as written inside the open transaction
    /// (which holds SQLite's write lock, so no one else can append). Forgotten at every commit
    /// and rollback, so it is read again once per group.
    audit_head: Option<(i64, String)>,
}

impl Writer {
    fn connection(&mut self) -> Result<&mut SqliteConnection, LedgerError> {
        self.connection
            .as_mut()
            .ok_or(LedgerError::Database(sqlx::Error::PoolClosed))
    }

    /// Ends the open transaction after a failure that left its state unknown: rolls it all back
    /// and tells every write that joined it that it did not happen.
    fn fail_group(&mut self, error: &str) {
        self.open = false;
        self.audit_head = None;
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.to_string()));
        }
    }

    /// Rolls back an abandoned savepoint, so the next statement starts clean.
    async fn discard_abandoned(&mut self) -> Result<(), LedgerError> {
        if self.abandoned {
            self.abandoned = false;
            self.audit_head = None;
            let rolled_back = sqlx::query("ROLLBACK TO tx; RELEASE tx")
                .execute(self.connection()?)
                .await;
            if let Err(error) = rolled_back {
                // SQLite may have ended the transaction itself (an I/O error): end it for sure,
                // and fail the group, so that no later statement runs outside a transaction.
                let _ = sqlx::query("ROLLBACK").execute(self.connection()?).await;
                self.fail_group(&error.to_string());
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// Closes the writer's connection, first dropping the direct handle on it (finalizing its
    /// cached statements) while sqlx's thread is parked.
    async fn close_connection(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            if let Ok(_locked) = connection.lock_handle().await {
                drop(self.direct.take());
            }
            let _ = connection.close().await;
        }
    }

    /// Commits the open transaction (one fsync) and tells every waiter how it went. A failed
    /// commit rolls back the whole group: none of its writes happened, and every waiter is told.
    async fn flush(&mut self) {
        self.audit_head = None;
        let mut outcome = self.discard_abandoned().await.map_err(|e| e.to_string());
        if self.open {
            self.open = false;
            let committed = match self.connection() {
                Ok(connection) => sqlx::query("COMMIT")
                    .execute(&mut *connection)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if committed.is_err()
                && let Ok(connection) = self.connection()
            {
                let _ = sqlx::query("ROLLBACK").execute(connection).await;
            }
            outcome = outcome.and(committed);
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// What the ledger's handles share: the writer and the flusher's signal.
struct WriteSide {
    writer: Arc<Mutex<Writer>>,
    flush: Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Writes waiting for the batch runner (`Ledger::write_batched`).
    batch: std::sync::Mutex<std::collections::VecDeque<Box<dyn BatchJob>>>,
    /// Rings the batch runner's thread (`run_batches`): a write was queued. Dropped with the
    /// write side, which ends that thread.
    doorbell: std::sync::mpsc::SyncSender<()>,
    /// Room in the batch queue: a write waits for a place rather than queueing without bound.
    batch_room: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for WriteSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteSide")
    }
}

/// The flusher: commits the open transaction whenever a `Tx` finishes. It takes the writer's
/// lock behind everyone already queued for it (the lock is fair), so every request that arrived
/// while the previous commit was syncing joins the next one.
async fn run_flusher(side: std::sync::Weak<WriteSide>) {
    loop {
        let Some(strong) = side.upgrade() else { return };
        strong.flush.notified().await;
        let mut writer = strong.writer.lock().await;
        writer.flush().await;
        if strong.closed.load(std::sync::atomic::Ordering::Acquire) {
            writer.close_connection().await;
            return;
        }
    }
}

/// A write transaction: a savepoint in the writer's open transaction, holding the writer from
/// its first statement, so a check and the write it guards are atomic. Its commit returns once
/// the group it joined is durable. The commit fails closed unless an audit event was appended in
/// it (`audit::append` marks it), so every state change of Bursar carries its audit event by
/// construction; the few writes that are bookkeeping rather than a state change (a scan cursor, a
/// delivery attempt, a checkpoint) say so with `commit_unaudited`. Derefs to the connection, so
/// queries run on `&mut **tx`. Dropped unfinished, it rolls back.
pub struct Tx {
    writer: OwnedMutexGuard<Writer>,
    side: Arc<WriteSide>,
    audited: bool,
    finished: bool,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        self.writer
            .connection
            .as_ref()
            .expect("a Tx exists only while the writer's connection is open")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.writer
            .connection
            .as_mut()
            .expect("a Tx exists only while the writer's connection is open")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.finished {
            self.writer.abandoned = true;
        }
        self.side.flush.notify_one();
    }
}

impl Tx {
    /// Records that an audit event was appended in this transaction.
    pub(crate) fn mark_audited(&mut self) {
        self.audited = true;
    }

    /// The audit chain's head as known inside the open transaction, if it was read or written.
    pub(crate) fn audit_head(&self) -> Option<(i64, String)> {
        self.writer.audit_head.clone()
    }

    pub(crate) fn set_audit_head(&mut self, head: Option<(i64, String)>) {
        self.writer.audit_head = head;
    }

    /// Commits; refuses (and rolls back) a transaction that appended no audit event.
    pub async fn commit(self) -> Result<(), LedgerError> {
        if !self.audited {
            return Err(LedgerError::Unaudited);
        }
        self.durable().await
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
        self.durable().await
    }

    /// Releases the savepoint into the group and waits for the group's commit.
    async fn durable(mut self) -> Result<(), LedgerError> {
        sqlx::query("RELEASE tx").execute(&mut *self).await?;
        self.finished = true;
        let (sender, receiver) = oneshot::channel();
        self.writer.waiters.push(sender);
        drop(self);
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(LedgerError::CommitFailed(message)),
            Err(_) => Err(LedgerError::CommitFailed("the writer stopped".into())),
        }
    }
}

/// The write side of the database: only the `payments` use cases (and the CLI) hold one.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: SqlitePool,
    reader: LedgerReader,
    side: Arc<WriteSide>,
    point_reads: Arc<PointReads>,
}

/// Read-only SQLite handles for the point reads every request makes (who holds a bearer
/// secret), run on the calling thread: an indexed lookup of one row costs microseconds, less
/// than handing it to a pool connection's own thread and back. Opened with SQLite's read-only
/// flag, like `LedgerReader`'s; each read is its own snapshot of what is committed.
struct PointReads {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl std::fmt::Debug for PointReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointReads").finish_non_exhaustive()
    }
}

impl PointReads {
    fn open(&self) -> Result<rusqlite::Connection, LedgerError> {
        use rusqlite::OpenFlags;
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        connection.set_prepared_statement_cache_capacity(16);
        // Point reads touch a few pages of small tables: a small cache is enough.
        connection.pragma_update(None, "cache_size", -256)?;
        Ok(connection)
    }
}

/// Bytes of a savepoint's sub-journal (the pages a write changed, to roll back to) that SQLite
/// keeps in memory before it moves them to a temp file: 256 pages, more than a batched write
/// touches (one spill in a whole `bench --payments 5000`). With 8 MiB, peak RSS with 100,000
/// payments stored rose to 89-96 MB (83-86 before); with 1 MiB it is 86-88 MB.
const SUBJOURNAL_IN_MEMORY: i32 = 1 << 20;

/// Sets SQLite's process-wide options, once, before its first connection: a write's sub-journal
/// stays in memory up to `SUBJOURNAL_IN_MEMORY`, held in one block. By default it spills to a
/// temp file past 64 KiB (a `pwrite` per journaled page inside the writer's critical section);
/// `temp_store = memory`, which avoids that, makes it a chain of 1 KiB blocks instead, about
/// five `malloc`s and `free`s per journaled page (7% of the writer's time in a backlog drain).
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` takes this option with one `int`, and must not run while
        // another thread calls into SQLite. In the service the first `Ledger::open` is the
        // process's first use of SQLite. Called after SQLite is initialized (in a test binary,
        // where another test may have opened a connection first), it returns SQLITE_MISUSE and
        // changes nothing, which only costs speed; the one value it sets is read only when a
        // write's sub-journal opens.
        let code = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_STMTJRNL_SPILL,
                SUBJOURNAL_IN_MEMORY,
            )
        };
        if code != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                code,
                "SQLite was initialized already: sub-journal spill left as is"
            );
        }
    });
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
        configure_sqlite();
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
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone().read_only(true).create_if_missing(false))
            .await?;
        let mut connection = options.connect().await?;
        let direct = {
            let mut locked = connection.lock_handle().await?;
            // SAFETY: the handle stays open as long as `connection` (which the writer closes
            // only after dropping `direct`, see `close_connection`); `direct` does not own it
            // (`from_handle` never closes it), and it is used only while the handle is locked
            // away from sqlx's thread (`Writer::direct`).
            unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr())? }
        };
        direct.set_prepared_statement_cache_capacity(64);
        let (doorbell, rung) = std::sync::mpsc::sync_channel(1);
        let side = Arc::new(WriteSide {
            writer: Arc::new(Mutex::new(Writer {
                connection: Some(connection),
                direct: Some(direct),
                open: false,
                abandoned: false,
                waiters: Vec::new(),
                audit_head: None,
            })),
            flush: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            batch: std::sync::Mutex::new(std::collections::VecDeque::new()),
            doorbell,
            batch_room: Arc::new(tokio::sync::Semaphore::new(BATCH_QUEUE)),
        });
        tokio::spawn(run_flusher(Arc::downgrade(&side)));
        start_runner(&side, rung)?;
        Ok(Ledger {
            pool,
            reader: LedgerReader { pool: reader },
            side,
            point_reads: Arc::new(PointReads {
                path: options.get_filename().to_path_buf(),
                idle: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// The read-only handle on the same database.
    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    /// A point read of committed state on this thread, on a read-only handle (`PointReads`).
    pub fn read_now<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let idle = || {
            self.point_reads
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        let taken = idle().pop();
        let connection = match taken {
            Some(connection) => connection,
            None => self.point_reads.open()?,
        };
        let outcome = read(&connection);
        let mut idle = idle();
        if idle.len() < POINT_READERS {
            idle.push(connection);
        }
        outcome
    }

    /// Connections for reads of committed state (writes go through `begin`).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction. It waits its turn for the writer (at most the busy timeout)
    /// and holds it until it commits or is dropped.
    pub async fn begin(&self) -> Result<Tx, LedgerError> {
        let writer = tokio::time::timeout(
            Duration::from_millis(BUSY_TIMEOUT_MS),
            self.side.writer.clone().lock_owned(),
        )
        .await
        .map_err(|_| LedgerError::Database(sqlx::Error::PoolTimedOut))?;
        let mut tx = Tx {
            writer,
            side: self.side.clone(),
            audited: false,
            finished: true,
        };
        tx.writer.discard_abandoned().await?;
        if !tx.writer.open {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx).await?;
            tx.writer.open = true;
        }
        sqlx::query("SAVEPOINT tx").execute(&mut *tx).await?;
        tx.finished = false;
        Ok(tx)
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
        let mut tx = self.begin().await?;
        Ledger::set_meta_in(&mut tx, key, value).await?;
        tx.commit_unaudited("a setting of the deployment").await
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

    /// Commits what is pending, stops the writer and closes every connection.
    pub async fn close(&self) {
        self.side
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        {
            let mut writer = self.side.writer.lock().await;
            writer.flush().await;
            writer.close_connection().await;
        }
        self.side.flush.notify_one();
        self.reader.pool.close().await;
        self.pool.close().await;
    }
}

/// A write transaction's synchronous face: its statements run on the calling thread, straight
/// on the writer's SQLite handle, with no hand-off to another thread per statement (each of which
/// would leave the writer held while the answer waits its turn in the runtime's queue). The
/// statements themselves live in the ledger's modules (the handle is private to `ledger`); the
/// use cases compose them in a closure given to `Ledger::write_sync` or `Tx::run_sync`.
pub struct SyncTx<'a> {
    conn: &'a rusqlite::Connection,
    audit_head: &'a mut Option<(i64, String)>,
    audited: &'a mut bool,
    /// Bookkeeping that `write_sync` keeps without an audit event (`keep_unaudited`).
    bookkeeping: bool,
}

impl SyncTx<'_> {
    /// Records that an audit event was appended in this transaction.
    pub(crate) fn mark_audited(&mut self) {
        *self.audited = true;
    }

    /// Keeps this `write_sync`'s writes though they carry no audit event: bookkeeping rather than
    /// a state change of Bursar's, named by `what` (a confirmation count, a cursor), as
    /// `Tx::commit_unaudited`. Inside `Tx::run_sync` the Tx's own commit decides.
    pub fn keep_unaudited(&mut self, what: &'static str) {
        let _ = what;
        self.bookkeeping = true;
    }

    /// The rowid of the last row this handle inserted.
    fn last_insert_rowid(&self) -> i64 {
        self.conn.last_insert_rowid()
    }

    /// A statement, prepared once per writer and reused.
    fn prepare(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>, LedgerError> {
        Ok(self.conn.prepare_cached(sql)?)
    }
}

impl Tx {
    /// Runs synchronous ledger statements inside this transaction (one hand-off to lock the
    /// handle, then none per statement). A failure leaves the savepoint to roll back with the Tx.
    pub async fn run_sync<T, E: From<LedgerError>>(
        &mut self,
        work: impl FnOnce(&mut SyncTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let writer = &mut *self.writer;
        let connection = writer
            .connection
            .as_mut()
            .ok_or(LedgerError::Database(sqlx::Error::PoolClosed))?;
        let _locked = connection.lock_handle().await.map_err(LedgerError::from)?;
        let direct = writer
            .direct
            .as_ref()
            .ok_or(LedgerError::Database(sqlx::Error::PoolClosed))?;
        work(&mut SyncTx {
            conn: direct,
            audit_head: &mut writer.audit_head,
            audited: &mut self.audited,
            bookkeeping: false,
        })
    }
}

impl Ledger {
    /// A whole write transaction run synchronously: `work` runs in a savepoint of the open
    /// group transaction, on this thread, with no hand-off per statement. If it returns `Ok`
    /// having appended an audit event, its writes join the group and this returns once they are
    /// durable; if it fails, or appended no audit event (a read, a replay), its savepoint is
    /// rolled back and nothing it wrote remains (and it still returns only once what it read of
    /// the open group is durable). The check and the write it guards are atomic,
    /// as in `begin`.
    pub async fn write_sync<T, E: From<LedgerError>>(
        &self,
        work: impl FnOnce(&mut SyncTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut writer = tokio::time::timeout(
            Duration::from_millis(BUSY_TIMEOUT_MS),
            self.side.writer.clone().lock_owned(),
        )
        .await
        .map_err(|_| LedgerError::Database(sqlx::Error::PoolTimedOut))?;
        writer.discard_abandoned().await?;
        let w = &mut *writer;
        let connection = w
            .connection
            .as_mut()
            .ok_or(LedgerError::Database(sqlx::Error::PoolClosed))?;
        let locked = connection.lock_handle().await.map_err(LedgerError::from)?;
        let direct = w
            .direct
            .as_ref()
            .ok_or(LedgerError::Database(sqlx::Error::PoolClosed))?;
        let began = (|| -> Result<(), LedgerError> {
            if !w.open {
                direct.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                w.open = true;
            }
            direct.prepare_cached("SAVEPOINT tx")?.execute([])?;
            Ok(())
        })();
        if let Err(error) = began {
            drop(locked);
            self.side.flush.notify_one();
            return Err(error.into());
        }
        let mut audited = false;
        let (outcome, bookkeeping) = {
            let mut sync = SyncTx {
                conn: direct,
                audit_head: &mut w.audit_head,
                audited: &mut audited,
                bookkeeping: false,
            };
            (work(&mut sync), sync.bookkeeping)
        };
        let keep = outcome.is_ok() && (audited || bookkeeping);
        let ended = if keep {
            direct
                .prepare_cached("RELEASE tx")
                .and_then(|mut s| s.execute([]).map(|_| ()))
        } else {
            w.audit_head = None;
            direct.execute_batch("ROLLBACK TO tx; RELEASE tx")
        };
        if let Err(error) = ended {
            // SQLite may have ended the transaction itself (an I/O error): end it for sure and
            // fail the group, so no later statement runs outside a transaction.
            let _ = direct.execute_batch("ROLLBACK");
            drop(locked);
            w.fail_group(&error.to_string());
            return Err(LedgerError::from(error).into());
        }
        drop(locked);
        // What it saw of the open group (a replayed payment, a figure) is answered only once
        // durable: a write that kept nothing waits for the group it read, if there is one.
        if !keep && w.waiters.is_empty() {
            self.side.flush.notify_one();
            return outcome;
        }
        let (sender, receiver) = oneshot::channel();
        w.waiters.push(sender);
        drop(writer);
        self.side.flush.notify_one();
        match receiver.await {
            Ok(Ok(())) => outcome,
            Ok(Err(message)) => Err(LedgerError::CommitFailed(message).into()),
            Err(_) => Err(LedgerError::CommitFailed("the writer stopped".into()).into()),
        }
    }
}

/// Writes one batch runner runs in a row while it holds the writer, before the group commits.
const BATCH_MAX: usize = 64;
/// Writes that may wait for the batch runner at once.
const BATCH_QUEUE: usize = 4096;

/// The group commit a write waits for: how it went.
type Commit = oneshot::Receiver<Result<(), String>>;
/// What a batched write's savepoint came to, for its caller: the group's commit to wait for
/// (none when it kept nothing and read nothing uncommitted), or the error that ended it.
type Ended = Result<Option<Commit>, LedgerError>;
/// A batched write's answer: its outcome and the commit to wait for, or why it did not run.
type Reply<T, E> = Result<(Result<T, E>, Option<Commit>), LedgerError>;
/// Hands a batched write's outcome to its caller once its savepoint has ended.
type Delivery = Box<dyn FnOnce(Ended) + Send>;

/// A write queued for the batch runner.
trait BatchJob: Send {
    /// Runs the write in its savepoint: whether it succeeded, and what delivers its outcome.
    fn run(self: Box<Self>, tx: &mut SyncTx<'_>) -> (bool, Delivery);
    /// Answers the write without running it.
    fn refuse(self: Box<Self>, error: LedgerError);
}

struct Batched<F, T, E> {
    work: F,
    reply: oneshot::Sender<Reply<T, E>>,
    /// The write's place in the bounded queue, given back once it has run.
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl<F, T, E> BatchJob for Batched<F, T, E>
where
    F: FnOnce(&mut SyncTx<'_>) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    fn run(self: Box<Self>, tx: &mut SyncTx<'_>) -> (bool, Delivery) {
        let Batched { work, reply, .. } = *self;
        let outcome = work(tx);
        let ok = outcome.is_ok();
        let deliver = move |ended: Ended| {
            let _ = reply.send(ended.map(|commit| (outcome, commit)));
        };
        (ok, Box::new(deliver))
    }

    fn refuse(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(error));
    }
}

impl Ledger {
    /// `write_sync` for the hottest writes, run in batches: the write joins a bounded queue,
    /// and one runner takes the writer once for up to `BATCH_MAX` queued writes, each in its own
    /// savepoint (atomic on its own, kept only with its audit event, rolled back alone if it
    /// fails), before the group commits. The writer's lock and its SQLite handle change hands
    /// once per batch instead of once per write, and no write waits in the runtime's queue for
    /// its turn (the runner has a thread of its own). Returns once the write is durable, as
    /// `write_sync` does; `work` must own what it uses, since it runs on the runner's thread.
    pub async fn write_batched<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut SyncTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<LedgerError> + Send + 'static,
    {
        let place = self
            .side
            .batch_room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LedgerError::CommitFailed("the writer stopped".into()))?;
        let (reply, answer) = oneshot::channel();
        let job = Batched {
            work,
            reply,
            _place: place,
        };
        self.side
            .batch
            .lock()
            .expect("the batch queue's lock is never poisoned (nothing panics holding it)")
            .push_back(Box::new(job));
        // A full bell has already been rung: the runner takes this write with the ones before it.
        if let Err(std::sync::mpsc::TrySendError::Disconnected(())) =
            self.side.doorbell.try_send(())
        {
            // The runner's thread is gone: the queued writes are dropped, and their callers told
            // that the writer stopped, rather than left waiting.
            self.side
                .batch
                .lock()
                .expect("the batch queue's lock is never poisoned (nothing panics holding it)")
                .clear();
        }
        let stopped = || LedgerError::CommitFailed("the writer stopped".into());
        let (outcome, commit) = answer.await.map_err(|_| stopped())??;
        match commit {
            None => outcome,
            Some(commit) => match commit.await {
                Ok(Ok(())) => outcome,
                Ok(Err(message)) => Err(LedgerError::CommitFailed(message).into()),
                Err(_) => Err(stopped().into()),
            },
        }
    }
}

/// Takes up to `BATCH_MAX` queued writes.
fn take_batch(side: &WriteSide) -> Vec<Box<dyn BatchJob>> {
    let mut queue = side
        .batch
        .lock()
        .expect("the batch queue's lock is never poisoned (nothing panics holding it)");
    let count = queue.len().min(BATCH_MAX);
    queue.drain(..count).collect()
}

/// Starts the batch runner on a thread of its own, off the runtime's workers. A batch holds its
/// thread for milliseconds in SQLite (the writes' statements, then the commit's WAL write and
/// fsync); on a worker, every request task queued behind it there waited for the other worker
/// to steal it, and the writer itself waited for a core behind the requests it serves.
/// `bursar bench --payments 20000`, seven runs each, alternating, on two cores: idle acceptance
/// 4,159-6,273/s (mean 5,373) on a worker against 5,364-7,696/s (mean 6,755) off it, the
/// writer's busy time per accepted intent 141-213 us against 120-167 us. One long-lived thread
/// rather than one from the blocking pool per burst of writes: the batches' allocations stay in
/// one malloc arena (`--payments 2000 --stored 100000`, three runs each: peak RSS 85-86 MB
/// against 88-92 MB).
fn start_runner(
    side: &Arc<WriteSide>,
    rung: std::sync::mpsc::Receiver<()>,
) -> Result<(), LedgerError> {
    let (side, runtime) = (Arc::downgrade(side), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("bursar-writer".into())
        .spawn(move || run_batches(&side, &rung, &runtime))
        .map(|_| ())
        .map_err(|e| LedgerError::Database(sqlx::Error::Io(e)))
}

/// The batch runner: each time the bell rings, takes the writer for the queued writes, a batch
/// at a time, each batch committed (with whatever else joined the open group) before the next.
/// Ends when the write side is dropped (its bell with it). The writer's lock and its connection
/// are async; the runner waits for them on the runtime it was started from.
fn run_batches(
    side: &std::sync::Weak<WriteSide>,
    rung: &std::sync::mpsc::Receiver<()>,
    runtime: &tokio::runtime::Handle,
) {
    while rung.recv().is_ok() {
        let Some(side) = side.upgrade() else {
            return;
        };
        loop {
            let batch = take_batch(&side);
            if batch.is_empty() {
                break;
            }
            runtime.block_on(run_batch(&side, batch));
        }
    }
}

/// Runs one batch on the writer; a write that cannot run is refused with the reason.
async fn run_batch(side: &WriteSide, batch: Vec<Box<dyn BatchJob>>) {
    let refuse_all = |batch: Vec<Box<dyn BatchJob>>, error: &dyn Fn() -> LedgerError| {
        for job in batch {
            job.refuse(error());
        }
    };
    let Ok(mut writer) = tokio::time::timeout(
        Duration::from_millis(BUSY_TIMEOUT_MS),
        side.writer.clone().lock_owned(),
    )
    .await
    else {
        return refuse_all(batch, &|| LedgerError::Database(sqlx::Error::PoolTimedOut));
    };
    if let Err(error) = writer.discard_abandoned().await {
        let message = error.to_string();
        return refuse_all(batch, &|| LedgerError::CommitFailed(message.clone()));
    }
    let w = &mut *writer;
    let closed = || LedgerError::Database(sqlx::Error::PoolClosed);
    let Some(connection) = w.connection.as_mut() else {
        return refuse_all(batch, &closed);
    };
    let locked = match connection.lock_handle().await {
        Ok(locked) => locked,
        Err(error) => {
            let message = error.to_string();
            return refuse_all(batch, &|| LedgerError::CommitFailed(message.clone()));
        }
    };
    let Some(direct) = w.direct.as_ref() else {
        return refuse_all(batch, &closed);
    };
    let mut group = GroupState {
        open: &mut w.open,
        audit_head: &mut w.audit_head,
        waiters: &mut w.waiters,
    };
    let failed = run_and_commit(direct, &mut group, batch);
    drop(locked);
    if let Err((error, rest)) = failed {
        w.fail_group(&error);
        refuse_all(rest, &|| LedgerError::CommitFailed(error.clone()));
    }
}

/// Runs a batch's writes, each in its savepoint, then commits the group on the handle the
/// runner already holds, rather than through the flusher: no hand-off to the flusher's task and
/// to sqlx's thread for the COMMIT, which on a busy machine left the writer idle while each
/// waited for a core. A write that leaves the group's state unknown ends the batch: the error,
/// and the writes that did not run.
fn run_and_commit(
    direct: &rusqlite::Connection,
    group: &mut GroupState<'_>,
    batch: Vec<Box<dyn BatchJob>>,
) -> Result<(), (String, Vec<Box<dyn BatchJob>>)> {
    let (count, started) = (batch.len(), std::time::Instant::now());
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        if let Err(error) = run_one(direct, group, job) {
            return Err((error, jobs.collect()));
        }
    }
    if *group.open {
        let committing = std::time::Instant::now();
        let committed = direct.execute_batch("COMMIT").map_err(|e| e.to_string());
        // How busy the writer is (`RUST_LOG=bursar::ledger=debug`): whether a load is bound by
        // SQLite's one writer, and how much of its hold is the commit (WAL write and fsync).
        tracing::debug!(
            jobs = count,
            busy_us = started.elapsed().as_micros() as u64,
            commit_us = committing.elapsed().as_micros() as u64,
            "write batch"
        );
        if committed.is_err() {
            let _ = direct.execute_batch("ROLLBACK");
        }
        *group.open = false;
        *group.audit_head = None;
        for waiter in group.waiters.drain(..) {
            let _ = waiter.send(committed.clone());
        }
    }
    Ok(())
}

/// The open group's bookkeeping a batched write updates.
struct GroupState<'a> {
    open: &'a mut bool,
    audit_head: &'a mut Option<(i64, String)>,
    waiters: &'a mut Vec<oneshot::Sender<Result<(), String>>>,
}

/// Runs one batched write in its savepoint of the open group (as `write_sync` does). An error
/// that leaves the group's state unknown is returned: the group then fails as a whole.
fn run_one(
    direct: &rusqlite::Connection,
    group: &mut GroupState<'_>,
    job: Box<dyn BatchJob>,
) -> Result<(), String> {
    let began = (|| -> Result<(), rusqlite::Error> {
        if !*group.open {
            direct.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            *group.open = true;
        }
        direct.prepare_cached("SAVEPOINT tx")?.execute([])?;
        Ok(())
    })();
    if let Err(error) = began {
        // End whatever transaction is open, so the failed group leaves nothing half done.
        let _ = direct.execute_batch("ROLLBACK");
        let message = error.to_string();
        job.refuse(error.into());
        return Err(message);
    }
    let mut audited = false;
    // A write that panics is rolled back alone and its caller told it failed (its answer is
    // dropped); the runner goes on with the rest, so no bug in one write jams the writer.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sync = SyncTx {
            conn: direct,
            audit_head: &mut *group.audit_head,
            audited: &mut audited,
            bookkeeping: false,
        };
        let (ok, deliver) = job.run(&mut sync);
        (ok, deliver, sync.bookkeeping)
    }));
    let Ok((ok, deliver, bookkeeping)) = ran else {
        *group.audit_head = None;
        return direct
            .execute_batch("ROLLBACK TO tx; RELEASE tx")
            .map_err(|error| {
                let _ = direct.execute_batch("ROLLBACK");
                error.to_string()
            });
    };
    let keep = ok && (audited || bookkeeping);
    let ended = if keep {
        direct
            .prepare_cached("RELEASE tx")
            .and_then(|mut s| s.execute([]).map(|_| ()))
    } else {
        *group.audit_head = None;
        direct.execute_batch("ROLLBACK TO tx; RELEASE tx")
    };
    if let Err(error) = ended {
        let _ = direct.execute_batch("ROLLBACK");
        let message = error.to_string();
        deliver(Err(error.into()));
        return Err(message);
    }
    // As in `write_sync`: what it saw of the open group is answered only once durable.
    if !keep && group.waiters.is_empty() {
        deliver(Ok(None));
    } else {
        let (sender, receiver) = oneshot::channel();
        group.waiters.push(sender);
        deliver(Ok(Some(receiver)));
    }
    Ok(())
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

    /// A point read sees every commit made before it, on a handle kept from an earlier read
    /// (no snapshot outlives its read), and cannot write.
    #[tokio::test]
    async fn point_reads_see_each_commit_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("point.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let read = |key: &'static str| {
            ledger.read_now(|connection| {
                use rusqlite::OptionalExtension;
                Ok(connection
                    .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                        row.get::<_, String>(0)
                    })
                    .optional()?)
            })
        };
        for round in 0..3 {
            assert_eq!(
                read("k").unwrap(),
                (round > 0).then(|| format!("v{}", round - 1))
            );
            ledger.set_meta("k", &format!("v{round}")).await.unwrap();
        }
        let write = ledger.read_now(|connection| {
            Ok(connection.execute("INSERT INTO meta (key, value) VALUES ('w', 'x')", [])?)
        });
        assert!(
            write.is_err(),
            "a write through a point-read handle must fail"
        );
        assert_eq!(read("w").unwrap(), None);
    }

    /// Commits leave the log alone until it passes `WAL_AUTOCHECKPOINT_PAGES`: with SQLite's
    /// default (1,000 pages) the writer would have copied it back and restarted it from its
    /// first frame, and the file would hold little more than 1,000 pages.
    #[tokio::test]
    async fn the_writer_checkpoints_only_past_the_configured_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let ledger = Ledger::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let value = "x".repeat(200 * 1024);
        for i in 0..50 {
            ledger.set_meta(&format!("k{i}"), &value).await.unwrap();
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let pages = std::fs::metadata(wal).unwrap().len() / 4096;
        assert!(
            (2_000..u64::from(WAL_AUTOCHECKPOINT_PAGES)).contains(&pages),
            "the log holds {pages} pages"
        );
        ledger.close().await;
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

    /// Synchronous writes, run directly or by the batch runner, share the group with async ones
    /// and keep the same rules: one that fails leaves nothing, one without an audit event leaves
    /// nothing, and the chain is one unbroken sequence across every kind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_synchronous_write_is_atomic_audited_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sync.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let mut writes = tokio::task::JoinSet::new();
        for index in 0..60i64 {
            let ledger = ledger.clone();
            writes.spawn(async move {
                let key = format!("key-{index}");
                if index % 3 == 2 {
                    // The async path, interleaved.
                    let mut tx = ledger.begin().await.unwrap();
                    Ledger::set_meta_in(&mut tx, &key, "v").await.unwrap();
                    audit::append(
                        &mut tx,
                        index,
                        audit::NewEvent::of(crate::domain::AuditKind::TokenCreated),
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                    return true;
                }
                fn write(tx: &mut SyncTx<'_>, key: &str, index: i64) -> Result<(), LedgerError> {
                    tx.prepare("INSERT INTO meta (key, value) VALUES (?, 'v')")?
                        .execute([key])?;
                    match index % 6 {
                        // Fails after writing: rolled back.
                        0 => Err(LedgerError::Conflict("refused".into())),
                        // Writes without an audit event: discarded.
                        1 => Ok(()),
                        _ => {
                            audit::append_in(
                                tx,
                                index,
                                audit::NewEvent::of(crate::domain::AuditKind::TokenCreated),
                            )?;
                            Ok(())
                        }
                    }
                }
                // Half of the synchronous writes go through the batch runner.
                let outcome = if (index / 6) % 2 == 0 {
                    ledger.write_sync(|tx| write(tx, &key, index)).await
                } else {
                    ledger.write_batched(move |tx| write(tx, &key, index)).await
                };
                assert_eq!(outcome.is_ok(), index % 6 != 0, "{index}");
                false
            });
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap();
        }
        for index in 0..60i64 {
            let kept = matches!(index % 6, 2..=5);
            let stored = ledger.meta(&format!("key-{index}")).await.unwrap();
            assert_eq!(stored.is_some(), kept, "key-{index}");
        }
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!(events, 40, "20 async and 20 synchronous writes kept");
        assert!(audit::verify(ledger.pool()).await.unwrap().ok);
        ledger.close().await;
        let reopened = Ledger::open(&url).await.unwrap();
        assert_eq!(reopened.meta("key-4").await.unwrap().as_deref(), Some("v"));
        assert_eq!(reopened.meta("key-1").await.unwrap(), None);
        assert!(audit::verify(reopened.pool()).await.unwrap().ok);
    }

    /// A batched write that panics is rolled back alone, its caller gets an error, and the
    /// runner goes on: the writes after it are kept and the writer is not jammed.
    #[tokio::test]
    async fn a_batched_write_that_panics_jams_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("panic.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let write = |key: &'static str, panics: bool| {
            let ledger = ledger.clone();
            async move {
                ledger
                    .write_batched(move |tx| -> Result<(), LedgerError> {
                        tx.prepare("INSERT INTO meta (key, value) VALUES (?, 'v')")?
                            .execute([key])?;
                        audit::append_in(
                            tx,
                            0,
                            audit::NewEvent::of(crate::domain::AuditKind::TokenCreated),
                        )?;
                        assert!(!panics, "a bug in a write");
                        Ok(())
                    })
                    .await
            }
        };
        // A jammed runner would leave these waiting forever: fail instead.
        let writes = async {
            tokio::join!(
                write("before", false),
                write("broken", true),
                write("after", false)
            )
        };
        let (before, broken, after) = tokio::time::timeout(Duration::from_secs(10), writes)
            .await
            .expect("the writes around a panic are answered");
        assert!(before.is_ok() && after.is_ok() && broken.is_err());
        tokio::time::timeout(Duration::from_secs(10), write("later", false))
            .await
            .expect("the runner still runs")
            .unwrap();
        for (key, kept) in [
            ("before", true),
            ("broken", false),
            ("after", true),
            ("later", true),
        ] {
            assert_eq!(ledger.meta(key).await.unwrap().is_some(), kept, "{key}");
        }
        assert!(audit::verify(ledger.pool()).await.unwrap().ok);
        ledger.close().await;
    }

    /// The batch runner has a thread of its own: while a batch holds it, the runtime's workers go
    /// on with the requests' tasks. With the runner on the only worker, the task that releases
    /// the write below could not run until the write gave up waiting for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_batch_holds_no_runtime_worker() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("runner.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let (started, running) = oneshot::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let write = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                ledger
                    .write_batched(move |_tx| -> Result<bool, LedgerError> {
                        let _ = started.send(());
                        Ok(released.recv_timeout(Duration::from_secs(5)).is_ok())
                    })
                    .await
            }
        });
        tokio::spawn(async move {
            if running.await.is_ok() {
                let _ = release.send(());
            }
        });
        let released_in_time = write.await.unwrap().unwrap();
        assert!(
            released_in_time,
            "a task on the worker ran while the batch held its thread"
        );
        ledger.close().await;
    }

    /// Writes that share a group commit keep their own atomicity: one dropped midway leaves
    /// nothing, the others are all durable, and the audit chain stays one unbroken sequence.
    #[tokio::test]
    async fn a_group_commit_keeps_each_write_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let mut writes = tokio::task::JoinSet::new();
        for index in 0..40 {
            let ledger = ledger.clone();
            writes.spawn(async move {
                let mut tx = ledger.begin().await.unwrap();
                Ledger::set_meta_in(&mut tx, &format!("key-{index}"), "v")
                    .await
                    .unwrap();
                audit::append(
                    &mut tx,
                    index,
                    audit::NewEvent::of(crate::domain::AuditKind::TokenCreated),
                )
                .await
                .unwrap();
                if index % 4 == 0 {
                    drop(tx);
                    return false;
                }
                tx.commit().await.unwrap();
                true
            });
        }
        let mut committed = 0;
        while let Some(done) = writes.join_next().await {
            committed += usize::from(done.unwrap());
        }
        assert_eq!(committed, 30);
        for index in 0..40 {
            let stored = ledger.meta(&format!("key-{index}")).await.unwrap();
            assert_eq!(stored.is_some(), index % 4 != 0, "key-{index}");
        }
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!(events, 30);
        assert!(audit::verify(ledger.pool()).await.unwrap().ok);
        ledger.close().await;
        // Reopened, the same: what was acknowledged is on disk.
        let reopened = Ledger::open(&url).await.unwrap();
        assert_eq!(reopened.meta("key-1").await.unwrap().as_deref(), Some("v"));
        assert_eq!(reopened.meta("key-4").await.unwrap(), None);
    }
}
