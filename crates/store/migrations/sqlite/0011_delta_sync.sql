-- Delta sync (issue 17). A cookie belongs to one search of one server: one
-- row per (directory, search OU), with the server it belongs to. Emptied
-- when the directory's settings change; a run whose answering server
-- differs starts from a full enumeration and replaces them.
CREATE TABLE delta_cookies (
    directory TEXT NOT NULL,      -- ldap | ldap_ha
    search_ou TEXT NOT NULL,
    server TEXT NOT NULL,         -- ldap://host:port that issued the cookie
    method TEXT NOT NULL,         -- syncrepl | dirsync | usn
    cookie TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (directory, search_ou)
);
-- What the last Test connection found, for the Sync settings: valid while
-- the settings it tested (fingerprint) are the saved ones.
CREATE TABLE delta_support (
    directory TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    method TEXT NOT NULL,
    sees_deletions BIGINT NOT NULL,
    reason TEXT NOT NULL,
    server TEXT NOT NULL,
    detected_at BIGINT NOT NULL
);
