//! Payments (the intents), their on-chain transactions, idempotency lookups and the spend
//! snapshot that policy reads. Status changes go through `set_status`, which refuses any edge the
//! state machine does not allow.

use super::{LedgerError, Millis, Page, SyncTx, Tx};
use crate::domain::{
    Address, AgentId, Asset, CaptureMode, CredentialId, PaymentId, PaymentKind, PaymentStatus,
    TransactionStatus,
};
use sqlx::SqlitePool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: PaymentId,
    pub kind: PaymentKind,
    pub agent_id: Option<AgentId>,
    pub credential_id: Option<CredentialId>,
    pub from_wallet_id: String,
    pub to_address: Address,
    pub amount: i64,
    pub gas_wei: Option<String>,
    pub currency: String,
    pub memo: Option<String>,
    pub reference: Option<String>,
    pub metadata: Option<String>,
    pub confidence: Option<f64>,
    pub capture: CaptureMode,
    pub status: PaymentStatus,
    pub decision: Option<String>,
    pub failure_reason: Option<String>,
    pub tx_hash: Option<String>,
    pub nonce: Option<i64>,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub confirmations: i64,
    pub waiting_reason: Option<String>,
    pub orphaned_blocks: Option<String>,
    pub committed_at: Option<Millis>,
    pub held_since: Option<Millis>,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// `Some("x402")` for a payment a seller executes with an EIP-3009 authorization.
    pub protocol: Option<String>,
    /// The spending scope the payment was made in, the phase it was decided in and its tier.
    pub scope_id: Option<String>,
    pub scope_phase: Option<String>,
    pub scope_tier: Option<i64>,
    /// The tier of the credential's policy the payment fell in.
    pub credential_tier: Option<i64>,
}

impl PaymentRow {
    /// The status (typed when read: an unknown value fails the read itself).
    pub fn status(&self) -> Result<PaymentStatus, LedgerError> {
        Ok(self.status)
    }
}

const INSERT: &str = "INSERT INTO payments (id, kind, agent_id, credential_id, from_wallet_id,
     to_address, amount, gas_wei, currency, memo, reference, metadata, confidence, capture, status,
     decision, failure_reason, idempotency_scope, idempotency_key, request_hash, created_at,
     updated_at, committed_at, protocol, scope_id, scope_phase, scope_tier, credential_tier,
     budget)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Stores a new payment (its amount is the hold) and queues its status webhook.
pub fn insert(tx: &mut SyncTx<'_>, row: &PaymentRow) -> Result<(), LedgerError> {
    tx.prepare(INSERT)?.execute(rusqlite::params![
        row.id,
        row.kind,
        row.agent_id,
        row.credential_id,
        row.from_wallet_id,
        row.to_address,
        row.amount,
        row.gas_wei,
        row.currency,
        row.memo,
        row.reference,
        row.metadata,
        row.confidence,
        row.capture,
        row.status,
        row.decision,
        row.failure_reason,
        row.idempotency_scope,
        row.idempotency_key,
        row.request_hash,
        row.created_at,
        row.updated_at,
        row.committed_at,
        row.protocol,
        row.scope_id,
        row.scope_phase,
        row.scope_tier,
        row.credential_tier,
        row.status.budget(),
    ])?;
    super::webhooks::enqueue_in(
        tx,
        super::webhooks::PAYMENT_STATUS_CHANGED,
        || status_event(row, None),
        row.created_at,
    )?;
    if row.status == PaymentStatus::PendingApproval {
        super::webhooks::enqueue_in(
            tx,
            super::webhooks::APPROVAL_REQUIRED,
            || approval_required(row),
            row.created_at,
        )?;
    }
    Ok(())
}

/// The `payment.approval_required` webhook: what waits, and the console page to decide it on.
fn approval_required(payment: &PaymentRow) -> serde_json::Value {
    let mut event = status_event(payment, None);
    event["console_path"] = serde_json::json!(format!("/console/payments/{}", payment.id));
    event["decision"] = payment
        .decision
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    event
}

pub async fn get(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
) -> Result<PaymentRow, LedgerError> {
    sqlx::query_as("SELECT * FROM payments WHERE id = ?")
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(LedgerError::NotFound)
}

read_by_position!(
    PAYMENT_COLUMNS,
    read_payment,
    PaymentRow {
        id,
        kind,
        agent_id,
        credential_id,
        from_wallet_id,
        to_address,
        amount,
        gas_wei,
        currency,
        memo,
        reference,
        metadata,
        confidence,
        capture,
        status,
        decision,
        failure_reason,
        tx_hash,
        nonce,
        block_number,
        block_hash,
        confirmations,
        waiting_reason,
        orphaned_blocks,
        committed_at,
        held_since,
        idempotency_scope,
        idempotency_key,
        request_hash,
        created_at,
        updated_at,
        protocol,
        scope_id,
        scope_phase,
        scope_tier,
        credential_tier
    }
);

/// `get` in a synchronous transaction.
pub fn get_in(tx: &mut SyncTx<'_>, id: &str) -> Result<PaymentRow, LedgerError> {
    use rusqlite::OptionalExtension;
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?"));
    tx.prepare(&SQL)?
        .query_row([id], read_payment)
        .optional()?
        .ok_or(LedgerError::NotFound)
}

pub async fn find_by_idempotency_key(
    tx: &mut Tx,
    scope: &str,
    key: &str,
) -> Result<Option<PaymentRow>, LedgerError> {
    Ok(
        sqlx::query_as(
            "SELECT * FROM payments WHERE idempotency_scope = ? AND idempotency_key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?,
    )
}

/// The payment stored under an idempotency key, as `(id, request_hash)`, in a synchronous
/// transaction (the replay itself reads the whole payment after it).
pub fn idempotent_in(
    tx: &mut SyncTx<'_>,
    scope: &str,
    key: &str,
) -> Result<Option<(PaymentId, String)>, LedgerError> {
    use rusqlite::OptionalExtension;
    Ok(tx
        .prepare(
            "SELECT id, request_hash FROM payments WHERE idempotency_scope = ? AND idempotency_key = ?",
        )?
        .query_row([scope, key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// What the credential's payments of `tier` hold in the 24 hours before `now` (live holds always
/// count), leaving out `exclude`.
pub fn tier_held(
    tx: &mut SyncTx<'_>,
    credential_id: &str,
    tier: i64,
    now: Millis,
    exclude: Option<&str>,
) -> Result<i64, LedgerError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
        "SELECT COALESCE(SUM(amount), 0) FROM payments
          WHERE credential_id = ?1 AND credential_tier = ?2 AND status IN {}
            AND (status IN ('pending_approval', 'authorized') OR COALESCE(committed_at, created_at) > ?3)
            AND (?4 IS NULL OR id != ?4)",
        PaymentStatus::HOLDING_SQL
    )
    });
    Ok(tx.prepare(&SQL)?.query_row(
        rusqlite::params![credential_id, tier, now - 24 * 60 * 60 * 1000, exclude],
        |row| row.get(0),
    )?)
}

/// Widths of the rolling windows' buckets (migration 0013 keeps them by trigger).
const HOUR_MS: Millis = 60 * 60 * 1000;
const MINUTE_MS: Millis = 60 * 1000;
const SECOND_MS: Millis = 1000;
const DAY_MS: Millis = 24 * HOUR_MS;

/// The start of the first bucket of width `span_ms` that lies wholly after `at`.
fn first_bucket_after(at: Millis, span_ms: Millis) -> Millis {
    (at.div_euclid(span_ms) + 1) * span_ms
}

/// The money committed in the 24-hour window by payments that hold budget and are not live
/// holds: whole hours and whole minutes from the buckets, and the payments of the one minute at
/// the window's edge (`?2` the window's start, `?3` the first whole minute, `?4` the first whole
/// hour). At most 24 + 60 bucket rows and one minute's payments, whatever the day's load.
const DAY_COMMITTED: &str = "SELECT
      (SELECT COALESCE(SUM(amount), 0) FROM credential_committed_buckets
        WHERE credential_id = ?1 AND span_ms = 3600000 AND start_ms >= ?4)
    + (SELECT COALESCE(SUM(amount), 0) FROM credential_committed_buckets
        WHERE credential_id = ?1 AND span_ms = 60000 AND start_ms >= ?3 AND start_ms < ?4)
    + (SELECT COALESCE(SUM(amount), 0) FROM payments
        WHERE credential_id = ?1 AND committed_at > ?2 AND committed_at < ?3 AND budget = 2)";

/// The live holds (pending approval, authorized: `budget` 1): they count in the day whenever
/// committed. By `budget`, one key of the partial index, not by the two statuses, which SQLite
/// reads through a temporary b-tree built at every run (migration 0023).
const LIVE_HOLDS: &str = "SELECT COALESCE(SUM(amount), 0) FROM payments
    WHERE credential_id = ?1 AND budget = 1";

/// The payments holding budget created in the last minute: whole seconds from the buckets and
/// the payments of the one second at the edge (`?2` the window's start, `?3` the first whole
/// second). At most 60 bucket rows and one second's payments.
const MINUTE_COUNT: &str = "SELECT
      (SELECT COALESCE(SUM(payments), 0) FROM credential_created_seconds
        WHERE credential_id = ?1 AND start_ms >= ?3)
    + (SELECT COUNT(*) FROM payments
        WHERE credential_id = ?1 AND created_at > ?2 AND created_at < ?3 AND budget > 0)";

/// The lifetime total, kept by triggers (migrations 0007 and 0012).
const LIFETIME_HELD: &str =
    "SELECT COALESCE((SELECT held_total FROM credential_holds WHERE credential_id = ?1), 0)";

/// Which figures of the spend snapshot a caller reads: a decision reads only those its policy
/// has a rule for (no daily limit, no day sum), the budget view reads them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    pub day: bool,
    pub total: bool,
    pub minute: bool,
}

impl Figures {
    pub const ALL: Figures = Figures {
        day: true,
        total: true,
        minute: true,
    };
}

