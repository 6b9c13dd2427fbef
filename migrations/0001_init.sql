-- Bursar's first schema. Never edit this file once it has landed: add a new migration instead.
-- Times are INTEGER milliseconds since the Unix epoch (UTC); money is INTEGER micro-USDC.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Every custodied wallet. The private key is sealed with XChaCha20-Poly1305 under the master key;
-- the plaintext never touches the database.
CREATE TABLE wallets (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('treasury', 'agent')),
    address       TEXT NOT NULL UNIQUE,
    sealed_key    BLOB NOT NULL,
    seal_nonce    BLOB NOT NULL,
    -- The next nonce this wallet will use; NULL until the wallet first sends, when it is read
    -- from the chain once and from then on owned by Bursar.
    next_nonce    INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX wallets_one_treasury ON wallets (kind) WHERE kind = 'treasury';

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'treasury', 'approver', 'auditor')),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE agents (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    wallet_id   TEXT NOT NULL UNIQUE REFERENCES wallets (id),
    status      TEXT NOT NULL CHECK (status IN ('active', 'frozen')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    agent_id    TEXT NOT NULL REFERENCES agents (id),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    policy      TEXT NOT NULL,
    expires_at  INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX credentials_agent ON credentials (agent_id);

-- A payment is the intent; its rows in `transactions` are what goes on chain.
CREATE TABLE payments (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('payment', 'funding', 'sweep')),
    agent_id         TEXT REFERENCES agents (id),
    credential_id    TEXT REFERENCES credentials (id),
    from_wallet_id   TEXT NOT NULL REFERENCES wallets (id),
    to_address       TEXT NOT NULL,
    amount           INTEGER NOT NULL CHECK (amount >= 0),
    gas_wei          TEXT,
    currency         TEXT NOT NULL,
    memo             TEXT,
    reference        TEXT,
    metadata         TEXT,
    confidence       REAL,
    capture          TEXT NOT NULL CHECK (capture IN ('automatic', 'manual')),
    status           TEXT NOT NULL,
    decision         TEXT,
    failure_reason   TEXT,
    -- The payment's current USDC transaction (its full history is in `transactions`).
    tx_hash          TEXT,
    nonce            INTEGER,
    block_number     INTEGER,
    block_hash       TEXT,
    confirmations    INTEGER NOT NULL DEFAULT 0,
    -- Idempotency: the key is unique within its scope (an agent, or the treasury), and the hash
    -- of the canonical request body tells a replay from a reuse.
    idempotency_scope TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX payments_status ON payments (status, created_at);
CREATE INDEX payments_agent ON payments (agent_id, created_at);
CREATE INDEX payments_credential ON payments (credential_id, created_at);

CREATE TABLE transactions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    asset          TEXT NOT NULL CHECK (asset IN ('usdc', 'eth')),
    wallet_id      TEXT NOT NULL REFERENCES wallets (id),
    nonce          INTEGER NOT NULL,
    tx_hash        TEXT NOT NULL UNIQUE,
    raw            BLOB NOT NULL,
    -- 'replaced': superseded by a transaction with the same nonce and higher fees (stuck or
    -- underpriced); kept as history, and still watched in case it is the one that gets mined.
    status         TEXT NOT NULL CHECK (status IN ('signed', 'submitted', 'included', 'confirmed', 'failed', 'replaced')),
    block_number   INTEGER,
    block_hash     TEXT,
    confirmations  INTEGER NOT NULL DEFAULT 0,
    -- The block at which it was last (re)broadcast, to tell when it is stuck.
    broadcast_block INTEGER,
    -- Set once a finality violation (a reorg deeper than the confirmation depth) was raised for it.
    finality_alarm INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
-- One live transaction per wallet and nonce; replaced ones are history.
CREATE UNIQUE INDEX transactions_live_nonce ON transactions (wallet_id, nonce) WHERE status != 'replaced';
CREATE INDEX transactions_payment ON transactions (payment_id);
CREATE INDEX transactions_status ON transactions (status);

-- Append-only and hash-chained: each hash covers the previous hash and the event itself.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    agent_id       TEXT,
    credential_id  TEXT,
    payment_id     TEXT,
    actor          TEXT NOT NULL,
    detail         TEXT NOT NULL,
    tx_hash        TEXT,
    block_number   INTEGER,
    block_hash     TEXT,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_agent ON audit_events (agent_id, seq);
CREATE INDEX audit_payment ON audit_events (payment_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
