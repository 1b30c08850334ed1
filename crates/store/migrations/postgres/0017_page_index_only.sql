-- The import table's pages on PostgreSQL (issue 16): every sort order's
-- index also holds the search text (and the column its order lowercases),
-- so the ids of a page are found by an index-only scan that tests the
-- search on each entry it passes. A search that matches many rows (a
-- single character, "@example.com") no longer reads each row it passes
-- from the table, nor sorts all its matches, to reach a deep page:
-- 117 ms before, 34-39 ms after, on 100,000 rows. Narrow searches keep
-- the trigram index.
DROP INDEX staged_users_username_id;
CREATE INDEX staged_users_username_id ON staged_users (directory, username_key, id) INCLUDE (search);
DROP INDEX staged_users_status;
CREATE INDEX staged_users_status ON staged_users (directory, status, username_key, id) INCLUDE (search);
DROP INDEX staged_users_name;
CREATE INDEX staged_users_name ON staged_users (directory, lower(name), id) INCLUDE (name, search);
DROP INDEX staged_users_email;
CREATE INDEX staged_users_email ON staged_users (directory, lower(email), id) INCLUDE (email, search);
