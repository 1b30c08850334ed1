-- Scheduled sync: settings per directory configuration, the plan and
-- outcome of every run, and leases so that replicas sharing one database
-- never run a directory's sync (or enumeration) twice at the same time.
CREATE TABLE sync_settings (
    directory TEXT PRIMARY KEY,
    settings_json TEXT NOT NULL,
    -- when the schedule next fires (Unix ms); claimed by compare-and-set
    next_run_at BIGINT,
    updated_at BIGINT NOT NULL
);

-- One row per user a run plans to change (and what became of it).
CREATE TABLE sync_items (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    -- create | update | disable | enable | failed
    action TEXT NOT NULL,
    username TEXT NOT NULL,
    user_id BIGINT,
    staged_id BIGINT,
    reason TEXT NOT NULL DEFAULT '',
    -- planned | applied | failed | rejected
    outcome TEXT NOT NULL DEFAULT 'planned',
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sync_items_run ON sync_items (run_id, id);

CREATE TABLE sync_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Set when a sync or re-validation disabled the user because of the
-- directory: only those are enabled again when the directory says so.
ALTER TABLE users ADD COLUMN dir_disabled BIGINT NOT NULL DEFAULT 0;

-- Reports for users (sync summaries to their recipients), shown in the console.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- delivered by email too ('' when not sent), or why not
    email_status TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notifications_user ON notifications (user_id, id);

-- Set-based checks of a 100,000-user snapshot must not scan per row.
CREATE INDEX users_email_lower ON users (lower(email));
CREATE INDEX staged_users_user ON staged_users (directory, user_id);

-- Directory groups become Bindery groups (source ldap / ldap_ha), found
-- again by their DN at every sync.
ALTER TABLE user_groups ADD COLUMN external_dn TEXT;
CREATE INDEX user_groups_external_dn ON user_groups (source, external_dn);
