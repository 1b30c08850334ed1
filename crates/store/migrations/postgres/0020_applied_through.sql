-- A run's items up to this id that are still `planned` were applied: the
-- apply records a chunk of changes as one write of its run, in the
-- chunk's transaction, instead of rewriting each item's row (a first sync
-- of 100,000 users rewrote 100,000 items, 0.8 s on PostgreSQL). The items'
-- reads give such an item the outcome `applied` (`runs.rs`).
ALTER TABLE sync_runs ADD COLUMN applied_through BIGINT NOT NULL DEFAULT 0;
