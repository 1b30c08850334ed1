//! Streaming enumeration of every user in the search OUs, page by page, for
//! the import table and sync. Memory stays flat: each page is handed to the
//! caller and dropped. Anything short of a complete enumeration — an error,
//! a timeout, a size limit, a server that ignores paging or repeats its
//! cookie, a page loop that does not end, a cancel — is an `Err`, never a
//! shorter list that would look like "these users are gone".

use std::sync::atomic::{AtomicBool, Ordering};

use bindery_model::MappedUser;
use futures::{StreamExt, TryFutureExt};
use ldap3::{ResultEntry, SearchEntry};

use crate::probe::{first, map_entry};
use crate::{conn, DirectoryConfig, Failure};

/// One directory user as enumerated.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The directory's immutable id: `entryUUID`, or AD's `objectGUID`
    /// (hex); the DN when the directory has neither.
    pub uid: String,
    pub user: MappedUser,
    /// Account state that refuses sign-in (`disabled`, `locked`), if any.
    pub state: Option<bindery_model::AccountState>,
}

/// Counters of a finished enumeration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub pages: u64,
    pub server: String,
}

pub(crate) fn uid_of(e: &SearchEntry) -> String {
    if let Some(u) = first(e, "entryUUID") {
        return u.to_ascii_lowercase();
    }
    // (A GUID whose bytes are valid UTF-8 arrives among the text attributes.)
    if let Some(g) = crate::ad_delta::guid_bytes(e) {
        return g.iter().map(|b| format!("{b:02x}")).collect();
    }
    format!("dn:{}", crate::dn::normalize(&e.dn))
}

/// A page's entries as enumerated (without group lookups).
fn to_entries(raw: Vec<ResultEntry>, cfg: &DirectoryConfig) -> Vec<Entry> {
    raw.into_iter()
        .map(|e| {
            let e = SearchEntry::construct(e);
            let user = map_entry(&e, &cfg.attr_map);
            // The same reading of the account state as a login's lookup.
            let state = crate::authn::entry_state(&e, &user);
            Entry { uid: uid_of(&e), user, state }
        })
        .collect()
}

/// Pages enumerated ahead of the one being stored.
const STORE_AHEAD: usize = 2;

/// A page on its way to be stored: as it came, mapped where it is stored,
/// or mapped already (with group lookups).
enum Page {
    Raw(Vec<ResultEntry>),
    Mapped(Vec<Entry>),
}

impl Page {
    fn mapped(self, cfg: &DirectoryConfig) -> Vec<Entry> {
        match self {
            Page::Raw(raw) => to_entries(raw, cfg),
            Page::Mapped(entries) => entries,
        }
    }
}

/// The failure of storing page `n` (the caller's `on_page`).
fn storing_failed(n: u64) -> impl FnOnce(String) -> Failure {
    move |e| Failure::answer(format!("storing page {n}: {e}"))
}

/// An entry's DN as it came (the first element of the entry's sequence),
/// read without decoding the rest of it; empty when it cannot be read.
fn raw_dn(e: &ResultEntry) -> &str {
    use ldap3::asn1::PL;
    let PL::C(parts) = &e.0.payload else { return "" };
    match parts.first().map(|t| &t.payload) {
        Some(PL::P(bytes)) => std::str::from_utf8(bytes).unwrap_or(""),
        _ => "",
    }
}

/// Connect and bind as the service account on the first server that
/// answers, in the configured order. A refused bind on a live server is
/// final (the next server would refuse it too).
pub(crate) async fn connect_first(cfg: &DirectoryConfig) -> Result<(String, ldap3::Ldap), Failure> {
    let mut last = Failure::unreachable("no directory server configured");
    for server in &cfg.servers {
        match conn::connect(server, cfg).await {
            Ok((mut ldap, _)) => match conn::service_bind(&mut ldap, cfg).await {
                Ok(()) => return Ok((server.to_string(), ldap)),
                Err(f) => {
                    let _ = ldap.unbind().await;
                    if !f.unreachable {
                        return Err(f);
                    }
                    last = f;
                }
            },
            Err((_, f, _)) => last = f,
        }
    }
    Err(last)
}

/// The filter that matches every user: the login filter with `*` for the user.
pub fn all_users_filter(cfg: &DirectoryConfig) -> String {
    cfg.search_filter.replace("%(user)s", "*")
}

