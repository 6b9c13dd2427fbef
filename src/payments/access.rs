//! Access: who is calling (bearer secrets resolved to a principal, credentials and frozen agents
//! refused) and the staff API tokens admins create and revoke.

use super::*;
use crate::domain::AuditKind;

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

    pub(super) fn check_credential(&self, credential: &CredentialRow) -> Result<()> {
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
