-- Spending scopes: one task's mandate inside a credential (budget, phases, tiers, allowlist).
CREATE TABLE scopes (
    id              TEXT PRIMARY KEY NOT NULL,
    credential_id   TEXT NOT NULL REFERENCES credentials (id),
    agent_id        TEXT NOT NULL REFERENCES agents (id),
    name            TEXT NOT NULL,
    task_ref        TEXT,
    budget          INTEGER NOT NULL CHECK (budget >= 0),
    expires_at      INTEGER,
    allowed_recipients TEXT,
    -- The phases in order, as JSON: [[name, {"max_per_payment", "budget"}], ...].
    phases          TEXT NOT NULL,
    phase           TEXT NOT NULL,
    phase_change_requires_approval INTEGER NOT NULL CHECK (phase_change_requires_approval IN (0, 1)),
    pending_phase   TEXT,
    tiers           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'closed_succeeded', 'closed_failed', 'expired')),
    close_reason    TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    closed_at       INTEGER
);
CREATE INDEX scopes_credential ON scopes (credential_id, created_at);
CREATE INDEX scopes_open_expiry ON scopes (expires_at) WHERE status = 'open';

-- A payment made inside a scope, the phase it was decided in and its tier (index).
ALTER TABLE payments ADD COLUMN scope_id TEXT REFERENCES scopes (id);
ALTER TABLE payments ADD COLUMN scope_phase TEXT;
ALTER TABLE payments ADD COLUMN scope_tier INTEGER;
-- The tier of the credential's own policy (`tiers`) a payment fell in.
ALTER TABLE payments ADD COLUMN credential_tier INTEGER;
CREATE INDEX payments_scope ON payments (scope_id, status) WHERE scope_id IS NOT NULL;
CREATE INDEX payments_credential_tier ON payments (credential_id, credential_tier, created_at)
    WHERE credential_tier IS NOT NULL;

-- A scope's own audit events name it in their detail; the trace reads them by this index.
CREATE INDEX audit_scope ON audit_events (json_extract(detail, '$.scope_id'))
    WHERE json_extract(detail, '$.scope_id') IS NOT NULL;
