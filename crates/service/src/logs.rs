//! The operation (audit) log, the login log and the dashboard.

use bindery_model::{ActivityBucket, Dashboard, FieldError, LogQuery, LoginEvent, OperationEvent, Page, SyncPoint};
use bindery_store::NewOperationEvent;
use serde::Serialize;

use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Error, Result, Service};

/// An operation Bindery did by itself, for [`Service::system_changes`].
pub(crate) struct SystemChange {
    pub action: &'static str,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: serde_json::Value,
}

impl Service {
    /// Record an administrative change. `before`/`after` are DTOs that never
    /// carry secrets. A failure to write is logged, not returned: the change
    /// itself already happened.
    /// An operation Bindery did by itself (sync, directory re-validation).
    pub(crate) async fn system_audit(&self, action: &str, target: &str, after: serde_json::Value) {
        self.system_change(action, target, None, after).await
    }

    /// Operations Bindery did by itself, `(action, target, before, after)`
    /// each, written in one transaction.
    pub(crate) async fn system_changes(&self, events: &[SystemChange]) {
        let at = now_ms();
        let texts: Vec<(Option<String>, String)> =
            events.iter().map(|e| (e.before.as_ref().map(|b| b.to_string()), e.after.to_string())).collect();
        let rows: Vec<NewOperationEvent<'_>> = events
            .iter()
            .zip(&texts)
            .map(|(e, (before, after))| NewOperationEvent {
                at,
                actor: "(system)",
                action: e.action,
                target: &e.target,
                before: before.as_deref(),
                after: Some(after),
                ip: "",
            })
            .collect();
        if let Err(e) = self.store.insert_operations(&rows).await {
            tracing::error!(error = %e, entries = rows.len(), "could not write the operation log");
        }
    }

    /// An operation Bindery did by itself, with the state before it.
    pub(crate) async fn system_change(&self, action: &str, target: &str, before: Option<serde_json::Value>, after: serde_json::Value) {
        let before = before.map(|b| b.to_string());
        let after = after.to_string();
        let r = self
            .store
            .insert_operation(&NewOperationEvent {
                at: now_ms(),
                actor: "(system)",
                action,
                target,
                before: before.as_deref(),
                after: Some(&after),
                ip: "",
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, action, target, "could not write the operation log");
        }
    }

