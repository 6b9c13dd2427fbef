//! The use cases: every state change of Bursar happens here, each inside one database
//! transaction that also appends its audit event. Authentication, tokens, agents, credentials,
//! payment creation (policy + budget hold + idempotency, atomically), funding, and settlement
//! (`settlement`). May import everything below it: `domain`, `policy`, `custody`, `chain`,
//! `ledger`.

pub mod approvals;
pub mod delivery;
pub mod reconcile;
pub mod screening;
pub mod settlement;
pub mod treasury;
pub mod webhooks;

use crate::chain::{Chain, ChainError};
use crate::custody::{Custody, CustodyError, SealedKey};
use crate::domain::{
    Address, Amount, IdempotencyKey, PaymentKind, PaymentStatus, Role, new_id, new_secret_token,
};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments::PaymentRow;
use crate::ledger::tokens::{self, CredentialRow, TokenRow};
use crate::ledger::wallets::WalletRow;
use crate::ledger::{Ledger, LedgerError, Millis, agents, payments as payment_rows, wallets};
use crate::policy::{self, SpendSnapshot};
/// The policy types callers see (a credential's policy, a decision with its checks), re-exported
/// so that the API depends on the use cases, not on the engine.
pub use crate::policy::{Check, Decision, Outcome, Policy};
use alloy::primitives::U256;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
#[cfg(any(test, feature = "test-support"))]
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("agent is frozen")]
    AgentFrozen,
    #[error("not found")]
    NotFound,
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A hard policy rule refuses the action (an approval re-checks them at approval time).
    #[error("denied by policy rule {rule}: {message}")]
    PolicyDenied { rule: String, message: String },
    #[error("injected failure at fail point {0}")]
    FailPoint(&'static str),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error(transparent)]
    Ledger(LedgerError),
}

impl From<LedgerError> for PaymentsError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::NotFound => PaymentsError::NotFound,
            // Someone else moved the row first, or the move is not an edge: the caller's request
            // conflicts with the current state (409), never an internal error.
            LedgerError::Conflict(message) => PaymentsError::Conflict(message),
            other => PaymentsError::Ledger(other),
        }
    }
}

pub type Result<T, E = PaymentsError> = std::result::Result<T, E>;

/// Time, injectable so that tests can move it (approval and hold expiry, rolling windows).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that starts at the system time and moves only when told to (tests only).
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

#[cfg(any(test, feature = "test-support"))]
impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock(AtomicI64::new(SystemClock.now_ms()))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An API token of a role; `token_id` is `None` for the bootstrap admin token.
    Staff {
        role: Role,
        token_id: Option<String>,
    },
    /// An agent credential.
    Agent {
        agent_id: String,
        credential_id: String,
    },
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Principal::Staff {
                role,
                token_id: Some(id),
            } => format!("{role}:{id}"),
            Principal::Staff {
                role,
                token_id: None,
            } => format!("{role}:bootstrap"),
            Principal::Agent { credential_id, .. } => format!("agent:{credential_id}"),
        }
    }
}

/// What a caller asks to pay.
#[derive(Clone, Debug, Serialize)]
pub struct NewPayment {
    pub to: Address,
    pub amount: Amount,
    pub currency: String,
    pub memo: Option<String>,
    pub reference: Option<String>,
    pub confidence: Option<f64>,
    pub capture: Capture,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    Automatic,
    Manual,
}

/// The result of a create call: a new payment or the replay of an earlier one.
#[derive(Debug)]
pub struct Created {
    pub payment: PaymentRow,
    pub replayed: bool,
}

/// An agent together with what the chain says of its wallet.
#[derive(Debug)]
pub struct AgentView {
    pub agent: agents::AgentRow,
    pub usdc: Option<Amount>,
    pub eth_wei: Option<U256>,
    pub spent_24h: Amount,
}

#[derive(Clone)]
pub struct Payments {
    ledger: Ledger,
    custody: Arc<Custody>,
    audit_key: Arc<crate::domain::AuditKey>,
    chain: Chain,
    clock: Arc<dyn Clock>,
    admin_token: Option<SecretString>,
    settings: Settings,
    wake: Arc<Notify>,
    fail_points: Arc<std::sync::Mutex<std::collections::HashSet<&'static str>>>,
}

/// Audit events between two signed checkpoints of the chain's head, at most (plus what one
/// settlement pass appends).
pub const AUDIT_CHECKPOINT_EVERY: i64 = 100;

