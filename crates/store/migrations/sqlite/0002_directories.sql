-- Directory configurations "ldap" and "ldap_ha". Secrets are stored
-- encrypted (ChaCha20-Poly1305, key from the server's configuration) and
-- are never part of settings_json.
CREATE TABLE directory_configs (
    kind TEXT PRIMARY KEY,
    settings_json TEXT NOT NULL,
    bind_password_enc TEXT,
    client_key_enc TEXT,
    updated_at INTEGER NOT NULL
);
