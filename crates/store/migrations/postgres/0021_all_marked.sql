-- Every row of the snapshot counts as marked for the next status
-- computation. An enumeration into an empty snapshot sets it and writes
-- no mark (`staged_dirty`) for its rows: 100,000 marks, written and then
-- joined back, were a quarter of a second of a first sync. The status
-- computation that finds it set clears it and computes every row.
ALTER TABLE staging_snapshots ADD COLUMN all_marked INTEGER NOT NULL DEFAULT 0;
