-- The webhook sender takes the next due deliveries in (next_at, id) order, a few at a time.
-- With the index in that exact order the take reads those few index entries and stops,
-- whatever the backlog; on (state, next_at) alone PostgreSQL, with a backlog that grew faster
-- than its statistics, joined and sorted every pending delivery on each take (measured:
-- 69 ms per take with 13,600 pending, which capped the drain near 100 deliveries a second).
CREATE INDEX hook_deliveries_due_order ON hook_deliveries (state, next_at, id);
DROP INDEX hook_deliveries_due;
