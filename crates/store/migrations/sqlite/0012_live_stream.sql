-- Live deprovisioning (issue 17 §2): the change stream of each directory,
-- as the replica holding its lease (the `sync_leases` row `live:<directory>`,
-- of its own: the staging lease is held by every sync) last wrote it. It is
-- shown with the servers' health; `cookies` lets the next holder resume
-- where this one stopped.
CREATE TABLE live_streams (
    directory TEXT PRIMARY KEY,   -- ldap | ldap_ha
    holder TEXT NOT NULL,         -- the lease holder (replica) that wrote the row
    connected BIGINT NOT NULL,    -- 0/1: the persistent search is open
    server TEXT NOT NULL,         -- ldap://host:port it is open on ('' when not)
    since BIGINT,                 -- connected (or disconnected) since, Unix ms
    last_change_at BIGINT,        -- when the last change arrived
    changes BIGINT NOT NULL,      -- changes seen by this holder
    disabled BIGINT NOT NULL,     -- users it disabled
    last_error TEXT NOT NULL,     -- why the stream last failed or held back ('' none)
    cookies TEXT NOT NULL,        -- JSON: the settings' fingerprint and a cookie per search OU
    updated_at BIGINT NOT NULL
);
