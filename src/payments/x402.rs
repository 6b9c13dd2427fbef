//! x402 payments (the payer side of x402 "exact" on EVM): a seller's price becomes an agent
//! payment under the credential's policy, with its hold, idempotency and audit, and custody signs
//! an EIP-3009 `TransferWithAuthorization` for it. The seller's facilitator executes it; the
//! settlement pass watches the chain for its `AuthorizationUsed` and `Transfer` logs and calls the
//! payment `confirmed` only at the required depth. A hold whose authorization can no longer be
//! used (its `validBefore` passed with no `AuthorizationUsed` on the canonical chain) is released,
//! never earlier.

use super::approvals::transition;
use super::*;
use crate::domain::{AuditKind, TransferAuthorization};
use crate::ledger::x402::{self as x402_rows, X402Row};
use alloy::primitives::{B256, U256};
use base64::Engine;
use std::collections::HashMap;

/// The longest an authorization may stay usable, whatever the seller's `maxTimeoutSeconds`.
pub const MAX_TIMEOUT_SECONDS: u64 = 600;
/// `validAfter` is this far in the past, for sellers whose clocks run behind.
const VALID_AFTER_SKEW_SECONDS: u64 = 60;
/// The only protocol value of `payments.protocol`.
pub const X402: &str = "x402";

/// What a seller asks for: one requirement of its `402`, chosen by the x402 payer.
#[derive(Clone, Debug)]
pub struct X402Offer {
    /// 1 or 2.
    pub version: u8,
    /// The URL paid for.
    pub resource: String,
    /// The chosen requirement exactly as the seller sent it (echoed back as `accepted`).
    pub requirements: serde_json::Value,
    /// The v2 `resource` object of the 402, echoed back.
    pub resource_info: Option<serde_json::Value>,
    pub pay_to: Address,
    pub amount: Amount,
    pub asset: Address,
    pub max_timeout_seconds: u64,
    /// The EIP-712 domain the seller names (`extra.name`, `extra.version`).
    pub domain_name: String,
    pub domain_version: String,
}

/// The result of an x402 authorization: the payment and, once signed, the header value.
#[derive(Debug)]
pub struct X402Authorized {
    pub payment: PaymentRow,
    pub header_value: Option<String>,
    pub replayed: bool,
}

impl Payments {
    /// A replay of an x402 fetch already answered: the payment and the seller's stored answer.
    /// The same key with another request is `IdempotencyKeyReused`.
    pub async fn x402_replay(
        &self,
        credential_id: &CredentialId,
        key: &IdempotencyKey,
        request_hash: &str,
    ) -> Result<Option<(PaymentRow, serde_json::Value)>> {
        let Some((id, hash, response)) =
            x402_rows::by_key(self.ledger.pool(), credential_id.as_str(), key.as_str()).await?
        else {
            return Ok(None);
        };
        if hash != request_hash {
            return Err(PaymentsError::IdempotencyKeyReused);
        }
        let Some(response) = response.and_then(|r| serde_json::from_str(&r).ok()) else {
            return Ok(None);
        };
        Ok(Some((
            payment_rows::get(self.ledger.pool(), &id).await?,
            response,
        )))
    }

    /// The chain id and USDC contract x402 requirements must name.
    pub fn x402_chain(&self) -> (u64, Address) {
        (self.chain.chain_id(), self.chain.usdc_address())
    }

