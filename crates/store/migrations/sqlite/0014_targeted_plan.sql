-- Delta runs at directory speed (issue 17): a run's plan, status marking
-- and missing-user check read only what may have changed, never the whole
-- snapshot or every user.
--
-- settled: 1 when the row's last plan needed nothing or was applied
-- (plan_key holds that plan's key); 0 when the row was written since (new
-- content, a new problem, another linked user), its Bindery user changed
-- (every write of a user's role, pin, activation, names or link unsettles
-- its rows in the same transaction), or its planned change is still pending
-- (held, dry run, failed). Only unsettled rows are planned again.
ALTER TABLE staged_users ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
UPDATE staged_users SET settled = 1 WHERE plan_key IS NOT NULL;
CREATE INDEX staged_users_unsettled ON staged_users (directory, id) WHERE settled = 0;
-- Rows with a problem a rule found (a conflict, a duplicate): the status
-- marking compares them again without scanning the snapshot.
CREATE INDEX staged_users_rule_problem ON staged_users (directory, id) WHERE problem <> entry_problem;

-- The rules hash of the directory's last plan: a plan under the same rules
-- reads only the unsettled rows.
ALTER TABLE staging_snapshots ADD COLUMN plan_rules TEXT;

-- Users who may have lost their directory entry since the last plan: the
-- users of rows that left the snapshot or were linked elsewhere, directory
-- users changed in Bindery, and missing users whose disable is pending.
CREATE TABLE missing_check (
    directory TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (directory, user_id)
);
