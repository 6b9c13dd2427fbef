//! API tokens (admin, treasury, approver, auditor) and agent credentials. Only the SHA-256 of a
//! bearer secret is stored; lookups go by that hash.

use super::{LedgerError, Millis, SyncTx, Tx};
use crate::domain::{AgentId, CredentialId};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

/// The stored form of a bearer secret.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub role: String,
    pub name: String,
    pub token_hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

pub async fn insert_token(tx: &mut Tx, row: &TokenRow) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO api_tokens (id, role, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.role)
    .bind(&row.name)
    .bind(&row.token_hash)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find_token(pool: &SqlitePool, hash: &str) -> Result<Option<TokenRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM api_tokens WHERE token_hash = ?")
            .bind(hash)
            .fetch_optional(pool)
            .await?,
    )
}

/// Whoever a secret's hash belongs to: a staff token, or an agent's credential with its agent's
/// status. One query, so that authenticating a request costs one read.
#[derive(Debug)]
pub struct Holder {
    /// `token` (staff) or `credential` (agent).
    pub kind: String,
    pub id: String,
    pub token_hash: String,
    /// A staff token's role.
    pub role: Option<String>,
    pub revoked_at: Option<Millis>,
    /// A credential's agent, its status, its expiry and the agent's status.
    pub agent_id: Option<String>,
    pub status: Option<String>,
    pub expires_at: Option<Millis>,
    pub agent_status: Option<String>,
}

/// Who holds the secret whose hash is `hash`, as committed now. Every request asks, so it is a
/// point read on the calling thread (`Ledger::read_now`).
pub fn holder(ledger: &crate::ledger::Ledger, hash: &str) -> Result<Option<Holder>, LedgerError> {
    use rusqlite::OptionalExtension;
    ledger.read_now(|connection| {
        Ok(connection
            .prepare_cached(
                "SELECT 'token' AS kind, id, token_hash, role, revoked_at, NULL AS agent_id,
                        NULL AS status, NULL AS expires_at, NULL AS agent_status
                   FROM api_tokens WHERE token_hash = ?1
                 UNION ALL
                 SELECT 'credential', c.id, c.token_hash, NULL, c.revoked_at, c.agent_id,
                        c.status, c.expires_at, a.status
                   FROM credentials c LEFT JOIN agents a ON a.id = c.agent_id
                  WHERE c.token_hash = ?1
                 ORDER BY kind DESC LIMIT 1",
            )?
            .query_row([hash], |row| {
                Ok(Holder {
                    kind: row.get(0)?,
                    id: row.get(1)?,
                    token_hash: row.get(2)?,
                    role: row.get(3)?,
                    revoked_at: row.get(4)?,
                    agent_id: row.get(5)?,
                    status: row.get(6)?,
                    expires_at: row.get(7)?,
                    agent_status: row.get(8)?,
                })
            })
            .optional()?)
    })
}

/// Revokes an active token; `NotFound` if there is no such active token.
pub async fn revoke_token(tx: &mut Tx, id: &str, now: Millis) -> Result<(), LedgerError> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(LedgerError::NotFound);
    }
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CredentialRow {
    pub id: CredentialId,
    pub agent_id: AgentId,
    pub name: String,
    pub token_hash: String,
    pub policy: String,
    pub expires_at: Option<Millis>,
    pub status: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

pub async fn insert_credential(tx: &mut Tx, row: &CredentialRow) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO credentials (id, agent_id, name, token_hash, policy, expires_at, status, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.agent_id)
    .bind(&row.name)
    .bind(&row.token_hash)
    .bind(&row.policy)
    .bind(row.expires_at)
    .bind(&row.status)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const GET_CREDENTIAL: &str = "SELECT * FROM credentials WHERE id = ?";

pub async fn get_credential(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<CredentialRow, LedgerError> {
    sqlx::query_as(GET_CREDENTIAL)
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

read_by_position!(
    CREDENTIAL_COLUMNS,
    read_credential,
    CredentialRow {
        id,
        agent_id,
        name,
        token_hash,
        policy,
        expires_at,
        status,
        created_at,
        revoked_at
    }
);

/// `get_credential` in a synchronous transaction.
pub fn credential_in(tx: &mut SyncTx<'_>, id: &str) -> Result<CredentialRow, LedgerError> {
    use rusqlite::OptionalExtension;
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?")
    });
    tx.prepare(&SQL)?
        .query_row([id], read_credential)
        .optional()?
        .ok_or(LedgerError::NotFound)
}

pub async fn revoke_credential(tx: &mut Tx, id: &str, now: Millis) -> Result<(), LedgerError> {
    let done = sqlx::query("UPDATE credentials SET status = 'revoked', revoked_at = ? WHERE id = ? AND status = 'active'")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(LedgerError::NotFound);
    }
    Ok(())
}
