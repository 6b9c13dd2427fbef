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

const OPEN: &str = "SELECT a.* FROM payments p INDEXED BY payments_x402
       JOIN x402_authorizations a ON a.payment_id = p.id
     WHERE p.protocol = 'x402' AND p.status IN ('authorized', 'submitted', 'included')
       AND a.nonce IS NOT NULL
     ORDER BY a.created_at";

/// Signed authorizations whose payment is not final yet (`authorized`, `submitted`,
/// `included`): what the settlement pass watches on chain.
pub async fn open(pool: &SqlitePool) -> Result<Vec<X402Row>, LedgerError> {
    Ok(sqlx::query_as(OPEN).fetch_all(pool).await?)
}

const CONFIRMED_TO_WATCH: &str = "SELECT a.* FROM payments p INDEXED BY payments_x402
       JOIN x402_authorizations a ON a.payment_id = p.id
     WHERE p.protocol = 'x402' AND p.status = 'confirmed' AND p.block_number >= ?1
       AND a.nonce IS NOT NULL
     UNION ALL
     SELECT a.* FROM payments p INDEXED BY payments_x402
       JOIN x402_authorizations a ON a.payment_id = p.id
     WHERE p.protocol = 'x402' AND p.status = 'confirmed' AND p.block_number IS NULL
       AND a.nonce IS NOT NULL";

/// Confirmed x402 payments to re-check against the canonical chain: those confirmed in a block
/// at or after `since_block`, and those a deep reorg took out of the chain (no block recorded:
/// `set_chain_fields` sets and clears the block's number and hash together). Two ranges of
/// `payments_x402`, whatever the history behind them.
pub async fn confirmed_to_watch(
    pool: &SqlitePool,
    since_block: i64,
) -> Result<Vec<X402Row>, LedgerError> {
    Ok(sqlx::query_as(CONFIRMED_TO_WATCH)
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

#[cfg(test)]
mod tests {
    use super::super::Ledger;

    /// Stores a payment (and, for x402, its signed authorization) straight into the table, with
    /// the columns these reads look at.
    async fn store(
        db: &mut sqlx::SqliteConnection,
        id: &str,
        x402: bool,
        status: &str,
        block: Option<i64>,
    ) {
        sqlx::query(
            "INSERT INTO payments (id, kind, from_wallet_id, to_address, amount, currency, capture,
             status, block_number, block_hash, idempotency_scope, idempotency_key, request_hash,
             created_at, updated_at, protocol)
             VALUES (?1, 'payment', 'w', '0x0', 1, 'USDC', 'automatic', ?2, ?3, ?4, 's', ?1, 'h',
             1, 1, ?5)",
        )
        .bind(id)
        .bind(status)
        .bind(block)
        .bind(block.map(|b| format!("0x{b:064x}")))
        .bind(x402.then_some("x402"))
        .execute(&mut *db)
        .await
        .unwrap();
        if x402 {
            sqlx::query(
                "INSERT INTO x402_authorizations (payment_id, resource, x402_version, requirements,
                 authorizer, nonce, created_at) VALUES (?1, 'r', 2, '{}', '0x1', ?1, 1)",
            )
            .bind(id)
            .execute(&mut *db)
            .await
            .unwrap();
        }
    }

    /// What settlement watches each pass: the open x402 payments, and the confirmed ones from
    /// `since_block` on or with no block (a deep reorg took theirs away). Other payments, and
    /// x402 payments confirmed before `since_block`, are not read: each read is ranges of the
    /// x402 index (`EXPLAIN QUERY PLAN`), never a walk of every payment of a status.
    #[tokio::test]
    async fn settlement_reads_only_the_x402_payments_it_watches() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let mut db = ledger.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *db)
            .await
            .unwrap();
        store(&mut db, "plain_confirmed", false, "confirmed", Some(50)).await;
        store(&mut db, "plain_submitted", false, "submitted", None).await;
        store(&mut db, "old", true, "confirmed", Some(10)).await;
        store(&mut db, "recent", true, "confirmed", Some(20)).await;
        store(&mut db, "reorged", true, "confirmed", None).await;
        store(&mut db, "open", true, "submitted", None).await;
        store(&mut db, "refused", true, "failed", None).await;
        drop(db);

        let ids = |rows: Vec<super::X402Row>| {
            let mut ids: Vec<String> = rows.into_iter().map(|r| r.payment_id).collect();
            ids.sort();
            ids
        };
        let watched = super::confirmed_to_watch(ledger.pool(), 20).await.unwrap();
        assert_eq!(ids(watched), ["recent", "reorged"]);
        let open = super::open(ledger.pool()).await.unwrap();
        assert_eq!(ids(open), ["open"]);

        for (sql, ranges) in [
            (
                super::CONFIRMED_TO_WATCH,
                &[
                    "(status=? AND block_number>?)",
                    "(status=? AND block_number=?)",
                ][..],
            ),
            (super::OPEN, &["(status=?)"][..]),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(20)
                    .fetch_all(ledger.pool())
                    .await
                    .unwrap();
            let reads: Vec<&str> = plan
                .iter()
                .map(|(_, _, _, d)| d.as_str())
                .filter(|d| d.contains(" p ") || d.contains(" a "))
                .collect();
            for detail in &reads {
                assert!(detail.starts_with("SEARCH"), "{detail} in {reads:?}");
            }
            for range in ranges {
                let expected = format!("SEARCH p USING INDEX payments_x402 {range}");
                assert!(
                    reads.contains(&expected.as_str()),
                    "{expected} in {reads:?}"
                );
            }
        }
        ledger.close().await;
    }
}
