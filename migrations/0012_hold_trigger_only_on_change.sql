-- The lifetime-hold trigger fired on every status change, and settlement changes a payment's
-- status three or four times (queued, submitted, included, confirmed) without changing whether
-- it holds budget. It now runs only when the held amount can change: the payment starts or stops
-- holding, or its amount or credential changes. Same arithmetic as migration 0007.
DROP TRIGGER payments_hold_update;

CREATE TRIGGER payments_hold_update AFTER UPDATE OF status, amount, credential_id ON payments
WHEN (OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed'))
        != (NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed'))
  OR OLD.amount != NEW.amount
  OR OLD.credential_id IS NOT NEW.credential_id
BEGIN
    UPDATE credential_holds SET held_total = held_total - OLD.amount
     WHERE credential_id = OLD.credential_id AND OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed');
    INSERT INTO credential_holds (credential_id, held_total)
    SELECT NEW.credential_id, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
    ON CONFLICT (credential_id) DO UPDATE SET held_total = held_total + excluded.held_total;
END;
