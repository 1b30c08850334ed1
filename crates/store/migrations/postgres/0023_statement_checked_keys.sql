-- Organisation memberships and sync items reference their parents through
-- triggers that check a whole statement's rows at once, instead of foreign
-- keys that check each row with a query of its own.
--
-- A first sync at 100,000 users writes 100,000 memberships and 100,000
-- items. In psql, 100,000 memberships took 1.43 s with their two foreign
-- keys and 0.22 s without them. Loading 100,000 users and their
-- memberships as a first sync does (250 a statement, a transaction per
-- 1,000) took 1.9-2.0 s with the foreign keys and 1.1-1.3 s with these
-- triggers. The guarantees stay those of the foreign keys they replace:
--
-- * a row whose parent does not exist is refused (SQLSTATE 23503,
--   foreign_key_violation), checked when its statement ends;
-- * the parents of the rows a statement wrote are locked as a foreign key
--   locks them (FOR KEY SHARE) until the transaction ends, so nobody
--   deletes one under an uncommitted row. A parent row this transaction
--   wrote itself needs no lock: nobody else can delete it before this
--   transaction ends. That skips the lock of every user a first sync
--   creates, which the foreign key took, writing each user's row again;
-- * deleting a parent deletes its rows (ON DELETE CASCADE), in one
--   statement per deleting statement.
--
-- Parent keys never change (ids), so no update of a parent is checked.
-- SQLite keeps its foreign keys: its check is an index lookup in the
-- inserting statement, without locks.

ALTER TABLE user_organisations DROP CONSTRAINT IF EXISTS user_organisations_user_id_fkey;
ALTER TABLE user_organisations DROP CONSTRAINT IF EXISTS user_organisations_organisation_id_fkey;
ALTER TABLE sync_items DROP CONSTRAINT IF EXISTS sync_items_run_id_fkey;

-- The deleting side: the statement-level ON DELETE CASCADE. Its arguments
-- name the referencing table and column.
CREATE FUNCTION bindery_parents_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I WHERE %I IN (SELECT id FROM gone)', TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END $$;
CREATE TRIGGER users_deleted AFTER DELETE ON users REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION bindery_parents_deleted('user_organisations', 'user_id');
CREATE TRIGGER organisations_deleted AFTER DELETE ON organisations REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION bindery_parents_deleted('user_organisations', 'organisation_id');
CREATE TRIGGER sync_runs_deleted AFTER DELETE ON sync_runs REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION bindery_parents_deleted('sync_items', 'run_id');

-- The writing side. `xmin = pg_current_xact_id()::xid`: a row version this
-- transaction wrote (not one of its savepoints: those are locked, which is
-- merely slower).
--
-- Every lookup goes by primary key, whatever the planner estimates: the
-- function's plans are made once per connection, at its first statement,
-- when the users table of a first sync is still small, and are kept. With
-- a join, that plan scanned the whole users table at every statement
-- after (a first sync took 10-12 s instead of 9); `= ANY` of the distinct
-- ids with sequential scans off can only probe the index.
CREATE FUNCTION bindery_user_organisations_written() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    user_ids BIGINT[] := ARRAY(SELECT DISTINCT user_id FROM written);
    organisation_ids BIGINT[] := ARRAY(SELECT DISTINCT organisation_id FROM written);
BEGIN
    PERFORM 1 FROM users WHERE id = ANY (user_ids) AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
    PERFORM 1 FROM organisations WHERE id = ANY (organisation_ids) AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
    IF (SELECT COUNT(*) FROM users WHERE id = ANY (user_ids)) <> cardinality(user_ids) THEN
        RAISE EXCEPTION 'insert on table "user_organisations" names a user that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF (SELECT COUNT(*) FROM organisations WHERE id = ANY (organisation_ids)) <> cardinality(organisation_ids) THEN
        RAISE EXCEPTION 'insert on table "user_organisations" names an organisation that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER user_organisations_inserted AFTER INSERT ON user_organisations
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION bindery_user_organisations_written();

CREATE FUNCTION bindery_sync_items_written() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    run_ids BIGINT[] := ARRAY(SELECT DISTINCT run_id FROM written);
BEGIN
    PERFORM 1 FROM sync_runs WHERE id = ANY (run_ids) AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
    IF (SELECT COUNT(*) FROM sync_runs WHERE id = ANY (run_ids)) <> cardinality(run_ids) THEN
        RAISE EXCEPTION 'insert on table "sync_items" names a sync run that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sync_items_inserted AFTER INSERT ON sync_items
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION bindery_sync_items_written();

-- An update that moves a row to another parent (nothing does today) is
-- checked row by row, as the foreign key did: a statement-level trigger
-- would read every updated row, and a sync updates 100,000 items'
-- outcomes; a trigger with a transition table cannot name its columns.
CREATE FUNCTION bindery_parent_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'user_organisations' THEN
        PERFORM 1 FROM users WHERE id = NEW.user_id AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
        PERFORM 1 FROM organisations WHERE id = NEW.organisation_id AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
        IF NOT EXISTS (SELECT 1 FROM users WHERE id = NEW.user_id)
           OR NOT EXISTS (SELECT 1 FROM organisations WHERE id = NEW.organisation_id) THEN
            RAISE EXCEPTION 'update on table "user_organisations" names a user or organisation that does not exist'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    ELSE
        PERFORM 1 FROM sync_runs WHERE id = NEW.run_id AND xmin <> pg_current_xact_id()::xid FOR KEY SHARE;
        IF NOT EXISTS (SELECT 1 FROM sync_runs WHERE id = NEW.run_id) THEN
            RAISE EXCEPTION 'update on table "sync_items" names a sync run that does not exist'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER user_organisations_moved AFTER UPDATE OF user_id, organisation_id ON user_organisations FOR EACH ROW
    WHEN (NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.organisation_id IS DISTINCT FROM OLD.organisation_id)
    EXECUTE FUNCTION bindery_parent_moved();
CREATE TRIGGER sync_items_moved AFTER UPDATE OF run_id ON sync_items FOR EACH ROW
    WHEN (NEW.run_id IS DISTINCT FROM OLD.run_id)
    EXECUTE FUNCTION bindery_parent_moved();
