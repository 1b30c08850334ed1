-- Sign-in activity per hour, method and result, kept up to date by a
-- trigger on every login_log insert: the Dashboard's charts read these few
-- rows instead of scanning the log on every load.
CREATE TABLE login_stats (
    hour BIGINT NOT NULL,      -- at / 3600000 (ms since the epoch, whole hours)
    method TEXT NOT NULL,      -- web | rest | basic
    success BIGINT NOT NULL,   -- 1 | 0
    n BIGINT NOT NULL,
    PRIMARY KEY (hour, method, success)
);
INSERT INTO login_stats (hour, method, success, n)
SELECT at / 3600000, method, success, COUNT(*) FROM login_log GROUP BY at / 3600000, method, success;
CREATE TRIGGER login_log_stats AFTER INSERT ON login_log
BEGIN
    INSERT INTO login_stats (hour, method, success, n) VALUES (NEW.at / 3600000, NEW.method, NEW.success, 1)
    ON CONFLICT (hour, method, success) DO UPDATE SET n = n + 1;
END;
