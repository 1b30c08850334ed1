//! Live deprovisioning (issue 17 §2): a persistent change stream per
//! directory ([`bindery_directory::live`]) so that a user disabled in, or
//! deleted from, the directory is disabled here — sessions ended, API
//! tokens revoked — within seconds, without waiting for a sync.
//!
//! * The stream's source follows the delta method Test connection
//!   detected: OpenLDAP syncrepl refreshAndPersist; for Active Directory,
//!   change notification as the trigger with DirSync (or USN) reading the
//!   change, polling where notification is unavailable
//!   ([`bindery_directory::ad_live`]). What a source cannot see (AD
//!   deletions when the service account may not read Deleted Objects) is
//!   shown in the stream's status.
//!
//! * One replica streams a directory: the one holding the lease
//!   `live:<directory>` (a row of its own in `sync_leases`: the staging
//!   lease is held by every sync, so holding it would block them all). It
//!   is renewed every [`LIVE_RENEW`] and expires after [`LIVE_TTL_MS`], so a
//!   replica that dies is replaced within about six seconds; a replica that
//!   cannot renew for a whole TTL stops streaming.
//! * The stream reconnects with exponential backoff (up to [`BACKOFF_MAX`])
//!   and keeps the lease meanwhile; it resumes from the last cookie it
//!   stored, which a replica taking over resumes from too.
//! * Each change of a user linked to the directory goes through the one
//!   identity rule with the sync's policy ([`Service::decide_user`]): only
//!   what the rule calls a disable is applied here (with the sync's
//!   safeguards: disabling must be on, and a stream that would disable more
//!   than the threshold within an hour holds back and leaves it to the
//!   sync's approval); creating, updating and enabling users is left to the
//!   sync.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bindery_directory::delta::{Change as DeltaChange, DeltaError, DeltaMethod, DeltaSupport};
use bindery_directory::live::{LiveEvent, LiveStream};
use bindery_directory::syncrepl::StoredCookie;
use bindery_directory::DirectoryConfig;
use bindery_model::{DirectoryKind, LiveStatus, SyncAction, SyncSettings};
use bindery_store::{Flag, LiveRow};

use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Error, Result, Service};

/// The stream's lease expires this long after its last renewal.
pub const LIVE_TTL_MS: i64 = 5_000;
/// How often the holder renews it.
pub const LIVE_RENEW: Duration = Duration::from_millis(1_500);
/// How often a replica that does not hold it tries to take it.
const LIVE_TAKE: Duration = Duration::from_millis(1_000);
/// How often each replica compares the running streams with the settings.
const SUPERVISE: Duration = Duration::from_millis(1_000);
const BACKOFF_START: Duration = Duration::from_millis(250);
/// A restarted directory is picked up within this much after it is back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The window of the threshold on live disables.
const THRESHOLD_WINDOW_MS: i64 = 3_600_000;

fn lease_name(kind: DirectoryKind) -> String {
    format!("live:{}", kind.as_str())
}

/// This replica's running streams.
#[derive(Default)]
pub(crate) struct Streams {
    running: tokio::sync::Mutex<HashMap<DirectoryKind, Running>>,
    /// This replica's name as a lease holder.
    holder: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

struct Running {
    /// The settings it runs with (directory version and sync settings).
    key: String,
    task: tokio::task::JoinHandle<()>,
}

/// The cookies stored in the status row: valid while the directory
/// settings have this fingerprint.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Cookies {
    fingerprint: String,
    server: String,
    cookies: Vec<(String, String)>,
}

/// What the stream of one directory needs to run.
struct Wanted {
    key: String,
    cfg: DirectoryConfig,
    settings: SyncSettings,
    /// The delta method Test connection detected: it picks the source.
    support: DeltaSupport,
}

impl Service {
    fn live_holder(&self) -> String {
        // The process id says which process it is on a host; the random
        // part tells apart two services of one process (tests).
        self.live.holder.get_or_init(|| format!("pid{}-{}", std::process::id(), &crate::util::random_token()[..8])).clone()
    }

