-- Delta runs at directory speed (issue 17): a run's plan, status marking
-- and missing-user check read only what may have changed. See the SQLite
-- migration for what each column and table means.
ALTER TABLE staged_users ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
UPDATE staged_users SET settled = 1 WHERE plan_key IS NOT NULL;
CREATE INDEX staged_users_unsettled ON staged_users (directory, id) WHERE settled = 0;
CREATE INDEX staged_users_rule_problem ON staged_users (directory, id) WHERE problem <> entry_problem;

ALTER TABLE staging_snapshots ADD COLUMN plan_rules TEXT;

CREATE TABLE missing_check (
    directory TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (directory, user_id)
);
