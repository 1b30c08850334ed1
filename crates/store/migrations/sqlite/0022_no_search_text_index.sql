-- The index of the search text alone (`staged_users_search`, migration
-- 0009) served the counts of searches the trigram index cannot serve
-- (under three characters). Since every sort order's index holds the
-- search text too (0016), SQLite counts through one of those instead:
-- at 100,000 rows it chose `staged_users_email` (or `staged_users_status`
-- with a status filter) with this index present, and forced through this
-- one a count took as long (10-16 ms either way). Nothing read it, and
-- every row written wrote it: about 7,000 instructions a row of a first
-- sync's inserts (callgrind, Python's `sqlite3`, 30,000 rows).
DROP INDEX IF EXISTS staged_users_search;
