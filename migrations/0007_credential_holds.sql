-- What each credential holds over its life, kept by triggers in the same transaction as every
-- payment write: the lifetime-budget check reads one row instead of summing every payment the
-- credential ever made, so its cost does not grow with the history. The statuses listed are the
-- ones that hold budget (PaymentStatus::HOLDING_SQL, checked by a unit test).
CREATE TABLE credential_holds (
    credential_id TEXT PRIMARY KEY NOT NULL,
    held_total    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO credential_holds (credential_id, held_total)
SELECT credential_id, SUM(amount) FROM payments
 WHERE credential_id IS NOT NULL AND status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
 GROUP BY credential_id;

CREATE TRIGGER payments_hold_insert AFTER INSERT ON payments
WHEN NEW.credential_id IS NOT NULL AND NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
BEGIN
    INSERT INTO credential_holds (credential_id, held_total) VALUES (NEW.credential_id, NEW.amount)
    ON CONFLICT (credential_id) DO UPDATE SET held_total = held_total + excluded.held_total;
END;

CREATE TRIGGER payments_hold_update AFTER UPDATE OF status, amount, credential_id ON payments
BEGIN
    UPDATE credential_holds SET held_total = held_total - OLD.amount
     WHERE credential_id = OLD.credential_id AND OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed');
    INSERT INTO credential_holds (credential_id, held_total)
    SELECT NEW.credential_id, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
    ON CONFLICT (credential_id) DO UPDATE SET held_total = held_total + excluded.held_total;
END;

CREATE TRIGGER payments_hold_delete AFTER DELETE ON payments
WHEN OLD.credential_id IS NOT NULL AND OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
BEGIN
    UPDATE credential_holds SET held_total = held_total - OLD.amount
     WHERE credential_id = OLD.credential_id;
END;

-- Live holds (awaiting a human or a capture) of a credential, found without a scan.
CREATE INDEX payments_credential_status ON payments (credential_id, status);
