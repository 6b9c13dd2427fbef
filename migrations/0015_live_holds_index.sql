-- A credential's live holds (pending approval, authorized) from a partial index of just those.
-- Keyed by every status, the index held an entry per payment ever made, rewritten at each step of
-- settlement (queued, submitted, included, confirmed), and a group commit of accepted intents
-- wrote one of its pages per credential: about an eighth of the pages each commit wrote. Now it
-- changes only when a payment enters or leaves a live hold. Both reads of it (the day's live
-- holds, and what revoking a credential cancels) name exactly these statuses.
DROP INDEX payments_credential_status;
CREATE INDEX payments_live_holds ON payments (credential_id, status, amount)
    WHERE status IN ('pending_approval', 'authorized');
