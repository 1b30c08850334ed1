//! Sync: the same job for "Sync now" and the schedule — enumerate into the
//! staging snapshot, compute the plan with a pure function, then apply it
//! in chunked transactions. An incomplete enumeration disables nobody; a
//! plan that would disable more than the threshold waits for approval.
//! Leases in the database keep replicas from running a directory's job
//! twice; a compare-and-set on `next_run_at` makes one replica own each
//! firing of the schedule.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use std::collections::HashMap;

use bindery_model::{
    DeltaSupportInfo, DirectoryKind, ItemOutcome, Page, Role, RunKind, RunState, SyncAction, SyncCounts, SyncItem, SyncMode, SyncRun,
    SyncRunDetail, SyncSettings, SyncSettingsView, UserSource,
};
use bindery_store::{Activation, Change, ItemRow, NewItem, OrgSource, PlanRow, Store, UserRow};

use crate::identity::{self, Entry, Held};
use crate::import::run_dto;
use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Error, Result, Service};

/// Rows per plan read, per item write, and per apply transaction.
const CHUNK: i64 = 1000;
const APPLY_CHUNK: i64 = 500;
const LEASE_TTL_MS: i64 = 60_000;
const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(15);

// ----- the plan ---------------------------------------------------------

/// The Bindery user a plan row's entry resolved to, as the rule takes it.
fn plan_user(r: &PlanRow) -> Option<UserRow> {
    let id = r.user_id?;
    Some(UserRow {
        id,
        username: r.user_username.clone().unwrap_or_default(),
        username_key: crate::util::username_key(r.user_username.as_deref().unwrap_or_default()),
        name: r.user_name.clone().unwrap_or_default(),
        email: r.user_email.clone().unwrap_or_default(),
        role: r.user_role.as_deref().and_then(Role::parse).unwrap_or_default(),
        source: r.user_source.as_deref().and_then(UserSource::parse).unwrap_or_default(),
        is_active: r.user_active == Some(1),
        password_hash: None,
        must_change_password: false,
        external_id: r.user_external_id.clone(),
        created_at: 0,
        updated_at: 0,
        last_login_at: None,
        validated_at: None,
        dir_disabled: r.user_dir_disabled == Some(1),
        role_pinned: r.user_role_pinned == Some(1),
    })
}

/// A hash of everything besides the row and its user that a plan reads: the
/// group mapping, the attribute map, the policy (disabling, organisations
/// for new users) and the organisations the mapping names. A change to any
/// of them plans every row again.
fn plan_rules(cfg: &bindery_directory::DirectoryConfig, policy: &identity::Policy, orgs: &[bindery_store::OrganisationRow]) -> String {
    let orgs: Vec<(i64, &str)> = orgs.iter().map(|o| (o.id, o.name.as_str())).collect();
    let parts = [
        format!("{:?}", cfg.group_mappings),
        format!("{:?}", cfg.attr_map),
        format!("{:?}", cfg.group_mode),
        format!("{policy:?}"),
        format!("{orgs:?}"),
    ];
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", bindery_store::stable_hash(&parts) as u64)
}

/// What a delta cookie and a detected delta method belong to: the servers,
/// the account and the searches. Test connection's finding is shown for
/// the saved settings only while they have this fingerprint.
pub(crate) fn delta_fingerprint(cfg: &bindery_directory::DirectoryConfig) -> String {
    let servers: Vec<String> = cfg.servers.iter().map(|s| s.to_string()).collect();
    let parts = [servers.join(" "), cfg.starttls.to_string(), cfg.bind_dn.clone(), cfg.search_ous.join("|"), cfg.search_filter.clone()];
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", bindery_store::stable_hash(&parts) as u64)
}

/// What a change is called in a run's items.
pub fn action_of(c: &Change) -> SyncAction {
    match c {
        Change::Create { .. } => SyncAction::Create,
        Change::Update { update, .. } => match update.activation {
            Some(Activation::Disable) => SyncAction::Disable,
            Some(Activation::Enable) => SyncAction::Enable,
            None => SyncAction::Update,
        },
        Change::Conflict { .. } => SyncAction::Conflict,
        Change::Refuse { .. } | Change::Nothing { .. } => SyncAction::Failed,
    }
}

/// Whether a plan must wait for approval: it would disable more than
/// `threshold_percent` of the directory's users.
pub fn over_threshold(disables: i64, directory_users: i64, threshold_percent: i64) -> bool {
    disables > 0 && disables * 100 > threshold_percent * directory_users
}

// ----- schedule -------------------------------------------------------------

