-- A credential's live holds, found by the `budget` column (1 exactly while a payment is a live
-- hold: pending approval or authorized, migration 0021) instead of by those two statuses. Read
-- through `status IN ('pending_approval', 'authorized')`, the index made SQLite build a temporary
-- b-tree of the two statuses at every run of the policy's live-holds sum, which each accepted
-- intent with a daily limit runs: about 3% of the writer's time in acceptance. `budget = 1` is
-- one key, and the index no longer carries the status, so moving between the two statuses
-- (an approval) leaves it alone.
DROP INDEX payments_live_holds;
CREATE INDEX payments_live_holds ON payments (credential_id, amount) WHERE budget = 1;
