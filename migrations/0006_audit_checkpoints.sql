-- Signed checkpoints of the audit chain's head. Each signature (HMAC-SHA256 under a key derived
-- from the master key, never stored here) covers the head's seq and hash and the previous
-- checkpoint's seq, so a rewrite of the chain with database access alone is detected.
CREATE TABLE audit_checkpoints (
    seq        INTEGER PRIMARY KEY NOT NULL,
    head_hash  TEXT NOT NULL,
    prev_seq   INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    signature  TEXT NOT NULL
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
