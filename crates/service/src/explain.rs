//! "Explain access": why a user can or cannot sign in, fact by fact — for
//! answering "why can't Jane log in" without reading logs.

use bindery_model::{AccessExplanation, AccessFact, DirectoryKind, UserSource};

use crate::auth::user_key;
use crate::util::fmt_ts;
use crate::{Actor, Error, Result, Service};

fn fact(label: &str, value: impl Into<String>, ok: Option<bool>) -> AccessFact {
    AccessFact { label: label.into(), value: value.into(), ok }
}

impl Service {
    pub async fn explain_access(&self, actor: &Actor, user_id: i64) -> Result<AccessExplanation> {
        actor.require_reader()?;
        let u = self.store.get_user(user_id).await?.ok_or(Error::NotFound("user"))?;
        let policy = self.security_settings().await?;
        let mut facts = Vec::new();
        // The first refusing fact gives the verdict.
        let mut refusal: Option<String> = None;
        let mut refuse = |facts: &mut Vec<AccessFact>, label: &str, value: String| {
            if refusal.is_none() {
                refusal = Some(format!("{label}: {value}"));
            }
            facts.push(fact(label, value, Some(false)));
        };

        facts.push(fact("Source", u.source.clone(), None));
        if u.is_active != 0 {
            facts.push(fact("Bindery account", "active", Some(true)));
        } else {
            refuse(&mut facts, "Bindery account", "disabled".into());
        }
        if self.locked_user_keys().await?.contains(&user_key(&u.username_key)) {
            refuse(
                &mut facts,
                "Bindery lockout",
                format!(
                    "locked: {} failed logins within {} minutes (an admin can unlock)",
                    policy.lockout_max_failures, policy.lockout_window_minutes
                ),
            );
        } else {
            facts.push(fact("Bindery lockout", "not locked", Some(true)));
        }

        if u.source == UserSource::Local.as_str() {
            if u.password_hash.is_some() {
                facts.push(fact("Password", "local password (Argon2id)", Some(true)));
            } else {
                refuse(&mut facts, "Password", "no local password set".into());
            }
            if u.must_change_password != 0 {
                facts.push(fact("Next login", "must change the one-time password first", None));
            }
        } else {
            let kind = if u.source == UserSource::LdapHa.as_str() { DirectoryKind::LdapHa } else { DirectoryKind::Ldap };
            facts.push(fact(
                "Policy",
                if policy.only_imported_users {
                    "only users already imported may log in (this user is)"
                } else {
                    "directory users are created at their first login"
                },
                None,
            ));
            facts.push(fact("Password", "checked by the directory (no usable local password)", None));
            match self.gateway(kind).await? {
                None => refuse(&mut facts, "Directory", format!("{} is not enabled (or its settings are invalid)", kind.label())),
                Some(g) => match g.lookup(&u.username).await {
                    Err(f) if f.unreachable => refuse(&mut facts, "Directory", format!("{} unreachable: {}", kind.label(), f.message)),
                    Err(f) => refuse(&mut facts, "Directory lookup", f.message),
                    Ok(l) => {
                        facts.push(fact("Server that answered", format!("{} — {}", kind.label(), l.server), Some(true)));
                        match l.found {
                            None => {
                                refuse(&mut facts, "Directory entry", "no entry matches in the search OUs (removed or renamed?)".into())
                            }
                            Some(found) => {
                                let dn = bindery_directory::dn::normalize(&found.dn);
                                let ou = g
                                    .config()
                                    .search_ous
                                    .iter()
                                    .find(|ou| dn.ends_with(&bindery_directory::dn::normalize(ou)))
                                    .cloned()
                                    .unwrap_or_else(|| "(none)".into());
                                facts.push(fact("Search OU matched", ou, Some(true)));
                                facts.push(fact("Entry", found.dn.clone(), Some(true)));
                                match found.state {
                                    None => facts.push(fact("Account state in the directory", "active", Some(true))),
                                    Some(s) => refuse(&mut facts, "Account state in the directory", s.to_string()),
                                }
                                let groups = found.user.groups.clone();
                                let nested = if g.config().nested_groups { " (nested groups included)" } else { " (direct only)" };
                                facts.push(fact(
                                    "Groups",
                                    if groups.is_empty() { format!("(none){nested}") } else { format!("{}{nested}", groups.join("; ")) },
                                    None,
                                ));
                                facts.push(fact(
                                    "Group mapping",
                                    match bindery_directory::authn::apply_mappings(g.config(), &groups) {
                                        Some((role, orgs)) => format!(
                                            "role {}, organisations {}",
                                            role.label(),
                                            if orgs.is_empty() { "(unchanged)".into() } else { orgs.join(", ") }
                                        ),
                                        None => "no mapping matches: role and organisations unchanged".into(),
                                    },
                                    None,
                                ));
                            }
                        }
                    }
                },
            }
        }

        let (events, _) = self.store.list_login_events(Some(&u.username), 20, 0).await?;
        match events.into_iter().find(|e| e.username.to_lowercase() == u.username_key) {
            Some(e) => facts.push(fact(
                "Last sign-in attempt",
                format!(
                    "{} from {} ({}): {}{}",
                    fmt_ts(e.at),
                    e.ip,
                    e.method,
                    if e.success != 0 { "succeeded" } else { "failed" },
                    if e.reason.is_empty() { String::new() } else { format!(" — {}", e.reason) }
                ),
                Some(e.success != 0),
            )),
            None => facts.push(fact("Last sign-in attempt", "none recorded", None)),
        }

        let allowed = refusal.is_none();
        let verdict = match refusal {
            None => format!("{} can sign in.", u.username),
            Some(r) => format!("{} cannot sign in — {r}.", u.username),
        };
        Ok(AccessExplanation { username: u.username, allowed, verdict, facts })
    }
}
