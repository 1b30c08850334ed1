-- The import table's page counts are cached per search (issue 16): the
-- version changes whenever the snapshot's rows, their searchable text or
-- their statuses change, and a cached count of an older version is not used.
ALTER TABLE staging_snapshots ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
-- The snapshot's number of rows, kept in the transactions that add or
-- remove rows: the plan's threshold base without counting 100,000 rows.
ALTER TABLE staging_snapshots ADD COLUMN row_count BIGINT NOT NULL DEFAULT 0;
INSERT INTO staging_snapshots (directory, row_count) SELECT directory, COUNT(*) FROM staged_users WHERE true GROUP BY directory
ON CONFLICT (directory) DO UPDATE SET row_count = excluded.row_count;

-- The status order ends with the id like every other: a page sorted by
-- status is read off the index instead of sorting the snapshot.
DROP INDEX staged_users_status;
CREATE INDEX staged_users_status ON staged_users (directory, status, username_key, id);
-- (directory, username_key, id) serves every lookup this one did.
DROP INDEX staged_users_username;
