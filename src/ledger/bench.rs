//! What `bursar bench` reads from the database it ran against (payment outcomes and their
//! timings), and SQLite's own durable-write ceiling on the same disk, so that Bursar's figures
//! can be given as ratios of what the storage allows.

use super::{LedgerError, Millis};
use crate::domain::PaymentStatus;
use sqlx::SqlitePool;
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

/// Every agent payment (not fundings or sweeps) created since `since`, with its confirmation
/// time, if any.
pub async fn outcomes(pool: &SqlitePool, since: Millis) -> Result<Vec<Outcome>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.status, p.to_address, p.amount, p.tx_hash, p.created_at,
                (SELECT MIN(e.at) FROM audit_events e
                  WHERE e.payment_id = p.id AND e.kind = 'payment_confirmed') AS confirmed_at
           FROM payments p WHERE p.kind = 'payment' AND p.created_at >= ?",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// How many agent payments created since `since` are in each status.
pub async fn status_counts(
    pool: &SqlitePool,
    since: Millis,
) -> Result<Vec<(String, i64)>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT status, COUNT(*) FROM payments
          WHERE kind = 'payment' AND created_at >= ? GROUP BY status",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// How many payments created since `since` are not final yet (of any kind: a gas top-up the run
/// needed counts until it settles too). Counted on `payments_status` ranges, index only, so that
/// watching a run costs what is left of it: the bench's own polling must not take CPU from the
/// settlement it measures (counting the run by status read every payment of it, ~20 ms a poll
/// at 20,000).
pub async fn open_count(pool: &SqlitePool, since: Millis) -> Result<i64, LedgerError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let open: Vec<String> = PaymentStatus::ALL
            .iter()
            .filter(|status| !status.is_terminal())
            .map(|status| format!("'{status}'"))
            .collect();
        format!(
            "SELECT COUNT(*) FROM payments INDEXED BY payments_status
              WHERE status IN ({}) AND created_at >= ?",
            open.join(", ")
        )
    });
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(since)
        .fetch_one(pool)
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

/// Measures SQLite's ceiling in a scratch database at `path` (created, then removed). Raw: one
/// statement prepared once, run through rusqlite on SQLite's C API as the ledger's writer runs
/// its batches, so that the ceiling is the storage's and not a driver's (through sqlx's worker
/// thread, each statement's hand-off cost more than the insert: ~12,000 rows/s against ~100,000
/// on the same disk).
pub async fn sqlite_ceiling(path: &std::path::Path) -> Result<Ceiling, LedgerError> {
    let path = path.to_path_buf();
    let measured = tokio::task::spawn_blocking(move || {
        let measured = measure_ceiling(&path);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        measured
    })
    .await;
    measured.map_err(|_| LedgerError::Corrupt("the SQLite ceiling's measurement stopped".into()))?
}

fn measure_ceiling(path: &std::path::Path) -> Result<Ceiling, LedgerError> {
    let connection = rusqlite::Connection::open(path)?;
    // As the ledger's own connections: the same log, the same fsync on commit.
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Corrupt(format!(
            "journal mode {mode}, not WAL"
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "wal_autocheckpoint", super::WAL_AUTOCHECKPOINT_PAGES)?;
    connection.execute_batch(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL)",
    )?;
    let body = "x".repeat(ROW_BYTES);
    let mut next: u64 = 0;
    let mut measure = |rows_per_commit: usize| -> Result<f64, LedgerError> {
        let started = Instant::now();
        let mut rows = 0usize;
        while started.elapsed() < MEASURE_FOR {
            connection.execute_batch("BEGIN IMMEDIATE")?;
            let mut insert =
                connection.prepare_cached("INSERT INTO rows (key, body) VALUES (?1, ?2)")?;
            for _ in 0..rows_per_commit {
                next += 1;
                insert.execute(rusqlite::params![format!("key-{next}"), body])?;
            }
            drop(insert);
            connection.execute_batch("COMMIT")?;
            rows += rows_per_commit;
        }
        Ok(rows as f64 / started.elapsed().as_secs_f64())
    };
    Ok(Ceiling {
        single_commits_per_second: measure(1)?,
        group_commit_rows_per_second: measure(GROUP_ROWS)?,
    })
}

/// The amount of each stored synthetic payment, in micro-USDC.
pub const STORED_AMOUNT_MICROS: u64 = 1000;

/// Rows written per transaction while preloading.
const PRELOAD_CHUNK: u64 = 100_000;

/// Stores `count` synthetic confirmed payments of `credential_id` (of its agent and wallet),
/// dated `at`, so that `bursar bench --stored` can show whether the cost of accepting an intent
/// grows with the history behind it. A bench fixture for the bench's own throwaway database:
/// written without audit events, which is why it is here and nowhere else.
pub async fn preload(
    ledger: &super::Ledger,
    credential_id: &str,
    count: u64,
    at: Millis,
) -> Result<(), LedgerError> {
    let mut start = 0;
    while start < count {
        let end = (start + PRELOAD_CHUNK).min(count);
        let mut tx = ledger.begin().await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2)
             INSERT INTO payments (id, kind, agent_id, credential_id, from_wallet_id, to_address,
                 amount, currency, capture, status, idempotency_scope, idempotency_key,
                 request_hash, created_at, updated_at, committed_at, budget)
             SELECT 'pay_stored_' || c.id || '_' || n.i, 'payment', c.agent_id, c.id, a.wallet_id,
                 '0x000000000000000000000000000000000000dEaD', ?5, 'USDC', 'automatic',
                 'confirmed', c.id, 'stored-' || n.i, 'stored', ?3, ?3, ?3, 2
               FROM n, credentials c JOIN agents a ON a.id = c.agent_id WHERE c.id = ?4",
        )
        .bind(i64::try_from(start).unwrap_or(i64::MAX))
        .bind(i64::try_from(end).unwrap_or(i64::MAX))
        .bind(at)
        .bind(credential_id)
        .bind(i64::try_from(STORED_AMOUNT_MICROS).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit_unaudited("a bench fixture in a throwaway database")
            .await?;
        start = end;
    }
    Ok(())
}
