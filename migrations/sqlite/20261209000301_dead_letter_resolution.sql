-- A dead letter an operator handled: replayed or discarded (through the admin API), when,
-- and a note. Open letters have no resolution.
ALTER TABLE dead_letters ADD COLUMN resolution TEXT;
ALTER TABLE dead_letters ADD COLUMN resolved_at BIGINT;
ALTER TABLE dead_letters ADD COLUMN resolution_note TEXT;
CREATE INDEX dead_letters_by_kind ON dead_letters (kind, id);
