//! The import table: "Sync users" enumerates the directory into a staging
//! snapshot (streaming, with progress and cancel); the admin filters,
//! selects and imports rows into organisations, each row succeeding or
//! failing on its own.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bindery_directory::enumerate::{self, Entry};
use bindery_model::{
    AccountState, DirectoryKind, ImportOutcome, ImportRequest, ImportResult, Page, RunKind, RunState, StagedUser, SyncRun,
};
use bindery_store::{Change, NewStaged, OrgSource, StagedFilter, StagedRow, SyncRunRow};

use crate::identity;
use crate::lifecycle::Holding;

use crate::util::{fmt_ts, now_ms, username_key};
use crate::{Actor, Error, Result, Service};

/// Cancel flags of the runs this process is executing.
#[derive(Default)]
pub(crate) struct Jobs {
    running: Mutex<HashMap<i64, Arc<AtomicBool>>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jobs")
    }
}

/// How an enumeration into the staging snapshot ended.
pub(crate) struct Enumerated {
    pub complete: bool,
    pub cancelled: bool,
    /// Why it is incomplete, in plain words.
    pub error: String,
    pub server: String,
    /// Whether the enumeration wrote or removed a snapshot row (`true`
    /// when unknown): when none did, the directory groups, rebuilt from
    /// the snapshot, are as the last sync left them.
    pub changed: bool,
    /// Users a first sync's pages created and kept (`sync::first_load`).
    pub created: u64,
    /// Whether the enumeration loaded an empty snapshot table without its
    /// indexes and built them when its rows were in (PostgreSQL).
    pub bulk_loaded: bool,
}

impl Enumerated {
    /// An enumeration or delta read that stopped: `error` says why, and
    /// what it wrote counts as changed (unknown).
    pub(crate) fn incomplete(cancelled: bool, error: String) -> Enumerated {
        Enumerated { complete: false, cancelled, error, server: String::new(), changed: true, created: 0, bulk_loaded: false }
    }
}

