//! x402 authorizations: what the seller asked (the requirement echoed back to it), and once
//! custody signed, the EIP-3009 nonce, validity window and the header value handed out. Written in
//! the payment's own write transaction; the signature columns are set once and never change.

use super::{LedgerError, Millis, Tx};
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct X402Row {
    pub payment_id: String,
    pub resource: String,
    pub x402_version: i64,
    pub requirements: String,
    pub resource_info: Option<String>,
    pub authorizer: String,
    pub nonce: Option<String>,
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub header_value: Option<String>,
    pub signed_at_block: Option<i64>,
    pub seller_tx_hash: Option<String>,
    pub created_at: Millis,
    pub seller_response: Option<String>,
}

pub async fn insert(tx: &mut Tx, row: &X402Row) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO x402_authorizations (payment_id, resource, x402_version, requirements, resource_info,
         authorizer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.payment_id)
    .bind(&row.resource)
    .bind(row.x402_version)
    .bind(&row.requirements)
    .bind(&row.resource_info)
    .bind(&row.authorizer)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn get(
    executor: impl sqlx::SqliteExecutor<'_>,
    payment_id: &str,
) -> Result<X402Row, LedgerError> {
    sqlx::query_as("SELECT * FROM x402_authorizations WHERE payment_id = ?")
        .bind(payment_id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

/// Records the signed authorization; fails closed if one was already recorded.
pub async fn set_signed(
    tx: &mut Tx,
    payment_id: &str,
    nonce: &str,
    valid_after: i64,
    valid_before: i64,
    header_value: &str,
    signed_at_block: i64,
) -> Result<(), LedgerError> {
    let done = sqlx::query(
        "UPDATE x402_authorizations SET nonce = ?, valid_after = ?, valid_before = ?, header_value = ?,
         signed_at_block = ? WHERE payment_id = ? AND nonce IS NULL",
    )
    .bind(nonce)
    .bind(valid_after)
    .bind(valid_before)
    .bind(header_value)
    .bind(signed_at_block)
    .bind(payment_id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Conflict(format!(
            "payment {payment_id} already has a signed authorization"
        )));
    }
    Ok(())
}

pub async fn set_seller_tx(tx: &mut Tx, payment_id: &str, hash: &str) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE x402_authorizations SET seller_tx_hash = ? WHERE payment_id = ? AND seller_tx_hash IS NULL",
    )
    .bind(hash)
    .bind(payment_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Keeps the seller's first answer to the paid request, for replays of the same key.
pub async fn set_seller_response(
    tx: &mut Tx,
    payment_id: &str,
    response: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE x402_authorizations SET seller_response = ? WHERE payment_id = ? AND seller_response IS NULL",
    )
    .bind(response)
    .bind(payment_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The x402 payment a credential made under `key`: its id, request hash and the seller's stored
/// answer, if any.
pub async fn by_key(
    pool: &SqlitePool,
    credential_id: &str,
    key: &str,
) -> Result<Option<(String, String, Option<String>)>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.request_hash, a.seller_response FROM payments p
         JOIN x402_authorizations a ON a.payment_id = p.id
         WHERE p.idempotency_scope = ? AND p.idempotency_key = ?",
    )
    .bind(credential_id)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// Signed authorizations whose payment is not final yet (`authorized`, `submitted`,
/// `included`): what the settlement pass watches on chain.
pub async fn open(pool: &SqlitePool) -> Result<Vec<X402Row>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT a.* FROM x402_authorizations a JOIN payments p ON p.id = a.payment_id
         WHERE a.nonce IS NOT NULL AND p.status IN ('authorized', 'submitted', 'included')
         ORDER BY a.created_at",
    )
    .fetch_all(pool)
    .await?)
}

/// Confirmed x402 payments to re-check against the canonical chain: those confirmed in a block
/// at or after `since_block`, and those a deep reorg took out of the chain (no block recorded).
pub async fn confirmed_to_watch(
    pool: &SqlitePool,
    since_block: i64,
) -> Result<Vec<X402Row>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT a.* FROM x402_authorizations a JOIN payments p ON p.id = a.payment_id
         WHERE p.status = 'confirmed' AND a.nonce IS NOT NULL
           AND (p.block_hash IS NULL OR p.block_number >= ?)",
    )
    .bind(since_block)
    .fetch_all(pool)
    .await?)
}

/// Every signed (authorizer, nonce) pair: what reconciliation knows of.
pub async fn known_nonces(pool: &SqlitePool) -> Result<Vec<(String, String)>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT authorizer, nonce FROM x402_authorizations WHERE nonce IS NOT NULL")
            .fetch_all(pool)
            .await?,
    )
}

/// Sets where the chain has an x402 payment's transfer (or clears it after a reorg).
pub async fn set_chain_fields(
    tx: &mut Tx,
    payment_id: &str,
    tx_hash: Option<&str>,
    block: Option<(i64, &str)>,
    confirmations: i64,
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE payments SET tx_hash = COALESCE(?, tx_hash), block_number = ?, block_hash = ?,
         confirmations = ?, updated_at = ? WHERE id = ?",
    )
    .bind(tx_hash)
    .bind(block.map(|b| b.0))
    .bind(block.map(|b| b.1))
    .bind(confirmations)
    .bind(now)
    .bind(payment_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
