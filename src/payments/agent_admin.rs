//! Agents and their credentials: custody generates each agent's wallet; a credential carries a
//! policy and is revoked (cancelling its live holds) at once.

use super::*;
use crate::domain::AuditKind;

impl Payments {
    /// Creates an agent with a fresh custodied wallet.
    pub async fn create_agent(&self, actor: &Principal, name: &str) -> Result<agents::AgentRow> {
        let key = self.custody.generate_wallet()?;
        let wallet_id = new_id("wal");
        let agent_id = AgentId::generate();
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
                agent_id: Some(agent_id.clone()),
                actor: actor.actor(),
                detail: serde_json::json!({"name": name, "address": key.address.to_string()}),
                ..NewEvent::of(AuditKind::AgentCreated)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(agents::get(self.ledger.pool(), &agent_id).await?)
    }

    /// Agents with their on-chain balances, read for the whole page in one round trip to the
    /// node. A node that does not answer leaves the balances out (`None`) rather than failing
    /// the read.
    pub async fn agent_views(&self, agents: Vec<agents::AgentRow>) -> Result<Vec<AgentView>> {
        let mut addresses = Vec::with_capacity(agents.len());
        for agent in &agents {
            addresses.push(agent.address);
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
                eth_wei: eth_wei.map(crate::domain::Wei::from_u256),
                spent_24h: Amount::from_sql(spent),
                agent,
            });
        }
        Ok(views)
    }

    pub async fn create_credential(
        &self,
        actor: &Principal,
        agent_id: &AgentId,
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
            id: CredentialId::generate(),
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
            agent_id: Some(agent_id.into()),
            credential_id: Some(row.id.clone()),
            actor: actor.actor(),
            detail: serde_json::json!({"name": name, "policy": policy, "expires_at": expires_at}),
            ..NewEvent::of(AuditKind::CredentialCreated)
        })
        .await?;
        tx.commit().await?;
        Ok((row, secret))
    }

    /// Revokes a credential at once; its live holds (`pending_approval`, `authorized`) are
    /// cancelled in the same transaction, releasing their budget.
    pub async fn revoke_credential(&self, actor: &Principal, id: &CredentialId) -> Result<()> {
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
                agent_id: Some(credential.agent_id),
                credential_id: Some(id.into()),
                actor: actor.actor(),
                detail: serde_json::json!({"cancelled_payments": cancelled}),
                ..NewEvent::of(AuditKind::CredentialRevoked)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
