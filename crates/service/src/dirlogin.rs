//! Signing in with a directory password.
//!
//! LDAP first; LDAP HA only when every LDAP server is unreachable — a wrong
//! password, an unknown or disabled user on a live directory is final and
//! never falls through to another directory or to a local password. What
//! the entry means for the Bindery user is the one rule's
//! ([`crate::identity::reconcile`]); whether the person may sign in is the
//! one verdict's ([`crate::identity::access_verdict`]).

use bindery_model::{AccountState, DirectoryKind};
use bindery_store::{Change, OrgSource, UserRow};

use crate::auth::LoginFailure;
use crate::identity::{self, AccessFacts, Account, Directory, Entry, Password};
use crate::lifecycle::{mapped_access, Holding};
use crate::util;
use crate::Service;

fn fail(reason: impl Into<String>) -> LoginFailure {
    LoginFailure { reason: reason.into(), counts: true }
}

/// The login log's reason: which directory, whether it was reached, and
/// the verdict's refusing fact.
fn refused(kind: DirectoryKind, facts: &AccessFacts<'_>) -> LoginFailure {
    let what = if matches!(facts.directory, Directory::Unreachable(_)) { "unreachable" } else { "refused" };
    fail(format!("{} {what} — {}", kind.label(), identity::access_verdict(facts).reason()))
}

const NO_FACTS: AccessFacts<'static> = AccessFacts {
    account: None,
    locked: None,
    directory: Directory::NotUsed,
    state: None,
    password: Password::NotChecked,
    identity: None,
    mapped: None,
    role_pinned: false,
};