    pub(crate) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) {
        let before = before.map(|b| b.to_string());
        let after = after.map(|a| a.to_string());
        let r = self
            .store
            .insert_operation(&NewOperationEvent {
                at: now_ms(),
                actor: &actor.principal.username,
                action,
                target,
                before: before.as_deref(),
                after: after.as_deref(),
                ip: &actor.ip,
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, action, target, "could not write the operation log");
        }
    }

    pub async fn login_log(&self, actor: &Actor, q: &LogQuery) -> Result<Page<LoginEvent>> {
        actor.require_reader()?;
        let f = log_filter(q, Log::Login)?;
        let l = q.list();
        let (rows, total) = self.store.list_login_events(&f, l.per_page(), (l.page() - 1) * l.per_page()).await?;
        Ok(Page { items: rows.into_iter().map(login_dto).collect(), total, page: l.page(), per_page: l.per_page() })
    }

    pub async fn operation_log(&self, actor: &Actor, q: &LogQuery) -> Result<Page<OperationEvent>> {
        actor.require_reader()?;
        let f = log_filter(q, Log::Operation)?;
        let l = q.list();
        let (rows, total) = self.store.list_operation_events(&f, l.per_page(), (l.page() - 1) * l.per_page()).await?;
        Ok(Page { items: rows.into_iter().map(operation_dto).collect(), total, page: l.page(), per_page: l.per_page() })
    }

    /// The login log as CSV (every entry the filters match, newest first;
    /// formula-safe: a value starting with `=`, `+`, `-` or `@` is quoted).
    pub async fn login_log_csv(&self, actor: &Actor, q: &LogQuery) -> Result<String> {
        actor.require_reader()?;
        let f = log_filter(q, Log::Login)?;
        let mut out = String::from("time,username,result,method,ip,user_agent,reason\r\n");
        let mut offset = 0;
        loop {
            let (rows, _) = self.store.list_login_events(&f, CSV_PAGE, offset).await?;
            offset += rows.len() as i64;
            for r in rows.iter().cloned().map(login_dto) {
                let result = if r.success { "success" } else { "failure" };
                csv_row(&mut out, &[&r.at, &r.username, result, &r.method, &r.ip, &r.user_agent, &r.reason]);
            }
            if (rows.len() as i64) < CSV_PAGE {
                return Ok(out);
            }
        }
    }

    /// The operation log as CSV, like [`Service::login_log_csv`].
    pub async fn operation_log_csv(&self, actor: &Actor, q: &LogQuery) -> Result<String> {
        actor.require_reader()?;
        let f = log_filter(q, Log::Operation)?;
        let mut out = String::from("time,actor,action,target,before,after,ip\r\n");
        let mut offset = 0;
        loop {
            let (rows, _) = self.store.list_operation_events(&f, CSV_PAGE, offset).await?;
            let n = rows.len() as i64;
            offset += n;
            for e in rows.into_iter().map(operation_dto) {
                let (before, after) = (e.before.unwrap_or_default(), e.after.unwrap_or_default());
                csv_row(&mut out, &[&e.at, &e.actor, &e.action, &e.target, &before, &after, &e.ip]);
            }
            if n < CSV_PAGE {
                return Ok(out);
            }
        }
    }

    /// Delete log entries older than the retention setting. Run by the
    /// scheduler at most once a day per replica (idempotent across replicas).
    pub async fn purge_old_logs(&self) -> Result<(u64, u64)> {
        let days = self.basic_settings().await?.log_retention_days.max(1);
        let cutoff = now_ms() - days * 86_400_000;
        let (logins, operations) = self.store.purge_logs(cutoff).await?;
        if logins + operations > 0 {
            tracing::info!(logins, operations, days, "deleted log entries older than the retention period");
            self.system_audit(
                "logs.purge",
                "logs",
                serde_json::json!({ "login_entries": logins, "operation_entries": operations, "retention_days": days }),
            )
            .await;
        }
        Ok((logins, operations))
    }

    /// [`Service::purge_old_logs`] when this replica has not done it for a day.
    pub(crate) async fn purge_logs_daily(&self) {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let last = self.last_log_purge.load(Ordering::Relaxed);
        if now - last < 86_400_000 || self.last_log_purge.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        if let Err(e) = self.purge_old_logs().await {
            tracing::warn!(error = %e, "log retention: deleting old entries failed; will try again tomorrow");
        }
    }

    pub async fn dashboard(&self, actor: &Actor) -> Result<Dashboard> {
        actor.require_reader()?;
        let (users, active_users) = self.store.count_users().await?;
        let (groups, organisations) = self.store.count_groups_and_orgs().await?;
        let (ok, failed) = self.store.count_logins_since(now_ms() - 86_400_000).await?;
        let (recent, _) = self.store.list_login_events(&bindery_store::LogFilter::default(), 10, 0).await?;
        let (activity_hours, activity_days) = self.login_activity(now_ms()).await?;
        let sync_history = self.sync_history(now_ms()).await?;
        Ok(Dashboard {
            users,
            active_users,
            organisations,
            groups,
            failed_logins_24h: failed,
            successful_logins_24h: ok,
            recent_logins: recent.into_iter().map(login_dto).collect(),
            directory_health: self.health_snapshot().await?,
            live_streams: self.live_streams().await?,
            last_syncs: {
                let mut runs = Vec::new();
                for kind in [bindery_model::DirectoryKind::Ldap, bindery_model::DirectoryKind::LdapHa] {
                    let full = self.store.latest_run(kind.as_str(), bindery_model::RunKind::Sync).await?;
                    let delta = self.store.latest_run(kind.as_str(), bindery_model::RunKind::Delta).await?;
                    if let Some(r) = full.into_iter().chain(delta).max_by_key(|r| r.id) {
                        runs.push(crate::import::run_dto(r));
                    }
                }
                runs
            },
            notifications: self
                .store
                .list_notifications(actor.principal.user_id, 5)
                .await?
                .into_iter()
                .map(|n| bindery_model::Notification {
                    id: n.id,
                    at: fmt_ts(n.created_at),
                    subject: n.subject,
                    body: n.body,
                    email_status: n.email_status,
                })
                .collect(),
            activity_hours,
            activity_days,
            sync_history,
        })
    }

    /// Sign-ins per hour (24) and per day (30), from the hourly counters.
    async fn login_activity(&self, now: i64) -> Result<(Vec<ActivityBucket>, Vec<ActivityBucket>)> {
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 86_400_000;
        let (this_hour, today) = (now.div_euclid(HOUR), now.div_euclid(DAY));
        let (first_hour, first_day) = (this_hour - 23, today - 29);
        let bucket = |start: i64| ActivityBucket { start: fmt_ts(start), ..Default::default() };
        let mut hours: Vec<ActivityBucket> = (0..24).map(|i| bucket((first_hour + i) * HOUR)).collect();
        let mut days: Vec<ActivityBucket> = (0..30).map(|i| bucket((first_day + i) * DAY)).collect();
        let add = |b: &mut ActivityBucket, method: &str, ok: bool, n: i64| match (ok, method) {
            (false, _) => b.failed += n,
            (true, "rest") => b.rest += n,
            (true, "rest-basic" | "basic") => b.basic += n,
            (true, _) => b.web += n,
        };
        for (hour, method, ok, n) in self.store.login_activity(first_day * 24, now).await? {
            if (first_hour..=this_hour).contains(&hour) {
                add(&mut hours[(hour - first_hour) as usize], &method, ok, n);
            }
            let day = hour.div_euclid(24);
            if (first_day..=today).contains(&day) {
                add(&mut days[(day - first_day) as usize], &method, ok, n);
            }
        }
        Ok((hours, days))
    }

    /// The latest sync runs, oldest first, for the history chart.
    async fn sync_history(&self, now: i64) -> Result<Vec<SyncPoint>> {
        let (rows, _) = self.store.list_sync_runs(30, 0).await?;
        Ok(rows
            .into_iter()
            .rev()
            .map(|r| {
                let counts: bindery_model::SyncCounts = serde_json::from_str(&r.summary_json).unwrap_or_default();
                SyncPoint {
                    id: r.id,
                    directory: bindery_model::DirectoryKind::parse(&r.directory).unwrap_or_default(),
                    started_at: fmt_ts(r.started_at),
                    duration_ms: r.finished_at.unwrap_or(now) - r.started_at,
                    state: r.state,
                    dry_run: r.dry_run.0,
                    created: counts.create,
                    updated: counts.update,
                    disabled: counts.disable,
                }
            })
            .collect())
    }
}

