//! "Explain access": why a user can or cannot sign in, fact by fact — for
//! answering "why can't Jane log in" without reading logs. The facts and
//! the verdict are the one access verdict's ([`crate::identity`]), the same
//! that sign-in and *Test login* use; the rule is run on what the directory
//! says now without applying anything.

use bindery_model::{AccessExplanation, AccessFact, AccountState, DirectoryKind};
use bindery_store::Change;

use crate::auth::user_key;
use crate::identity::{self, AccessFacts, Account, Directory, Entry, Password};
use crate::lifecycle::{mapped_access, Holding};
use crate::util::fmt_ts;
use crate::{Actor, Error, Result, Service};

fn dto(f: identity::Fact) -> AccessFact {
    AccessFact { label: f.label.to_string(), value: f.value, ok: f.ok }
}

impl Service {
    pub async fn explain_access(&self, actor: &Actor, user_id: i64) -> Result<AccessExplanation> {
        actor.require_reader()?;
        let u = self.store.get_user(user_id).await?.ok_or(Error::NotFound("user"))?;
        let policy = self.security_settings().await?;
        let locked = self.locked_user_keys().await?.contains(&user_key(&u.username_key));
        let mut facts = vec![AccessFact { label: "Source".into(), value: u.source.as_str().into(), ok: None }];

        let verdict = match u.source.directory() {
            None => identity::access_verdict(&AccessFacts {
                account: Some(Account::User(&u)),
                locked: Some(locked),
                directory: Directory::NotUsed,
                state: None,
                password: Password::Local { set: u.password_hash.is_some() },
                identity: None,
                mapped: None,
                role_pinned: u.role_pinned,
            }),
            Some(kind) => {
                facts.push(AccessFact {
                    label: "Policy".into(),
                    value: if policy.only_imported_users {
                        "only users already imported may sign in (this user is)".into()
                    } else {
                        "directory users are created at their first sign-in".into()
                    },
                    ok: None,
                });
                self.explain_directory(kind, &u, locked, &mut facts).await?
            }
        };
        if u.must_change_password {
            facts.push(AccessFact { label: "Next sign-in".into(), value: "must change the one-time password first".into(), ok: None });
        }
        let sentence = verdict.sentence(&u.username);
        let allowed = verdict.allowed();
        facts.extend(verdict.facts.into_iter().map(dto));

        let (events, _) =
            self.store.list_login_events(&bindery_store::LogFilter { user: Some(&u.username), ..Default::default() }, 20, 0).await?;
        match events.into_iter().find(|e| e.username.to_lowercase() == u.username_key) {
            Some(e) => facts.push(AccessFact {
                label: "Last sign-in attempt".into(),
                value: format!(
                    "{} from {} ({}): {}{}",
                    fmt_ts(e.at),
                    e.ip,
                    e.method,
                    if e.success.0 { "succeeded" } else { "failed" },
                    if e.reason.is_empty() { String::new() } else { format!(" — {}", e.reason) }
                ),
                ok: Some(e.success.0),
            }),
            None => facts.push(AccessFact { label: "Last sign-in attempt".into(), value: "none recorded".into(), ok: None }),
        }
        Ok(AccessExplanation { username: u.username, role_pinned: u.role_pinned, allowed, verdict: sentence, facts })
    }

    /// The verdict for a directory user, from a lookup in their directory.
    async fn explain_directory(
        &self,
        kind: DirectoryKind,
        u: &bindery_store::UserRow,
        locked: bool,
        facts: &mut Vec<AccessFact>,
    ) -> Result<identity::Verdict> {
        let base = AccessFacts {
            account: Some(Account::User(u)),
            locked: Some(locked),
            directory: Directory::NotEnabled,
            state: None,
            password: Password::NotChecked,
            identity: None,
            mapped: None,
            role_pinned: u.role_pinned,
        };
        let Some(g) = self.gateway(kind).await? else {
            return Ok(identity::access_verdict(&base));
        };
        let looked = g.lookup(&u.username).await;
        let l = match &looked {
            Err(f) if f.unreachable => {
                return Ok(identity::access_verdict(&AccessFacts { directory: Directory::Unreachable(&f.message), ..base }))
            }
            Err(f) => return Ok(identity::access_verdict(&AccessFacts { directory: Directory::Error(&f.message), ..base })),
            Ok(l) => l,
        };
        let server = format!("{} — {}", kind.label(), l.server);
        let Some(found) = &l.found else {
            return Ok(identity::access_verdict(&AccessFacts { directory: Directory::Answered { server: &server, dn: None }, ..base }));
        };
        let cfg = g.config();
        let dn = bindery_directory::dn::normalize(&found.dn);
        let ou = cfg
            .search_ous
            .iter()
            .find(|ou| dn.ends_with(&bindery_directory::dn::normalize(ou)))
            .cloned()
            .unwrap_or_else(|| "(none)".into());
        facts.push(AccessFact { label: "Search OU matched".into(), value: ou, ok: None });
        let nested = if cfg.nested_groups { " (nested groups included)" } else { " (direct only)" };
        let groups = &found.user.groups;
        facts.push(AccessFact {
            label: "Groups".into(),
            value: if groups.is_empty() { format!("(none){nested}") } else { format!("{}{nested}", groups.join("; ")) },
            ok: None,
        });
        // The rule, as sign-in would run it now (nothing is applied).
        let orgs = self.store.organisation_names().await?;
        let mapped = mapped_access(cfg, groups, &orgs);
        let key = crate::util::username_key(&found.user.username);
        let (linked, holder) = self.linked_and_holder(&found.uid, &key, Some(u), mapped.is_some()).await?;
        let entry = Entry {
            external_id: &found.uid,
            username: &found.user.username,
            username_key: &key,
            name: &found.user.name,
            email: found.user.email.trim(),
            state: found.state.unwrap_or(AccountState::Active),
            problem: "",
        };
        let policy = identity::Policy { source: kind.source(), disable: true, create: true, ..Default::default() };
        let change: Change = identity::reconcile(
            Some(&entry),
            linked.as_ref().map(Holding::held).as_ref(),
            holder.as_ref().map(Holding::held).as_ref(),
            &policy,
            mapped.as_ref(),
        );
        if let Some(m) = mapped.as_ref().filter(|m| m.matched) {
            let names: Vec<&str> = orgs.iter().filter(|o| m.organisations.contains(&o.id)).map(|o| o.name.as_str()).collect();
            facts.push(AccessFact {
                label: "Mapped access".into(),
                value: format!(
                    "role {}, organisations {}",
                    m.role.label(),
                    if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
                ),
                ok: None,
            });
        }
        Ok(identity::access_verdict(&AccessFacts {
            directory: Directory::Answered { server: &server, dn: Some(&found.dn) },
            state: Some(entry.state),
            identity: Some(&change),
            mapped: mapped.as_ref(),
            ..base
        }))
    }
}
