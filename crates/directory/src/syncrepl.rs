//! Delta reads from OpenLDAP / 389-ds: RFC 4533 content synchronisation
//! (syncrepl) in refreshOnly mode, one cookie per search OU.
//!
//! * Entries come back with a Sync State control (add, modify, present,
//!   delete) naming them by `entryUUID`; `syncIdSet` intermediate messages
//!   list deleted (or, in the present phase, present) UUIDs in bulk
//!   ([RFC 4533 §2.5](https://www.rfc-editor.org/rfc/rfc4533#section-2.5)).
//! * A refresh from a cookie the provider's session log covers is a *delete
//!   phase*: deletions are listed. Otherwise it is a *present phase*: every
//!   entry still there is listed, and what is not listed is gone (§3.4.1).
//! * `e-syncRefreshRequired` (4096) means the cookie is too old: a full
//!   enumeration is needed ([`DeltaError::FullRequired`]).
//! * A refresh without a cookie is not a paged search, so a size limit can
//!   cut it. The first cookie is therefore built from the suffix's
//!   `contextCSN`, read *before* a paged full enumeration
//!   ([`start_cookies`]): every change after that read is in the next refresh.
//!
//! ldap3 parses the controls and the Sync Info message but panics on a
//! malformed one; each parse here is guarded, and a malformed answer is a
//! failed read, never a crash.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use ldap3::controls::{Control, ControlType, EntryState, RawControl, RefreshMode, SyncDone, SyncInfo, SyncRequest, SyncState};
use ldap3::{Ldap, ResultEntry, Scope, SearchEntry};

use crate::delta::{Change, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use crate::enumerate::{all_users_filter, Entry};
use crate::probe::{first, map_entry};
use crate::{DirectoryConfig, Failure};

/// The Sync Request control's OID, as the root DSE lists it.
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// `e-syncRefreshRequired`: the cookie can no longer be served.
pub const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// A stored cookie of one search OU and the server it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCookie {
    pub search_ou: String,
    pub server: String,
    pub cookie: String,
}

/// An `entryUUID` as its string form (RFC 4122, lower case), which is how
/// the enumeration reads the attribute.
pub fn uuid_string(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// Run a parser of ldap3's that panics on malformed input.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, DeltaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| DeltaError::Failed(Failure::answer(format!("the server sent a malformed {what}: the change read is incomplete"))))
}

fn failed(e: ldap3::LdapError, what: &str, cfg: &DirectoryConfig) -> DeltaError {
    DeltaError::Failed(Failure::from_ldap(e, what, cfg.op_timeout))
}

/// The naming context holding `dn` among the server's, and its
/// `contextCSN` values (one per provider in a multi-provider setup).
async fn context_csn(ldap: &mut Ldap, cfg: &DirectoryConfig, dn: &str) -> Result<(String, Vec<String>), Failure> {
    let r = ldap
        .with_timeout(cfg.op_timeout)
        .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
        .await
        .map_err(|e| Failure::from_ldap(e, "reading the root DSE", cfg.op_timeout))?;
    let (entries, result) = (r.0, r.1);
    crate::check(result, "reading the root DSE")?;
    let suffix = entries
        .into_iter()
        .map(SearchEntry::construct)
        .flat_map(|e| e.attrs.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case("namingContexts")).flat_map(|(_, v)| v))
        .filter(|nc| crate::dn::is_within(dn, nc))
        .max_by_key(|nc| nc.len())
        .ok_or_else(|| Failure::answer(format!("no naming context of the server holds {dn}")))?;
    let what = format!("reading contextCSN of {suffix}");
    let r = ldap
        .with_timeout(cfg.op_timeout)
        .search(&suffix, Scope::Base, "(objectClass=*)", vec!["contextCSN"])
        .await
        .map_err(|e| Failure::from_ldap(e, &what, cfg.op_timeout))?;
    let (entries, result) = (r.0, r.1);
    crate::check(result, &what)?;
    let csns: Vec<String> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .flat_map(|e| e.attrs.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case("contextCSN")).flat_map(|(_, v)| v))
        .collect();
    Ok((suffix, csns))
}

/// A cookie for "everything after now": the suffix's `contextCSN`.
fn cookie_of(csns: &[String]) -> String {
    format!("rid=000,csn={}", csns.join(";"))
}