    /// Decides, holds and (when allowed) signs an x402 payment for the calling agent. In one
    /// write transaction: idempotency, the credential and agent re-checked, recipient screening,
    /// the policy decision with `payTo` as the recipient, the payment row (its amount is the
    /// hold), the audit event and, if allowed, the signed authorization with its own event. The
    /// header value leaves only after the commit. A replay never signs again; a payment a human
    /// approved since is signed on its first replay.
    pub async fn authorize_x402(
        &self,
        agent_id: &AgentId,
        credential_id: &CredentialId,
        key: &IdempotencyKey,
        offer: &X402Offer,
        request_hash: String,
        scope_id: Option<&str>,
    ) -> Result<X402Authorized> {
        self.check_offer(offer).await?;
        let head = self.chain.head().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        if let Some(existing) =
            payment_rows::find_by_idempotency_key(&mut tx, credential_id, key.as_str()).await?
        {
            if existing.request_hash != request_hash || existing.protocol.as_deref() != Some(X402) {
                return Err(PaymentsError::IdempotencyKeyReused);
            }
            let stored = x402_rows::get(&mut *tx, &existing.id).await?;
            if stored.header_value.is_some() || existing.status != PaymentStatus::Authorized {
                return Ok(X402Authorized {
                    payment: existing,
                    header_value: stored.header_value,
                    replayed: true,
                });
            }
            // Approved by a human since the first call: sign now, for what was approved.
            if offer.pay_to != existing.to_address || offer.amount.to_sql() != existing.amount {
                return Err(PaymentsError::Conflict(
                    "the seller's price or recipient changed since the payment was approved".into(),
                ));
            }
            let header = self.sign_x402(&mut tx, &existing, offer, head, now).await?;
            tx.commit().await?;
            return Ok(X402Authorized {
                payment: payment_rows::get(self.ledger.pool(), &existing.id).await?,
                header_value: Some(header),
                replayed: true,
            });
        }
        let request = NewPayment {
            to: offer.pay_to,
            amount: offer.amount,
            currency: "USDC".into(),
            memo: Some(format!("x402: {}", truncate(&offer.resource, 900))),
            reference: None,
            confidence: None,
            capture: Capture::Manual,
            metadata: Some(serde_json::json!({"x402": {"resource": offer.resource}})),
            scope_id: scope_id.map(str::to_string),
        };
        let admitted = tx
            .run_sync(|s| self.admit(s, agent_id, credential_id, &request, now))
            .await?;
        let (agent, decision) = (&admitted.agent, &admitted.decision);
        let status = match decision.outcome {
            Outcome::Deny => PaymentStatus::Rejected,
            Outcome::RequireApproval => PaymentStatus::PendingApproval,
            Outcome::Allow => PaymentStatus::Authorized,
        };
        let mut row = self.payment_row(
            PaymentKind::Payment,
            Some(agent),
            Some(credential_id),
            &agent.wallet_id,
            &request,
            status,
            Some(decision),
            credential_id,
            key,
            request_hash,
            now,
        );
        row.protocol = Some(X402.into());
        admitted.mark(&mut row);
        tx.run_sync(|s| payment_rows::insert(s, &row)).await?;
        x402_rows::insert(
            &mut tx,
            &X402Row {
                payment_id: row.id.to_string(),
                resource: offer.resource.clone(),
                x402_version: i64::from(offer.version),
                requirements: offer.requirements.to_string(),
                resource_info: offer.resource_info.as_ref().map(ToString::to_string),
                authorizer: agent.address.to_string(),
                nonce: None,
                valid_after: None,
                valid_before: None,
                header_value: None,
                signed_at_block: None,
                seller_tx_hash: None,
                created_at: now,
                seller_response: None,
            },
        )
        .await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                agent_id: Some(agent_id.into()),
                credential_id: Some(credential_id.into()),
                payment_id: Some(row.id.clone()),
                actor: format!("agent:{credential_id}"),
                detail: serde_json::json!({
                    "protocol": X402,
                    "resource": offer.resource,
                    "to": offer.pay_to.to_string(),
                    "amount": offer.amount.to_string(),
                    "status": status,
                    "decision": decision,
                    "scope_id": row.scope_id,
                }),
                ..NewEvent::of(AuditKind::PaymentDecided)
            },
        )
        .await?;
        let header = if status == PaymentStatus::Authorized {
            Some(self.sign_x402(&mut tx, &row, offer, head, now).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(X402Authorized {
            payment: payment_rows::get(self.ledger.pool(), &row.id).await?,
            header_value: header,
            replayed: false,
        })
    }

    /// The requirement must be for this chain's USDC, under the token's own EIP-712 domain as
    /// the contract reports it (a seller naming another domain would get an unusable signature,
    /// or one for another token).
    async fn check_offer(&self, offer: &X402Offer) -> Result<()> {
        let invalid = |message: String| PaymentsError::Invalid {
            field: "payment_required.accepts".into(),
            message,
        };
        if offer.asset != self.chain.usdc_address() {
            return Err(invalid(format!(
                "asset {} is not this deployment's USDC ({})",
                offer.asset,
                self.chain.usdc_address()
            )));
        }
        let (name, version) = self.chain.usdc_domain().await?;
        if name != offer.domain_name || version != offer.domain_version {
            return Err(invalid(format!(
                "extra names the EIP-712 domain {:?}/{:?}, but the token's own is {name:?}/{version:?}",
                offer.domain_name, offer.domain_version
            )));
        }
        Ok(())
    }

    /// Custody signs the authorization for `payment`; stored with its audit event in `tx`.
    async fn sign_x402(
        &self,
        tx: &mut crate::ledger::Tx,
        payment: &PaymentRow,
        offer: &X402Offer,
        head: u64,
        now: Millis,
    ) -> Result<String> {
        let wallet = wallets::get(self.ledger.pool(), &payment.from_wallet_id).await?;
        let now_seconds = u64::try_from(now / 1000).unwrap_or_default();
        let timeout = offer.max_timeout_seconds.clamp(1, MAX_TIMEOUT_SECONDS);
        let authorization = TransferAuthorization {
            from: wallet.address()?,
            to: offer.pay_to,
            value: U256::from(offer.amount.micros()),
            valid_after: now_seconds.saturating_sub(VALID_AFTER_SKEW_SECONDS),
            valid_before: now_seconds + timeout,
            nonce: B256::from(rand::random::<[u8; 32]>()),
            domain_name: offer.domain_name.clone(),
            domain_version: offer.domain_version.clone(),
            chain_id: self.chain.chain_id(),
            token: self.chain.usdc_address(),
        };
        let signature = self
            .custody
            .sign_transfer_authorization(&sealed(&wallet)?, &authorization)?;
        let header = payment_header(offer, &authorization, &signature);
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        x402_rows::set_signed(
            tx,
            &payment.id,
            &authorization.nonce.to_string(),
            as_i64(authorization.valid_after),
            as_i64(authorization.valid_before),
            &header,
            as_i64(head),
        )
        .await?;
        audit::append(
            tx,
            now,
            NewEvent {
                agent_id: payment.agent_id.clone(),
                credential_id: payment.credential_id.clone(),
                payment_id: Some(payment.id.clone()),
                actor: "custody".into(),
                detail: serde_json::json!({
                    "resource": offer.resource,
                    "to": offer.pay_to.to_string(),
                    "amount": offer.amount.to_string(),
                    "nonce": authorization.nonce.to_string(),
                    "valid_after": authorization.valid_after,
                    "valid_before": authorization.valid_before,
                }),
                ..NewEvent::of(AuditKind::X402AuthorizationSigned)
            },
        )
        .await?;
        Ok(header)
    }

    /// Records what the seller answered to the paid request. When its `PAYMENT-RESPONSE` names a
    /// transaction, the hold is captured (`submitted`, with that hash); the chain still decides
    /// whether it is `confirmed`.
    pub async fn record_x402_response(
        &self,
        payment_id: &str,
        http_status: u16,
        settled_tx: Option<&str>,
        response: &serde_json::Value,
    ) -> Result<PaymentRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = payment_rows::get(&mut *tx, payment_id).await?;
        x402_rows::set_seller_response(&mut tx, payment_id, &response.to_string()).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                agent_id: payment.agent_id.clone(),
                credential_id: payment.credential_id.clone(),
                payment_id: Some(payment.id.clone()),
                actor: "seller".into(),
                detail: serde_json::json!({"http_status": http_status, "tx_hash": settled_tx}),
                ..NewEvent::of(AuditKind::X402SellerResponded)
            },
        )
        .await?;
        if let Some(hash) = settled_tx
            && payment.status == PaymentStatus::Authorized
        {
            x402_rows::set_seller_tx(&mut tx, payment_id, hash).await?;
            x402_rows::set_chain_fields(&mut tx, payment_id, Some(hash), None, 0, now).await?;
            transition(
                &mut tx,
                &payment,
                PaymentStatus::Submitted,
                AuditKind::PaymentCaptured,
                "seller".into(),
                serde_json::json!({"tx_hash": hash, "captured": Amount::from_sql(payment.amount).to_string()}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(payment_rows::get(self.ledger.pool(), payment_id).await?)
    }

    /// Watches every signed, unfinished x402 authorization on chain (run by each settlement
    /// pass): its `AuthorizationUsed` log with the matching `Transfer` in the same transaction
    /// moves the payment to `submitted`/`included`, and to `confirmed` at the required depth; a
    /// log a reorg took moves it back; no log by a head block past `validBefore` releases the
    /// hold. Returns how many payments changed.
    pub(super) async fn track_x402(&self) -> Result<usize> {
        let open = x402_rows::open(self.ledger.pool()).await?;
        if open.is_empty() {
            return Ok(0);
        }
        let (head, head_time) = self.chain.head_block().await?;
        let used = self.x402_uses(&open, head).await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let mut changed = 0;
        for authorization in &open {
            let payment = payment_rows::get(&mut *tx, &authorization.payment_id).await?;
            let (Ok(authorizer), Some(Ok(nonce))) = (
                Address::parse(&authorization.authorizer),
                authorization.nonce.as_deref().map(str::parse::<B256>),
            ) else {
                continue;
            };
            let status = payment.status;
            match used.get(&(authorizer, nonce)) {
                Some(log) => {
                    if self
                        .record_x402_use(&mut tx, &payment, authorizer, log, head, now)
                        .await?
                    {
                        changed += 1;
                    }
                }
                None if status == PaymentStatus::Included => {
                    // A reorg took the block that held it; the authorization may be used again.
                    x402_rows::set_chain_fields(&mut tx, &payment.id, None, None, 0, now).await?;
                    transition(
                        &mut tx,
                        &payment,
                        PaymentStatus::Submitted,
                        AuditKind::PaymentUnincluded,
                        "settlement".into(),
                        serde_json::json!({"was_block_hash": payment.block_hash}),
                        now,
                    )
                    .await?;
                    changed += 1;
                }
                None => {
                    if expire_x402(&mut tx, &payment, authorization, head, head_time, now).await? {
                        changed += 1;
                    }
                }
            }
        }
        tx.finish("an x402 watch that found nothing new").await?;
        Ok(changed)
    }

    /// Where the chain used the open authorizations, read once for all of them: from the
    /// earliest block one was signed at up to `head`, by each authorizer's
    /// `AuthorizationUsed` events, keyed by authorizer and nonce.
    async fn x402_uses(
        &self,
        open: &[X402Row],
        head: u64,
    ) -> Result<HashMap<(Address, B256), crate::chain::AuthorizationLog>> {
        let from_block = open
            .iter()
            .filter_map(|a| a.signed_at_block)
            .min()
            .unwrap_or_default();
        let mut authorizers: Vec<Address> = open
            .iter()
            .filter_map(|a| Address::parse(&a.authorizer).ok())
            .collect();
        authorizers.sort_by_key(|a| a.to_string());
        authorizers.dedup();
        Ok(self
            .chain
            .authorizations_used(u64::try_from(from_block).unwrap_or(0), head, &authorizers)
            .await?
            .into_iter()
            .map(|log| ((log.authorizer, log.nonce), log))
            .collect())
    }

    /// `track_x402` for an authorization the chain used: with the `Transfer` it signed in the
    /// same transaction, the payment records where and moves to `submitted`/`included`, and to
    /// `confirmed` at the required depth. Returns whether anything was written.
    async fn record_x402_use(
        &self,
        tx: &mut crate::ledger::Tx,
        payment: &PaymentRow,
        authorizer: Address,
        log: &crate::chain::AuthorizationLog,
        head: u64,
        now: Millis,
    ) -> Result<bool> {
        let status = payment.status;
        let transfers = self
            .chain
            .usdc_transfers(log.block_number, log.block_number, &[authorizer])
            .await?;
        let paid = transfers.iter().any(|t| {
            t.tx_hash == log.tx_hash
                && t.from == authorizer
                && t.to == payment.to_address
                && t.value == U256::from(Amount::from_sql(payment.amount).micros())
        });
        if !paid {
            tracing::error!(payment_id = %payment.id, tx_hash = %log.tx_hash,
                "x402 authorization used without the transfer it signed");
            return Ok(false);
        }
        let depth = head.saturating_sub(log.block_number);
        let hash = log.tx_hash.to_string();
        let block_hash = log.block_hash.to_string();
        let block = i64::try_from(log.block_number).unwrap_or(i64::MAX);
        let depth_sql = i64::try_from(depth).unwrap_or(i64::MAX);
        // Only the depth changed: it is counted when the payment is read
        // (`Payments::confirmations_of`), not written per block.
        let only_deeper =
            status == PaymentStatus::Included && depth < self.confirmations_required();
        if payment.block_hash.as_deref() == Some(block_hash.as_str())
            && (only_deeper || payment.confirmations == depth_sql)
        {
            return Ok(false);
        }
        x402_rows::set_chain_fields(
            tx,
            &payment.id,
            Some(&hash),
            Some((block, &block_hash)),
            depth_sql,
            now,
        )
        .await?;
        let chain = serde_json::json!({"tx_hash": hash, "block_number": block,
            "block_hash": block_hash, "confirmations": depth});
        let mut current = payment.clone();
        for (next, kind) in [
            (PaymentStatus::Submitted, AuditKind::PaymentSubmitted),
            (PaymentStatus::Included, AuditKind::PaymentIncluded),
            (PaymentStatus::Confirmed, AuditKind::PaymentConfirmed),
        ] {
            if next == PaymentStatus::Confirmed && depth < self.confirmations_required() {
                break;
            }
            if current.status.can_become(next) {
                transition(
                    tx,
                    &current,
                    next,
                    kind,
                    "settlement".into(),
                    chain.clone(),
                    now,
                )
                .await?;
                current.status = next;
            }
        }
        Ok(true)
    }
}

/// What the finality watch found of one confirmed x402 payment on the canonical chain.
enum Finality {
    /// The block it records was reorganized away after the required depth.
    Violated {
        number: i64,
        recorded: String,
        canonical: String,
    },
    /// Its authorization, taken out by a reorg, is on the canonical chain again at depth.
    Restored {
        tx_hash: String,
        block_number: u64,
        block_hash: String,
        depth: u64,
    },
}

impl Payments {
    /// Re-checks confirmed x402 payments over `finality_watch_blocks`: a block reorganized away
    /// after the required depth is a `finality_violation` alarm, and the payment shows no block
    /// until its authorization is found again at the required depth (`finality_restored`).
    /// Returns how many alarms it raised. The chain is read before any write transaction begins,
    /// so the writer is never held across a node's answer, and a pass that finds nothing new
    /// writes nothing.
    pub(super) async fn watch_x402_finality(&self, head: u64) -> Result<usize> {
        let since = head.saturating_sub(self.settings().finality_watch_blocks);
        let watched =
            x402_rows::confirmed_to_watch(self.ledger.pool(), i64::try_from(since).unwrap_or(0))
                .await?;
        let mut found = Vec::new();
        for authorization in &watched {
            let payment = payment_rows::get(self.ledger.pool(), &authorization.payment_id).await?;
            if let Some(finality) = self.finality_of(authorization, &payment, head).await? {
                found.push((payment, finality));
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let mut alarms = 0;
        for (seen, finality) in &found {
            let payment = payment_rows::get(&mut *tx, &seen.id).await?;
            // Only what the chain was compared with is changed.
            if payment.block_hash == seen.block_hash {
                alarms += usize::from(
                    self.record_finality(&mut tx, &payment, finality, now)
                        .await?,
                );
            }
        }
        tx.finish("a finality check of x402 payments that found nothing new")
            .await?;
        Ok(alarms)
    }

    /// Where the canonical chain has a confirmed x402 payment now, if that changed.
    async fn finality_of(
        &self,
        authorization: &X402Row,
        payment: &PaymentRow,
        head: u64,
    ) -> Result<Option<Finality>> {
        if let (Some(number), Some(recorded)) = (payment.block_number, &payment.block_hash) {
            let canonical = self
                .chain
                .block_hash(u64::try_from(number).unwrap_or(0))
                .await?
                .to_string();
            return Ok((canonical != *recorded).then(|| Finality::Violated {
                number,
                recorded: recorded.clone(),
                canonical,
            }));
        }
        // Taken out by a reorg: is its authorization on the canonical chain again?
        let (Ok(authorizer), Some(Ok(nonce))) = (
            Address::parse(&authorization.authorizer),
            authorization.nonce.as_deref().map(str::parse::<B256>),
        ) else {
            return Ok(None);
        };
        let from = u64::try_from(authorization.signed_at_block.unwrap_or(0)).unwrap_or(0);
        let found = self
            .chain
            .authorizations_used(from, head, &[authorizer])
            .await?
            .into_iter()
            .find(|log| log.nonce == nonce);
        Ok(found
            .filter(|log| head.saturating_sub(log.block_number) >= self.confirmations_required())
            .map(|log| Finality::Restored {
                tx_hash: log.tx_hash.to_string(),
                block_number: log.block_number,
                block_hash: log.block_hash.to_string(),
                depth: head.saturating_sub(log.block_number),
            }))
    }

    /// Writes what the finality watch found, with its audit event. Whether it raised an alarm.
    async fn record_finality(
        &self,
        tx: &mut crate::ledger::Tx,
        payment: &PaymentRow,
        finality: &Finality,
        now: Millis,
    ) -> Result<bool> {
        let event = |kind: AuditKind, detail: serde_json::Value| NewEvent {
            agent_id: payment.agent_id.clone(),
            credential_id: payment.credential_id.clone(),
            payment_id: Some(payment.id.clone()),
            actor: "settlement".into(),
            detail,
            tx_hash: payment.tx_hash.clone(),
            ..NewEvent::of(kind)
        };
        match finality {
            Finality::Violated {
                number,
                recorded,
                canonical,
            } => {
                x402_rows::set_chain_fields(tx, &payment.id, None, None, 0, now).await?;
                audit::append(
                    tx,
                    now,
                    event(
                        AuditKind::FinalityViolation,
                        serde_json::json!({"block_number": number, "recorded_block_hash": recorded,
                            "canonical_block_hash": canonical,
                            "confirmations_required": self.confirmations_required(),
                            "action": "watching for the x402 authorization on the canonical chain"}),
                    ),
                )
                .await?;
                tracing::error!(payment_id = %payment.id, "finality violation: a confirmed x402 payment's block was reorganized away");
                Ok(true)
            }
            Finality::Restored {
                tx_hash,
                block_number,
                block_hash,
                depth,
            } => {
                x402_rows::set_chain_fields(
                    tx,
                    &payment.id,
                    Some(tx_hash),
                    Some((i64::try_from(*block_number).unwrap_or(i64::MAX), block_hash)),
                    i64::try_from(*depth).unwrap_or(i64::MAX),
                    now,
                )
                .await?;
                audit::append(
                    tx,
                    now,
                    event(
                        AuditKind::FinalityRestored,
                        serde_json::json!({"block_number": block_number, "block_hash": block_hash,
                            "tx_hash": tx_hash}),
                    ),
                )
                .await?;
                Ok(false)
            }
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The value of `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1): base64 of the payment payload.
fn payment_header(
    offer: &X402Offer,
    authorization: &TransferAuthorization,
    signature: &[u8; 65],
) -> String {
    let payload = serde_json::json!({
        "signature": format!("0x{}", hex::encode(signature)),
        "authorization": {
            "from": authorization.from.to_string(),
            "to": authorization.to.to_string(),
            "value": authorization.value.to_string(),
            "validAfter": authorization.valid_after.to_string(),
            "validBefore": authorization.valid_before.to_string(),
            "nonce": authorization.nonce.to_string(),
        },
    });
    let body = if offer.version == 1 {
        serde_json::json!({
            "x402Version": 1,
            "scheme": "exact",
            "network": offer.requirements.get("network").cloned().unwrap_or_default(),
            "payload": payload,
        })
    } else {
        let mut body = serde_json::json!({
            "x402Version": 2,
            "accepted": offer.requirements,
            "payload": payload,
        });
        if let Some(resource) = &offer.resource_info {
            body["resource"] = resource.clone();
        }
        body
    };
    base64::engine::general_purpose::STANDARD.encode(body.to_string())
}
/// `track_x402` for an authorization no block up to `head` used: once block `head` is past its
/// `validBefore`, no later block can use it, so the payment fails (or, still only authorized, is
/// voided) and its hold is released. Returns whether anything was written.
async fn expire_x402(
    tx: &mut crate::ledger::Tx,
    payment: &PaymentRow,
    authorization: &X402Row,
    head: u64,
    head_time: u64,
    now: crate::ledger::Millis,
) -> Result<bool> {
    let valid_before = authorization.valid_before.unwrap_or(i64::MAX);
    if i64::try_from(head_time).unwrap_or(i64::MAX) <= valid_before {
        return Ok(false);
    }
    let reason = "authorization_expired";
    tx.run_sync(|s| payment_rows::set_failure_reason(s, &payment.id, reason))
        .await?;
    let (next, kind) = if payment.status == PaymentStatus::Authorized {
        (PaymentStatus::Cancelled, AuditKind::PaymentVoided)
    } else {
        (PaymentStatus::Failed, AuditKind::PaymentFailed)
    };
    transition(
        tx,
        payment,
        next,
        kind,
        "settlement".into(),
        serde_json::json!({"reason": reason, "valid_before": valid_before,
            "head": head, "head_timestamp": head_time}),
        now,
    )
    .await?;
    Ok(true)
}
