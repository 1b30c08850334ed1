//! Delta runs (issue 17): reading only what changed since the last run,
//! whatever the method — syncrepl (OpenLDAP, 389-ds), DirSync or
//! `uSNChanged` (Active Directory). The sync job calls one function for a
//! delta read ([`Service::delta_into_staging`]) and two around a full
//! enumeration in delta mode ([`Service::start_cookies`] before it,
//! [`Service::record_cookies`] after it). What a change means is decided
//! afterwards by the same plan, threshold, incomplete-run rule and dry run
//! as a full sync (`sync.rs`): a delta read only changes the snapshot.
//!
//! Cookies are stored per search OU with the server that issued them; a
//! cookie of another server (a failover), of other settings (saving them
//! drops the cookies) or refused by the server makes the run a full
//! enumeration, with a note.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use bindery_directory::delta::{Change as DeltaChange, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use bindery_directory::{ad_delta, dn, syncrepl, DirectoryConfig, Failure};
use bindery_model::{DeltaSupportInfo, DirectoryKind, SyncMode, SyncSettings};

use crate::import::Enumerated;
use crate::util::now_ms;
use crate::{Result, Service};

/// How many former members of changed groups a USN read re-reads (by DN,
/// 50 a search); above it a full enumeration is cheaper.
const REREAD_LIMIT: usize = 5000;

/// Cookies read before a full enumeration in delta mode: stored once the
/// enumeration completed on the same server.
pub(crate) struct StartCookies {
    method: DeltaMethod,
    server: String,
    /// `(search OU, server, cookie)`.
    rows: Vec<(String, String, String)>,
}

/// How a delta read into the snapshot ended.
pub(crate) struct DeltaRead {
    pub e: Enumerated,
    /// Whether the groups of a staged row changed, or a row left the
    /// snapshot: the directory groups need rebuilding only then.
    pub groups_changed: bool,
}

/// What one delta read returned, before staging.
struct Read {
    batches: Vec<DeltaBatch>,
    /// Extra words for the run's notes.
    notes: Vec<String>,
}

impl Service {
    /// Before a full enumeration in delta mode: the cookies that make the
    /// next run read every change made after this moment (changes made
    /// during the enumeration are read again, never lost). `None`, with a
    /// note, when none can be recorded.
    pub(crate) async fn start_cookies(
        &self,
        kind: DirectoryKind,
        cfg: &DirectoryConfig,
        settings: &SyncSettings,
        notes: &mut Vec<String>,
    ) -> Result<Option<StartCookies>> {
        if settings.mode != SyncMode::Delta {
            return Ok(None);
        }
        let Some(detected) = self.detected_delta(kind).await? else {
            notes.push("no delta cookie recorded: Test connection has not detected a delta method for the saved settings".into());
            return Ok(None);
        };
        let method = DeltaMethod::parse(&detected.method);
        match method {
            DeltaMethod::Syncrepl => match syncrepl::start_cookies(cfg).await {
                Ok((server, cookies)) => {
                    let rows = cookies.into_iter().map(|c| (c.search_ou, c.server, c.cookie)).collect();
                    Ok(Some(StartCookies { method, server, rows }))
                }
                Err(f) => {
                    notes.push(format!("no delta cookie recorded: {}", f.message));
                    Ok(None)
                }
            },
            DeltaMethod::Dirsync | DeltaMethod::Usn => {
                let support = DeltaSupport { method, sees_deletions: detected.sees_deletions, reason: detected.reason.clone() };
                let mut rows: Vec<(String, String, String)> = Vec::new();
                for ou in &cfg.search_ous {
                    match ad_delta::initial_cookie(cfg, ou, &support).await {
                        Ok(b) => {
                            if let Some((_, first, _)) = rows.first() {
                                if *first != b.server {
                                    notes.push(format!(
                                        "no delta cookie recorded: the search OUs' cookies came from {first} and {} (a cookie belongs to one domain controller)",
                                        b.server
                                    ));
                                    return Ok(None);
                                }
                            }
                            rows.push((ou.clone(), b.server, b.cookie));
                        }
                        Err(e) => {
                            notes.push(format!("no delta cookie recorded: {e}"));
                            return Ok(None);
                        }
                    }
                }
                let server = rows.first().map(|r| r.1.clone()).unwrap_or_default();
                Ok(Some(StartCookies { method, server, rows }))
            }
            DeltaMethod::None => {
                notes.push(format!("no delta cookie recorded: this directory cannot be read for changes ({})", detected.reason));
                Ok(None)
            }
        }
    }

