//! Custodied wallets: sealed keys and the nonce counter each wallet owns.

use super::{LedgerError, Millis, SyncTx, Tx};
use crate::domain::Address;
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WalletRow {
    pub id: String,
    pub kind: String,
    pub address: String,
    pub sealed_key: Vec<u8>,
    pub seal_nonce: Vec<u8>,
    pub next_nonce: Option<i64>,
}

impl WalletRow {
    pub fn address(&self) -> Result<Address, LedgerError> {
        Address::parse(&self.address)
            .map_err(|_| LedgerError::Corrupt(format!("wallet {} address", self.id)))
    }
}

pub async fn insert(
    tx: &mut Tx,
    id: &str,
    kind: &str,
    address: Address,
    sealed_key: &[u8],
    seal_nonce: &[u8],
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO wallets (id, kind, address, sealed_key, seal_nonce, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(id)
        .bind(kind)
        .bind(address.to_string())
        .bind(sealed_key)
        .bind(seal_nonce)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get(pool: &SqlitePool, id: &str) -> Result<WalletRow, LedgerError> {
    sqlx::query_as("SELECT * FROM wallets WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(LedgerError::NotFound)
}

pub async fn treasury(pool: &SqlitePool) -> Result<Option<WalletRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM wallets WHERE kind = 'treasury'")
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn all_addresses(pool: &SqlitePool) -> Result<Vec<String>, LedgerError> {
    Ok(
        sqlx::query_scalar("SELECT address FROM wallets ORDER BY created_at")
            .fetch_all(pool)
            .await?,
    )
}

/// Reserves `count` consecutive nonces for the wallet and returns the first, with the counter it
/// had before (`None` the first time). The database owns the counter, so concurrent payments never
/// share or skip a nonce; `chain_nonce` (the wallet's transaction count in the latest block) only
/// ever moves it forward, which resyncs a wallet whose key was used outside Bursar.
pub fn reserve_nonces(
    tx: &mut SyncTx<'_>,
    wallet_id: &str,
    chain_nonce: u64,
    count: u64,
) -> Result<(u64, Option<u64>), LedgerError> {
    use rusqlite::OptionalExtension;
    let chain_nonce = i64::try_from(chain_nonce)
        .map_err(|_| LedgerError::Corrupt("nonce out of range".into()))?;
    let count = i64::try_from(count)
        .map_err(|_| LedgerError::Corrupt("nonce count out of range".into()))?;
    let before: Option<i64> = tx
        .prepare("SELECT next_nonce FROM wallets WHERE id = ?")?
        .query_row([wallet_id], |row| row.get(0))
        .optional()?
        .ok_or(LedgerError::NotFound)?;
    let next: i64 = tx
        .prepare(
            "UPDATE wallets SET next_nonce = MAX(COALESCE(next_nonce, 0), ?) + ? WHERE id = ? RETURNING next_nonce",
        )?
        .query_row(rusqlite::params![chain_nonce, count, wallet_id], |row| {
            row.get(0)
        })?;
    let first =
        u64::try_from(next - count).map_err(|_| LedgerError::Corrupt("negative nonce".into()))?;
    Ok((first, before.and_then(|n| u64::try_from(n).ok())))
}
