//! One identity lifecycle: what a directory entry means for a Bindery user
//! ([`reconcile`]), and whether a person may sign in ([`access_verdict`]).
//!
//! Both are pure: no I/O, the same inputs always give the same answer.
//! First sign-in, re-validation of live sessions, import and sync call
//! [`reconcile`] and only it, and hand its [`Change`] to the store; sign-in,
//! *Test login* and *Explain access* read their words from [`access_verdict`]
//! alone, so the console never promises one thing and does another.
//!
//! The group mapping is authoritative where a directory has mappings: the
//! role is the highest mapped role, or User when no mapping matches (unless
//! an administrator pinned the role), and the organisations a mapping gave
//! are taken back when it no longer applies (memberships from elsewhere are
//! kept). A username held by a user linked to another immutable id is a
//! conflict, never an inheritance.

use bindery_model::{AccountState, Role, UserSource};
use bindery_store::{Activation, Change, NewAccount, OrgSource, Update, UserRow};

/// A directory entry, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// `entryUUID`, AD `objectGUID` (hex), or `dn:` + the DN when the
    /// directory exposes neither.
    pub external_id: &'a str,
    pub username: &'a str,
    pub username_key: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub state: AccountState,
    /// Why the entry cannot be a Bindery user ("" when it can).
    pub problem: &'a str,
}

/// A Bindery user with its organisation memberships and their sources.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub user: &'a UserRow,
    pub organisations: &'a [(i64, OrgSource)],
}

/// What the group mapping gives an entry's groups. `None` (not this type)
/// when the directory has no mappings: the role and organisations are then
/// Bindery's to manage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    /// The highest mapped role; User when no mapping matches.
    pub role: Role,
    pub organisations: Vec<i64>,
    /// Whether any mapping matched (for the words).
    pub matched: bool,
}

/// What a path allows.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The source of users this directory creates.
    pub source: UserSource,
    /// A user disabled in, or missing from, the directory may be disabled
    /// (sync: the setting, and only after a complete enumeration; sign-in
    /// and re-validation: always).
    pub disable: bool,
    /// New users may be created (sign-in: unless only imported users may
    /// sign in; import and sync: yes).
    pub create: bool,
    /// An entry disabled in the directory is created too, disabled (import).
    pub create_disabled: bool,
    /// Organisations every new user gets. `Default` ones only when nothing
    /// else (the mapping, a selection) places the user.
    pub organisations: Vec<(i64, OrgSource)>,
    /// Organisations added to users that already exist (an import's selection).
    pub add_to_existing: Vec<(i64, OrgSource)>,
}

/// Whether an id is the directory's immutable id (not the `dn:` fallback).
pub fn is_immutable(external_id: &str) -> bool {
    !external_id.is_empty() && !external_id.starts_with("dn:")
}

