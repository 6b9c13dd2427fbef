-- A transaction's hash is unique per nonce slot, not through an index of hashes alone.
--
-- `tx_hash` was a column-level UNIQUE, whose index is keyed by the hash alone. Hashes are
-- random, so each new transaction went to a random leaf of that index: in a 20,000-payment
-- drain, 19% of the pages each group commit wrote to the log (and copied into its savepoints'
-- journals) were that index's, more than any table but `payments`. Nothing reads a transaction
-- by its hash alone. The hash is kept unique within its wallet's nonce slot instead, by the slot
-- index, which every settlement read of a slot already uses and whose new entries land at the
-- wallet's newest nonce: a hash commits to its sender and nonce, so it cannot recur in another
-- slot. SQLite cannot drop a column's UNIQUE in place, so the table is rebuilt, ids kept (and
-- its AUTOINCREMENT sequence with them, moved by the rename).

CREATE TABLE transactions_v22 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    asset            TEXT NOT NULL CHECK (asset IN ('usdc', 'eth')),
    purpose          TEXT NOT NULL DEFAULT 'transfer' CHECK (purpose IN ('transfer', 'filler')),
    wallet_id        TEXT NOT NULL REFERENCES wallets (id),
    nonce            INTEGER NOT NULL,
    tx_hash          TEXT NOT NULL,
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

INSERT INTO transactions_v22 (id, payment_id, asset, purpose, wallet_id, nonce, tx_hash, raw,
    status, block_number, block_hash, confirmations, broadcast_block, unsendable_since,
    finality_alarm, created_at, updated_at)
SELECT id, payment_id, asset, purpose, wallet_id, nonce, tx_hash, raw,
    status, block_number, block_hash, confirmations, broadcast_block, unsendable_since,
    finality_alarm, created_at, updated_at
FROM transactions ORDER BY id;

DROP TABLE transactions;
ALTER TABLE transactions_v22 RENAME TO transactions;

-- One live transaction per wallet and nonce; replaced and dropped ones are the slot's history.
CREATE UNIQUE INDEX transactions_live_nonce ON transactions (wallet_id, nonce)
    WHERE status NOT IN ('replaced', 'dropped');
-- A slot's transactions, each hash once.
CREATE UNIQUE INDEX transactions_slot ON transactions (wallet_id, nonce, tx_hash);
CREATE INDEX transactions_payment ON transactions (payment_id);
CREATE INDEX transactions_status ON transactions (status);
-- As in 0014.
CREATE INDEX transactions_finality_window ON transactions (block_number, block_hash)
    WHERE status = 'confirmed' AND finality_alarm = 0;
CREATE INDEX transactions_in_pool ON transactions (wallet_id, nonce)
    WHERE status IN ('signed', 'submitted');
