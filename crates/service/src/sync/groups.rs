//! Directory groups: rebuilt from the snapshot's memberships after a
//! complete sync.

use bindery_model::{DirectoryKind, RunState, SyncCounts};

use super::CHUNK;
use crate::util::now_ms;
use crate::{Result, Service};

/// A group's display name: the value of its DN's first RDN (`cn=developers,…` → `developers`).
fn group_name(dn: &str) -> String {
    // The first RDN's value, honouring `\,`-style escapes.
    let mut value = String::new();
    let mut in_value = false;
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if in_value {
                        value.push(n);
                    }
                }
            }
            ',' | '+' => break,
            '=' if !in_value => in_value = true,
            c if in_value => value.push(c),
            _ => {}
        }
    }
    let v = value.trim();
    if v.is_empty() {
        dn.to_string()
    } else {
        v.to_string()
    }
}

impl Service {
    /// Whether the directory groups were rebuilt from the snapshot as it
    /// stood before run `id`: the run before it was a complete sync that
    /// was applied (a dry run, a held or rejected run, or a fetch for the
    /// import table changes the snapshot without rebuilding them).
    pub(super) async fn groups_current(&self, kind: DirectoryKind, id: i64) -> Result<bool> {
        Ok(self
            .store
            .previous_run(kind.as_str(), id)
            .await?
            .is_some_and(|r| r.kind.is_sync() && r.state == RunState::Done && r.complete.0 && !r.dry_run.0))
    }

    /// Directory groups become Bindery groups (source ldap / ldap_ha) whose
    /// members are exactly the synced users the directory lists in them.
    pub(super) async fn sync_groups(&self, kind: DirectoryKind, counts: &mut SyncCounts) -> Result<()> {
        use std::collections::BTreeMap;
        let source = kind.source().as_str();
        let mut members: BTreeMap<String, (String, Vec<i64>)> = BTreeMap::new();
        let mut after = 0;
        loop {
            let rows = self.store.staged_memberships(kind.as_str(), after, CHUNK * 5).await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            // A short page is the last: another read would walk the rest of
            // the snapshot for nothing (6 ms at 100,000 rows).
            let more = rows.len() as i64 == CHUNK * 5;
            for (_, user_id, groups) in rows {
                for dn in groups.lines().filter(|g| !g.is_empty()) {
                    let key = bindery_directory::dn::normalize(dn);
                    members.entry(key).or_insert_with(|| (dn.to_string(), Vec::new())).1.push(user_id);
                }
            }
            if !more {
                break;
            }
        }
        let existing = self.store.directory_groups(source).await?;
        let (mut created, mut updated) = (0, 0);
        let now = now_ms();
        for (key, (dn, mut ids)) in members.iter().map(|(k, v)| (k.clone(), v.clone())) {
            ids.sort_unstable();
            ids.dedup();
            let id = match existing.iter().find(|(_, d)| bindery_directory::dn::normalize(d) == key) {
                Some((id, _)) => {
                    updated += 1;
                    *id
                }
                None => {
                    created += 1;
                    self.store.create_directory_group(&group_name(&dn), source, &dn, now).await?
                }
            };
            self.store.replace_group_members(id, &ids).await?;
        }
        // Groups the directory no longer lists for anybody are emptied (kept, with their name).
        for (id, dn) in &existing {
            if !members.contains_key(&bindery_directory::dn::normalize(dn)) {
                self.store.replace_group_members(*id, &[]).await?;
            }
        }
        if created + updated > 0 {
            counts.notes.push(format!("directory groups: {created} created, {updated} updated"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_honour_escapes() {
        assert_eq!(group_name("cn=Smith\\, J,ou=groups,dc=x"), "Smith, J");
    }
}
