//! Spending scopes and what their payments hold, read inside the write transaction that records a
//! decision so that a scope's budgets are atomic with the payment they guard.

use super::{LedgerError, Millis, Page, SyncTx, Tx};
use crate::domain::PaymentStatus;
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ScopeRow {
    pub id: String,
    pub credential_id: String,
    pub agent_id: String,
    pub name: String,
    pub task_ref: Option<String>,
    pub budget: i64,
    pub expires_at: Option<Millis>,
    pub allowed_recipients: Option<String>,
    pub phases: String,
    pub phase: String,
    pub phase_change_requires_approval: bool,
    pub pending_phase: Option<String>,
    pub tiers: String,
    pub status: String,
    pub close_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub closed_at: Option<Millis>,
}

pub async fn insert(tx: &mut Tx, row: &ScopeRow) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO scopes (id, credential_id, agent_id, name, task_ref, budget, expires_at,
         allowed_recipients, phases, phase, phase_change_requires_approval, pending_phase, tiers,
         status, close_reason, created_at, updated_at, closed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 'open', NULL, ?, ?, NULL)",
    )
    .bind(&row.id)
    .bind(&row.credential_id)
    .bind(&row.agent_id)
    .bind(&row.name)
    .bind(&row.task_ref)
    .bind(row.budget)
    .bind(row.expires_at)
    .bind(&row.allowed_recipients)
    .bind(&row.phases)
    .bind(&row.phase)
    .bind(row.phase_change_requires_approval)
    .bind(&row.tiers)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const GET: &str = "SELECT * FROM scopes WHERE id = ?";

pub async fn get(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<ScopeRow, LedgerError> {
    sqlx::query_as(GET)
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

/// `get` in a synchronous transaction.
pub fn get_in(tx: &mut SyncTx<'_>, id: &str) -> Result<ScopeRow, LedgerError> {
    use rusqlite::OptionalExtension;
    tx.prepare(GET)?
        .query_row([id], |row| {
            Ok(ScopeRow {
                id: row.get("id")?,
                credential_id: row.get("credential_id")?,
                agent_id: row.get("agent_id")?,
                name: row.get("name")?,
                task_ref: row.get("task_ref")?,
                budget: row.get("budget")?,
                expires_at: row.get("expires_at")?,
                allowed_recipients: row.get("allowed_recipients")?,
                phases: row.get("phases")?,
                phase: row.get("phase")?,
                phase_change_requires_approval: row.get("phase_change_requires_approval")?,
                pending_phase: row.get("pending_phase")?,
                tiers: row.get("tiers")?,
                status: row.get("status")?,
                close_reason: row.get("close_reason")?,
                created_at: row.get("created_at")?,
                updated_at: row.get("updated_at")?,
                closed_at: row.get("closed_at")?,
            })
        })
        .optional()?
        .ok_or(LedgerError::NotFound)
}

/// Scopes newest first, of one credential or agent when given, of one status when given.
pub async fn list(
    pool: &SqlitePool,
    credential_id: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> Result<Vec<ScopeRow>, LedgerError> {
    Ok(list_query("SELECT *", credential_id, status, page)?
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

/// The list's query after `select`, with only the filters given, so that a page is read from
/// an index (the credential's, or `scopes_created`) and the read stops at its last row.
pub(super) fn list_query(
    select: &str,
    credential_id: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> Result<sqlx::QueryBuilder<sqlx::Sqlite>, LedgerError> {
    let mut query = sqlx::QueryBuilder::new(format!("{select} FROM scopes WHERE 1"));
    if let Some(credential_id) = credential_id {
        query
            .push(" AND credential_id = ")
            .push_bind(credential_id.to_string());
    }
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status.to_string());
    }
    super::payments::push_page(&mut query, page)?;
    Ok(query)
}

/// Moves the phase (and clears any pending request), if the scope is still in `from`.
pub async fn set_phase(
    tx: &mut Tx,
    id: &str,
    from: &str,
    to: &str,
    now: Millis,
) -> Result<(), LedgerError> {
    let done = sqlx::query(
        "UPDATE scopes SET phase = ?, pending_phase = NULL, updated_at = ?
         WHERE id = ? AND phase = ? AND status = 'open'",
    )
    .bind(to)
    .bind(now)
    .bind(id)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Conflict(format!(
            "scope {id} is no longer open in phase {from}"
        )));
    }
    Ok(())
}

pub async fn set_pending_phase(
    tx: &mut Tx,
    id: &str,
    phase: &str,
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE scopes SET pending_phase = ?, updated_at = ? WHERE id = ? AND status = 'open'",
    )
    .bind(phase)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Closes an open scope with `status`; fails closed if it is not open any more.
pub async fn close(
    tx: &mut Tx,
    id: &str,
    status: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<(), LedgerError> {
    let done = sqlx::query(
        "UPDATE scopes SET status = ?, close_reason = ?, closed_at = ?, updated_at = ?, pending_phase = NULL
         WHERE id = ? AND status = 'open'",
    )
    .bind(status)
    .bind(reason)
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Conflict(format!("scope {id} is not open")));
    }
    Ok(())
}

/// Open scopes whose `expires_at` passed.
pub async fn expired(tx: &mut Tx, now: Millis, limit: i64) -> Result<Vec<ScopeRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM scopes WHERE status = 'open' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// What a scope's payments hold, leaving out `exclude`: in total, in `phase`, and in `tier`
/// over the 24 hours before `now` (live holds always count).
pub fn snapshot(
    tx: &mut SyncTx<'_>,
    id: &str,
    phase: &str,
    tier: Option<i64>,
    now: Millis,
    exclude: Option<&str>,
) -> Result<(i64, i64, i64), LedgerError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
        "SELECT COALESCE(SUM(amount), 0),
                COALESCE(SUM(CASE WHEN scope_phase = ?2 THEN amount END), 0),
                COALESCE(SUM(CASE WHEN scope_tier = ?3 AND (status IN ('pending_approval', 'authorized')
                    OR COALESCE(committed_at, created_at) > ?4) THEN amount END), 0)
         FROM payments WHERE scope_id = ?1 AND status IN {} AND (?5 IS NULL OR id != ?5)",
        PaymentStatus::HOLDING_SQL
    )
    });
    Ok(tx.prepare(&SQL)?.query_row(
        rusqlite::params![id, phase, tier, now - 24 * 60 * 60 * 1000, exclude],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?)
}

/// `(held, spent)`: what the scope's payments hold but have not yet confirmed, and what they
/// confirmed.
pub async fn totals(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<(i64, i64), LedgerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(SUM(CASE WHEN status != 'confirmed' THEN amount END), 0),
                COALESCE(SUM(CASE WHEN status = 'confirmed' THEN amount END), 0)
         FROM payments WHERE scope_id = ? AND status IN {}",
        PaymentStatus::HOLDING_SQL
    )))
    .bind(id)
    .fetch_one(executor)
    .await?)
}

/// The scope's payments, oldest first.
pub async fn payments(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<Vec<super::payments::PaymentRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM payments WHERE scope_id = ? ORDER BY created_at, rowid")
            .bind(id)
            .fetch_all(executor)
            .await?,
    )
}

/// The scope's whole audit trail in order: its own events and its payments' events.
pub async fn trace(
    pool: &SqlitePool,
    id: &str,
) -> Result<Vec<super::audit::AuditEvent>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM audit_events
         WHERE json_extract(detail, '$.scope_id') = ?1
            OR payment_id IN (SELECT id FROM payments WHERE scope_id = ?1)
         ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}