impl Jobs {
    pub(crate) fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<AtomicBool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn run_dto(r: SyncRunRow) -> SyncRun {
    let end = r.finished_at.unwrap_or_else(now_ms);
    SyncRun {
        id: r.id,
        directory: DirectoryKind::parse(&r.directory).unwrap_or_default(),
        kind: r.kind,
        state: r.state,
        started_by: r.started_by,
        dry_run: r.dry_run.0,
        entries: r.entries,
        pages: r.pages,
        complete: r.complete.0,
        started_at: fmt_ts(r.started_at),
        finished_at: r.finished_at.map(fmt_ts),
        elapsed_ms: end - r.started_at,
        error: r.error,
        counts: serde_json::from_str(&r.summary_json).unwrap_or_default(),
    }
}

fn staged_dto(r: StagedRow) -> StagedUser {
    StagedUser {
        id: r.id,
        status: r.status,
        username: r.username,
        name: r.name,
        email: r.email,
        groups: r.groups.lines().map(str::to_string).filter(|g| !g.is_empty()).collect(),
        already_exists: r.user_id.is_some(),
        dn: r.dn,
        problem: r.problem,
    }
}

const STATUSES: [&str; 6] = ["new", "imported", "changed", "disabled", "invalid", "conflict"];

fn check_status(status: Option<&str>) -> Result<Option<&str>> {
    match status.map(str::trim).filter(|s| !s.is_empty() && *s != "all") {
        None => Ok(None),
        Some(s) if STATUSES.contains(&s) => Ok(Some(s)),
        Some(_) => Err(Error::field("status", format!("one of: all, {}", STATUSES.join(", ")))),
    }
}

/// A staged row as the store wants it, with the problems one entry alone shows.
pub(crate) fn stage(e: &Entry) -> (String, String, String, &'static str) {
    let key = username_key(&e.user.username);
    let groups = e.user.groups.join("\n");
    let email = e.user.email.trim().to_string();
    let problem = if e.user.username.trim().is_empty() {
        "no value for the username attribute"
    } else if e.user.username.chars().any(char::is_control) {
        "the username contains control characters"
    } else if crate::accounts::email_problem(&email).is_some() {
        "invalid email address"
    } else {
        ""
    };
    (key, groups, email, problem)
}

/// What [`stage`] computed for each entry of a page.
pub(crate) type Prepared = (String, String, String, &'static str);

/// A page of entries as staged rows, borrowing from the entries and from
/// what [`stage`] computed for them (`prepared`, one per entry).
pub(crate) fn staged_rows<'a, E: std::borrow::Borrow<Entry>>(entries: &'a [E], prepared: &'a [Prepared]) -> Vec<NewStaged<'a>> {
    entries
        .iter()
        .map(Borrow::borrow)
        .zip(prepared)
        .map(|(e, (key, groups, email, problem))| NewStaged {
            external_id: &e.uid,
            dn: &e.user.dn,
            username: &e.user.username,
            username_key: key,
            name: &e.user.name,
            email,
            groups,
            dir_state: e.state.map(AccountState::as_str).unwrap_or(""),
            problem,
        })
        .collect()
}

impl Service {
    /// "Sync users": enumerate the directory into the staging snapshot in
    /// the background. Returns the run (poll [`Service::user_fetch_status`]).
    pub async fn start_user_fetch(&self, actor: &Actor, kind: DirectoryKind) -> Result<SyncRun> {
        actor.require_admin()?;
        let stored = self.load_directory(kind).await?;
        let cfg = Self::resolve(&stored, &Self::stored_input(&stored.settings))?;
        let (id, lease, cancel) = self.begin_run(kind, RunKind::Fetch, &actor.principal.username, false).await?;
        let svc = self.clone();
        tokio::spawn(async move {
            let keep = lease.keep_alive(svc.store.clone());
            let r = svc.enumerate_into_staging(kind, id, &cfg, &cancel, None).await;
            // Before the run ends (PostgreSQL): the indexes a run reads.
            svc.end_bulk_load_within_run(id).await;
            let r = match r {
                Ok(e) if e.complete => {
                    svc.store
                        .finish_run(id, RunState::Done, true, "", &serde_json::json!({ "server": e.server }).to_string(), now_ms())
                        .await
                }
                Ok(e) => {
                    svc.store
                        .finish_run(id, if e.cancelled { RunState::Cancelled } else { RunState::Failed }, false, &e.error, "{}", now_ms())
                        .await
                }
                Err(e) => {
                    tracing::error!(run = id, error = %e, "user enumeration failed");
                    svc.store.finish_run(id, RunState::Failed, false, &e.to_string(), "{}", now_ms()).await
                }
            };
            if let Err(e) = r {
                tracing::error!(run = id, error = %e, "recording the end of a user enumeration failed");
            }
            svc.jobs.map().remove(&id);
            keep.release(&svc.store).await;
            // The import table's own indexes, once the run has ended
            // (`bindery_store` `bulk.rs`).
            svc.end_bulk_load(id).await;
        });
        self.audit(actor, "directory.fetch_users", &format!("directory:{}", kind.as_str()), None, Some(serde_json::json!({ "run": id })))
            .await;
        Ok(run_dto(self.store.get_run(id).await?.ok_or(Error::NotFound("run"))?))
    }

    /// Diff a fresh enumeration into the directory's staging snapshot and
    /// compute the status of the rows that need it. Each page writes only
    /// the rows that are new or changed; the ids of the rows seen are kept
    /// (ids only), and only a complete enumeration removes the rows it did
    /// not see. An incomplete enumeration is not an `Err`: the snapshot
    /// keeps the previous rows, and the result says why it is partial.
    /// With `load` (a first sync), each page also creates the users of its
    /// clean entries (`sync::first_load`).
    pub(crate) async fn enumerate_into_staging(
        &self,
        kind: DirectoryKind,
        id: i64,
        cfg: &bindery_directory::DirectoryConfig,
        cancel: &AtomicBool,
        load: Option<Arc<crate::sync::first_load::FirstLoad>>,
    ) -> Result<Enumerated> {
        let dir = kind.as_str();
        // Pages are stored as many at once as the database takes writers
        // side by side, each in its own transaction.
        let cfg = &bindery_directory::DirectoryConfig {
            max_pages: self.options.max_enumeration_pages,
            stores_at_once: self.store.writers_at_once(),
            ..cfg.clone()
        };
        self.store.begin_staging(dir, id).await?;
        // Into an empty snapshot table (PostgreSQL): without its secondary
        // indexes until every row is in (`bindery_store` `bulk.rs`).
        let bulk = self.store.begin_bulk_load().await?;
        // The snapshot's ids and content hashes, read once: each page is
        // compared in memory, and one where nothing changed is not written.
        // Read while the directory is connected to and its first pages are
        // fetched (100,000 rows take about 0.1 s); the first page stored
        // waits for it.
        let known = {
            use futures::FutureExt;
            let (store, dir) = (self.store.clone(), dir.to_string());
            tokio::spawn(async move { store.staged_hashes(&dir).await.map(Arc::new).map_err(|e| e.to_string()) })
                .map(|joined| joined.map_err(|e| e.to_string()).and_then(|read| read))
                .shared()
        };
        let store = self.store.clone();
        let seen: Arc<Mutex<HashSet<i64, bindery_store::KeyHashing>>> = Arc::default();
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Progress is written after the first page, then at most every half
        // second, not per page; never less than already written (pages
        // stored at once may end out of order).
        let reported: Arc<Mutex<(Option<std::time::Instant>, i64)>> = Arc::default();
        let result = enumerate::enumerate(cfg, cancel, |page, totals| {
            let (store, seen, known, reported, written) = (store.clone(), seen.clone(), known.clone(), reported.clone(), written.clone());
            let (entries, pages) = (totals.entries as i64, totals.pages as i64);
            let (load, page_store, page_dir) = (load.clone(), store.clone(), dir.to_string());
            async move {
                // The page's work on a task of its own: its rows are made,
                // its entries planned and its statements prepared on another
                // core than the reading and the mapping of the next page, and
                // (on SQLite, whose writes take turns) while the page before
                // it writes. In the enumeration's one task, each page's
                // preparation waited for the page before to be written.
                let work = tokio::spawn(async move {
                    let prepared: Vec<Prepared> = page.iter().map(stage).collect();
                    let rows = staged_rows(&page, &prepared);
                    let known = known.await?;
                    match &load {
                        Some(load) => load.page(&page_store, &page_dir, &page, &rows, &known).await.map_err(|e| e.to_string()),
                        None => page_store.stage_page_known(&page_dir, &rows, &known).await.map_err(|e| e.to_string()),
                    }
                });
                let staged = work.await.map_err(|e| format!("storing a page stopped: {e}"))??;
                written.fetch_add(staged.inserted + staged.updated, Ordering::Relaxed);
                seen.lock().unwrap_or_else(|p| p.into_inner()).extend(staged.ids);
                let due = {
                    let mut last = reported.lock().unwrap_or_else(|p| p.into_inner());
                    let due = entries > last.1 && last.0.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(500));
                    if due {
                        *last = (Some(std::time::Instant::now()), entries);
                    }
                    due
                };
                if due {
                    store.run_progress(id, entries, pages).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        })
        .await;
        let done = match result {
            Ok(t) => {
                // A bulk load's indexes that the rest of the run reads are
                // built with the end of its enumeration (PostgreSQL), and
                // the statistics refreshed next cover them; the import
                // table's own come once the run has ended (`bulk.rs`).
                if bulk {
                    self.store.end_bulk_load_unanalysed().await?;
                }
                let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
                let known = known.clone().await.map_err(Error::Internal)?;
                let gone = self.store.finish_staging(dir, id, &seen, Some(&known), bulk).await?;
                self.store.run_progress(id, t.entries as i64, t.pages as i64).await?;
                let changed = gone + written.load(Ordering::Relaxed) > 0;
                Enumerated {
                    complete: true,
                    cancelled: false,
                    error: String::new(),
                    server: t.server,
                    changed,
                    created: 0,
                    bulk_loaded: bulk,
                }
            }
            Err(f) => Enumerated::incomplete(cancel.load(Ordering::Relaxed), f.message),
        };
        drop(known);
        // A first sync's pages settled the rows they created users for: only
        // the others need a status (`Store::mark_first_load`).
        let closed = match load.as_ref().filter(|l| done.complete && l.failed().is_none()) {
            Some(load) => self.store.mark_first_load(dir, kind.source().as_str(), Some(&load.values())).await?,
            None => false,
        };
        match closed {
            true => self.store.compute_staged_status_closed(dir).await?,
            false => self.store.compute_staged_status(dir).await?,
        }
        Ok(done)
    }

    pub async fn cancel_user_fetch(&self, actor: &Actor, kind: DirectoryKind) -> Result<()> {
        actor.require_admin()?;
        let run = self.store.latest_run(kind.as_str(), RunKind::Fetch).await?.ok_or(Error::NotFound("user enumeration"))?;
        self.cancel_run(run.id).map_err(|_| Error::Conflict("no user enumeration of this directory is running".into()))
    }

    /// Ask a run this process executes to stop between pages or chunks.
    pub(crate) fn cancel_run(&self, id: i64) -> Result<()> {
        match self.jobs.map().get(&id) {
            Some(flag) => {
                flag.store(true, Ordering::Relaxed);
                Ok(())
            }
            None => Err(Error::Conflict("this run is not running here".into())),
        }
    }

    /// The latest "Sync users" enumeration of a directory, with its progress.
    pub async fn user_fetch_status(&self, actor: &Actor, kind: DirectoryKind) -> Result<Option<SyncRun>> {
        actor.require_reader()?;
        Ok(self.store.latest_run(kind.as_str(), RunKind::Fetch).await?.map(run_dto))
    }

    /// One page of the import table.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_staged_users(
        &self,
        actor: &Actor,
        kind: DirectoryKind,
        status: Option<&str>,
        q: Option<&str>,
        sort: Option<&str>,
        descending: bool,
        page: i64,
        per_page: i64,
    ) -> Result<Page<StagedUser>> {
        actor.require_reader()?;
        let status = check_status(status)?;
        let sort = match sort.map(str::trim).filter(|s| !s.is_empty()) {
            None => "username",
            Some(s @ ("username" | "name" | "email" | "status")) => s,
            Some(_) => return Err(Error::field("sort", "one of: username, name, email, status")),
        };
        if !(1..=500).contains(&per_page) {
            return Err(Error::field("per_page", "must be between 1 and 500"));
        }
        let page = page.max(1);
        let filter = StagedFilter { status, search: q };
        let (rows, total) = self.store.list_staged(kind.as_str(), &filter, sort, descending, per_page, (page - 1) * per_page).await?;
        Ok(Page { items: rows.into_iter().map(staged_dto).collect(), total, page, per_page })
    }

    /// The import table (filtered) as CSV.
    pub async fn staged_users_csv(&self, actor: &Actor, kind: DirectoryKind, status: Option<&str>, q: Option<&str>) -> Result<String> {
        actor.require_reader()?;
        let status = check_status(status)?;
        let rows = self.store.staged_rows(kind.as_str(), &StagedFilter { status, search: q }, None).await?;
        let mut out = String::from("status,username,name,email,groups,already_exists,dn,problem\r\n");
        for r in rows.into_iter().map(staged_dto) {
            let fields = [
                r.status,
                r.username,
                r.name,
                r.email,
                r.groups.join("; "),
                if r.already_exists { "yes".into() } else { "no".into() },
                r.dn,
                r.problem,
            ];
            out.push_str(&fields.iter().map(|f| crate::util::csv_field(f)).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        Ok(out)
    }

    /// Import the checked rows (or every row matching the filter). One bad
    /// row fails alone, with its reason.
    pub async fn import_staged_users(&self, actor: &Actor, kind: DirectoryKind, req: &ImportRequest) -> Result<ImportResult> {
        actor.require_admin()?;
        let status = check_status(req.status.as_deref())?;
        if !req.all_matching && req.ids.is_empty() {
            return Err(Error::field("ids", "check at least one row, or choose Import all"));
        }
        let known = self.store.organisation_names().await?;
        if let Some(bad) = req.organisation_ids.iter().find(|id| !known.iter().any(|o| o.id == **id)) {
            return Err(Error::field("organisation_ids", format!("no organisation with id {bad}")));
        }
        let orgs: Vec<i64> = if req.organisation_ids.is_empty() {
            self.store.default_organisation().await?.map(|o| o.id).into_iter().collect()
        } else {
            req.organisation_ids.clone()
        };
        let filter = StagedFilter {
            status: if req.all_matching { status } else { None },
            search: if req.all_matching { req.q.as_deref() } else { None },
        };
        let rows = self.store.staged_rows(kind.as_str(), &filter, (!req.all_matching).then_some(req.ids.as_slice())).await?;
        let stored = self.load_directory(kind).await?;
        let cfg = Self::resolve(&stored, &Self::stored_input(&stored.settings)).ok();
        // The import's choice goes to new users and is added to existing ones;
        // without one, new users go to the default organisation.
        let chosen: Vec<(i64, OrgSource)> = if req.organisation_ids.is_empty() {
            orgs.iter().map(|o| (*o, OrgSource::Default)).collect()
        } else {
            orgs.iter().map(|o| (*o, OrgSource::Selection)).collect()
        };
        let policy = identity::Policy {
            source: kind.source(),
            disable: false,
            create: true,
            create_disabled: true,
            add_to_existing: chosen.iter().copied().filter(|(_, s)| *s == OrgSource::Selection).collect(),
            organisations: chosen,
        };
        let mut result = ImportResult { created: 0, updated: 0, unchanged: 0, failed: 0, outcomes: Vec::with_capacity(rows.len()) };
        for r in rows {
            let username = if r.username.is_empty() { r.dn.clone() } else { r.username.clone() };
            let (outcome, reason) = match self.import_one(&r, cfg.as_ref(), &policy, &known).await {
                Ok(o) => o,
                Err(Error::Store(e)) => {
                    tracing::error!(error = %e, row = r.id, "import row failed");
                    ("failed", format!("storage error: {e}"))
                }
                Err(e) => ("failed", e.to_string()),
            };
            match outcome {
                "created" => result.created += 1,
                "updated" => result.updated += 1,
                "unchanged" => result.unchanged += 1,
                _ => result.failed += 1,
            }
            result.outcomes.push(ImportOutcome { username, outcome: outcome.into(), reason });
        }
        self.store.compute_staged_status(kind.as_str()).await?;
        self.audit(
            actor,
            "user.import",
            &format!("directory:{}", kind.as_str()),
            None,
            Some(serde_json::json!({ "created": result.created, "updated": result.updated, "unchanged": result.unchanged, "failed": result.failed, "organisations": orgs })),
        )
        .await;
        Ok(result)
    }

    /// One row through the one identity rule.
    async fn import_one(
        &self,
        r: &StagedRow,
        cfg: Option<&bindery_directory::DirectoryConfig>,
        policy: &identity::Policy,
        orgs: &[bindery_store::OrganisationRow],
    ) -> Result<(&'static str, String)> {
        let groups: Vec<String> = r.groups.lines().filter(|g| !g.is_empty()).map(str::to_string).collect();
        let mapped = cfg.and_then(|c| crate::lifecycle::mapped_access(c, &groups, orgs));
        let (linked, holder) = self.linked_and_holder(&r.external_id, &r.username_key, None, true).await?;
        let entry = identity::Entry {
            external_id: &r.external_id,
            username: &r.username,
            username_key: &r.username_key,
            name: &r.name,
            email: &r.email,
            state: crate::lifecycle::staged_state(&r.dir_state),
            // A conflict is the rule's to find, not a bad entry.
            problem: if r.problem.starts_with("conflict:") { "" } else { &r.problem },
        };
        let change = identity::reconcile(
            Some(&entry),
            linked.as_ref().map(Holding::held).as_ref(),
            holder.as_ref().map(Holding::held).as_ref(),
            policy,
            mapped.as_ref(),
        );
        let email_owner = match &change {
            Change::Create { .. } => Some(None),
            Change::Update { update, .. } if update.email.is_some() => Some(Some(update.user_id)),
            _ => None,
        };
        if let Some(me) = email_owner.filter(|_| !r.email.is_empty()) {
            if self.store.email_taken(&r.email, me).await? {
                return Ok(("failed", format!("another user has the email {}", r.email)));
            }
        }
        let outcome = match &change {
            Change::Nothing { .. } => "unchanged",
            Change::Create { .. } => "created",
            Change::Update { .. } => "updated",
            Change::Conflict { .. } => return Ok(("failed", format!("conflict: {}", change.reason()))),
            Change::Refuse { .. } => return Ok(("failed", change.reason())),
        };
        self.apply_change(&change, "import").await?;
        Ok((outcome, change.reason()))
    }
}
