//! Agents: a name, a status and the custodied wallet they pay from.

use super::{LedgerError, Millis, Page, SyncTx, Tx};
use crate::domain::{Address, AgentId, PaymentStatus};
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgentRow {
    pub id: AgentId,
    pub name: String,
    pub wallet_id: String,
    pub address: Address,
    pub status: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

const SELECT: &str =
    "SELECT agents.id, agents.name, agents.wallet_id, wallets.address, agents.status,
    agents.created_at, agents.updated_at FROM agents JOIN wallets ON wallets.id = agents.wallet_id";

pub async fn insert(
    tx: &mut Tx,
    id: &str,
    name: &str,
    wallet_id: &str,
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO agents (id, name, wallet_id, status, created_at, updated_at) VALUES (?, ?, ?, 'active', ?, ?)")
        .bind(id)
        .bind(name)
        .bind(wallet_id)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<AgentRow, LedgerError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE agents.id = ?")))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

/// `get` in a synchronous transaction.
pub fn get_in(tx: &mut SyncTx<'_>, id: &str) -> Result<AgentRow, LedgerError> {
    use rusqlite::OptionalExtension;
    static GET: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{SELECT} WHERE agents.id = ?"));
    tx.prepare(&GET)?
        .query_row([id], |row| {
            Ok(AgentRow {
                id: row.get(0)?,
                name: row.get(1)?,
                wallet_id: row.get(2)?,
                address: row.get(3)?,
                status: row.get(4)?,
                created_at: row.get(5)?,
                updated_at: row.get(6)?,
            })
        })
        .optional()?
        .ok_or(LedgerError::NotFound)
}

/// Agents newest first; the cursor is the last row's `created_at:id`.
pub async fn list(pool: &SqlitePool, page: &Page) -> Result<Vec<AgentRow>, LedgerError> {
    let (before_at, before_id) = super::payments::parse_cursor(page.cursor.as_deref())?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE (?1 IS NULL OR (agents.created_at, agents.id) < (?1, ?2))
         ORDER BY agents.created_at DESC, agents.id DESC LIMIT ?3"
    )))
    .bind(before_at)
    .bind(before_id)
    .bind(page.limit())
    .fetch_all(pool)
    .await?)
}

/// The amount the agent's payments hold or spent in the 24 hours before `now`.
pub async fn spent_since(
    pool: &SqlitePool,
    agent_id: &str,
    since: Millis,
) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(SUM(amount), 0) FROM payments
         WHERE agent_id = ? AND kind = 'payment' AND created_at >= ? AND status IN {}",
        PaymentStatus::HOLDING_SQL
    )))
    .bind(agent_id)
    .bind(since)
    .fetch_one(pool)
    .await?)
}

/// Sets the agent's status; `false` if it already had it.
pub async fn set_status(
    tx: &mut Tx,
    id: &str,
    status: &str,
    now: Millis,
) -> Result<bool, LedgerError> {
    let done =
        sqlx::query("UPDATE agents SET status = ?, updated_at = ? WHERE id = ? AND status != ?")
            .bind(status)
            .bind(now)
            .bind(id)
            .bind(status)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Every active agent (for the gas float). Agents are few; this is not paged.
pub async fn all_active(pool: &SqlitePool) -> Result<Vec<AgentRow>, LedgerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE agents.status = 'active' ORDER BY agents.created_at"
    )))
    .fetch_all(pool)
    .await?)
}

/// Every agent wallet's address.
pub async fn all_addresses(pool: &SqlitePool) -> Result<Vec<String>, LedgerError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT address FROM ({SELECT})"
    )))
    .fetch_all(pool)
    .await?)
}

/// Read from the partial index of gas-float fundings (migration 0020), not the agent's history.
pub(super) const GAS_FLOAT_FUNDINGS: &str =
    "SELECT COUNT(CASE WHEN status IN ('queued', 'submitted', 'included') THEN 1 END),
            COUNT(CASE WHEN created_at >= ? THEN 1 END)
     FROM payments INDEXED BY payments_gas_float
     WHERE kind = 'funding' AND idempotency_scope = 'gas_float' AND agent_id = ?";

/// Gas-float fundings of the agent: how many are in flight, and how many were made since `since`.
pub async fn gas_float_fundings(
    pool: &SqlitePool,
    agent_id: &str,
    since: Millis,
) -> Result<(i64, i64), LedgerError> {
    Ok(sqlx::query_as(GAS_FLOAT_FUNDINGS)
        .bind(since)
        .bind(agent_id)
        .fetch_one(pool)
        .await?)
}

/// The agent that pays from `wallet_id` (`None` for the treasury).
pub async fn by_wallet(
    pool: &SqlitePool,
    wallet_id: &str,
) -> Result<Option<AgentRow>, LedgerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE agents.wallet_id = ?"
    )))
    .bind(wallet_id)
    .fetch_optional(pool)
    .await?)
}