/// When a sync runs: a crontab (which wins) or every N hours.
pub enum Schedule {
    Cron(Box<croner::Cron>),
    Every(i64),
}

/// Whether a detected delta method (`syncrepl`, `dirsync`, `usn`) has a
/// live change stream: syncrepl refreshAndPersist on OpenLDAP, change
/// notification with DirSync or USN on Active Directory.
pub(crate) fn live_method(method: &str) -> bool {
    use bindery_directory::delta::DeltaMethod;
    matches!(DeltaMethod::parse(method), DeltaMethod::Syncrepl | DeltaMethod::Dirsync | DeltaMethod::Usn)
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

// ----- leases ---------------------------------------------------------------

/// The lease on a directory's staging snapshot: one enumeration or sync
/// at a time per directory, across every replica sharing the database.
pub(crate) struct Lease {
    name: String,
    holder: String,
}

pub(crate) struct KeptLease {
    lease: Lease,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub(crate) async fn bind_run(&self, store: &Store, run_id: i64) -> Result<()> {
        store.acquire_lease(&self.name, &self.holder, run_id, now_ms(), LEASE_TTL_MS).await?;
        Ok(())
    }

    /// Give the lease back (one that was never kept alive).
    pub(crate) async fn release(self, store: &Store) {
        if let Err(e) = store.release_lease(&self.name, &self.holder).await {
            tracing::warn!(error = %e, "releasing the sync lease failed (it expires by itself)");
        }
    }

    /// Renew the lease in the background until released.
    pub(crate) fn keep_alive(self, store: Store) -> KeptLease {
        let (name, holder) = (self.name.clone(), self.holder.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                match store.renew_lease(&name, &holder, now_ms(), LEASE_TTL_MS).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(lease = %name, "sync lease lost"),
                    Err(e) => tracing::warn!(lease = %name, error = %e, "renewing the sync lease failed"),
                }
            }
        });
        KeptLease { lease: self, renew }
    }
}

impl KeptLease {
    pub(crate) async fn release(self, store: &Store) {
        self.renew.abort();
        self.lease.release(store).await;
    }
}

fn item_dto(r: ItemRow) -> SyncItem {
    SyncItem { id: r.id, action: r.action, username: r.username, reason: r.reason, outcome: r.outcome, error: r.error }
}

impl Service {
    pub(crate) async fn take_staging_lease(&self, kind: DirectoryKind) -> Result<Lease> {
        let lease = Lease { name: format!("staging:{}", kind.as_str()), holder: crate::util::random_token() };
        if !self.store.acquire_lease(&lease.name, &lease.holder, 0, now_ms(), LEASE_TTL_MS).await? {
            return Err(Error::Conflict(format!("a user enumeration or sync of {} is already running", kind.label())));
        }
        Ok(lease)
    }

    /// Take the directory's lease, record a new run and register its cancel
    /// flag: the start shared by enumerations and syncs.
    pub(crate) async fn begin_run(
        &self,
        kind: DirectoryKind,
        run_kind: RunKind,
        started_by: &str,
        dry_run: bool,
    ) -> Result<(i64, Lease, Arc<AtomicBool>)> {
        let lease = self.take_staging_lease(kind).await?;
        let id = self.store.start_run(kind.as_str(), run_kind, started_by, dry_run, now_ms()).await?;
        lease.bind_run(&self.store, id).await?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.jobs.map().insert(id, cancel.clone());
        Ok((id, lease, cancel))
    }

    // ----- settings ---------------------------------------------------------

