//! Data shapes shared by the server, the REST API and the WASM console.
//!
//! Only `serde` (and, for the REST API's OpenAPI document, `utoipa`) so the
//! same types compile for the browser. Timestamps travel as RFC 3339 strings
//! produced on the server: the browser never formats a clock value, which
//! keeps hydration deterministic.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// What a user may do in the console and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// System Admin: may change everything.
    Admin,
    /// System Auditor: may read everything, change nothing.
    Auditor,
    /// User: may sign in and manage their own password.
    #[default]
    User,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Auditor, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "System Admin",
            Role::Auditor => "System Auditor",
            Role::User => "User",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Admins and auditors may read the console's administrative pages.
    pub fn can_read_admin(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }
}

/// Where a user's identity lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    #[default]
    Local,
    Ldap,
    LdapHa,
}

impl UserSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UserSource::Local => "local",
            UserSource::Ldap => "ldap",
            UserSource::LdapHa => "ldap_ha",
        }
    }

    pub fn parse(s: &str) -> Option<UserSource> {
        [UserSource::Local, UserSource::Ldap, UserSource::LdapHa].into_iter().find(|r| r.as_str() == s)
    }

    /// The directory configuration a directory user comes from (`None` for local users).
    pub fn directory(self) -> Option<DirectoryKind> {
        match self {
            UserSource::Local => None,
            UserSource::Ldap => Some(DirectoryKind::Ldap),
            UserSource::LdapHa => Some(DirectoryKind::LdapHa),
        }
    }
}

/// A reference to a named object (organisation, group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NamedRef {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub source: UserSource,
    pub is_active: bool,
    /// Locked out by too many failed logins (an admin can unlock).
    pub locked: bool,
    pub must_change_password: bool,
    /// The role is managed in Bindery: the directory's group mapping never changes it.
    #[serde(default)]
    pub role_pinned: bool,
    /// The directory entry this user is linked to (`entryUUID`, AD `objectGUID`, or `dn:` + DN).
    #[serde(default)]
    pub external_id: Option<String>,
    pub organisations: Vec<NamedRef>,
    pub groups: Vec<NamedRef>,
    pub created_at: String,
    pub last_login_at: Option<String>,
}

/// One page of a server-side paged list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

impl<T> Page<T> {
    pub fn pages(&self) -> i64 {
        if self.per_page <= 0 {
            1
        } else {
            ((self.total + self.per_page - 1) / self.per_page).max(1)
        }
    }
}

/// Query of a paged list: 1-based page, optional free-text search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema, utoipa::IntoParams))]
pub struct ListQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

impl ListQuery {
    pub const DEFAULT_PER_PAGE: i64 = 15;
    pub const MAX_PER_PAGE: i64 = 500;

    pub fn page(&self) -> i64 {
        self.page.unwrap_or(1).max(1)
    }

    pub fn per_page(&self) -> i64 {
        self.per_page.unwrap_or(Self::DEFAULT_PER_PAGE).clamp(1, Self::MAX_PER_PAGE)
    }

    pub fn search(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// Query of the login or operation log: paging, free-text search and filters
/// (each optional). Dates are days in UTC, both ends included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema, utoipa::IntoParams))]
pub struct LogQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
    /// Login log: the username; operation log: who acted (exact, any case).
    #[serde(default)]
    pub user: Option<String>,
    /// Login log: `success` or `failure`.
    #[serde(default)]
    pub result: Option<String>,
    /// Login log: `web`, `rest` or `basic`.
    #[serde(default)]
    pub method: Option<String>,
    /// Operation log: an action (`user.create`) or a prefix ending in a dot (`user.`).
    #[serde(default)]
    pub action: Option<String>,
    /// First day, `YYYY-MM-DD`.
    #[serde(default)]
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    #[serde(default)]
    pub to: Option<String>,
}

impl LogQuery {
    pub fn list(&self) -> ListQuery {
        ListQuery { q: self.q.clone(), page: self.page, per_page: self.per_page }
    }

