-- As 0018, for the other lists an operator pages through: scopes newest first with no filter,
-- and an endpoint's failed deliveries (what an operator replays), from a partial index so that
-- only the failures are in it; before, finding them read every delivery of the endpoint.
CREATE INDEX scopes_created ON scopes (created_at, id);
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint_id, created_at)
    WHERE status = 'failed';
