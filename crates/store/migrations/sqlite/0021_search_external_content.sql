-- The trigram search index (`staged_search`) keeps no copy of the search
-- text: it reads it from the snapshot's row (FTS5 external content,
-- `content_rowid` the row's id), and it keeps no per-row column sizes
-- (`columnsize = 0`: they serve only relevance ranking, which the import
-- table does not use). Filling it for 100,000 rows took 0.39 s with its
-- own copy and sizes, 0.25 s without, in `sqlite3`; every later change of
-- a row writes a row less. An external-content index is told what a
-- changed or deleted row held before (the `'delete'` command with the old
-- values), not asked to look it up: the row has changed by then.
DROP TRIGGER IF EXISTS staged_search_insert;
DROP TRIGGER IF EXISTS staged_search_update;
DROP TRIGGER IF EXISTS staged_search_delete;
DROP TABLE staged_search;
CREATE VIRTUAL TABLE staged_search USING fts5(
    search, tokenize = 'trigram', content = 'staged_users', content_rowid = 'id', columnsize = 0
);
INSERT INTO staged_search (staged_search) VALUES ('rebuild');
CREATE TRIGGER staged_search_insert AFTER INSERT ON staged_users BEGIN
    INSERT INTO staged_search (rowid, search) VALUES (new.id, new.search);
END;
CREATE TRIGGER staged_search_update AFTER UPDATE OF search ON staged_users BEGIN
    INSERT INTO staged_search (staged_search, rowid, search) VALUES ('delete', old.id, old.search);
    INSERT INTO staged_search (rowid, search) VALUES (new.id, new.search);
END;
CREATE TRIGGER staged_search_delete AFTER DELETE ON staged_users BEGIN
    INSERT INTO staged_search (staged_search, rowid, search) VALUES ('delete', old.id, old.search);
END;
