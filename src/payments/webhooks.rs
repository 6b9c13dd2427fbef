//! Registering webhook endpoints and replaying failed deliveries (admin). Delivery itself is the
//! `webhooks` worker's.

use super::{Payments, PaymentsError, Principal, Result};
use crate::domain::AuditKind;
use crate::domain::{new_id, new_secret_token};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::webhooks::{self, DeliveryRow, EndpointRow};

impl Payments {
    /// Registers `url` for `events`; returns the endpoint with its signing secret (shown once).
    pub async fn create_webhook(
        &self,
        actor: &Principal,
        url: &str,
        events: &[String],
    ) -> Result<EndpointRow> {
        if events.is_empty()
            || events
                .iter()
                .any(|e| !webhooks::EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(PaymentsError::Invalid {
                field: "events".into(),
                message: format!(
                    "must list one or more of {}",
                    webhooks::EVENT_TYPES.join(", ")
                ),
            });
        }
        let now = self.now();
        let row = EndpointRow {
            id: new_id("whk"),
            url: url.into(),
            secret: new_secret_token("whsec"),
            events: serde_json::to_string(events).expect("strings serialize"),
            status: "active".into(),
            created_at: now,
        };
        let mut tx = self.ledger.begin().await?;
        webhooks::insert_endpoint(&mut tx, &row).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: actor.actor(),
                detail: serde_json::json!({"webhook_id": row.id, "url": url, "events": events}),
                ..NewEvent::of(AuditKind::WebhookCreated)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn disable_webhook(&self, actor: &Principal, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        webhooks::disable_endpoint(&mut tx, id).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: actor.actor(),
                detail: serde_json::json!({"webhook_id": id}),
                ..NewEvent::of(AuditKind::WebhookDisabled)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends a failed delivery again (same event id, so receivers can still deduplicate).
    pub async fn replay_delivery(&self, actor: &Principal, id: &str) -> Result<DeliveryRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let row = webhooks::replay(&mut tx, id, now).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: actor.actor(),
                detail: serde_json::json!({"delivery_id": id, "webhook_id": row.endpoint_id}),
                ..NewEvent::of(AuditKind::WebhookReplayed)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}