/// What a credential holds: in the rolling 24 hours before `now`, over its life, and in the last
/// minute, leaving out `exclude` (a payment being approved is not counted against itself). The
/// window is keyed on when the money was committed (creation, approval or capture), and a live
/// hold (`pending_approval`, `authorized`) always counts. Read inside the write transaction that
/// records the decision. A figure not asked for in `figures` is 0 and costs nothing.
pub fn spend_snapshot(
    tx: &mut SyncTx<'_>,
    credential_id: &str,
    now: Millis,
    exclude: Option<&str>,
    figures: Figures,
) -> Result<(i64, i64, i64), LedgerError> {
    // Each figure reads a bounded number of rows, never the credential's history nor the whole
    // window: the lifetime total and the windows' buckets are kept by triggers (migrations 0007,
    // 0012 and 0013), and only the edge of each window is read from the payments themselves.
    let day_ago = now - DAY_MS;
    let minute_ago = now - MINUTE_MS;
    let (mut day, mut total, mut minute) = (0, 0, 0);
    if figures.day {
        let committed: i64 = tx.prepare(DAY_COMMITTED)?.query_row(
            rusqlite::params![
                credential_id,
                day_ago,
                first_bucket_after(day_ago, MINUTE_MS),
                first_bucket_after(day_ago, HOUR_MS)
            ],
            |row| row.get(0),
        )?;
        let live: i64 = tx
            .prepare(LIVE_HOLDS)?
            .query_row([credential_id], |row| row.get(0))?;
        day = committed + live;
    }
    if figures.total {
        total = tx
            .prepare(LIFETIME_HELD)?
            .query_row([credential_id], |row| row.get(0))?;
    }
    if figures.minute {
        minute = tx.prepare(MINUTE_COUNT)?.query_row(
            rusqlite::params![
                credential_id,
                minute_ago,
                first_bucket_after(minute_ago, SECOND_MS)
            ],
            |row| row.get(0),
        )?;
    }
    if let Some(id) = exclude {
        use rusqlite::OptionalExtension;
        let excluded: Option<(i64, String, Option<Millis>, Millis)> = tx
            .prepare(
                "SELECT amount, status, committed_at, created_at FROM payments
                  WHERE id = ? AND credential_id = ?",
            )?
            .query_row([id, credential_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        if let Some((amount, status, committed_at, created_at)) = excluded
            && PaymentStatus::HOLDING_SQL.contains(&format!("'{status}'"))
        {
            if figures.total {
                total -= amount;
            }
            let live = status == "pending_approval" || status == "authorized";
            if figures.day && (live || committed_at.is_some_and(|at| at > day_ago)) {
                day -= amount;
            }
            if figures.minute && created_at > minute_ago {
                minute -= 1;
            }
        }
    }
    Ok((day, total, minute))
}

/// Records when a payment's money was committed (an approval or a capture).
pub async fn set_committed(tx: &mut Tx, id: &str, now: Millis) -> Result<(), LedgerError> {
    sqlx::query("UPDATE payments SET committed_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Restarts a hold's clock (an approval that leaves a manual-capture payment `authorized`).
pub async fn set_held_since(tx: &mut Tx, id: &str, now: Millis) -> Result<(), LedgerError> {
    sqlx::query("UPDATE payments SET held_since = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A credential's live holds but those of x402 authorizations (which end on their own).
const LIVE_HOLDS_OF_CREDENTIAL: &str = "SELECT * FROM payments WHERE credential_id = ? AND budget = 1
    AND NOT EXISTS (SELECT 1 FROM x402_authorizations a WHERE a.payment_id = payments.id AND a.nonce IS NOT NULL)
    ORDER BY rowid";

/// The live holds (`pending_approval`, `authorized`: `budget` 1) of a credential: what revoking
/// or expiring it cancels.
pub async fn live_holds_of_credential(
    tx: &mut Tx,
    credential_id: &str,
) -> Result<Vec<PaymentRow>, LedgerError> {
    Ok(sqlx::query_as(LIVE_HOLDS_OF_CREDENTIAL)
        .bind(credential_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Live holds of credentials that expired at or before `now`.
pub async fn live_holds_of_expired_credentials(
    tx: &mut Tx,
    now: Millis,
    limit: i64,
) -> Result<Vec<PaymentRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT p.* FROM payments p JOIN credentials c ON c.id = p.credential_id
         WHERE c.expires_at <= ? AND p.status IN ('pending_approval', 'authorized') AND NOT EXISTS (SELECT 1 FROM x402_authorizations a WHERE a.payment_id = p.id AND a.nonce IS NOT NULL) ORDER BY p.rowid LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

static SET_STATUS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = ?, updated_at = ? WHERE id = ? AND status = ?
         RETURNING {PAYMENT_COLUMNS}"
    )
});

/// `SET_STATUS` that also mirrors the current transfer onto the row (`write_chain_fields`).
static SET_STATUS_AND_CHAIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = ?, updated_at = ?, tx_hash = ?, nonce = ?,
             block_number = ?, block_hash = ?, confirmations = ?
         WHERE id = ? AND status = ?
         RETURNING {PAYMENT_COLUMNS}"
    )
});

/// Moves a payment from `from` to `to`, failing closed if the edge is not in the state machine or
/// the payment is no longer in `from` (someone else moved it first). Returns the payment as the
/// change left it.
pub fn set_status(
    tx: &mut SyncTx<'_>,
    id: &str,
    from: PaymentStatus,
    to: PaymentStatus,
    now: Millis,
) -> Result<PaymentRow, LedgerError> {
    set_status_along(tx, id, from, &[to], now)
}

/// Moves a payment from `from` through each status of `path` in turn, every edge checked against
/// the state machine, with one UPDATE to the last: the statuses between are never stored, as no
/// other transaction can read the row between the edges of one write. Each edge still enqueues
/// its own `payment.status_changed` webhook, in order. Returns the payment as the change left it.
pub fn set_status_along(
    tx: &mut SyncTx<'_>,
    id: &str,
    from: PaymentStatus,
    path: &[PaymentStatus],
    now: Millis,
) -> Result<PaymentRow, LedgerError> {
    set_status_and_chain_along(tx, id, from, path, None, now)
}

/// `set_status_along` that, in the same UPDATE, mirrors the current transfer of the payment's
/// transactions (`legs`, as `legs_in` read them in this write) onto the row, as
/// `write_chain_fields` would: one row write where settlement would otherwise make two.
pub fn set_status_and_chain_along(
    tx: &mut SyncTx<'_>,
    id: &str,
    from: PaymentStatus,
    path: &[PaymentStatus],
    legs: Option<&[LegRow]>,
    now: Millis,
) -> Result<PaymentRow, LedgerError> {
    let mut at = from;
    for &next in path {
        if !at.can_become(next) {
            return Err(LedgerError::Conflict(format!(
                "payment {id} cannot go from {at} to {next}"
            )));
        }
        at = next;
    }
    if path.is_empty() {
        return Err(LedgerError::Conflict(format!(
            "payment {id}: no status to move to from {from}"
        )));
    }
    use rusqlite::OptionalExtension;
    let moved = match legs.and_then(current_transfer) {
        Some(current) => tx.prepare(&SET_STATUS_AND_CHAIN)?.query_row(
            rusqlite::params![
                at.as_str(),
                now,
                current.tx_hash,
                current.nonce,
                current.block_number,
                current.block_hash,
                current.confirmations,
                id,
                from.as_str()
            ],
            read_payment,
        ),
        None => tx.prepare(&SET_STATUS)?.query_row(
            rusqlite::params![at.as_str(), now, id, from.as_str()],
            read_payment,
        ),
    };
    let mut payment = moved
        .optional()?
        .ok_or_else(|| LedgerError::Conflict(format!("payment {id} is no longer {from}")))?;
    let mut previous = from;
    for &next in path {
        // Each edge's webhook shows the payment as that edge left it.
        payment.status = next;
        super::webhooks::enqueue_in(
            tx,
            super::webhooks::PAYMENT_STATUS_CHANGED,
            || status_event(&payment, Some(previous)),
            now,
        )?;
        previous = next;
    }
    Ok(payment)
}

/// What a `payment.status_changed` webhook carries.
fn status_event(payment: &PaymentRow, previous: Option<PaymentStatus>) -> serde_json::Value {
    serde_json::json!({
        "payment_id": payment.id, "kind": payment.kind, "agent_id": payment.agent_id,
        "status": payment.status, "previous_status": previous,
        "amount": crate::domain::Amount::from_sql(payment.amount).to_string(), "currency": payment.currency,
        "to": payment.to_address, "reference": payment.reference, "tx_hash": payment.tx_hash,
        "block_number": payment.block_number, "block_hash": payment.block_hash,
        "failure_reason": payment.failure_reason,
    })
}

/// Fails a payment with `reason`, recorded before the status change so that the change's
/// webhook carries it. Returns the failed payment.
pub fn set_failure(
    tx: &mut SyncTx<'_>,
    id: &str,
    from: PaymentStatus,
    reason: &str,
    now: Millis,
) -> Result<PaymentRow, LedgerError> {
    set_failure_reason(tx, id, reason)?;
    set_status(tx, id, from, PaymentStatus::Failed, now)
}

/// Copies the payment's current (latest) USDC transaction (or ETH one, for an ETH-only
/// funding) onto the payment row: hash, nonce and where the chain has it. The transaction rows
/// stay the one source of these facts.
pub fn sync_chain_fields(tx: &mut SyncTx<'_>, id: &str, now: Millis) -> Result<(), LedgerError> {
    let legs = legs_in(tx, id)?;
    write_chain_fields(tx, id, &legs, now)
}

/// `sync_chain_fields` from the payment's transactions as `legs_in` just read them, in the same
/// write transaction. With no live transfer the payment row is left as it is.
pub fn write_chain_fields(
    tx: &mut SyncTx<'_>,
    id: &str,
    legs: &[LegRow],
    now: Millis,
) -> Result<(), LedgerError> {
    let Some(current) = current_transfer(legs) else {
        return Ok(());
    };
    tx.prepare(
        "UPDATE payments SET tx_hash = ?, nonce = ?, block_number = ?, block_hash = ?,
             confirmations = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(rusqlite::params![
        current.tx_hash,
        current.nonce,
        current.block_number,
        current.block_hash,
        current.confirmations,
        now,
        id
    ])?;
    Ok(())
}

/// An included payment's confirmations as of `head` (0: not known), counted as a settlement
/// pass counts them (`head` less the payment's block), below `required` (reaching it is the
/// `confirmed` status change, which a pass writes) and never below what is stored. Any other
/// payment's are what is stored: settlement writes the count with each status change.
pub fn confirmations_at(payment: &PaymentRow, head: u64, required: u64) -> i64 {
    let stored = payment.confirmations;
    match (payment.status, payment.block_number) {
        (PaymentStatus::Included, Some(block)) if head > 0 => {
            let below = i64::try_from(required.saturating_sub(1)).unwrap_or(i64::MAX);
            let counted = i64::try_from(head)
                .unwrap_or(i64::MAX)
                .saturating_sub(block);
            counted.min(below).max(stored)
        }
        _ => stored,
    }
}

/// The transaction a payment's chain fields mirror: of its live transfers (neither replaced nor
/// dropped), the USDC one if there is one, and of those the latest.
fn current_transfer(legs: &[LegRow]) -> Option<&LegRow> {
    legs.iter()
        .filter(|leg| leg.status.is_live() && leg.purpose == TRANSFER)
        .max_by_key(|leg| (leg.asset == Asset::Usdc, leg.id))
}

#[derive(Clone, Debug, Default)]
pub struct PaymentFilter {
    pub agent_id: Option<String>,
    pub status: Option<String>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// Only fundings and sweeps (what the treasury role may read).
    pub treasury_only: bool,
}

/// Cursors are `created_at:id` of the last row of the previous page.
pub fn parse_cursor(cursor: Option<&str>) -> Result<(Option<Millis>, Option<String>), LedgerError> {
    match cursor {
        None => Ok((None, None)),
        Some(text) => {
            let (at, id) = text
                .split_once(':')
                .ok_or(LedgerError::Conflict("cursor".into()))?;
            let at = at
                .parse()
                .map_err(|_| LedgerError::Conflict("cursor".into()))?;
            Ok((Some(at), Some(id.to_string())))
        }
    }
}

pub fn cursor_of(created_at: Millis, id: &str) -> String {
    format!("{created_at}:{id}")
}

/// A page of payments, newest first. Only the filters given are in the SQL, so that SQLite reads
/// the page from an index (the agent's, the status's, or `payments_created`) and stops at its
/// last row: a filter written as `(?1 IS NULL OR agent_id = ?1)` cannot use an index, and the
/// list read and sorted every payment stored (265 ms at 40,000, growing with the history).
pub async fn list(
    pool: &SqlitePool,
    filter: &PaymentFilter,
    page: &Page,
) -> Result<Vec<PaymentRow>, LedgerError> {
    Ok(list_query("SELECT *", filter, page)?
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

/// The list's query, after `select` (the test reads its plan).
fn list_query(
    select: &str,
    filter: &PaymentFilter,
    page: &Page,
) -> Result<sqlx::QueryBuilder<sqlx::Sqlite>, LedgerError> {
    let mut query = sqlx::QueryBuilder::new(format!("{select} FROM payments WHERE 1"));
    if let Some(agent_id) = &filter.agent_id {
        query.push(" AND agent_id = ").push_bind(agent_id.clone());
    }
    if let Some(status) = &filter.status {
        query.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(from) = filter.from {
        query.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND created_at < ").push_bind(to);
    }
    if filter.treasury_only {
        query.push(" AND kind IN ('funding', 'sweep')");
    }
    push_page(&mut query, page)?;
    Ok(query)
}

/// Ends a list's query with its page: the rows strictly older than the cursor (`created_at:id`
/// of the previous page's last row), newest first, at most the page's limit.
pub(super) fn push_page(
    query: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    page: &Page,
) -> Result<(), LedgerError> {
    if let (Some(at), Some(id)) = parse_cursor(page.cursor.as_deref())? {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.limit());
    Ok(())
}

/// Payments the settlement worker must sign for, oldest first: queued or submitted payments with
/// a leg (USDC when there is an amount, ETH when there is `gas_wei`) that has no transaction
/// other than dropped ones. A new payment has no transactions at all; a payment whose nonce a
/// foreign transaction consumed has only dropped ones for that leg. x402 payments are never
/// signed here: the seller's facilitator executes their authorization.
/// A payment settlement has to sign for, with the legs that have no transaction yet.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Queued {
    #[sqlx(flatten)]
    pub payment: PaymentRow,
    pub needs_usdc: bool,
    pub needs_eth: bool,
}

pub async fn needing_transactions(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<Queued>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM (SELECT p.*, p.rowid AS queue_order,
             (p.amount > 0 AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.payment_id = p.id
                 AND t.asset = 'usdc' AND t.purpose = 'transfer' AND t.status != 'dropped')) AS needs_usdc,
             (p.gas_wei IS NOT NULL AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.payment_id = p.id
                 AND t.asset = 'eth' AND t.purpose = 'transfer' AND t.status != 'dropped')) AS needs_eth
           FROM payments p WHERE p.status IN ('queued', 'submitted') AND p.protocol IS NULL)
         WHERE needs_usdc OR needs_eth ORDER BY queue_order LIMIT ?",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Which legs of a payment still need a transaction: `(usdc, eth)`.
pub async fn missing_legs(
    executor: impl sqlx::SqliteExecutor<'_>,
    payment: &PaymentRow,
) -> Result<(bool, bool), LedgerError> {
    let (usdc, eth): (i64, i64) = sqlx::query_as(LEGS)
        .bind(&payment.id)
        .fetch_one(executor)
        .await?;
    Ok(legs_missing(payment, usdc, eth))
}

const LEGS: &str =
    "SELECT COUNT(CASE WHEN asset = 'usdc' THEN 1 END), COUNT(CASE WHEN asset = 'eth' THEN 1 END)
    FROM transactions WHERE payment_id = ? AND purpose = 'transfer' AND status != 'dropped'";

fn legs_missing(payment: &PaymentRow, usdc: i64, eth: i64) -> (bool, bool) {
    (
        payment.amount > 0 && usdc == 0,
        payment.gas_wei.is_some() && eth == 0,
    )
}

/// `missing_legs` from the payment's transactions as `legs_in` read them: a leg counts while its
/// transfer is not dropped (as `LEGS` counts).
pub fn missing_legs_of(payment: &PaymentRow, legs: &[LegRow]) -> (bool, bool) {
    let (usdc, eth) = leg_counts(legs);
    legs_missing(payment, usdc, eth)
}

/// The transfers that hold a leg, USDC and ETH: what `LEGS` counts.
fn leg_counts(legs: &[LegRow]) -> (i64, i64) {
    let count = |asset: Asset| {
        legs.iter()
            .filter(|leg| {
                leg.asset == asset
                    && leg.purpose == TRANSFER
                    && leg.status != TransactionStatus::Dropped
            })
            .count() as i64
    };
    (count(Asset::Usdc), count(Asset::Eth))
}

/// What settlement's roll-up reads of each of a payment's transactions: no signed bytes.
#[derive(Clone, Debug)]
pub struct LegRow {
    pub id: i64,
    pub asset: Asset,
    pub purpose: String,
    pub status: TransactionStatus,
    pub tx_hash: String,
    pub nonce: i64,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub confirmations: i64,
}

impl LegRow {
    pub fn is_filler(&self) -> bool {
        self.purpose == FILLER
    }
}

read_by_position!(
    LEG_COLUMNS,
    read_leg,
    LegRow {
        id,
        asset,
        purpose,
        status,
        tx_hash,
        nonce,
        block_number,
        block_hash,
        confirmations
    }
);

/// A payment's transactions, oldest first, as `LegRow`s: one index range, read in the write
/// transaction that acts on them.
pub fn legs_in(tx: &mut SyncTx<'_>, payment_id: &str) -> Result<Vec<LegRow>, LedgerError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {LEG_COLUMNS} FROM transactions WHERE payment_id = ? ORDER BY id")
    });
    let mut statement = tx.prepare(&SQL)?;
    let rows = statement.query_map([payment_id], read_leg)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TransactionRow {
    pub id: i64,
    pub payment_id: PaymentId,
    pub asset: Asset,
    pub purpose: String,
    pub wallet_id: String,
    pub nonce: i64,
    pub tx_hash: String,
    pub raw: Vec<u8>,
    pub status: TransactionStatus,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub confirmations: i64,
    pub broadcast_block: Option<i64>,
    pub unsendable_since: Option<i64>,
    pub finality_alarm: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl TransactionRow {
    /// The status (typed when read: an unknown value fails the read itself).
    pub fn status(&self) -> Result<TransactionStatus, LedgerError> {
        Ok(self.status)
    }

    /// What `legs_in` would read of this transaction.
    pub fn leg(&self) -> LegRow {
        LegRow {
            id: self.id,
            asset: self.asset,
            purpose: self.purpose.clone(),
            status: self.status,
            tx_hash: self.tx_hash.clone(),
            nonce: self.nonce,
            block_number: self.block_number,
            block_hash: self.block_hash.clone(),
            confirmations: self.confirmations,
        }
    }

    pub fn is_filler(&self) -> bool {
        self.purpose == FILLER
    }
}

/// `purpose` of a transaction that moves the payment's money.
pub const TRANSFER: &str = "transfer";
/// `purpose` of a zero-value self-transfer that takes a nonce slot Bursar gave up.
pub const FILLER: &str = "filler";

/// A new signed transaction, stored before it is broadcast.
#[derive(Clone, Copy, Debug)]
pub struct NewTransaction<'a> {
    pub payment_id: &'a str,
    pub asset: Asset,
    pub purpose: &'a str,
    pub wallet_id: &'a str,
    pub nonce: i64,
    pub tx_hash: &'a str,
    pub raw: &'a [u8],
}

/// Stores a signed transaction and returns its row as stored, for broadcasting it without
/// reading it back.
pub fn insert_transaction(
    tx: &mut SyncTx<'_>,
    new: NewTransaction<'_>,
    now: Millis,
) -> Result<TransactionRow, LedgerError> {
    // The id is the handle's last rowid rather than `RETURNING id`: SQLite runs a RETURNING
    // clause as a trigger, which gives the statement a journal of its own and an ephemeral
    // table to hold the row (with both, this insert took 13% of the writer's time in a backlog
    // drain, more than half of it that overhead).
    tx.prepare(
        "INSERT INTO transactions (payment_id, asset, purpose, wallet_id, nonce, tx_hash, raw, status, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'signed', ?, ?)",
    )?
    .execute(rusqlite::params![
        new.payment_id,
        new.asset,
        new.purpose,
        new.wallet_id,
        new.nonce,
        new.tx_hash,
        new.raw,
        now,
        now
    ])?;
    let id = tx.last_insert_rowid();
    Ok(TransactionRow {
        id,
        payment_id: PaymentId::from_text(new.payment_id),
        asset: new.asset,
        purpose: new.purpose.to_string(),
        wallet_id: new.wallet_id.to_string(),
        nonce: new.nonce,
        tx_hash: new.tx_hash.to_string(),
        raw: new.raw.to_vec(),
        status: TransactionStatus::Signed,
        block_number: None,
        block_hash: None,
        confirmations: 0,
        broadcast_block: None,
        unsendable_since: None,
        finality_alarm: 0,
        created_at: now,
        updated_at: now,
    })
}

/// Every transaction of every open nonce slot (a slot whose live transaction is signed,
/// submitted or included), replaced and dropped ones included, ordered by wallet, nonce and age.
pub async fn open_slots(pool: &SqlitePool) -> Result<Vec<TransactionRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT t.* FROM transactions t
         JOIN (SELECT DISTINCT wallet_id, nonce FROM transactions
               WHERE status IN ('signed', 'submitted', 'included')) o
           ON o.wallet_id = t.wallet_id AND o.nonce = t.nonce
         ORDER BY t.wallet_id, t.nonce, t.id",
    )
    .fetch_all(pool)
    .await?)
}

/// Every transaction of one nonce slot, oldest first.
pub async fn slot(
    executor: impl sqlx::SqliteExecutor<'_>,
    wallet_id: &str,
    nonce: i64,
) -> Result<Vec<TransactionRow>, LedgerError> {
    Ok(
        sqlx::query_as("SELECT * FROM transactions WHERE wallet_id = ? AND nonce = ? ORDER BY id")
            .bind(wallet_id)
            .bind(nonce)
            .fetch_all(executor)
            .await?,
    )
}

const IN_FLIGHT_RAW: &str = "SELECT raw FROM transactions INDEXED BY transactions_in_pool
     WHERE wallet_id = ? AND status IN ('signed', 'submitted')";

/// The signed bytes of a wallet's live transactions that no block holds yet: what may still
/// spend its ETH.
pub async fn in_flight_raw(
    pool: &SqlitePool,
    wallet_id: &str,
) -> Result<Vec<Vec<u8>>, LedgerError> {
    Ok(sqlx::query_scalar(IN_FLIGHT_RAW)
        .bind(wallet_id)
        .fetch_all(pool)
        .await?)
}

/// How many of a wallet's live transactions are in the node's pool: signed or broadcast, at a
/// nonce at or above `chain_nonce` (the wallet's transaction count on chain), so in no block
/// yet. Read from the partial index of in-pool transactions (migration 0014).
pub async fn in_pool_count(
    pool: &SqlitePool,
    wallet_id: &str,
    chain_nonce: u64,
) -> Result<u64, LedgerError> {
    let chain_nonce = i64::try_from(chain_nonce).unwrap_or(i64::MAX);
    let count: i64 = sqlx::query_scalar(IN_POOL_COUNT)
        .bind(wallet_id)
        .bind(chain_nonce)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

const IN_POOL_COUNT: &str = "SELECT COUNT(*) FROM transactions INDEXED BY transactions_in_pool
     WHERE wallet_id = ? AND status IN ('signed', 'submitted') AND nonce >= ?";

/// Sets a transaction's status alone (replaced, dropped, or back to submitted).
pub fn set_transaction_status(
    tx: &mut SyncTx<'_>,
    id: i64,
    status: TransactionStatus,
    now: Millis,
) -> Result<(), LedgerError> {
    tx.prepare("UPDATE transactions SET status = ?, updated_at = ? WHERE id = ?")?
        .execute(rusqlite::params![status.as_str(), now, id])?;
    Ok(())
}

/// Records the head at which the node first refused a transaction (`None`: it accepts it now).
pub fn set_unsendable_since(
    tx: &mut SyncTx<'_>,
    id: i64,
    head: Option<i64>,
) -> Result<(), LedgerError> {
    tx.prepare("UPDATE transactions SET unsendable_since = ? WHERE id = ?")?
        .execute(rusqlite::params![head, id])?;
    Ok(())
}

/// Sets why a payment waits (`None`: it does not). Returns whether the reason changed, so that
/// the caller audits each wait once, when it starts.
pub fn set_waiting_reason(
    tx: &mut SyncTx<'_>,
    id: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<bool, LedgerError> {
    let done = tx
        .prepare(
            "UPDATE payments SET waiting_reason = ?1, updated_at = ?2 WHERE id = ?3 AND waiting_reason IS NOT ?1",
        )?
        .execute(rusqlite::params![reason, now, id])?;
    Ok(done == 1)
}

/// How many payments wait, by reason, for the `bursar_payments_waiting` gauge.
pub async fn waiting_counts(pool: &SqlitePool) -> Result<Vec<(String, i64)>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT waiting_reason, COUNT(*) FROM payments WHERE waiting_reason IS NOT NULL GROUP BY waiting_reason",
    )
    .fetch_all(pool)
    .await?)
}

