-- Settlement that never sticks: every nonce slot resolves, every wait is named.
--
-- `transactions` is rebuilt because SQLite cannot change a CHECK constraint in place:
-- * status 'dropped': a transaction that can never execute because another transaction (a
--   foreign one, or the winner of its slot) used its nonce, or that was withdrawn unsent;
-- * purpose 'filler': a zero-value self-transfer that takes a nonce slot Bursar gave up, so the
--   original can never execute and later nonces are not blocked;
-- * unsendable_since: the head at which the node first refused the transaction while its nonce
--   was still open (NULL while the node accepts it).

CREATE TABLE transactions_v3 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    asset            TEXT NOT NULL CHECK (asset IN ('usdc', 'eth')),
    purpose          TEXT NOT NULL DEFAULT 'transfer' CHECK (purpose IN ('transfer', 'filler')),
    wallet_id        TEXT NOT NULL REFERENCES wallets (id),
    nonce            INTEGER NOT NULL,
    tx_hash          TEXT NOT NULL UNIQUE,
    raw              BLOB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('signed', 'submitted', 'included', 'confirmed', 'failed', 'replaced', 'dropped')),
    block_number     INTEGER,
    block_hash       TEXT,
    confirmations    INTEGER NOT NULL DEFAULT 0,
    broadcast_block  INTEGER,
    unsendable_since INTEGER,
    finality_alarm   INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

INSERT INTO transactions_v3 (id, payment_id, asset, purpose, wallet_id, nonce, tx_hash, raw, status,
    block_number, block_hash, confirmations, broadcast_block, unsendable_since, finality_alarm,
    created_at, updated_at)
SELECT id, payment_id, asset, 'transfer', wallet_id, nonce, tx_hash, raw, status,
    block_number, block_hash, confirmations, broadcast_block, NULL, finality_alarm,
    created_at, updated_at
FROM transactions;

DROP TABLE transactions;
ALTER TABLE transactions_v3 RENAME TO transactions;

-- One live transaction per wallet and nonce; replaced and dropped ones are the slot's history.
CREATE UNIQUE INDEX transactions_live_nonce ON transactions (wallet_id, nonce)
    WHERE status NOT IN ('replaced', 'dropped');
CREATE INDEX transactions_slot ON transactions (wallet_id, nonce);
CREATE INDEX transactions_payment ON transactions (payment_id);
CREATE INDEX transactions_status ON transactions (status);

-- Why a payment that is not final is not moving (NULL when nothing holds it up).
ALTER TABLE payments ADD COLUMN waiting_reason TEXT;
-- JSON array of {block_number, block_hash}: blocks that held this payment's transaction at the
-- required depth and later left the canonical chain (a reorg deeper than the confirmations).
ALTER TABLE payments ADD COLUMN orphaned_blocks TEXT;
