-- A first sync into an empty snapshot (PostgreSQL) loads it without the
-- snapshot's secondary indexes and builds them once at the end
-- (`bulk.rs`): each row is written twice there (inserted, then settled
-- with its new user), and every write of a row was a new entry in ten
-- indexes, four of them holding the search text. The definitions of the
-- indexes dropped for the load are kept here, in the transaction that
-- drops them, so that whatever ends the load (the run, a failed run, the
-- next start of any replica) builds exactly those again.
CREATE TABLE bulk_dropped_indexes (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
