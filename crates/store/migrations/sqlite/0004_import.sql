-- The import table's staging snapshot: every user the last "Sync users"
-- enumerated, per directory configuration, with the status computed
-- against local users. Served from here, never one LDAP round trip per row.
CREATE TABLE staged_users (
    id INTEGER PRIMARY KEY,
    directory TEXT NOT NULL,
    -- entryUUID / objectGUID (hex) / "dn:" + DN
    external_id TEXT NOT NULL,
    dn TEXT NOT NULL,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    -- group DNs, one per line
    groups TEXT NOT NULL,
    -- account state in the directory: '' (usable), 'disabled', 'locked'
    dir_state TEXT NOT NULL,
    -- why the row cannot be imported ('' when it can)
    problem TEXT NOT NULL DEFAULT '',
    -- new | imported | changed | disabled | invalid
    status TEXT NOT NULL DEFAULT 'new',
    user_id BIGINT,
    UNIQUE (directory, external_id)
);
CREATE INDEX staged_users_username ON staged_users (directory, username_key);
CREATE INDEX staged_users_status ON staged_users (directory, status, username_key);
CREATE INDEX users_external_id ON users (external_id);

-- "Sync users" enumerations and sync runs, with their progress.
CREATE TABLE sync_runs (
    id INTEGER PRIMARY KEY,
    directory TEXT NOT NULL,
    -- fetch (import table) | sync
    kind TEXT NOT NULL,
    -- running | done | failed | cancelled | interrupted | held | rejected
    state TEXT NOT NULL,
    started_by TEXT NOT NULL DEFAULT 'manual',
    dry_run BIGINT NOT NULL DEFAULT 0,
    entries BIGINT NOT NULL DEFAULT 0,
    pages BIGINT NOT NULL DEFAULT 0,
    complete BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT NOT NULL DEFAULT '',
    summary_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_runs_directory ON sync_runs (directory, id);