/// Adds a block that held the payment's transaction at depth and left the canonical chain.
pub async fn add_orphaned_block(
    tx: &mut Tx,
    id: &str,
    block_number: i64,
    block_hash: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE payments SET orphaned_blocks = json_insert(COALESCE(orphaned_blocks, '[]'), '$[#]',
             json_object('block_number', ?, 'block_hash', ?)) WHERE id = ?",
    )
    .bind(block_number)
    .bind(block_hash)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const TRANSACTIONS_OF: &str = "SELECT * FROM transactions WHERE payment_id = ? ORDER BY id";

pub async fn transactions_of(
    executor: impl sqlx::SqliteExecutor<'_>,
    payment_id: &str,
) -> Result<Vec<TransactionRow>, LedgerError> {
    Ok(sqlx::query_as(TRANSACTIONS_OF)
        .bind(payment_id)
        .fetch_all(executor)
        .await?)
}

pub fn update_transaction(
    tx: &mut SyncTx<'_>,
    id: i64,
    status: TransactionStatus,
    block_number: Option<i64>,
    block_hash: Option<&str>,
    confirmations: i64,
    now: Millis,
) -> Result<(), LedgerError> {
    tx.prepare(
        "UPDATE transactions SET status = ?, block_number = ?, block_hash = ?, confirmations = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(rusqlite::params![status.as_str(), block_number, block_hash, confirmations, now, id])?;
    Ok(())
}

/// Lowers a held amount (a partial capture); never raises it.
pub async fn lower_amount(
    tx: &mut Tx,
    id: &str,
    amount: i64,
    now: Millis,
) -> Result<(), LedgerError> {
    let done =
        sqlx::query("UPDATE payments SET amount = ?, updated_at = ? WHERE id = ? AND amount >= ?")
            .bind(amount)
            .bind(now)
            .bind(id)
            .bind(amount)
            .execute(&mut **tx)
            .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Conflict(format!(
            "payment {id} holds less than {amount}"
        )));
    }
    Ok(())
}

