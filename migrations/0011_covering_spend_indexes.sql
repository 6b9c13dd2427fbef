-- Indexes that keep the per-accept and per-pass reads off the history.
-- The policy's rolling windows read only the index: the day's committed money and the last
-- minute's count carry the columns they sum and filter on, so no payment row is fetched per
-- payment in the window (each accept reads them inside the one writer's transaction).
DROP INDEX payments_credential_committed;
CREATE INDEX payments_credential_committed ON payments (credential_id, committed_at, status, amount);
DROP INDEX payments_credential;
CREATE INDEX payments_credential ON payments (credential_id, created_at, status);
-- The waiting gauge counts the payments that wait, each pass: a partial index of just those, so
-- the count never scans the history.
CREATE INDEX payments_waiting ON payments (waiting_reason) WHERE waiting_reason IS NOT NULL;
-- The live holds (pending approval, authorized) by status, covering the amount they sum; without
-- it the covering window index above would be scanned over the credential's whole history.
DROP INDEX payments_credential_status;
CREATE INDEX payments_credential_status ON payments (credential_id, status, amount);
