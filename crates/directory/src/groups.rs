//! A user's groups at enumeration, computed the way sign-in computes them
//! ([`crate::authn::groups_of`]): the configured mode (the user's group
//! attribute, or the groups whose member attribute names the user), nested
//! or not, the same depth limit. Sign-in asks the directory per user; an
//! enumeration of 100,000 users reads the groups' side once per run instead.
//!
//! Search mode reads every group under the group bases once, with the
//! attributes the group filter compares with `{0}` (the user's DN) and `{1}`
//! (the username), and answers membership from that index. Attribute mode
//! with nesting reads each distinct group's own group attribute once per run.

use std::collections::{BTreeSet, HashMap};

use bindery_model::GroupMode;
use ldap3::{Ldap, Scope, SearchEntry};

use crate::probe::{all, MAX_PAGES};
use crate::{dn, DirectoryConfig, Failure};

/// How deep nesting is followed (as at sign-in).
pub const MAX_DEPTH: usize = 8;

/// The attributes a group filter compares with the user's DN (`{0}`) and
/// with the username (`{1}`): `(|(member={0})(memberUid={1}))` →
/// (`[member]`, `[memberUid]`). A matching rule (`member:1.2.840.113556.1.4.1941:={0}`)
/// is dropped: the index follows nesting itself.
pub fn member_attributes(filter: &str) -> (Vec<String>, Vec<String>) {
    let (mut by_dn, mut by_name) = (Vec::new(), Vec::new());
    for (placeholder, out) in [("{0}", &mut by_dn), ("{1}", &mut by_name)] {
        let mut rest = filter;
        while let Some(at) = rest.find(placeholder) {
            let before = &rest[..at];
            if let Some(eq) = before.strip_suffix('=') {
                let start = eq.rfind('(').map(|i| i + 1).unwrap_or(0);
                let attr = eq[start..].split(':').next().unwrap_or("").trim();
                if !attr.is_empty() && !out.iter().any(|a: &String| a.eq_ignore_ascii_case(attr)) {
                    out.push(attr.to_string());
                }
            }
            rest = &rest[at + placeholder.len()..];
        }
    }
    (by_dn, by_name)
}

/// The groups' side of one enumeration run.
#[derive(Debug, Default)]
pub struct GroupIndex {
    /// Search mode: a member value (normalised DN, or lower-cased
    /// username) → the groups listing it.
    members: HashMap<String, Vec<String>>,
    /// Attribute mode with nesting: a group (normalised DN) → the groups it
    /// is in, read once per run.
    parents: HashMap<String, Vec<String>>,
}

impl GroupIndex {
    /// Whether the enumeration must do anything beyond reading the user's
    /// group attribute.
    pub fn needed(cfg: &DirectoryConfig) -> bool {
        cfg.group_mode == GroupMode::Search || cfg.nested_groups
    }

    /// Read the groups' side once (search mode); nothing in attribute mode.
    pub async fn load(ldap: &mut Ldap, cfg: &DirectoryConfig) -> Result<GroupIndex, Failure> {
        let mut index = GroupIndex::default();
        if cfg.group_mode != GroupMode::Search {
            return Ok(index);
        }
        let (by_dn, by_name) = member_attributes(&cfg.group_filter);
        let filter = cfg.group_filter.replace("{0}", "*").replace("{1}", "*");
        let attrs: Vec<String> = by_dn.iter().chain(&by_name).cloned().collect();
        let bases = if cfg.group_base.is_empty() { &cfg.search_ous } else { &cfg.group_base };
        for base in bases {
            let mut cookie: Vec<u8> = Vec::new();
            let mut last_page: Option<u64> = None;
            let mut finished = false;
            for page in 0..MAX_PAGES {
                let what = format!("group search of {base} (page {})", page + 1);
                let (raw, next) = crate::search_page(ldap, cfg, base, &filter, &attrs, &cookie, &what).await?;
                let entries: Vec<SearchEntry> = raw.into_iter().map(SearchEntry::construct).collect();
                let this_page = crate::page_fingerprint(entries.iter().map(|e| e.dn.as_str()));
                for e in entries {
                    for a in &by_dn {
                        for v in all(&e, a) {
                            index.members.entry(dn::normalize(v)).or_default().push(e.dn.clone());
                        }
                    }
                    for a in &by_name {
                        for v in all(&e, a) {
                            index.members.entry(v.to_lowercase()).or_default().push(e.dn.clone());
                        }
                    }
                }
                match next {
                    Some(c) if !c.is_empty() && (c != cookie || last_page != Some(this_page)) => {
                        cookie = c;
                        last_page = Some(this_page);
                    }
                    Some(c) if !c.is_empty() => {
                        return Err(Failure::answer("group search did not advance (the server repeated its cookie): groups incomplete"))
                    }
                    _ => {
                        finished = true;
                        break;
                    }
                }
            }
            if !finished {
                return Err(Failure::answer(format!("group search still not finished after {MAX_PAGES} pages: groups incomplete")));
            }
        }
        Ok(index)
    }

