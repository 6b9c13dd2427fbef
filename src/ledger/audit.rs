//! The append-only, hash-chained audit log. Each event's hash covers the previous event's hash
//! and every field of the event, so editing, deleting or reordering any event breaks the chain
//! from that point on. Events are appended inside the caller's transaction, with the state change
//! they describe.

use super::{LedgerError, Millis, SyncTx, Tx};
use crate::domain::{AgentId, AuditKey, AuditKind, CredentialId, PaymentId};
use futures_util::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: AuditKind,
    pub agent_id: Option<AgentId>,
    pub credential_id: Option<CredentialId>,
    pub payment_id: Option<PaymentId>,
    pub actor: String,
    pub detail: serde_json::Value,
    pub tx_hash: Option<String>,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
}

impl NewEvent {
    /// An event of `kind` with every other field empty, to fill in with `..NewEvent::of(kind)`.
    pub fn of(kind: AuditKind) -> NewEvent {
        NewEvent {
            kind,
            agent_id: None,
            credential_id: None,
            payment_id: None,
            actor: String::new(),
            detail: serde_json::Value::Null,
            tx_hash: None,
            block_number: None,
            block_hash: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: Millis,
    pub kind: String,
    pub agent_id: Option<String>,
    pub credential_id: Option<String>,
    pub payment_id: Option<String>,
    pub actor: String,
    pub detail: String,
    pub tx_hash: Option<String>,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an event: SHA-256 over the previous hash and each field, every field preceded by
/// its length so that no two different events can serialize alike.
#[allow(clippy::too_many_arguments)]
fn event_hash(
    prev_hash: &str,
    seq: i64,
    at: Millis,
    kind: &str,
    agent_id: Option<&str>,
    credential_id: Option<&str>,
    payment_id: Option<&str>,
    actor: &str,
    detail: &str,
    tx_hash: Option<&str>,
    block_number: Option<i64>,
    block_hash: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        None => hasher.update(b"-"),
        Some(text) => {
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
    };
    field(Some(prev_hash));
    field(Some(&seq.to_string()));
    field(Some(&at.to_string()));
    field(Some(kind));
    field(agent_id);
    field(credential_id);
    field(payment_id);
    field(Some(actor));
    field(Some(detail));
    field(tx_hash);
    field(block_number.map(|n| n.to_string()).as_deref());
    field(block_hash);
    hex::encode(hasher.finalize())
}

impl AuditEvent {
    /// The hash this event should have: over its `prev_hash` and every field.
    pub fn expected_hash(&self) -> String {
        event_hash(
            &self.prev_hash,
            self.seq,
            self.at,
            &self.kind,
            self.agent_id.as_deref(),
            self.credential_id.as_deref(),
            self.payment_id.as_deref(),
            &self.actor,
            &self.detail,
            self.tx_hash.as_deref(),
            self.block_number,
            self.block_hash.as_deref(),
        )
    }
}

const LAST: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_events (seq, at, kind, agent_id, credential_id, payment_id,
    actor, detail, tx_hash, block_number, block_hash, prev_hash, hash)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// An event chained after `last`: its sequence number, its hash, and the alarm it raises.
struct Sealed {
    seq: i64,
    at: Millis,
    event: NewEvent,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl Sealed {
    fn new(last: Option<(i64, String)>, at: Millis, event: NewEvent) -> Sealed {
        let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_string()));
        let seq = prev_seq + 1;
        let detail = event.detail.to_string();
        let hash = event_hash(
            &prev_hash,
            seq,
            at,
            event.kind.as_str(),
            event.agent_id.as_deref(),
            event.credential_id.as_deref(),
            event.payment_id.as_deref(),
            &event.actor,
            &detail,
            event.tx_hash.as_deref(),
            event.block_number,
            event.block_hash.as_deref(),
        );
        Sealed {
            seq,
            at,
            event,
            detail,
            prev_hash,
            hash,
        }
    }

    /// The `audit.alarm` webhook's data, for an alarm.
    fn alarm(&self) -> Option<serde_json::Value> {
        let event = &self.event;
        event.kind.is_alarm().then(|| {
            serde_json::json!({
                "kind": event.kind, "agent_id": event.agent_id, "payment_id": event.payment_id,
                "detail": event.detail, "tx_hash": event.tx_hash, "block_number": event.block_number,
                "block_hash": event.block_hash, "seq": self.seq,
            })
        })
    }
}

/// Appends `event` in the caller's transaction and returns its sequence number.
pub async fn append(tx: &mut Tx, at: Millis, event: NewEvent) -> Result<i64, LedgerError> {
    tx.mark_audited();
    let last: Option<(i64, String)> = match tx.audit_head() {
        Some(head) => Some(head),
        None => sqlx::query_as(LAST).fetch_optional(&mut **tx).await?,
    };
    // If the insert below fails, the head is unknown until read again.
    tx.set_audit_head(None);
    let sealed = Sealed::new(last, at, event);
    let event = &sealed.event;
    sqlx::query(INSERT)
        .bind(sealed.seq)
        .bind(at)
        .bind(event.kind.as_str())
        .bind(&event.agent_id)
        .bind(&event.credential_id)
        .bind(&event.payment_id)
        .bind(&event.actor)
        .bind(&sealed.detail)
        .bind(&event.tx_hash)
        .bind(event.block_number)
        .bind(&event.block_hash)
        .bind(&sealed.prev_hash)
        .bind(&sealed.hash)
        .execute(&mut **tx)
        .await?;
    tx.set_audit_head(Some((sealed.seq, sealed.hash.clone())));
    if let Some(alarm) = sealed.alarm() {
        super::webhooks::enqueue(tx, super::webhooks::AUDIT_ALARM, &alarm, at).await?;
    }
    Ok(sealed.seq)
}

/// `append` in a synchronous transaction: the same event, chained the same way.
pub fn append_in(tx: &mut SyncTx<'_>, at: Millis, event: NewEvent) -> Result<i64, LedgerError> {
    tx.mark_audited();
    let last = match tx.audit_head.take() {
        Some(head) => Some(head),
        None => {
            use rusqlite::OptionalExtension;
            tx.prepare(LAST)?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
        }
    };
    let sealed = Sealed::new(last, at, event);
    let event = &sealed.event;
    tx.prepare(INSERT)?.execute(rusqlite::params![
        sealed.seq,
        sealed.at,
        event.kind.as_str(),
        event.agent_id,
        event.credential_id,
        event.payment_id,
        event.actor,
        sealed.detail,
        event.tx_hash,
        event.block_number,
        event.block_hash,
        sealed.prev_hash,
        sealed.hash,
    ])?;
    *tx.audit_head = Some((sealed.seq, sealed.hash.clone()));
    if let Some(alarm) = sealed.alarm() {
        super::webhooks::enqueue_in(tx, super::webhooks::AUDIT_ALARM, || alarm, at)?;
    }
    Ok(sealed.seq)
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub agent_id: Option<String>,
    pub payment_id: Option<String>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// Only events with a smaller sequence number (the page cursor).
    pub before_seq: Option<i64>,
    /// Only a spending scope's events: its own and its payments'.
    pub scope_id: Option<String>,
}

/// The SQL condition of "belongs to scope `?N`" (its own events name it in their detail).
const IN_SCOPE: &str = "(json_extract(detail, '$.scope_id') = {p}
    OR payment_id IN (SELECT id FROM payments WHERE scope_id = {p}))";

/// Events matching `filter`, newest first. Only the filters given are in the SQL, so that an
/// agent's or a payment's events are read from its index (`audit_agent`, `audit_payment`, by
/// sequence) and the read stops at the page's last row: written as `(?1 IS NULL OR agent_id =
/// ?1)`, no filter could use an index, and an old payment's events were found by reading the
/// whole log backwards (222 ms at 240,000 events).
pub async fn list(
    pool: &SqlitePool,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditEvent>, LedgerError> {
    Ok(list_query("SELECT *", filter, limit)
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

/// The list's query, after `select` (the test reads its plan).
pub(super) fn list_query(
    select: &str,
    filter: &AuditFilter,
    limit: i64,
) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut query = sqlx::QueryBuilder::new(format!("{select} FROM audit_events WHERE 1"));
    if let Some(agent_id) = &filter.agent_id {
        query.push(" AND agent_id = ").push_bind(agent_id.clone());
    }
    if let Some(payment_id) = &filter.payment_id {
        query
            .push(" AND payment_id = ")
            .push_bind(payment_id.clone());
    }
    if let Some(from) = filter.from {
        query.push(" AND at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND at < ").push_bind(to);
    }
    if let Some(before) = filter.before_seq {
        query.push(" AND seq < ").push_bind(before);
    }
    if let Some(scope_id) = &filter.scope_id {
        // IN_SCOPE names the scope twice: each place is a bound parameter.
        let mut parts = IN_SCOPE.split("{p}");
        query.push(" AND ").push(parts.next().unwrap_or_default());
        for part in parts {
            query.push_bind(scope_id.clone()).push(part);
        }
    }
    query.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
    query
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events: i64,
    pub head: String,
    /// Signed checkpoints checked (absent when verified without the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<i64>,
    /// The newest signed checkpoint's sequence number: events after it are covered by the hash
    /// chain alone until the next checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Recomputes the whole chain in sequence order, streaming (constant memory), and names the first
/// event that does not fit: an edited event (its hash no longer matches), a deleted one (a gap in
/// the sequence, or a missing tail, which SQLite's AUTOINCREMENT counter still remembers) or a
/// reordered one (its `prev_hash` is not its predecessor's hash).
pub async fn verify(pool: &SqlitePool) -> Result<VerifyReport, LedgerError> {
    let mut rows =
        sqlx::query_as::<_, AuditEvent>("SELECT * FROM audit_events ORDER BY seq").fetch(pool);
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut expected_seq = 1;
    let mut events = 0;
    let bad = |seq: i64, events: i64, head: &str, reason: &str| VerifyReport {
        ok: false,
        events,
        head: head.to_string(),
        first_bad_seq: Some(seq),
        reason: Some(reason.to_string()),
        checkpoints: None,
        last_checkpoint_seq: None,
    };
    while let Some(event) = rows.try_next().await? {
        if event.seq != expected_seq {
            return Ok(bad(
                expected_seq,
                events,
                &prev_hash,
                "event missing from the sequence",
            ));
        }
        if event.prev_hash != prev_hash {
            return Ok(bad(
                event.seq,
                events,
                &prev_hash,
                "previous hash does not match the chain",
            ));
        }
        if event.expected_hash() != event.hash {
            return Ok(bad(
                event.seq,
                events,
                &prev_hash,
                "event content does not match its hash",
            ));
        }
        prev_hash = event.hash;
        expected_seq += 1;
        events += 1;
    }
    drop(rows);
    let highest: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'")
            .fetch_optional(pool)
            .await?;
    if highest.is_some_and(|h| h >= expected_seq) {
        return Ok(bad(
            expected_seq,
            events,
            &prev_hash,
            "events missing from the end of the log",
        ));
    }
    Ok(VerifyReport {
        ok: true,
        events,
        head: prev_hash,
        first_bad_seq: None,
        reason: None,
        checkpoints: None,
        last_checkpoint_seq: None,
    })
}

/// A signed checkpoint of the chain's head.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub prev_seq: i64,
    pub at: Millis,
    pub signature: String,
}

/// Signs the chain's current head as a checkpoint, unless the newest checkpoint is already it,
/// or fewer than `min_new_events` events came since. Returns the new checkpoint's seq.
/// Whether at least `min_new_events` events (and at least one) came since the last checkpoint,
/// read from committed state; `checkpoint` decides again inside its write.
pub async fn checkpoint_due(pool: &SqlitePool, min_new_events: i64) -> Result<bool, LedgerError> {
    let (seq, prev_seq): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE((SELECT MAX(seq) FROM audit_events), 0),
                COALESCE((SELECT MAX(seq) FROM audit_checkpoints), 0)",
    )
    .fetch_one(pool)
    .await?;
    Ok(seq > prev_seq && seq - prev_seq >= min_new_events)
}

pub async fn checkpoint(
    tx: &mut Tx,
    key: &AuditKey,
    min_new_events: i64,
    at: Millis,
) -> Result<Option<i64>, LedgerError> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let Some((seq, head_hash)) = head else {
        return Ok(None);
    };
    let prev_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
        .fetch_one(&mut **tx)
        .await?;
    if seq == prev_seq || seq - prev_seq < min_new_events {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head_hash, prev_seq, at, signature) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(&head_hash)
    .bind(prev_seq)
    .bind(at)
    .bind(key.sign(seq, &head_hash, prev_seq))
    .execute(&mut **tx)
    .await?;
    Ok(Some(seq))
}

/// `verify`, and then every signed checkpoint: its signature under `key`, its link to the
/// previous checkpoint, and that the event at its seq still has the hash it signed. A chain
/// rewritten with database access alone fails here even though its hashes are consistent.
pub async fn verify_with_checkpoints(
    pool: &SqlitePool,
    key: &AuditKey,
) -> Result<VerifyReport, LedgerError> {
    let mut report = verify(pool).await?;
    let checkpoints: Vec<Checkpoint> =
        sqlx::query_as("SELECT * FROM audit_checkpoints ORDER BY seq")
            .fetch_all(pool)
            .await?;
    let mut prev = 0;
    let mut checked = 0;
    for checkpoint in &checkpoints {
        let hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = ?")
                .bind(checkpoint.seq)
                .fetch_optional(pool)
                .await?;
        let problem = if checkpoint.prev_seq != prev {
            Some("a signed checkpoint is missing before this one")
        } else if !key.verify(
            checkpoint.seq,
            &checkpoint.head_hash,
            checkpoint.prev_seq,
            &checkpoint.signature,
        ) {
            Some("a checkpoint's signature does not verify under the master key")
        } else if hash.as_deref() != Some(checkpoint.head_hash.as_str()) {
            Some("the chain no longer matches a signed checkpoint: events up to it were rewritten")
        } else {
            None
        };
        if let Some(reason) = problem {
            report.ok = false;
            let first_bad = report
                .first_bad_seq
                .map_or(checkpoint.seq, |s| s.min(checkpoint.seq));
            report.first_bad_seq = Some(first_bad);
            report.reason.get_or_insert_with(|| reason.to_string());
            break;
        }
        prev = checkpoint.seq;
        checked += 1;
    }
    report.checkpoints = Some(checked);
    report.last_checkpoint_seq = (prev > 0).then_some(prev);
    Ok(report)
}

/// Rows read per page while exporting, which bounds the memory an export uses.
pub const EXPORT_PAGE_ROWS: i64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    pub fn parse(text: &str) -> Option<ExportFormat> {
        match text {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" => Some(ExportFormat::Jsonl),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }
}

const CSV_COLUMNS: [&str; 13] = [
    "seq",
    "at",
    "kind",
    "agent_id",
    "credential_id",
    "payment_id",
    "actor",
    "detail",
    "tx_hash",
    "block_number",
    "block_hash",
    "prev_hash",
    "hash",
];

impl AuditEvent {
    /// The event as the API shows it: RFC 3339 time, `detail` as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq, "at": crate::domain::format_time(self.at), "kind": self.kind,
            "agent_id": self.agent_id, "credential_id": self.credential_id, "payment_id": self.payment_id,
            "actor": self.actor,
            "detail": serde_json::from_str::<serde_json::Value>(&self.detail)
                .unwrap_or_else(|_| serde_json::Value::String(self.detail.clone())),
            "tx_hash": self.tx_hash, "block_number": self.block_number, "block_hash": self.block_hash,
            "prev_hash": self.prev_hash, "hash": self.hash,
        })
    }
}