    /// The value of a filter, `None` when empty (an empty form field).
    pub fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NewUser {
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: Role,
    /// Initial password; the user must change it at first login.
    pub password: String,
    #[serde(default)]
    pub organisation_ids: Vec<i64>,
}

impl std::fmt::Debug for NewUser {
    /// Secrets show as `<redacted>` (or `None` when unset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NewUser { username, name, email, role, password, organisation_ids } = self;
        f.debug_struct("NewUser")
            .field("username", username)
            .field("name", name)
            .field("email", email)
            .field("role", role)
            .field("password", &redact(password))
            .field("organisation_ids", organisation_ids)
            .finish()
    }
}

/// Partial update: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub organisation_ids: Option<Vec<i64>>,
    /// Pin the role ("managed in Bindery"): the directory's group mapping never changes it.
    #[serde(default)]
    pub role_pinned: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Organisation {
    pub id: i64,
    pub name: String,
    pub is_default: bool,
    pub user_count: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OrganisationInput {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub source: UserSource,
    pub members: Vec<NamedRef>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub member_ids: Vec<i64>,
}

/// One login attempt, successful or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginEvent {
    pub id: i64,
    pub at: String,
    pub username: String,
    pub ip: String,
    pub user_agent: String,
    pub success: bool,
    /// Why it failed (never shown to the person logging in).
    pub reason: String,
    pub method: String,
}

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OperationEvent {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BasicSettings {
    /// Public URL of this console, e.g. `https://bindery.example.com`.
    pub site_url: String,
    /// A session ends after this many minutes without a request.
    pub session_idle_minutes: i64,
    /// A session ends this many hours after login, whatever the activity.
    pub session_absolute_hours: i64,
    /// Login and operation log entries older than this many days are
    /// deleted by a daily task.
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: i64,
}

fn default_log_retention_days() -> i64 {
    365
}

impl Default for BasicSettings {
    fn default() -> Self {
        BasicSettings {
            site_url: "http://127.0.0.1:3000".into(),
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            log_retention_days: default_log_retention_days(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecuritySettings {
    /// Lock a username after this many failures ...
    pub lockout_max_failures: i64,
    /// ... within this many minutes (for usernames and client addresses
    /// alike); the lock lifts when they age out.
    pub lockout_window_minutes: i64,
    /// Lock a client address after this many failures within the window,
    /// whatever the usernames: much higher than the per-username limit, as
    /// one address may be a whole office behind NAT.
    #[serde(default = "default_ip_max_failures")]
    pub lockout_ip_max_failures: i64,
    /// Networks (CIDR, e.g. `10.0.0.0/8`, or single addresses) never locked
    /// out as an address; their usernames still are.
    #[serde(default)]
    pub lockout_exempt_networks: Vec<String>,
    pub min_password_length: i64,
    /// Directory users must be imported before they can log in (otherwise
    /// they are created at their first login, into the default organisation).
    #[serde(default)]
    pub only_imported_users: bool,
    /// Lifetime of bearer tokens from `POST /api/v1/authn/ldap/{username}/authenticate`.
    #[serde(default = "default_bearer_minutes")]
    pub bearer_token_minutes: i64,
    /// A directory user's account is checked against the directory again
    /// when they use a session or token and the last check is older than
    /// this (0: on every request). Disabled or removed → signed out.
    #[serde(default = "default_revalidate_minutes")]
    pub revalidate_minutes: i64,
}

fn default_ip_max_failures() -> i64 {
    50
}

fn default_revalidate_minutes() -> i64 {
    5
}

fn default_bearer_minutes() -> i64 {
    15
}

impl Default for SecuritySettings {
    fn default() -> Self {
        // Below Active Directory's usual threshold so Bindery locks first
        // and a guessing attacker cannot lock people out of the directory.
        SecuritySettings {
            lockout_max_failures: 5,
            lockout_window_minutes: 15,
            lockout_ip_max_failures: default_ip_max_failures(),
            lockout_exempt_networks: Vec::new(),
            min_password_length: 10,
            only_imported_users: false,
            bearer_token_minutes: 15,
            revalidate_minutes: 5,
        }
    }
}

/// A username or client address currently locked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Lockout {
    /// `user:<name>` or `ip:<address>`.
    pub key: String,
    pub failures: i64,
    pub last_failure_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub username: String,
    /// First characters of the secret, to recognise it in lists.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NewApiToken {
    pub name: String,
    /// Whose token it is (defaults to the caller).
    #[serde(default)]
    pub user_id: Option<i64>,
    /// Days until it expires; none for no expiry.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// Returned once, at creation: the secret is never shown again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedApiToken {
    pub token: ApiToken,
    pub secret: String,
}

impl std::fmt::Debug for CreatedApiToken {
    /// Secrets show as `<redacted>` (or `None` when unset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let CreatedApiToken { token, secret } = self;
        f.debug_struct("CreatedApiToken").field("token", token).field("secret", &redact(secret)).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Dashboard {
    pub users: i64,
    pub active_users: i64,
    pub organisations: i64,
    pub groups: i64,
    pub failed_logins_24h: i64,
    pub successful_logins_24h: i64,
    pub recent_logins: Vec<LoginEvent>,
    /// Every server of every enabled directory configuration.
    #[serde(default)]
    pub directory_health: Vec<ServerHealth>,
    /// The live change stream of each directory that has it on.
    #[serde(default)]
    pub live_streams: Vec<LiveStatus>,
    /// The latest sync run of each directory configuration.
    #[serde(default)]
    pub last_syncs: Vec<SyncRun>,
    /// Reports addressed to the signed-in user (sync summaries), newest first.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// Sign-ins per hour over the last 24 hours, oldest first.
    #[serde(default)]
    pub activity_hours: Vec<ActivityBucket>,
    /// Sign-ins per day over the last 30 days, oldest first.
    #[serde(default)]
    pub activity_days: Vec<ActivityBucket>,
    /// The latest sync runs (all directories), oldest first.
    #[serde(default)]
    pub sync_history: Vec<SyncPoint>,
}

/// Sign-ins in one hour or day (UTC), successes by method, and failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityBucket {
    /// Start of the bucket, RFC 3339.
    pub start: String,
    pub web: i64,
    pub rest: i64,
    pub basic: i64,
    /// Failed sign-ins, all methods.
    pub failed: i64,
}

impl ActivityBucket {
    pub fn succeeded(&self) -> i64 {
        self.web + self.rest + self.basic
    }
}

/// One sync run on the Dashboard's history chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncPoint {
    pub id: i64,
    pub directory: DirectoryKind,
    pub started_at: String,
    pub duration_ms: i64,
    pub state: RunState,
    pub dry_run: bool,
    pub created: i64,
    pub updated: i64,
    pub disabled: i64,
}

/// A report addressed to a user (a sync run's summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Notification {
    pub id: i64,
    pub at: String,
    pub subject: String,
    pub body: String,
    /// `sent to …`, `not sent: …`, or empty when no SMTP relay is configured.
    pub email_status: String,
}

/// Health of one directory server, as the circuit breaker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServerHealth {
    pub directory: DirectoryKind,
    pub uri: String,
    /// `up`, `down` (skipped by logins until a probe sees it healthy) or
    /// `unknown` (not used or probed yet).
    pub state: String,
    /// Round trip of the last successful probe.
    pub latency_ms: Option<f64>,
    pub checked_at: Option<String>,
    /// When the server entered its current state.
    pub since: Option<String>,
    pub last_error: Option<String>,
}

/// "Explain access": why a user can or cannot sign in, fact by fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccessExplanation {
    pub username: String,
    /// The role is pinned ("managed in Bindery"): the group mapping never changes it.
    #[serde(default)]
    pub role_pinned: bool,
    pub allowed: bool,
    pub verdict: String,
    pub facts: Vec<AccessFact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccessFact {
    pub label: String,
    pub value: String,
    /// `Some(false)` when this fact refuses access.
    pub ok: Option<bool>,
}

/// The signed-in person, as the console shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub role: Role,
    pub must_change_password: bool,
}

/// A validation error naming the field it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// The body of every REST error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiError {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_clamps() {
        let q = ListQuery { q: Some("  ".into()), page: Some(0), per_page: Some(100_000) };
        assert_eq!(q.page(), 1);
        assert_eq!(q.per_page(), ListQuery::MAX_PER_PAGE);
        assert_eq!(q.search(), None);
    }

    #[test]
    fn page_count_rounds_up() {
        let p: Page<()> = Page { items: vec![], total: 31, page: 1, per_page: 15 };
        assert_eq!(p.pages(), 3);
    }

    #[test]
    fn role_round_trips() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}

