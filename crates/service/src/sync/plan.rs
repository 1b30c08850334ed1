//! The plan: the one identity rule over each staged row (and each user
//! the snapshot no longer lists), counted and recorded as the run's items.

use std::collections::HashMap;

use bindery_model::{DirectoryKind, ItemOutcome, Role, SyncAction, SyncCounts, SyncSettings, UserSource};
use bindery_store::{Activation, Change, NewItem, OrgSource, PlanRow, UserRow};

use super::CHUNK;
use crate::identity::{self, Entry, Held};
use crate::{Error, Result, Service};

/// The Bindery user a plan row's entry resolved to, as the rule takes it.
fn plan_user(r: &PlanRow) -> Option<UserRow> {
    let id = r.user_id?;
    Some(UserRow {
        id,
        username: r.user_username.clone().unwrap_or_default(),
        username_key: crate::util::username_key(r.user_username.as_deref().unwrap_or_default()),
        name: r.user_name.clone().unwrap_or_default(),
        email: r.user_email.clone().unwrap_or_default(),
        role: r.user_role.as_deref().and_then(Role::parse).unwrap_or_default(),
        source: r.user_source.as_deref().and_then(UserSource::parse).unwrap_or_default(),
        is_active: r.user_active == Some(1),
        password_hash: None,
        must_change_password: false,
        external_id: r.user_external_id.clone(),
        created_at: 0,
        updated_at: 0,
        last_login_at: None,
        validated_at: None,
        dir_disabled: r.user_dir_disabled == Some(1),
        role_pinned: r.user_role_pinned == Some(1),
    })
}

/// A hash of everything besides the row and its user that a plan reads: the
/// group mapping, the attribute map, the policy (disabling, organisations
/// for new users) and the organisations the mapping names. A change to any
/// of them plans every row again.
fn plan_rules(cfg: &bindery_directory::DirectoryConfig, policy: &identity::Policy, orgs: &[bindery_store::OrganisationRow]) -> String {
    let orgs: Vec<(i64, &str)> = orgs.iter().map(|o| (o.id, o.name.as_str())).collect();
    let parts = [
        format!("{:?}", cfg.group_mappings),
        format!("{:?}", cfg.attr_map),
        format!("{:?}", cfg.group_mode),
        format!("{policy:?}"),
        format!("{orgs:?}"),
    ];
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", bindery_store::stable_hash(&parts) as u64)
}

/// What a change is called in a run's items.
pub fn action_of(c: &Change) -> SyncAction {
    match c {
        Change::Create { .. } => SyncAction::Create,
        Change::Update { update, .. } => match update.activation {
            Some(Activation::Disable) => SyncAction::Disable,
            Some(Activation::Enable) => SyncAction::Enable,
            None => SyncAction::Update,
        },
        Change::Conflict { .. } => SyncAction::Conflict,
        Change::Refuse { .. } | Change::Nothing { .. } => SyncAction::Failed,
    }
}

/// Whether a plan must wait for approval: it would disable more than
/// `threshold_percent` of the directory's users.
pub fn over_threshold(disables: i64, directory_users: i64, threshold_percent: i64) -> bool {
    disables > 0 && disables * 100 > threshold_percent * directory_users
}

fn count(c: &mut SyncCounts, action: SyncAction) {
    match action {
        SyncAction::Create => c.create += 1,
        SyncAction::Update => c.update += 1,
        SyncAction::Enable => c.enable += 1,
        SyncAction::Disable => c.disable += 1,
        SyncAction::Conflict => c.conflict += 1,
        SyncAction::Failed => c.failed += 1,
    }
}

/// What a plan reads besides the rows: the policy, the organisations
/// (by name, for the mapping) and the hash of the rules ([`plan_rules`]).
pub(crate) struct PlanInputs {
    pub policy: identity::Policy,
    pub all_orgs: Vec<bindery_store::OrganisationRow>,
    pub rules: String,
}

/// A staged entry as the rule takes it ([`decide`]).
pub(crate) struct RowFacts<'a> {
    pub external_id: &'a str,
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub dir_state: &'a str,
    /// The row's problem: one of the entry alone, or one the status
    /// computation found.
    pub problem: &'a str,
    pub groups: &'a [String],
}

/// The one rule over a staged entry, the user linked to it by its immutable
/// id and the user holding its name: the plan's decision for each row, and
/// a first sync's for each entry of a page (`first_load`).
pub(crate) fn decide(
    cfg: &bindery_directory::DirectoryConfig,
    policy: &identity::Policy,
    all_orgs: &[bindery_store::OrganisationRow],
    r: &RowFacts<'_>,
    linked: Option<&Held<'_>>,
    holder: Option<&Held<'_>>,
) -> Change {
    let mapped = crate::lifecycle::mapped_access(cfg, r.groups, all_orgs);
    let entry = Entry {
        external_id: r.external_id,
        username: r.username,
        username_key: &crate::util::username_key(r.username),
        name: r.name,
        email: r.email,
        state: crate::lifecycle::staged_state(r.dir_state),
        // A conflict is the rule's to find, not a bad entry.
        problem: if r.problem.starts_with("conflict:") { "" } else { r.problem },
    };
    identity::reconcile(Some(&entry), linked, holder, policy, mapped.as_ref())
}

