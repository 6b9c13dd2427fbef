//! The use cases: every state change of Bursar happens here, each inside one database
//! transaction that also appends its audit event. Authentication, tokens, agents, credentials,
//! payment creation (policy + budget hold + idempotency, atomically), funding, and settlement
//! (`settlement`). May import everything below it: `domain`, `policy`, `custody`, `chain`,
//! `ledger`.

mod access;
mod agent_admin;
pub mod approvals;
pub mod console;
mod create;
pub mod delivery;
pub mod reconcile;
pub mod scopes;
pub mod screening;
pub mod settlement;
pub mod treasury;
pub mod webhooks;
pub mod x402;

use crate::chain::{Chain, ChainError};
use crate::custody::{Custody, CustodyError, SealedKey};
use crate::domain::AuditKind;
use crate::domain::{
    Address, AgentId, Amount, CredentialId, IdempotencyKey, PaymentId, PaymentKind, PaymentStatus,
    Role, new_id, new_secret_token,
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
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
#[cfg(any(test, feature = "test-support"))]
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, Ordering};
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
        agent_id: AgentId,
        credential_id: CredentialId,
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
    /// The spending scope the payment is made in (its rules are evaluated too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<String>,
}

/// How an allowed payment moves money (the domain's `CaptureMode`).
pub use crate::domain::CaptureMode as Capture;

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
    pub eth_wei: Option<crate::domain::Wei>,
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
    /// Receipts settlement has read, by transaction hash, with the head they were last used at.
    /// A receipt names its block: it is reused only while that block is still the canonical one
    /// at its height (a block's hash commits to its transactions), and read again otherwise.
    receipts: Arc<std::sync::Mutex<settlement::ReceiptCache>>,
    /// The USDC transfers each recent block holds, by block hash (immutable for a hash).
    blocks: Arc<std::sync::Mutex<settlement::BlockIndex>>,
    /// The canonical chain's recent blocks as settlement last verified them (see
    /// `settlement::canon`).
    canon: Arc<std::sync::Mutex<settlement::canon::Canon>>,
    /// The head every open transaction was last checked against: set by a settlement pass that
    /// checked them all, 0 before the first. An included payment's confirmations are counted
    /// from it when the payment is read (`confirmations_of`), so a pass writes nothing for a
    /// transaction whose only change is one more block on top of its own.
    verified_head: Arc<AtomicU64>,
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
    /// Transactions one wallet keeps in the node's pool at most (signed or broadcast, at a nonce
    /// the chain has not used yet): each wallet's lane signs its next payments only into the
    /// room left, so a burst never overflows what a node's pool takes from one sender.
    pub lane_window: u64,
    /// Write requests a second each credential or staff token may make (the API's limit).
    pub write_rate_per_second: std::num::NonZeroU32,
    /// Write requests a credential or token may make at once before the rate applies.
    pub write_rate_burst: std::num::NonZeroU32,
    /// Whether the x402 payer may reach private, loopback and link-local targets.
    pub x402_allow_private_targets: bool,
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
            receipts: Arc::default(),
            blocks: Arc::default(),
            canon: Arc::default(),
            verified_head: Arc::default(),
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

    /// A payment's confirmations as of the head settlement last checked its transaction
    /// against (`verified_head`): what is stored (the count when its status last changed) until
    /// a pass has checked it again.
    pub fn confirmations_of(&self, payment: &PaymentRow) -> i64 {
        payment_rows::confirmations_at(
            payment,
            self.verified_head.load(Ordering::Acquire),
            self.confirmations_required(),
        )
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
        let every = if force { 1 } else { AUDIT_CHECKPOINT_EVERY };
        // Most passes have nothing to checkpoint: that is read without taking the writer.
        if !audit::checkpoint_due(self.ledger.pool(), every).await? {
            return Ok(None);
        }
        let mut tx = self.ledger.begin().await?;
        let seq = audit::checkpoint(&mut tx, &self.audit_key, every, now).await?;
        tx.commit_unaudited("a signed checkpoint of the audit chain")
            .await?;
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
                actor: "system".into(),
                detail: serde_json::json!({"address": key.address.to_string()}),
                ..NewEvent::of(AuditKind::TreasuryCreated)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(wallets::get(self.ledger.pool(), &id).await?)
    }
}
