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
-- The mapping is one table (checked against `PaymentStatus::budget` by the ledger's tests).
-- Writers set the column on insert; the triggers correct any row whose value does not match its
-- status (a status change that moves the hold, or a writer that left the default), so the column
-- cannot drift from the status it summarizes.
CREATE TABLE payment_status_budgets (
    status TEXT PRIMARY KEY,
    budget INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO payment_status_budgets (status, budget) VALUES
    ('queued', 2), ('submitted', 2), ('included', 2), ('confirmed', 2),
    ('pending_approval', 1), ('authorized', 1),
    ('rejected', 0), ('failed', 0), ('cancelled', 0), ('expired', 0);

ALTER TABLE payments ADD COLUMN budget INTEGER NOT NULL DEFAULT 0;
UPDATE payments
   SET budget = (SELECT budget FROM payment_status_budgets b WHERE b.status = payments.status);

CREATE TRIGGER payments_budget_insert AFTER INSERT ON payments
WHEN NEW.budget != (SELECT budget FROM payment_status_budgets WHERE status = NEW.status)
BEGIN
    UPDATE payments SET budget = (SELECT budget FROM payment_status_budgets WHERE status = NEW.status)
     WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER payments_budget_update AFTER UPDATE OF status, budget ON payments
WHEN NEW.budget != (SELECT budget FROM payment_status_budgets WHERE status = NEW.status)
BEGIN
    UPDATE payments SET budget = (SELECT budget FROM payment_status_budgets WHERE status = NEW.status)
     WHERE rowid = NEW.rowid;
END;

DROP INDEX payments_credential_committed;
CREATE INDEX payments_credential_committed ON payments (credential_id, committed_at, budget, amount);
DROP INDEX payments_credential;
CREATE INDEX payments_credential ON payments (credential_id, created_at, budget);
