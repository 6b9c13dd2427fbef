-- Lists read a page from an index and stop at its last row, whatever the history: the newest
-- payments first with no filter (`GET /v1/payments`), and the treasury's fundings and sweeps
-- (a partial index: agent payments never touch it). New payments land on the rightmost page.
-- Before, a list read and sorted every payment stored (265 ms at 40,000).
CREATE INDEX payments_created ON payments (created_at, id);
CREATE INDEX payments_treasury ON payments (created_at, id) WHERE kind IN ('funding', 'sweep');
