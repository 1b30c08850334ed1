-- When a directory user's account was last checked against the directory
-- (at login, by re-validation of a live session or token, or by a sync).
ALTER TABLE users ADD COLUMN validated_at BIGINT;
