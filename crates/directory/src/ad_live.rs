//! The live change stream of Active Directory (issue 17 §2): change
//! notification as the trigger, DirSync (or USN) as the reader.
//!
//! # What was tried against Samba AD 4.17, and what is used
//!
//! * **Change notification** (`1.2.840.113556.1.4.528`,
//!   [`ad_delta::notifications`]) tells any account, within ~0.1 s, *that*
//!   an object changed, not how. A disable (`userAccountControl`) is
//!   notified to an ordinary account. A deletion is notified only when the
//!   search also carries the show-deleted control *and* the account may
//!   read Deleted Objects (the object moves there); an ordinary account is
//!   never told of a deletion, with or without the control.
//! * **DirSync** (or `uSNChanged`), read with the stream's own cookie
//!   ([`ad_delta::read_changes`]), says *how* it changed, exactly as a delta
//!   run reads it (re-read with the login filter and the enumeration's
//!   mapping), and reports deletions when the account may see tombstones.
//!
//! So the stream is both: each notification triggers a read from the
//! cookie (one place decides what a change means), and a read also runs
//! every [`POLL_NOTIFIED`] in case a notification was lost, and every
//! [`POLL_ONLY`] where the server does not offer or refuses change
//! notification (DirSync polling). Polling alone would also work, but a
//! DirSync read every second or two costs the DC a search of the naming
//! context each time; a notification costs nothing until something changes.
//!
//! Deletions are seen only when Test connection found that the method sees
//! them (the account may read Deleted Objects); otherwise [`AdStream::unseen`]
//! says so, and the sync's full enumeration disables deleted users.
//!
//! The cookies (one per search OU) and the notification belong to one
//! domain controller: the notification is opened first, on the cookies'
//! server, and a cookie is only taken "now" after it is open, so no change
//! falls between the two.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ad_delta::{self, ChangeNotifier};
use crate::delta::{Change, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use crate::live::LiveEvent;
use crate::syncrepl::StoredCookie;
use crate::DirectoryConfig;

/// With change notification open: read anyway after this long without one
/// (a notification lost with a connection is caught up within it; the
/// read's fresh connection also checks that the server is alive).
pub const POLL_NOTIFIED: Duration = Duration::from_secs(5);
/// Without change notification: DirSync (or USN) polling interval.
pub const POLL_ONLY: Duration = Duration::from_secs(2);
/// After a notification, further ones within this are read together.
const SETTLE: Duration = Duration::from_millis(100);

/// An open Active Directory change stream on one domain controller.
pub struct AdStream {
    /// The server the cookies belong to.
    pub server: String,
    cfg: DirectoryConfig,
    notifier: Option<ChangeNotifier>,
    /// DirSync or USN: what reads the changes.
    reader: DeltaMethod,
    /// How the stream works, in words (for the status).
    method: String,
    /// What it cannot see, in words.
    unseen: Option<String>,
    /// `(search OU, cookie)`.
    cookies: Vec<(String, String)>,
    pending: VecDeque<LiveEvent>,
    /// Whether the first read (catching up from the stored cookies) ran.
    caught_up: bool,
}

/// The reader's name in the stream's status.
fn reader_name(method: DeltaMethod) -> &'static str {
    match method {
        DeltaMethod::Dirsync => "DirSync",
        _ => "uSNChanged",
    }
}

/// Open the stream: change notification on the cookies' server (or the
/// first that answers), then a cookie "now" for each search OU without one.
/// `support` is what Test connection detected (DirSync or USN, and whether
/// deletions are visible).
pub async fn open(cfg: &DirectoryConfig, cookies: &[StoredCookie], support: &DeltaSupport) -> Result<AdStream, DeltaError> {
    if !matches!(support.method, DeltaMethod::Dirsync | DeltaMethod::Usn) {
        return Err(DeltaError::Failed(crate::Failure::answer(format!(
            "live deprovisioning of Active Directory needs DirSync or USN; Test connection found {}",
            support.method.as_str()
        ))));
    }
    let Some(first_ou) = cfg.search_ous.first() else {
        return Err(DeltaError::Failed(crate::Failure::answer("no search OU is configured")));
    };
    let prefer = cookies.first().map(|c| c.server.clone());
    let reader = reader_name(support.method);
    let (notifier, server, method) = match ad_delta::notifications(cfg, first_ou, prefer.as_deref(), support.sees_deletions).await {
        Ok(n) => {
            let server = n.server().to_string();
            let deleted = if support.sees_deletions { " with show-deleted" } else { "" };
            (Some(n), server, format!("change notification{deleted}, changes read by {reader}"))
        }
        Err(DeltaError::Failed(f)) if !f.unreachable => {
            // Not offered, or refused: poll instead.
            let server = prefer.clone().unwrap_or_default();
            (None, server, format!("{reader} every {} s (change notification unavailable: {})", POLL_ONLY.as_secs(), f.message))
        }
        Err(e) => return Err(e),
    };
    // (Polling without stored cookies: `server` is empty until the first
    // cookie names the server that answered.)
    let mut server = server;
    let mut own: Vec<(String, String)> = Vec::new();
    for ou in &cfg.search_ous {
        match cookies.iter().find(|c| &c.search_ou == ou && c.server == server) {
            Some(c) => own.push((ou.clone(), c.cookie.clone())),
            None => {
                let b = ad_delta::initial_cookie_on(cfg, (!server.is_empty()).then_some(server.as_str()), ou, support).await?;
                server = b.server;
                own.push((ou.clone(), b.cookie));
            }
        }
    }
    let unseen = (!support.sees_deletions).then(|| {
        "deletions: the service account may not read Deleted Objects, so a user deleted from the directory is not seen by the live stream; the next sync disables them".to_string()
    });
    Ok(AdStream {
        server,
        cfg: cfg.clone(),
        notifier,
        reader: support.method,
        method,
        unseen,
        cookies: own,
        pending: VecDeque::new(),
        caught_up: false,
    })
}

