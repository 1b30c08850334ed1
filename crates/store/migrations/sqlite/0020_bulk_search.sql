-- A first sync into an empty snapshot (SQLite) loads it without the
-- trigger that writes each new row into the trigram search index
-- (`staged_search`), and fills the index once at the end with one
-- statement (`bulk.rs`): row by row, the trigger's inserts were about a
-- second of a 100,000-user first sync, against half a second for one
-- statement. The trigger's definition is kept here, in the transaction
-- that drops it, so that whatever ends the load (the run, a failed run,
-- the next start) fills the index and puts exactly that trigger back.
CREATE TABLE bulk_dropped_indexes (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
