//! Webhook delivery: a worker of its own that sends queued deliveries, at least once, with
//! retries and exponential backoff. Each request carries the event id (for deduplication) and an
//! HMAC-SHA256 signature over a timestamp and the exact body:
//!
//! ```text
//! Bursar-Event-Id: evt_...
//! Bursar-Event-Type: payment.status_changed
//! Bursar-Signature: t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>
//! ```
//!
//! Receivers recompute the HMAC with their secret, compare in constant time and refuse old
//! timestamps. Delivery never blocks settlement: events are rows written with the state change,
//! and this worker, a loop of its own, only reads and updates those rows. Built by
//! `Payments::deliverer`, since it writes delivery state like every other use case.

use super::Clock;
use crate::ledger::webhooks::{self, DeliveryRow, EndpointRow};
use crate::ledger::{Ledger, LedgerError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Attempts before a delivery is marked failed (it can then be replayed).
pub const MAX_ATTEMPTS: i64 = 10;
/// Deliveries sent per pass.
const BATCH: i64 = 50;
/// How long one request to a receiver may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry waits this long; each later one twice as long, up to `MAX_BACKOFF_MS`.
pub const FIRST_BACKOFF_MS: i64 = 2_000;
const MAX_BACKOFF_MS: i64 = 60 * 60 * 1000;

/// The signature header's value for `body` sent at `timestamp_secs`.
pub fn signature(secret: &str, timestamp_secs: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp_secs}.{body}").as_bytes());
    format!(
        "t={timestamp_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The request body of a delivery; the same bytes on every attempt.
pub fn body(delivery: &DeliveryRow) -> String {
    let data: serde_json::Value =
        serde_json::from_str(&delivery.data).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": delivery.id,
        "type": delivery.event_type,
        "created_at": crate::domain::format_time(delivery.created_at),
        "data": data,
    })
    .to_string()
}

/// The wait before attempt `attempts + 1`.
pub fn backoff_ms(attempts: i64) -> i64 {
    FIRST_BACKOFF_MS
        .saturating_mul(1i64 << attempts.clamp(0, 30))
        .min(MAX_BACKOFF_MS)
}

#[derive(Clone)]
pub struct Deliverer {
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl Deliverer {
    pub(super) fn new(ledger: Ledger, clock: Arc<dyn Clock>) -> Deliverer {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        Deliverer {
            ledger,
            clock,
            http,
        }
    }

    /// Sends every delivery that is due; returns how many were delivered.
    pub async fn deliver_once(&self) -> Result<usize, LedgerError> {
        let mut delivered = 0;
        for (delivery, endpoint) in
            webhooks::due(self.ledger.pool(), self.clock.now_ms(), BATCH).await?
        {
            if self.attempt(&delivery, &endpoint).await? {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    async fn attempt(
        &self,
        delivery: &DeliveryRow,
        endpoint: &EndpointRow,
    ) -> Result<bool, LedgerError> {
        let now = self.clock.now_ms();
        let body = body(delivery);
        let result = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("bursar-event-id", &delivery.id)
            .header("bursar-event-type", &delivery.event_type)
            .header(
                "bursar-signature",
                signature(&endpoint.secret, now / 1000, &body),
            )
            .body(body)
            .send()
            .await;
        let (http_status, error) = match result {
            Ok(response) if response.status().is_success() => {
                let mut tx = self.ledger.begin().await?;
                webhooks::record_attempt(
                    &mut tx,
                    &delivery.id,
                    "delivered",
                    Some(i64::from(response.status().as_u16())),
                    None,
                    now,
                    now,
                )
                .await?;
                tx.commit_unaudited("a webhook delivery attempt").await?;
                return Ok(true);
            }
            Ok(response) => (
                Some(i64::from(response.status().as_u16())),
                format!("receiver answered {}", response.status()),
            ),
            // Only the kind of failure is kept: the receiver's own text could be anything.
            Err(error) if error.is_timeout() => (None, "timed out".to_string()),
            Err(error) if error.is_connect() => (None, "could not connect".to_string()),
            Err(_) => (None, "request failed".to_string()),
        };
        let attempts = delivery.attempts + 1;
        let (status, next) = if attempts >= MAX_ATTEMPTS {
            ("failed", now)
        } else {
            ("pending", now + backoff_ms(delivery.attempts))
        };
        tracing::warn!(delivery_id = %delivery.id, attempts, error, "webhook delivery failed");
        let mut tx = self.ledger.begin().await?;
        webhooks::record_attempt(
            &mut tx,
            &delivery.id,
            status,
            http_status,
            Some(&error),
            next,
            now,
        )
        .await?;
        tx.commit_unaudited("a webhook delivery attempt").await?;
        Ok(false)
    }

    /// Runs delivery passes every `poll_interval` until `shutdown` changes.
    pub async fn run(
        &self,
        poll_interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(poll_interval) => {}
            }
            if let Err(error) = self.deliver_once().await {
                tracing::warn!(%error, "webhook delivery pass failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // HMAC-SHA256 with key "secret" over "1700000000.{}", computed with Python's hmac module.
        let expected = "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163";
        assert_eq!(
            signature("secret", 1_700_000_000, "{}"),
            format!("t=1700000000,v1={expected}")
        );
        assert_ne!(
            signature("secret", 1_700_000_001, "{}"),
            signature("secret", 1_700_000_000, "{}")
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(0), 2_000);
        assert_eq!(backoff_ms(1), 4_000);
        assert_eq!(backoff_ms(5), 64_000);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
    }
}
