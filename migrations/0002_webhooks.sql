-- Webhooks: endpoints registered by admins, and one delivery row per event per endpoint, written
-- in the same transaction as the state change it reports (so no event is lost on a crash).

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    -- The HMAC-SHA256 signing secret, shared with the receiver when the endpoint is created.
    secret      TEXT NOT NULL,
    -- JSON array of event types: "payment.status_changed", "audit.alarm".
    events      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY NOT NULL,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_type       TEXT NOT NULL,
    data             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
