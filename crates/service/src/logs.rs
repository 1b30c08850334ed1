//! The operation (audit) log, the login log and the dashboard.

use bindery_model::{Dashboard, ListQuery, LoginEvent, OperationEvent, Page};
use bindery_store::NewOperationEvent;
use serde::Serialize;

use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Result, Service};

impl Service {
    /// Record an administrative change. `before`/`after` are DTOs that never
    /// carry secrets. A failure to write is logged, not returned: the change
    /// itself already happened.
    /// An operation Bindery did by itself (sync, directory re-validation).
    pub(crate) async fn system_audit(&self, action: &str, target: &str, after: serde_json::Value) {
        self.system_change(action, target, None, after).await
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

    pub async fn login_log(&self, actor: &Actor, q: &ListQuery) -> Result<Page<LoginEvent>> {
        actor.require_reader()?;
        let (rows, total) = self.store.list_login_events(q.search(), q.per_page(), (q.page() - 1) * q.per_page()).await?;
        Ok(Page { items: rows.into_iter().map(login_dto).collect(), total, page: q.page(), per_page: q.per_page() })
    }

    pub async fn operation_log(&self, actor: &Actor, q: &ListQuery) -> Result<Page<OperationEvent>> {
        actor.require_reader()?;
        let (rows, total) = self.store.list_operation_events(q.search(), q.per_page(), (q.page() - 1) * q.per_page()).await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| OperationEvent {
                    id: r.id,
                    at: fmt_ts(r.at),
                    actor: r.actor,
                    action: r.action,
                    target: r.target,
                    before: r.before_json,
                    after: r.after_json,
                    ip: r.ip,
                })
                .collect(),
            total,
            page: q.page(),
            per_page: q.per_page(),
        })
    }

    pub async fn dashboard(&self, actor: &Actor) -> Result<Dashboard> {
        actor.require_reader()?;
        let (users, active_users) = self.store.count_users().await?;
        let (groups, organisations) = self.store.count_groups_and_orgs().await?;
        let (ok, failed) = self.store.count_logins_since(now_ms() - 86_400_000).await?;
        let (recent, _) = self.store.list_login_events(None, 10, 0).await?;
        Ok(Dashboard {
            users,
            active_users,
            organisations,
            groups,
            failed_logins_24h: failed,
            successful_logins_24h: ok,
            recent_logins: recent.into_iter().map(login_dto).collect(),
            directory_health: self.health_snapshot().await?,
            last_syncs: {
                let mut runs = Vec::new();
                for kind in [bindery_model::DirectoryKind::Ldap, bindery_model::DirectoryKind::LdapHa] {
                    if let Some(r) = self.store.latest_run(kind.as_str(), bindery_model::RunKind::Sync).await? {
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
        })
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