/// Encodes a page of events; the CSV header goes before the first page only.
pub fn encode(events: &[AuditEvent], format: ExportFormat, first_page: bool) -> Vec<u8> {
    match format {
        ExportFormat::Jsonl => {
            let mut out = Vec::new();
            for event in events {
                out.extend(event.to_json().to_string().into_bytes());
                out.push(b'\n');
            }
            out
        }
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let write = |writer: &mut csv::Writer<Vec<u8>>| -> csv::Result<()> {
                if first_page {
                    writer.write_record(CSV_COLUMNS)?;
                }
                for e in events {
                    let optional = |v: &Option<String>| v.clone().unwrap_or_default();
                    writer.write_record([
                        e.seq.to_string(),
                        crate::domain::format_time(e.at),
                        e.kind.clone(),
                        optional(&e.agent_id),
                        optional(&e.credential_id),
                        optional(&e.payment_id),
                        e.actor.clone(),
                        e.detail.clone(),
                        optional(&e.tx_hash),
                        e.block_number.map(|n| n.to_string()).unwrap_or_default(),
                        optional(&e.block_hash),
                        e.prev_hash.clone(),
                        e.hash.clone(),
                    ])?;
                }
                Ok(())
            };
            // Writing into a Vec cannot fail.
            write(&mut writer).expect("CSV into memory");
            writer.into_inner().expect("CSV into memory")
        }
    }
}