/// The named places where tests make settlement fail as if the process died there.
/// `after_replace` is between storing a replacement (or a filler) and broadcasting it.
pub const FAIL_POINTS: [&str; 4] = [
    "before_sign",
    "after_sign",
    "after_broadcast",
    "after_replace",
];

/// The tunable limits of the use cases, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Blocks on top of the including block before a payment is `confirmed`.
    pub confirmations_required: u64,
    /// How long a `pending_approval` payment waits for a human before it is `expired`.
    pub approval_timeout_ms: i64,
    /// How long an `authorized` (manual capture) hold lives before it is `expired`.
    pub hold_timeout_ms: i64,
    /// Agent wallets with less ETH than this are topped up from the treasury (0 disables).
    pub gas_float_min_wei: u128,
    /// ETH sent by one top-up.
    pub gas_float_topup_wei: u128,
    /// Blocks a broadcast transaction may wait for inclusion before it is replaced with higher fees.
    pub stuck_after_blocks: u64,
    /// The highest fee cap Bursar ever signs (wei per gas), first transaction or replacement.
    pub max_fee_per_gas_wei: u128,
    /// Blocks a transaction the node keeps refusing (for a reason other than gas or price) may
    /// wait while its nonce is open before the slot is filled and the payment fails.
    pub unsendable_after_blocks: u64,
    /// Blocks over which confirmed transactions are re-checked against the canonical chain.
    pub finality_watch_blocks: u64,
    /// Write requests a second each credential or staff token may make (the API's limit).
    pub write_rate_per_second: std::num::NonZeroU32,
    /// Write requests a credential or token may make at once before the rate applies.
    pub write_rate_burst: std::num::NonZeroU32,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payments({:?})", self.chain)
    }
}

fn request_hash(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).expect("request types always serialize");
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn sealed(wallet: &WalletRow) -> Result<SealedKey> {
    Ok(SealedKey {
        address: wallet.address()?,
        ciphertext: wallet.sealed_key.clone(),
        nonce: wallet.seal_nonce.clone(),
    })
}

impl Payments {
    pub fn new(
        ledger: Ledger,
        custody: Arc<Custody>,
        chain: Chain,
        clock: Arc<dyn Clock>,
        admin_token: Option<SecretString>,
        settings: Settings,
    ) -> Payments {
        Payments {
            ledger,
            audit_key: Arc::new(custody.audit_key()),
            custody,
            chain,
            clock,
            admin_token,
            settings,
            wake: Arc::new(Notify::new()),
            fail_points: Arc::default(),
        }
    }

    /// Test support: makes settlement fail at `name` (one of `FAIL_POINTS`) from now on, as if
    /// the process died there. Compiled only with the `test-support` feature.
    #[cfg(any(test, feature = "test-support"))]
    pub fn arm_fail_point(&self, name: &'static str) {
        assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
        self.fail_points
            .lock()
            .expect("fail point lock")
            .insert(name);
    }

    fn fail_point(&self, name: &'static str) -> Result<()> {
        if self
            .fail_points
            .lock()
            .expect("fail point lock")
            .contains(name)
        {
            return Err(PaymentsError::FailPoint(name));
        }
        Ok(())
    }

    /// A read-only handle on the ledger, for queries (the API holds this, never the writer).
    pub fn reader(&self) -> crate::ledger::LedgerReader {
        self.ledger.reader()
    }

    /// The webhook delivery worker, on this ledger and clock.
    pub fn deliverer(&self) -> delivery::Deliverer {
        delivery::Deliverer::new(self.ledger.clone(), self.clock.clone())
    }

    /// Whether the database and the node answer: `(database, node)`.
    pub async fn readiness(&self) -> (bool, bool) {
        let (database, node) = tokio::join!(self.ledger.ping(), self.chain.head());
        (database.is_ok(), node.is_ok())
    }