/// Payments of `status` whose wait began (creation, or the approval that left them held) at or
/// before `cutoff`, oldest first.
pub async fn stale(
    tx: &mut Tx,
    status: PaymentStatus,
    cutoff: Millis,
    limit: i64,
) -> Result<Vec<PaymentRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM payments WHERE status = ? AND COALESCE(held_since, created_at) <= ? AND NOT EXISTS (SELECT 1 FROM x402_authorizations a WHERE a.payment_id = payments.id AND a.nonce IS NOT NULL) ORDER BY rowid LIMIT ?",
    )
    .bind(status.as_str())
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

const UNBROADCAST_OF_AGENT: &str = "SELECT * FROM payments INDEXED BY payments_status
     WHERE status IN ('pending_approval', 'authorized', 'queued') AND agent_id = ?
       AND NOT EXISTS (SELECT 1 FROM x402_authorizations a WHERE a.payment_id = payments.id
                       AND a.nonce IS NOT NULL)
     ORDER BY rowid";

/// An agent's payments that no node has accepted a transaction for: what a freeze cancels.
/// A queued payment may have signed transactions the node never took; settlement fills their
/// nonces so that they can never execute and the wallet's later nonces are not blocked.
/// Read from the three statuses' ranges of `payments_status` (what is open, of every agent), not
/// from the agent's whole history: a freeze runs in a write transaction, and on an agent with a
/// long history it held the writer, and every other agent's acceptance, while it read it.
pub async fn unbroadcast_of_agent(
    tx: &mut Tx,
    agent_id: &str,
) -> Result<Vec<PaymentRow>, LedgerError> {
    Ok(sqlx::query_as(UNBROADCAST_OF_AGENT)
        .bind(agent_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Puts a transaction back to `submitted` as of `head`, with no block: what a first broadcast
/// records, and what a reorg (shallow or past the required depth) leaves behind.
pub fn reopen_transaction(
    tx: &mut SyncTx<'_>,
    id: i64,
    head: u64,
    now: Millis,
) -> Result<(), LedgerError> {
    let head = i64::try_from(head).map_err(|_| LedgerError::Corrupt("block number".into()))?;
    tx.prepare(
        "UPDATE transactions SET status = ?, block_number = NULL, block_hash = NULL,
             confirmations = 0, updated_at = ?, broadcast_block = ? WHERE id = ?",
    )?
    .execute(rusqlite::params![
        TransactionStatus::Submitted.as_str(),
        now,
        head,
        id
    ])?;
    Ok(())
}

/// The blocks (number and recorded hash) at or above `from_block` that hold a confirmed
/// transaction not yet flagged for a finality violation: the blocks re-checked against the
/// canonical chain. Read from a partial index, so a pass costs the window's blocks, not every
/// confirmed transaction ever stored.
/// Named: without statistics the planner would take the status index and scan every confirmed
/// transaction.
const RECENTLY_CONFIRMED_BLOCKS: &str = "SELECT DISTINCT block_number, block_hash
     FROM transactions INDEXED BY transactions_finality_window
     WHERE status = 'confirmed' AND finality_alarm = 0 AND block_number >= ?
     ORDER BY block_number";

pub async fn recently_confirmed_blocks(
    pool: &SqlitePool,
    from_block: i64,
) -> Result<Vec<(i64, String)>, LedgerError> {
    Ok(sqlx::query_as(RECENTLY_CONFIRMED_BLOCKS)
        .bind(from_block)
        .fetch_all(pool)
        .await?)
}

/// The confirmed transactions recorded in block `number` with hash `hash`, not yet flagged for a
/// finality violation.
pub async fn confirmed_in_block(
    pool: &SqlitePool,
    number: i64,
    hash: &str,
) -> Result<Vec<TransactionRow>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT * FROM transactions WHERE status = 'confirmed' AND finality_alarm = 0
         AND block_number = ? AND block_hash = ? ORDER BY id",
    )
    .bind(number)
    .bind(hash)
    .fetch_all(pool)
    .await?)
}