/// A DTO as JSON for the operation log (DTOs never carry secrets).
pub(crate) fn j<T: Serialize + ?Sized>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn login_dto(r: bindery_store::LoginEventRow) -> LoginEvent {
    LoginEvent {
        id: r.id,
        at: fmt_ts(r.at),
        username: r.username,
        ip: r.ip,
        user_agent: r.user_agent,
        success: r.success.0,
        reason: r.reason,
        method: r.method,
    }
}

/// Rows per read of a CSV export.
const CSV_PAGE: i64 = 5000;

fn csv_row(out: &mut String, fields: &[&str]) {
    out.push_str(&fields.iter().map(|f| crate::util::csv_field(f)).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
}

fn operation_dto(r: bindery_store::OperationEventRow) -> OperationEvent {
    OperationEvent {
        id: r.id,
        at: fmt_ts(r.at),
        actor: r.actor,
        action: r.action,
        target: r.target,
        before: r.before_json,
        after: r.after_json,
        ip: r.ip,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Log {
    Login,
    Operation,
}

/// The store filter of a log query, or field errors naming what is wrong.
fn log_filter(q: &LogQuery, log: Log) -> Result<bindery_store::LogFilter<'_>> {
    let mut errors = Vec::new();
    let day = |field: &str, v: &Option<String>, errors: &mut Vec<FieldError>| -> Option<i64> {
        let v = LogQuery::given(v)?;
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        match time::Date::parse(v, &fmt) {
            Ok(d) => Some(d.midnight().assume_utc().unix_timestamp() * 1000),
            Err(_) => {
                errors.push(FieldError::new(field, "must be a date, YYYY-MM-DD"));
                None
            }
        }
    };
    let from_ms = day("from", &q.from, &mut errors);
    let until_ms = day("to", &q.to, &mut errors).map(|t| t + 86_400_000);
    if let (Some(f), Some(u)) = (from_ms, until_ms) {
        if u <= f {
            errors.push(FieldError::new("to", "must not be before the first day"));
        }
    }
    let success = match (log, LogQuery::given(&q.result)) {
        (_, None) => None,
        (Log::Login, Some("success")) => Some(true),
        (Log::Login, Some("failure")) => Some(false),
        (Log::Login, Some(_)) => {
            errors.push(FieldError::new("result", "one of: success, failure"));
            None
        }
        (Log::Operation, Some(_)) => {
            errors.push(FieldError::new("result", "the operation log has no result; filter by action"));
            None
        }
    };
    // HTTP Basic sign-ins are logged as `rest-basic`.
    let method = LogQuery::given(&q.method).map(|m| if m == "basic" { "rest-basic" } else { m });
    match (log, method) {
        (_, None) | (Log::Login, Some("web" | "rest" | "rest-basic")) => {}
        (Log::Login, Some(_)) => errors.push(FieldError::new("method", "one of: web, rest, basic")),
        (Log::Operation, Some(_)) => errors.push(FieldError::new("method", "the operation log has no method")),
    }
    let action = LogQuery::given(&q.action);
    if log == Log::Login && action.is_some() {
        errors.push(FieldError::new("action", "the login log has no action; filter by result or method"));
    }
    if let Some(a) = action {
        if a.len() > 100 || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
            errors.push(FieldError::new("action", "an action such as user.create, or a prefix such as user."));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    Ok(bindery_store::LogFilter {
        search: q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()),
        user: LogQuery::given(&q.user),
        success,
        method,
        action,
        from_ms,
        until_ms,
    })
}
