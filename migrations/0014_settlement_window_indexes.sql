-- Two reads settlement makes every pass, indexed so that they cost what they return, not the
-- history stored.
--
-- Finality re-checks the blocks of confirmed transactions over the finality window. Without an
-- index on the block, that read scanned every confirmed transaction ever stored; this partial
-- index holds exactly the rows the check asks about, by block, so a pass reads the window's
-- distinct blocks from the index alone.
CREATE INDEX transactions_finality_window ON transactions (block_number, block_hash)
    WHERE status = 'confirmed' AND finality_alarm = 0;

-- A wallet's transactions in the node's pool (signed or broadcast, in no block yet): the gas
-- they can still take and the room left in the wallet's lane. By wallet alone this read walked
-- the wallet's whole history.
CREATE INDEX transactions_in_pool ON transactions (wallet_id, nonce)
    WHERE status IN ('signed', 'submitted');
