//! Finding a user and binding as them.
//!
//! The user search must match exactly one entry inside the configured
//! search OUs (zero or several → refused). An empty or whitespace-only
//! password is refused before any bind: a simple bind with an empty password
//! is an *unauthenticated* bind that "succeeds" (RFC 4513 §5.1.2).

use std::collections::BTreeSet;
use std::time::Instant;

use bindery_model::{AccountState, GroupMode, LoginTestReport, MappedUser, ProbeStep, Role};
use ldap3::{Ldap, Scope, SearchEntry, SearchOptions};

use crate::probe::{all, first, map_entry};
use crate::{ad, conn, DirectoryConfig, Failure};

/// Operational attributes that reveal the account state.
pub(crate) const STATE_ATTRS: [&str; 5] = ["userAccountControl", "pwdAccountLockedTime", "pwdReset", "entryUUID", "objectGUID"];

/// A user found in the directory.
#[derive(Debug, Clone)]
pub struct FoundUser {
    pub dn: String,
    pub user: MappedUser,
    /// The entry's immutable id (`entryUUID`, AD `objectGUID`, else the DN).
    pub uid: String,
    /// Why the account cannot be used, if the entry says so.
    pub state: Option<AccountState>,
}

/// Search the user across the search OUs: exactly one entry must match.
pub async fn find_user(ldap: &mut Ldap, cfg: &DirectoryConfig, username: &str) -> Result<FoundUser, Failure> {
    match lookup_user(ldap, cfg, username).await? {
        Some(found) => Ok(found),
        None => Err(Failure::answer(format!("no entry matches {} in the search OUs", crate::user_filter(&cfg.search_filter, username)))),
    }
}

