-- The import table's orders, straight from an index, ties ordered by id.
CREATE INDEX staged_users_name ON staged_users (directory, lower(name), id);
CREATE INDEX staged_users_email ON staged_users (directory, lower(email), id);
CREATE INDEX staged_users_username_id ON staged_users (directory, username_key, id);
