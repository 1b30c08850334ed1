-- How many users had the status watermark's time (`status_at`, the newest
-- `updated_at` the last status computation saw) when it was taken. The next
-- computation finds no user changed since when none is newer and as many
-- have that time: it then looks for no row of a changed user. Before, the
-- users of the last apply, whose time is the watermark, were found again by
-- every computation (a tenth of a PostgreSQL delta run). -1: not known.
ALTER TABLE staging_snapshots ADD COLUMN status_users BIGINT NOT NULL DEFAULT -1;
