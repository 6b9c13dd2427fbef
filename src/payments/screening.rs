//! Recipient screening: addresses no payment may go to, checked before anything is stored. The
//! zero address (tokens burn or refuse it), the token contract itself (tokens sent there are
//! lost), the paying wallet itself, and the operator deny list an admin manages.

use super::{Payments, PaymentsError, Principal, Result};
use crate::domain::Address;
use crate::domain::AuditKind;
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::deny_list::{self, DeniedAddress};
use crate::ledger::{Page, SyncTx};

/// Longest reason kept for a deny-list entry.
pub const MAX_REASON_CHARS: usize = 500;

impl Payments {
    /// Refuses (`400` naming `to`) a recipient no payment may go to.
    pub(super) fn screen_recipient(
        &self,
        tx: &mut SyncTx<'_>,
        from: Address,
        to: Address,
    ) -> Result<()> {
        let refusal = if to == Address::ZERO {
            Some("must not be the zero address")
        } else if to == self.chain.usdc_address() {
            Some("must not be the USDC contract itself (the tokens would be lost)")
        } else if to == from {
            Some("must not be the paying agent's own wallet")
        } else if deny_list::contains(tx, to)? {
            Some("is on the operator's deny list")
        } else {
            None
        };
        match refusal {
            Some(message) => Err(PaymentsError::Invalid {
                field: "to".into(),
                message: message.into(),
            }),
            None => Ok(()),
        }
    }

    /// Adds an address to the deny list (admin), audited; returns whether it was new.
    pub async fn deny_address(
        &self,
        actor: &Principal,
        address: Address,
        reason: &str,
    ) -> Result<bool> {
        if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(PaymentsError::Invalid {
                field: "reason".into(),
                message: format!("must be 1 to {MAX_REASON_CHARS} characters"),
            });
        }
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let entry = DeniedAddress {
            address: address.to_string(),
            reason: reason.into(),
            created_by: actor.actor(),
            created_at: now,
        };
        let new = deny_list::upsert(&mut tx, &entry).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: actor.actor(),
                detail: serde_json::json!({"address": entry.address, "reason": reason}),
                ..NewEvent::of(AuditKind::AddressDenied)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Removes an address from the deny list (admin), audited.
    pub async fn allow_address(&self, actor: &Principal, address: Address) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        deny_list::remove(&mut tx, address).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: actor.actor(),
                detail: serde_json::json!({"address": address.to_string()}),
                ..NewEvent::of(AuditKind::AddressAllowed)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn denied_addresses(&self, page: &Page) -> Result<Vec<DeniedAddress>> {
        Ok(deny_list::list(self.ledger.pool(), page).await?)
    }
}