/// A USDC transaction of the ledger as reconciliation compares it with the chain.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LedgerTransfer {
    pub payment_id: String,
    pub tx_hash: String,
    pub status: String,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub from_address: String,
    pub to_address: Address,
    pub amount: i64,
}

/// USDC transactions recorded in a block within `[from_block, to_block]` (included or
/// confirmed), and every other one not in a final state (submitted or replaced, whose hash may
/// still turn up on chain).
pub async fn ledger_transfers(
    pool: &SqlitePool,
    from_block: i64,
    to_block: i64,
) -> Result<Vec<LedgerTransfer>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT t.payment_id, t.tx_hash, t.status, t.block_number, t.block_hash, w.address AS from_address,
                p.to_address, p.amount
         FROM transactions t JOIN payments p ON p.id = t.payment_id JOIN wallets w ON w.id = t.wallet_id
         WHERE t.asset = 'usdc' AND (
             (t.status IN ('included', 'confirmed') AND t.block_number BETWEEN ?1 AND ?2)
             OR t.status IN ('signed', 'submitted', 'replaced'))
         UNION ALL
         SELECT p.id, p.tx_hash, p.status, p.block_number, p.block_hash, w.address, p.to_address, p.amount
         FROM payments p JOIN wallets w ON w.id = p.from_wallet_id
         WHERE p.protocol = 'x402' AND p.tx_hash IS NOT NULL AND (
             (p.status IN ('included', 'confirmed') AND p.block_number BETWEEN ?1 AND ?2)
             OR p.status = 'submitted')",
    )
    .bind(from_block)
    .bind(to_block)
    .fetch_all(pool)
    .await?)
}

/// The reason recorded for a payment's failure, if any, as of this write transaction.
pub fn failure_reason_in(tx: &mut SyncTx<'_>, id: &str) -> Result<Option<String>, LedgerError> {
    use rusqlite::OptionalExtension;
    tx.prepare("SELECT failure_reason FROM payments WHERE id = ?")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .ok_or(LedgerError::NotFound)
}

/// Records why a payment's transaction failed, ahead of the status change that reports it.
pub fn set_failure_reason(tx: &mut SyncTx<'_>, id: &str, reason: &str) -> Result<(), LedgerError> {
    tx.prepare("UPDATE payments SET failure_reason = ? WHERE id = ?")?
        .execute([reason, id])?;
    Ok(())
}

#[cfg(test)]
mod leg_tests {
    use super::{LegRow, TransactionStatus as S, current_transfer, leg_counts};
    use crate::domain::Asset;

    fn leg(id: i64, asset: Asset, purpose: &str, status: S) -> LegRow {
        LegRow {
            id,
            asset,
            purpose: purpose.into(),
            status,
            tx_hash: format!("0x{id:064x}"),
            nonce: id,
            block_number: None,
            block_hash: None,
            confirmations: 0,
        }
    }

    /// The mirrored transaction is the latest live USDC transfer, else the latest live ETH one;
    /// replaced, dropped and filler transactions never are.
    #[test]
    fn the_chain_fields_follow_the_latest_live_transfer_usdc_first() {
        let legs = [
            leg(1, Asset::Usdc, super::TRANSFER, S::Replaced),
            leg(2, Asset::Usdc, super::TRANSFER, S::Submitted),
            leg(3, Asset::Eth, super::TRANSFER, S::Included),
            leg(4, Asset::Usdc, super::FILLER, S::Submitted),
            leg(5, Asset::Usdc, super::TRANSFER, S::Dropped),
        ];
        assert_eq!(current_transfer(&legs).map(|l| l.id), Some(2));
        assert_eq!(current_transfer(&legs[2..]).map(|l| l.id), Some(3));
        let none = [leg(1, Asset::Usdc, super::TRANSFER, S::Replaced)];
        assert!(current_transfer(&none).is_none());
        let two = [
            leg(6, Asset::Usdc, super::TRANSFER, S::Signed),
            leg(7, Asset::Usdc, super::TRANSFER, S::Submitted),
        ];
        assert_eq!(current_transfer(&two).map(|l| l.id), Some(7));
    }

    /// A leg is held by any transfer of its asset that is not dropped (a replaced one still
    /// may execute); fillers hold none.
    #[test]
    fn legs_count_undropped_transfers_by_asset() {
        let legs = [
            leg(1, Asset::Usdc, super::TRANSFER, S::Replaced),
            leg(2, Asset::Usdc, super::TRANSFER, S::Dropped),
            leg(3, Asset::Eth, super::FILLER, S::Submitted),
            leg(4, Asset::Eth, super::TRANSFER, S::Dropped),
        ];
        assert_eq!(leg_counts(&legs), (1, 0));
        assert_eq!(leg_counts(&legs[1..]), (0, 0));
    }
}

#[cfg(test)]
mod depth_tests {
    use super::{PaymentRow, confirmations_at};
    use crate::domain::{Address, CaptureMode, PaymentId, PaymentKind, PaymentStatus};

    fn payment(status: PaymentStatus, block_number: Option<i64>, stored: i64) -> PaymentRow {
        PaymentRow {
            id: PaymentId::generate(),
            kind: PaymentKind::Payment,
            agent_id: None,
            credential_id: None,
            from_wallet_id: "wal_1".into(),
            to_address: Address::parse("0x000000000000000000000000000000000000dEaD").unwrap(),
            amount: 1,
            gas_wei: None,
            currency: "USDC".into(),
            memo: None,
            reference: None,
            metadata: None,
            confidence: None,
            capture: CaptureMode::Automatic,
            status,
            decision: None,
            failure_reason: None,
            tx_hash: None,
            nonce: None,
            block_number,
            block_hash: None,
            confirmations: stored,
            waiting_reason: None,
            orphaned_blocks: None,
            committed_at: None,
            held_since: None,
            idempotency_scope: "s".into(),
            idempotency_key: "k".into(),
            request_hash: "h".into(),
            created_at: 0,
            updated_at: 0,
            protocol: None,
            scope_id: None,
            scope_phase: None,
            scope_tier: None,
            credential_tier: None,
        }
    }

    /// An included payment counts the blocks on top of its own up to the verified head, below
    /// the required depth and never below what was stored; before any verified head, and for
    /// every other status, the stored count is the count.
    #[test]
    fn an_included_payment_counts_to_the_verified_head_below_the_required_depth() {
        let included = payment(PaymentStatus::Included, Some(100), 0);
        assert_eq!(confirmations_at(&included, 101, 3), 1);
        assert_eq!(confirmations_at(&included, 102, 3), 2);
        // Reaching the depth is the `confirmed` change a pass writes, not a count on read.
        assert_eq!(confirmations_at(&included, 110, 3), 2);
        // No pass has verified a head yet (a restart): what is stored.
        assert_eq!(
            confirmations_at(&payment(PaymentStatus::Included, Some(100), 1), 0, 3),
            1
        );
        // A head below what was stored (the chain rewound): never fewer than stored.
        assert_eq!(
            confirmations_at(&payment(PaymentStatus::Included, Some(100), 1), 99, 3),
            1
        );
        for status in [
            PaymentStatus::Submitted,
            PaymentStatus::Confirmed,
            PaymentStatus::Failed,
        ] {
            assert_eq!(confirmations_at(&payment(status, Some(100), 4), 120, 3), 4);
        }
        assert_eq!(
            confirmations_at(&payment(PaymentStatus::Included, None, 0), 120, 3),
            0
        );
    }
}

#[cfg(test)]
mod plan_tests {
    /// A ledger on a fresh file with every migration applied, and the directory that holds it.
    async fn fresh_ledger() -> (tempfile::TempDir, super::super::Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = super::super::Ledger::open(&url).await.unwrap();
        (dir, ledger)
    }

    /// The detail lines of `sql`'s query plan. Its parameters are left unbound (NULL): without
    /// `ANALYZE` statistics, which the ledger never gathers, a plan does not depend on them.
    async fn plan_of_sql(ledger: &super::super::Ledger, sql: &str) -> Vec<String> {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(ledger.pool())
                .await
                .unwrap();
        plan.into_iter().map(|(_, _, _, detail)| detail).collect()
    }