// ----- directories (LDAP / LDAP HA) -------------------------------------------

/// The two directory configurations: the primary, and the backup used when
/// every server of the primary is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    #[default]
    Ldap,
    LdapHa,
}

impl DirectoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectoryKind::Ldap => "ldap",
            DirectoryKind::LdapHa => "ldap_ha",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DirectoryKind::Ldap => "LDAP",
            DirectoryKind::LdapHa => "LDAP HA",
        }
    }

    pub fn parse(s: &str) -> Option<DirectoryKind> {
        [DirectoryKind::Ldap, DirectoryKind::LdapHa].into_iter().find(|k| k.as_str() == s)
    }

    /// The source of the users this configuration creates.
    pub fn source(self) -> UserSource {
        match self {
            DirectoryKind::Ldap => UserSource::Ldap,
            DirectoryKind::LdapHa => UserSource::LdapHa,
        }
    }
}

/// How a user's groups are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// From a user attribute (the attribute map's `groups`, e.g. `memberOf`).
    #[default]
    Attribute,
    /// By searching groups that contain the user (`group_filter`).
    Search,
}

/// Members of a directory group get a role and organisations in Bindery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupMapping {
    pub group_dn: String,
    pub role: Role,
    /// Organisation names.
    #[serde(default)]
    pub organisations: Vec<String>,
}

