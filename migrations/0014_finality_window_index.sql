-- Settlement re-checks the blocks of confirmed transactions over the finality window every
-- pass. Without an index on the block, that read scanned every confirmed transaction ever
-- stored; this partial index holds exactly the rows the check asks about, by block, so a pass
-- reads the window's distinct blocks from the index alone.
CREATE INDEX transactions_finality_window ON transactions (block_number, block_hash)
    WHERE status = 'confirmed' AND finality_alarm = 0;
