//! Read-only finance queries: spend reports over confirmed payments and what each agent holds.

use super::{LedgerError, Millis};
use crate::domain::PaymentStatus;
use sqlx::SqlitePool;

/// Rows a spend report lists at most; totals always cover every payment in the range.
pub const MAX_REPORT_ROWS: i64 = 10_000;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SpendRow {
    pub id: String,
    pub agent_id: Option<String>,
    pub to_address: String,
    pub amount: i64,
    pub memo: Option<String>,
    pub reference: Option<String>,
    pub tx_hash: Option<String>,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub created_at: Millis,
}

/// Confirmed agent payments (not fundings or sweeps) created in `[from, to)`, for one agent or
/// all: the exact total and count, and the rows newest first (at most `MAX_REPORT_ROWS`).
pub async fn spend(
    pool: &SqlitePool,
    agent_id: Option<&str>,
    from: Option<Millis>,
    to: Option<Millis>,
) -> Result<(i64, i64, Vec<SpendRow>), LedgerError> {
    const FILTER: &str = "FROM payments WHERE kind = 'payment' AND status = 'confirmed'
        AND (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR created_at >= ?2) AND (?3 IS NULL OR created_at < ?3)";
    let (total, count): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(SUM(amount), 0), COUNT(*) {FILTER}"
    )))
    .bind(agent_id)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, agent_id, to_address, amount, memo, reference, tx_hash, block_number, block_hash, created_at
         {FILTER} ORDER BY created_at DESC, id DESC LIMIT ?4"
    )))
    .bind(agent_id)
    .bind(from)
    .bind(to)
    .bind(MAX_REPORT_ROWS)
    .fetch_all(pool)
    .await?;
    Ok((total, count, rows))
}

/// What an agent's wallet is committed to: payments that hold budget but have not yet reached
/// `confirmed` (pending approval, authorized, queued, submitted, included) plus sweeps in flight.
pub async fn held_by_wallet(
    executor: impl sqlx::SqliteExecutor<'_>,
    wallet_id: &str,
) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(SUM(amount), 0) FROM payments
         WHERE from_wallet_id = ? AND status IN {} AND status != 'confirmed'",
        PaymentStatus::HOLDING_SQL
    )))
    .bind(wallet_id)
    .fetch_one(executor)
    .await?)
}

/// Whether a wallet has payments that still need to send a transaction (queued or submitted).
pub async fn has_unsent_payments(pool: &SqlitePool, wallet_id: &str) -> Result<bool, LedgerError> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT 1 FROM payments WHERE from_wallet_id = ? AND status IN ('queued', 'submitted') LIMIT 1",
    )
    .bind(wallet_id)
    .fetch_optional(pool)
    .await?
    .is_some())
}
