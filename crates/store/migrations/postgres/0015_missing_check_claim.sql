-- A plan's missing-user check without a lost update: when a plan starts
-- it claims the directory's queued checks (claimed = 1); every queueing
-- (a user changed, a row left the snapshot or was linked elsewhere) sets
-- claimed = 0, also on a row already queued. When the plan ends it deletes
-- only the claimed rows, so a user changed while the plan ran stays queued
-- for the next plan.
ALTER TABLE missing_check ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
