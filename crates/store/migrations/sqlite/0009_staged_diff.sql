-- Sync at directory speed (issue 16): an enumeration diffs the snapshot in
-- place instead of deleting and re-inserting it.
--
-- hash: the entry's content (mapped attributes, groups, state, its own
-- problem) as the enumeration saw it; a row is written only when it differs.
ALTER TABLE staged_users ADD COLUMN hash BIGINT NOT NULL DEFAULT 0;
-- The problem the entry shows on its own; `problem` adds what the rules
-- across rows and users find, recomputed from this one.
ALTER TABLE staged_users ADD COLUMN entry_problem TEXT NOT NULL DEFAULT '';
-- The key (row hash, rules, linked user) of the row's last plan that needed
-- nothing, or that was applied; the plan skips rows whose key is unchanged.
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

-- Per directory: the enumeration that last wrote the snapshot, the last
-- complete one (only a complete one removes entries), and when statuses
-- were last computed (users changed since are compared again).
CREATE TABLE staging_snapshots (
    directory TEXT PRIMARY KEY,
    generation BIGINT NOT NULL DEFAULT 0,
    complete_generation BIGINT NOT NULL DEFAULT 0,
    status_at BIGINT NOT NULL DEFAULT 0
);

-- The import table's substring search: an FTS5 trigram index over the
-- `search` column (rowid = staged_users.id), kept in step by triggers.
CREATE VIRTUAL TABLE staged_search USING fts5(search, tokenize = 'trigram');
INSERT INTO staged_search (rowid, search) SELECT id, search FROM staged_users;
-- Searches under three characters cannot use trigrams: they scan this
-- covering index (the search text only) instead of the rows.
CREATE INDEX staged_users_search ON staged_users (directory, search);
CREATE TRIGGER staged_search_insert AFTER INSERT ON staged_users BEGIN
    INSERT INTO staged_search (rowid, search) VALUES (new.id, new.search);
END;
CREATE TRIGGER staged_search_update AFTER UPDATE OF search ON staged_users BEGIN
    UPDATE staged_search SET search = new.search WHERE rowid = new.id;
END;
CREATE TRIGGER staged_search_delete AFTER DELETE ON staged_users BEGIN
    DELETE FROM staged_search WHERE rowid = old.id;
END;

-- Statuses are compared again only with users changed since they were last
-- computed.
CREATE INDEX users_updated_at ON users (updated_at);
