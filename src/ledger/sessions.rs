//! Console sessions (hashes only: of the session secret and of the staff token behind it).

use super::{LedgerError, Millis, Tx};
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub token_hash: String,
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

pub async fn insert(tx: &mut Tx, row: &SessionRow) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, token_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&row.id_hash)
    .bind(&row.token_hash)
    .bind(&row.csrf)
    .bind(row.created_at)
    .bind(row.expires_at)
    .execute(&mut **tx)
    .await?;
    // Sessions past their time are of no use to anyone: drop them as new ones start.
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?")
        .bind(row.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get(pool: &SqlitePool, id_hash: &str) -> Result<Option<SessionRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn delete(tx: &mut Tx, id_hash: &str) -> Result<bool, LedgerError> {
    Ok(
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1,
    )
}