    pub(crate) async fn load_sync_settings(&self, kind: DirectoryKind) -> Result<(SyncSettings, Option<i64>)> {
        Ok(match self.store.get_sync_settings(kind.as_str()).await? {
            Some((json, next)) => (serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored sync settings: {e}")))?, next),
            None => (SyncSettings::default(), None),
        })
    }

    fn sync_view(settings: SyncSettings, next: Option<i64>, detected: Option<DeltaSupportInfo>) -> SyncSettingsView {
        let (schedule, next_runs) = match Schedule::of(&settings) {
            Ok(Some(s)) => {
                let mut runs = Vec::new();
                let mut t = next.unwrap_or_else(|| s.next_after(now_ms()).unwrap_or(0));
                for _ in 0..5 {
                    runs.push(fmt_ts(t));
                    match s.next_after(t) {
                        Some(n) => t = n,
                        None => break,
                    }
                }
                (s.describe(), runs)
            }
            _ => ("off".to_string(), vec![]),
        };
        SyncSettingsView { settings, schedule, next_runs, detected, live: None }
    }

    pub async fn sync_settings(&self, actor: &Actor, kind: DirectoryKind) -> Result<SyncSettingsView> {
        actor.require_reader()?;
        let (s, next) = self.load_sync_settings(kind).await?;
        let detected = self.detected_delta(kind).await?;
        let mut view = Self::sync_view(s, next, detected);
        view.live = self.live_view(kind, &view.settings).await?;
        Ok(view)
    }

    /// The live stream's state for the Sync card, when it is on.
    async fn live_view(&self, kind: DirectoryKind, settings: &SyncSettings) -> Result<Option<bindery_model::LiveStatus>> {
        Ok(if settings.live { Some(self.live_status_of(kind).await?) } else { None })
    }

    /// The delta method the last Test connection found for the saved
    /// settings (`None` when they were not tested since they changed).
    pub(crate) async fn detected_delta(&self, kind: DirectoryKind) -> Result<Option<DeltaSupportInfo>> {
        let Some(row) = self.store.delta_support(kind.as_str()).await? else { return Ok(None) };
        let stored = match self.load_directory(kind).await {
            Ok(s) => s,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(cfg) = Self::resolve(&stored, &Self::stored_input(&stored.settings)) else { return Ok(None) };
        if delta_fingerprint(&cfg) != row.fingerprint {
            return Ok(None);
        }
        Ok(Some(DeltaSupportInfo {
            method: row.method,
            sees_deletions: row.sees_deletions,
            reason: row.reason,
            server: row.server,
            detected_at: fmt_ts(row.detected_at),
        }))
    }

    /// Validate and save; nothing is saved when any field is wrong.
    pub async fn save_sync_settings(&self, actor: &Actor, kind: DirectoryKind, input: &SyncSettings) -> Result<SyncSettingsView> {
        actor.require_admin()?;
        let mut s = input.clone();
        s.crontab = s.crontab.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut errors = Vec::new();
        let schedule = match Schedule::of(&s) {
            Ok(x) => x,
            Err((field, msg)) => {
                errors.push(bindery_model::FieldError::new(field, msg));
                None
            }
        };
        if !(0..=8760).contains(&s.interval_hours) {
            errors.push(bindery_model::FieldError::new("interval_hours", "must be between 0 (none) and 8760"));
        }
        if !(0..=100).contains(&s.threshold_percent) {
            errors.push(bindery_model::FieldError::new("threshold_percent", "must be between 0 and 100"));
        }
        if s.live && !s.disable_missing {
            errors.push(bindery_model::FieldError::new(
                "live",
                "live deprovisioning disables users: turn on disabling users missing from or disabled in the directory",
            ));
        }
        if !(1..=8760).contains(&s.full_every_hours) {
            errors.push(bindery_model::FieldError::new("full_every_hours", "must be between 1 and 8760"));
        }
        let detected = self.detected_delta(kind).await?;
        if s.mode == SyncMode::Delta {
            match &detected {
                None => errors.push(bindery_model::FieldError::new(
                    "mode",
                    "delta needs a delta method: run Test connection on the saved directory settings first",
                )),
                Some(d) if d.method == "none" => {
                    errors.push(bindery_model::FieldError::new("mode", format!("this directory cannot be read for changes: {}", d.reason)))
                }
                Some(_) => {}
            }
        }
        if s.live {
            match &detected {
                Some(d) if live_method(&d.method) => {}
                Some(d) => errors.push(bindery_model::FieldError::new(
                    "live",
                    format!(
                        "live deprovisioning needs OpenLDAP syncrepl or Active Directory DirSync / USN; Test connection detected {}",
                        d.method
                    ),
                )),
                None => errors.push(bindery_model::FieldError::new(
                    "live",
                    "live deprovisioning needs a delta method (syncrepl, DirSync or USN): run Test connection on the saved directory settings first",
                )),
            }
        }
        let orgs = self.store.list_organisations().await?;
        if let Some(bad) = s.organisation_ids.iter().find(|id| !orgs.iter().any(|o| o.id == **id)) {
            errors.push(bindery_model::FieldError::new("organisation_ids", format!("no organisation with id {bad}")));
        }
        s.organisation_ids.sort_unstable();
        s.organisation_ids.dedup();
        let mut recipients = Vec::new();
        for r in s.recipients.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            match self.store.find_user(&crate::util::username_key(r)).await? {
                Some(u) => recipients.push(u.username),
                None => errors.push(bindery_model::FieldError::new("recipients", format!("no user named {r}"))),
            }
        }
        recipients.dedup();
        s.recipients = recipients;
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = now_ms();
        let next = schedule.as_ref().and_then(|sch| sch.next_after(now));
        let json = serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_sync_settings(kind.as_str(), &json, next, now).await?;
        self.audit(
            actor,
            "directory.sync_settings",
            &format!("directory:{}", kind.as_str()),
            None,
            Some(serde_json::to_value(&s).unwrap_or_default()),
        )
        .await;
        let mut view = Self::sync_view(s, next, detected);
        view.live = self.live_view(kind, &view.settings).await?;
        Ok(view)
    }

    // ----- runs -------------------------------------------------------------

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

    async fn launch_sync(&self, kind: DirectoryKind, started_by: &str, dry_run: bool) -> Result<SyncRun> {
        let stored = self.load_directory(kind).await?;
        if !stored.settings.enabled {
            return Err(Error::Conflict(format!("{} is not enabled", kind.label())));
        }
        let cfg = Self::resolve(&stored, &Self::stored_input(&stored.settings))?;
        let (settings, _) = self.load_sync_settings(kind).await?;
        let (run_kind, why_full) = self.run_kind_for(kind, &settings).await?;
        let (id, lease, cancel) = self.begin_run(kind, run_kind, started_by, dry_run).await?;
        let svc = self.clone();
        tokio::spawn(async move {
            let keep = lease.keep_alive(svc.store.clone());
            let notes = why_full.into_iter().collect();
            if let Err(e) = svc.sync_job(kind, id, run_kind, &cfg, &settings, dry_run, &cancel, notes).await {
                tracing::error!(run = id, error = %e, "sync failed");
                let _ = svc.store.finish_run(id, RunState::Failed, false, &e.to_string(), "{}", now_ms()).await;
            }
            svc.jobs.map().remove(&id);
            keep.release(&svc.store).await;
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
                    self.full_into_staging(kind, id, cfg, settings, cancel, &mut notes).await?
                }
            }
        } else {
            self.full_into_staging(kind, id, cfg, settings, cancel, &mut notes).await?
        };
        if e.cancelled {
            self.store.finish_run(id, RunState::Cancelled, false, &e.error, "{}", now_ms()).await?;
            return Ok(());
        }
        let enumerate_ms = t.elapsed().as_millis() as i64;
        let t = std::time::Instant::now();
        let (mut counts, rules) = self.plan(kind, cfg, id, settings, e.complete).await?;
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
            return self.finish_sync(id, RunState::Done, e.complete, &e.error, &counts).await;
        }
        if over_threshold(counts.disable, counts.directory_users, settings.threshold_percent) {
            counts.notes.push(format!(
                "held for approval: it would disable {} of {} directory users, more than the threshold of {}%",
                counts.disable, counts.directory_users, settings.threshold_percent
            ));
            return self.finish_sync(id, RunState::Held, e.complete, &e.error, &counts).await;
        }
        self.apply(kind, id, &mut counts, Some(&rules)).await?;
        if e.complete && delta_read && !groups_changed && self.groups_current(kind, id).await? {
            counts.notes.push("directory groups not rebuilt: the delta read changed no membership".into());
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
    async fn full_into_staging(
        &self,
        kind: DirectoryKind,
        id: i64,
        cfg: &bindery_directory::DirectoryConfig,
        settings: &SyncSettings,
        cancel: &AtomicBool,
        notes: &mut Vec<String>,
    ) -> Result<crate::import::Enumerated> {
        let start = self.start_cookies(kind, cfg, settings, notes).await?;
        let e = self.enumerate_into_staging(kind, id, cfg, cancel).await?;
        self.record_cookies(kind, start, &e, notes).await?;
        Ok(e)
    }

    pub(crate) async fn finish_sync(&self, id: i64, state: RunState, complete: bool, error: &str, counts: &SyncCounts) -> Result<()> {
        let json = serde_json::to_string(counts).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.finish_run(id, state, complete, error, &json, now_ms()).await?;
        Ok(())
    }

    /// Compute the plan over the snapshot with the one identity rule and
    /// record each change as a run item (the typed change, as JSON). Rows
    /// whose last plan needed nothing under the same key (the row, the
    /// rules, the linked user: [`bindery_store::Store::plan_rows`]) are not
    /// read again. Returns the counts and the rules' hash.
    async fn plan(
        &self,
        kind: DirectoryKind,
        cfg: &bindery_directory::DirectoryConfig,
        id: i64,
        settings: &SyncSettings,
        complete: bool,
    ) -> Result<(SyncCounts, String)> {
        let dir = kind.as_str();
        let mut counts = SyncCounts { directory_users: self.store.count_staged(dir).await?, ..Default::default() };
        let all_orgs = self.store.list_organisations().await?;
        let with_mappings = !cfg.group_mappings.is_empty();
        let chosen: Vec<(i64, OrgSource)> = if settings.organisation_ids.is_empty() {
            self.store.default_organisation().await?.map(|o| (o.id, OrgSource::Default)).into_iter().collect()
        } else {
            settings.organisation_ids.iter().map(|o| (*o, OrgSource::Selection)).collect()
        };
        let policy = identity::Policy {
            source: kind.source(),
            disable: settings.disable_missing && complete,
            create: true,
            create_disabled: false,
            organisations: chosen,
            add_to_existing: vec![],
        };
        let rules = plan_rules(cfg, &policy, &all_orgs);
        let mut after = 0;
        loop {
            let rows = self.store.plan_rows(dir, &rules, after, CHUNK).await?;
            let Some(last) = rows.last() else { break };
            after = last.staged_id;
            let user_ids: Vec<i64> = rows.iter().filter_map(|r| r.user_id).collect();
            let mut memberships: HashMap<i64, Vec<(i64, OrgSource)>> = HashMap::new();
            if with_mappings {
                for (user, org, source) in self.store.organisation_sources(&user_ids).await? {
                    memberships.entry(user).or_default().push((org, source));
                }
            }
            let none = Vec::new();
            let mut planned = Vec::new();
            let mut settled = Vec::new();
            for r in &rows {
                let groups: Vec<String> = r.groups.lines().filter(|g| !g.is_empty()).map(str::to_string).collect();
                let mapped = crate::lifecycle::mapped_access(cfg, &groups, &all_orgs);
                let user = plan_user(r);
                let held = user.as_ref().map(|u| Held { user: u, organisations: memberships.get(&u.id).unwrap_or(&none) });
                // Linked by the immutable id, or only holding the name.
                let (linked, holder) = match &held {
                    Some(h) if h.user.external_id.as_deref() == Some(r.external_id.as_str()) => (Some(h), None),
                    Some(h) => (None, Some(h)),
                    None => (None, None),
                };
                let entry = Entry {
                    external_id: &r.external_id,
                    username: &r.username,
                    username_key: &crate::util::username_key(&r.username),
                    name: &r.name,
                    email: &r.email,
                    state: crate::lifecycle::staged_state(&r.dir_state),
                    // A conflict is the rule's to find, not a bad entry.
                    problem: if r.problem.starts_with("conflict:") { "" } else { &r.problem },
                };
                let change = identity::reconcile(Some(&entry), linked, holder, &policy, mapped.as_ref());
                if matches!(change, Change::Nothing { .. }) {
                    settled.push(r.staged_id);
                    continue;
                }
                let name = if r.username.is_empty() { r.external_id.clone() } else { r.username.clone() };
                planned.push((name, r.user_id, Some(r.staged_id), change));
            }
            self.record_plan(id, &mut counts, planned).await?;
            self.store.settle_plan(&rules, &settled).await?;
        }
        if policy.disable {
            let mut after = 0;
            loop {
                let users = self.store.missing_users(dir, kind.source().as_str(), after, CHUNK).await?;
                let Some(last) = users.last() else { break };
                after = last.id;
                let mut planned = Vec::new();
                for m in &users {
                    let Some(u) = self.store.get_user(m.id).await? else { continue };
                    let change = identity::reconcile(None, Some(&Held { user: &u, organisations: &[] }), None, &policy, None);
                    if !matches!(change, Change::Nothing { .. }) {
                        planned.push((u.username.clone(), Some(u.id), None, change));
                    }
                }
                self.record_plan(id, &mut counts, planned).await?;
            }
        }
        Ok((counts, rules))
    }

    /// Count and record planned changes as the run's items.
    async fn record_plan(&self, id: i64, counts: &mut SyncCounts, planned: Vec<(String, Option<i64>, Option<i64>, Change)>) -> Result<()> {
        let mut items = Vec::with_capacity(planned.len());
        let reasons: Vec<String> = planned.iter().map(|p| p.3.reason()).collect();
        for ((name, user_id, staged_id, change), reason) in planned.iter().zip(&reasons) {
            let action = action_of(change);
            count(counts, action);
            let applies = matches!(change, Change::Create { .. } | Change::Update { .. });
            items.push(NewItem {
                action,
                username: name,
                user_id: *user_id,
                staged_id: *staged_id,
                reason,
                outcome: if applies { ItemOutcome::Planned } else { ItemOutcome::Failed },
                change_json: if applies {
                    serde_json::to_string(change).map_err(|e| Error::Internal(e.to_string()))?
                } else {
                    String::new()
                },
            });
        }
        self.store.insert_items(id, &items).await?;
        Ok(())
    }

    /// Apply the run's planned changes in chunked transactions. A chunk
    /// that fails is retried change by change, so one bad change fails alone.
    ///
    /// With `rules` (the plan's), the staged rows whose change was applied
    /// are settled: the next plan skips them until they or their user change.
    async fn apply(&self, kind: DirectoryKind, id: i64, counts: &mut SyncCounts, rules: Option<&str>) -> Result<()> {
        let started = std::time::Instant::now();
        let mut applied_rows: Vec<i64> = Vec::new();
        let mut after = 0;
        // PostgreSQL plans against table statistics: a first sync into an
        // empty users table would keep the plans made for zero rows until
        // autovacuum catches up. They are refreshed once early in the run.
        let mut statistics_fresh = false;
        loop {
            if !statistics_fresh && counts.applied >= 1000 {
                self.store.refresh_statistics().await?;
                statistics_fresh = true;
            }
            let items = self.store.planned_items(id, after, APPLY_CHUNK).await?;
            let Some(last) = items.last() else { break };
            after = last.id;
            let mut changes = Vec::with_capacity(items.len());
            for i in &items {
                changes.push(
                    serde_json::from_str::<Change>(&i.change_json)
                        .map_err(|e| Error::Internal(format!("stored sync change {}: {e}", i.id))),
                );
            }
            let good: Vec<&Change> = changes.iter().filter_map(|c| c.as_ref().ok()).collect();
            let now = now_ms();
            if good.len() == items.len() {
                match self.store.apply_changes(&good, now).await {
                    Ok(()) => {
                        self.store.set_item_outcomes(&items.iter().map(|i| i.id).collect::<Vec<_>>(), ItemOutcome::Applied).await?;
                        counts.applied += items.len() as i64;
                        applied_rows.extend(items.iter().filter_map(|i| i.staged_id));
                        self.record_sync_changes(&good).await;
                        continue;
                    }
                    Err(e) => tracing::warn!(run = id, error = %e, "a chunk of the sync failed: applying its changes one by one"),
                }
            }
            for (item, change) in items.iter().zip(&changes) {
                let r = match change {
                    Ok(c) => self.store.apply_changes(&[c], now).await.map_err(|e| {
                        if e.is_unique_violation() || matches!(e, bindery_store::Error::Conflict(_)) {
                            format!("another user is named {}", item.username)
                        } else {
                            e.to_string()
                        }
                    }),
                    Err(e) => Err(e.to_string()),
                };
                match r {
                    Ok(()) => {
                        self.store.set_item_outcomes(&[item.id], ItemOutcome::Applied).await?;
                        counts.applied += 1;
                        applied_rows.extend(item.staged_id);
                        if let Ok(c) = change {
                            self.record_sync_changes(&[c]).await;
                        }
                    }
                    Err(why) => {
                        self.store.set_item_failed(item.id, &why).await?;
                        counts.apply_failed += 1;
                    }
                }
            }
        }
        if counts.applied > 1000 {
            self.store.refresh_statistics().await?;
        }
        if counts.applied + counts.apply_failed > 0 {
            // The import table's statuses follow what was applied.
            self.store.compute_staged_status(kind.as_str()).await?;
        }
        if let Some(rules) = rules {
            self.store.settle_plan(rules, &applied_rows).await?;
        }
        counts.apply_ms = started.elapsed().as_millis() as i64;
        self.system_audit(
            "directory.sync_applied",
            &format!("directory:{}", kind.as_str()),
            serde_json::json!({ "run": id, "applied": counts.applied, "failed": counts.apply_failed, "disabled": counts.disable }),
        )
        .await;
        Ok(())
    }

    /// Operation-log entries for role changes and (en|dis)ables a sync applied.
    async fn record_sync_changes(&self, changes: &[&Change]) {
        for c in changes {
            if let Change::Update { update, reasons } = c {
                if update.role.is_some() || update.activation.is_some() {
                    self.record_update(update, reasons, "sync", bindery_store::Applied::default()).await;
                }
            }
        }
    }

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
            let r = async {
                // The rules may have changed since the plan: nothing is settled.
                svc.apply(kind, id, &mut counts, None).await?;
                if run.complete.0 {
                    svc.sync_groups(kind, &mut counts).await?;
                }
                svc.finish_sync(id, RunState::Done, run.complete.0, &run.error, &counts).await
            }
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

    /// Stop a running sync's enumeration between pages (this process's runs):
    /// the run ends cancelled and applies nothing.
    pub async fn cancel_sync(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        self.cancel_run(id)
    }

    pub async fn list_sync_runs(&self, actor: &Actor, page: i64, per_page: i64) -> Result<Page<SyncRun>> {
        actor.require_reader()?;
        let per_page = per_page.clamp(1, 200);
        let page = page.max(1);
        let (rows, total) = self.store.list_sync_runs(per_page, (page - 1) * per_page).await?;
        Ok(Page { items: rows.into_iter().map(run_dto).collect(), total, page, per_page })
    }

    /// A run with a page of its per-user items (`action` filters).
    pub async fn sync_run(&self, actor: &Actor, id: i64, action: Option<&str>, page: i64, per_page: i64) -> Result<SyncRunDetail> {
        actor.require_reader()?;
        let run = self.store.get_run(id).await?.filter(|r| r.kind.on_sync_runs_page()).ok_or(Error::NotFound("sync run"))?;
        let action = match action.map(str::trim).filter(|a| !a.is_empty() && *a != "all") {
            None => None,
            Some(a) => Some(
                SyncAction::parse(a)
                    .ok_or_else(|| Error::field("action", "one of: all, create, update, enable, disable, conflict, failed"))?,
            ),
        };
        let per_page = per_page.clamp(1, 500);
        let page = page.max(1);
        let (rows, total) = self.store.list_items(id, action, per_page, (page - 1) * per_page).await?;
        Ok(SyncRunDetail { run: run_dto(run), items: Page { items: rows.into_iter().map(item_dto).collect(), total, page, per_page } })
    }

    /// The run report as CSV: every item, formula-safe.
    pub async fn sync_run_csv(&self, actor: &Actor, id: i64) -> Result<String> {
        actor.require_reader()?;
        self.sync_run(actor, id, None, 1, 1).await?; // exists, and is a sync run
        let mut out = String::from("action,username,reason,outcome,error\r\n");
        let mut offset = 0;
        loop {
            let (rows, _) = self.store.list_items(id, None, 5000, offset).await?;
            if rows.is_empty() {
                break;
            }
            offset += rows.len() as i64;
            for i in rows {
                let fields = [i.action.as_str(), &i.username, &i.reason, i.outcome.as_str(), &i.error];
                out.push_str(&fields.iter().map(|f| crate::util::csv_field(f)).collect::<Vec<_>>().join(","));
                out.push_str("\r\n");
            }
        }
        Ok(out)
    }

    // ----- the schedule -----------------------------------------------------

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

    async fn notify_recipients(&self, id: i64, settings: &SyncSettings) {
        if settings.recipients.is_empty() {
            return;
        }
        let Ok(Some(run)) = self.store.get_run(id).await else { return };
        let run = run_dto(run);
        let c = &run.counts;
        let summary = format!(
            "Sync #{} of {} ({}): {}; {} created, {} updated, {} enabled, {} disabled, {} entries failed. {}",
            run.id,
            run.directory.label(),
            run.started_by,
            run.state,
            c.create,
            c.update,
            c.enable,
            c.disable,
            c.failed,
            c.notes.join(" ")
        );
        for r in &settings.recipients {
            if let Err(e) = self.notify(r, &format!("Sync #{} {}", run.id, run.state), &summary).await {
                tracing::warn!(recipient = %r, error = %e, "sync report not delivered");
            }
        }
    }
}

impl Service {
    /// A report for a user: always in the console; by email too when an
    /// SMTP relay is configured and the user has an address.
    pub(crate) async fn notify(&self, username: &str, subject: &str, body: &str) -> Result<()> {
        let Some(u) = self.store.find_user(&crate::util::username_key(username)).await? else { return Ok(()) };
        let email_status = match (&self.options.smtp, u.email.is_empty()) {
            (None, _) => String::new(),
            (Some(_), true) => "not sent: the user has no email address".into(),
            (Some(smtp), false) => match send_mail(smtp, &u.email, subject, body).await {
                Ok(()) => format!("sent to {}", u.email),
                Err(e) => format!("not sent: {e}"),
            },
        };
        self.store.insert_notification(u.id, subject, body, &email_status, now_ms()).await?;
        Ok(())
    }
}

async fn send_mail(smtp: &crate::SmtpOptions, to: &str, subject: &str, body: &str) -> std::result::Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let msg = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("invalid From address {}: {e}", smtp.from))?)
        .to(to.parse().map_err(|e| format!("invalid address {to}: {e}"))?)
        .subject(subject)
        .body(body.to_string())
        .map_err(|e| e.to_string())?;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    match tokio::time::timeout(std::time::Duration::from_secs(15), mailer.send(msg)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("SMTP relay {}:{}: {e}", smtp.host, smtp.port)),
        Err(_) => Err(format!("SMTP relay {}:{} did not answer within 15 s", smtp.host, smtp.port)),
    }
}

