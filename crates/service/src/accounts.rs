//! Users, organisations and groups.

use std::collections::HashMap;

use bindery_model::{
    FieldError, Group, GroupInput, ListQuery, NamedRef, NewUser, Organisation, OrganisationInput, Page, User, UserSource, UserUpdate,
};
use bindery_store::{MembershipRow, NewUserRow, UserRow, UserRowUpdate};

use crate::logs::j;
use crate::util::{self, fmt_ts, now_ms};
use crate::{Actor, Error, Result, Secret, Service};

fn group_by_owner(rows: Vec<MembershipRow>) -> HashMap<i64, Vec<NamedRef>> {
    let mut map: HashMap<i64, Vec<NamedRef>> = HashMap::new();
    for r in rows {
        map.entry(r.owner_id).or_default().push(NamedRef { id: r.id, name: r.name });
    }
    map
}

/// Rules for a username: what people type at the login page.
pub(crate) fn username_problem(username: &str) -> Option<&'static str> {
    let n = username.chars().count();
    if username.trim().is_empty() {
        Some("is required")
    } else if username != username.trim() {
        Some("must not start or end with spaces")
    } else if n > 64 {
        Some("must be at most 64 characters")
    } else if username.chars().any(char::is_control) {
        Some("must not contain control characters (tab, line break, …)")
    } else {
        None
    }
}

pub(crate) fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        return None;
    }
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@')
        });
    if ok {
        None
    } else {
        Some("is not a valid email address")
    }
}

impl Service {
    async fn user_dtos(&self, rows: Vec<UserRow>) -> Result<Vec<User>> {
        let ids: Vec<i64> = rows.iter().map(|u| u.id).collect();
        let mut orgs = group_by_owner(self.store.organisations_of(&ids).await?);
        let mut groups = group_by_owner(self.store.groups_of(&ids).await?);
        // One query for the page's lock states, not one per row.
        let locked_keys = self.locked_user_keys().await?;
        let mut out = Vec::with_capacity(rows.len());
        for u in rows {
            let locked = locked_keys.contains(&crate::auth::user_key(&u.username_key));
            out.push(User {
                id: u.id,
                role: u.role,
                source: u.source,
                is_active: u.is_active,
                locked,
                must_change_password: u.must_change_password,
                role_pinned: u.role_pinned,
                external_id: u.external_id.clone(),
                organisations: orgs.remove(&u.id).unwrap_or_default(),
                groups: groups.remove(&u.id).unwrap_or_default(),
                created_at: fmt_ts(u.created_at),
                last_login_at: u.last_login_at.map(fmt_ts),
                username: u.username,
                name: u.name,
                email: u.email,
            });
        }
        Ok(out)
    }

    async fn user_dto(&self, id: i64) -> Result<User> {
        let row = self.store.get_user(id).await?.ok_or(Error::NotFound("user"))?;
        Ok(self.user_dtos(vec![row]).await?.remove(0))
    }

    pub async fn list_users(&self, actor: &Actor, q: &ListQuery) -> Result<Page<User>> {
        actor.require_reader()?;
        let (rows, total) = self.store.list_users(q.search(), q.per_page(), (q.page() - 1) * q.per_page()).await?;
        Ok(Page { items: self.user_dtos(rows).await?, total, page: q.page(), per_page: q.per_page() })
    }

    pub async fn get_user(&self, actor: &Actor, id: i64) -> Result<User> {
        actor.require_reader()?;
        self.user_dto(id).await
    }

    async fn organisation_problems(&self, ids: &[i64]) -> Result<Option<FieldError>> {
        let known: Vec<i64> = self.store.organisation_names().await?.iter().map(|o| o.id).collect();
        Ok(ids
            .iter()
            .find(|id| !known.contains(id))
            .map(|id| FieldError::new("organisation_ids", format!("organisation {id} does not exist"))))
    }

