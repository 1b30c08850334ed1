//! Logins against one directory configuration, fast and failure-aware.
//!
//! * **Pooled connections.** Per server, one service-bound connection
//!   carries every user search (LDAP multiplexes operations on a
//!   connection), and a small pool of connections carries user binds (a
//!   bind changes a connection's identity, so binds never share one with
//!   searches). A login costs the directory one search and one bind.
//! * **User DN cache.** After a successful login the user's entry (DN,
//!   mapped attributes, groups) is kept for the configured time, so the next
//!   login costs one bind. A failed bind with a cached DN looks the user up
//!   again (they may have been moved) but never binds the same DN twice.
//! * **Entry check.** A cached DN may name another entry now (deleted and
//!   added again: another person). A warm login therefore also compares the
//!   entry's immutable id, beside the bind, unless the entry was proven
//!   within [`ENTRY_CHECK_HOLDS`] by a sign-in with the same password: a
//!   burst of logins of one account (a script calling the REST API with its
//!   password) shares one check.
//! * **Circuit breaker.** A server that cannot be reached — connection
//!   refused, or silently dropped packets (a connect or operation timeout) —
//!   is marked down after costing one timeout, and every later login skips
//!   it until [`Gateway::probe`] finds it healthy again.
//!
//! Interactive operations are bounded by the connect timeout as well as the
//! operation timeout, so a server that stops answering in the middle of an
//! established connection also costs at most one connect timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldap3::{Ldap, Scope};

use crate::authn::{self, FoundUser, LoginError};
use crate::conn::{self, ServerUri};
use crate::{DirectoryConfig, Failure};

/// Idle bind connections kept per server.
const MAX_IDLE_BINDS: usize = 32;
/// Entries kept in the user DN cache at most (oldest dropped first).
const MAX_CACHED: usize = 100_000;
/// How long a sign-in that proved a cached DN still names the cached entry
/// (its search, or a Compare of the immutable id, with a successful bind)
/// holds: logins of that DN with the same password within it bind without
/// another check. Another password is checked at once, so a person given
/// the DN of a deleted entry never passes for its earlier owner; only an
/// entry added again with the earlier password, within this time, would.
pub const ENTRY_CHECK_HOLDS: Duration = Duration::from_secs(1);

/// A user DN cache entry.
struct Cached {
    /// When the entry was read (the cache's own time limit).
    at: Instant,
    /// The last sign-in that proved the entry at this DN is this one: when,
    /// and a keyed hash of its password (never the password).
    proof: Option<(Instant, u64)>,
    found: FoundUser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Unknown,
    Up,
    Down,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

/// One server's health, as the circuit breaker sees it. Times are Unix ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub uri: String,
    pub state: HealthState,
    pub latency_ms: Option<f64>,
    pub checked_at: Option<i64>,
    pub since: Option<i64>,
    pub last_error: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct Server {
    uri: ServerUri,
    health: Mutex<Health>,
    /// The shared service-bound connection for searches.
    search: Mutex<Option<Ldap>>,
    /// Idle connections for user binds.
    binds: Mutex<Vec<Ldap>>,
    /// The server answered an entry check by Compare with something other
    /// than true, false or "no such entry": it is checked by a base read.
    no_compare: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    fn is_down(&self) -> bool {
        lock(&self.health).state == HealthState::Down
    }

    fn mark_down(&self, f: &Failure) {
        *lock(&self.search) = None;
        lock(&self.binds).clear();
        let mut h = lock(&self.health);
        if h.state != HealthState::Down {
            tracing::warn!(server = %self.uri, reason = %f, "directory server marked down: logins skip it until a probe finds it healthy");
            h.state = HealthState::Down;
            h.since = Some(now_ms());
        }
        h.checked_at = Some(now_ms());
        h.last_error = Some(f.message.clone());
    }

    fn mark_up(&self, latency: Option<Duration>) {
        let mut h = lock(&self.health);
        if h.state != HealthState::Up {
            if h.state == HealthState::Down {
                tracing::info!(server = %self.uri, "directory server healthy again");
            }
            h.state = HealthState::Up;
            h.since = Some(now_ms());
            h.last_error = None;
        }
        if let Some(l) = latency {
            h.latency_ms = Some(l.as_secs_f64() * 1000.0);
            h.checked_at = Some(now_ms());
        }
    }
}

/// Which server answered a lookup, and what it found.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub server: String,
    /// `None`: no entry matches (the user is not, or no longer, in the directory).
    pub found: Option<FoundUser>,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub server: String,
    pub found: FoundUser,
    /// The entry came from the user DN cache (the login cost one bind).
    pub cached: bool,
}

