-- Sign-in activity per hour, method and result, for the Dashboard's charts:
-- completed hours are rolled up from login_log when the Dashboard asks
-- (at most the hours since the last roll-up are read), so a login writes
-- nothing more than its login_log row.
CREATE TABLE login_stats (
    hour BIGINT NOT NULL,      -- at / 3600000 (ms since the epoch, whole hours)
    method TEXT NOT NULL,      -- web | rest | basic
    success BIGINT NOT NULL,   -- 1 | 0
    n BIGINT NOT NULL,
    PRIMARY KEY (hour, method, success)
);
-- Every hour before done_until is in login_stats.
CREATE TABLE login_stats_state (
    id BIGINT PRIMARY KEY,
    done_until BIGINT NOT NULL
);
INSERT INTO login_stats_state (id, done_until) VALUES (1, 0);
