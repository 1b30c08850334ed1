//! The live change stream (issue 17 §2), whatever the directory: one
//! [`LiveStream`] with its source chosen by the delta method Test
//! connection detected — syncrepl here for OpenLDAP / 389-ds, change
//! notification with DirSync or USN for Active Directory
//! ([`crate::ad_live`]). Both report [`LiveEvent`]s in the delta sync's
//! [`Change`] shape, so the caller decides what a change means in one place.
//!
//! # OpenLDAP / 389-ds: RFC 4533 content synchronisation in refreshAndPersist mode
//!
//! One persistent search per search OU, all on one connection, starting
//! from a cookie (the stream's own last one, the delta sync's, or "now":
//! the suffix's `contextCSN`). The refresh phase returns what changed since
//! the cookie; then the server keeps the search open and sends each change
//! as it happens ([RFC 4533 §3.2](https://www.rfc-editor.org/rfc/rfc4533#section-3.2)).
//! Changes come in the [`Change`] shape of the delta sync, read by the same
//! Sync State / Sync Info parsing ([`crate::syncrepl`]).
//!
//! Connect and bind have their timeouts; the persistent searches have none
//! (they are open-ended by design), so a dead connection is noticed by a
//! heartbeat: a root DSE read every [`HEARTBEAT`] with the operation
//! timeout. A closed connection ends the searches at once.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::controls::{RawControl, RefreshMode, SyncInfo, SyncRequest};
use ldap3::{Ldap, Scope, SearchEntry};
use tokio::sync::mpsc;

use crate::delta::{Change, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use crate::enumerate::{all_users_filter, Entry};
use crate::syncrepl::{guarded, on_entry, on_sync_info, StoredCookie, SYNC_REFRESH_REQUIRED};
use crate::{DirectoryConfig, Failure};

/// How often an idle stream checks that its connection is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// What the stream reports.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A change, and the cookie that includes it (store it to resume after it).
    Change { search_ou: String, change: Box<Change>, cookie: String },
    /// The search of this OU finished its refresh phase: changes now arrive
    /// as they happen.
    Persisting { search_ou: String, cookie: String },
    /// A new cookie without a change.
    Cookie { search_ou: String, cookie: String },
}

type Item = Result<LiveEvent, DeltaError>;

/// An open change stream on one server. Dropping it ends the searches.
pub struct LiveStream {
    /// The server that answered (the cookies belong to it).
    pub server: String,
    source: Source,
}

enum Source {
    Syncrepl(SyncreplStream),
    Ad(crate::ad_live::AdStream),
}

/// Open the stream of the method Test connection detected (`support`) on
/// the first server that answers (AD: the cookies' server). A cookie is
/// used only for the server that issued it; a search OU without one starts
/// "now".
pub async fn open(cfg: &DirectoryConfig, cookies: &[StoredCookie], support: &DeltaSupport) -> Result<LiveStream, DeltaError> {
    match support.method {
        DeltaMethod::Syncrepl => {
            let s = open_syncrepl(cfg, cookies).await?;
            Ok(LiveStream { server: s.server.clone(), source: Source::Syncrepl(s) })
        }
        DeltaMethod::Dirsync | DeltaMethod::Usn => {
            let s = crate::ad_live::open(cfg, cookies, support).await?;
            Ok(LiveStream { server: s.server.clone(), source: Source::Ad(s) })
        }
        DeltaMethod::None => Err(DeltaError::Failed(Failure::answer(format!(
            "live deprovisioning needs syncrepl (OpenLDAP) or DirSync / USN (Active Directory): {}",
            support.reason
        )))),
    }
}

impl LiveStream {
    /// The next event. An error ends the stream: reconnect.
    pub async fn next(&mut self) -> Result<LiveEvent, DeltaError> {
        match &mut self.source {
            Source::Syncrepl(s) => s.next().await,
            Source::Ad(s) => s.next().await,
        }
    }

    /// The entry with this immutable id in any search OU, or `None` when
    /// no search OU holds it: confirms a [`Change::Delete`] (syncrepl
    /// reports as deleted an entry that moved to another search OU; an AD
    /// read has confirmed its deletions already, across the search OUs).
    pub async fn lookup(&mut self, uid: &str) -> Result<Option<Entry>, DeltaError> {
        match &mut self.source {
            Source::Syncrepl(s) => s.lookup(uid).await,
            Source::Ad(_) => Ok(None),
        }
    }

    /// How the stream works, in words (for its status).
    pub fn method(&self) -> &str {
        match &self.source {
            Source::Syncrepl(_) => "syncrepl refreshAndPersist",
            Source::Ad(s) => s.method(),
        }
    }

    /// What the stream cannot see, in words (`None`: disables and deletions both).
    pub fn unseen(&self) -> Option<&str> {
        match &self.source {
            Source::Syncrepl(_) => None,
            Source::Ad(s) => s.unseen(),
        }
    }
}