impl GroupMapping {
    /// `group DN => role; org1, org2` — the console's one-line form.
    pub fn to_line(&self) -> String {
        format!("{} => {}; {}", self.group_dn, self.role.as_str(), self.organisations.join(", ")).trim_end_matches([';', ' ']).to_string()
    }

    /// Parse the one-line form (the role may be omitted: `user`).
    pub fn parse_line(line: &str) -> Result<GroupMapping, String> {
        let (dn, rest) = line.split_once("=>").ok_or("expected: group DN => role; organisation, …")?;
        let (role, orgs) = match rest.split_once(';') {
            Some((r, o)) => (r.trim(), o),
            None => (rest.trim(), ""),
        };
        let role =
            if role.is_empty() { Role::User } else { Role::parse(role).ok_or(format!("unknown role {role:?} (admin, auditor, user)"))? };
        Ok(GroupMapping {
            group_dn: dn.trim().to_string(),
            role,
            organisations: orgs.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect(),
        })
    }
}

/// A directory configuration as stored and shown: secrets are never
/// included, only whether they are set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DirectorySettings {
    pub kind: DirectoryKind,
    pub enabled: bool,
    /// Tried in order; at most 3.
    pub server_uris: Vec<String>,
    pub starttls: bool,
    pub bind_dn: String,
    pub bind_password_set: bool,
    /// Base DNs separated by `|`.
    pub search_ous: String,
    /// RFC 4515 filter with `%(user)s` where the (escaped) username goes.
    pub search_filter: String,
    /// JSON object: Bindery field → directory attribute.
    pub attr_map: String,
    pub group_mode: GroupMode,
    /// Where to search groups (empty: the search OUs).
    pub group_base: String,
    /// `{0}` = user DN, `{1}` = username.
    pub group_filter: String,
    pub nested_groups: bool,
    /// Directory group → Bindery role and organisations.
    #[serde(default)]
    pub group_mappings: Vec<GroupMapping>,
    pub connect_timeout_secs: i64,
    pub op_timeout_secs: i64,
    pub page_size: i64,
    pub dn_cache_secs: i64,
    /// Trusted CA certificates (PEM); empty: the system's.
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_set: bool,
    /// Dangerous: accept any certificate. Off by default, logged, shown as a warning.
    pub skip_verify: bool,
    pub updated_at: Option<String>,
}

impl DirectorySettings {
    pub fn defaults(kind: DirectoryKind) -> DirectorySettings {
        DirectorySettings {
            kind,
            enabled: false,
            server_uris: vec![],
            starttls: false,
            bind_dn: String::new(),
            bind_password_set: false,
            search_ous: String::new(),
            search_filter: "(cn=%(user)s)".into(),
            attr_map: r#"{"username":"cn","name":"sn","email":"mail"}"#.into(),
            group_mode: GroupMode::Attribute,
            group_base: String::new(),
            group_filter: "(member={0})".into(),
            nested_groups: false,
            group_mappings: vec![],
            connect_timeout_secs: 5,
            op_timeout_secs: 10,
            page_size: 1000,
            dn_cache_secs: 300,
            ca_pem: String::new(),
            client_cert_pem: String::new(),
            client_key_set: false,
            skip_verify: false,
            updated_at: None,
        }
    }
}