/// Like [`find_user`], but a search that matches nothing is `Ok(None)`
/// (the user is not, or no longer, in the directory).
pub async fn lookup_user(ldap: &mut Ldap, cfg: &DirectoryConfig, username: &str) -> Result<Option<FoundUser>, Failure> {
    let filter = crate::user_filter(&cfg.search_filter, username);
    let mut attrs = cfg.attr_map.attributes();
    attrs.extend(STATE_ATTRS.iter().map(|s| s.to_string()));
    let mut found: Vec<SearchEntry> = Vec::new();
    for ou in &cfg.search_ous {
        let r = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(cfg.op_timeout)
            .search(ou, Scope::Subtree, &filter, attrs.clone())
            .await
            .map_err(|e| Failure::from_ldap(e, "user search", cfg.op_timeout))?;
        let (entries, result) = (r.0, r.1);
        match result.rc {
            0 | 4 => {}
            32 => {
                return Err(Failure {
                    message: format!("no such object: {ou}"),
                    ldap_code: Some(32),
                    ad_subcode: None,
                    unreachable: false,
                    timed_out: false,
                })
            }
            _ => {
                crate::check(result, "user search")?;
            }
        }
        for e in entries.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()) {
            let e = SearchEntry::construct(e);
            if !found.iter().any(|f| f.dn.eq_ignore_ascii_case(&e.dn)) {
                found.push(e);
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => {
            let e = found.remove(0);
            let user = map_entry(&e, &cfg.attr_map);
            let state = entry_state(&e, &user);
            let uid = crate::enumerate::uid_of(&e);
            Ok(Some(FoundUser { dn: e.dn, user, uid, state }))
        }
        n => Err(Failure::answer(format!("{n} or more entries match {filter}; a login must match exactly one"))),
    }
}

pub(crate) fn entry_state(e: &SearchEntry, user: &MappedUser) -> Option<AccountState> {
    if let Some(uac) = first(e, "userAccountControl").and_then(|v| v.trim().parse::<i64>().ok()) {
        if let Some(s) = ad::uac_state(uac) {
            return Some(s);
        }
    }
    if first(e, "pwdAccountLockedTime").is_some() {
        return Some(AccountState::Locked);
    }
    if !user.is_active {
        return Some(AccountState::Disabled);
    }
    if first(e, "pwdReset").is_some_and(|v| v.eq_ignore_ascii_case("TRUE")) {
        return Some(AccountState::MustChangePassword);
    }
    None
}

/// Bind as `dn` with `password` on a connection of its own.
pub async fn bind_user(ldap: &mut Ldap, cfg: &DirectoryConfig, dn: &str, password: &str) -> Result<(), Failure> {
    if password.trim().is_empty() {
        return Err(Failure::answer("refused before any bind: empty password"));
    }
    let r = ldap
        .with_timeout(cfg.op_timeout)
        .simple_bind(dn, password)
        .await
        .map_err(|e| Failure::from_ldap(e, "user bind", cfg.op_timeout))?;
    crate::check(r, "user bind").map(|_| ())
}

/// The user's groups (DNs), direct and — when configured — nested.
pub async fn groups_of(ldap: &mut Ldap, cfg: &DirectoryConfig, found: &FoundUser) -> Result<Vec<String>, Failure> {
    let mut groups: BTreeSet<String> = BTreeSet::new();
    let mut frontier: Vec<String> = match cfg.group_mode {
        GroupMode::Attribute => found.user.groups.clone(),
        GroupMode::Search => search_groups(ldap, cfg, &found.dn, &found.user.username).await?,
    };
    for depth in 0..8 {
        let mut next = Vec::new();
        for g in frontier.drain(..) {
            if groups.insert(g.clone()) && cfg.nested_groups {
                next.push(g);
            }
        }
        if !cfg.nested_groups || next.is_empty() || depth == 7 {
            break;
        }
        for g in next {
            let parents = match cfg.group_mode {
                GroupMode::Attribute => {
                    let attr = cfg.attr_map.groups.clone().unwrap_or_else(|| "memberOf".into());
                    let r = ldap
                        .with_timeout(cfg.op_timeout)
                        .search(&g, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                        .await
                        .map_err(|e| Failure::from_ldap(e, "nested group lookup", cfg.op_timeout))?;
                    r.0.into_iter()
                        .filter(|e| !e.is_ref() && !e.is_intermediate())
                        .flat_map(|e| all(&SearchEntry::construct(e), &attr).into_iter().map(str::to_string).collect::<Vec<_>>())
                        .collect()
                }
                GroupMode::Search => search_groups(ldap, cfg, &g, "").await?,
            };
            frontier.extend(parents);
        }
    }
    Ok(groups.into_iter().collect())
}

async fn search_groups(ldap: &mut Ldap, cfg: &DirectoryConfig, dn: &str, username: &str) -> Result<Vec<String>, Failure> {
    let filter = cfg.group_filter.replace("{0}", &ldap3::ldap_escape(dn)).replace("{1}", &ldap3::ldap_escape(username));
    let bases = if cfg.group_base.is_empty() { &cfg.search_ous } else { &cfg.group_base };
    let mut out = Vec::new();
    for base in bases {
        let r = ldap
            .with_timeout(cfg.op_timeout)
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| Failure::from_ldap(e, "group search", cfg.op_timeout))?;
        crate::check(r.1, "group search")?;
        out.extend(r.0.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).map(|e| SearchEntry::construct(e).dn));
    }
    Ok(out)
}

fn push(steps: &mut Vec<ProbeStep>, name: &str, started: Instant, r: Result<String, &Failure>) {
    let millis = started.elapsed().as_millis() as i64;
    steps.push(match r {
        Ok(detail) => ProbeStep { step: name.into(), ok: true, millis, detail, ldap_code: None },
        Err(f) => ProbeStep { step: name.into(), ok: false, millis, detail: f.message.clone(), ldap_code: f.ldap_code.map(i64::from) },
    });
}