    /// After a full enumeration in delta mode: store the cookies read
    /// before it when it completed on the server that issued them.
    pub(crate) async fn record_cookies(
        &self,
        kind: DirectoryKind,
        start: Option<StartCookies>,
        e: &Enumerated,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let Some(start) = start else { return Ok(()) };
        let (method, server) = (start.method.as_str(), &start.server);
        if !e.complete {
            notes.push("no delta cookie recorded: the enumeration was incomplete".into());
        } else if e.server != *server {
            self.store.clear_delta_cookies(kind.as_str()).await?;
            notes.push(format!("no delta cookie recorded: the cookie was read on {server}, but {} answered the enumeration", e.server));
        } else {
            self.store.put_delta_cookies(kind.as_str(), method, &start.rows, now_ms()).await?;
            notes.push(format!("delta cookie recorded ({method}, {server}): the next run reads only what changed"));
        }
        Ok(())
    }

    /// A delta read into the snapshot: changed entries are staged as an
    /// enumeration stages them, deleted ones leave it (their users are then
    /// missing from the directory), and the cookies move on. `Ok(Err(why))`:
    /// the cookies cannot be used, a full enumeration is needed. A failed
    /// read changes nothing and is reported incomplete.
    pub(crate) async fn delta_into_staging(
        &self,
        kind: DirectoryKind,
        id: i64,
        cfg: &DirectoryConfig,
        settings: &SyncSettings,
        cancel: &AtomicBool,
        notes: &mut Vec<String>,
    ) -> Result<std::result::Result<DeltaRead, String>> {
        let dir = kind.as_str();
        let stored = self.store.delta_cookies(dir).await?;
        let Some(method) = stored.first().map(|c| c.2.clone()) else {
            return Ok(Err("no delta cookie is stored".into()));
        };
        if let Some(other) = stored.iter().find(|c| c.2 != method) {
            return Ok(Err(format!("the stored cookies mix {method} and {}", other.2)));
        }
        let detected = self.detected_delta(kind).await?;
        if let Some(d) = detected.as_ref().filter(|d| d.method != method) {
            return Ok(Err(format!("the cookies are for {method}, but Test connection now finds {}", d.method)));
        }
        let read = match DeltaMethod::parse(&method) {
            DeltaMethod::Syncrepl => {
                let cookies: Vec<syncrepl::StoredCookie> =
                    stored.into_iter().map(|(search_ou, server, _, cookie)| syncrepl::StoredCookie { search_ou, server, cookie }).collect();
                syncrepl::read_changes(cfg, &cookies, cancel).await.map(|batches| Read { batches, notes: Vec::new() })
            }
            m @ (DeltaMethod::Dirsync | DeltaMethod::Usn) => self.read_ad(kind, cfg, m, &stored, cancel).await?,
            DeltaMethod::None => return Ok(Err(format!("the stored cookie's method {method} is not one this run can read"))),
        };
        let read = match read {
            Ok(r) => r,
            Err(DeltaError::FullRequired(why)) => return Ok(Err(why)),
            Err(DeltaError::Failed(f)) => {
                let e = Enumerated::incomplete(cancel.load(Ordering::Relaxed), f.message);
                return Ok(Ok(DeltaRead { e, groups_changed: false }));
            }
        };
        let read = self.stage_batches(kind, id, &method, read, notes).await?;
        if matches!(DeltaMethod::parse(&method), DeltaMethod::Dirsync | DeltaMethod::Usn) {
            deletions_note(&method, detected.as_ref(), settings, notes);
        }
        Ok(Ok(read))
    }