pub(crate) async fn current_cookie(ldap: &mut Ldap, cfg: &DirectoryConfig, ou: &str) -> Result<String, Failure> {
    let (suffix, csns) = context_csn(ldap, cfg, ou).await?;
    if csns.is_empty() {
        return Err(Failure::answer(format!(
            "{suffix} has no contextCSN the service account can read: the database has no syncprov overlay, or the account may not read it"
        )));
    }
    Ok(cookie_of(&csns))
}

/// Before a full enumeration: the server that answered and a cookie per
/// search OU that makes the next refresh return every change after this
/// moment. Stored only once the enumeration completed on the same server.
pub async fn start_cookies(cfg: &DirectoryConfig) -> Result<(String, Vec<StoredCookie>), Failure> {
    let (server, mut ldap) = crate::enumerate::connect_first(cfg).await?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for ou in &cfg.search_ous {
        match current_cookie(&mut ldap, cfg, ou).await {
            Ok(cookie) => out.push(StoredCookie { search_ou: ou.clone(), server: server.clone(), cookie }),
            Err(f) => {
                result = Err(f);
                break;
            }
        }
    }
    let _ = ldap.unbind().await;
    result.map(|()| (server, out))
}

/// What Test connection says about syncrepl on a bound connection: the
/// root DSE must offer the Sync Request control, each search OU's naming
/// context must carry a `contextCSN`, and a trial refresh from it must be
/// answered.
pub async fn detect(ldap: &mut Ldap, cfg: &DirectoryConfig) -> DeltaSupport {
    let none = |reason: String| DeltaSupport { method: DeltaMethod::None, sees_deletions: false, reason };
    let r = ldap.with_timeout(cfg.op_timeout).search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"]).await;
    let offered = match r {
        Ok(r) => {
            r.0.into_iter()
                .map(SearchEntry::construct)
                .any(|e| e.attrs.iter().any(|(k, v)| k.eq_ignore_ascii_case("supportedControl") && v.iter().any(|o| o == SYNC_REQUEST_OID)))
        }
        Err(e) => return none(format!("the root DSE could not be read: {}", Failure::from_ldap(e, "root DSE", cfg.op_timeout).message)),
    };
    if !offered {
        return none(format!(
            "the server does not offer RFC 4533 content synchronisation (the root DSE lists no supportedControl {SYNC_REQUEST_OID}): every run is a full enumeration"
        ));
    }
    for ou in &cfg.search_ous {
        let cookie = match current_cookie(ldap, cfg, ou).await {
            Ok(c) => c,
            Err(f) => return none(f.message),
        };
        let control: RawControl =
            SyncRequest { mode: RefreshMode::RefreshOnly, cookie: Some(cookie.into_bytes()), reload_hint: false }.into();
        let trial = ldap
            .with_controls(vec![control])
            .with_timeout(cfg.op_timeout)
            .search(ou, Scope::Subtree, &all_users_filter(cfg), vec!["1.1"])
            .await;
        match trial {
            Ok(r) if r.1.rc == 0 => {}
            Ok(r) => {
                let f =
                    Failure::from_ldap(ldap3::LdapError::LdapResult { result: r.1 }, &format!("a trial refresh of {ou}"), cfg.op_timeout);
                return none(f.message);
            }
            Err(e) => return none(Failure::from_ldap(e, &format!("a trial refresh of {ou}"), cfg.op_timeout).message),
        }
    }
    DeltaSupport {
        method: DeltaMethod::Syncrepl,
        sees_deletions: true,
        reason: "syncrepl (RFC 4533 refreshOnly) with a cookie per search OU, deletions included; the first run is a paged full \
                 enumeration that records the cookie (a refresh without a cookie is not paged, so a size limit could cut it)"
            .into(),
    }
}