    /// Create a local user. They must change the given password at first login.
    pub async fn create_user(&self, actor: &Actor, input: &NewUser) -> Result<User> {
        actor.require_admin()?;
        let mut errors = Vec::new();
        if let Some(p) = username_problem(&input.username) {
            errors.push(FieldError::new("username", p));
        }
        if input.name.chars().count() > 128 {
            errors.push(FieldError::new("name", "must be at most 128 characters"));
        }
        let email = input.email.trim();
        if let Some(p) = email_problem(email) {
            errors.push(FieldError::new("email", p));
        }
        errors.extend(self.password_problems("password", &input.password, Some(&input.username)).await?);
        errors.extend(self.organisation_problems(&input.organisation_ids).await?);
        let key = util::username_key(&input.username);
        if errors.iter().all(|e| e.field != "username") && self.store.find_user(&key).await?.is_some() {
            errors.push(FieldError::new("username", "a user with this name already exists (names ignore case)"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let mut orgs = input.organisation_ids.clone();
        if orgs.is_empty() {
            orgs.extend(self.store.default_organisation().await?.map(|o| o.id));
        }
        let hash = util::hash_password_async(&input.password).await?;
        let id = self
            .store
            .insert_user(&NewUserRow {
                username: &input.username,
                username_key: &key,
                name: input.name.trim(),
                email,
                role: input.role.as_str(),
                source: UserSource::Local.as_str(),
                is_active: true,
                password_hash: Some(&hash),
                must_change_password: true,
                external_id: None,
                organisation_ids: &orgs,
                now: now_ms(),
            })
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    Error::field("username", "a user with this name already exists (names ignore case)")
                } else {
                    e.into()
                }
            })?;
        let user = self.user_dto(id).await?;
        self.audit(actor, "user.create", &format!("user:{}", user.username), None, Some(j(&user))).await;
        Ok(user)
    }

