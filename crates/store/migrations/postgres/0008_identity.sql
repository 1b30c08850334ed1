-- One identity lifecycle (issue 14): the group mapping is authoritative for
-- directory users, except where an administrator pinned the role; each
-- organisation membership remembers where it came from, so a mapping that
-- no longer applies takes back only what it gave.

-- 1 = the role is managed in Bindery: the directory never changes it.
ALTER TABLE users ADD COLUMN role_pinned BIGINT NOT NULL DEFAULT 0;

-- mapping | selection (import or sync settings) | default | manual.
-- Memberships that existed before are taken as given by hand: kept.
ALTER TABLE user_organisations ADD COLUMN source TEXT NOT NULL DEFAULT 'manual';

-- The mapping must not take back a role an administrator gave by hand:
-- directory users whose role an administrator changed (the operation log
-- says so) are pinned, and each pin is an operation-log entry.
UPDATE users SET role_pinned = 1
WHERE source <> 'local' AND EXISTS (
    SELECT 1 FROM operation_log o
    WHERE o.actor <> '(system)'
      AND o.action IN ('user.update', 'user.enable', 'user.disable')
      AND o.target = 'user:' || users.username
      AND o.before_json IS NOT NULL AND o.after_json IS NOT NULL
      AND (o.before_json::json ->> 'role') <> (o.after_json::json ->> 'role')
);
INSERT INTO operation_log (at, actor, action, target, before_json, after_json, ip)
SELECT updated_at, '(system)', 'user.role_pinned', 'user:' || username, NULL,
       '{"role_pinned":true,"reason":"upgrade: the role was last set by an administrator, so the group mapping will not change it"}', ''
FROM users WHERE role_pinned = 1;

-- Each planned sync change as the typed change the store applies.
ALTER TABLE sync_items ADD COLUMN change_json TEXT NOT NULL DEFAULT '';
