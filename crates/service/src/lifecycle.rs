//! The I/O around the one identity rule ([`crate::identity`]): load what
//! the rule needs, apply the change it returns, record what the directory
//! changed. Used by sign-in, re-validation, import, sync and relinking.

use bindery_directory::DirectoryConfig;
use bindery_model::{AccountState, DirectoryKind, Role};
use bindery_store::{Activation, Change, OrgSource, OrganisationRow, UserRow};

use crate::identity::{self, Entry, Held, Mapped};
use crate::util::now_ms;
use crate::{Error, Result, Service};

/// What the group mapping gives these groups, as the rule takes it: `None`
/// when the directory has no mappings (role and organisations are then
/// Bindery's), else the highest mapped role (User when nothing matches)
/// and the mapped organisations' ids (unknown names are skipped).
pub fn mapped_access(cfg: &DirectoryConfig, groups: &[String], orgs: &[OrganisationRow]) -> Option<Mapped> {
    if cfg.group_mappings.is_empty() {
        return None;
    }
    Some(match bindery_directory::authn::apply_mappings(cfg, groups) {
        Some((role, names)) => Mapped {
            role,
            organisations: orgs.iter().filter(|o| names.iter().any(|n| n.eq_ignore_ascii_case(&o.name))).map(|o| o.id).collect(),
            matched: true,
        },
        None => Mapped { role: Role::User, organisations: vec![], matched: false },
    })
}

/// A user with their memberships, owned (the rule borrows it as [`Held`]).
pub(crate) struct Holding {
    pub user: UserRow,
    pub organisations: Vec<(i64, OrgSource)>,
}

impl Holding {
    pub fn held(&self) -> Held<'_> {
        Held { user: &self.user, organisations: &self.organisations }
    }
}

/// A staged row's stored account state (empty: active).
pub fn staged_state(stored: &str) -> AccountState {
    AccountState::parse(stored).unwrap_or(AccountState::Active)
}

impl Service {
    /// A user and (when the rule will need them) their memberships.
    pub(crate) async fn holding(&self, user: Option<UserRow>, with_orgs: bool) -> Result<Option<Holding>> {
        let Some(user) = user else { return Ok(None) };
        let organisations = if with_orgs {
            self.store.organisation_sources(&[user.id]).await?.into_iter().map(|(_, o, s)| (o, s)).collect()
        } else {
            vec![]
        };
        Ok(Some(Holding { user, organisations }))
    }

    /// The user linked to `external_id`, and the user holding `username_key`
    /// when that is someone else (or nobody is linked). `known` is a user
    /// already read (by the name typed at sign-in), reused when it fits.
    pub(crate) async fn linked_and_holder(
        &self,
        external_id: &str,
        username_key: &str,
        known: Option<&UserRow>,
        with_orgs: bool,
    ) -> Result<(Option<Holding>, Option<Holding>)> {
        let linked = match known {
            Some(u) if u.external_id.as_deref() == Some(external_id) && !u.is_local() => Some(u.clone()),
            _ => self.store.find_user_by_external_id(external_id).await?,
        };
        let holder = match (&linked, known) {
            (Some(l), _) if l.username_key == username_key => None,
            (_, Some(u)) if u.username_key == username_key => Some(u.clone()),
            _ => self.store.find_user(username_key).await?,
        };
        let holder = holder.filter(|h| linked.as_ref().is_none_or(|l| l.id != h.id));
        Ok((self.holding(linked, with_orgs).await?, self.holding(holder, with_orgs).await?))
    }

    /// Apply a change the rule returned. Returns the user it concerns (if
    /// any). Records every role change the directory made, and every
    /// disable, in the operation log.
    pub(crate) async fn apply_change(&self, change: &Change, via: &str) -> Result<Option<i64>> {
        match change {
            Change::Nothing { .. } | Change::Refuse { .. } => Ok(None),
            Change::Conflict { user_id, .. } => Ok(Some(*user_id)),
            Change::Create { account, .. } => {
                let id = self.store.create_account(account, now_ms()).await.map_err(|e| match e {
                    bindery_store::Error::Conflict(_) => Error::Conflict(format!("a user named {} already exists", account.username)),
                    e => e.into(),
                })?;
                tracing::info!(user = %account.username, via, "created a directory user");
                Ok(Some(id))
            }
            Change::Update { update, reasons } => {
                let done = self.store.apply_update(update, now_ms()).await.map_err(|e| match e {
                    bindery_store::Error::Conflict(_) => Error::Conflict(format!(
                        "another user is named {}",
                        update.rename.as_ref().map(|r| r.0.as_str()).unwrap_or(&update.username)
                    )),
                    e => e.into(),
                })?;
                self.record_update(update, reasons, via, done).await;
                Ok(Some(update.user_id))
            }
        }
    }

