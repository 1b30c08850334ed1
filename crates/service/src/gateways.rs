//! The live side of the directory configurations: one
//! [`Gateway`](bindery_directory::gateway::Gateway) per enabled
//! configuration (pooled connections, circuit breaker, user DN cache),
//! rebuilt whenever the stored configuration changes — so saving the
//! settings empties the cache, here and on every other replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bindery_directory::gateway::{Gateway, Health};
use bindery_model::{DirectoryKind, ServerHealth};
use bindery_store::{Activation, Change, UserRow};

use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Result, Service};

/// A live gateway: the configuration version it was built from, and when
/// that version was last confirmed as the stored one.
type Live = (i64, Arc<Gateway>, std::time::Instant);

/// How long a confirmed gateway is used without asking the database again.
/// Saving on this replica drops the gateway at once; other replicas notice
/// within this time.
const CONFIRMED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Gateways {
    live: Mutex<HashMap<DirectoryKind, Live>>,
}

impl std::fmt::Debug for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateways")
    }
}

impl Gateways {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DirectoryKind, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn health_dto(kind: DirectoryKind, h: Health) -> ServerHealth {
    ServerHealth {
        directory: kind,
        uri: h.uri,
        state: h.state.as_str().into(),
        latency_ms: h.latency_ms.map(|l| (l * 10.0).round() / 10.0),
        checked_at: h.checked_at.map(fmt_ts),
        since: h.since.map(fmt_ts),
        last_error: h.last_error,
    }
}

impl Service {
    /// The live gateway of an enabled, valid configuration.
    pub(crate) async fn gateway(&self, kind: DirectoryKind) -> Result<Option<Arc<Gateway>>> {
        // The hot path (every login): a gateway confirmed a moment ago, or
        // one small read proving it is still the stored configuration's.
        if let Some((_, g, confirmed)) = self.gateways.map().get(&kind) {
            if confirmed.elapsed() < CONFIRMED_FOR {
                return Ok(Some(g.clone()));
            }
        }
        if let Some(version) = self.store.directory_version(kind.as_str()).await? {
            if let Some((live, g, confirmed)) = self.gateways.map().get_mut(&kind) {
                if *live == version {
                    *confirmed = std::time::Instant::now();
                    return Ok(Some(g.clone()));
                }
            }
        }
        let stored = self.load_directory(kind).await?;
        if !stored.settings.enabled {
            self.gateways.map().remove(&kind);
            return Ok(None);
        }
        if let Some((version, g, _)) = self.gateways.map().get(&kind) {
            if *version == stored.version {
                return Ok(Some(g.clone()));
            }
        }
        let cfg = match Self::resolve(&stored, &Self::stored_input(&stored.settings)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(directory = kind.as_str(), error = %e, "the stored directory configuration is invalid");
                return Ok(None);
            }
        };
        let g = Arc::new(Gateway::new(cfg));
        self.gateways.map().insert(kind, (stored.version, g.clone(), std::time::Instant::now()));
        Ok(Some(g))
    }

    /// Drop the live state of a configuration (after it was saved or deleted).
    pub(crate) fn forget_gateway(&self, kind: DirectoryKind) {
        self.gateways.map().remove(&kind);
    }

    /// Probe every server of every enabled configuration (the circuit
    /// breaker's way back: a server marked down is used again only after a
    /// probe finds it healthy). Run periodically by the server.
    pub async fn probe_directories(&self) {
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            match self.gateway(kind).await {
                Ok(Some(g)) => g.probe().await,
                Ok(None) => {}
                Err(e) => tracing::error!(directory = kind.as_str(), error = %e, "cannot load the directory configuration"),
            }
        }
    }

    /// Health of every server of every enabled configuration.
    pub(crate) async fn health_snapshot(&self) -> Result<Vec<ServerHealth>> {
        let mut out = Vec::new();
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            if let Some(g) = self.gateway(kind).await? {
                out.extend(g.health().into_iter().map(|h| health_dto(kind, h)));
            }
        }
        Ok(out)
    }

    pub async fn directory_health(&self, actor: &Actor) -> Result<Vec<ServerHealth>> {
        actor.require_reader()?;
        self.health_snapshot().await
    }

    /// Re-check a directory user's account against their directory when
    /// the last check is older than the configured interval, through the
    /// one identity rule: disabled in or removed from the directory →
    /// disabled here, sessions and tokens revoked; the group mapping's role
    /// and organisations applied. Returns the user as they now are, or
    /// `None` when they may not go on.
    pub(crate) async fn revalidate_if_due(&self, u: UserRow) -> Result<Option<UserRow>> {
        if u.is_local() {
            return Ok(Some(u));
        }
        let every = self.security_settings().await?.revalidate_minutes.max(0) * 60_000;
        let now = now_ms();
        if u.validated_at.is_some_and(|at| now - at < every) {
            return Ok(Some(u));
        }
        if !self.revalidate(&u).await? {
            return Ok(None);
        }
        // The rule may have changed the role or organisations just now.
        Ok(self.store.get_user(u.id).await?.filter(|u| u.is_active))
    }

    /// Ask the directory about a user (no password involved), in the
    /// login path's order: LDAP, then LDAP HA only when LDAP cannot be
    /// reached, and reconcile them with what it says. Nobody is revoked on
    /// an outage. Returns whether the user may go on.
    pub(crate) async fn revalidate(&self, u: &UserRow) -> Result<bool> {
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            let Some(g) = self.gateway(kind).await? else {
                continue;
            };
            match g.lookup(&u.username).await {
                Ok(l) => {
                    self.store.set_user_validated(u.id, now_ms()).await?;
                    let change = self.reconcile_user(kind, g.config(), u, l.found.as_ref(), "re-validation").await?;
                    let revoked = match &change {
                        Change::Update { update, .. } => update.activation == Some(Activation::Disable),
                        Change::Conflict { .. } | Change::Refuse { .. } => true,
                        _ => false,
                    };
                    if revoked {
                        tracing::warn!(user = %u.username, directory = kind.as_str(), server = %l.server, reason = %change.reason(), "re-validation refused a live session or token");
                    }
                    return Ok(!revoked
                        && (u.is_active
                            || matches!(&change, Change::Update { update, .. } if update.activation == Some(Activation::Enable))));
                }
                Err(f) if f.unreachable => {
                    tracing::warn!(user = %u.username, directory = kind.as_str(), reason = %f, "directory unreachable while re-validating");
                }
                Err(f) => {
                    tracing::warn!(user = %u.username, reason = %f, "could not re-validate a directory user; keeping the session");
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    /// Counts for tests and metrics: cached users per configuration.
    pub async fn dn_cache_size(&self, kind: DirectoryKind) -> Result<usize> {
        Ok(self.gateway(kind).await?.map(|g| g.cached_users()).unwrap_or(0))
    }
}