    /// Closes the database (at shutdown).
    pub async fn close(&self) {
        self.ledger.close().await;
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn confirmations_required(&self) -> u64 {
        self.settings.confirmations_required
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Wakes the settlement worker (a payment was queued).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The custody-held sealed key of a wallet, for tests that prove keys never leak. Compiled
    /// only with the `test-support` feature.
    #[cfg(any(test, feature = "test-support"))]
    pub async fn reveal_key_for_tests(&self, wallet_id: &str) -> Result<Vec<u8>> {
        let wallet = wallets::get(self.ledger.pool(), wallet_id).await?;
        Ok(self.custody.reveal_for_tests(&sealed(&wallet)?)?.to_vec())
    }

    // ---- audit checkpoints ----

    /// Signs the audit chain's head as a checkpoint when `AUDIT_CHECKPOINT_EVERY` events came
    /// since the last one (settlement does this every pass), or whenever `force` (every export).
    pub async fn checkpoint_audit(&self, force: bool) -> Result<Option<i64>> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let every = if force { 1 } else { AUDIT_CHECKPOINT_EVERY };
        let seq = audit::checkpoint(&mut tx, &self.audit_key, every, now).await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(seq)
    }

    /// Verifies the hash chain and every signed checkpoint against the master key.
    pub async fn verify_audit(&self) -> Result<audit::VerifyReport> {
        Ok(audit::verify_with_checkpoints(self.ledger.pool(), &self.audit_key).await?)
    }

    // ---- bootstrap ----

    /// The treasury wallet, created by custody on first start.
    pub async fn ensure_treasury(&self) -> Result<WalletRow> {
        if let Some(wallet) = wallets::treasury(self.ledger.pool()).await? {
            return Ok(wallet);
        }
        // Nothing of custody's can be on chain before its first wallet: the background
        // reconciler starts here. A node that does not answer now leaves it at block 0.
        if let Ok(head) = self.chain.head().await
            && self
                .ledger
                .meta(reconcile::CUSTODY_START_META_KEY)
                .await?
                .is_none()
        {
            self.ledger
                .set_meta(reconcile::CUSTODY_START_META_KEY, &head.to_string())
                .await?;
        }
        let key = self.custody.generate_wallet()?;
        let id = new_id("wal");
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        wallets::insert(
            &mut tx,
            &id,
            "treasury",
            key.address,
            &key.ciphertext,
            &key.nonce,
            now,
        )
        .await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "treasury_created",
                actor: "system".into(),
                detail: serde_json::json!({"address": key.address.to_string()}),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(wallets::get(self.ledger.pool(), &id).await?)
    }

    // ---- authentication and tokens ----

    /// Resolves a bearer secret to a principal. Unknown, revoked and expired secrets, and the
    /// credentials of a frozen agent, are all refused here.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal> {
        if let Some(admin) = &self.admin_token
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                admin.expose_secret().as_bytes(),
                secret.as_bytes(),
            ))
        {
            return Ok(Principal::Staff {
                role: Role::Admin,
                token_id: None,
            });
        }
        let hash = tokens::token_hash(secret);
        let pool = self.ledger.pool();
        if let Some(token) = tokens::find_token(pool, &hash).await? {
            let matches = bool::from(subtle::ConstantTimeEq::ct_eq(
                token.token_hash.as_bytes(),
                hash.as_bytes(),
            ));
            let role = Role::parse(&token.role).ok_or(PaymentsError::Unauthenticated)?;
            if matches && token.revoked_at.is_none() {
                return Ok(Principal::Staff {
                    role,
                    token_id: Some(token.id),
                });
            }
            return Err(PaymentsError::Unauthenticated);
        }
        if let Some(credential) = tokens::find_credential_by_hash(pool, &hash).await? {
            self.check_credential(&credential)?;
            let agent = agents::get(pool, &credential.agent_id).await?;
            if agent.status != "active" {
                return Err(PaymentsError::AgentFrozen);
            }
            return Ok(Principal::Agent {
                agent_id: credential.agent_id,
                credential_id: credential.id,
            });
        }
        Err(PaymentsError::Unauthenticated)
    }

    fn check_credential(&self, credential: &CredentialRow) -> Result<()> {
        let expired = credential.expires_at.is_some_and(|at| at <= self.now());
        if credential.status != "active" || expired {
            return Err(PaymentsError::Unauthenticated);
        }
        Ok(())
    }

    pub async fn create_token(
        &self,
        actor: &Principal,
        role: Role,
        name: &str,
    ) -> Result<(TokenRow, String)> {
        let secret = new_secret_token("bsr");
        let now = self.now();
        let row = TokenRow {
            id: new_id("tok"),
            role: role.as_str().into(),
            name: name.into(),
            token_hash: tokens::token_hash(&secret),
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.ledger.begin().await?;
        tokens::insert_token(&mut tx, &row).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "token_created",
                actor: actor.actor(),
                detail: serde_json::json!({"token_id": row.id, "role": row.role, "name": row.name}),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok((row, secret))
    }

    pub async fn revoke_token(&self, actor: &Principal, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        tokens::revoke_token(&mut tx, id, now).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "token_revoked",
                actor: actor.actor(),
                detail: serde_json::json!({"token_id": id}),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(())
    }

    // ---- agents and credentials ----

    /// Creates an agent with a fresh custodied wallet.
    pub async fn create_agent(&self, actor: &Principal, name: &str) -> Result<agents::AgentRow> {
        let key = self.custody.generate_wallet()?;
        let wallet_id = new_id("wal");
        let agent_id = new_id("agt");
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        wallets::insert(
            &mut tx,
            &wallet_id,
            "agent",
            key.address,
            &key.ciphertext,
            &key.nonce,
            now,
        )
        .await?;
        agents::insert(&mut tx, &agent_id, name, &wallet_id, now).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "agent_created",
                agent_id: Some(agent_id.clone()),
                actor: actor.actor(),
                detail: serde_json::json!({"name": name, "address": key.address.to_string()}),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(agents::get(self.ledger.pool(), &agent_id).await?)
    }

    /// Agents with their on-chain balances, read for the whole page in one round trip to the
    /// node. A node that does not answer leaves the balances out (`None`) rather than failing
    /// the read.
    pub async fn agent_views(&self, agents: Vec<agents::AgentRow>) -> Result<Vec<AgentView>> {
        let mut addresses = Vec::with_capacity(agents.len());
        for agent in &agents {
            addresses.push(
                Address::parse(&agent.address)
                    .map_err(|_| LedgerError::Corrupt("agent address".into()))?,
            );
        }
        let balances = self
            .chain
            .balances(&addresses)
            .await
            .unwrap_or_else(|_| vec![(None, None); addresses.len()]);
        let since = self.now() - 24 * 60 * 60 * 1000;
        let mut views = Vec::with_capacity(agents.len());
        for (agent, (usdc, eth_wei)) in agents.into_iter().zip(balances) {
            let spent = agents::spent_since(self.ledger.pool(), &agent.id, since).await?;
            views.push(AgentView {
                usdc,
                eth_wei,
                spent_24h: Amount::from_sql(spent),
                agent,
            });
        }
        Ok(views)
    }

    pub async fn create_credential(
        &self,
        actor: &Principal,
        agent_id: &str,
        name: &str,
        policy: &Policy,
        expires_at: Option<Millis>,
    ) -> Result<(CredentialRow, String)> {
        if let Err(error) = policy.validate() {
            return Err(PaymentsError::Invalid {
                field: error.field.into(),
                message: error.message.into(),
            });
        }
        let now = self.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(PaymentsError::Invalid {
                field: "expires_at".into(),
                message: "must be in the future".into(),
            });
        }
        let secret = new_secret_token("bsa");
        let row = CredentialRow {
            id: new_id("cred"),
            agent_id: agent_id.into(),
            name: name.into(),
            token_hash: tokens::token_hash(&secret),
            policy: serde_json::to_string(policy).expect("policies serialize"),
            expires_at,
            status: "active".into(),
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.ledger.begin().await?;
        agents::get(&mut *tx, agent_id).await?;
        tokens::insert_credential(&mut tx, &row).await?;
        audit::append(&mut tx, now, NewEvent {
            kind: "credential_created",
            agent_id: Some(agent_id.into()),
            credential_id: Some(row.id.clone()),
            actor: actor.actor(),
            detail: serde_json::json!({"name": name, "policy": policy, "expires_at": expires_at}),
            ..NewEvent::default()
        })
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok((row, secret))
    }

    /// Revokes a credential at once; its live holds (`pending_approval`, `authorized`) are
    /// cancelled in the same transaction, releasing their budget.
    pub async fn revoke_credential(&self, actor: &Principal, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let credential = tokens::get_credential(&mut *tx, id).await?;
        tokens::revoke_credential(&mut tx, id, now).await?;
        let holds = payment_rows::live_holds_of_credential(&mut tx, id).await?;
        let cancelled =
            approvals::cancel_all(&mut tx, &holds, "credential_revoked", &actor.actor(), now)
                .await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "credential_revoked",
                agent_id: Some(credential.agent_id),
                credential_id: Some(id.into()),
                actor: actor.actor(),
                detail: serde_json::json!({"cancelled_payments": cancelled}),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(())
    }

    // ---- payments ----

    /// Creates an agent's payment. In one write transaction: the idempotency lookup, a re-check
    /// of the credential and agent, the spend snapshot, the policy decision, the payment row (its
    /// amount is the budget hold) and the audit event recording the attempt and the decision.
    pub async fn create_payment(
        &self,
        agent_id: &str,
        credential_id: &str,
        key: &IdempotencyKey,
        request: &NewPayment,
    ) -> Result<Created> {
        let hash = request_hash(request);
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        if let Some(existing) =
            payment_rows::find_by_idempotency_key(&mut tx, credential_id, key.as_str()).await?
        {
            return replay(existing, &hash);
        }
        let credential = tokens::get_credential(&mut *tx, credential_id).await?;
        self.check_credential(&credential)?;
        let agent = agents::get(&mut *tx, agent_id).await?;
        if agent.status != "active" {
            return Err(PaymentsError::AgentFrozen);
        }
        let from = Address::parse(&agent.address)
            .map_err(|_| LedgerError::Corrupt("agent address".into()))?;
        self.screen_recipient(&mut tx, from, request.to).await?;
        let decision = self
            .decide(
                &mut tx,
                &credential,
                &policy::PaymentRequest {
                    to: request.to,
                    amount: request.amount,
                    confidence: request.confidence,
                },
                None,
                now,
            )
            .await?;
        let status = match (decision.outcome, request.capture) {
            (Outcome::Deny, _) => PaymentStatus::Rejected,
            (Outcome::RequireApproval, _) => PaymentStatus::PendingApproval,
            (Outcome::Allow, Capture::Manual) => PaymentStatus::Authorized,
            (Outcome::Allow, Capture::Automatic) => PaymentStatus::Queued,
        };
        let row = self.payment_row(
            PaymentKind::Payment,
            Some(&agent),
            Some(credential_id),
            &agent.wallet_id,
            request,
            status,
            Some(&decision),
            // Keys are scoped to the credential: another credential of the same agent can neither
            // replay nor read a payment made under this one's policy.
            credential_id,
            key,
            hash,
            now,
        );
        payment_rows::insert(&mut tx, &row).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                kind: "payment_decided",
                agent_id: Some(agent_id.into()),
                credential_id: Some(credential_id.into()),
                payment_id: Some(row.id.clone()),
                actor: format!("agent:{credential_id}"),
                detail: serde_json::json!({
                    "to": request.to.to_string(),
                    "amount": request.amount.to_string(),
                    "status": status,
                    "decision": decision,
                }),
                ..NewEvent::default()
            },
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        if status == PaymentStatus::Queued {
            self.wake.notify_one();
        }
        Ok(Created {
            payment: row,
            replayed: false,
        })
    }

    /// The policy decision for `request` under the credential's current policy and what the
    /// credential holds now (leaving out `exclude`), read in the caller's write transaction so
    /// that the check is atomic with the write it guards.
    async fn decide(
        &self,
        tx: &mut crate::ledger::Tx,
        credential: &CredentialRow,
        request: &policy::PaymentRequest,
        exclude: Option<&str>,
        now: Millis,
    ) -> Result<Decision> {
        let policy: Policy = serde_json::from_str(&credential.policy)
            .map_err(|_| LedgerError::Corrupt(format!("credential {} policy", credential.id)))?;
        let (day, total, minute) =
            payment_rows::spend_snapshot(tx, &credential.id, now, exclude).await?;
        let snapshot = SpendSnapshot {
            held_last_24h: Amount::from_sql(day),
            held_total: Amount::from_sql(total),
            payments_last_minute: u32::try_from(minute).unwrap_or(u32::MAX),
        };
        Ok(policy::evaluate(&policy, request, &snapshot))
    }

    #[allow(clippy::too_many_arguments)]
    fn payment_row(
        &self,
        kind: PaymentKind,
        agent: Option<&agents::AgentRow>,
        credential_id: Option<&str>,
        from_wallet_id: &str,
        request: &NewPayment,
        status: PaymentStatus,
        decision: Option<&Decision>,
        scope: &str,
        key: &IdempotencyKey,
        request_hash: String,
        now: Millis,
    ) -> PaymentRow {
        PaymentRow {
            id: new_id("pay"),
            kind: kind.as_str().into(),
            agent_id: agent.map(|a| a.id.clone()),
            credential_id: credential_id.map(str::to_string),
            from_wallet_id: from_wallet_id.into(),
            to_address: request.to.to_string(),
            amount: request.amount.to_sql(),
            gas_wei: None,
            currency: request.currency.clone(),
            memo: request.memo.clone(),
            reference: request.reference.clone(),
            metadata: request.metadata.as_ref().map(|m| m.to_string()),
            confidence: request.confidence,
            capture: match request.capture {
                Capture::Automatic => "automatic".into(),
                Capture::Manual => "manual".into(),
            },
            status: status.as_str().into(),
            decision: decision.map(|d| serde_json::to_string(d).expect("decisions serialize")),
            failure_reason: None,
            tx_hash: None,
            nonce: None,
            block_number: None,
            block_hash: None,
            confirmations: 0,
            waiting_reason: None,
            orphaned_blocks: None,
            committed_at: (status == PaymentStatus::Queued).then_some(now),
            held_since: None,
            idempotency_scope: scope.into(),
            idempotency_key: key.as_str().into(),
            request_hash,
            created_at: now,
            updated_at: now,
        }
    }

    pub async fn get_payment(&self, id: &str) -> Result<PaymentRow> {
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }

    // ---- treasury ----

    /// Funds an agent's wallet from the treasury: USDC, and ETH for gas when `gas_wei` is given.
    pub async fn create_funding(
        &self,
        actor: &Principal,
        key: &IdempotencyKey,
        agent_id: &str,
        amount: Amount,
        gas_wei: Option<U256>,
    ) -> Result<Created> {
        self.insert_funding(actor.actor(), "treasury", key, agent_id, amount, gas_wei)
            .await
    }

    /// A funding from the treasury to an agent wallet, idempotent within `scope`.
    async fn insert_funding(
        &self,
        actor: String,
        scope: &str,
        key: &IdempotencyKey,
        agent_id: &str,
        amount: Amount,
        gas_wei: Option<U256>,
    ) -> Result<Created> {
        #[derive(Serialize)]
        struct Body<'a> {
            agent_id: &'a str,
            amount: Amount,
            gas_wei: Option<String>,
        }
        let gas_text = gas_wei.map(|w| w.to_string());
        let hash = request_hash(&Body {
            agent_id,
            amount,
            gas_wei: gas_text.clone(),
        });
        let treasury = self.ensure_treasury().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        if let Some(existing) =
            payment_rows::find_by_idempotency_key(&mut tx, scope, key.as_str()).await?
        {
            return replay(existing, &hash);
        }
        let agent = agents::get(&mut *tx, agent_id).await.map_err(|e| match e {
            LedgerError::NotFound => PaymentsError::Invalid {
                field: "agent_id".into(),
                message: "no such agent".into(),
            },
            other => other.into(),
        })?;
        let to = Address::parse(&agent.address)
            .map_err(|_| LedgerError::Corrupt("agent address".into()))?;
        let request = NewPayment {
            to,
            amount,
            currency: "USDC".into(),
            memo: Some("treasury funding".into()),
            reference: None,
            confidence: None,
            capture: Capture::Automatic,
            metadata: None,
        };
        let mut row = self.payment_row(
            PaymentKind::Funding,
            Some(&agent),
            None,
            &treasury.id,
            &request,
            PaymentStatus::Queued,
            None,
            scope,
            key,
            hash,
            now,
        );
        row.gas_wei = gas_text.clone();
        payment_rows::insert(&mut tx, &row).await?;
        audit::append(&mut tx, now, NewEvent {
            kind: "funding_requested",
            agent_id: Some(agent_id.into()),
            payment_id: Some(row.id.clone()),
            actor,
            detail: serde_json::json!({
                "amount": amount.to_string(), "gas_wei": gas_text, "to": to.to_string(), "scope": scope,
            }),
            ..NewEvent::default()
        })
        .await?;
        self.commit_queued(tx, row).await
    }

    /// Commits the transaction that queued `row` and wakes the settlement worker for it.
    async fn commit_queued(&self, tx: crate::ledger::Tx, row: PaymentRow) -> Result<Created> {
        tx.commit().await.map_err(LedgerError::from)?;
        self.wake.notify_one();
        Ok(Created {
            payment: row,
            replayed: false,
        })
    }

    pub async fn treasury_view(&self) -> Result<(Address, Option<Amount>, Option<U256>)> {
        let treasury = self.ensure_treasury().await?;
        let address = treasury.address()?;
        let (usdc, eth) = self
            .chain
            .balances(&[address])
            .await
            .ok()
            .and_then(|b| b.into_iter().next())
            .unwrap_or((None, None));
        Ok((address, usdc, eth))
    }
}

/// Same key: the same request replays the stored payment; a different one is a conflict.
fn replay(existing: PaymentRow, hash: &str) -> Result<Created> {
    if existing.request_hash != hash {
        return Err(PaymentsError::IdempotencyKeyReused);
    }
    Ok(Created {
        payment: existing,
        replayed: true,
    })
}
