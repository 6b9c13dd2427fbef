//! Webhook endpoints and deliveries. `enqueue` runs inside the caller's write transaction, so an
//! event is recorded for delivery exactly when the change it reports commits.

use super::{LedgerError, Millis, SyncTx, Tx};
use sqlx::SqlitePool;

pub const PAYMENT_STATUS_CHANGED: &str = "payment.status_changed";
pub const AUDIT_ALARM: &str = "audit.alarm";
pub const SCOPE_CLOSED: &str = "scope.closed";
pub const APPROVAL_REQUIRED: &str = "payment.approval_required";
pub const EVENT_TYPES: [&str; 4] = [
    PAYMENT_STATUS_CHANGED,
    AUDIT_ALARM,
    SCOPE_CLOSED,
    APPROVAL_REQUIRED,
];

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub events: String,
    pub status: String,
    pub created_at: Millis,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub data: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

pub async fn insert_endpoint(tx: &mut Tx, row: &EndpointRow) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO webhook_endpoints (id, url, secret, events, status, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&row.id)
        .bind(&row.url)
        .bind(&row.secret)
        .bind(&row.events)
        .bind(&row.status)
        .bind(row.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn endpoints(pool: &SqlitePool) -> Result<Vec<EndpointRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM webhook_endpoints ORDER BY created_at DESC, id DESC")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn endpoint(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<EndpointRow, LedgerError> {
    sqlx::query_as("SELECT * FROM webhook_endpoints WHERE id = ?")
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

/// Disables an endpoint: nothing more is queued for it, and its pending deliveries stop.
pub async fn disable_endpoint(tx: &mut Tx, id: &str) -> Result<(), LedgerError> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ? AND status = 'active'",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(LedgerError::NotFound);
    }
    sqlx::query("UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled' WHERE endpoint_id = ? AND status = 'pending'")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues one delivery of `data` to every active endpoint subscribed to `event_type`. Each
/// delivery gets its own id, which receivers use to drop duplicates.
pub async fn enqueue(
    tx: &mut Tx,
    event_type: &str,
    data: &serde_json::Value,
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query(ENQUEUE)
        .bind(event_type)
        .bind(data.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The active endpoints subscribed to the event type `?1`: the one place that says who gets an
/// event, for both the check and the insert below.
macro_rules! subscribers {
    () => {
        "FROM webhook_endpoints WHERE status = 'active'
         AND EXISTS (SELECT 1 FROM json_each(webhook_endpoints.events) WHERE value = ?1)"
    };
}

const ENQUEUE: &str = concat!(
    "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, data, status, next_attempt_at,
     created_at) SELECT 'evt_' || lower(hex(randomblob(16))), id, ?1, ?2, 'pending', ?3, ?3 ",
    subscribers!()
);

/// Whether an active endpoint subscribes to `?1`.
const SUBSCRIBED: &str = concat!("SELECT EXISTS (SELECT 1 ", subscribers!(), ")");

/// `enqueue` in a synchronous transaction. The event's body is built only if an active endpoint
/// subscribes to it: settlement and acceptance enqueue one per status change, and with no
/// endpoint building and serializing it was about 3% of the writer's time in a drain.
pub fn enqueue_in(
    tx: &mut SyncTx<'_>,
    event_type: &str,
    data: impl FnOnce() -> serde_json::Value,
    now: Millis,
) -> Result<(), LedgerError> {
    let subscribed: bool = tx
        .prepare(SUBSCRIBED)?
        .query_row([event_type], |row| row.get(0))?;
    if subscribed {
        tx.prepare(ENQUEUE)?
            .execute(rusqlite::params![event_type, data().to_string(), now])?;
    }
    Ok(())
}

/// Pending deliveries due at `now` whose endpoint is active, oldest first, with the endpoint.
pub async fn due(
    pool: &SqlitePool,
    now: Millis,
    limit: i64,
) -> Result<Vec<(DeliveryRow, EndpointRow)>, LedgerError> {
    let deliveries: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.* FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND e.status = 'active'
         ORDER BY d.next_attempt_at, d.rowid LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let endpoint = endpoint(pool, &delivery.endpoint_id).await?;
        out.push((delivery, endpoint));
    }
    Ok(out)
}

/// Records one attempt: delivered, retry at `next_attempt_at`, or failed for good.
pub async fn record_attempt(
    tx: &mut super::Tx,
    id: &str,
    status: &str,
    http_status: Option<i64>,
    error: Option<&str>,
    next_attempt_at: Millis,
    now: Millis,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?,
            next_attempt_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? END
         WHERE id = ? AND status = 'pending'",
    )
    .bind(status)
    .bind(http_status)
    .bind(error)
    .bind(next_attempt_at)
    .bind(status)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn deliveries(
    pool: &SqlitePool,
    endpoint_id: &str,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, LedgerError> {
    Ok(deliveries_query("SELECT *", endpoint_id, status, limit)
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

/// An endpoint's deliveries newest first, of one status when given: the status is in the SQL
/// only when given, so that the failed ones are read from their own index and the read stops at
/// the page's last row (the test reads the plan after `select`).
pub(super) fn deliveries_query(
    select: &str,
    endpoint_id: &str,
    status: Option<&str>,
    limit: i64,
) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut query = sqlx::QueryBuilder::new(format!("{select} FROM webhook_deliveries WHERE "));
    query
        .push("endpoint_id = ")
        .push_bind(endpoint_id.to_string());
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status.to_string());
    }
    query
        .push(" ORDER BY created_at DESC, rowid DESC LIMIT ")
        .push_bind(limit);
    query
}

/// Puts a failed delivery back in the queue, due now, with a fresh attempt budget.
pub async fn replay(tx: &mut Tx, id: &str, now: Millis) -> Result<DeliveryRow, LedgerError> {
    let row: Option<DeliveryRow> = sqlx::query_as(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL
         WHERE id = ? AND status = 'failed' RETURNING *",
    )
    .bind(now)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        return Ok(row);
    }
    let exists = sqlx::query_scalar::<_, i64>("SELECT 1 FROM webhook_deliveries WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    Err(if exists {
        LedgerError::Conflict(format!("delivery {id} is not a failed delivery"))
    } else {
        LedgerError::NotFound
    })
}

/// Deliveries that gave up (every attempt failed), newest first.
pub async fn failed_deliveries(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<DeliveryRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM webhook_deliveries WHERE status = 'failed' ORDER BY created_at DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
