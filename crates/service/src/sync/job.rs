//! A sync run, from "Sync now" or the schedule: enumerate (in full or the
//! changes only) into the snapshot, plan, hold it over the threshold, or
//! apply it and rebuild the directory groups.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bindery_model::{DirectoryKind, RunKind, RunState, SyncCounts, SyncMode, SyncRun, SyncSettings};

use super::first_load::FirstLoad;
use super::lease::Lease;
use super::over_threshold;
use crate::import::run_dto;
use crate::util::now_ms;
use crate::{Actor, Error, Result, Service};

impl Service {
    /// Take the directory's lease, record a new run and register its cancel
    /// flag: the start shared by enumerations and syncs.
    pub(crate) async fn begin_run(
        &self,
        kind: DirectoryKind,
        run_kind: RunKind,
        started_by: &str,
        dry_run: bool,
    ) -> Result<(i64, Lease, Arc<AtomicBool>)> {
        // The lease and the run holding it in one transaction.
        let lease = Lease::staging(kind);
        let id = self
            .store
            .start_leased_run(lease.claim(), kind.as_str(), run_kind, started_by, dry_run, now_ms())
            .await?
            .ok_or_else(|| super::lease::lease_held(kind))?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.jobs.map().insert(id, cancel.clone());
        Ok((id, lease, cancel))
    }

    /// "Sync now" (or its dry-run): start the job in the background.
    pub async fn start_sync(&self, actor: &Actor, kind: DirectoryKind, dry_run: bool) -> Result<SyncRun> {
        actor.require_admin()?;
        let run = self.launch_sync(kind, &actor.principal.username, dry_run).await?;
        self.audit(
            actor,
            if dry_run { "directory.sync_dry_run" } else { "directory.sync" },
            &format!("directory:{}", kind.as_str()),
            None,
            Some(serde_json::json!({ "run": run.id })),
        )
        .await;
        Ok(run)
    }

    pub(super) async fn launch_sync(&self, kind: DirectoryKind, started_by: &str, dry_run: bool) -> Result<SyncRun> {
        let stored = self.load_directory(kind).await?;
        if !stored.settings.enabled {
            return Err(Error::Conflict(format!("{} is not enabled", kind.label())));
        }
        let cfg = Self::resolve(&stored, &Self::stored_input(&stored.settings))?;
        let (settings, _) = self.load_sync_settings(kind).await?;
        let (run_kind, why_full) = self.run_kind_for(kind, &settings).await?;
        // The run's transactions commit without waiting for their flush;
        // its end flushes them (`Store::within_run`).
        let (id, lease, cancel) = bindery_store::Store::within_run(self.begin_run(kind, run_kind, started_by, dry_run)).await?;
        let svc = self.clone();
        tokio::spawn(async move {
            let keep = lease.keep_alive(svc.store.clone());
            let notes = why_full.into_iter().collect();
            if let Err(e) =
                bindery_store::Store::within_run(svc.sync_job(kind, id, run_kind, &cfg, &settings, dry_run, &cancel, notes)).await
            {
                tracing::error!(run = id, error = %e, "sync failed");
                // A run that failed before the end of its apply.
                svc.end_bulk_load_within_run(id).await;
                let _ = svc.store.finish_run(id, RunState::Failed, false, &e.to_string(), "{}", now_ms()).await;
            }
            svc.jobs.map().remove(&id);
            keep.release(&svc.store).await;
            // Once the run has ended and its lease is free (the next run
            // need not wait for it): the import table's own indexes after
            // a first sync (`bindery_store` `bulk.rs`).
            svc.end_bulk_load(id).await;
            svc.notify_recipients(id, &settings).await;
        });
        Ok(run_dto(self.store.get_run(id).await?.ok_or(Error::NotFound("run"))?))
    }

