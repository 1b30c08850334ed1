-- The search index's in-memory hash of a transaction's new terms: 8 MiB
-- instead of FTS5's 1 MiB. A first sync fills the index in one statement
-- (`bulk.rs`); with 1 MiB, FTS5 wrote a segment at every MiB and merged
-- them as it went. Filling it from 100,000 snapshot rows took 0.208-0.211 s
-- with 1 MiB against 0.176-0.182 s with 8 MiB or 32 MiB (`sqlite3`, runs
-- alternated). The hash holds what one transaction adds and is freed at
-- its commit: a page of 1,000 rows stays under 1 MiB as before, and only
-- the fill uses up to 8 MiB, for its moment.
INSERT INTO staged_search (staged_search, rank) VALUES ('hashsize', 8388608);