/// Live state for one directory configuration: its servers' health,
/// pooled connections and the user DN cache. Built from a checked
/// configuration; rebuilt (which empties the cache) when it changes.
pub struct Gateway {
    cfg: DirectoryConfig,
    servers: Vec<Server>,
    cache: Mutex<HashMap<String, Cached>>,
    /// The key of the proofs' password hashes (random per gateway).
    proof_key: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("servers", &self.servers.iter().map(|s| s.uri.to_string()).collect::<Vec<_>>()).finish()
    }
}

impl Gateway {
    pub fn new(mut cfg: DirectoryConfig) -> Gateway {
        cfg.op_timeout = cfg.op_timeout.min(cfg.connect_timeout);
        let servers = cfg
            .servers
            .iter()
            .map(|uri| Server {
                uri: uri.clone(),
                health: Mutex::new(Health {
                    uri: uri.to_string(),
                    state: HealthState::Unknown,
                    latency_ms: None,
                    checked_at: None,
                    since: None,
                    last_error: None,
                }),
                search: Mutex::new(None),
                binds: Mutex::new(Vec::new()),
                no_compare: Default::default(),
            })
            .collect();
        Gateway { cfg, servers, cache: Mutex::new(HashMap::new()), proof_key: Default::default() }
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.cfg
    }

    pub fn health(&self) -> Vec<Health> {
        self.servers.iter().map(|s| lock(&s.health).clone()).collect()
    }

    /// Entries in the user DN cache.
    pub fn cached_users(&self) -> usize {
        lock(&self.cache).len()
    }

    pub fn forget(&self, username: &str) {
        lock(&self.cache).remove(&cache_key(username));
    }

    /// The shared service connection to `server`, opened (and bound) if needed.
    async fn search_conn(&self, server: &Server) -> Result<(Ldap, bool), Failure> {
        if let Some(l) = lock(&server.search).clone() {
            return Ok((l, true));
        }
        let mut ldap = conn::connect(&server.uri, &self.cfg).await.map_err(|(_, f, _)| f)?.0;
        if let Err(f) = conn::service_bind(&mut ldap, &self.cfg).await {
            let _ = ldap.unbind().await;
            return Err(if f.unreachable { f } else { Failure::answer(format!("service account: {}", f.message)) });
        }
        let mut slot = lock(&server.search);
        Ok((slot.get_or_insert(ldap).clone(), false))
    }

    /// Run `op` on the server's service connection. A pooled connection the
    /// server closed meanwhile is replaced once; a timeout is not retried.
    async fn with_search<T, F, Fut>(&self, server: &Server, op: F) -> Result<T, Failure>
    where
        F: Fn(Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let (ldap, reused) = self.search_conn(server).await?;
        match op(ldap).await {
            Err(f) if f.unreachable => {
                *lock(&server.search) = None;
                if !reused || f.timed_out {
                    return Err(f);
                }
                let (ldap, _) = self.search_conn(server).await?;
                let r = op(ldap).await;
                if r.as_ref().is_err_and(|f| f.unreachable) {
                    *lock(&server.search) = None;
                }
                r
            }
            r => r,
        }
    }

    async fn bind_once(&self, server: &Server, ldap: &mut Ldap, dn: &str, password: &str) -> Result<(), Failure> {
        let r = authn::bind_user(ldap, &self.cfg, dn, password).await;
        if !r.as_ref().is_err_and(|f| f.unreachable) {
            let mut idle = lock(&server.binds);
            if idle.len() < MAX_IDLE_BINDS {
                idle.push(ldap.clone());
            }
        }
        r
    }

    /// Bind as `dn` on a pooled bind connection.
    async fn bind(&self, server: &Server, dn: &str, password: &str) -> Result<(), Failure> {
        let pooled = lock(&server.binds).pop();
        if let Some(mut ldap) = pooled {
            match self.bind_once(server, &mut ldap, dn, password).await {
                Err(f) if f.unreachable && !f.timed_out => {} // closed meanwhile: one fresh try below
                r => return r,
            }
        }
        let mut ldap = conn::connect(&server.uri, &self.cfg).await.map_err(|(_, f, _)| f)?.0;
        self.bind_once(server, &mut ldap, dn, password).await
    }