/// The syncrepl source: one refreshAndPersist search per search OU.
struct SyncreplStream {
    server: String,
    ldap: Ldap,
    cfg: DirectoryConfig,
    rx: mpsc::Receiver<Item>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    groups: Option<crate::groups::GroupIndex>,
}

impl Drop for SyncreplStream {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        let mut ldap = self.ldap.clone();
        // Closing the connection ends the server's persistent searches.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = ldap.unbind().await;
            });
        }
    }
}

/// Open the syncrepl stream on the first server that answers.
async fn open_syncrepl(cfg: &DirectoryConfig, cookies: &[StoredCookie]) -> Result<SyncreplStream, DeltaError> {
    let (server, mut ldap) = crate::enumerate::connect_first(cfg).await.map_err(DeltaError::Failed)?;
    let groups = if crate::groups::GroupIndex::needed(cfg) {
        match crate::groups::GroupIndex::load(&mut ldap, cfg).await {
            Ok(g) => Some(g),
            Err(f) => {
                let _ = ldap.unbind().await;
                return Err(DeltaError::Failed(f));
            }
        }
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(256);
    let mut readers = Vec::new();
    for ou in &cfg.search_ous {
        let cookie = match cookies.iter().find(|c| &c.search_ou == ou && c.server == server) {
            Some(c) => c.cookie.clone(),
            None => match crate::syncrepl::current_cookie(&mut ldap, cfg, ou).await {
                Ok(c) => c,
                Err(f) => {
                    let _ = ldap.unbind().await;
                    return Err(DeltaError::Failed(f));
                }
            },
        };
        readers.push(tokio::spawn(persist(ldap.clone(), cfg.clone(), ou.clone(), cookie, tx.clone())));
    }
    Ok(SyncreplStream { server, ldap, cfg: cfg.clone(), rx, readers, groups })
}

impl SyncreplStream {
    async fn next(&mut self) -> Result<LiveEvent, DeltaError> {
        loop {
            match tokio::time::timeout(HEARTBEAT, self.rx.recv()).await {
                Ok(Some(Ok(LiveEvent::Change { search_ou, mut change, cookie }))) => {
                    if let Change::Upsert(e) = change.as_mut() {
                        self.fill_groups(e).await?;
                    }
                    return Ok(LiveEvent::Change { search_ou, change, cookie });
                }
                Ok(Some(item)) => return item,
                Ok(None) => return Err(DeltaError::Failed(Failure::unreachable("the change stream ended"))),
                Err(_) => self.heartbeat().await?,
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), DeltaError> {
        let r = self.ldap.with_timeout(self.cfg.op_timeout).search("", Scope::Base, "(objectClass=*)", vec!["1.1"]).await;
        match r {
            Ok(r) if r.1.rc == 0 => Ok(()),
            Ok(r) => Err(DeltaError::Failed(Failure::from_ldap(
                ldap3::LdapError::LdapResult { result: r.1 },
                "the change stream's heartbeat",
                self.cfg.op_timeout,
            ))),
            Err(e) => Err(DeltaError::Failed(Failure::from_ldap(e, "the change stream's heartbeat", self.cfg.op_timeout))),
        }
    }

    async fn fill_groups(&mut self, e: &mut Entry) -> Result<(), DeltaError> {
        if let Some(index) = self.groups.as_mut() {
            e.user.groups = index
                .groups_of(&mut self.ldap, &self.cfg, &e.user.dn, &e.user.username, &e.user.groups)
                .await
                .map_err(DeltaError::Failed)?;
        }
        Ok(())
    }

    /// The entry with this immutable id in any search OU, as the
    /// enumeration reads it, or `None` when no search OU holds it. A
    /// deletion is confirmed this way: syncrepl also reports as deleted an
    /// entry that moved to another search OU, or changed outside the scope.
    async fn lookup(&mut self, uid: &str) -> Result<Option<Entry>, DeltaError> {
        let mut attrs = self.cfg.attr_map.attributes();
        attrs.extend(crate::authn::STATE_ATTRS.iter().map(|s| s.to_string()));
        attrs.push("entryUUID".into());
        let filter = format!("(&{}(entryUUID={}))", all_users_filter(&self.cfg), ldap3::ldap_escape(uid));
        let ous = self.cfg.search_ous.clone();
        for ou in &ous {
            let what = format!("looking up {uid} in {ou}");
            let r = self
                .ldap
                .with_timeout(self.cfg.op_timeout)
                .search(ou, Scope::Subtree, &filter, attrs.clone())
                .await
                .map_err(|e| DeltaError::Failed(Failure::from_ldap(e, &what, self.cfg.op_timeout)))?;
            let (entries, result) = (r.0, r.1);
            if result.rc == 32 {
                continue; // no such object: the OU itself is gone
            }
            crate::check(result, &what).map_err(DeltaError::Failed)?;
            if let Some(e) = entries.into_iter().find(|e| !e.is_ref()) {
                let e = SearchEntry::construct(e);
                let user = crate::probe::map_entry(&e, &self.cfg.attr_map);
                let state = crate::authn::entry_state(&e, &user);
                let mut entry = Entry { uid: uid.to_string(), user, state };
                self.fill_groups(&mut entry).await?;
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

/// One refreshAndPersist search of one OU, its events sent to `tx` until
/// the search or the connection ends (then an error is sent).
async fn persist(mut ldap: Ldap, cfg: DirectoryConfig, ou: String, cookie: String, tx: mpsc::Sender<Item>) {
    let r = persist_inner(&mut ldap, &cfg, &ou, cookie, &tx).await;
    let _ =
        tx.send(Err(r.err().unwrap_or_else(|| DeltaError::Failed(Failure::unreachable(format!("the change stream of {ou} ended")))))).await;
}

async fn persist_inner(
    ldap: &mut Ldap,
    cfg: &DirectoryConfig,
    ou: &str,
    cookie: String,
    tx: &mpsc::Sender<Item>,
) -> Result<(), DeltaError> {
    let what = format!("the change stream of {ou}");
    let mut control: RawControl =
        SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie: Some(cookie.clone().into_bytes()), reload_hint: false }.into();
    control.crit = true;
    let mut attrs = cfg.attr_map.attributes();
    attrs.extend(crate::authn::STATE_ATTRS.iter().map(|s| s.to_string()));
    // No timeout: the persist phase is open-ended (the heartbeat watches the connection).
    let mut stream = ldap
        .with_controls(vec![control])
        .streaming_search(ou, Scope::Subtree, &all_users_filter(cfg), attrs)
        .await
        .map_err(|e| DeltaError::Failed(Failure::from_ldap(e, &what, cfg.op_timeout)))?;
    let mut batch = DeltaBatch { search_ou: ou.to_string(), cookie, ..Default::default() };
    let mut present: HashSet<String> = HashSet::new();
    let mut present_phase = false;
    let gone = || DeltaError::Failed(Failure::unreachable(format!("{what}: the receiver is gone")));
    let read = async {
        loop {
            let Some(item) = stream.next().await.map_err(|e| DeltaError::Failed(Failure::from_ldap(e, &what, cfg.op_timeout)))? else {
                break;
            };
            if item.is_ref() {
                continue;
            }
            let before = batch.cookie.clone();
            let mut persisting = false;
            if item.is_intermediate() {
                let info = guarded("Sync Info message", || ldap3::controls::parse_syncinfo(item))?;
                if let SyncInfo::RefreshDelete { refresh_done: true, .. } | SyncInfo::RefreshPresent { refresh_done: true, .. } = &info {
                    persisting = true;
                }
                on_sync_info(info, &mut batch, &mut present, &mut present_phase);
            } else {
                on_entry(item, cfg, &mut batch, &mut present)?;
            }
            // Entries merely reported present change nothing here (an entry
            // a present phase left out is the sync's to find).
            present.clear();
            let changes = std::mem::take(&mut batch.changes);
            let had_changes = !changes.is_empty();
            for change in changes {
                tx.send(Ok(LiveEvent::Change { search_ou: ou.to_string(), change: Box::new(change), cookie: batch.cookie.clone() }))
                    .await
                    .map_err(|_| gone())?;
            }
            if persisting {
                tx.send(Ok(LiveEvent::Persisting { search_ou: ou.to_string(), cookie: batch.cookie.clone() })).await.map_err(|_| gone())?;
            } else if !had_changes && batch.cookie != before {
                tx.send(Ok(LiveEvent::Cookie { search_ou: ou.to_string(), cookie: batch.cookie.clone() })).await.map_err(|_| gone())?;
            }
        }
        Ok(())
    }
    .await;
    let result = stream.finish().await;
    read?;
    // A persistent search ends only with an error (or the server's refusal).
    match result.rc {
        0 => Err(DeltaError::Failed(Failure::unreachable(format!("{what}: the server ended the persistent search")))),
        SYNC_REFRESH_REQUIRED => {
            Err(DeltaError::FullRequired(format!("the server can no longer serve the stored cookie of {ou} (e-syncRefreshRequired)")))
        }
        53 if result.text.contains("newer than provider") => {
            Err(DeltaError::FullRequired(format!("the stored cookie of {ou} is ahead of the server ({})", result.text.trim())))
        }
        _ => Err(DeltaError::Failed(Failure::from_ldap(ldap3::LdapError::LdapResult { result }, &what, cfg.op_timeout))),
    }
}