/// Read what changed in every search OU since its cookie, on the first
/// server that answers. Every OU needs a cookie of that server; otherwise,
/// or when the server cannot serve a cookie any more, the answer is
/// [`DeltaError::FullRequired`].
pub async fn read_changes(cfg: &DirectoryConfig, cookies: &[StoredCookie], cancel: &AtomicBool) -> Result<Vec<DeltaBatch>, DeltaError> {
    for ou in &cfg.search_ous {
        if !cookies.iter().any(|c| &c.search_ou == ou) {
            return Err(DeltaError::FullRequired(format!("no cookie for {ou} yet")));
        }
    }
    let (server, mut ldap) = crate::enumerate::connect_first(cfg).await.map_err(DeltaError::Failed)?;
    let result = async {
        let mut groups = if crate::groups::GroupIndex::needed(cfg) {
            Some(crate::groups::GroupIndex::load(&mut ldap, cfg).await.map_err(DeltaError::Failed)?)
        } else {
            None
        };
        let mut out = Vec::new();
        for ou in &cfg.search_ous {
            let Some(stored) = cookies.iter().find(|c| &c.search_ou == ou) else { continue };
            if stored.server != server {
                return Err(DeltaError::FullRequired(format!(
                    "the cookie of {ou} belongs to {}, but {server} answered (a cookie belongs to one server)",
                    stored.server
                )));
            }
            let mut batch = refresh(&mut ldap, cfg, ou, &stored.cookie, cancel).await?;
            if let Some(index) = groups.as_mut() {
                for c in &mut batch.changes {
                    if let Change::Upsert(e) = c {
                        e.user.groups = index
                            .groups_of(&mut ldap, cfg, &e.user.dn, &e.user.username, &e.user.groups)
                            .await
                            .map_err(DeltaError::Failed)?;
                    }
                }
            }
            batch.server = server.clone();
            out.push(batch);
        }
        Ok(out)
    }
    .await;
    let _ = ldap.unbind().await;
    result
}

/// One refreshOnly search of one OU from `cookie`.
async fn refresh(ldap: &mut Ldap, cfg: &DirectoryConfig, ou: &str, cookie: &str, cancel: &AtomicBool) -> Result<DeltaBatch, DeltaError> {
    let what = format!("refresh of {ou}");
    let mut control: RawControl =
        SyncRequest { mode: RefreshMode::RefreshOnly, cookie: Some(cookie.as_bytes().to_vec()), reload_hint: false }.into();
    // A server that ignored the control would return a plain search.
    control.crit = true;
    let mut attrs = cfg.attr_map.attributes();
    attrs.extend(crate::authn::STATE_ATTRS.iter().map(|s| s.to_string()));
    let filter = all_users_filter(cfg);
    let mut stream = ldap
        .with_controls(vec![control])
        .with_timeout(cfg.op_timeout)
        .streaming_search(ou, Scope::Subtree, &filter, attrs)
        .await
        .map_err(|e| failed(e, &what, cfg))?;
    let mut batch = DeltaBatch { search_ou: ou.to_string(), cookie: cookie.to_string(), ..Default::default() };
    let mut present: HashSet<String> = HashSet::new();
    let mut present_phase = false;
    let read = async {
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(DeltaError::Failed(Failure::answer("cancelled by an administrator: the change read is incomplete")));
            }
            let Some(item) = stream.next().await.map_err(|e| failed(e, &what, cfg))? else { break };
            if item.is_ref() {
                continue; // referrals are never followed
            }
            if item.is_intermediate() {
                let info = guarded("Sync Info message", || ldap3::controls::parse_syncinfo(item))?;
                on_sync_info(info, &mut batch, &mut present, &mut present_phase);
                continue;
            }
            on_entry(item, cfg, &mut batch, &mut present)?;
        }
        Ok(())
    }
    .await;
    let result = stream.finish().await;
    read?;
    match result.rc {
        0 => {}
        SYNC_REFRESH_REQUIRED => {
            return Err(DeltaError::FullRequired(format!(
                "the server can no longer tell what changed in {ou} since the stored cookie (e-syncRefreshRequired)"
            )))
        }
        // OpenLDAP: a cookie ahead of the server (restored from a backup,
        // or another server's) — as stale as a too old one.
        53 if result.text.contains("newer than provider") => {
            return Err(DeltaError::FullRequired(format!(
                "the stored cookie of {ou} is ahead of the server ({}): was the directory restored from a backup?",
                result.text.trim()
            )))
        }
        4 => {
            return Err(DeltaError::FullRequired(format!(
                "the changes of {ou} exceed the server's size limit for a refresh (it is not a paged search)"
            )))
        }
        _ => return Err(DeltaError::Failed(Failure::from_ldap(ldap3::LdapError::LdapResult { result }, &what, cfg.op_timeout))),
    }
    let done = result.ctrls.iter().find_map(|c| match c {
        Control(Some(ControlType::SyncDone), raw) => Some(raw),
        _ => None,
    });
    let Some(done) = done else {
        return Err(DeltaError::Failed(Failure::answer(format!(
            "{what}: the server answered without a Sync Done control, so the result cannot be trusted as complete"
        ))));
    };
    let done = guarded("Sync Done control", || done.parse::<SyncDone>())?;
    if let Some(c) = done.cookie {
        batch.cookie = String::from_utf8(c).map_err(|_| DeltaError::Failed(Failure::answer(format!("{what}: the cookie is not text"))))?;
    }
    // refreshDeletes FALSE: the refresh was a present phase (RFC 4533 §3.4.1).
    if present_phase || !done.refresh_deletes {
        batch.present = Some(present.into_iter().collect());
    }
    Ok(batch)
}