/// Events with `at` in `[from, to)` in sequence order, one page after `after_seq`.
pub async fn export_page(
    pool: &SqlitePool,
    from: Option<Millis>,
    to: Option<Millis>,
    after_seq: i64,
    scope_id: Option<&str>,
) -> Result<Vec<AuditEvent>, LedgerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM audit_events WHERE seq > ?1 AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR at < ?3)
           AND (?5 IS NULL OR {})
         ORDER BY seq LIMIT ?4",
        IN_SCOPE.replace("{p}", "?5")
    )))
    .bind(after_seq)
    .bind(from)
    .bind(to)
    .bind(EXPORT_PAGE_ROWS)
    .bind(scope_id)
    .fetch_all(pool)
    .await?)
}

/// The whole export as a stream of encoded pages: memory stays at one page whatever the size.
pub fn export_stream(
    pool: SqlitePool,
    from: Option<Millis>,
    to: Option<Millis>,
    format: ExportFormat,
    scope_id: Option<String>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, LedgerError>> + Send + 'static {
    // State: (next seq cursor, whether the header is still due, finished).
    futures_util::stream::try_unfold((0i64, true, false), move |(after, first, done)| {
        let pool = pool.clone();
        let scope_id = scope_id.clone();
        async move {
            if done {
                return Ok(None);
            }
            let events = export_page(&pool, from, to, after, scope_id.as_deref()).await?;
            let last = events.last().map(|e| e.seq);
            let finished = (events.len() as i64) < EXPORT_PAGE_ROWS;
            if events.is_empty() && !first {
                return Ok(None);
            }
            let bytes = encode(&events, format, first);
            Ok(Some((bytes, (last.unwrap_or(after), false, finished))))
        }
    })
}

/// The newest alarm events (kinds a human should look at now), newest first.
pub async fn alarms(pool: &SqlitePool, limit: i64) -> Result<Vec<AuditEvent>, LedgerError> {
    let kinds: Vec<String> = crate::domain::AuditKind::ALL
        .iter()
        .filter(|k| k.is_alarm())
        .map(|k| format!("'{}'", k.as_str()))
        .collect();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM audit_events WHERE kind IN ({}) ORDER BY seq DESC LIMIT ?",
        kinds.join(", ")
    )))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