/// What `entry` (or its absence) means for Bindery, given the user linked to
/// its immutable id (`linked`), the user holding its username (`holder`,
/// when that is another user or no user is linked), the path's policy, and
/// what the group mapping gives the entry's groups (`mapped`).
pub fn reconcile(
    entry: Option<&Entry<'_>>,
    linked: Option<&Held<'_>>,
    holder: Option<&Held<'_>>,
    policy: &Policy,
    mapped: Option<&Mapped>,
) -> Change {
    let Some(e) = entry else {
        return match linked {
            None => Change::Nothing { reason: "not in the directory".into() },
            Some(h) if !h.user.is_active => Change::Nothing { reason: "missing from the directory (already disabled)".into() },
            Some(h) if policy.disable => {
                let mut update = Update::new(h.user.id, &h.user.username);
                update.activation = Some(Activation::Disable);
                Change::Update { update, reasons: vec!["missing from the directory".into()] }
            }
            Some(_) => Change::Nothing { reason: "missing from the directory (disabling is off)".into() },
        };
    };
    if !e.problem.is_empty() {
        return Change::Refuse { reason: e.problem.to_string() };
    }
    let holder = holder.filter(|h| linked.is_none_or(|l| l.user.id != h.user.id));
    let target = match (linked, holder) {
        (Some(l), Some(h)) => {
            return Change::Conflict {
                user_id: h.user.id,
                reason: format!(
                    "renamed in the directory from {} to {}, a name another Bindery user ({}) already has",
                    l.user.username, e.username, h.user.username
                ),
            }
        }
        (Some(l), None) => l,
        (None, Some(h)) if h.user.is_local() => {
            return Change::Refuse { reason: "a local user has this name (a name never works both ways)".into() }
        }
        (None, Some(h)) => match h.user.external_id.as_deref() {
            Some(id) if is_immutable(id) && is_immutable(e.external_id) && id != e.external_id => {
                return Change::Conflict {
                    user_id: h.user.id,
                    reason: format!(
                        "the username {} belongs to a Bindery user linked to another directory entry ({id}, this entry is {}): \
                         an administrator must relink, rename or delete that account",
                        h.user.username, e.external_id
                    ),
                }
            }
            // Never linked (or linked by DN only): linked on this first match.
            _ => h,
        },
        (None, None) => return create(e, policy, mapped),
    };
    update(e, target, policy, mapped)
}

fn create(e: &Entry<'_>, policy: &Policy, mapped: Option<&Mapped>) -> Change {
    if !policy.create {
        return Change::Refuse { reason: "not imported: only users already imported may sign in".into() };
    }
    let disabled = e.state == AccountState::Disabled;
    if disabled && !policy.create_disabled {
        return Change::Nothing { reason: "disabled in the directory and not in Bindery".into() };
    }
    let role = mapped.map(|m| m.role).unwrap_or_default();
    let mut organisations: Vec<(i64, OrgSource)> =
        mapped.map(|m| m.organisations.iter().map(|o| (*o, OrgSource::Mapping)).collect()).unwrap_or_default();
    let placed = !organisations.is_empty() || policy.organisations.iter().any(|(_, s)| *s != OrgSource::Default);
    for (org, source) in &policy.organisations {
        if (*source != OrgSource::Default || !placed) && !organisations.iter().any(|(o, _)| o == org) {
            organisations.push((*org, *source));
        }
    }
    let mut reason = String::from("new in the directory");
    if let Some(m) = mapped.filter(|m| m.matched) {
        reason.push_str(&format!("; role {} from the group mapping", m.role.label()));
    }
    if disabled {
        reason.push_str("; disabled in the directory, so created disabled");
    }
    Change::Create {
        account: NewAccount {
            username: e.username.to_string(),
            username_key: e.username_key.to_string(),
            name: e.name.to_string(),
            email: e.email.to_string(),
            external_id: e.external_id.to_string(),
            source: policy.source,
            role,
            active: !disabled,
            organisations,
        },
        reason,
    }
}