/// Enumerate every user of every search OU on the first server that
/// answers, calling `on_page` with each page. `cancel` stops it between
/// pages (reported as incomplete).
pub async fn enumerate<F, Fut>(cfg: &DirectoryConfig, cancel: &AtomicBool, mut on_page: F) -> Result<Totals, Failure>
where
    F: FnMut(Vec<Entry>, &Totals) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let (server, mut ldap) = connect_first(cfg).await?;
    let filter = all_users_filter(cfg);
    let mut attrs = cfg.attr_map.attributes();
    attrs.extend(crate::authn::STATE_ATTRS.iter().map(|s| s.to_string()));
    let mut totals = Totals { server, ..Default::default() };
    // Groups as sign-in computes them: the groups' side is read once per run.
    let mut groups = if crate::groups::GroupIndex::needed(cfg) {
        match crate::groups::GroupIndex::load(&mut ldap, cfg).await {
            Ok(index) => Some(index),
            Err(f) => {
                let _ = ldap.unbind().await;
                return Err(f);
            }
        }
    } else {
        None
    };
    // Pages go from the reading below to the storing beside it through a
    // queue of `STORE_AHEAD` pages: the directory is asked for the next page
    // as soon as one has arrived, not once the one before is stored, so
    // that a slow store (the first page waits for the snapshot's hashes,
    // read meanwhile) does not hold the reading up, until the queue is full.
    // At most `STORE_AHEAD` + 2 + `cfg.stores_at_once` pages are held in
    // memory: those being stored, the one mapped meanwhile, those queued
    // and the one arriving.
    // (With group lookups, which need the connection, a page is mapped
    // before the next is asked for.)
    let (queue, queued) = tokio::sync::mpsc::channel::<(Totals, Page)>(STORE_AHEAD);
    // Set when the reading fails (a cancel, a lost server): the storing
    // finishes the pages it is storing and stores no more.
    let read_failed = AtomicBool::new(false);
    let storing = async {
        // Moved in: dropped when the storing ends, which stops the reading.
        let mut queued = queued;
        // Up to `cfg.stores_at_once` pages are stored at once, and the next
        // page is mapped meanwhile: the store spends most of its time
        // waiting for the database, and mapping (decoding each entry's
        // attributes) is most of the rest.
        let mut storing = futures::stream::FuturesUnordered::new();
        let mut next: Option<(Totals, Vec<Entry>)> = None;
        let mut closed = false;
        let mut failed = None;
        loop {
            if failed.is_none() && !read_failed.load(Ordering::Relaxed) {
                while storing.len() < cfg.stores_at_once.max(1) {
                    let Some((totals, entries)) = next.take() else { break };
                    let n = totals.pages;
                    storing.push(on_page(entries, &totals).map_err(storing_failed(n)));
                }
            } else {
                // A failed store (or read) starts no other: those under
                // way end by their own commit or rollback (one dropped
                // half-way would leave its transaction to the pool).
                next = None;
                closed = true;
            }
            let receive = next.is_none() && !closed;
            if !receive && storing.is_empty() {
                break;
            }
            // The stores first: a store just started runs up to its first
            // wait for the database before the next page is mapped (polled
            // in random order, the mapping went first about every other
            // page, and the store's SQL waited for it: SQLite's first sync
            // took 0.3 s longer).
            tokio::select! {
                biased;
                Some(stored) = storing.next(), if !storing.is_empty() => {
                    if let Err(f) = stored {
                        failed.get_or_insert(f);
                    }
                }
                got = queued.recv(), if receive => match got {
                    Some((totals, page)) => next = Some((totals, page.mapped(cfg))),
                    None => closed = true,
                },
            }
        }
        // Dropped before the reading is waited for: it stops at its next page.
        drop(queued);
        match failed {
            Some(f) => Err(f),
            None => Ok::<(), Failure>(()),
        }
    };
    let read_pages = async {
        // Moved in: dropped when the reading ends, which ends the storing.
        let queue = queue;
        // The storing has stopped (it failed: its error is the one reported).
        let stopped = || Failure::answer("storing the enumerated pages stopped");
        for ou in &cfg.search_ous {
            let mut cookie: Vec<u8> = Vec::new();
            let mut last_page: Option<u64> = None;
            let mut finished = false;
            for page in 0..cfg.max_pages {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Failure::answer("cancelled by an administrator: the enumeration is incomplete"));
                }
                let what = format!("paged search of {ou} (page {})", page + 1);
                let (raw, next) = crate::search_page(&mut ldap, cfg, ou, &filter, &attrs, &cookie, &what).await?;
                let this_page = crate::page_fingerprint(raw.iter().map(raw_dn));
                totals.entries += raw.len() as u64;
                totals.pages += 1;
                let page = match groups.as_mut() {
                    Some(index) => {
                        let mut entries = to_entries(raw, cfg);
                        for e in &mut entries {
                            e.user.groups = index.groups_of(&mut ldap, cfg, &e.user.dn, &e.user.username, &e.user.groups).await?;
                        }
                        Page::Mapped(entries)
                    }
                    None => Page::Raw(raw),
                };
                // The answer is checked before its page is queued: a page
                // of a faulty paging is never stored.
                let next_cookie =
                    match next {
                        Some(c) if !c.is_empty() => {
                            if c == cookie && last_page == Some(this_page) {
                                return Err(Failure::answer(
                                    "paged search did not advance (the server repeated its cookie): result incomplete",
                                ));
                            }
                            Some(c)
                        }
                        Some(_) => None,
                        None => return Err(Failure::answer(
                            "the server ignored the paged-results control: the result may be truncated, so it is reported as incomplete",
                        )),
                    };
                // (`totals` counts up to this page, this one included.)
                queue.send((totals.clone(), page)).await.map_err(|_| stopped())?;
                match next_cookie {
                    Some(c) => {
                        cookie = c;
                        last_page = Some(this_page);
                    }
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if !finished {
                return Err(Failure::answer(format!(
                    "paged search of {ou} still not finished after {} pages: cut off, result incomplete",
                    cfg.max_pages
                )));
            }
        }
        Ok(totals.clone())
    };
    let reading = async {
        let read = read_pages.await;
        if read.is_err() {
            read_failed.store(true, Ordering::Relaxed);
        }
        read
    };
    // Neither is dropped half-way: a store in progress holds a write
    // transaction, which must end by its own commit or rollback. A failed
    // store stops the reading at its next page; a failed read leaves the
    // pages still queued unstored (the enumeration is incomplete either
    // way). The store's failure is the one reported: the reading's is then
    // only that the storing stopped.
    let (read, stored) = tokio::join!(reading, storing);
    let result = stored.and(read);
    let _ = ldap.unbind().await;
    result
}
