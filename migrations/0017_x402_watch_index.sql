-- Every settlement pass reads the x402 payments it watches: the open ones (authorized,
-- submitted, included) and the confirmed ones recent enough to be re-checked against the
-- canonical chain. Both reads started from `payments_status`, so they walked every payment of
-- that status, x402 or not: the re-check read every confirmed payment ever made (about 18 ms a
-- pass with 40,000 stored, growing with the history). This partial index holds only x402
-- payments (other inserts skip it), and the re-check reads one range of it by block.
CREATE INDEX payments_x402 ON payments (status, block_number) WHERE protocol = 'x402';