    /// Whether the entry at `dn` is still the one with immutable id `uid`
    /// (false when it is gone, or is another entry now): a cached DN whose
    /// entry was deleted and added again is another person. One Compare of
    /// `entryUUID` (or AD's `objectGUID`), which costs the server less than
    /// a read of the entry; a base read where the server cannot compare it.
    async fn is_entry(&self, server: &Server, dn: &str, uid: &str) -> Result<bool, Failure> {
        use std::sync::atomic::Ordering;
        let cfg = &self.cfg;
        let compared = (!server.no_compare.load(Ordering::Relaxed)).then(|| compare_value(uid)).flatten();
        if let Some((attr, value)) = compared {
            let r = self
                .with_search(server, |mut ldap| {
                    let value = value.clone();
                    async move {
                        ldap.with_timeout(cfg.op_timeout)
                            .compare(dn, attr, value)
                            .await
                            .map_err(|e| Failure::from_ldap(e, "entry check", cfg.op_timeout))
                    }
                })
                .await?;
            match r.0.rc {
                6 => return Ok(true),
                5 | 32 => return Ok(false),
                rc => {
                    tracing::info!(server = %server.uri, rc, "the server does not compare immutable ids: entry checks read the entry");
                    server.no_compare.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(self.current_uid(server, dn).await?.is_some_and(|u| u == uid))
    }

    /// The immutable id of the entry at `dn` now (`None` when the entry is
    /// gone, or the directory has no immutable ids).
    async fn current_uid(&self, server: &Server, dn: &str) -> Result<Option<String>, Failure> {
        let cfg = &self.cfg;
        self.with_search(server, |mut ldap| async move {
            let r = ldap
                .with_timeout(cfg.op_timeout)
                .search(dn, ldap3::Scope::Base, "(objectClass=*)", vec!["entryUUID", "objectGUID"])
                .await
                .map_err(|e| Failure::from_ldap(e, "entry check", cfg.op_timeout))?;
            if r.1.rc == 32 {
                return Ok(None);
            }
            Ok(r.0
                .into_iter()
                .find(|e| !e.is_ref() && !e.is_intermediate())
                .map(|e| crate::enumerate::uid_of(&ldap3::SearchEntry::construct(e))))
        })
        .await
    }

    async fn search_user(&self, server: &Server, username: &str, with_groups: bool) -> Result<Option<FoundUser>, Failure> {
        let cfg = &self.cfg;
        self.with_search(server, |mut ldap| async move {
            let mut found = authn::lookup_user(&mut ldap, cfg, username).await?;
            if let Some(f) = found.as_mut().filter(|_| with_groups) {
                match authn::groups_of(&mut ldap, cfg, f).await {
                    Ok(g) => f.user.groups = g,
                    Err(e) if e.unreachable => return Err(e),
                    Err(e) => tracing::warn!(reason = %e, "could not read the user's groups; no group mapping applied"),
                }
            }
            Ok(found)
        })
        .await
    }

    /// The cached entry of `username`, and whether a sign-in with
    /// `password` proved it to be the entry at its DN within
    /// [`ENTRY_CHECK_HOLDS`].
    fn cached(&self, username: &str, password: &str) -> Option<(FoundUser, bool)> {
        if self.cfg.dn_cache.is_zero() {
            return None;
        }
        let mut cache = lock(&self.cache);
        let key = cache_key(username);
        match cache.get(&key) {
            Some(c) if c.at.elapsed() < self.cfg.dn_cache => {
                let proven = c.proof.is_some_and(|(at, hash)| at.elapsed() < ENTRY_CHECK_HOLDS && hash == self.proof_hash(password));
                Some((c.found.clone(), proven))
            }
            Some(_) => {
                cache.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Cache the entry of `username`, as proven by a sign-in with
    /// `proven_by` (the password that just bound to it), or unproven.
    fn remember(&self, username: &str, found: &FoundUser, proven_by: Option<&str>) {
        if self.cfg.dn_cache.is_zero() {
            return;
        }
        let now = Instant::now();
        let proof = proven_by.map(|password| (now, self.proof_hash(password)));
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let ttl = self.cfg.dn_cache;
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(cache_key(username), Cached { at: now, proof, found: found.clone() });
    }

    /// A sign-in with `password` just proved the cached entry of
    /// `username` to be the entry at its DN.
    fn proven(&self, username: &str, password: &str) {
        let hash = self.proof_hash(password);
        if let Some(c) = lock(&self.cache).get_mut(&cache_key(username)) {
            c.proof = Some((Instant::now(), hash));
        }
    }

    fn proof_hash(&self, password: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.proof_key, password)
    }

    /// Authenticate a person. Servers are tried in order, skipping those
    /// marked down; the first that answers decides. An answer from a live
    /// server (wrong password, no such user, disabled) is final.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoggedIn, LoginError> {
        if password.trim().is_empty() {
            return Err(Failure::answer("empty password refused before any bind").into());
        }
        let with_groups = !self.cfg.group_mappings.is_empty();
        let mut last = Failure::unreachable("no directory server configured");
        let mut skipped = 0;
        for server in &self.servers {
            if server.is_down() {
                skipped += 1;
                last = Failure::unreachable(format!("{} is marked down (skipped until a probe finds it healthy)", server.uri));
                continue;
            }
            // With group mappings the groups decide the role: they are read
            // at every login (a demotion in the directory takes effect at
            // the next sign-in), so the cache is not used.
            let cached = if with_groups { None } else { self.cached(username, password) };
            let (mut found, from_cache, proven) = match cached {
                Some((f, proven)) => (f, true, proven),
                None => match self.search_user(server, username, with_groups).await {
                    Ok(Some(f)) => (f, false, true),
                    Ok(None) => {
                        let filter = crate::user_filter(&self.cfg.search_filter, username);
                        return Err(LoginError::refusal(Failure::answer(format!("no entry matches {filter} in the search OUs")), None));
                    }
                    Err(f) if f.unreachable => {
                        server.mark_down(&f);
                        last = f;
                        continue;
                    }
                    Err(f) => return Err(f.into()),
                },
            };
            if !from_cache {
                if let Some(state) = found.state {
                    return Err(LoginError::refusal(Failure::answer(format!("account {state} in the directory")), Some(state)));
                }
            }
            let mut store = !from_cache;
            let mut compared_same = false;
            let mut result = if !proven && !found.uid.starts_with("dn:") {
                // The bind proves the password of the entry at this DN now;
                // a compare of its immutable id, at the same time on the
                // service connection, proves it is still the cached entry (a
                // deleted and re-added entry is another person, whatever its
                // name).
                let (bound, same) = tokio::join!(self.bind(server, &found.dn, password), self.is_entry(server, &found.dn, &found.uid));
                compared_same = matches!(same, Ok(true));
                if bound.is_ok() && !compared_same {
                    self.forget(username);
                    match self.search_user(server, username, with_groups).await {
                        Ok(Some(fresh)) if fresh.dn.eq_ignore_ascii_case(&found.dn) => {
                            found = fresh;
                            store = true;
                        }
                        Ok(_) => return Err(Failure::answer("the directory entry changed during the sign-in; try again").into()),
                        Err(f) if f.unreachable => {
                            server.mark_down(&f);
                            last = f;
                            continue;
                        }
                        Err(f) => return Err(f.into()),
                    }
                }
                bound
            } else {
                self.bind(server, &found.dn, password).await
            };
            if from_cache && result.as_ref().is_err_and(|f| !f.unreachable) {
                // The entry may have moved: look it up again, and bind again
                // only if the DN changed (never the same DN twice).
                self.forget(username);
                match self.search_user(server, username, with_groups).await {
                    Ok(Some(fresh)) if !fresh.dn.eq_ignore_ascii_case(&found.dn) => {
                        found = fresh;
                        store = true;
                        if found.state.is_none() {
                            result = self.bind(server, &found.dn, password).await;
                        }
                    }
                    Ok(Some(fresh)) => {
                        // Same entry: the password was wrong. Keep it cached.
                        self.remember(username, &fresh, None);
                        found = fresh;
                    }
                    Ok(None) => {}
                    Err(f) if f.unreachable => {
                        server.mark_down(&f);
                        last = f;
                        continue;
                    }
                    Err(_) => {}
                }
            }
            match result {
                Ok(()) => {}
                Err(f) if f.unreachable => {
                    server.mark_down(&f);
                    last = f;
                    continue;
                }
                Err(f) => {
                    let mut e = LoginError::of_bind(f);
                    e.state = e.state.or(found.state);
                    return Err(e);
                }
            }
            server.mark_up(None);
            if let Some(state) = found.state {
                return Err(LoginError::refusal(Failure::answer(format!("account {state} in the directory")), Some(state)));
            }
            if found.user.username.is_empty() {
                return Err(Failure::answer("the entry has no value for the mapped username attribute").into());
            }
            if store {
                // Read just now, and bound: cached as proven.
                self.remember(username, &found, Some(password));
            } else if compared_same {
                // Compared just now, and bound: proven.
                self.proven(username, password);
            }
            return Ok(LoggedIn { server: server.uri.to_string(), found, cached: from_cache });
        }
        if skipped == self.servers.len() && skipped > 0 {
            last = Failure::unreachable(format!("every server is marked down ({})", last.message));
        }
        Err(last.into())
    }

    /// Look a user up (no password) on the first server that answers,
    /// with their groups: for re-validating sessions and "Explain access".
    pub async fn lookup(&self, username: &str) -> Result<Lookup, Failure> {
        let mut last = Failure::unreachable("no directory server configured");
        for server in &self.servers {
            if server.is_down() {
                last = Failure::unreachable(format!("{} is marked down", server.uri));
                continue;
            }
            match self.search_user(server, username, true).await {
                Ok(found) => {
                    server.mark_up(None);
                    // What the directory says now replaces what the cache
                    // held (a re-validation that found the account disabled
                    // must not be undone by a stale cached entry).
                    match &found {
                        Some(f) => self.remember(username, f, None),
                        None => self.forget(username),
                    }
                    return Ok(Lookup { server: server.uri.to_string(), found });
                }
                Err(f) if f.unreachable => {
                    server.mark_down(&f);
                    last = f;
                }
                Err(f) => return Err(f),
            }
        }
        Err(last)
    }

    /// Check every server (concurrently): a cheap read on the service
    /// connection, opening it if needed. Down servers that answer are
    /// marked up again; servers that do not are marked down.
    pub async fn probe(&self) {
        let checks = self.servers.iter().map(|server| async move {
            let started = Instant::now();
            let r = self
                .with_search(server, |mut ldap| async move {
                    let timeout = self.cfg.op_timeout;
                    let r = ldap
                        .with_timeout(timeout)
                        .search("", Scope::Base, "(objectClass=*)", vec!["1.1"])
                        .await
                        .map_err(|e| Failure::from_ldap(e, "health probe", timeout))?;
                    crate::check(r.1, "health probe").map(|_| ())
                })
                .await;
            match r {
                Ok(()) => server.mark_up(Some(started.elapsed())),
                Err(f) if f.unreachable => server.mark_down(&f),
                Err(f) => {
                    // It answers (a refused service bind is a configuration
                    // problem, not a dead server).
                    server.mark_up(Some(started.elapsed()));
                    lock(&server.health).last_error = Some(f.message);
                }
            }
        });
        futures::future::join_all(checks).await;
    }
}

/// The attribute and value that compare an immutable id as
/// [`crate::enumerate::uid_of`] writes it: an `entryUUID` (with dashes), or
/// AD's `objectGUID` (32 hex digits, compared as its 16 bytes).
fn compare_value(uid: &str) -> Option<(&'static str, Vec<u8>)> {
    if uid.len() == 36 && uid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        return Some(("entryUUID", uid.as_bytes().to_vec()));
    }
    if uid.len() == 32 && uid.chars().all(|c| c.is_ascii_hexdigit()) {
        return (0..16)
            .map(|i| u8::from_str_radix(&uid[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(|b| ("objectGUID", b));
    }
    None
}

fn cache_key(username: &str) -> String {
    username.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_ids_compare_as_the_directory_stores_them() {
        let uuid = "5d6f1c2e-8a0b-4c3d-9e7f-0123456789ab";
        assert_eq!(compare_value(uuid), Some(("entryUUID", uuid.as_bytes().to_vec())));
        let guid = "00112233445566778899aabbccddeeff";
        let bytes: Vec<u8> = (0..16u8).map(|i| i * 0x11).collect();
        assert_eq!(compare_value(guid), Some(("objectGUID", bytes)));
        // A directory without immutable ids (the DN is the id): nothing to compare.
        assert_eq!(compare_value("dn:uid=jdoe,ou=people,dc=example,dc=com"), None);
        assert_eq!(compare_value("0011223344556677889_aabbccddeeff"), None);
    }
}
