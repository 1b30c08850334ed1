//! A run held over the threshold: approved (its plan applied as shown) or
//! rejected.

use bindery_model::{DirectoryKind, ItemOutcome, RunState, SyncCounts, SyncRun};

use crate::import::run_dto;
use crate::util::now_ms;
use crate::{Actor, Error, Result, Service};

impl Service {
    /// Approve a held run: apply its plan, unless the snapshot it was
    /// computed from has been replaced since.
    pub async fn approve_sync(&self, actor: &Actor, id: i64) -> Result<SyncRun> {
        actor.require_admin()?;
        let run = self.store.get_run(id).await?.filter(|r| r.kind.is_sync()).ok_or(Error::NotFound("sync run"))?;
        if run.state != RunState::Held {
            return Err(Error::Conflict(format!("only a held run can be approved (this one is {})", run.state)));
        }
        let kind = DirectoryKind::parse(&run.directory).ok_or(Error::NotFound("directory"))?;
        if self.store.latest_staging_run(kind.as_str()).await? != Some(id) {
            return Err(Error::Conflict("the directory was enumerated again after this run; start a new sync".into()));
        }
        let stored = self.load_directory(kind).await?;
        // The stored configuration must still be valid to apply anything.
        Self::resolve(&stored, &Self::stored_input(&stored.settings))?;
        let lease = self.take_staging_lease(kind).await?;
        if !self.store.set_run_state(id, RunState::Held, RunState::Running).await? {
            lease.release(&self.store).await;
            return Err(Error::Conflict("the run is no longer held".into()));
        }
        lease.bind_run(&self.store, id).await?;
        let (settings, _) = self.load_sync_settings(kind).await?;
        let mut counts: SyncCounts = serde_json::from_str(&run.summary_json).unwrap_or_default();
        counts.notes.push(format!("approved by {}", actor.principal.username));
        self.audit(
            actor,
            "directory.sync_approve",
            &format!("sync_run:{id}"),
            None,
            Some(serde_json::json!({ "disable": counts.disable })),
        )
        .await;
        let svc = self.clone();
        tokio::spawn(async move {
            let keep = lease.keep_alive(svc.store.clone());
            let r = bindery_store::Store::within_run(async {
                // The rules may have changed since the plan: nothing is settled.
                svc.apply(kind, id, &mut counts, None).await?;
                if run.complete.0 {
                    svc.sync_groups(kind, &mut counts).await?;
                }
                svc.finish_sync(id, RunState::Done, run.complete.0, &run.error, &counts).await
            })
            .await;
            if let Err(e) = r {
                tracing::error!(run = id, error = %e, "applying an approved sync failed");
                let _ = svc.store.finish_run(id, RunState::Failed, false, &e.to_string(), "{}", now_ms()).await;
            }
            keep.release(&svc.store).await;
            svc.notify_recipients(id, &settings).await;
        });
        Ok(run_dto(self.store.get_run(id).await?.ok_or(Error::NotFound("run"))?))
    }

    /// Reject a held run: nothing of its plan is applied.
    pub async fn reject_sync(&self, actor: &Actor, id: i64) -> Result<SyncRun> {
        actor.require_admin()?;
        let run = self.store.get_run(id).await?.filter(|r| r.kind.is_sync()).ok_or(Error::NotFound("sync run"))?;
        if !self.store.set_run_state(id, RunState::Held, RunState::Rejected).await? {
            return Err(Error::Conflict(format!("only a held run can be rejected (this one is {})", run.state)));
        }
        self.store.close_planned_items(id, ItemOutcome::Rejected).await?;
        self.audit(actor, "directory.sync_reject", &format!("sync_run:{id}"), None, None).await;
        Ok(run_dto(self.store.get_run(id).await?.ok_or(Error::NotFound("run"))?))
    }
}
