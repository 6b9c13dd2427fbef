//! The operator deny list: addresses no payment may go to, whatever a credential allows.

use super::{LedgerError, Millis, Page, SyncTx, Tx};
use crate::domain::Address;
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeniedAddress {
    pub address: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: Millis,
}

pub fn contains(tx: &mut SyncTx<'_>, address: Address) -> Result<bool, LedgerError> {
    Ok(tx
        .prepare("SELECT 1 FROM denied_addresses WHERE address = ?")?
        .exists([address])?)
}

/// Adds (or re-words) an entry; returns whether it was new.
pub async fn upsert(tx: &mut Tx, entry: &DeniedAddress) -> Result<bool, LedgerError> {
    let existed = sqlx::query_scalar::<_, i64>("SELECT 1 FROM denied_addresses WHERE address = ?")
        .bind(&entry.address)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    sqlx::query(
        "INSERT INTO denied_addresses (address, reason, created_by, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (address) DO UPDATE SET reason = excluded.reason",
    )
    .bind(&entry.address)
    .bind(&entry.reason)
    .bind(&entry.created_by)
    .bind(entry.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(!existed)
}

pub async fn remove(tx: &mut Tx, address: Address) -> Result<(), LedgerError> {
    let done = sqlx::query("DELETE FROM denied_addresses WHERE address = ?")
        .bind(address.to_string())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(LedgerError::NotFound);
    }
    Ok(())
}

/// Newest first; the cursor is the `created_at:address` of the last row.
pub async fn list(pool: &SqlitePool, page: &Page) -> Result<Vec<DeniedAddress>, LedgerError> {
    let (before_at, before_address) = super::payments::parse_cursor(page.cursor.as_deref())?;
    Ok(sqlx::query_as(
        "SELECT * FROM denied_addresses WHERE (?1 IS NULL OR (created_at, address) < (?1, ?2))
         ORDER BY created_at DESC, address DESC LIMIT ?3",
    )
    .bind(before_at)
    .bind(before_address)
    .bind(page.limit())
    .fetch_all(pool)
    .await?)
}