/// A directory configuration as written by a form or the API. Secrets are
/// write-only: `None` keeps the stored value, `Some("")` clears it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DirectoryInput {
    #[serde(default)]
    pub enabled: bool,
    pub server_uris: Vec<String>,
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub bind_dn: String,
    #[serde(default)]
    pub bind_password: Option<String>,
    pub search_ous: String,
    #[serde(default = "default_filter")]
    pub search_filter: String,
    #[serde(default = "default_attr_map")]
    pub attr_map: String,
    #[serde(default)]
    pub group_mode: GroupMode,
    #[serde(default)]
    pub group_base: String,
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    #[serde(default)]
    pub nested_groups: bool,
    #[serde(default)]
    pub group_mappings: Vec<GroupMapping>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: i64,
    #[serde(default = "default_op_timeout")]
    pub op_timeout_secs: i64,
    #[serde(default = "default_page_size")]
    pub page_size: i64,
    #[serde(default = "default_dn_cache")]
    pub dn_cache_secs: i64,
    #[serde(default)]
    pub ca_pem: String,
    #[serde(default)]
    pub client_cert_pem: String,
    #[serde(default)]
    pub client_key_pem: Option<String>,
    #[serde(default)]
    pub skip_verify: bool,
}

impl std::fmt::Debug for DirectoryInput {
    /// Secrets show as `<redacted>` (or `None` when unset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DirectoryInput {
            enabled,
            server_uris,
            starttls,
            bind_dn,
            bind_password,
            search_ous,
            search_filter,
            attr_map,
            group_mode,
            group_base,
            group_filter,
            nested_groups,
            group_mappings,
            connect_timeout_secs,
            op_timeout_secs,
            page_size,
            dn_cache_secs,
            ca_pem,
            client_cert_pem,
            client_key_pem,
            skip_verify,
        } = self;
        f.debug_struct("DirectoryInput")
            .field("enabled", enabled)
            .field("server_uris", server_uris)
            .field("starttls", starttls)
            .field("bind_dn", bind_dn)
            .field("bind_password", &redact_opt(bind_password))
            .field("search_ous", search_ous)
            .field("search_filter", search_filter)
            .field("attr_map", attr_map)
            .field("group_mode", group_mode)
            .field("group_base", group_base)
            .field("group_filter", group_filter)
            .field("nested_groups", nested_groups)
            .field("group_mappings", group_mappings)
            .field("connect_timeout_secs", connect_timeout_secs)
            .field("op_timeout_secs", op_timeout_secs)
            .field("page_size", page_size)
            .field("dn_cache_secs", dn_cache_secs)
            .field("ca_pem", ca_pem)
            .field("client_cert_pem", client_cert_pem)
            .field("client_key_pem", &redact_opt(client_key_pem))
            .field("skip_verify", skip_verify)
            .finish()
    }
}

fn default_filter() -> String {
    "(cn=%(user)s)".into()
}
fn default_attr_map() -> String {
    r#"{"username":"cn","name":"sn","email":"mail"}"#.into()
}
fn default_group_filter() -> String {
    "(member={0})".into()
}
fn default_connect_timeout() -> i64 {
    5
}
fn default_op_timeout() -> i64 {
    10
}
fn default_page_size() -> i64 {
    1000
}
fn default_dn_cache() -> i64 {
    300
}

/// One step of a connection test, with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProbeStep {
    /// `parse`, `tcp`, `tls`, `bind`, `search_ou`, `count`, `sample`.
    pub step: String,
    pub ok: bool,
    pub millis: i64,
    /// What was found, or why it failed, in plain words.
    pub detail: String,
    /// The LDAP result code of a failed operation.
    pub ldap_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServerProbe {
    pub uri: String,
    pub ok: bool,
    pub steps: Vec<ProbeStep>,
}

/// A user as the directory's attribute map makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MappedUser {
    pub dn: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_active: bool,
    pub phone: String,
    pub comment: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProbeReport {
    pub ok: bool,
    pub servers: Vec<ServerProbe>,
    pub user_count: Option<i64>,
    pub sample: Vec<MappedUser>,
    /// How the first server that answered can be read for changes only
    /// (delta sync), and why; `None` when no server got that far.
    #[serde(default)]
    pub delta: Option<DeltaSupportInfo>,
}

/// Which delta method a directory supports, as Test connection found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeltaSupportInfo {
    /// `syncrepl`, `dirsync`, `usn` or `none`.
    pub method: String,
    /// Whether deletions are reported by this method for this account.
    pub sees_deletions: bool,
    /// Why, in plain words.
    pub reason: String,
    /// The server that was asked.
    #[serde(default)]
    pub server: String,
    /// When (UTC); empty in a Test connection's own answer.
    #[serde(default)]
    pub detected_at: String,
}

