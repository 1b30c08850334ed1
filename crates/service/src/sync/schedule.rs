//! When a sync runs (a crontab or every N hours), and the scheduler's tick
//! that claims each due firing for exactly one replica.

use bindery_model::{DirectoryKind, SyncRun, SyncSettings};

use crate::util::now_ms;
use crate::{Result, Service};

/// When a sync runs: a crontab (which wins) or every N hours.
pub enum Schedule {
    Cron(Box<croner::Cron>),
    Every(i64),
}

fn parse_crontab(s: &str) -> std::result::Result<croner::Cron, String> {
    if s.split_whitespace().count() != 5 {
        return Err("expected five fields: minute hour day-of-month month day-of-week".into());
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| e.to_string())
}

impl Schedule {
    /// The schedule the settings describe; `None` when not periodic.
    pub fn of(s: &SyncSettings) -> std::result::Result<Option<Schedule>, (&'static str, String)> {
        if !s.crontab.trim().is_empty() {
            let c = parse_crontab(s.crontab.trim()).map_err(|e| ("crontab", format!("invalid crontab: {e}")))?;
            return Ok(s.periodic.then(|| Schedule::Cron(Box::new(c))));
        }
        if s.interval_hours > 0 {
            return Ok(s.periodic.then_some(Schedule::Every(s.interval_hours)));
        }
        if s.periodic {
            return Err(("crontab", "a periodic sync needs a crontab or an interval in hours".into()));
        }
        Ok(None)
    }

    /// The first run strictly after `after` (Unix ms).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Schedule::Every(h) => Some(after + h * 3_600_000),
            Schedule::Cron(c) => {
                let t = chrono::DateTime::from_timestamp_millis(after)?;
                c.find_next_occurrence(&t, false).ok().map(|n| n.timestamp_millis())
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(h) => format!("every {h} h"),
            Schedule::Cron(c) => format!("crontab {} (UTC)", c.pattern),
        }
    }
}

impl Service {
    /// One tick of the scheduler: runs left by a stopped process become
    /// interrupted, and each due schedule is claimed by exactly one replica
    /// (compare-and-set on `next_run_at`) and started.
    pub async fn scheduler_tick(&self) -> Result<Vec<SyncRun>> {
        self.purge_logs_daily().await;
        let now = now_ms();
        let gone = self.store.interrupt_orphaned_runs(now).await?;
        if gone > 0 {
            tracing::warn!(runs = gone, "runs of a stopped server marked interrupted");
        }
        let mut started = Vec::new();
        for (dir, due) in self.store.due_schedules(now).await? {
            let Some(kind) = DirectoryKind::parse(&dir) else { continue };
            let (settings, _) = self.load_sync_settings(kind).await?;
            let next = match Schedule::of(&settings) {
                Ok(Some(s)) => s.next_after(now),
                _ => None,
            };
            if !self.store.claim_schedule(&dir, due, next).await? {
                continue; // another replica took this firing
            }
            match self.launch_sync(kind, "schedule", false).await {
                Ok(run) => started.push(run),
                Err(e) => {
                    tracing::warn!(directory = %dir, error = %e, "scheduled sync not started");
                    self.system_audit(
                        "directory.sync_skipped",
                        &format!("directory:{dir}"),
                        serde_json::json!({ "reason": e.to_string() }),
                    )
                    .await;
                }
            }
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_wins_over_interval_and_bad_crontabs_are_refused_with_the_reason() {
        let s = SyncSettings { periodic: true, crontab: "0 3 * * *".into(), interval_hours: 1, ..Default::default() };
        let sch = Schedule::of(&s).unwrap().unwrap();
        assert!(matches!(sch, Schedule::Cron(_)));
        // 2026-01-01T00:00:00Z → 03:00 the same day.
        assert_eq!(sch.next_after(1_767_225_600_000), Some(1_767_225_600_000 + 3 * 3_600_000));
        let s = SyncSettings { periodic: true, interval_hours: 6, ..Default::default() };
        assert_eq!(Schedule::of(&s).unwrap().unwrap().next_after(0), Some(6 * 3_600_000));
        for bad in ["61 * * * *", "* * * *", "0 3 * * * *", "nonsense"] {
            let s = SyncSettings { periodic: true, crontab: bad.into(), ..Default::default() };
            let err = Schedule::of(&s).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.0, "crontab");
            assert!(err.1.starts_with("invalid crontab: "), "{}", err.1);
        }
        let s = SyncSettings { periodic: true, ..Default::default() };
        assert_eq!(Schedule::of(&s).err().unwrap().0, "crontab");
        assert!(Schedule::of(&SyncSettings::default()).unwrap().is_none());
    }
}
