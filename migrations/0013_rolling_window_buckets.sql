-- The policy's rolling windows read bucketed totals kept by triggers, so that a check reads a
-- bounded number of rows whatever the credential's load: before, the day's committed money and
-- the last minute's count each read an index range as long as the credential's payments in the
-- window (hundreds of rows per accept for an agent paying per API call).
--
-- The 24-hour window sums the money committed (`committed_at`) by payments that hold budget and
-- are not live holds (queued, submitted, included, confirmed). It is kept per hour and per
-- minute: a check reads at most 24 hour buckets, at most 60 minute buckets before the first
-- whole hour, and the payments of the one minute at the window's edge.
CREATE TABLE credential_committed_buckets (
    credential_id TEXT NOT NULL,
    span_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (credential_id, span_ms, start_ms)
) WITHOUT ROWID;

-- The one-minute window counts the payments created (`created_at`) that hold budget, per second:
-- a check reads at most 60 second buckets and the payments of the one second at the edge.
CREATE TABLE credential_created_seconds (
    credential_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    payments INTEGER NOT NULL,
    PRIMARY KEY (credential_id, start_ms)
) WITHOUT ROWID;

-- Bucket starts are floored (not truncated towards zero) so that they agree with the reader's
-- arithmetic for any time: start = t - ((t % span) + span) % span.

CREATE TRIGGER payments_windows_insert AFTER INSERT ON payments
WHEN NEW.credential_id IS NOT NULL
BEGIN
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 3600000, NEW.committed_at - ((NEW.committed_at % 3600000) + 3600000) % 3600000, NEW.amount
     WHERE NEW.committed_at IS NOT NULL AND NEW.status IN ('queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 60000, NEW.committed_at - ((NEW.committed_at % 60000) + 60000) % 60000, NEW.amount
     WHERE NEW.committed_at IS NOT NULL AND NEW.status IN ('queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_created_seconds (credential_id, start_ms, payments)
    SELECT NEW.credential_id, NEW.created_at - ((NEW.created_at % 1000) + 1000) % 1000, 1
     WHERE NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, start_ms) DO UPDATE SET payments = payments + 1;
END;

-- Settlement moves a payment through queued, submitted, included and confirmed without changing
-- what it counts: these run only when a payment's share of a window can change.
CREATE TRIGGER payments_committed_update
AFTER UPDATE OF status, amount, credential_id, committed_at ON payments
WHEN (OLD.status IN ('queued','submitted','included','confirmed') AND OLD.committed_at IS NOT NULL)
        != (NEW.status IN ('queued','submitted','included','confirmed') AND NEW.committed_at IS NOT NULL)
  OR OLD.amount != NEW.amount
  OR OLD.credential_id IS NOT NEW.credential_id
  OR OLD.committed_at IS NOT NEW.committed_at
BEGIN
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 3600000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 3600000) + 3600000) % 3600000
       AND OLD.status IN ('queued','submitted','included','confirmed');
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 60000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 60000) + 60000) % 60000
       AND OLD.status IN ('queued','submitted','included','confirmed');
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 3600000, NEW.committed_at - ((NEW.committed_at % 3600000) + 3600000) % 3600000, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.committed_at IS NOT NULL AND NEW.status IN ('queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
    SELECT NEW.credential_id, 60000, NEW.committed_at - ((NEW.committed_at % 60000) + 60000) % 60000, NEW.amount
     WHERE NEW.credential_id IS NOT NULL AND NEW.committed_at IS NOT NULL AND NEW.status IN ('queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, span_ms, start_ms) DO UPDATE SET amount = amount + excluded.amount;
END;

CREATE TRIGGER payments_created_update
AFTER UPDATE OF status, credential_id, created_at ON payments
WHEN (OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed'))
        != (NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed'))
  OR OLD.credential_id IS NOT NEW.credential_id
  OR OLD.created_at != NEW.created_at
BEGIN
    UPDATE credential_created_seconds SET payments = payments - 1
     WHERE credential_id = OLD.credential_id
       AND start_ms = OLD.created_at - ((OLD.created_at % 1000) + 1000) % 1000
       AND OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed');
    INSERT INTO credential_created_seconds (credential_id, start_ms, payments)
    SELECT NEW.credential_id, NEW.created_at - ((NEW.created_at % 1000) + 1000) % 1000, 1
     WHERE NEW.credential_id IS NOT NULL
       AND NEW.status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
    ON CONFLICT (credential_id, start_ms) DO UPDATE SET payments = payments + 1;
END;

CREATE TRIGGER payments_windows_delete AFTER DELETE ON payments
WHEN OLD.credential_id IS NOT NULL
BEGIN
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 3600000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 3600000) + 3600000) % 3600000
       AND OLD.status IN ('queued','submitted','included','confirmed');
    UPDATE credential_committed_buckets SET amount = amount - OLD.amount
     WHERE credential_id = OLD.credential_id AND span_ms = 60000
       AND start_ms = OLD.committed_at - ((OLD.committed_at % 60000) + 60000) % 60000
       AND OLD.status IN ('queued','submitted','included','confirmed');
    UPDATE credential_created_seconds SET payments = payments - 1
     WHERE credential_id = OLD.credential_id
       AND start_ms = OLD.created_at - ((OLD.created_at % 1000) + 1000) % 1000
       AND OLD.status IN ('pending_approval','authorized','queued','submitted','included','confirmed');
END;

-- What is stored already, so the windows are right from the first check after the upgrade.
INSERT INTO credential_committed_buckets (credential_id, span_ms, start_ms, amount)
SELECT p.credential_id, span.ms, p.committed_at - ((p.committed_at % span.ms) + span.ms) % span.ms, SUM(p.amount)
  FROM payments p, (SELECT 3600000 AS ms UNION ALL SELECT 60000) AS span
 WHERE p.credential_id IS NOT NULL AND p.committed_at IS NOT NULL
   AND p.status IN ('queued','submitted','included','confirmed')
 GROUP BY 1, 2, 3;

INSERT INTO credential_created_seconds (credential_id, start_ms, payments)
SELECT credential_id, created_at - ((created_at % 1000) + 1000) % 1000, COUNT(*)
  FROM payments
 WHERE credential_id IS NOT NULL
   AND status IN ('pending_approval','authorized','queued','submitted','included','confirmed')
 GROUP BY 1, 2;