fn update(e: &Entry<'_>, t: &Held<'_>, policy: &Policy, mapped: Option<&Mapped>) -> Change {
    let u = t.user;
    let mut up = Update::new(u.id, &u.username);
    let mut reasons = Vec::new();
    if u.username != e.username {
        reasons.push(format!("renamed from {} to {}", u.username, e.username));
        up.rename = Some((e.username.to_string(), e.username_key.to_string()));
    }
    if u.name != e.name {
        reasons.push("name changed".to_string());
        up.name = Some(e.name.to_string());
    }
    if u.email != e.email {
        reasons.push("email changed".to_string());
        up.email = Some(e.email.to_string());
    }
    if u.external_id.as_deref() != Some(e.external_id) {
        reasons.push("linked to the directory's immutable id".to_string());
        up.external_id = Some(e.external_id.to_string());
    }
    if let Some(m) = mapped {
        if m.role != u.role && !u.role_pinned {
            reasons.push(if m.matched {
                format!("role {} → {} by the group mapping", u.role.label(), m.role.label())
            } else {
                format!("role {} → {}: no group mapping matches", u.role.label(), m.role.label())
            });
            up.role = Some((u.role, m.role));
        }
        for org in &m.organisations {
            if !t.organisations.iter().any(|(o, _)| o == org) {
                up.add_organisations.push((*org, OrgSource::Mapping));
            }
        }
        for (org, source) in t.organisations {
            if *source == OrgSource::Mapping && !m.organisations.contains(org) {
                up.remove_organisations.push(*org);
            }
        }
        if !up.add_organisations.is_empty() {
            reasons.push(format!("{} organisation(s) added by the group mapping", up.add_organisations.len()));
        }
        if !up.remove_organisations.is_empty() {
            reasons.push(format!("{} organisation(s) the group mapping no longer gives removed", up.remove_organisations.len()));
        }
    }
    let before = up.add_organisations.len();
    for (org, source) in &policy.add_to_existing {
        if !t.organisations.iter().any(|(o, _)| o == org) && !up.add_organisations.iter().any(|(o, _)| o == org) {
            up.add_organisations.push((*org, *source));
        }
    }
    if up.add_organisations.len() > before {
        reasons.push(format!("added to {} chosen organisation(s)", up.add_organisations.len() - before));
    }
    let dir_disabled = e.state == AccountState::Disabled;
    if dir_disabled && u.is_active && policy.disable {
        reasons.push("disabled in the directory".to_string());
        up.activation = Some(Activation::Disable);
    } else if !dir_disabled && !u.is_active && u.dir_disabled {
        reasons.push("active in the directory again".to_string());
        up.activation = Some(Activation::Enable);
    }
    if up.is_empty() {
        return Change::Nothing { reason: "unchanged".into() };
    }
    Change::Update { update: up, reasons }
}

// ----- the access verdict ----------------------------------------------------

/// One fact that decides access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub label: &'static str,
    pub value: String,
    /// `Some(false)` refuses; `None` is information.
    pub ok: Option<bool>,
}

/// The ordered facts and the first that refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub facts: Vec<Fact>,
}

impl Verdict {
    pub fn refusal(&self) -> Option<&Fact> {
        self.facts.iter().find(|f| f.ok == Some(false))
    }

    pub fn allowed(&self) -> bool {
        self.refusal().is_none()
    }

    /// The verdict in one sentence.
    pub fn sentence(&self, username: &str) -> String {
        match self.refusal() {
            None => format!("{username} can sign in."),
            Some(f) => format!("{username} cannot sign in — {}: {}.", f.label, f.value),
        }
    }

    /// The refusal as a login-log reason.
    pub fn reason(&self) -> String {
        self.refusal().map(|f| format!("{}: {}", f.label, f.value)).unwrap_or_default()
    }
}

/// What is known about the Bindery side of an account.
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    /// The Bindery user the person signs in as (after reconciling).
    User(&'a UserRow),
    /// None yet: created at first sign-in.
    WouldCreate,
}

/// What the directory said.
#[derive(Debug, Clone)]
pub enum Directory<'a> {
    /// Not involved (local users).
    NotUsed,
    /// No directory configuration is enabled (or it is invalid).
    NotEnabled,
    /// Every server unreachable.
    Unreachable(&'a str),
    /// A server answered with an error other than a refusal of the person.
    Error(&'a str),
    /// A server answered: which one, and the entry found (`None`: no entry).
    Answered { server: &'a str, dn: Option<&'a str> },
}

/// The password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password<'a> {
    /// Lookup only (Explain access, Test login's lookup).
    NotChecked,
    Accepted,
    Refused(&'a str),
    /// A local user's password (Argon2id), checked elsewhere.
    Local {
        set: bool,
    },
}

/// Every input of the verdict, in the order a person reads them.
#[derive(Debug, Clone)]
pub struct AccessFacts<'a> {
    pub account: Option<Account<'a>>,
    /// `Some(true)`: locked out in Bindery.
    pub locked: Option<bool>,
    pub directory: Directory<'a>,
    pub state: Option<AccountState>,
    pub password: Password<'a>,
    /// The reconciliation of the entry: a conflict or a refusal refuses.
    pub identity: Option<&'a Change>,
    /// What the mapping gives, for the record (never refuses).
    pub mapped: Option<&'a Mapped>,
    pub role_pinned: bool,
}

