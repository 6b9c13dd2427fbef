-- An agent's gas-float top-ups (how many are in flight, how many today): read before each
-- top-up from this partial index, which holds only those fundings, instead of from every payment
-- of the agent's history.
CREATE INDEX payments_gas_float ON payments (agent_id, created_at) WHERE idempotency_scope = 'gas_float';
