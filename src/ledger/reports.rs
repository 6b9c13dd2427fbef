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
    // Only the filters given are in the SQL, so that the range is read from an index (the
    // agent's payments by time, or the confirmed ones by time) rather than from every payment.
    let filtered = |select: &str| {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(select);
        query.push(" FROM payments WHERE kind = 'payment' AND status = 'confirmed'");
        if let Some(agent_id) = agent_id {
            query
                .push(" AND agent_id = ")
                .push_bind(agent_id.to_string());
        }
        if let Some(from) = from {
            query.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            query.push(" AND created_at < ").push_bind(to);
        }
        query
    };
    let (total, count): (i64, i64) = filtered("SELECT COALESCE(SUM(amount), 0), COUNT(*)")
        .build_query_as()
        .fetch_one(pool)
        .await?;
    let mut rows = filtered(
        "SELECT id, agent_id, to_address, amount, memo, reference, tx_hash, block_number, block_hash, created_at",
    );
    rows.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(MAX_REPORT_ROWS);
    let rows = rows.build_query_as().fetch_all(pool).await?;
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