impl Service {
    /// The policy, organisations and rules of a plan of `kind` under
    /// `settings`; `complete`: whether its enumeration was (disabling needs it).
    pub(crate) async fn plan_inputs(
        &self,
        kind: DirectoryKind,
        cfg: &bindery_directory::DirectoryConfig,
        settings: &SyncSettings,
        complete: bool,
    ) -> Result<PlanInputs> {
        let all_orgs = self.store.organisation_names().await?;
        let chosen: Vec<(i64, OrgSource)> = if settings.organisation_ids.is_empty() {
            self.store.default_organisation().await?.map(|o| (o.id, OrgSource::Default)).into_iter().collect()
        } else {
            settings.organisation_ids.iter().map(|o| (*o, OrgSource::Selection)).collect()
        };
        let policy = identity::Policy {
            source: kind.source(),
            disable: settings.disable_missing && complete,
            create: true,
            create_disabled: false,
            organisations: chosen,
            add_to_existing: vec![],
        };
        let rules = plan_rules(cfg, &policy, &all_orgs);
        Ok(PlanInputs { policy, all_orgs, rules })
    }

    /// Compute the plan over the snapshot with the one identity rule and
    /// record each change as a run item (the typed change, as JSON). Rows
    /// whose last plan needed nothing under the same key (the row, the
    /// rules, the linked user: [`bindery_store::Store::plan_rows`]) are not
    /// planned again. Under the last plan's rules, only the rows that can
    /// have changed since (unsettled) and the users that can have gone
    /// missing are read at all ([`bindery_store::Store::plan_rows_targeted`]):
    /// a delta run's plan costs what changed, not the size of the directory.
    /// Returns the counts and the rules' hash.
    pub(super) async fn plan(
        &self,
        kind: DirectoryKind,
        cfg: &bindery_directory::DirectoryConfig,
        id: i64,
        settings: &SyncSettings,
        complete: bool,
    ) -> Result<(SyncCounts, String)> {
        let dir = kind.as_str();
        let mut counts = SyncCounts { directory_users: self.store.count_staged(dir).await?, ..Default::default() };
        let PlanInputs { policy, all_orgs, rules } = self.plan_inputs(kind, cfg, settings, complete).await?;
        let with_mappings = !cfg.group_mappings.is_empty();
        let why_every_row = self.why_every_row(dir, &rules, counts.directory_users).await?;
        let targeted = why_every_row.is_none();
        if policy.disable {
            // Checks queued from now on are the next plan's.
            self.store.claim_missing_checks(dir).await?;
        }
        let mut read = 0;
        let mut after = 0;
        // Targeted: the candidates' last page has been read.
        let mut last_read = false;
        loop {
            let rows = match targeted {
                // Under the last plan's rules: only rows that can need it.
                true if last_read => break,
                true => {
                    let (rows, next) = self.store.plan_rows_targeted(dir, &rules, after, CHUNK).await?;
                    match next {
                        Some(next) => after = next,
                        None => last_read = true,
                    }
                    read += rows.len();
                    rows
                }
                false => {
                    let rows = self.store.plan_rows(dir, &rules, after, CHUNK).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.staged_id;
                    rows
                }
            };
            let user_ids: Vec<i64> = rows.iter().filter_map(|r| r.user_id).collect();
            let mut memberships: HashMap<i64, Vec<(i64, OrgSource)>> = HashMap::new();
            if with_mappings {
                for (user, org, source) in self.store.organisation_sources(&user_ids).await? {
                    memberships.entry(user).or_default().push((org, source));
                }
            }
            let none = Vec::new();
            let mut planned = Vec::new();
            let mut settled = Vec::new();
            // A change planned, not applied yet: read again by the next
            // plan. Rows read unsettled stay so (nothing but this run's own
            // apply settles a row while it holds the directory's lease): in
            // a first sync that is every row, and their unsettling wrote
            // nothing and cost 0.2 s on SQLite, 0.5 s on PostgreSQL.
            let mut pending = Vec::new();
            for r in &rows {
                let groups: Vec<String> = r.groups.lines().filter(|g| !g.is_empty()).map(str::to_string).collect();
                let user = plan_user(r);
                let held = user.as_ref().map(|u| Held { user: u, organisations: memberships.get(&u.id).unwrap_or(&none) });
                // Linked by the immutable id, or only holding the name.
                let (linked, holder) = match &held {
                    Some(h) if h.user.external_id.as_deref() == Some(r.external_id.as_str()) => (Some(h), None),
                    Some(h) => (None, Some(h)),
                    None => (None, None),
                };
                let facts = RowFacts {
                    external_id: &r.external_id,
                    username: &r.username,
                    name: &r.name,
                    email: &r.email,
                    dir_state: &r.dir_state,
                    problem: &r.problem,
                    groups: &groups,
                };
                let change = decide(cfg, &policy, &all_orgs, &facts, linked, holder);
                if matches!(change, Change::Nothing { .. }) {
                    settled.push((r.staged_id, r.plan_key.as_str()));
                    continue;
                }
                if r.settled != 0 {
                    pending.push(r.staged_id);
                }
                let name = if r.username.is_empty() { r.external_id.clone() } else { r.username.clone() };
                planned.push((name, r.user_id, Some(r.staged_id), change));
            }
            self.record_plan(id, &mut counts, planned).await?;
            self.store.settle_plan(&rules, &settled).await?;
            if !targeted {
                // A targeted plan read only unsettled rows: they still are.
                self.store.unsettle(&pending).await?;
            }
        }
        if policy.disable {
            let source = kind.source().as_str();
            let mut pending = Vec::new();
            let mut after = 0;
            loop {
                let users = match targeted {
                    true if after > 0 => break,
                    true => self.store.missing_users_targeted(dir, source).await?,
                    false => self.store.missing_users(dir, source, after, CHUNK).await?,
                };
                let Some(last) = users.last() else { break };
                after = last.id;
                for users in users.chunks(CHUNK as usize) {
                    let mut planned = Vec::new();
                    // (One deleted since it was found missing is not among them.)
                    let ids: Vec<i64> = users.iter().map(|m| m.id).collect();
                    for u in self.store.get_users(&ids).await? {
                        let change = identity::reconcile(None, Some(&Held { user: &u, organisations: &[] }), None, &policy, None);
                        if !matches!(change, Change::Nothing { .. }) {
                            pending.push(u.id);
                            planned.push((u.username.clone(), Some(u.id), None, change));
                        }
                    }
                    self.record_plan(id, &mut counts, planned).await?;
                }
            }
            self.store.reset_missing_checks(dir, &pending).await?;
        }
        self.store.put_plan_rules(dir, &rules).await?;
        counts.notes.push(match why_every_row {
            None => format!(
                "plan: {read} of {} rows planned again, only those that changed, whose Bindery user changed, or whose change was pending",
                counts.directory_users
            ),
            Some(why) => format!("plan: every row compared ({why})"),
        });
        Ok((counts, rules))
    }