    /// Operation-log entries for what the directory changed on a user.
    pub(crate) async fn record_update(&self, update: &bindery_store::Update, reasons: &[String], via: &str, done: bindery_store::Applied) {
        self.system_changes(&update_events(update, reasons, via, done)).await;
    }

    /// Reconcile one user with what the directory says about them right
    /// now (re-validation, relinking): `found` is the entry the lookup
    /// returned (`None`: no entry matches). Applies the change.
    pub(crate) async fn reconcile_user(
        &self,
        kind: DirectoryKind,
        cfg: &DirectoryConfig,
        user: &UserRow,
        found: Option<&bindery_directory::authn::FoundUser>,
        via: &str,
    ) -> Result<Change> {
        let policy = identity::Policy { source: kind.source(), disable: true, create: false, ..Default::default() };
        let change = self.decide_user(cfg, user, found, &policy).await?;
        self.apply_change(&change, via).await?;
        Ok(change)
    }

    /// What the directory's current answer about one Bindery user means,
    /// by the one rule under `policy`, without applying it: `found` is the
    /// entry the directory holds for them now (`None`: no entry). Used by
    /// re-validation and relinking (through [`Self::reconcile_user`]) and
    /// by the live change stream (with the sync's policy).
    pub(crate) async fn decide_user(
        &self,
        cfg: &DirectoryConfig,
        user: &UserRow,
        found: Option<&bindery_directory::authn::FoundUser>,
        policy: &identity::Policy,
    ) -> Result<Change> {
        let orgs = if cfg.group_mappings.is_empty() { vec![] } else { self.store.organisation_names().await? };
        Ok(match found {
            // Another entry now answers to this name: this user's entry is gone.
            Some(f) if user.external_id.as_deref().is_some_and(|id| identity::is_immutable(id) && id != f.uid) => {
                let me = self.holding(Some(user.clone()), false).await?.ok_or(Error::NotFound("user"))?;
                let mut change = identity::reconcile(None, Some(&me.held()), None, policy, None);
                if let Change::Update { reasons, .. } = &mut change {
                    reasons.push(format!("the name {} now belongs to another directory entry", user.username));
                }
                change
            }
            Some(f) => {
                let key = crate::util::username_key(&f.user.username);
                let (linked, holder) = self.linked_and_holder(&f.uid, &key, Some(user), !orgs.is_empty()).await?;
                let mapped = mapped_access(cfg, &f.user.groups, &orgs);
                let email = f.user.email.trim();
                let problem = if f.user.username.trim().is_empty() { "no value for the username attribute" } else { "" };
                let entry = Entry {
                    external_id: &f.uid,
                    username: &f.user.username,
                    username_key: &key,
                    name: &f.user.name,
                    email: if crate::accounts::email_problem(email).is_none() { email } else { &user.email },
                    state: f.state.unwrap_or(AccountState::Active),
                    problem,
                };
                identity::reconcile(
                    Some(&entry),
                    linked.as_ref().map(Holding::held).as_ref(),
                    holder.as_ref().map(Holding::held).as_ref(),
                    policy,
                    mapped.as_ref(),
                )
            }
            None => {
                let me = self.holding(Some(user.clone()), false).await?.ok_or(Error::NotFound("user"))?;
                identity::reconcile(None, Some(&me.held()), None, policy, None)
            }
        })
    }
}

/// The operation-log entries for what the directory changed on a user (a
/// role, an activation); a disable is also logged with what it revoked.
pub(crate) fn update_events(
    update: &bindery_store::Update,
    reasons: &[String],
    via: &str,
    done: bindery_store::Applied,
) -> Vec<crate::logs::SystemChange> {
    use crate::logs::SystemChange;
    let target = format!("user:{}", update.rename.as_ref().map(|r| r.0.as_str()).unwrap_or(&update.username));
    let mut out = Vec::new();
    if let Some((before, after)) = update.role {
        out.push(SystemChange {
            action: "user.role",
            target: target.clone(),
            before: Some(serde_json::json!({ "role": before.as_str() })),
            after: serde_json::json!({ "role": after.as_str(), "by": "directory group mapping", "via": via }),
        });
    }
    match update.activation {
        Some(Activation::Disable) => {
            tracing::warn!(user = %update.username, sessions = done.sessions_ended, tokens = done.tokens_revoked, via, "directory account gone or disabled: disabled here, sessions and tokens revoked");
            out.push(SystemChange {
                action: "user.disable",
                target,
                before: Some(serde_json::json!({ "is_active": true })),
                after: serde_json::json!({ "is_active": false, "reason": reasons.join("; "), "via": via, "sessions_ended": done.sessions_ended, "tokens_revoked": done.tokens_revoked }),
            });
        }
        Some(Activation::Enable) => out.push(SystemChange {
            action: "user.enable",
            target,
            before: Some(serde_json::json!({ "is_active": false })),
            after: serde_json::json!({ "is_active": true, "reason": reasons.join("; "), "via": via }),
        }),
        None => {}
    }
    out
}