/// "Test login": find the user, bind as them (unless `password` is `None`:
/// lookup only), and report every fact. Touches no lockout counter.
pub async fn test_login(cfg: &DirectoryConfig, username: &str, password: Option<&str>) -> LoginTestReport {
    let mut report = LoginTestReport {
        allowed: false,
        verdict: String::new(),
        server: None,
        dn: None,
        bind: "not checked (lookup only)".into(),
        ldap_code: None,
        ad_subcode: None,
        account_state: AccountState::Unknown,
        user: None,
        local_user: None,
        mapped_role: None,
        mapped_organisations: vec![],
        steps: vec![],
        external_id: None,
        facts: vec![],
    };
    if username.trim().is_empty() {
        report.verdict = "Enter a username.".into();
        return report;
    }
    // The first server that answers is used (the others are fallbacks).
    let mut connected = None;
    for server in &cfg.servers {
        let t = Instant::now();
        match conn::connect(server, cfg).await {
            Ok((mut ldap, _)) => {
                push(&mut report.steps, "connect", t, Ok(format!("connected to {server}")));
                let t = Instant::now();
                match conn::service_bind(&mut ldap, cfg).await {
                    Ok(()) => {
                        push(&mut report.steps, "bind", t, Ok(format!("bound as {}", cfg.bind_dn)));
                        connected = Some((server.clone(), ldap));
                        break;
                    }
                    Err(f) => {
                        push(&mut report.steps, "bind", t, Err(&f));
                        report.verdict = format!("The service account cannot bind: {}", f.message);
                        return report;
                    }
                }
            }
            Err((_, f, _)) => push(&mut report.steps, "connect", t, Err(&f)),
        }
    }
    let Some((server, mut ldap)) = connected else {
        report.verdict = "No directory server could be reached.".into();
        return report;
    };
    report.server = Some(server.to_string());

    let t = Instant::now();
    let found = match find_user(&mut ldap, cfg, username).await {
        Ok(f) => {
            push(&mut report.steps, "lookup", t, Ok(format!("found {}", f.dn)));
            f
        }
        Err(f) => {
            push(&mut report.steps, "lookup", t, Err(&f));
            report.verdict = format!("Refused: {}.", f.message);
            report.ldap_code = f.ldap_code.map(i64::from);
            let _ = ldap.unbind().await;
            return report;
        }
    };
    report.dn = Some(found.dn.clone());
    report.external_id = Some(found.uid.clone());
    report.account_state = found.state.unwrap_or(AccountState::Active);

    let t = Instant::now();
    let mut user = found.user.clone();
    match groups_of(&mut ldap, cfg, &found).await {
        Ok(g) => {
            push(&mut report.steps, "groups", t, Ok(format!("{} group(s)", g.len())));
            user.groups = g;
        }
        Err(f) => push(&mut report.steps, "groups", t, Err(&f)),
    }
    let _ = ldap.unbind().await;
    if let Some((role, orgs)) = apply_mappings(cfg, &user.groups) {
        report.mapped_role = Some(role);
        report.mapped_organisations = orgs;
    }
    report.local_user = (!user.username.is_empty()).then(|| user.username.clone());
    report.user = Some(user);

    let mut bind_ok = password.is_none();
    if let Some(pw) = password {
        // A connection of its own: the service connection stays the service's.
        let t = Instant::now();
        let result = match conn::connect(&server, cfg).await {
            Ok((mut l, _)) => {
                let r = bind_user(&mut l, cfg, &found.dn, pw).await;
                let _ = l.unbind().await;
                r
            }
            Err((_, f, _)) => Err(f),
        };
        match result {
            Ok(()) => {
                push(&mut report.steps, "user_bind", t, Ok("password accepted".into()));
                report.bind = "ok".into();
                bind_ok = true;
            }
            Err(f) => {
                push(&mut report.steps, "user_bind", t, Err(&f));
                report.bind = f.message.clone();
                report.ldap_code = f.ldap_code.map(i64::from);
                report.ad_subcode = f.ad_subcode.clone();
                if let Some(s) = f.ad_subcode.as_deref().and_then(ad::subcode_state) {
                    report.account_state = s;
                }
            }
        }
    }
    let state_ok = report.account_state.usable();
    report.allowed = bind_ok && state_ok && password.is_some() && report.local_user.is_some();
    report.verdict = match (password.is_some(), bind_ok, state_ok) {
        (_, _, false) => format!("Would be refused: {}.", report.account_state.describe()),
        (false, _, true) => format!("The user resolves to {} (lookup only, password not checked).", found.dn),
        (true, false, true) => format!("Would be refused: {}.", report.bind),
        (true, true, true) if report.local_user.is_none() => {
            "Would be refused: the entry has no value for the mapped username attribute.".into()
        }
        (true, true, true) => format!("Would be let in as local user {}.", report.local_user.clone().unwrap_or_default()),
    };
    if report.allowed {
        report.verdict.push_str(&match &report.mapped_role {
            Some(role) => format!(
                " Group mapping: role {}, organisations {}.",
                role.label(),
                if report.mapped_organisations.is_empty() { "(default)".to_string() } else { report.mapped_organisations.join(", ") }
            ),
            None => " No group mapping matches: role User, default organisation.".to_string(),
        });
    }
    report
}

/// Why a directory login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginError {
    pub failure: Failure,
    /// The account state that refused the login (`disabled`, `locked`, …), if known.
    pub state: Option<AccountState>,
    /// The directory refused *this person*: their password (a refused
    /// bind), or their account (no such user, a disabled, locked or
    /// expired account). Only these count toward Bindery's lockout; a
    /// directory that cannot be reached, times out, answers with a server
    /// error or refuses the service account is nobody's wrong guess.
    pub refused: bool,
}

