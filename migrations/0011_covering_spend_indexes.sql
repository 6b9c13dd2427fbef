-- The policy's rolling windows read only the index: the day's committed money and the last
-- minute's count carry the columns they sum and filter on, so no payment row is fetched per
-- payment in the window (each accept reads them inside the one writer's transaction).
DROP INDEX payments_credential_committed;
CREATE INDEX payments_credential_committed ON payments (credential_id, committed_at, status, amount);
DROP INDEX payments_credential;
CREATE INDEX payments_credential ON payments (credential_id, created_at, status);