    /// Why this plan must compare every row, or `None` when it may read only
    /// what can have changed since the last one: the rules are the same, and
    /// the unsettled rows are at most a quarter of the snapshot (after a
    /// first enumeration every row is new, and one pass over the snapshot is
    /// cheaper).
    async fn why_every_row(&self, dir: &str, rules: &str, staged: i64) -> Result<Option<&'static str>> {
        let Some(last) = self.store.plan_rules(dir).await? else {
            return Ok(Some("the first plan of this snapshot"));
        };
        if last != rules {
            return Ok(Some("the mapping, attribute map or policy changed since the last plan"));
        }
        if self.store.count_unsettled(dir).await? * 4 > staged.max(CHUNK) {
            return Ok(Some("more than a quarter of the rows changed since the last plan"));
        }
        Ok(None)
    }

    /// Count and record planned changes as the run's items.
    async fn record_plan(&self, id: i64, counts: &mut SyncCounts, planned: Vec<(String, Option<i64>, Option<i64>, Change)>) -> Result<()> {
        let mut items = Vec::with_capacity(planned.len());
        let reasons: Vec<String> = planned.iter().map(|p| p.3.reason()).collect();
        for ((name, user_id, staged_id, change), reason) in planned.iter().zip(&reasons) {
            let action = action_of(change);
            count(counts, action);
            let applies = matches!(change, Change::Create { .. } | Change::Update { .. });
            items.push(NewItem {
                action,
                username: name,
                user_id: *user_id,
                staged_id: *staged_id,
                reason,
                outcome: if applies { ItemOutcome::Planned } else { ItemOutcome::Failed },
                change_json: if applies {
                    serde_json::to_string(change).map_err(|e| Error::Internal(e.to_string()))?
                } else {
                    String::new()
                },
            });
        }
        self.store.insert_items(id, &items).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_holds_only_above_the_share() {
        assert!(!over_threshold(10, 100, 10));
        assert!(over_threshold(11, 100, 10));
        assert!(!over_threshold(0, 0, 0));
        assert!(over_threshold(1, 0, 10), "disabling users of an empty directory is held");
        assert!(over_threshold(1, 1000, 0), "threshold 0 holds every disable");
    }
}