    pub async fn update_user(&self, actor: &Actor, id: i64, input: &UserUpdate) -> Result<User> {
        actor.require_admin()?;
        let before = self.user_dto(id).await?;
        let mut errors = Vec::new();
        let name = input.name.as_deref().map(str::trim).unwrap_or(&before.name);
        if name.chars().count() > 128 {
            errors.push(FieldError::new("name", "must be at most 128 characters"));
        }
        let email = input.email.as_deref().map(str::trim).unwrap_or(&before.email);
        if let Some(p) = email_problem(email) {
            errors.push(FieldError::new("email", p));
        }
        let role = input.role.unwrap_or(before.role);
        let is_active = input.is_active.unwrap_or(before.is_active);
        if id == actor.principal.user_id {
            if role != before.role {
                errors.push(FieldError::new("role", "you cannot change your own role"));
            }
            if !is_active {
                errors.push(FieldError::new("is_active", "you cannot disable yourself"));
            }
        }
        if let Some(orgs) = &input.organisation_ids {
            errors.extend(self.organisation_problems(orgs).await?);
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        self.store
            .update_user(
                id,
                &UserRowUpdate { name, email, role: role.as_str(), is_active, organisation_ids: input.organisation_ids.as_deref() },
                now_ms(),
            )
            .await?;
        if !is_active {
            // A disabled user loses every session and token at once.
            self.store.delete_user_sessions(id).await?;
            self.store.revoke_user_api_tokens(id, now_ms()).await?;
        }
        if let Some(pinned) = input.role_pinned.filter(|p| *p != before.role_pinned) {
            self.store.set_role_pinned(id, pinned, now_ms()).await?;
        } else if role != before.role && before.source != UserSource::Local && input.role_pinned.is_none() {
            // A role an administrator sets by hand on a directory user is
            // pinned: the group mapping would otherwise take it back.
            self.store.set_role_pinned(id, true, now_ms()).await?;
        }
        let after = self.user_dto(id).await?;
        let action = match (before.is_active, after.is_active) {
            (true, false) => "user.disable",
            (false, true) => "user.enable",
            _ => "user.update",
        };
        self.audit(actor, action, &format!("user:{}", after.username), Some(j(&before)), Some(j(&after))).await;
        Ok(after)
    }

    /// Set a new one-time password for a local user (generated when none is
    /// given) and end their sessions. Returns the password to show once.
    pub async fn reset_password(&self, actor: &Actor, id: i64, password: Option<&str>) -> Result<Secret> {
        actor.require_admin()?;
        let u = self.store.get_user(id).await?.ok_or(Error::NotFound("user"))?;
        if u.source != UserSource::Local {
            return Err(Error::field("password", "directory users have no local password; reset it in the directory"));
        }
        let password = match password.filter(|p| !p.is_empty()) {
            Some(p) => {
                let errors = self.password_problems("password", p, Some(&u.username)).await?;
                if !errors.is_empty() {
                    return Err(Error::Invalid(errors));
                }
                Secret::new(p)
            }
            None => util::random_password(),
        };
        self.store.set_password(id, &util::hash_password_async(password.expose()).await?, true, now_ms()).await?;
        self.store.delete_user_sessions(id).await?;
        self.audit(actor, "user.reset_password", &format!("user:{}", u.username), None, None).await;
        Ok(password)
    }

    /// For the command line (`bindery admin reset-password`): no actor.
    pub async fn reset_password_offline(&self, username: &str) -> Result<Secret> {
        let u = self.store.find_user(&util::username_key(username)).await?.ok_or(Error::NotFound("user"))?;
        if u.source != UserSource::Local {
            return Err(Error::field("username", "directory users have no local password"));
        }
        let password = util::random_password();
        self.store.set_password(u.id, &util::hash_password_async(password.expose()).await?, true, now_ms()).await?;
        self.store.delete_user_sessions(u.id).await?;
        self.store.clear_failures(&crate::auth::user_key(&u.username_key)).await?;
        Ok(password)
    }

    pub async fn delete_user(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        if id == actor.principal.user_id {
            return Err(Error::field("id", "you cannot delete yourself"));
        }
        let before = self.user_dto(id).await?;
        self.store.delete_user(id).await?;
        self.audit(actor, "user.delete", &format!("user:{}", before.username), Some(j(&before)), None).await;
        Ok(())
    }

    // ----- organisations -------------------------------------------------

    pub async fn list_organisations(&self, actor: &Actor) -> Result<Vec<Organisation>> {
        actor.require_reader()?;
        Ok(self.store.list_organisations().await?.into_iter().map(org_dto).collect())
    }

    fn org_name_problem(name: &str) -> Option<FieldError> {
        let n = name.trim().chars().count();
        (n == 0 || n > 64).then(|| FieldError::new("name", "must be 1 to 64 characters"))
    }

    pub async fn create_organisation(&self, actor: &Actor, input: &OrganisationInput) -> Result<Organisation> {
        actor.require_admin()?;
        if let Some(e) = Self::org_name_problem(&input.name) {
            return Err(Error::Invalid(vec![e]));
        }
        let id = self
            .store
            .insert_organisation(input.name.trim(), false, now_ms())
            .await
            .map_err(|e| conflict_as_field(e, "name", "an organisation with this name already exists"))?;
        let org = self.store.get_organisation(id).await?.map(org_dto).ok_or(Error::NotFound("organisation"))?;
        self.audit(actor, "organisation.create", &format!("organisation:{}", org.name), None, Some(j(&org))).await;
        Ok(org)
    }

    pub async fn rename_organisation(&self, actor: &Actor, id: i64, input: &OrganisationInput) -> Result<Organisation> {
        actor.require_admin()?;
        if let Some(e) = Self::org_name_problem(&input.name) {
            return Err(Error::Invalid(vec![e]));
        }
        let before = self.store.get_organisation(id).await?.map(org_dto).ok_or(Error::NotFound("organisation"))?;
        self.store
            .rename_organisation(id, input.name.trim())
            .await
            .map_err(|e| conflict_as_field(e, "name", "an organisation with this name already exists"))?;
        let after = self.store.get_organisation(id).await?.map(org_dto).ok_or(Error::NotFound("organisation"))?;
        self.audit(actor, "organisation.rename", &format!("organisation:{}", after.name), Some(j(&before)), Some(j(&after))).await;
        Ok(after)
    }

    pub async fn delete_organisation(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        let before = self.store.get_organisation(id).await?.map(org_dto).ok_or(Error::NotFound("organisation"))?;
        if before.is_default {
            return Err(Error::field("id", "the default organisation cannot be deleted"));
        }
        self.store.delete_organisation(id).await?;
        self.audit(actor, "organisation.delete", &format!("organisation:{}", before.name), Some(j(&before)), None).await;
        Ok(())
    }

    // ----- groups ----------------------------------------------------------

    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<Group>> {
        actor.require_reader()?;
        let rows = self.store.list_groups().await?;
        let ids: Vec<i64> = rows.iter().map(|g| g.id).collect();
        let mut members = group_by_owner(self.store.members_of(&ids).await?);
        Ok(rows
            .into_iter()
            .map(|g| Group {
                members: members.remove(&g.id).unwrap_or_default(),
                id: g.id,
                name: g.name,
                description: g.description,
                source: UserSource::parse(&g.source).unwrap_or_default(),
                created_at: fmt_ts(g.created_at),
            })
            .collect())
    }

    async fn group_dto(&self, id: i64) -> Result<Group> {
        let g = self.store.get_group(id).await?.ok_or(Error::NotFound("group"))?;
        let members = self.store.members_of(&[id]).await?;
        Ok(Group {
            members: members.into_iter().map(|m| NamedRef { id: m.id, name: m.name }).collect(),
            id: g.id,
            name: g.name,
            description: g.description,
            source: UserSource::parse(&g.source).unwrap_or_default(),
            created_at: fmt_ts(g.created_at),
        })
    }

    async fn group_problems(&self, input: &GroupInput) -> Result<Vec<FieldError>> {
        let mut errors = Vec::new();
        let n = input.name.trim().chars().count();
        if n == 0 || n > 64 {
            errors.push(FieldError::new("name", "must be 1 to 64 characters"));
        }
        if input.description.chars().count() > 512 {
            errors.push(FieldError::new("description", "must be at most 512 characters"));
        }
        for id in &input.member_ids {
            if self.store.get_user(*id).await?.is_none() {
                errors.push(FieldError::new("member_ids", format!("user {id} does not exist")));
                break;
            }
        }
        Ok(errors)
    }

    pub async fn create_group(&self, actor: &Actor, input: &GroupInput) -> Result<Group> {
        actor.require_admin()?;
        let errors = self.group_problems(input).await?;
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let id = self
            .store
            .insert_group(input.name.trim(), input.description.trim(), "local", &input.member_ids, now_ms())
            .await
            .map_err(|e| conflict_as_field(e, "name", "a group with this name already exists"))?;
        let g = self.group_dto(id).await?;
        self.audit(actor, "group.create", &format!("group:{}", g.name), None, Some(j(&g))).await;
        Ok(g)
    }

    pub async fn update_group(&self, actor: &Actor, id: i64, input: &GroupInput) -> Result<Group> {
        actor.require_admin()?;
        let before = self.group_dto(id).await?;
        let errors = self.group_problems(input).await?;
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        self.store
            .update_group(id, input.name.trim(), input.description.trim(), &input.member_ids)
            .await
            .map_err(|e| conflict_as_field(e, "name", "a group with this name already exists"))?;
        let after = self.group_dto(id).await?;
        self.audit(actor, "group.update", &format!("group:{}", after.name), Some(j(&before)), Some(j(&after))).await;
        Ok(after)
    }

    pub async fn delete_group(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        let before = self.group_dto(id).await?;
        self.store.delete_group(id).await?;
        self.audit(actor, "group.delete", &format!("group:{}", before.name), Some(j(&before)), None).await;
        Ok(())
    }
}

fn conflict_as_field(e: bindery_store::Error, field: &str, message: &str) -> Error {
    if e.is_unique_violation() {
        Error::field(field, message)
    } else {
        e.into()
    }
}

fn org_dto(o: bindery_store::OrganisationRow) -> Organisation {
    Organisation { id: o.id, name: o.name, is_default: o.is_default != 0, user_count: o.user_count, created_at: fmt_ts(o.created_at) }
}

impl Service {
    /// Resolve usernames (case-insensitively) to user ids, naming the first unknown one.
    pub async fn resolve_usernames(&self, actor: &Actor, field: &str, names: &[&str]) -> Result<Vec<i64>> {
        actor.require_reader()?;
        let mut ids = Vec::with_capacity(names.len());
        for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            match self.store.find_user(&util::username_key(n)).await? {
                Some(u) => ids.push(u.id),
                None => return Err(Error::field(field, format!("no user named {n}"))),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

impl Service {
    /// Resolve a username conflict: link this Bindery user to the directory
    /// entry that now answers to its name. Every session and token of the
    /// account is revoked (the person behind it may have changed), then the
    /// role and organisations are recomputed by the one identity rule.
    pub async fn relink_user(&self, actor: &Actor, id: i64) -> Result<User> {
        actor.require_admin()?;
        let before = self.user_dto(id).await?;
        let u = self.store.get_user(id).await?.ok_or(Error::NotFound("user"))?;
        let Some(kind) = u.source.directory() else {
            return Err(Error::Conflict("a local user has no directory entry to link to".into()));
        };
        let g = self.gateway(kind).await?.ok_or_else(|| Error::Conflict(format!("{} is not enabled", kind.label())))?;
        let found = g
            .lookup(&u.username)
            .await
            .map_err(|f| Error::Conflict(format!("{}: {}", kind.label(), f.message)))?
            .found
            .ok_or_else(|| Error::Conflict(format!("no entry named {} in {}", u.username, kind.label())))?;
        if u.external_id.as_deref() == Some(found.uid.as_str()) {
            return Err(Error::Conflict(format!("{} is already linked to this entry", u.username)));
        }
        if let Some(other) = self.store.find_user_by_external_id(&found.uid).await?.filter(|o| o.id != id) {
            return Err(Error::Conflict(format!(
                "the entry is linked to another Bindery user ({}); rename or delete that one first",
                other.username
            )));
        }
        let done = self.store.relink_account(id, &found.uid, now_ms()).await?;
        let u = self.store.get_user(id).await?.ok_or(Error::NotFound("user"))?;
        self.reconcile_user(kind, g.config(), &u, Some(&found), "relink").await?;
        let after = self.user_dto(id).await?;
        self.audit(
            actor,
            "user.relink",
            &format!("user:{}", after.username),
            Some(serde_json::json!({ "external_id": before.external_id, "role": before.role })),
            Some(serde_json::json!({ "external_id": found.uid, "dn": found.dn, "role": after.role, "sessions_ended": done.sessions_ended, "tokens_revoked": done.tokens_revoked })),
        )
        .await;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username_problem("jane"), None);
        assert_eq!(username_problem("Élodie Dupont"), None);
        assert!(username_problem(" jane").is_some());
        assert!(username_problem("").is_some());
        assert!(username_problem(&"x".repeat(65)).is_some());
        assert!(username_problem("a\u{0}b").is_some());
    }

    #[test]
    fn emails() {
        assert_eq!(email_problem(""), None);
        assert_eq!(email_problem("jane@example.com"), None);
        for bad in ["jane", "jane@", "@example.com", "jane@example", "ja ne@example.com", "a@b@c.d"] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
    }
}
