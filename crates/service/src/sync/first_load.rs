//! A first sync plans and applies each page as the enumeration stages it
//! (`bindery_store` `first_load.rs`): when the directory has no snapshot
//! row and no Bindery user of its own yet, an entry that is clean, whose
//! username no Bindery user has, and whose username and email no entry
//! before it had, is decided by the one rule ([`super::plan::decide`]) with
//! no user linked or holding its name, and the user its `Create` makes is
//! written with the page. Everything else is left to the plan after the
//! enumeration, as in any sync. A user created for an entry that turns out
//! to share its username or email with a later one is taken back once
//! every entry is staged, before that plan (the plan of a whole snapshot
//! would not have created it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bindery_directory::enumerate::Entry;
use bindery_model::{ItemOutcome, SyncAction};
use bindery_store::{Change, LoadedValues, NewItem, NewStaged, StagedPage, Store, ValueHashes};

use super::plan::{decide, PlanInputs, RowFacts};

/// Past this many users created, PostgreSQL's statistics of the users and
/// the items are refreshed once: planned for the empty tables of the
/// run's start, each page's lookups would read them whole.
const ANALYZE_AFTER: u64 = 2_000;

/// A first sync's state across its pages.
pub(crate) struct FirstLoad {
    cfg: bindery_directory::DirectoryConfig,
    inputs: PlanInputs,
    run: i64,
    /// The username keys and emails of the entries staged so far, as
    /// hashes (`LoadedValues`): two texts that share a hash only keep the
    /// second from its page, and the plan decides it. Once every entry is
    /// staged, they tell the rows whose status the pages could not know
    /// (`Store::mark_first_load`).
    seen: Mutex<LoadedValues>,
    /// Users the pages created.
    created: AtomicU64,
    analyzed: AtomicBool,
    /// A page whose load failed is staged only, and so is every page that
    /// starts after it (on PostgreSQL the one stored beside it may still
    /// create its users).
    off: AtomicBool,
    /// Why it failed.
    failed: Mutex<Option<String>>,
}

impl FirstLoad {
    pub(crate) fn new(cfg: bindery_directory::DirectoryConfig, inputs: PlanInputs, run: i64) -> FirstLoad {
        FirstLoad {
            cfg,
            inputs,
            run,
            seen: Mutex::default(),
            created: AtomicU64::new(0),
            analyzed: AtomicBool::new(false),
            off: AtomicBool::new(false),
            failed: Mutex::default(),
        }
    }

    /// The rules' hash the pages settle their rows under.
    pub(crate) fn rules(&self) -> &str {
        &self.inputs.rules
    }

    pub(crate) fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Why a page could not create its users, if one could not.
    pub(crate) fn failed(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stage a page and create the users of its clean new entries, in one
    /// transaction. `entries` and `rows` are the page's, in the same order.
    /// A load that fails is logged and the page staged only (the plan after
    /// the enumeration decides its rows), as are the pages that start after
    /// it.
    pub(crate) async fn page(
        &self,
        store: &Store,
        directory: &str,
        entries: &[Entry],
        rows: &[NewStaged<'_>],
        known: &HashMap<String, (i64, i64)>,
    ) -> crate::Result<StagedPage> {
        let hashes: Vec<ValueHashes> = rows.iter().map(ValueHashes::of).collect();
        if self.off.load(Ordering::Relaxed) {
            let page = store.stage_page_known(directory, rows, known).await?;
            self.written(rows, &hashes, &page);
            return Ok(page);
        }
        let keys: Vec<&str> = rows.iter().map(|r| r.username_key).filter(|k| !k.is_empty()).collect();
        let taken = store.taken_username_keys(&keys).await?;
        let mut changes = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for ((e, r), h) in entries.iter().zip(rows).zip(&hashes) {
                // Every entry's name and email count, created or not.
                let (first_name, first_email) = seen.first_seen(*h);
                if !first_name || !first_email || !r.problem.is_empty() || taken.contains(r.username_key) {
                    continue;
                }
                let facts = RowFacts {
                    external_id: r.external_id,
                    username: r.username,
                    name: r.name,
                    email: r.email,
                    dir_state: r.dir_state,
                    problem: r.problem,
                    groups: &e.user.groups,
                };
                let change = decide(&self.cfg, &self.inputs.policy, &self.inputs.all_orgs, &facts, None, None);
                if matches!(change, Change::Create { .. }) {
                    changes.push((r.username, change));
                }
            }
        }
        let reasons: Vec<String> = changes.iter().map(|(_, c)| c.reason()).collect();
        let mut creates = Vec::with_capacity(changes.len());
        for ((username, change), reason) in changes.iter().zip(&reasons) {
            let Change::Create { account, .. } = change else { continue };
            // Applied with the page: no change left to apply (the JSON an
            // approval applies), as for an item that applies nothing.
            let item = NewItem {
                action: SyncAction::Create,
                username,
                user_id: None,
                staged_id: None,
                reason,
                outcome: ItemOutcome::Applied,
                change_json: String::new(),
            };
            creates.push((account, item));
        }
        let n = creates.len() as u64;
        match store.load_page(directory, rows, known, self.run, &self.inputs.rules, creates, crate::util::now_ms()).await {
            Ok(page) => {
                self.written(rows, &hashes, &page);
                let created = self.created.fetch_add(n, Ordering::Relaxed) + n;
                if created >= ANALYZE_AFTER && !self.analyzed.swap(true, Ordering::Relaxed) {
                    store.analyze_apply_inputs().await?;
                }
                Ok(page)
            }
            Err(e) => {
                tracing::warn!(run = self.run, error = %e, "a first sync's page could not create its users: staged only, and the plan decides its rows");
                self.off.store(true, Ordering::Relaxed);
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                let page = store.stage_page_known(directory, rows, known).await?;
                self.written(rows, &hashes, &page);
                Ok(page)
            }
        }
    }

    /// A page is written: its rows' values with their ids.
    fn written(&self, rows: &[NewStaged<'_>], hashes: &[ValueHashes], page: &StagedPage) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).written(rows, hashes, &page.new_rows);
    }

    /// Once every page is written: what they saw, for
    /// `Store::mark_first_load` (taken: the load is over).
    pub(crate) fn values(&self) -> LoadedValues {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