pub(crate) fn on_sync_info(info: SyncInfo, batch: &mut DeltaBatch, present: &mut HashSet<String>, present_phase: &mut bool) {
    let mut new_cookie = |c: Option<Vec<u8>>| {
        if let Some(c) = c.and_then(|c| String::from_utf8(c).ok()) {
            batch.cookie = c;
        }
    };
    match info {
        SyncInfo::NewCookie(c) => new_cookie(Some(c)),
        SyncInfo::RefreshDelete { cookie, .. } => new_cookie(cookie),
        SyncInfo::RefreshPresent { cookie, .. } => {
            new_cookie(cookie);
            *present_phase = true;
        }
        SyncInfo::SyncIdSet { cookie, refresh_deletes, sync_uuids } => {
            new_cookie(cookie);
            let uuids = sync_uuids.iter().filter_map(|u| uuid_string(u));
            if refresh_deletes {
                batch.changes.extend(uuids.map(|uid| Change::Delete { uid }));
            } else {
                *present_phase = true;
                present.extend(uuids);
            }
        }
    }
}

pub(crate) fn on_entry(
    item: ResultEntry,
    cfg: &DirectoryConfig,
    batch: &mut DeltaBatch,
    present: &mut HashSet<String>,
) -> Result<(), DeltaError> {
    let state = item.1.iter().find_map(|c| match c {
        Control(Some(ControlType::SyncState), raw) => Some(raw.clone()),
        _ => None,
    });
    let Some(state) = state else {
        return Err(DeltaError::Failed(Failure::answer("an entry came without its Sync State control: the change read is incomplete")));
    };
    let state = guarded("Sync State control", || state.parse::<SyncState>())?;
    let Some(uid) = uuid_string(&state.entry_uuid) else {
        return Err(DeltaError::Failed(Failure::answer("a Sync State control carried no valid entryUUID")));
    };
    if let Some(c) = state.cookie.and_then(|c| String::from_utf8(c).ok()) {
        batch.cookie = c;
    }
    match state.state {
        EntryState::Present => {
            present.insert(uid);
        }
        EntryState::Delete => batch.changes.push(Change::Delete { uid }),
        EntryState::Add | EntryState::Modify => {
            let e = SearchEntry::construct(item);
            let user = map_entry(&e, &cfg.attr_map);
            let state = crate::authn::entry_state(&e, &user);
            // The entryUUID attribute when read (as the enumeration does), else the control's.
            let uid = first(&e, "entryUUID").map(str::to_ascii_lowercase).unwrap_or(uid);
            batch.changes.push(Change::Upsert(Entry { uid, user, state }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_read_as_the_attribute_does() {
        let raw = [0x23, 0x31, 0x37, 0x64, 0x82, 0xc4, 0x10, 0x41, 0x87, 0x11, 0xc5, 0xb6, 0x9c, 0x21, 0x75, 0xba];
        assert_eq!(super::uuid_string(&raw).as_deref(), Some("23313764-82c4-1041-8711-c5b69c2175ba"));
        assert_eq!(super::uuid_string(&raw[..15]), None);
    }

    #[test]
    fn a_malformed_answer_is_a_failed_read_not_a_crash() {
        let raw = ldap3::controls::RawControl { ctype: "1.3.6.1.4.1.4203.1.9.1.3".into(), crit: false, val: Some(vec![0x04, 0x7f]) };
        let r = super::guarded("Sync Done control", || raw.parse::<ldap3::controls::SyncDone>());
        assert!(matches!(r, Err(super::super::delta::DeltaError::Failed(_))));
    }
}
