//! Access: who is calling (bearer secrets resolved to a principal, credentials and frozen agents
//! refused) and the staff API tokens admins create and revoke.

use super::*;
use crate::domain::{AgentId, AuditKind, CredentialId};

impl Payments {
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
        let Some(holder) = tokens::holder(&self.ledger, &hash)? else {
            return Err(PaymentsError::Unauthenticated);
        };
        let matches = bool::from(subtle::ConstantTimeEq::ct_eq(
            holder.token_hash.as_bytes(),
            hash.as_bytes(),
        ));
        if !matches {
            return Err(PaymentsError::Unauthenticated);
        }
        if holder.kind == "token" {
            let role = holder
                .role
                .as_deref()
                .and_then(Role::parse)
                .ok_or(PaymentsError::Unauthenticated)?;
            if holder.revoked_at.is_some() {
                return Err(PaymentsError::Unauthenticated);
            }
            return Ok(Principal::Staff {
                role,
                token_id: Some(holder.id),
            });
        }
        let (Some(agent_id), Some(status), Some(agent_status)) =
            (holder.agent_id, holder.status, holder.agent_status)
        else {
            return Err(PaymentsError::Unauthenticated);
        };
        self.check_credential_state(&status, holder.expires_at)?;
        if agent_status != "active" {
            return Err(PaymentsError::AgentFrozen);
        }
        Ok(Principal::Agent {
            agent_id: AgentId::from_text(&agent_id),
            credential_id: CredentialId::from_text(&holder.id),
        })
    }

    pub(super) fn check_credential(&self, credential: &CredentialRow) -> Result<()> {
        self.check_credential_state(&credential.status, credential.expires_at)
    }

    fn check_credential_state(&self, status: &str, expires_at: Option<Millis>) -> Result<()> {
        let expired = expires_at.is_some_and(|at| at <= self.now());
        if status != "active" || expired {
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
                actor: actor.actor(),
                detail: serde_json::json!({"token_id": row.id, "role": row.role, "name": row.name}),
                ..NewEvent::of(AuditKind::TokenCreated)
            },
        )
        .await?;
        tx.commit().await?;
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
                actor: actor.actor(),
                detail: serde_json::json!({"token_id": id}),
                ..NewEvent::of(AuditKind::TokenRevoked)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
