-- x402 payments: an agent's payment whose transfer a seller (through its facilitator) executes
-- with an EIP-3009 `transferWithAuthorization` that custody signed. The payment row keeps
-- kind 'payment' (every role rule of agent payments applies) and is marked by `protocol`.
ALTER TABLE payments ADD COLUMN protocol TEXT CHECK (protocol IS NULL OR protocol = 'x402');

-- One row per x402 payment, written with the payment in the same transaction. The signature
-- columns stay NULL until custody signs (after the policy allowed it, or a human approved it);
-- once set they never change: the same idempotency key never signs a second authorization.
CREATE TABLE x402_authorizations (
    payment_id     TEXT PRIMARY KEY NOT NULL REFERENCES payments (id),
    resource       TEXT NOT NULL,
    x402_version   INTEGER NOT NULL CHECK (x402_version IN (1, 2)),
    requirements   TEXT NOT NULL,
    resource_info  TEXT,
    authorizer     TEXT NOT NULL,
    nonce          TEXT UNIQUE,
    valid_after    INTEGER,
    valid_before   INTEGER,
    header_value   TEXT,
    signed_at_block INTEGER,
    seller_tx_hash TEXT,
    -- The seller's answer to the paid request (status, headers, body), returned to a replay.
    seller_response TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX x402_authorizations_open ON x402_authorizations (valid_before) WHERE nonce IS NOT NULL;