    /// Keep each directory's live stream as its settings say, on this
    /// replica (whichever replica holds a stream's lease streams it). Runs
    /// until the task is aborted.
    pub fn spawn_live_streams(&self) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                svc.live_tick().await;
                tokio::time::sleep(SUPERVISE).await;
            }
        })
    }

    /// Start the streams the settings want, stop the others (the setting
    /// turned off, the directory disabled, its settings changed).
    pub async fn live_tick(&self) {
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            let want = match self.live_wanted(kind).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(directory = kind.as_str(), error = %e, "live stream: reading the settings failed");
                    continue;
                }
            };
            let mut running = self.live.running.lock().await;
            let keep = match (running.get(&kind), &want) {
                (Some(r), Some(w)) => r.key == w.key && !r.task.is_finished(),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if !keep {
                if let Some(r) = running.remove(&kind) {
                    r.task.abort();
                    let _ = r.task.await;
                    self.live_stopped(kind, "stopped: the settings changed").await;
                }
            }
            if let Some(w) = want {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(kind) {
                    let svc = self.clone();
                    let key = w.key.clone();
                    let task = tokio::spawn(async move { svc.live_task(kind, w.cfg, w.settings, w.support).await });
                    slot.insert(Running { key, task });
                }
            }
        }
    }

    /// Stop every stream of this replica and give its leases back (shutdown).
    pub async fn stop_live_streams(&self) {
        let mut running = self.live.running.lock().await;
        for (kind, r) in running.drain() {
            r.task.abort();
            let _ = r.task.await;
            self.live_stopped(kind, "stopped: the server shut down").await;
        }
    }

    /// After this replica's task ended: the lease back, and the status row
    /// (if it is still this replica's) disconnected.
    async fn live_stopped(&self, kind: DirectoryKind, why: &str) {
        let holder = self.live_holder();
        if let Ok(Some(mut row)) = self.store.live_status(kind.as_str(), &lease_name(kind), now_ms()).await {
            if row.holder == holder {
                row.connected = Flag(false);
                row.server.clear();
                row.since = Some(now_ms());
                row.last_error = why.to_string();
                row.updated_at = now_ms();
                if let Err(e) = self.store.put_live_status(&row).await {
                    tracing::warn!(error = %e, "live stream: writing its status failed");
                }
            }
        }
        if let Err(e) = self.store.release_lease(&lease_name(kind), &holder).await {
            tracing::warn!(error = %e, "live stream: releasing its lease failed (it expires by itself)");
        }
    }

    async fn live_wanted(&self, kind: DirectoryKind) -> Result<Option<Wanted>> {
        let (settings, _) = self.load_sync_settings(kind).await?;
        if !settings.live {
            return Ok(None);
        }
        let stored = match self.load_directory(kind).await {
            Ok(s) => s,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !stored.settings.enabled {
            return Ok(None);
        }
        let cfg = match Self::resolve(&stored, &Self::stored_input(&stored.settings)) {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        // Not detected for these settings (they changed since Test
        // connection): syncrepl, as before AD had a stream; an AD server
        // refuses it and the status says why.
        let support = match self.detected_delta(kind).await? {
            Some(d) => DeltaSupport { method: DeltaMethod::parse(&d.method), sees_deletions: d.sees_deletions, reason: d.reason },
            None => DeltaSupport { method: DeltaMethod::Syncrepl, sees_deletions: true, reason: String::new() },
        };
        Ok(Some(Wanted { key: format!("{}|{settings:?}|{support:?}", stored.version), cfg, settings, support }))
    }

    /// One directory's stream on this replica: take the lease, stream while
    /// holding it, take it again when lost.
    async fn live_task(&self, kind: DirectoryKind, cfg: DirectoryConfig, settings: SyncSettings, support: DeltaSupport) {
        let holder = self.live_holder();
        let lease = lease_name(kind);
        let mut live = Live::new(kind, &holder, &cfg);
        loop {
            match self.store.acquire_lease(&lease, &holder, 0, now_ms(), LIVE_TTL_MS).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::time::sleep(LIVE_TAKE).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(lease = %lease, error = %e, "live stream: taking the lease failed");
                    tokio::time::sleep(LIVE_TAKE).await;
                    continue;
                }
            }
            tracing::info!(directory = kind.as_str(), holder = %holder, "live stream: this replica holds the stream");
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
            let store = self.store.clone();
            let (name, me) = (lease.clone(), holder.clone());
            let renew = tokio::spawn(async move {
                let mut last_ok = now_ms();
                loop {
                    tokio::time::sleep(LIVE_RENEW).await;
                    match store.renew_lease(&name, &me, now_ms(), LIVE_TTL_MS).await {
                        Ok(true) => last_ok = now_ms(),
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(lease = %name, error = %e, "live stream: renewing the lease failed");
                            // Another replica may take it once it lapsed.
                            if now_ms() - last_ok >= LIVE_TTL_MS {
                                break;
                            }
                        }
                    }
                }
                let _ = lost_tx.send(());
            });
            live.load(self).await;
            tokio::select! {
                _ = lost_rx => tracing::warn!(directory = kind.as_str(), "live stream: lease lost; another replica may stream now"),
                _ = self.live_stream(&cfg, &settings, &support, &mut live) => {}
            }
            renew.abort();
            live.reset();
        }
    }

    /// Stream while this replica holds the lease: reconnect with backoff.
    async fn live_stream(&self, cfg: &DirectoryConfig, settings: &SyncSettings, support: &DeltaSupport, live: &mut Live) {
        let mut backoff = BACKOFF_START;
        // The delta sync's cookies are a starting point once: refused, the
        // stream starts from "now" (the sync's full runs catch up).
        let mut delta_cookies = true;
        loop {
            let cookies = self.live_start_cookies(live, support.method, delta_cookies).await;
            let why = match bindery_directory::live::open(cfg, &cookies, support).await {
                Ok(mut stream) => {
                    live.row.server = stream.server.clone();
                    live.row.method = stream.method().to_string();
                    live.row.unseen = stream.unseen().unwrap_or_default().to_string();
                    if live.cookies.server != stream.server {
                        // A cookie belongs to the server that issued it.
                        live.cookies.cookies.clear();
                        live.cookies.server = stream.server.clone();
                    }
                    let why = self.live_read(cfg, settings, live, &mut stream, &mut backoff).await;
                    drop(stream);
                    why
                }
                Err(e) => e,
            };
            match &why {
                DeltaError::FullRequired(_) => {
                    live.cookies.cookies.clear();
                    delta_cookies = false;
                }
                DeltaError::Failed(_) => {}
            }
            tracing::warn!(directory = live.kind.as_str(), error = %why, retry_ms = backoff.as_millis() as u64, "live stream: disconnected");
            let was = live.row.connected.0;
            live.row.connected = Flag(false);
            live.row.server.clear();
            if was || live.row.since.is_none() {
                live.row.since = Some(now_ms());
            }
            live.row.last_error = why.to_string();
            live.save(self).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The cookies to start from: the stream's own, else the delta sync's.
    async fn live_start_cookies(&self, live: &Live, method: DeltaMethod, delta_cookies: bool) -> Vec<StoredCookie> {
        if !live.cookies.cookies.is_empty() {
            let server = live.cookies.server.clone();
            return live
                .cookies
                .cookies
                .iter()
                .map(|(ou, c)| StoredCookie { search_ou: ou.clone(), server: server.clone(), cookie: c.clone() })
                .collect();
        }
        if !delta_cookies {
            return vec![];
        }
        match self.store.delta_cookies(live.kind.as_str()).await {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| r.2 == method.as_str())
                .map(|(search_ou, server, _, cookie)| StoredCookie { search_ou, server, cookie })
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Read one connection's events until it fails.
    async fn live_read(
        &self,
        cfg: &DirectoryConfig,
        settings: &SyncSettings,
        live: &mut Live,
        stream: &mut LiveStream,
        backoff: &mut Duration,
    ) -> DeltaError {
        let mut persisting: Vec<String> = Vec::new();
        loop {
            let event = match stream.next().await {
                Ok(e) => e,
                Err(e) => return e,
            };
            match event {
                LiveEvent::Persisting { search_ou, cookie } => {
                    live.set_cookie(&search_ou, cookie);
                    if !persisting.contains(&search_ou) {
                        persisting.push(search_ou);
                    }
                    if persisting.len() == cfg.search_ous.len() && !live.row.connected.0 {
                        live.row.connected = Flag(true);
                        live.row.since = Some(now_ms());
                        live.row.last_error.clear();
                        *backoff = BACKOFF_START;
                        tracing::info!(directory = live.kind.as_str(), server = %live.row.server, "live stream: connected");
                    }
                    live.save(self).await;
                }
                LiveEvent::Cookie { search_ou, cookie } => {
                    live.set_cookie(&search_ou, cookie);
                    live.save(self).await;
                }
                LiveEvent::Change { search_ou, change, cookie } => {
                    live.row.changes += 1;
                    live.row.last_change_at = Some(now_ms());
                    if let Err(e) = self.live_change(cfg, settings, live, stream, *change).await {
                        // The cookie stays before this change: the next
                        // connection reads it again.
                        live.save(self).await;
                        return e;
                    }
                    live.set_cookie(&search_ou, cookie);
                    live.save(self).await;
                }
            }
        }
    }

    /// One change: what the rule says of the linked user, applied when it
    /// is a disable. Entries nobody is linked to are the sync's to create.
    async fn live_change(
        &self,
        cfg: &DirectoryConfig,
        settings: &SyncSettings,
        live: &mut Live,
        stream: &mut LiveStream,
        change: DeltaChange,
    ) -> std::result::Result<(), DeltaError> {
        let failed = |e: Error| DeltaError::Failed(bindery_directory::Failure::answer(format!("applying a change failed: {e}")));
        let uid = match &change {
            DeltaChange::Upsert(e) => e.uid.clone(),
            DeltaChange::Delete { uid } => uid.clone(),
        };
        let Some(user) = self.store.find_user_by_external_id(&uid).await.map_err(|e| failed(e.into()))? else { return Ok(()) };
        if user.source != live.kind.source() {
            return Ok(());
        }
        let entry = match change {
            DeltaChange::Upsert(e) => Some(e),
            // Confirmed: gone from every search OU (not moved to another).
            DeltaChange::Delete { uid } => stream.lookup(&uid).await?,
        };
        self.live_decide(cfg, settings, live, &user, entry).await.map_err(failed)
    }

    async fn live_decide(
        &self,
        cfg: &DirectoryConfig,
        settings: &SyncSettings,
        live: &mut Live,
        user: &bindery_store::UserRow,
        entry: Option<bindery_directory::enumerate::Entry>,
    ) -> Result<()> {
        let found = entry.map(|e| bindery_directory::authn::FoundUser { dn: e.user.dn.clone(), uid: e.uid, user: e.user, state: e.state });
        let policy =
            crate::identity::Policy { source: live.kind.source(), disable: settings.disable_missing, create: false, ..Default::default() };
        let decided = self.decide_user(cfg, user, found.as_ref(), &policy).await?;
        if crate::sync::action_of(&decided) != SyncAction::Disable {
            return Ok(()); // anything else waits for the sync
        }
        let now = now_ms();
        while live.recent.front().is_some_and(|t| now - t > THRESHOLD_WINDOW_MS) {
            live.recent.pop_front();
        }
        let directory_users = self.store.count_staged(live.kind.as_str()).await?;
        let disables = live.recent.len() as i64 + 1;
        if crate::sync::over_threshold(disables, directory_users, settings.threshold_percent) {
            live.row.last_error = format!(
                "held back: disabling {} would make {disables} live disables within an hour, more than {}% of the {directory_users} directory users; the next sync plans it and waits for approval",
                user.username, settings.threshold_percent
            );
            tracing::warn!(user = %user.username, "{}", live.row.last_error);
            return Ok(());
        }
        self.apply_change(&decided, "live").await?;
        live.recent.push_back(now);
        live.row.disabled += 1;
        self.record_live_run(live.kind, user, &decided).await?;
        Ok(())
    }

    /// A live disable on the Sync runs page: a run of kind `live`, done
    /// when recorded, with its one applied item.
    async fn record_live_run(&self, kind: DirectoryKind, user: &bindery_store::UserRow, change: &bindery_store::Change) -> Result<()> {
        let now = now_ms();
        let id = self.store.start_run(kind.as_str(), bindery_model::RunKind::Live, "live stream", false, now).await?;
        let reason = change.reason();
        let item = bindery_store::NewItem {
            action: SyncAction::Disable,
            username: &user.username,
            user_id: Some(user.id),
            staged_id: None,
            reason: &reason,
            outcome: bindery_model::ItemOutcome::Applied,
            change_json: serde_json::to_string(change).map_err(|e| Error::Internal(e.to_string()))?,
        };
        self.store.insert_items(id, &[item]).await?;
        let counts = bindery_model::SyncCounts { disable: 1, applied: 1, ..Default::default() };
        self.finish_sync(id, bindery_model::RunState::Done, true, "", &counts).await
    }

    /// The live stream's status (the setting, and the holder's row).
    pub async fn live_status(&self, actor: &Actor, kind: DirectoryKind) -> Result<LiveStatus> {
        actor.require_reader()?;
        self.live_status_of(kind).await
    }

    pub(crate) async fn live_status_of(&self, kind: DirectoryKind) -> Result<LiveStatus> {
        let (settings, _) = self.load_sync_settings(kind).await?;
        let row = self.store.live_status(kind.as_str(), &lease_name(kind), now_ms()).await?;
        let mut status = LiveStatus { directory: kind, enabled: settings.live, ..Default::default() };
        if let Some(r) = row {
            let held = r.held.0;
            status.connected = held && r.connected.0;
            status.server = if status.connected { r.server } else { String::new() };
            status.since = r.since.map(fmt_ts);
            status.last_change = r.last_change_at.map(fmt_ts);
            status.changes = r.changes;
            status.disabled = r.disabled;
            status.last_error = if !held && settings.live {
                Some("no replica holds the stream's lease".into())
            } else {
                Some(r.last_error).filter(|e| !e.is_empty())
            };
            status.holder = held.then_some(r.holder);
            status.method = r.method;
            status.unseen = Some(r.unseen).filter(|u| !u.is_empty());
        }
        Ok(status)
    }

    /// The streams shown on the Dashboard: directories with it on, or a
    /// stream still held.
    pub(crate) async fn live_streams(&self) -> Result<Vec<LiveStatus>> {
        let mut out = Vec::new();
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            let s = self.live_status_of(kind).await?;
            if s.enabled || s.holder.is_some() {
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// The state of one directory's stream on the replica holding it.
struct Live {
    kind: DirectoryKind,
    row: LiveRow,
    cookies: Cookies,
    /// When this stream disabled someone, within the threshold's window.
    recent: VecDeque<i64>,
}

impl Live {
    fn new(kind: DirectoryKind, holder: &str, cfg: &DirectoryConfig) -> Live {
        Live {
            kind,
            row: LiveRow { directory: kind.as_str().into(), holder: holder.into(), ..Default::default() },
            cookies: Cookies { fingerprint: crate::sync::delta_fingerprint(cfg), ..Default::default() },
            recent: VecDeque::new(),
        }
    }

    /// On taking the lease: the cookies the last holder stored (if they
    /// belong to these settings); the counters start again.
    async fn load(&mut self, svc: &Service) {
        if let Ok(Some(r)) = svc.store.live_status(self.kind.as_str(), &lease_name(self.kind), now_ms()).await {
            if let Ok(c) = serde_json::from_str::<Cookies>(&r.cookies) {
                if c.fingerprint == self.cookies.fingerprint {
                    self.cookies = c;
                }
            }
        }
        self.row.since = Some(now_ms());
        self.row.last_error.clear();
        self.save(svc).await;
    }

    fn reset(&mut self) {
        self.row.connected = Flag(false);
        self.row.server.clear();
        self.row.changes = 0;
        self.row.disabled = 0;
        self.row.last_change_at = None;
    }

    fn set_cookie(&mut self, search_ou: &str, cookie: String) {
        match self.cookies.cookies.iter_mut().find(|(ou, _)| ou == search_ou) {
            Some(c) => c.1 = cookie,
            None => self.cookies.cookies.push((search_ou.to_string(), cookie)),
        }
    }

    async fn save(&mut self, svc: &Service) {
        self.row.cookies = serde_json::to_string(&self.cookies).unwrap_or_default();
        self.row.updated_at = now_ms();
        if let Err(e) = svc.store.put_live_status(&self.row).await {
            tracing::warn!(error = %e, "live stream: writing its status failed");
        }
    }
}