impl DeltaSupportInfo {
    /// Whether live deprovisioning is offered with this method, and how
    /// (issue 17 §2), in words; `None` when it is not.
    pub fn live_words(&self) -> Option<String> {
        match self.method.as_str() {
            "syncrepl" => {
                Some("Live deprovisioning: available (syncrepl refreshAndPersist): disables and deletions within seconds.".into())
            }
            m @ ("dirsync" | "usn") => {
                let reader = if m == "dirsync" { "DirSync" } else { "uSNChanged" };
                Some(if self.sees_deletions {
                    format!(
                        "Live deprovisioning: available (change notification, read by {reader}): disables and deletions within seconds."
                    )
                } else {
                    format!(
                        "Live deprovisioning: available (change notification, read by {reader}): disables within seconds; deletions are not visible to the service account and are left to the sync."
                    )
                })
            }
            _ => None,
        }
    }
}

/// A certificate a directory server presented ("Fetch certificate").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CertificateDetails {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    /// Expires in less than 30 days.
    pub expiring: bool,
    /// A CA certificate: can be trusted as the directory's CA.
    pub is_ca: bool,
    /// SHA-256 of the DER, `AB:CD:…`.
    pub sha256: String,
    pub pem: String,
}

/// What one server presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServerCertificates {
    pub uri: String,
    pub certificates: Vec<CertificateDetails>,
    pub error: Option<String>,
}

/// Result of "Test login".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginTestReport {
    /// Would this person be let into Bindery?
    pub allowed: bool,
    /// One line for the verdict, in plain words.
    pub verdict: String,
    pub server: Option<String>,
    pub dn: Option<String>,
    /// `not checked` (lookup only), `ok`, or the failure in words.
    pub bind: String,
    pub ldap_code: Option<i64>,
    /// AD sub-code such as `52e`, when the directory gave one.
    pub ad_subcode: Option<String>,
    /// `active`, `disabled`, `locked`, `expired`, `must change password`, or
    /// `unknown` when the entry was not found.
    pub account_state: AccountState,
    pub user: Option<MappedUser>,
    pub local_user: Option<String>,
    /// The role and organisations the group mapping gives (None: no mapping matched).
    pub mapped_role: Option<Role>,
    pub mapped_organisations: Vec<String>,
    pub steps: Vec<ProbeStep>,
    /// The entry's immutable id (`entryUUID`, `objectGUID` hex, or `dn:` + DN).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The facts behind the verdict, in order (the same as sign-in and Explain access use).
    #[serde(default)]
    pub facts: Vec<AccessFact>,
}

/// Query of the import table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema, utoipa::IntoParams))]
pub struct StagedQuery {
    /// `all` (default), `new`, `imported`, `changed`, `disabled`, `invalid`, `conflict`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub q: Option<String>,
    /// `username` (default), `name`, `email`, `status`.
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub desc: Option<bool>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

/// A row of the import table: a directory user from the staging snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StagedUser {
    pub id: i64,
    /// `new`, `imported`, `changed`, `disabled` (in the directory), `invalid`, or
    /// `conflict` (the username belongs to a Bindery user linked to another directory entry).
    pub status: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    /// A Bindery user is linked to this entry (by immutable id or name).
    pub already_exists: bool,
    pub dn: String,
    /// Why the row cannot be imported (`invalid`), else empty.
    pub problem: String,
}

/// A "Sync users" enumeration or a sync run, with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncRun {
    pub id: i64,
    pub directory: DirectoryKind,
    /// `fetch` (import table), `sync` (full) or `delta` (changes only).
    pub kind: RunKind,
    /// `running`, `done`, `failed`, `cancelled`, `interrupted`, `held`, `rejected`.
    pub state: RunState,
    pub started_by: String,
    pub dry_run: bool,
    pub entries: i64,
    pub pages: i64,
    /// Every entry of every search OU was enumerated.
    pub complete: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub elapsed_ms: i64,
    pub error: String,
    /// A sync run's plan and outcome (zero for enumerations).
    #[serde(default)]
    pub counts: SyncCounts,
}