    /// The policy's figures read bounded index ranges, whatever the history and the day's load:
    /// no figure scans a table or fetches a payment per row (`EXPLAIN QUERY PLAN`), the windows
    /// are read from their buckets by primary key, and only the edge minute or second from the
    /// payments.
    #[tokio::test]
    async fn the_spend_snapshot_reads_only_bounded_index_ranges() {
        let (_dir, ledger) = fresh_ledger().await;
        let minute_count: &str = super::MINUTE_COUNT;
        for (sql, parameters, buckets, index) in [
            (
                super::DAY_COMMITTED,
                3,
                "credential_committed_buckets",
                "payments_credential_committed",
            ),
            // The live holds alone (migrations 0015, 0023), not the credential's whole history.
            (super::LIVE_HOLDS, 0, "", "payments_live_holds"),
            (
                minute_count,
                2,
                "credential_created_seconds",
                "payments_credential",
            ),
            (super::LIFETIME_HELD, 0, "credential_holds", ""),
        ] {
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(
                format!("EXPLAIN QUERY PLAN {sql}"),
            ))
            .bind("cred_x");
            for _ in 0..parameters {
                query = query.bind(0);
            }
            let plan = query.fetch_all(ledger.pool()).await.unwrap();
            let details: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
            let reads = details
                .iter()
                .filter(|d| d.starts_with("SCAN") || d.starts_with("SEARCH"))
                .filter(|d| **d != "SCAN CONSTANT ROW");
            for detail in reads {
                assert!(
                    detail.starts_with("SEARCH"),
                    "{detail} in the plan of {sql}: {details:?}"
                );
                if detail.contains(" payments ") {
                    assert!(
                        detail.contains(&format!("USING COVERING INDEX {index} ")),
                        "{detail}"
                    );
                }
            }
            if !buckets.is_empty() {
                assert!(
                    details
                        .iter()
                        .any(|d| d.starts_with(&format!("SEARCH {buckets} USING"))
                            && d.contains("(credential_id=?")),
                    "{buckets} by key: {details:?}"
                );
            }
        }
        ledger.close().await;
    }

    /// Revoking a credential finds its live holds from their partial index, whatever its history.
    #[tokio::test]
    async fn a_credentials_live_holds_are_read_from_their_index() {
        let (_dir, ledger) = fresh_ledger().await;
        let details = plan_of_sql(&ledger, super::LIVE_HOLDS_OF_CREDENTIAL).await;
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH payments USING INDEX payments_live_holds")),
            "{details:?}"
        );
        ledger.close().await;
    }

    /// Inserting a payment and changing its status (the writes of every accepted intent and of
    /// each settlement step) run their triggers, and the policy reads its edge minute and second
    /// and its live holds, without building a temporary b-tree: SQLite builds one for each `IN`
    /// over more than two constants, at every run of the program that holds it, and a trigger
    /// is its own program, run even when its condition is false (migration 0016).
    #[tokio::test]
    async fn payment_writes_build_no_temporary_btree() {
        let (_dir, ledger) = fresh_ledger().await;
        let minute_count: &str = super::MINUTE_COUNT;
        for (sql, parameters) in [
            (super::DAY_COMMITTED, 4),
            (minute_count, 3),
            (super::LIVE_HOLDS, 1),
        ] {
            let mut query =
                sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
            for _ in 0..parameters {
                query = query.bind(0);
            }
            let program = query.fetch_all(ledger.pool()).await.unwrap();
            assert!(
                !program.iter().any(|(_, op)| op == "OpenEphemeral"),
                "{sql} builds a temporary b-tree"
            );
        }
        for (sql, parameters) in [(super::INSERT, 29), (super::SET_STATUS.as_str(), 4)] {
            let mut query =
                sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
            for _ in 0..parameters {
                query = query.bind(0);
            }
            // The bytecode of the statement, then of each trigger program it runs, each
            // starting at an `Init`.
            let program = query.fetch_all(ledger.pool()).await.unwrap();
            let opcodes: Vec<&str> = program.iter().map(|(_, op)| op.as_str()).collect();
            let triggers: Vec<&[&str]> = opcodes.split(|op| *op == "Init").skip(2).collect();
            assert!(triggers.len() >= 2, "{sql} runs its triggers: {opcodes:?}");
            for trigger in triggers {
                assert!(
                    !trigger.contains(&"OpenEphemeral"),
                    "a trigger of {sql} builds a temporary b-tree: {trigger:?}"
                );
            }
        }
        ledger.close().await;
    }

    /// A status change that keeps what the payment holds (each step of settlement) writes one
    /// index entry keyed by status, `payments_status`: the policy's covering indexes carry the
    /// `budget` column instead (migration 0021). Read from the statements' bytecode (the status
    /// change alone, and with the chain fields as settlement writes it): the indexes each opens
    /// to write, before its first trigger program.
    #[tokio::test]
    async fn a_settlement_step_rewrites_only_the_status_index() {
        let (_dir, ledger) = fresh_ledger().await;
        // The program only: SQLite is typed by value, so every parameter may be text here.
        let explain = |sql: &str, parameters: &[&str]| {
            let mut query = sqlx::query_as::<_, (i64, String, i64, i64)>(sqlx::AssertSqlSafe(
                format!("EXPLAIN {sql}"),
            ));
            for parameter in parameters {
                query = query.bind(parameter.to_string());
            }
            query.fetch_all(ledger.pool())
        };
        let alone = explain(&super::SET_STATUS, &["submitted", "0", "p", "queued"])
            .await
            .unwrap();
        let with_chain = explain(
            &super::SET_STATUS_AND_CHAIN,
            &[
                "submitted",
                "0",
                "0xab",
                "7",
                "1",
                "0xcd",
                "0",
                "p",
                "queued",
            ],
        )
        .await
        .unwrap();
        let roots: std::collections::HashMap<i64, String> = sqlx::query_as(
            "SELECT rootpage, name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'payments'",
        )
        .fetch_all(ledger.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
        for program in [alone, with_chain] {
            let statement = program
                .iter()
                .skip(1)
                .take_while(|(_, opcode, _, _)| opcode != "Init");
            let written: Vec<&str> = statement
                .filter(|(_, opcode, _, _)| opcode == "OpenWrite")
                .filter_map(|(_, _, _, root)| roots.get(root).map(String::as_str))
                .collect();
            assert!(written.contains(&"payments_status"), "{written:?}");
            for index in ["payments_credential", "payments_credential_committed"] {
                assert!(!written.contains(&index), "{index} in {written:?}");
            }
        }
        ledger.close().await;
    }

    /// The ledger's mapping of status to budget (migration 0021, which its triggers read) is
    /// the domain's.
    #[tokio::test]
    async fn the_status_budgets_table_is_the_domains() {
        let (_dir, ledger) = fresh_ledger().await;
        let rows: Vec<(crate::domain::PaymentStatus, i64)> =
            sqlx::query_as("SELECT status, budget FROM payment_status_budgets")
                .fetch_all(ledger.pool())
                .await
                .unwrap();
        assert_eq!(rows.len(), crate::domain::PaymentStatus::ALL.len());
        for (status, budget) in rows {
            assert_eq!(budget, status.budget(), "{status}");
        }
        ledger.close().await;
    }

    /// Settlement's per-pass reads of a window come from partial indexes (migration 0014):
    /// finality's blocks by block number, a lane's in-pool transactions by wallet and nonce.
    /// They cost the window, not the history stored.
    #[tokio::test]
    async fn settlement_windows_are_read_from_their_indexes() {
        let (_dir, ledger) = fresh_ledger().await;
        let details = plan_of_sql(&ledger, super::RECENTLY_CONFIRMED_BLOCKS).await;
        assert!(
            details.iter().any(|d| d.starts_with(
                "SEARCH transactions USING COVERING INDEX transactions_finality_window (block_number>?)"
            )),
            "{details:?}"
        );
        // A lane's room counts its wallet's in-pool transactions from the index of those alone.
        let details = plan_of_sql(&ledger, super::IN_POOL_COUNT).await;
        assert_eq!(
            details,
            ["SEARCH transactions USING INDEX transactions_in_pool (wallet_id=? AND nonce>?)"]
        );
        ledger.close().await;
    }

    /// The bucketed windows (migration 0013) give exactly what summing the payments gives, at
    /// any moment, after any sequence of inserts and of the changes that move a payment into or
    /// out of a window: status, amount, commitment time, credential. Times cluster on the
    /// windows' edges and on bucket boundaries, where an off-by-one would show.
    #[tokio::test]
    async fn the_rolling_windows_equal_the_sum_of_the_payments() {
        use rand::SeedableRng;
        let (_dir, ledger) = fresh_ledger().await;
        let mut db = ledger.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *db)
            .await
            .unwrap();
        let now: super::Millis = 1_800_000_000_000 + 1_234;
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut ids = Vec::new();
        for round in 0..12 {
            for n in 0..25 {
                let id = format!("p{round}_{n}");
                insert_random_payment(&mut db, &mut rng, &id, now).await;
                ids.push(id);
            }
            for _ in 0..40 {
                change_random_payment(&mut db, &mut rng, &ids, now).await;
            }
            for credential in ["cred_a", "cred_b"] {
                for at in [
                    now,
                    now - 1,
                    now + 1,
                    now + 999,
                    now + 59_000,
                    now + super::HOUR_MS,
                ] {
                    let bucketed = ledger
                        .write_sync(|tx| {
                            super::spend_snapshot(tx, credential, at, None, super::Figures::ALL)
                        })
                        .await
                        .unwrap();
                    let summed = spend_by_scan(&mut db, credential, at).await;
                    assert_eq!(bucketed, summed, "{credential} at {at}, round {round}");
                }
            }
        }
        drop(db);
        ledger.close().await;
    }

    /// A status drawn from every status a payment can have.
    fn any_status(rng: &mut rand::rngs::StdRng) -> &'static str {
        use rand::Rng;
        let all = crate::domain::PaymentStatus::ALL;
        all[rng.random_range(0..all.len())].as_str()
    }

    /// A time near the edges of the day and the minute before `now` (and a little after it), on
    /// bucket boundaries, or anywhere in the day.
    fn near_window_edges(rng: &mut rand::rngs::StdRng, now: super::Millis) -> super::Millis {
        use rand::Rng;
        let edge = match rng.random_range(0..5) {
            0 => now - super::DAY_MS,
            1 => now - super::MINUTE_MS,
            2 => (now - super::DAY_MS).div_euclid(super::HOUR_MS) * super::HOUR_MS + super::HOUR_MS,
            3 => (now - super::MINUTE_MS).div_euclid(1000) * 1000 + 1000,
            _ => return now - rng.random_range(0..super::DAY_MS + super::HOUR_MS),
        };
        edge + rng.random_range(-2_500..2_500)
    }

    /// A payment of either test credential, in any status, created and (three times in four)
    /// committed near the windows' edges.
    async fn insert_random_payment(
        db: &mut sqlx::SqliteConnection,
        rng: &mut rand::rngs::StdRng,
        id: &str,
        now: super::Millis,
    ) {
        use rand::Rng;
        let status = any_status(rng);
        let credential = ["cred_a", "cred_b"][rng.random_range(0..2)];
        let created = near_window_edges(rng, now);
        let committed = match rng.random_range(0..4) {
            0 => "NULL".to_string(),
            _ => near_window_edges(rng, now).to_string(),
        };
        let amount = rng.random_range(1..1_000_000);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO payments (id, kind, credential_id, from_wallet_id, to_address,
                amount, currency, capture, status, idempotency_scope, idempotency_key,
                request_hash, created_at, updated_at, committed_at)
             VALUES ('{id}', 'payment', '{credential}', 'w', '0x0', {amount}, 'USDC',
                'automatic', '{status}', 's', '{id}', 'h', {created}, {created}, {committed})"
        )))
        .execute(&mut *db)
        .await
        .unwrap();
    }

    /// One change to one of `ids`: its status, amount, commit time or credential.
    async fn change_random_payment(
        db: &mut sqlx::SqliteConnection,
        rng: &mut rand::rngs::StdRng,
        ids: &[String],
        now: super::Millis,
    ) {
        use rand::Rng;
        let id = &ids[rng.random_range(0..ids.len())];
        let change = match rng.random_range(0..5) {
            0 | 1 => format!("status = '{}'", any_status(rng)),
            2 => format!("amount = {}", rng.random_range(1..1_000_000)),
            3 => format!("committed_at = {}", near_window_edges(rng, now)),
            _ => format!(
                "credential_id = '{}'",
                ["cred_a", "cred_b"][rng.random_range(0..2)]
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE payments SET {change} WHERE id = '{id}'"
        )))
        .execute(&mut *db)
        .await
        .unwrap();
    }

    /// The spend snapshot's three figures at `at`, summed by scanning every payment (what the
    /// buckets must equal).
    async fn spend_by_scan(
        db: &mut sqlx::SqliteConnection,
        credential: &str,
        at: super::Millis,
    ) -> (i64, i64, i64) {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT
                (SELECT COALESCE(SUM(amount), 0) FROM payments
                  WHERE credential_id = ?1 AND committed_at > ?2
                    AND status IN ('queued', 'submitted', 'included', 'confirmed'))
              + (SELECT COALESCE(SUM(amount), 0) FROM payments
                  WHERE credential_id = ?1 AND status IN ('pending_approval', 'authorized')),
                (SELECT COALESCE(SUM(amount), 0) FROM payments
                  WHERE credential_id = ?1 AND status IN {holding}),
                (SELECT COUNT(*) FROM payments
                  WHERE credential_id = ?1 AND created_at > ?3 AND status IN {holding})",
            holding = crate::domain::PaymentStatus::HOLDING_SQL
        )))
        .bind(credential)
        .bind(at - super::DAY_MS)
        .bind(at - super::MINUTE_MS)
        .fetch_one(&mut *db)
        .await
        .unwrap()
    }

    /// A roll-up that crosses several edges in one write (a payment found submitted and already
    /// confirmed) changes the row once, and still tells every edge: one `status_changed` webhook
    /// per edge, in order, each with its own status and the one before. A path that leaves the
    /// state machine anywhere changes nothing.
    #[tokio::test]
    async fn a_status_path_is_one_change_with_a_webhook_per_edge() {
        use crate::domain::PaymentStatus::{Confirmed, Included, Queued, Submitted};
        let (_dir, ledger) = fresh_ledger().await;
        let mut db = ledger.pool().acquire().await.unwrap();
        for sql in [
            "PRAGMA foreign_keys = OFF",
            "INSERT INTO webhook_endpoints (id, url, secret, events, status, created_at)
             VALUES ('whe_1', 'http://127.0.0.1:9/', 's', '[\"payment.status_changed\"]', 'active', 0)",
            "INSERT INTO payments (id, kind, credential_id, from_wallet_id, to_address, amount,
                currency, capture, status, idempotency_scope, idempotency_key, request_hash,
                created_at, updated_at, committed_at)
             VALUES ('p1', 'payment', 'cred_a', 'w', '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
                100, 'USDC', 'automatic', 'submitted', 's', 'k', 'h', 0, 0, 0)",
        ] {
            run(&mut db, sql).await;
        }
        /// The payment's status and time, and the (previous, new) status of each webhook.
        async fn state(db: &mut sqlx::SqliteConnection) -> (String, i64, Vec<(String, String)>) {
            let (status, at) = sqlx::query_as("SELECT status, updated_at FROM payments")
                .fetch_one(&mut *db)
                .await
                .unwrap();
            let edges = sqlx::query_as(
                "SELECT json_extract(data, '$.previous_status'), json_extract(data, '$.status')
                   FROM webhook_deliveries ORDER BY rowid",
            )
            .fetch_all(&mut *db)
            .await
            .unwrap();
            (status, at, edges)
        }
        let walk = |path: &'static [crate::domain::PaymentStatus], now| {
            ledger.write_sync(move |tx| {
                tx.keep_unaudited("the test's status change");
                super::set_status_along(tx, "p1", Submitted, path, now)
            })
        };
        let refused = walk(&[Included, Queued], 5).await;
        assert!(matches!(refused, Err(super::LedgerError::Conflict(_))));
        assert_eq!(state(&mut db).await, ("submitted".into(), 0, vec![]));

        let moved = walk(&[Included, Confirmed], 7).await.unwrap();
        assert_eq!((moved.status, moved.updated_at), (Confirmed, 7));
        let edges = [("submitted", "included"), ("included", "confirmed")]
            .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(
            state(&mut db).await,
            ("confirmed".into(), 7, edges.to_vec())
        );
        // The hold follows the stored status alone, as if each edge had been a change of its own.
        let held: i64 = sqlx::query_scalar("SELECT held_total FROM credential_holds")
            .fetch_one(&mut *db)
            .await
            .unwrap();
        assert_eq!(held, 100);
        drop(db);
        ledger.close().await;
    }

    /// Reads of the plan of `query` (`EXPLAIN QUERY PLAN`): what each step reads, and how.
    async fn plan_of(
        ledger: &super::super::Ledger,
        mut query: sqlx::QueryBuilder<sqlx::Sqlite>,
    ) -> Vec<String> {
        let plan: Vec<(i64, i64, i64, String)> = query
            .build_query_as()
            .fetch_all(ledger.pool())
            .await
            .unwrap();
        plan.into_iter().map(|(_, _, _, detail)| detail).collect()
    }

    /// Runs one statement of a test's fixture.
    async fn run(db: &mut sqlx::SqliteConnection, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *db)
            .await
            .unwrap();
    }

    /// A list's plan reads a page and stops: it scans nothing but `ordered` (indexes in the
    /// list's own order, which the page's limit stops), and sorts nothing whole.
    fn assert_paged(plan: &[String], ordered: &[&str]) {
        assert!(
            plan.iter().all(
                |step| (!step.starts_with("SCAN") || ordered.contains(&step.as_str()))
                    && step != "USE TEMP B-TREE FOR ORDER BY"
            ),
            "{plan:?}"
        );
    }

    /// Every filter of the payments list reads a page from an index and stops: no step scans
    /// the table or an index out of the list's order, and none sorts the whole result (a sort
    /// of the rows that tie on `created_at` is allowed), whatever the history.
    #[tokio::test]
    async fn a_page_of_payments_is_read_from_an_index() {
        let (_dir, ledger) = fresh_ledger().await;
        let filter =
            |agent: bool, status: bool, from: bool, treasury_only: bool| super::PaymentFilter {
                agent_id: agent.then(|| "agt_x".to_string()),
                status: status.then(|| "confirmed".to_string()),
                from: from.then_some(1),
                to: from.then_some(2),
                treasury_only,
            };
        for (filter, cursor) in [
            (filter(false, false, false, false), None),
            (filter(false, false, false, false), Some("5:pay_x")),
            (filter(true, false, false, false), Some("5:pay_x")),
            (filter(false, true, true, false), None),
            (filter(true, true, false, false), None),
            (filter(false, false, true, false), None),
            (filter(false, false, false, true), Some("5:pay_x")),
        ] {
            let page = super::super::Page {
                limit: 50,
                cursor: cursor.map(str::to_string),
            };
            let query = super::list_query("EXPLAIN QUERY PLAN SELECT *", &filter, &page).unwrap();
            let plan = plan_of(&ledger, query).await;
            // A scan is of an index in the list's own order (the page stops it), never of the
            // table, and never followed by a sort of everything it read.
            let ordered = if filter.treasury_only {
                &["SCAN payments USING INDEX payments_treasury"][..]
            } else {
                &["SCAN payments USING INDEX payments_created"][..]
            };
            assert_paged(&plan, ordered);
        }
        ledger.close().await;
    }

    /// An agent's or a payment's page of audit events is read from its index by sequence and
    /// stops at the page's last row; with no filter, from the log itself newest first.
    #[tokio::test]
    async fn a_page_of_audit_events_is_read_from_an_index() {
        let (_dir, ledger) = fresh_ledger().await;
        let filter = |agent: bool, payment: bool| super::super::audit::AuditFilter {
            agent_id: agent.then(|| "agt_x".to_string()),
            payment_id: payment.then(|| "pay_x".to_string()),
            before_seq: Some(1_000),
            ..Default::default()
        };
        for (filter, read) in [
            (
                filter(true, false),
                "SEARCH audit_events USING INDEX audit_agent (agent_id=? AND seq<?)",
            ),
            (
                filter(false, true),
                "SEARCH audit_events USING INDEX audit_payment (payment_id=? AND seq<?)",
            ),
            (
                filter(false, false),
                "SEARCH audit_events USING INTEGER PRIMARY KEY (rowid<?)",
            ),
        ] {
            let query = super::super::audit::list_query("EXPLAIN QUERY PLAN SELECT *", &filter, 50);
            let plan = plan_of(&ledger, query).await;
            assert_eq!(plan, [read], "{filter:?}");
        }
        ledger.close().await;
    }

    /// The other lists an operator pages through: scopes (by credential, by status, or all) and
    /// an endpoint's webhook deliveries (the failed ones from their own index). No step scans a
    /// table and none sorts everything it read.
    #[tokio::test]
    async fn pages_of_scopes_and_deliveries_are_read_from_an_index() {
        let (_dir, ledger) = fresh_ledger().await;
        let page = super::super::Page {
            limit: 50,
            cursor: Some("5:scope_x".into()),
        };
        let mut plans = Vec::new();
        for (credential, status) in [
            (None, None),
            (Some("cred_x"), None),
            (Some("cred_x"), Some("open")),
            (None, Some("closed")),
        ] {
            let query = super::super::scopes::list_query(
                "EXPLAIN QUERY PLAN SELECT *",
                credential,
                status,
                &page,
            )
            .unwrap();
            plans.push(plan_of(&ledger, query).await);
        }
        for status in [None, Some("failed"), Some("pending"), Some("delivered")] {
            let query = super::super::webhooks::deliveries_query(
                "EXPLAIN QUERY PLAN SELECT *",
                "whe_x",
                status,
                50,
            );
            let plan = plan_of(&ledger, query).await;
            if status == Some("failed") {
                assert!(
                    plan.iter()
                        .any(|step| step.contains("webhook_deliveries_failed")),
                    "{plan:?}"
                );
            }
            plans.push(plan);
        }
        for plan in plans {
            assert_paged(&plan, &["SCAN scopes USING INDEX scopes_created"]);
        }
        ledger.close().await;
    }

    /// What a freeze cancels is read from what is open, and an agent's gas top-ups from their
    /// own partial index: neither reads the agent's history.
    #[tokio::test]
    async fn agent_reads_do_not_walk_the_agents_history() {
        let (_dir, ledger) = fresh_ledger().await;
        for (sql, parameters, read) in [
            (
                super::UNBROADCAST_OF_AGENT,
                1,
                "SEARCH payments USING INDEX payments_status (status=?)",
            ),
            (
                super::super::agents::GAS_FLOAT_FUNDINGS,
                2,
                "SEARCH payments USING INDEX payments_gas_float (agent_id=?)",
            ),
        ] {
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(
                format!("EXPLAIN QUERY PLAN {sql}"),
            ));
            for _ in 0..parameters {
                query = query.bind("agt_x");
            }
            let plan: Vec<String> = query
                .fetch_all(ledger.pool())
                .await
                .unwrap()
                .into_iter()
                .map(|(_, _, _, detail)| detail)
                .collect();
            assert!(plan.iter().any(|step| step == read), "{plan:?}");
            assert!(
                plan.iter().all(|step| !step.contains("payments_agent")),
                "{plan:?}"
            );
        }
        ledger.close().await;
    }

    /// Wallet `w` and its queued payment `p1`.
    async fn wallet_and_payment(db: &mut sqlx::SqliteConnection) {
        for sql in [
            "INSERT INTO wallets (id, kind, address, sealed_key, seal_nonce, created_at)
             VALUES ('w', 'agent', '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed', x'00', x'00', 0)",
            "INSERT INTO payments (id, kind, from_wallet_id, to_address, amount, currency, capture,
                status, idempotency_scope, idempotency_key, request_hash, created_at, updated_at)
             VALUES ('p1', 'payment', 'w', '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed', 100,
                'USDC', 'automatic', 'queued', 's', 'k', 'h', 0, 0)",
        ] {
            run(db, sql).await;
        }
    }

    /// `insert_transaction` of p1's transfer `0xab` at `nonce` of wallet `w`, in a write of its own.
    async fn insert_transaction_at(
        ledger: &super::super::Ledger,
        nonce: i64,
    ) -> Result<super::TransactionRow, super::LedgerError> {
        ledger
            .write_sync(move |tx| {
                tx.keep_unaudited("the test's transaction");
                super::insert_transaction(
                    tx,
                    super::NewTransaction {
                        payment_id: "p1",
                        asset: crate::domain::Asset::Usdc,
                        purpose: super::TRANSFER,
                        wallet_id: "w",
                        nonce,
                        tx_hash: "0xab",
                        raw: &[1, 2, 3],
                    },
                    42,
                )
            })
            .await
    }

    /// The row `insert_transaction` returns, which settlement broadcasts and records as sent
    /// without reading it back, is the row stored.
    #[tokio::test]
    async fn an_inserted_transaction_is_returned_as_stored() {
        let (_dir, ledger) = fresh_ledger().await;
        let mut db = ledger.pool().acquire().await.unwrap();
        wallet_and_payment(&mut db).await;
        let returned = insert_transaction_at(&ledger, 7).await.unwrap();
        let stored: super::TransactionRow = sqlx::query_as("SELECT * FROM transactions")
            .fetch_one(&mut *db)
            .await
            .unwrap();
        assert_eq!(format!("{returned:?}"), format!("{stored:?}"));
        drop(db);
        ledger.close().await;
    }

    /// A transaction's hash is unique within its nonce slot (migration 0022), and no index is
    /// keyed by the hash alone: hashes are random, so such an index took every new transaction
    /// to a random page of its own, in every group commit.
    #[tokio::test]
    async fn a_hash_is_unique_in_its_slot_and_no_index_is_keyed_by_the_hash_alone() {
        let (_dir, ledger) = fresh_ledger().await;
        let mut db = ledger.pool().acquire().await.unwrap();
        wallet_and_payment(&mut db).await;
        insert_transaction_at(&ledger, 7).await.unwrap();
        // Replaced, so that only the hash (not the slot's one live transaction) can refuse it.
        run(&mut db, "UPDATE transactions SET status = 'replaced'").await;
        let again = insert_transaction_at(&ledger, 7).await;
        assert!(
            matches!(&again, Err(super::LedgerError::Sqlite(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
                    && e.to_string().contains("transactions.tx_hash")),
            "{again:?}"
        );
        let indexes: Vec<(i64, String, i64, String, i64)> =
            sqlx::query_as("PRAGMA index_list('transactions')")
                .fetch_all(&mut *db)
                .await
                .unwrap();
        assert!(!indexes.is_empty());
        for (_, index, ..) in indexes {
            let first: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_index_info('{index}') WHERE seqno = 0"
            )))
            .fetch_one(&mut *db)
            .await
            .unwrap();
            assert_ne!(first, "tx_hash", "{index} is keyed by the hash alone");
        }
        drop(db);
        ledger.close().await;
    }

    /// The payments `the_lifetime_hold_follows_every_change_that_moves_it` starts from: p1 to p3
    /// move in its steps; the rest are one of each other status, whose `budget` the insert
    /// trigger sets (migration 0021).
    const HOLD_PAYMENTS: &[(&str, &str, i64)] = &[
        ("p1", "queued", 100),
        ("p2", "pending_approval", 50),
        ("p3", "rejected", 70),
        ("p4", "authorized", 5),
        ("p5", "submitted", 6),
        ("p6", "included", 7),
        ("p7", "confirmed", 8),
        ("p8", "failed", 9),
        ("p9", "cancelled", 10),
        ("p10", "expired", 11),
    ];

    /// Its steps, each a write that may move a hold, in order.
    const HOLD_STEPS: &[(&str, &str)] = &[
        (
            "settling",
            "UPDATE payments SET status = 'submitted' WHERE id = 'p1'",
        ),
        (
            "inclusion",
            "UPDATE payments SET status = 'included' WHERE id = 'p1'",
        ),
        (
            "confirmation",
            "UPDATE payments SET status = 'confirmed' WHERE id = 'p1'",
        ),
        (
            "an approval",
            "UPDATE payments SET status = 'authorized' WHERE id = 'p2'",
        ),
        (
            "a partial capture",
            "UPDATE payments SET amount = 30 WHERE id = 'p2'",
        ),
        (
            "a capture",
            "UPDATE payments SET status = 'queued' WHERE id = 'p2'",
        ),
        (
            "a failure",
            "UPDATE payments SET status = 'failed' WHERE id = 'p2'",
        ),
        (
            "a move",
            "UPDATE payments SET credential_id = 'cred_b' WHERE id = 'p1'",
        ),
        (
            "a move back",
            "UPDATE payments SET credential_id = 'cred_a' WHERE id = 'p1'",
        ),
        (
            "a stray write of the budget",
            "UPDATE payments SET budget = 0 WHERE id = 'p1'",
        ),
        (
            "a release",
            "UPDATE payments SET status = 'failed', amount = 90 WHERE id = 'p1'",
        ),
    ];

    /// `credential_holds` equals the sum of what cred_a's payments hold, and every payment's
    /// `budget` matches its status, whatever wrote the row.
    async fn assert_holds_kept(db: &mut sqlx::SqliteConnection, step: &str) {
        let (kept, summed): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT COALESCE(SUM(held_total), 0) FROM credential_holds
                      WHERE credential_id = 'cred_a'),
                    (SELECT COALESCE(SUM(amount), 0) FROM payments
                      WHERE credential_id = 'cred_a' AND status IN {})",
            crate::domain::PaymentStatus::HOLDING_SQL
        )))
        .fetch_one(&mut *db)
        .await
        .unwrap();
        assert_eq!(kept, summed, "after {step}");
        let rows: Vec<(String, crate::domain::PaymentStatus, i64)> =
            sqlx::query_as("SELECT id, status, budget FROM payments")
                .fetch_all(&mut *db)
                .await
                .unwrap();
        for (id, status, budget) in rows {
            assert_eq!(budget, status.budget(), "{id} {status} after {step}");
        }
    }

    /// The lifetime-hold trigger runs only when a payment starts or stops holding, or its
    /// amount or credential changes (migration 0012): whatever the path, `credential_holds`
    /// equals the sum of what the credential's payments hold.
    #[tokio::test]
    async fn the_lifetime_hold_follows_every_change_that_moves_it() {
        let (_dir, ledger) = fresh_ledger().await;
        let mut db = ledger.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *db)
            .await
            .unwrap();
        for (id, status, amount) in HOLD_PAYMENTS {
            run(
                &mut db,
                &format!(
                    "INSERT INTO payments (id, kind, credential_id, from_wallet_id, to_address,
                        amount, currency, capture, status, idempotency_scope, idempotency_key,
                        request_hash, created_at, updated_at)
                     VALUES ('{id}', 'payment', 'cred_a', 'w', '0x0', {amount}, 'USDC',
                        'automatic', '{status}', 's', '{id}', 'h', 0, 0)"
                ),
            )
            .await;
        }
        assert_holds_kept(&mut db, "the inserts").await;
        for (step, sql) in HOLD_STEPS {
            run(&mut db, sql).await;
            assert_holds_kept(&mut db, step).await;
        }
        drop(db);
        ledger.close().await;
    }
}