fn fact(label: &'static str, value: impl Into<String>, ok: Option<bool>) -> Fact {
    Fact { label, value: value.into(), ok }
}

/// The one verdict on access: sign-in, *Test login* and *Explain access*
/// read it.
pub fn access_verdict(f: &AccessFacts<'_>) -> Verdict {
    let mut facts = Vec::new();
    match f.account {
        Some(Account::User(u)) if u.is_active => facts.push(fact("Bindery account", format!("{} is active", u.username), Some(true))),
        Some(Account::User(u)) if u.dir_disabled => {
            facts.push(fact("Bindery account", format!("{} is disabled because of the directory", u.username), Some(false)))
        }
        Some(Account::User(u)) => facts.push(fact("Bindery account", format!("{} is disabled in Bindery", u.username), Some(false))),
        Some(Account::WouldCreate) => facts.push(fact("Bindery account", "none yet: created at the first sign-in", Some(true))),
        None => {}
    }
    match f.locked {
        Some(true) => facts.push(fact("Bindery lockout", "locked by too many failed sign-ins (an admin can unlock)", Some(false))),
        Some(false) => facts.push(fact("Bindery lockout", "not locked", Some(true))),
        None => {}
    }
    match &f.directory {
        Directory::NotUsed => {}
        Directory::NotEnabled => facts.push(fact("Directory", "not enabled (or its settings are invalid)", Some(false))),
        Directory::Unreachable(why) => facts.push(fact("Directory", format!("unreachable: {why}"), Some(false))),
        Directory::Error(why) => facts.push(fact("Directory", format!("error: {why}"), Some(false))),
        Directory::Answered { server, dn } => {
            facts.push(fact("Server that answered", *server, Some(true)));
            match dn {
                Some(dn) => facts.push(fact("Directory entry", *dn, Some(true))),
                None => facts.push(fact("Directory entry", "no entry matches in the search OUs", Some(false))),
            }
        }
    }
    if let Some(s) = f.state {
        facts.push(fact("Account state in the directory", s.describe(), Some(s.usable())));
    }
    match f.identity {
        Some(Change::Conflict { reason, .. }) => facts.push(fact("Identity", format!("conflict: {reason}"), Some(false))),
        Some(Change::Refuse { reason }) => facts.push(fact("Identity", reason.clone(), Some(false))),
        Some(c @ Change::Update { .. }) => facts.push(fact("Identity", format!("updated from the directory: {}", c.reason()), Some(true))),
        Some(Change::Create { .. }) => facts.push(fact("Identity", "a new Bindery user for this entry", Some(true))),
        Some(Change::Nothing { .. }) => facts.push(fact("Identity", "linked to this entry", Some(true))),
        None => {}
    }
    match f.password {
        Password::NotChecked => facts.push(fact("Password", "not checked", None)),
        Password::Accepted => facts.push(fact("Password", "accepted by the directory", Some(true))),
        Password::Refused(why) => facts.push(fact("Password", format!("refused: {why}"), Some(false))),
        Password::Local { set: true } => facts.push(fact("Password", "local password (Argon2id)", Some(true))),
        Password::Local { set: false } => facts.push(fact("Password", "no local password set", Some(false))),
    }
    if f.role_pinned {
        facts.push(fact("Role", "pinned: managed in Bindery, the group mapping never changes it", None));
    } else if let Some(m) = f.mapped {
        facts.push(fact(
            "Group mapping",
            if m.matched {
                format!("role {}, {} mapped organisation(s)", m.role.label(), m.organisations.len())
            } else {
                "no mapping matches: role User, mapped organisations removed".to_string()
            },
            None,
        ));
    }
    Verdict { facts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, name: &str, ext: Option<&str>) -> UserRow {
        UserRow {
            id,
            username: name.into(),
            username_key: name.to_lowercase(),
            name: "Jane Doe".into(),
            email: "jane@example.org".into(),
            role: Role::User,
            source: UserSource::Ldap,
            is_active: true,
            password_hash: None,
            must_change_password: false,
            external_id: ext.map(str::to_string),
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
            validated_at: None,
            dir_disabled: false,
            role_pinned: false,
        }
    }

    fn entry<'a>(ext: &'a str, name: &'a str) -> Entry<'a> {
        Entry {
            external_id: ext,
            username: name,
            username_key: name,
            name: "Jane Doe",
            email: "jane@example.org",
            state: AccountState::Active,
            problem: "",
        }
    }

    fn policy(disable: bool) -> Policy {
        Policy {
            source: UserSource::Ldap,
            disable,
            create: true,
            create_disabled: false,
            organisations: vec![(1, OrgSource::Default)],
            add_to_existing: vec![],
        }
    }

    fn admin_mapping(orgs: &[i64]) -> Mapped {
        Mapped { role: Role::Admin, organisations: orgs.to_vec(), matched: true }
    }

    fn no_match() -> Mapped {
        Mapped { role: Role::User, organisations: vec![], matched: false }
    }

    /// (case, the change's kind, a word the reason must contain)
    fn check(case: &str, c: &Change, kind: &str, word: &str) {
        let got = match c {
            Change::Nothing { .. } => "nothing",
            Change::Create { .. } => "create",
            Change::Update { .. } => "update",
            Change::Conflict { .. } => "conflict",
            Change::Refuse { .. } => "refuse",
        };
        assert_eq!(got, kind, "{case}: {c:?}");
        assert!(c.reason().contains(word), "{case}: reason {:?} lacks {word:?}", c.reason());
    }

    fn upd(c: &Change) -> &Update {
        match c {
            Change::Update { update, .. } => update,
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn the_rule_table() {
        let jane = user(7, "jane", Some("uuid-1"));
        let none: &[(i64, OrgSource)] = &[];
        let held = Held { user: &jane, organisations: none };
        let e = entry("uuid-1", "jane");
        let p = policy(true);

        // new entry
        let c = reconcile(Some(&entry("uuid-9", "newbie")), None, None, &p, None);
        check("new entry", &c, "create", "new in the directory");
        let Change::Create { account, .. } = &c else { unreachable!() };
        assert_eq!(account.organisations, vec![(1, OrgSource::Default)], "the default organisation when nothing else places them");
        assert_eq!(account.role, Role::User);

        // nothing changed
        check("unchanged", &reconcile(Some(&e), Some(&held), None, &p, None), "nothing", "unchanged");

        // rename with the same immutable id
        let renamed = entry("uuid-1", "jane.doe");
        let c = reconcile(Some(&renamed), Some(&held), None, &p, None);
        check("rename", &c, "update", "renamed from jane to jane.doe");
        assert_eq!(upd(&c).rename, Some(("jane.doe".into(), "jane.doe".into())));

        // move to another OU: same id, same attributes → nothing to change
        // (the DN is not a user attribute; the link is the immutable id)
        check("move", &reconcile(Some(&e), Some(&held), None, &p, None), "nothing", "unchanged");

        // attribute change
        let mut changed = entry("uuid-1", "jane");
        changed.email = "jane.doe@example.org";
        let c = reconcile(Some(&changed), Some(&held), None, &p, None);
        check("attributes", &c, "update", "email changed");
        assert_eq!(upd(&c).email.as_deref(), Some("jane.doe@example.org"));

        // disabled in the directory
        let mut disabled = entry("uuid-1", "jane");
        disabled.state = AccountState::Disabled;
        let c = reconcile(Some(&disabled), Some(&held), None, &p, None);
        check("disabled in the directory", &c, "update", "disabled in the directory");
        assert_eq!(upd(&c).activation, Some(Activation::Disable));
        check("disabled, disabling off", &reconcile(Some(&disabled), Some(&held), None, &policy(false), None), "nothing", "unchanged");

        // enabled again after Bindery disabled the user
        let mut dir_off = user(7, "jane", Some("uuid-1"));
        dir_off.is_active = false;
        dir_off.dir_disabled = true;
        let c = reconcile(Some(&e), Some(&Held { user: &dir_off, organisations: none }), None, &p, None);
        check("enabled again", &c, "update", "active in the directory again");
        assert_eq!(upd(&c).activation, Some(Activation::Enable));

        // an administrator's disable is kept
        let mut admin_off = user(7, "jane", Some("uuid-1"));
        admin_off.is_active = false;
        check(
            "admin's disable",
            &reconcile(Some(&e), Some(&Held { user: &admin_off, organisations: none }), None, &p, None),
            "nothing",
            "unchanged",
        );

        // missing from the directory, disabling on / off
        let c = reconcile(None, Some(&held), None, &p, None);
        check("missing, disabling on", &c, "update", "missing from the directory");
        assert_eq!(upd(&c).activation, Some(Activation::Disable));
        check("missing, disabling off", &reconcile(None, Some(&held), None, &policy(false), None), "nothing", "disabling is off");

        // name held by a local user
        let mut local = user(3, "jane", None);
        local.source = UserSource::Local;
        check(
            "local name",
            &reconcile(Some(&e), None, Some(&Held { user: &local, organisations: none }), &p, None),
            "refuse",
            "local user",
        );

        // name held by a user linked to another id: a conflict, never an inheritance
        let old = user(4, "jane", Some("uuid-old"));
        let c = reconcile(Some(&e), None, Some(&Held { user: &old, organisations: none }), &p, Some(&admin_mapping(&[])));
        check("name reused", &c, "conflict", "linked to another directory entry");
        assert!(matches!(c, Change::Conflict { user_id: 4, .. }));
        // renamed onto a name another user holds
        let c = reconcile(
            Some(&entry("uuid-1", "bob")),
            Some(&held),
            Some(&Held { user: &user(5, "bob", Some("uuid-5")), organisations: none }),
            &p,
            None,
        );
        check("renamed onto a taken name", &c, "conflict", "already has");

        // a never-linked user is linked on first match; so is a DN-linked one
        let never = user(6, "jane", None);
        let c = reconcile(Some(&e), None, Some(&Held { user: &never, organisations: none }), &p, None);
        check("never linked", &c, "update", "immutable id");
        assert_eq!(upd(&c).external_id.as_deref(), Some("uuid-1"));
        let by_dn = user(6, "jane", Some("dn:uid=jane,ou=old,dc=x"));
        check(
            "DN-linked",
            &reconcile(Some(&e), None, Some(&Held { user: &by_dn, organisations: none }), &p, None),
            "update",
            "immutable id",
        );
        // a directory without immutable ids: a move is a new DN, not a conflict
        let dn_entry = entry("dn:uid=jane,ou=new,dc=x", "jane");
        check(
            "DN directory move",
            &reconcile(Some(&dn_entry), None, Some(&Held { user: &by_dn, organisations: none }), &p, None),
            "update",
            "immutable id",
        );

        // promotion by a mapping
        let c = reconcile(Some(&e), Some(&held), None, &p, Some(&admin_mapping(&[])));
        check("promotion", &c, "update", "by the group mapping");
        assert_eq!(upd(&c).role, Some((Role::User, Role::Admin)));

        // demotion when no mapping matches
        let mut boss = user(7, "jane", Some("uuid-1"));
        boss.role = Role::Admin;
        let c = reconcile(Some(&e), Some(&Held { user: &boss, organisations: none }), None, &p, Some(&no_match()));
        check("demotion", &c, "update", "no group mapping matches");
        assert_eq!(upd(&c).role, Some((Role::Admin, Role::User)));
        // no mappings at all: the role is Bindery's
        check(
            "no mappings",
            &reconcile(Some(&e), Some(&Held { user: &boss, organisations: none }), None, &p, None),
            "nothing",
            "unchanged",
        );

        // a pinned role
        let mut pinned = boss.clone();
        pinned.role_pinned = true;
        check(
            "pinned",
            &reconcile(Some(&e), Some(&Held { user: &pinned, organisations: none }), None, &p, Some(&no_match())),
            "nothing",
            "unchanged",
        );

        // a mapped organisation added, then removed; a manual one kept
        let c = reconcile(Some(&e), Some(&held), None, &p, Some(&Mapped { role: Role::User, organisations: vec![10], matched: true }));
        check("mapped org added", &c, "update", "added by the group mapping");
        assert_eq!(upd(&c).add_organisations, vec![(10, OrgSource::Mapping)]);
        let orgs = [(10, OrgSource::Mapping), (11, OrgSource::Manual), (1, OrgSource::Default)];
        let c = reconcile(Some(&e), Some(&Held { user: &jane, organisations: &orgs }), None, &p, Some(&no_match()));
        check("mapped org removed", &c, "update", "no longer gives");
        assert_eq!(upd(&c).remove_organisations, vec![10], "only what the mapping gave: manual and default memberships stay");

        // a bad entry fails alone
        let mut bad = entry("uuid-2", "");
        bad.problem = "no value for the username attribute";
        check("bad entry", &reconcile(Some(&bad), None, None, &p, None), "refuse", "username attribute");

        // only imported users may sign in
        let mut closed = policy(true);
        closed.create = false;
        check("not imported", &reconcile(Some(&entry("uuid-9", "x")), None, None, &closed, None), "refuse", "not imported");

        // a disabled entry is not created by sync, and created disabled by import
        check("disabled new entry", &reconcile(Some(&disabled_new()), None, None, &p, None), "nothing", "disabled");
        let mut import = policy(false);
        import.create_disabled = true;
        let c = reconcile(Some(&disabled_new()), None, None, &import, None);
        let Change::Create { account, .. } = &c else { panic!("{c:?}") };
        assert!(!account.active);
    }

    fn disabled_new() -> Entry<'static> {
        let mut e = entry("uuid-3", "gone");
        e.state = AccountState::Disabled;
        e
    }

    #[test]
    fn the_verdict_refuses_at_the_first_refusing_fact_and_reads_well() {
        let jane = user(7, "jane", Some("uuid-1"));
        let ok = AccessFacts {
            account: Some(Account::User(&jane)),
            locked: Some(false),
            directory: Directory::Answered { server: "ldap://a", dn: Some("uid=jane,dc=x") },
            state: Some(AccountState::Active),
            password: Password::Accepted,
            identity: None,
            mapped: None,
            role_pinned: false,
        };
        assert!(access_verdict(&ok).allowed());
        assert_eq!(access_verdict(&ok).sentence("jane"), "jane can sign in.");

        let must = AccessFacts { state: Some(AccountState::MustChangePassword), ..ok.clone() };
        let v = access_verdict(&must);
        assert!(!v.allowed());
        assert_eq!(
            v.sentence("jane"),
            "jane cannot sign in — Account state in the directory: the directory requires a password change first."
        );
        assert!(!v.sentence("jane").contains("is must"), "the words read well");

        let conflict = Change::Conflict { user_id: 4, reason: "the username jane belongs to another entry".into() };
        let v = access_verdict(&AccessFacts { identity: Some(&conflict), ..ok.clone() });
        assert_eq!(v.refusal().map(|f| f.label), Some("Identity"));

        let v = access_verdict(&AccessFacts { locked: Some(true), password: Password::Refused("invalid credentials"), ..ok });
        assert_eq!(v.refusal().map(|f| f.label), Some("Bindery lockout"), "the first refusing fact decides");
    }
}