    /// A user's direct groups: the group attribute's values (attribute
    /// mode), or the groups listing their DN or username (search mode).
    fn direct(&self, cfg: &DirectoryConfig, user_dn: &str, username: &str, attribute: &[String]) -> Vec<String> {
        match cfg.group_mode {
            GroupMode::Attribute => attribute.to_vec(),
            GroupMode::Search => {
                let mut out: Vec<String> = self.members.get(&dn::normalize(user_dn)).cloned().unwrap_or_default();
                if !username.is_empty() {
                    out.extend(self.members.get(&username.to_lowercase()).cloned().unwrap_or_default());
                }
                out
            }
        }
    }

    /// The groups `group` is directly in.
    fn parents_of(&self, cfg: &DirectoryConfig, group: &str) -> Vec<String> {
        match cfg.group_mode {
            GroupMode::Search => self.members.get(&dn::normalize(group)).cloned().unwrap_or_default(),
            GroupMode::Attribute => self.parents.get(&dn::normalize(group)).cloned().unwrap_or_default(),
        }
    }

    /// Attribute mode with nesting: read the groups of every group reachable
    /// from `direct` not read yet this run (one base search each).
    async fn fetch_parents(&mut self, ldap: &mut Ldap, cfg: &DirectoryConfig, direct: &[String]) -> Result<(), Failure> {
        if cfg.group_mode != GroupMode::Attribute || !cfg.nested_groups {
            return Ok(());
        }
        let attr = cfg.attr_map.groups.clone().unwrap_or_else(|| "memberOf".into());
        let mut frontier: Vec<String> = direct.to_vec();
        for _ in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for g in frontier.drain(..) {
                let key = dn::normalize(&g);
                if let Some(p) = self.parents.get(&key) {
                    next.extend(p.iter().cloned());
                    continue;
                }
                let r = ldap
                    .with_timeout(cfg.op_timeout)
                    .search(&g, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                    .await
                    .map_err(|e| Failure::from_ldap(e, "nested group lookup", cfg.op_timeout))?;
                let parents: Vec<String> = if r.1.rc == 32 {
                    vec![]
                } else {
                    r.0.into_iter()
                        .filter(|e| !e.is_ref() && !e.is_intermediate())
                        .flat_map(|e| all(&SearchEntry::construct(e), &attr).into_iter().map(str::to_string).collect::<Vec<_>>())
                        .collect()
                };
                next.extend(parents.iter().cloned());
                self.parents.insert(key, parents);
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(())
    }

    /// A user's groups, direct and — when configured — nested, as sign-in
    /// computes them. Reads the directory only for groups not seen yet.
    pub async fn groups_of(
        &mut self,
        ldap: &mut Ldap,
        cfg: &DirectoryConfig,
        user_dn: &str,
        username: &str,
        attribute: &[String],
    ) -> Result<Vec<String>, Failure> {
        let direct = self.direct(cfg, user_dn, username, attribute);
        self.fetch_parents(ldap, cfg, &direct).await?;
        Ok(self.close(cfg, direct))
    }

    /// The closure of `direct` over the known parents (the same walk as
    /// [`crate::authn::groups_of`]: each group once, at most [`MAX_DEPTH`] levels).
    fn close(&self, cfg: &DirectoryConfig, direct: Vec<String>) -> Vec<String> {
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier = direct;
        for depth in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for g in frontier.drain(..) {
                if seen.insert(dn::normalize(&g)) {
                    groups.insert(g.clone());
                    if cfg.nested_groups {
                        next.push(g);
                    }
                }
            }
            if !cfg.nested_groups || next.is_empty() || depth == MAX_DEPTH - 1 {
                break;
            }
            for g in next {
                frontier.extend(self.parents_of(cfg, &g));
            }
        }
        groups.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_attributes_come_from_the_filter() {
        assert_eq!(member_attributes("(member={0})"), (vec!["member".to_string()], vec![]));
        assert_eq!(
            member_attributes("(|(member={0})(uniqueMember={0})(memberUid={1}))"),
            (vec!["member".to_string(), "uniqueMember".to_string()], vec!["memberUid".to_string()])
        );
        assert_eq!(member_attributes("(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={0}))").0, vec!["member".to_string()]);
    }
}