/// What a sync run planned and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default)]
pub struct SyncCounts {
    /// Users the directory lists (the threshold's base).
    pub directory_users: i64,
    pub create: i64,
    pub update: i64,
    pub enable: i64,
    pub disable: i64,
    /// Entries whose username belongs to a Bindery user linked to another
    /// directory entry: nothing changes for either (an administrator decides).
    pub conflict: i64,
    /// Entries that cannot be synced (with their reason in the items).
    pub failed: i64,
    /// Planned changes applied / failed while applying.
    pub applied: i64,
    pub apply_failed: i64,
    /// Where the time went: enumerate + stage, plan, apply (milliseconds).
    pub enumerate_ms: i64,
    pub plan_ms: i64,
    pub apply_ms: i64,
    /// Why the run did or did not do something, in plain words.
    pub notes: Vec<String>,
}

/// Sync settings of a directory configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncSettings {
    /// Organisations new users go into (empty: the default organisation).
    #[serde(default)]
    pub organisation_ids: Vec<i64>,
    /// Run on the schedule.
    #[serde(default)]
    pub periodic: bool,
    /// Five-field crontab (minute hour day month weekday, UTC); wins over the interval.
    #[serde(default)]
    pub crontab: String,
    /// Every N hours (1–8760) when no crontab is set; 0: none.
    #[serde(default)]
    pub interval_hours: i64,
    /// Usernames who get each run's summary (console, and email when SMTP is configured).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Disable users missing from, or disabled in, the directory. Off by default.
    #[serde(default)]
    pub disable_missing: bool,
    /// A run that would disable more than this share (%) of the directory's users waits for approval.
    #[serde(default = "default_threshold")]
    pub threshold_percent: i64,
    /// `full`: every run enumerates the directory; `delta`: scheduled and
    /// manual runs read only what changed (where Test connection detected
    /// a method), with a full enumeration every `full_every_hours`.
    #[serde(default)]
    pub mode: SyncMode,
    /// In delta mode, a run starts with a full enumeration when the last
    /// complete one is older than this (1–8760 hours; default 24).
    #[serde(default = "default_full_every_hours")]
    pub full_every_hours: i64,
    /// Live deprovisioning (OpenLDAP syncrepl refreshAndPersist; Active
    /// Directory change notification with DirSync or USN): a user
    /// disabled in, or deleted from, the directory is disabled here within
    /// seconds, without waiting for a sync. Needs `disable_missing`.
    #[serde(default)]
    pub live: bool,
}

fn default_threshold() -> i64 {
    10
}

fn default_full_every_hours() -> i64 {
    24
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            organisation_ids: vec![],
            periodic: false,
            crontab: String::new(),
            interval_hours: 0,
            recipients: vec![],
            disable_missing: false,
            threshold_percent: default_threshold(),
            mode: SyncMode::Full,
            full_every_hours: default_full_every_hours(),
            live: false,
        }
    }
}

/// The live change stream of a directory (issue 17 §2), shown with the
/// servers' health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LiveStatus {
    pub directory: DirectoryKind,
    /// Whether live deprovisioning is on in the sync settings.
    pub enabled: bool,
    /// The persistent search is open (on the replica holding the stream's lease).
    pub connected: bool,
    /// The server it is open on.
    pub server: String,
    /// Connected (or disconnected) since (UTC).
    pub since: Option<String>,
    /// When the last change arrived (UTC).
    pub last_change: Option<String>,
    /// Changes seen, and users disabled, by the current holder.
    pub changes: i64,
    pub disabled: i64,
    /// Why the stream last failed, or held a change back.
    pub last_error: Option<String>,
    /// The replica holding the stream's lease, if it is alive.
    pub holder: Option<String>,
    /// How the stream works, in words ("syncrepl refreshAndPersist",
    /// "change notification with show-deleted, changes read by DirSync").
    #[serde(default)]
    pub method: String,
    /// What the stream cannot see, in plain words (Active Directory
    /// deletions when the service account may not read Deleted Objects:
    /// left to the sync); `None` when it sees disables and deletions.
    #[serde(default)]
    pub unseen: Option<String>,
}

/// Sync settings with what the schedule means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncSettingsView {
    pub settings: SyncSettings,
    /// `crontab 0 3 * * * (UTC)`, `every 24 h`, or `off`.
    pub schedule: String,
    /// The next five run times (UTC), empty when not periodic.
    pub next_runs: Vec<String>,
    /// The delta method the last Test connection of the saved settings
    /// detected; `None` when not tested since they were saved.
    #[serde(default)]
    pub detected: Option<DeltaSupportInfo>,
    /// The live change stream's state, when live deprovisioning is on.
    #[serde(default)]
    pub live: Option<LiveStatus>,
}