impl LoginError {
    /// The directory refused the person (see [`LoginError::refused`]).
    pub fn refusal(failure: Failure, state: Option<AccountState>) -> LoginError {
        LoginError { failure, state, refused: true }
    }

    /// A user bind that failed: a refusal when the server answered with a
    /// result code that refuses the credentials or the account.
    pub fn of_bind(failure: Failure) -> LoginError {
        let refused = !failure.unreachable && failure.ldap_code.is_some_and(refuses_credentials);
        LoginError { refused, ..LoginError::from(failure) }
    }
}

impl From<Failure> for LoginError {
    /// Not a refusal of the person (unless [`LoginError::refusal`] or
    /// [`LoginError::of_bind`] says so).
    fn from(failure: Failure) -> Self {
        let state = failure.ad_subcode.as_deref().and_then(ad::subcode_state);
        LoginError { failure, state, refused: false }
    }
}

/// Whether a bind's result code refuses the person's credentials or
/// account, rather than saying the server (or its configuration) failed.
/// RFC 4511 Appendix A: 49 invalid credentials (AD sub-codes 525, 52e, 530,
/// 531, 532, 533, 701, 773, 775 all come with it), 48 inappropriate
/// authentication, 19 constraint violation and 50/53 (389-ds and others
/// refuse locked or inactivated accounts so). Everything else — 1
/// operations error, 3 time limit, 11 admin limit, 51 busy, 52 unavailable,
/// 80 other, 7/8/13 (the server wants another way to bind: configuration)
/// — is the directory's problem, never the person's.
pub fn refuses_credentials(rc: u32) -> bool {
    matches!(rc, 19 | 48 | 49 | 50 | 53)
}

fn role_rank(r: Role) -> u8 {
    match r {
        Role::Admin => 3,
        Role::Auditor => 2,
        Role::User => 1,
    }
}

/// The role (the highest of all matching mappings) and organisations (all
/// of them) that the group mapping gives these groups; `None` when no
/// mapping matches. DNs are compared normalised.
pub fn apply_mappings(cfg: &DirectoryConfig, groups: &[String]) -> Option<(Role, Vec<String>)> {
    let mine: BTreeSet<String> = groups.iter().map(|g| crate::dn::normalize(g)).collect();
    let mut role: Option<Role> = None;
    let mut orgs: Vec<String> = Vec::new();
    for m in cfg.group_mappings.iter().filter(|m| mine.contains(&crate::dn::normalize(&m.group_dn))) {
        if role.is_none_or(|r| role_rank(m.role) > role_rank(r)) {
            role = Some(m.role);
        }
        for o in &m.organisations {
            if !orgs.iter().any(|x| x.eq_ignore_ascii_case(o)) {
                orgs.push(o.clone());
            }
        }
    }
    role.map(|r| (r, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_failure(rc: u32, text: &str) -> Failure {
        let result = ldap3::LdapResult { rc, matched: String::new(), text: text.into(), refs: vec![], ctrls: vec![] };
        Failure::from_ldap(ldap3::LdapError::LdapResult { result }, "user bind", std::time::Duration::from_secs(5))
    }

    /// Only a refused password or account is the person's failure: an
    /// outage, a timeout or a server error must lock nobody out.
    #[test]
    fn a_bind_refusal_is_the_persons_and_a_server_error_is_not() {
        let refused = LoginError::of_bind(bind_failure(49, ""));
        assert!(refused.refused);
        let ad = LoginError::of_bind(bind_failure(
            49,
            "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v4563",
        ));
        assert!(ad.refused && ad.state == Some(AccountState::Disabled), "{ad:?}");
        for rc in [1, 3, 11, 13, 51, 52, 80] {
            assert!(!LoginError::of_bind(bind_failure(rc, "")).refused, "rc {rc} is the server's");
        }
        assert!(!LoginError::of_bind(Failure::unreachable("connection refused")).refused);
        assert!(!LoginError::of_bind(Failure::timeout("user bind: no answer within 5 s")).refused);
        assert!(!LoginError::from(Failure::answer("service account: invalid credentials (LDAP 49)")).refused);
        assert!(LoginError::refusal(Failure::answer("no entry matches (uid=x)"), None).refused);
    }
}
