-- Fair queueing across placement rounds: at equal depth in their queues,
-- the tenant placed least recently goes first.
ALTER TABLE tenants ADD COLUMN last_placed_at timestamptz;