impl Service {
    pub(crate) async fn directory_login(&self, existing: Option<UserRow>, username: &str, password: &str) -> Result<UserRow, LoginFailure> {
        let mut outcome = None;
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            let gateway = match self.gateway(kind).await {
                Ok(Some(g)) => g,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(directory = kind.as_str(), error = %e, "cannot load the directory configuration");
                    continue;
                }
            };
            match gateway.login(username, password).await {
                Ok(done) => {
                    outcome = Some(Ok((kind, gateway, done)));
                    break;
                }
                Err(e) if e.failure.unreachable => {
                    tracing::warn!(directory = kind.as_str(), reason = %e.failure, "directory unreachable");
                    outcome = Some(Err((kind, e)));
                }
                Err(e) => {
                    outcome = Some(Err((kind, e)));
                    break;
                }
            }
        }
        let store_err = |e: crate::Error| {
            tracing::error!(error = %e, "store error during directory login");
            LoginFailure { reason: "internal error".into(), counts: false }
        };
        let (kind, gateway, done) = match outcome {
            None => {
                util::verify_dummy_async(password).await;
                return Err(fail(if existing.is_some() { "directory user, but no directory is enabled" } else { "unknown user" }));
            }
            Some(Err((kind, e))) => {
                let state = e.state;
                if state == Some(AccountState::Disabled) {
                    if let Some(u) = existing.as_ref().filter(|u| u.is_active && !u.is_local()) {
                        // Disabled in the directory: the rule disables the
                        // user here too, and every session and token ends.
                        let entry = Entry {
                            external_id: u.external_id.as_deref().unwrap_or(""),
                            username: &u.username,
                            username_key: &u.username_key,
                            name: &u.name,
                            email: &u.email,
                            state: AccountState::Disabled,
                            problem: "",
                        };
                        let me = Holding { user: u.clone(), organisations: vec![] };
                        let policy = identity::Policy { source: kind.source(), disable: true, ..Default::default() };
                        let change = identity::reconcile(Some(&entry), Some(&me.held()), None, &policy, None);
                        self.apply_change(&change, "sign-in").await.map_err(store_err)?;
                    }
                }
                let why = e.failure.message.as_str();
                let facts = if e.failure.unreachable {
                    AccessFacts { directory: Directory::Unreachable(why), ..NO_FACTS }
                } else if let Some(state) = state {
                    AccessFacts { state: Some(state), ..NO_FACTS }
                } else if e.refused {
                    AccessFacts { password: Password::Refused(why), ..NO_FACTS }
                } else {
                    AccessFacts { directory: Directory::Error(why), ..NO_FACTS }
                };
                // Only a refused password or account is the person's
                // failure; an outage or a server error locks nobody out.
                let mut failure = refused(kind, &facts);
                if !e.failure.unreachable && !e.refused && state.is_none() {
                    failure.reason = failure.reason.replacen(" refused — ", " failed — ", 1);
                }
                failure.counts = e.refused || state.is_some();
                return Err(failure);
            }
            Some(Ok(x)) => x,
        };
        let found = &done.found;
        if found.user.username.chars().any(char::is_control) {
            return Err(fail(format!("{} refused — the entry's username contains control characters", kind.label())));
        }
        let cfg = gateway.config();
        let dkey = util::username_key(&found.user.username);
        let with_mappings = !cfg.group_mappings.is_empty();
        let (linked, holder) = self.linked_and_holder(&found.uid, &dkey, existing.as_ref(), with_mappings).await.map_err(store_err)?;
        let creating = linked.is_none() && holder.is_none();
        let orgs = if with_mappings { self.store.organisation_names().await.map_err(|e| store_err(e.into()))? } else { vec![] };
        let mapped = mapped_access(cfg, &found.user.groups, &orgs);
        let mut policy = identity::Policy { source: kind.source(), disable: true, create: true, ..Default::default() };
        if creating {
            // Read only when the rule may create: the usual login knows its user.
            policy.create = !self.security_settings().await.map_err(store_err)?.only_imported_users;
            policy.organisations = self
                .store
                .default_organisation()
                .await
                .map_err(|e| store_err(e.into()))?
                .map(|o| (o.id, OrgSource::Default))
                .into_iter()
                .collect();
        }
        let email = found.user.email.trim();
        let entry = Entry {
            external_id: &found.uid,
            username: &found.user.username,
            username_key: &dkey,
            name: &found.user.name,
            email: if crate::accounts::email_problem(email).is_none() { email } else { "" },
            state: found.state.unwrap_or(AccountState::Active),
            problem: "",
        };
        let change = identity::reconcile(
            Some(&entry),
            linked.as_ref().map(Holding::held).as_ref(),
            holder.as_ref().map(Holding::held).as_ref(),
            &policy,
            mapped.as_ref(),
        );
        let user = match &change {
            Change::Nothing { .. } => linked.or(holder).map(|h| h.user),
            Change::Conflict { .. } | Change::Refuse { .. } => None,
            Change::Create { .. } | Change::Update { .. } => match self.apply_change(&change, "sign-in").await {
                Ok(Some(id)) => self.store.get_user(id).await.map_err(|e| store_err(e.into()))?,
                Ok(None) => None,
                // Two first logins of the same person at once: the other
                // one created the user; this one signs in as it.
                Err(crate::Error::Conflict(_)) if matches!(change, Change::Create { .. }) => {
                    match self.store.find_user(&dkey).await.map_err(|e| store_err(e.into()))? {
                        Some(u) if u.external_id.as_deref() == Some(found.uid.as_str()) => Some(u),
                        _ => return Err(fail("a user with this name was created meanwhile")),
                    }
                }
                Err(e) => return Err(store_err(e)),
            },
        };
        let server = format!("{} — {}", kind.label(), done.server);
        let facts = AccessFacts {
            account: user.as_ref().map(Account::User),
            locked: None,
            directory: Directory::Answered { server: &server, dn: Some(&found.dn) },
            state: Some(entry.state),
            password: Password::Accepted,
            identity: Some(&change),
            mapped: mapped.as_ref(),
            role_pinned: user.as_ref().is_some_and(|u| u.role_pinned),
        };
        let verdict = identity::access_verdict(&facts);
        match user {
            Some(u) if verdict.allowed() => {
                if matches!(change, Change::Create { .. }) {
                    tracing::info!(user = %u.username, directory = kind.as_str(), "created a user at first directory login");
                }
                Ok(u)
            }
            _ => Err(refused(kind, &facts)),
        }
    }
}