    /// One AD read per search OU (DirSync or USN), on the server that
    /// issued the cookies. A USN read cannot see a removal from a group
    /// (`memberOf` is a back-link and the removed member is no longer
    /// listed): the snapshot's members of every group it saw change are
    /// re-read, so a user removed from a mapped group is demoted.
    async fn read_ad(
        &self,
        kind: DirectoryKind,
        cfg: &DirectoryConfig,
        method: DeltaMethod,
        stored: &[bindery_store::CookieRow],
        cancel: &AtomicBool,
    ) -> Result<std::result::Result<Read, DeltaError>> {
        let mut read = Read { batches: Vec::new(), notes: Vec::new() };
        let mut reread = 0;
        for ou in &cfg.search_ous {
            let Some((_, _, _, cookie)) = stored.iter().find(|c| dn::normalize(&c.0) == dn::normalize(ou)) else {
                return Ok(Err(DeltaError::FullRequired(format!("no cookie for {ou} yet"))));
            };
            if cancel.load(Ordering::Relaxed) {
                return Ok(Err(DeltaError::Failed(Failure::answer("cancelled"))));
            }
            let (mut batch, groups) = match ad_delta::read_changes_and_groups(cfg, ou, cookie).await {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(first) = read.batches.first().map(|b: &DeltaBatch| b.server.clone()) {
                if first != batch.server {
                    return Ok(Err(DeltaError::FullRequired(format!(
                        "the search OUs were read on {first} and {} (a cookie belongs to one domain controller)",
                        batch.server
                    ))));
                }
            }
            if method == DeltaMethod::Usn && !groups.is_empty() {
                let upserted: HashSet<&str> = batch
                    .changes
                    .iter()
                    .filter_map(|c| match c {
                        DeltaChange::Upsert(e) => Some(e.uid.as_str()),
                        DeltaChange::Delete { .. } => None,
                    })
                    .collect();
                let former: Vec<String> = self
                    .store
                    .staged_members_of(kind.as_str(), &groups)
                    .await?
                    .into_iter()
                    .filter(|(uid, dn)| !upserted.contains(uid.as_str()) && dn::is_within(dn, ou))
                    .map(|(_, dn)| dn)
                    .collect();
                if former.len() > REREAD_LIMIT {
                    return Ok(Err(DeltaError::FullRequired(format!(
                        "changed groups had {} members here before, more than a delta run re-reads one by one ({REREAD_LIMIT})",
                        former.len()
                    ))));
                }
                match ad_delta::reread_users(cfg, &batch.server, ou, &former).await {
                    Ok(more) => {
                        reread += more.len();
                        batch.changes.extend(more);
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            read.batches.push(batch);
        }
        if method == DeltaMethod::Usn && reread > 0 {
            read.notes.push(format!(
                "{reread} former members of changed groups re-read (a USN read does not see a removal from a group by itself)"
            ));
        }
        Ok(Ok(read))
    }

    /// Stage what the batches report: the last report of each id wins, an
    /// upsert in any OU's batch wins over a deletion in another's.
    async fn stage_batches(&self, kind: DirectoryKind, id: i64, method: &str, read: Read, notes: &mut Vec<String>) -> Result<DeltaRead> {
        let dir = kind.as_str();
        let batches = read.batches;
        let server = batches.first().map(|b| b.server.clone()).unwrap_or_default();
        self.store.begin_staging(dir, id).await?;
        // Changed entries, the last report of each id winning.
        let mut upserts: Vec<&bindery_directory::enumerate::Entry> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for b in batches.iter().rev() {
            for c in b.changes.iter().rev() {
                if let DeltaChange::Upsert(e) = c {
                    if seen.insert(&e.uid) {
                        upserts.push(e);
                    }
                }
            }
        }
        // Gone: reported deleted by a search, and reported by none as changed
        // or present (syncprov lists entries that changed outside a search's
        // scope as no longer matching it).
        let present: HashSet<&str> = batches.iter().flat_map(|b| b.present.iter().flatten()).map(String::as_str).collect();
        let mut deleted: HashSet<String> = batches
            .iter()
            .flat_map(|b| &b.changes)
            .filter_map(|c| match c {
                DeltaChange::Delete { uid } if !seen.contains(uid.as_str()) && !present.contains(uid.as_str()) => Some(uid.clone()),
                _ => None,
            })
            .collect();
        // A present phase: the OU's known entries it did not list are gone.
        if batches.iter().any(|b| b.present.is_some()) {
            let mut listed: HashSet<&str> = seen.clone();
            for b in &batches {
                listed.extend(b.present.iter().flatten().map(String::as_str));
            }
            let scopes: Vec<&str> = batches.iter().filter(|b| b.present.is_some()).map(|b| b.search_ou.as_str()).collect();
            for (uid, dn) in self.store.staged_ids_and_dns(dir).await? {
                let in_scope = scopes.iter().any(|ou| dn::is_within(&dn, ou));
                if in_scope && !listed.contains(uid.as_str()) {
                    deleted.insert(uid);
                }
            }
        }
        // Whether a membership changes: an upsert's groups differ from its staged row's.
        let mut uids: Vec<String> = upserts.iter().map(|e| e.uid.clone()).collect();
        uids.extend(deleted.iter().cloned());
        // One read of their staged rows: the groups as they were, and the
        // ids and hashes the upserts are staged against (this run holds the
        // directory's lease: nothing else stages meanwhile).
        let before = self.store.staged_known(dir, &uids).await?;
        let known: HashMap<String, (i64, i64)> = before.iter().map(|(uid, (id, hash, _))| (uid.clone(), (*id, *hash))).collect();
        let groups_of = |uid: &str| before.get(uid).map(|(_, _, g)| g.as_str()).unwrap_or("");
        let mut groups_changed = false;
        for chunk in upserts.chunks(500) {
            let prepared: Vec<crate::import::Prepared> = chunk.iter().map(|e| crate::import::stage(e)).collect();
            groups_changed |= chunk.iter().zip(&prepared).any(|(e, p)| groups_of(&e.uid) != p.1.as_str());
            let rows = crate::import::staged_rows(chunk, &prepared);
            self.store.stage_page_known(dir, &rows, &known).await?;
        }
        let deleted: Vec<String> = deleted.into_iter().collect();
        let gone = self.store.remove_staged(dir, &deleted).await?;
        // A row that leaves with groups changes a membership.
        groups_changed |= deleted.iter().any(|uid| !groups_of(uid).is_empty());
        self.store.compute_staged_status(dir).await?;
        let rows: Vec<(String, String, String)> =
            batches.iter().map(|b| (b.search_ou.clone(), b.server.clone(), b.cookie.clone())).collect();
        self.store.put_delta_cookies(dir, method, &rows, now_ms()).await?;
        self.store.run_progress(id, (upserts.len() + deleted.len()) as i64, batches.len() as i64).await?;
        let present = if batches.iter().any(|b| b.present.is_some()) { " (a present phase: the server listed every entry)" } else { "" };
        notes.push(format!(
            "delta read ({method}, {server}): {} changed, {} deleted entries{present}; {gone} left the snapshot",
            upserts.len(),
            deleted.len()
        ));
        notes.extend(read.notes);
        let changed = !upserts.is_empty() || gone > 0;
        Ok(DeltaRead {
            e: Enumerated { complete: true, cancelled: false, error: String::new(), server, changed, created: 0, bulk_loaded: false },
            groups_changed,
        })
    }
}

/// The note of an AD delta run whose method does not see deletions.
fn deletions_note(method: &str, detected: Option<&DeltaSupportInfo>, settings: &SyncSettings, notes: &mut Vec<String>) {
    let sees = detected.map(|d| d.sees_deletions);
    if sees == Some(true) {
        return;
    }
    let why = if sees.is_none() { "may not be visible" } else { "are not visible" };
    notes.push(format!(
        "deletions {why} to {method} for this service account (Deleted Objects is not readable by it): users deleted in the directory are disabled by the next full enumeration (at most every {} h)",
        settings.full_every_hours
    ));
}
