-- The payments triggers (credential holds, rolling-window buckets) test a status against a list
-- with `=`s instead of `IN (...)`. SQLite evaluates an `IN` over more than two constants by
-- building a temporary b-tree of them, once per run of the program that holds it; a trigger is
-- its own program, so every insert of a payment and every status change built four to six of
-- them, even when the trigger's condition was false. Measured on the same database: a status
-- change 35.8 -> 24.5 us, an insert 47.8 -> 39.3 us. Same conditions, same results.
DROP TRIGGER payments_hold_insert;
CREATE TRIGGER payments_hold_insert AFTER INSERT ON payments
WHEN NEW.credential_id IS NOT NULL AND (NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
BEGIN
    INSERT INTO credential_holds (credential_id, held_total) VALUES (NEW.credential_id, NEW.amount)
    ON CONFLICT (credential_id) DO UPDATE SET held_total = held_total + excluded.held_total;
END;

DROP TRIGGER payments_hold_update;
CREATE TRIGGER payments_hold_update AFTER UPDATE OF status, amount, credential_id ON payments
WHEN ((OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed'))
        != ((NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed'))
  OR OLD.amount != NEW.amount
  OR OLD.credential_id IS NOT NEW.credential_id
BEGIN
    UPDATE credential_holds SET held_total = held_total - OLD.amount
     WHERE credential_id = OLD.credential_id AND (OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    INSERT INTO credential_holds (credential_id, held_total)
    SELECT NEW.credential_id, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND (NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id) DO UPDATE SET held_total = held_total + excluded.held_total;
END;

DROP TRIGGER payments_hold_delete;
CREATE TRIGGER payments_hold_delete AFTER DELETE ON payments
WHEN OLD.credential_id IS NOT NULL AND (OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed')
BEGIN
    UPDATE credential_holds SET held_total = held_total - OLD.amount
     WHERE credential_id = OLD.credential_id;
END;

DROP TRIGGER payments_windows_insert;
CREATE TRIGGER payments_windows_insert AFTER INSERT ON payments
WHEN NEW.credential_id IS NOT NULL
BEGIN
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 3600000, NEW.committed_at - ((NEW.committed_at % 3600000) + 3600000) % 3600000, NEW.amount
     WHERE NEW.committed_at IS NOT NULL AND (NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 60000, NEW.committed_at - ((NEW.committed_at % 60000) + 60000) % 60000, NEW.amount
     WHERE NEW.committed_at IS NOT NULL AND (NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_created_seconds (credential_id, start_ms, payments)
    SELECT NEW.credential_id, NEW.created_at - ((NEW.created_at % 1000) + 1000) % 1000, 1
     WHERE (NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, start_ms) DO UPDATE SET payments = payments + 1;
END;

DROP TRIGGER payments_committed_update;
CREATE TRIGGER payments_committed_update
AFTER UPDATE OF status, amount, credential_id, committed_at ON payments
WHEN ((OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed') AND OLD.committed_at IS NOT NULL)
        != ((NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed') AND NEW.committed_at IS NOT NULL)
  OR OLD.amount != NEW.amount
  OR OLD.credential_id IS NOT NEW.credential_id
  OR OLD.committed_at IS NOT NEW.committed_at
BEGIN
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 3600000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 3600000) + 3600000) % 3600000
       AND (OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 60000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 60000) + 60000) % 60000
       AND (OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 3600000, NEW.committed_at - ((NEW.committed_at % 3600000) + 3600000) % 3600000, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.committed_at IS NOT NULL AND (NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 60000, NEW.committed_at - ((NEW.committed_at % 60000) + 60000) % 60000, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.committed_at IS NOT NULL AND (NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
END;

DROP TRIGGER payments_created_update;
CREATE TRIGGER payments_created_update
AFTER UPDATE OF status, credential_id, created_at ON payments
WHEN ((OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed'))
        != ((NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed'))
  OR OLD.credential_id IS NOT NEW.credential_id
  OR OLD.created_at != NEW.created_at
BEGIN
    UPDATE credential_created_seconds SET payments = payments - 1
     WHERE credential_id = OLD.credential_id
       AND start_ms = OLD.created_at - ((OLD.created_at % 1000) + 1000) % 1000
       AND (OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    INSERT INTO credential_created_seconds (credential_id, start_ms, payments)
    SELECT NEW.credential_id, NEW.created_at - ((NEW.created_at % 1000) + 1000) % 1000, 1
     WHERE NEW.credential_id IS NOT NULL
       AND (NEW.status = 'pending_approval' OR NEW.status = 'authorized' OR NEW.status = 'queued' OR NEW.status = 'submitted' OR NEW.status = 'included' OR NEW.status = 'confirmed')
    ON CONFLICT (credential_id, start_ms) DO UPDATE SET payments = payments + 1;
END;

DROP TRIGGER payments_windows_delete;
CREATE TRIGGER payments_windows_delete AFTER DELETE ON payments
WHEN OLD.credential_id IS NOT NULL
BEGIN
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 3600000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 3600000) + 3600000) % 3600000
       AND (OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 60000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 60000) + 60000) % 60000
       AND (OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
    UPDATE credential_created_seconds SET payments = payments - 1
     WHERE credential_id = OLD.credential_id
       AND start_ms = OLD.created_at - ((OLD.created_at % 1000) + 1000) % 1000
       AND (OLD.status = 'pending_approval' OR OLD.status = 'authorized' OR OLD.status = 'queued' OR OLD.status = 'submitted' OR OLD.status = 'included' OR OLD.status = 'confirmed');
END;