/// "Sync now" (or its dry-run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncRequest {
    /// Compute and show the plan; apply nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One user a sync run plans to change, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncItem {
    pub id: i64,
    /// `create`, `update`, `enable`, `disable`, `conflict`, or `failed` (the entry cannot be synced).
    pub action: SyncAction,
    pub username: String,
    pub reason: String,
    /// `planned`, `applied`, `failed`, `rejected`.
    pub outcome: ItemOutcome,
    pub error: String,
}

/// A sync run with a page of its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SyncRunDetail {
    pub run: SyncRun,
    pub items: Page<SyncItem>,
}

/// What to import: the checked rows, or every row matching the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportRequest {
    #[serde(default)]
    pub ids: Vec<i64>,
    /// Ignore `ids`: import every row matching `status` and `q`.
    #[serde(default)]
    pub all_matching: bool,
    pub status: Option<String>,
    pub q: Option<String>,
    /// Organisations to put the users in (empty: the default organisation).
    #[serde(default)]
    pub organisation_ids: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportOutcome {
    pub username: String,
    /// `created`, `updated`, `unchanged` or `failed`.
    pub outcome: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportResult {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub failed: i64,
    pub outcomes: Vec<ImportOutcome>,
}

/// A closed set of values that travel as plain strings (the API keeps the
/// strings it always had); compares with `&str` for readability at call sites.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(ToSchema))]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<$name, String> {
                $name::parse(&s).ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)))
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

string_enum! {
    /// A directory account's state, as the entry or the bind says.
    AccountState {
        Active => "active",
        Disabled => "disabled",
        Locked => "locked",
        Expired => "expired",
        MustChangePassword => "must change password",
        /// Not read yet (Test login before the entry is found).
        Unknown => "unknown",
    }
}

impl AccountState {
    /// Whether this state lets a person sign in.
    pub fn usable(self) -> bool {
        self == AccountState::Active
    }

    /// The state in words that read in a sentence ("the account is …" is
    /// never used: "must change password" does not follow "is").
    pub fn describe(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Disabled => "disabled in the directory",
            AccountState::Locked => "locked in the directory",
            AccountState::Expired => "the password or account has expired in the directory",
            AccountState::MustChangePassword => "the directory requires a password change first",
            AccountState::Unknown => "the account state is unknown",
        }
    }
}

string_enum! {
    /// What a run does: fill the import table (`fetch`), or sync.
    RunKind {
        Fetch => "fetch",
        Sync => "sync",
        /// A sync that read only what changed since the last run.
        Delta => "delta",
        /// A disable applied by the live change stream (one per user, done
        /// when recorded): deprovisioning without a sync.
        Live => "live",
    }
}

impl RunKind {
    /// A sync run, full or delta (listed on the Sync runs page).
    pub fn is_sync(self) -> bool {
        matches!(self, RunKind::Sync | RunKind::Delta)
    }

    /// Listed on the Sync runs page: syncs, and the live stream's disables.
    pub fn on_sync_runs_page(self) -> bool {
        self.is_sync() || self == RunKind::Live
    }

    /// How the Sync runs page names the kind.
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Fetch => "fetch",
            RunKind::Sync => "full",
            RunKind::Delta => "delta",
            RunKind::Live => "live",
        }
    }
}

string_enum! {
    /// How a directory is synced.
    #[derive(Default)]
    SyncMode {
        /// Every run enumerates every search OU.
        #[default]
        Full => "full",
        /// Runs read only what changed, with a periodic full enumeration.
        Delta => "delta",
    }
}

string_enum! {
    /// Where a run is.
    RunState {
        Running => "running",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
        Held => "held",
        Rejected => "rejected",
    }
}

string_enum! {
    /// What a sync run plans for one user.
    SyncAction {
        Create => "create",
        Update => "update",
        Enable => "enable",
        Disable => "disable",
        /// The username belongs to a Bindery user linked to another directory entry.
        Conflict => "conflict",
        /// The entry cannot be synced (with the reason).
        Failed => "failed",
    }
}

string_enum! {
    /// What became of a planned change.
    ItemOutcome {
        Planned => "planned",
        Applied => "applied",
        Failed => "failed",
        Rejected => "rejected",
    }
}

/// A secret in `Debug` output: `<redacted>` (empty ones show as `""`).
pub fn redact(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

/// An optional secret in `Debug` output.
pub fn redact_opt(secret: &Option<String>) -> Option<&'static str> {
    secret.as_deref().map(redact)
}