impl AdStream {
    /// How the stream works, in words.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// What it cannot see, in words (`None`: disables and deletions are both seen).
    pub fn unseen(&self) -> Option<&str> {
        self.unseen.as_deref()
    }

    /// The next event. An error ends the stream: reconnect.
    pub async fn next(&mut self) -> Result<LiveEvent, DeltaError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if self.caught_up {
                self.wait().await?;
            }
            self.read().await?;
        }
    }

    /// Until a notification arrives (and the ones right after it), or the
    /// poll interval passes.
    async fn wait(&mut self) -> Result<(), DeltaError> {
        let Some(n) = self.notifier.as_mut() else {
            tokio::time::sleep(POLL_ONLY).await;
            return Ok(());
        };
        match n.next(POLL_NOTIFIED).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => {
                let until = Instant::now() + SETTLE;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match n.next(left).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(f) => return Err(DeltaError::Failed(f)),
                    }
                }
                Ok(())
            }
            Err(f) if !f.unreachable => {
                // The server ended the notification search with a refusal:
                // poll from now on (this connection).
                self.method =
                    format!("{} every {} s (change notification refused: {})", reader_name(self.reader), POLL_ONLY.as_secs(), f.message);
                self.notifier = None;
                Ok(())
            }
            Err(f) => Err(DeltaError::Failed(f)),
        }
    }

    /// Read every search OU from its cookie; queue the changes, each with
    /// the cookie to store once it is applied (the batch's new cookie only
    /// with its last change: one applied halfway is read again).
    async fn read(&mut self) -> Result<(), DeltaError> {
        let mut batches: Vec<DeltaBatch> = Vec::with_capacity(self.cookies.len());
        for (ou, cookie) in &self.cookies {
            let b = ad_delta::read_changes(&self.cfg, ou, cookie).await?;
            // (USN: the groups whose removals a USN read cannot see are left
            // to the sync; a removal from a group is never a disable here.)
            batches.push(b);
        }
        // A user moved from one search OU to another is a Delete in one
        // batch and an Upsert in the other: it stays.
        let upserted: HashSet<String> = batches
            .iter()
            .flat_map(|b| b.changes.iter())
            .filter_map(|c| match c {
                Change::Upsert(e) => Some(e.uid.clone()),
                Change::Delete { .. } => None,
            })
            .collect();
        for (i, b) in batches.into_iter().enumerate() {
            let ou = self.cookies[i].0.clone();
            let old = std::mem::replace(&mut self.cookies[i].1, b.cookie.clone());
            let changes: Vec<Change> =
                b.changes.into_iter().filter(|c| !matches!(c, Change::Delete { uid } if upserted.contains(uid))).collect();
            let n = changes.len();
            for (j, change) in changes.into_iter().enumerate() {
                let cookie = if j + 1 == n { b.cookie.clone() } else { old.clone() };
                self.pending.push_back(LiveEvent::Change { search_ou: ou.clone(), change: Box::new(change), cookie });
            }
            if !self.caught_up {
                self.pending.push_back(LiveEvent::Persisting { search_ou: ou, cookie: b.cookie });
            } else if n == 0 && b.cookie != old {
                self.pending.push_back(LiveEvent::Cookie { search_ou: ou, cookie: b.cookie });
            }
        }
        self.caught_up = true;
        Ok(())
    }
}
