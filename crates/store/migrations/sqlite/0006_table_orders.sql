-- The import table's orders by name and by email, straight from an index
-- (the rowid ends each entry: ties are ordered by id).
CREATE INDEX staged_users_name ON staged_users (directory, lower(name));
CREATE INDEX staged_users_email ON staged_users (directory, lower(email));