    /// Whether a run reads changes only (`delta`) or enumerates everything
    /// (`sync`), and why a run in delta mode is a full one.
    async fn run_kind_for(&self, kind: DirectoryKind, settings: &SyncSettings) -> Result<(RunKind, Option<String>)> {
        if settings.mode != SyncMode::Delta {
            return Ok((RunKind::Sync, None));
        }
        let dir = kind.as_str();
        let full = match self.store.last_complete_full_sync(dir).await? {
            None => Some("delta mode: no complete full enumeration yet, so this run is one".to_string()),
            Some(t) if now_ms() - t >= settings.full_every_hours * 3_600_000 => Some(format!(
                "delta mode: the last complete full enumeration is more than {} h old, so this run is one (the safety net)",
                settings.full_every_hours
            )),
            Some(_) if self.store.delta_cookies(dir).await?.is_empty() => Some(
                "delta mode: no delta cookie is stored (the settings changed, or the last full run could not record one), so this run is a full enumeration"
                    .to_string(),
            ),
            Some(_) => None,
        };
        Ok(match full {
            Some(why) => (RunKind::Sync, Some(why)),
            None => (RunKind::Delta, None),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_job(
        &self,
        kind: DirectoryKind,
        id: i64,
        run_kind: RunKind,
        cfg: &bindery_directory::DirectoryConfig,
        settings: &SyncSettings,
        dry_run: bool,
        cancel: &AtomicBool,
        mut notes: Vec<String>,
    ) -> Result<()> {
        let t = std::time::Instant::now();
        let mut delta_read = run_kind == RunKind::Delta;
        let mut groups_changed = true;
        let e = if delta_read {
            match self.delta_into_staging(kind, id, cfg, settings, cancel, &mut notes).await? {
                Ok(read) => {
                    groups_changed = read.groups_changed;
                    read.e
                }
                Err(why) => {
                    delta_read = false;
                    // A stale or refused cookie: this run enumerates everything instead.
                    self.store.set_run_kind(id, RunKind::Sync).await?;
                    self.store.clear_delta_cookies(kind.as_str()).await?;
                    notes.push(format!("the delta read was refused ({why}): this run fell back to a full enumeration"));
                    self.full_into_staging(kind, id, cfg, settings, dry_run, cancel, &mut notes).await?
                }
            }
        } else {
            self.full_into_staging(kind, id, cfg, settings, dry_run, cancel, &mut notes).await?
        };
        if e.bulk_loaded {
            notes.push(super::BULK_LOAD_NOTE.into());
        }
        if e.cancelled {
            self.end_bulk_load_within_run(id).await;
            self.store.finish_run(id, RunState::Cancelled, false, &e.error, "{}", now_ms()).await?;
            return Ok(());
        }
        let enumerate_ms = t.elapsed().as_millis() as i64;
        let t = std::time::Instant::now();
        let (mut counts, rules) = self.plan(kind, cfg, id, settings, e.complete).await?;
        // A first sync's pages created these already (`first_load`).
        counts.create += e.created as i64;
        counts.applied += e.created as i64;
        counts.notes.splice(0..0, notes);
        counts.enumerate_ms = enumerate_ms;
        counts.plan_ms = t.elapsed().as_millis() as i64;
        if !e.complete {
            let what = if delta_read { "the delta read" } else { "the enumeration" };
            counts.notes.push(format!("nobody was disabled: {what} was incomplete ({})", e.error));
        } else if !settings.disable_missing {
            counts.notes.push("disabling is off: users missing from or disabled in the directory are kept".into());
        }
        if dry_run {
            counts.notes.push("dry run: nothing was applied".into());
            if self.end_bulk_load_within_run(id).await {
                counts.notes.push(super::BULK_LOAD_NOTE.into());
            }
            return self.finish_sync(id, RunState::Done, e.complete, &e.error, &counts).await;
        }
        if over_threshold(counts.disable, counts.directory_users, settings.threshold_percent) {
            counts.notes.push(format!(
                "held for approval: it would disable {} of {} directory users, more than the threshold of {}%",
                counts.disable, counts.directory_users, settings.threshold_percent
            ));
            if self.end_bulk_load_within_run(id).await {
                counts.notes.push(super::BULK_LOAD_NOTE.into());
            }
            return self.finish_sync(id, RunState::Held, e.complete, &e.error, &counts).await;
        }
        self.apply(kind, id, &mut counts, Some(&rules)).await?;
        // The groups are rebuilt from the snapshot's memberships: not when
        // a delta read changed none, or a full enumeration wrote no row and
        // nothing was applied (no link changed), after a sync that rebuilt them.
        let memberships_same = if delta_read { !groups_changed } else { !e.changed && counts.applied == 0 };
        if e.complete && memberships_same && self.groups_current(kind, id).await? {
            counts.notes.push(match delta_read {
                true => "directory groups not rebuilt: the delta read changed no membership".into(),
                false => "directory groups not rebuilt: the enumeration changed no row and nothing was applied".into(),
            });
        } else if e.complete {
            self.sync_groups(kind, &mut counts).await?;
        } else {
            counts.notes.push("group memberships were not changed: the enumeration was incomplete".into());
        }
        let state = if e.complete { RunState::Done } else { RunState::Failed };
        self.finish_sync(id, state, e.complete, &e.error, &counts).await
    }

    /// A full enumeration into the snapshot. In delta mode, a cookie per
    /// search OU is read first (syncrepl: the suffix's `contextCSN`;
    /// DirSync: the server's cookie; USN: the highest committed USN with
    /// the domain controller's invocation id) and stored once the
    /// enumeration completed on the same server: the next run reads only
    /// what changed after that moment (`delta.rs`).
    #[allow(clippy::too_many_arguments)]
    async fn full_into_staging(
        &self,
        kind: DirectoryKind,
        id: i64,
        cfg: &bindery_directory::DirectoryConfig,
        settings: &SyncSettings,
        dry_run: bool,
        cancel: &AtomicBool,
        notes: &mut Vec<String>,
    ) -> Result<crate::import::Enumerated> {
        let start = self.start_cookies(kind, cfg, settings, notes).await?;
        let load = match dry_run {
            true => None,
            false => self.first_load(kind, id, cfg, settings).await?.map(Arc::new),
        };
        let mut e = self.enumerate_into_staging(kind, id, cfg, cancel, load.clone()).await?;
        if let Some(load) = &load {
            e.created = self.end_first_load(kind, id, load, &e, notes).await?;
        }
        self.record_cookies(kind, start, &e, notes).await?;
        Ok(e)
    }

    /// A first sync (`first_load`): when the directory has no snapshot row
    /// and no user of its own, its pages create their clean entries' users
    /// as they are staged. The rules are recorded as the plan's now: the
    /// plan after the enumeration then reads only the rows the pages left
    /// unsettled.
    async fn first_load(
        &self,
        kind: DirectoryKind,
        id: i64,
        cfg: &bindery_directory::DirectoryConfig,
        settings: &SyncSettings,
    ) -> Result<Option<FirstLoad>> {
        if !self.store.first_load_possible(kind.as_str(), kind.source().as_str()).await? {
            return Ok(None);
        }
        // The plan's rules after a complete enumeration (after an
        // incomplete one the plan's rules differ, and it plans every row).
        let inputs = self.plan_inputs(kind, cfg, settings, true).await?;
        let load = FirstLoad::new(cfg.clone(), inputs, id);
        self.store.put_plan_rules(kind.as_str(), load.rules()).await?;
        Ok(Some(load))
    }

    /// After a first sync's enumeration: the users created for rows the
    /// status computation found sharing a username or email with another
    /// entry, or an email with a Bindery user (or every user, if the run
    /// was cancelled), are taken back. Returns how many created users stay.
    async fn end_first_load(
        &self,
        kind: DirectoryKind,
        id: i64,
        load: &FirstLoad,
        e: &crate::import::Enumerated,
        notes: &mut Vec<String>,
    ) -> Result<u64> {
        if let Some(why) = load.failed() {
            notes.push(format!(
                "first sync: a page could not create its users ({why}); it and the pages after it were only staged, and the plan decided their rows"
            ));
        }
        let created = load.created();
        if created == 0 {
            return Ok(0);
        }
        let dir = kind.as_str();
        let undone = self.store.undo_first_load(dir, id, e.cancelled).await?;
        if undone > 0 {
            self.store.compute_staged_status(dir).await?;
        }
        // The plan's items come after the pages' (all applied).
        self.store.pass_first_load_items(id).await?;
        let kept = created - undone;
        notes.push(match undone {
            0 => format!("first sync: {kept} users were created page by page as the enumeration read them"),
            _ if e.cancelled => format!("cancelled: the {undone} users its pages had created were deleted again"),
            _ => format!(
                "first sync: {kept} users were created page by page as the enumeration read them; {undone} more were \
                 deleted again once every entry was read, because another entry shares their username or email, or a Bindery \
                 user has their email"
            ),
        });
        Ok(kept)
    }

    /// End a bulk load the run began, if it is still pending, once the run
    /// has ended; logged, not returned: the run's own result is recorded
    /// already, and the next run or start builds the indexes again.
    /// Returns whether it built any.
    pub(crate) async fn end_bulk_load(&self, run: i64) -> bool {
        bulk_load_ended(run, self.store.end_bulk_load().await)
    }

    /// [`Service::end_bulk_load`] inside the run, before what it reads
    /// next: the indexes a run reads (PostgreSQL; the import table's own
    /// wait for the run's end, `Store::end_bulk_load_within_run`).
    pub(crate) async fn end_bulk_load_within_run(&self, run: i64) -> bool {
        bulk_load_ended(run, self.store.end_bulk_load_within_run().await)
    }

    pub(crate) async fn finish_sync(&self, id: i64, state: RunState, complete: bool, error: &str, counts: &SyncCounts) -> Result<()> {
        let json = serde_json::to_string(counts).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.finish_run(id, state, complete, error, &json, now_ms()).await?;
        Ok(())
    }

    /// Stop a running sync's enumeration between pages (this process's runs):
    /// the run ends cancelled and applies nothing.
    pub async fn cancel_sync(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        self.cancel_run(id)
    }
}

/// Whether ending a bulk load built anything; a failure is logged, not
/// returned (the next run or start builds the indexes again).
fn bulk_load_ended(run: i64, ended: bindery_store::Result<bool>) -> bool {
    ended.unwrap_or_else(|e| {
        tracing::error!(run, error = %e, "building the import table's indexes after a bulk load failed");
        false
    })
}
