-- What a payment holds of its credential's budget, kept beside its status: 2 while it commits
-- money (queued, submitted, included, confirmed), 1 while it is a live hold (pending approval,
-- authorized), 0 once it released its hold (rejected, failed, cancelled, expired).
--
-- The policy's edge windows (the day's edge minute by commitment time, the minute's edge second
-- by creation time) read covering indexes that carried the status itself, so each step of
-- settlement (queued, submitted, included, confirmed) rewrote an entry in both, besides the one in
-- `payments_status`. Settlement's steps never change what a payment holds: keyed by this column
-- instead, those two indexes change only when a payment is approved or releases its hold.
--
-- Writers set it on insert; the triggers correct any row whose value does not match its status
-- (a status change that moves the hold, or a writer that left the default), so the column cannot
-- drift from the status it summarizes. Their conditions use CASE, not IN lists (see 0016).
ALTER TABLE payments ADD COLUMN budget INTEGER NOT NULL DEFAULT 0;

UPDATE payments SET budget = CASE status
    WHEN 'queued' THEN 2 WHEN 'submitted' THEN 2 WHEN 'included' THEN 2 WHEN 'confirmed' THEN 2
    WHEN 'pending_approval' THEN 1 WHEN 'authorized' THEN 1 ELSE 0 END;

CREATE TRIGGER payments_budget_insert AFTER INSERT ON payments
WHEN NEW.budget != (CASE NEW.status
    WHEN 'queued' THEN 2 WHEN 'submitted' THEN 2 WHEN 'included' THEN 2 WHEN 'confirmed' THEN 2
    WHEN 'pending_approval' THEN 1 WHEN 'authorized' THEN 1 ELSE 0 END)
BEGIN
    UPDATE payments SET budget = (CASE NEW.status
        WHEN 'queued' THEN 2 WHEN 'submitted' THEN 2 WHEN 'included' THEN 2 WHEN 'confirmed' THEN 2
        WHEN 'pending_approval' THEN 1 WHEN 'authorized' THEN 1 ELSE 0 END)
     WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER payments_budget_update AFTER UPDATE OF status, budget ON payments
WHEN NEW.budget != (CASE NEW.status
    WHEN 'queued' THEN 2 WHEN 'submitted' THEN 2 WHEN 'included' THEN 2 WHEN 'confirmed' THEN 2
    WHEN 'pending_approval' THEN 1 WHEN 'authorized' THEN 1 ELSE 0 END)
BEGIN
    UPDATE payments SET budget = (CASE NEW.status
        WHEN 'queued' THEN 2 WHEN 'submitted' THEN 2 WHEN 'included' THEN 2 WHEN 'confirmed' THEN 2
        WHEN 'pending_approval' THEN 1 WHEN 'authorized' THEN 1 ELSE 0 END)
     WHERE rowid = NEW.rowid;
END;

DROP INDEX payments_credential_committed;
CREATE INDEX payments_credential_committed ON payments (credential_id, committed_at, budget, amount);
DROP INDEX payments_credential;
CREATE INDEX payments_credential ON payments (credential_id, created_at, budget);
