-- Sync at directory speed (issue 16): an enumeration diffs the snapshot in
-- place instead of deleting and re-inserting it. See the SQLite migration
-- for what each column means.
ALTER TABLE staged_users ADD COLUMN hash BIGINT NOT NULL DEFAULT 0;
ALTER TABLE staged_users ADD COLUMN entry_problem TEXT NOT NULL DEFAULT '';
ALTER TABLE staged_users ADD COLUMN plan_key TEXT;
UPDATE staged_users SET entry_problem = problem
WHERE problem NOT LIKE 'conflict:%' AND problem NOT LIKE 'another %' AND problem <> 'a local user has this username';
-- Rows whose status must be recomputed (they changed, or something they are
-- compared with did): kept apart so that marking a row writes nothing in
-- staged_users and its indexes.
CREATE TABLE staged_dirty (
    directory TEXT NOT NULL,
    id BIGINT NOT NULL,
    PRIMARY KEY (directory, id)
);
INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users;

CREATE TABLE staging_snapshots (
    directory TEXT PRIMARY KEY,
    generation BIGINT NOT NULL DEFAULT 0,
    complete_generation BIGINT NOT NULL DEFAULT 0,
    status_at BIGINT NOT NULL DEFAULT 0
);

-- The import table's substring search: a pg_trgm GIN index, which serves
-- LIKE '%…%' directly. Creating the extension needs the CREATE privilege on
-- the database (PostgreSQL 13+: pg_trgm is a trusted extension).
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE EXCEPTION 'Bindery needs the pg_trgm extension for the import table''s search, and could not create it (%). Ask a superuser to run CREATE EXTENSION pg_trgm in this database, then start Bindery again.', SQLERRM;
END
$$;
CREATE INDEX staged_users_search_trgm ON staged_users USING gin (search gin_trgm_ops);

-- Statuses are compared again only with users changed since they were last
-- computed.
CREATE INDEX users_updated_at ON users (updated_at);
