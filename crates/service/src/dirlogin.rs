//! Signing in with a directory password.
//!
//! LDAP first; LDAP HA only when every LDAP server is unreachable — a wrong
//! password, an unknown or disabled user on a live directory is final and
//! never falls through to another directory or to a local password.

use bindery_model::{DirectoryKind, UserSource};
use bindery_store::{NewUserRow, UserRow};

use crate::auth::LoginFailure;
use crate::util::{self, now_ms};
use crate::Service;

fn fail(reason: impl Into<String>) -> LoginFailure {
    LoginFailure { reason: reason.into(), counts: true }
}

impl Service {
    pub(crate) async fn directory_login(
        &self,
        existing: Option<UserRow>,
        username: &str,
        key: &str,
        password: &str,
    ) -> Result<UserRow, LoginFailure> {
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
                    let mapped = bindery_directory::authn::apply_mappings(gateway.config(), &done.found.user.groups);
                    outcome = Some(Ok((kind, done.server, done.found, mapped)));
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
        let store_err = |e: bindery_store::Error| {
            tracing::error!(error = %e, "store error during directory login");
            LoginFailure { reason: "internal error".into(), counts: false }
        };
        match outcome {
            None => {
                util::verify_dummy_async(password).await;
                Err(fail(if existing.is_some() { "directory user, but no directory is enabled" } else { "unknown user" }))
            }
            Some(Err((kind, e))) => {
                if e.state == Some("disabled") {
                    if let Some(u) = existing.as_ref().filter(|u| u.is_active != 0) {
                        // Disabled in the directory: disabled here too, and
                        // every session and token ends now.
                        self.disable_directory_user(u, "disabled in the directory (at login)").await.map_err(store_err)?;
                    }
                }
                // Only a refused password or account is the person's
                // failure; an outage or a server error locks nobody out.
                let what = if e.failure.unreachable {
                    "unreachable"
                } else if e.refused {
                    "refused"
                } else {
                    "failed"
                };
                Err(LoginFailure { reason: format!("{} {what}: {}", kind.label(), e.failure.message), counts: e.refused })
            }
            Some(Ok((kind, server, found, mapped))) => {
                let mapped_orgs = match &mapped {
                    Some((_, names)) => self.organisation_ids(names).await.map_err(store_err)?,
                    None => vec![],
                };
                let dkey = util::username_key(&found.user.username);
                // The entry's immutable id first: renamed or moved in the
                // directory, it is still the same Bindery user (renamed here).
                let by_id = match existing.as_ref() {
                    // The usual case, known without another read: the user
                    // found by name is the entry's.
                    Some(u) if u.external_id.as_deref() == Some(found.uid.as_str()) => Some(u.clone()),
                    _ => self.store.find_user_by_external_id(&found.uid).await.map_err(store_err)?,
                };
                let linked = match by_id {
                    Some(u) if u.username_key != dkey => {
                        let now = now_ms();
                        let entry = bindery_store::Relink {
                            username: &found.user.username,
                            username_key: &dkey,
                            name: &u.name,
                            email: &u.email,
                            external_id: &found.uid,
                        };
                        match self.store.relink_user(u.id, &entry, now).await {
                            Ok(()) => self.store.get_user(u.id).await.map_err(store_err)?,
                            Err(bindery_store::Error::Conflict(_)) => {
                                return Err(fail(format!(
                                    "renamed in the directory to {}, a name another user already has",
                                    found.user.username
                                )))
                            }
                            Err(e) => return Err(store_err(e)),
                        }
                    }
                    other => other,
                };
                let local = match linked {
                    Some(u) => Some(u),
                    None if dkey == key => existing,
                    None => self.store.find_user(&dkey).await.map_err(store_err)?,
                };
                match local {
                    Some(u) if u.source == UserSource::Local.as_str() => {
                        Err(fail("a local user has this name: directory login refused (a name never works both ways)"))
                    }
                    Some(u) if u.is_active == 0 => Err(fail("account disabled in Bindery")),
                    Some(u) => {
                        tracing::debug!(user = %u.username, %server, "directory login");
                        match mapped {
                            // The directory's groups decide role and organisations.
                            Some((role, _)) if role.as_str() != u.role || !mapped_orgs.is_empty() => {
                                let orgs = (!mapped_orgs.is_empty()).then_some(mapped_orgs.as_slice());
                                self.store
                                    .update_user(
                                        u.id,
                                        &bindery_store::UserRowUpdate {
                                            name: &u.name,
                                            email: &u.email,
                                            role: role.as_str(),
                                            is_active: true,
                                            organisation_ids: orgs,
                                        },
                                        now_ms(),
                                    )
                                    .await
                                    .map_err(store_err)?;
                                self.store.get_user(u.id).await.map_err(store_err)?.ok_or_else(|| fail("internal error"))
                            }
                            _ => Ok(u),
                        }
                    }
                    None if self.security_settings().await.map_err(|_| fail("internal error"))?.only_imported_users => {
                        Err(fail(format!("not imported: only imported users may log in ({} {server})", kind.label())))
                    }
                    None => {
                        let email =
                            if crate::accounts::email_problem(found.user.email.trim()).is_none() { found.user.email.trim() } else { "" };
                        let orgs: Vec<i64> = if mapped_orgs.is_empty() {
                            self.store.default_organisation().await.map_err(store_err)?.map(|o| o.id).into_iter().collect()
                        } else {
                            mapped_orgs.clone()
                        };
                        let role = mapped.as_ref().map(|(r, _)| *r).unwrap_or(bindery_model::Role::User);
                        let source = match kind {
                            DirectoryKind::Ldap => UserSource::Ldap,
                            DirectoryKind::LdapHa => UserSource::LdapHa,
                        };
                        let created = self
                            .store
                            .insert_user(&NewUserRow {
                                username: &found.user.username,
                                username_key: &dkey,
                                name: &found.user.name,
                                email,
                                role: role.as_str(),
                                source: source.as_str(),
                                is_active: true,
                                // Never a usable local password.
                                password_hash: None,
                                must_change_password: false,
                                external_id: Some(&found.uid),
                                organisation_ids: &orgs,
                                now: now_ms(),
                            })
                            .await;
                        let id = match created {
                            Ok(id) => id,
                            // Two first logins of the same person at once: the
                            // other one created the user; this one signs in as it.
                            Err(bindery_store::Error::Conflict(_)) => match self.store.find_user(&dkey).await.map_err(store_err)? {
                                Some(u) if u.source == source.as_str() && u.is_active != 0 => return Ok(u),
                                _ => return Err(fail("a user with this name was created meanwhile")),
                            },
                            Err(e) => return Err(store_err(e)),
                        };
                        tracing::info!(user = %found.user.username, directory = kind.as_str(), "created a user at first directory login");
                        self.store.get_user(id).await.map_err(store_err)?.ok_or_else(|| fail("internal error"))
                    }
                }
            }
        }
    }

    /// Organisation ids by name (case-insensitive); unknown names are skipped.
    async fn organisation_ids(&self, names: &[String]) -> Result<Vec<i64>, bindery_store::Error> {
        let all = self.store.list_organisations().await?;
        Ok(all.into_iter().filter(|o| names.iter().any(|n| n.eq_ignore_ascii_case(&o.name))).map(|o| o.id).collect())
    }

    pub(crate) async fn disable_directory_user(&self, u: &UserRow, reason: &str) -> Result<(), bindery_store::Error> {
        let (sessions, tokens) = self.store.disable_for_directory(u.id, now_ms()).await?;
        tracing::warn!(user = %u.username, sessions, tokens, reason, "directory account gone or disabled: disabled here, sessions and tokens revoked");
        self.system_audit(
            "user.disable",
            &format!("user:{}", u.id),
            serde_json::json!({ "username": u.username, "reason": reason, "sessions_ended": sessions, "tokens_revoked": tokens }),
        )
        .await;
        Ok(())
    }
}