/// A group's display name: the value of its DN's first RDN (`cn=developers,…` → `developers`).
fn group_name(dn: &str) -> String {
    // The first RDN's value, honouring `\,`-style escapes.
    let mut value = String::new();
    let mut in_value = false;
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if in_value {
                        value.push(n);
                    }
                }
            }
            ',' | '+' => break,
            '=' if !in_value => in_value = true,
            c if in_value => value.push(c),
            _ => {}
        }
    }
    let v = value.trim();
    if v.is_empty() {
        dn.to_string()
    } else {
        v.to_string()
    }
}

impl Service {
    /// Whether the directory groups were rebuilt from the snapshot as it
    /// stood before run `id`: the run before it was a complete sync that
    /// was applied (a dry run, a held or rejected run, or a fetch for the
    /// import table changes the snapshot without rebuilding them).
    async fn groups_current(&self, kind: DirectoryKind, id: i64) -> Result<bool> {
        Ok(self
            .store
            .previous_run(kind.as_str(), id)
            .await?
            .is_some_and(|r| r.kind.is_sync() && r.state == RunState::Done && r.complete.0 && !r.dry_run.0))
    }

    /// Directory groups become Bindery groups (source ldap / ldap_ha) whose
    /// members are exactly the synced users the directory lists in them.
    async fn sync_groups(&self, kind: DirectoryKind, counts: &mut SyncCounts) -> Result<()> {
        use std::collections::BTreeMap;
        let source = kind.source().as_str();
        let mut members: BTreeMap<String, (String, Vec<i64>)> = BTreeMap::new();
        let mut after = 0;
        loop {
            let rows = self.store.staged_memberships(kind.as_str(), after, CHUNK * 5).await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            for (_, user_id, groups) in rows {
                for dn in groups.lines().filter(|g| !g.is_empty()) {
                    let key = bindery_directory::dn::normalize(dn);
                    members.entry(key).or_insert_with(|| (dn.to_string(), Vec::new())).1.push(user_id);
                }
            }
        }
        let existing = self.store.directory_groups(source).await?;
        let (mut created, mut updated) = (0, 0);
        let now = now_ms();
        for (key, (dn, mut ids)) in members.iter().map(|(k, v)| (k.clone(), v.clone())) {
            ids.sort_unstable();
            ids.dedup();
            let id = match existing.iter().find(|(_, d)| bindery_directory::dn::normalize(d) == key) {
                Some((id, _)) => {
                    updated += 1;
                    *id
                }
                None => {
                    created += 1;
                    self.store.create_directory_group(&group_name(&dn), source, &dn, now).await?
                }
            };
            self.store.replace_group_members(id, &ids).await?;
        }
        // Groups the directory no longer lists for anybody are emptied (kept, with their name).
        for (id, dn) in &existing {
            if !members.contains_key(&bindery_directory::dn::normalize(dn)) {
                self.store.replace_group_members(*id, &[]).await?;
            }
        }
        if created + updated > 0 {
            counts.notes.push(format!("directory groups: {created} created, {updated} updated"));
        }
        Ok(())
    }
}

fn count(c: &mut SyncCounts, action: SyncAction) {
    match action {
        SyncAction::Create => c.create += 1,
        SyncAction::Update => c.update += 1,
        SyncAction::Enable => c.enable += 1,
        SyncAction::Disable => c.disable += 1,
        SyncAction::Conflict => c.conflict += 1,
        SyncAction::Failed => c.failed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_honour_escapes() {
        assert_eq!(group_name("cn=Smith\\, J,ou=groups,dc=x"), "Smith, J");
    }

    #[test]
    fn threshold_holds_only_above_the_share() {
        assert!(!over_threshold(10, 100, 10));
        assert!(over_threshold(11, 100, 10));
        assert!(!over_threshold(0, 0, 0));
        assert!(over_threshold(1, 0, 10), "disabling users of an empty directory is held");
        assert!(over_threshold(1, 1000, 0), "threshold 0 holds every disable");
    }

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
