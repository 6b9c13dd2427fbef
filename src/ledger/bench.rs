//! What `bursar bench` reads from the database it ran against (payment outcomes and their
//! timings), and SQLite's own durable-write ceiling on the same disk, so that Bursar's figures
//! can be given as ratios of what the storage allows.

use super::{LedgerError, Millis};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::time::{Duration, Instant};

/// One agent payment as the bench checks it: its outcome, its on-chain transaction, and when it
/// was accepted and confirmed (the `payment_confirmed` audit event).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Outcome {
    pub id: String,
    pub status: String,
    pub to_address: String,
    pub amount: i64,
    pub tx_hash: Option<String>,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
}

/// Every agent payment (not fundings or sweeps) with its confirmation time, if any.
pub async fn outcomes(pool: &SqlitePool) -> Result<Vec<Outcome>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.status, p.to_address, p.amount, p.tx_hash, p.created_at,
                (SELECT MIN(e.at) FROM audit_events e
                  WHERE e.payment_id = p.id AND e.kind = 'payment_confirmed') AS confirmed_at
           FROM payments p WHERE p.kind = 'payment'",
    )
    .fetch_all(pool)
    .await?)
}

/// How many agent payments are in each status.
pub async fn status_counts(pool: &SqlitePool) -> Result<Vec<(String, i64)>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT status, COUNT(*) FROM payments WHERE kind = 'payment' GROUP BY status",
    )
    .fetch_all(pool)
    .await?)
}

/// SQLite's durable write ceiling on this disk, with the ledger's settings (WAL, full fsync on
/// commit).
#[derive(Clone, Copy, Debug)]
pub struct Ceiling {
    /// Rows per second when each row is its own committed transaction (one fsync each).
    pub single_commits_per_second: f64,
    /// Rows per second when `GROUP_ROWS` rows share one commit.
    pub group_commit_rows_per_second: f64,
}

/// Rows per commit in the group-commit measurement.
pub const GROUP_ROWS: usize = 256;
/// Each measurement runs at least this long.
const MEASURE_FOR: Duration = Duration::from_millis(1_000);
/// The size of a row: about one payment with its audit event.
const ROW_BYTES: usize = 900;

/// Measures SQLite's ceiling in a scratch database at `path` (created, then removed).
pub async fn sqlite_ceiling(path: &std::path::Path) -> Result<Ceiling, LedgerError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut connection = options.connect().await?;
    sqlx::query(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL)",
    )
    .execute(&mut connection)
    .await?;
    let body = "x".repeat(ROW_BYTES);
    let mut next: i64 = 0;
    let mut measure = async |rows_per_commit: usize| -> Result<f64, LedgerError> {
        let started = Instant::now();
        let mut rows = 0usize;
        while started.elapsed() < MEASURE_FOR {
            let mut tx = connection.begin().await?;
            for _ in 0..rows_per_commit {
                next += 1;
                sqlx::query("INSERT INTO rows (key, body) VALUES (?, ?)")
                    .bind(format!("key-{next}"))
                    .bind(&body)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            rows += rows_per_commit;
        }
        Ok(rows as f64 / started.elapsed().as_secs_f64())
    };
    let single = measure(1).await?;
    let group = measure(GROUP_ROWS).await?;
    connection.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    Ok(Ceiling {
        single_commits_per_second: single,
        group_commit_rows_per_second: group,
    })
}
