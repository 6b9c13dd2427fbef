-- When money was committed, for rolling windows, and when a hold started, for its expiry.
-- committed_at: creation for an allowed automatic payment, the approval for an approved one, the
-- capture for a manual hold (NULL while only held: a live hold always counts).
-- held_since: when the current wait for a human or a capture began (NULL: since creation).
ALTER TABLE payments ADD COLUMN committed_at INTEGER;
ALTER TABLE payments ADD COLUMN held_since INTEGER;
UPDATE payments SET committed_at = created_at
    WHERE status IN ('queued', 'submitted', 'included', 'confirmed');
CREATE INDEX payments_credential_committed ON payments (credential_id, committed_at);
