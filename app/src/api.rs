//! Server functions: the console's calls to the server.
//!
//! Each one is a public HTTP endpoint at a stable path under `/rpc/` (the
//! hand-written REST API lives under `/api/v1/`). They are thin: take the
//! caller from the request, call the service — which checks the role — and
//! map its error. Business rules live in `bindery-service`, never here.

// A server function takes one argument per form field, and `#[server]` drops a
// per-function `allow` from the client half it generates: allow it here.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;

use bindery_model::{
    ApiToken, BasicSettings, CreatedApiToken, CurrentUser, Dashboard, FieldError, Group, Lockout, LoginEvent, OperationEvent, Organisation,
    Page, SecuritySettings, User,
};
use leptos::prelude::*;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// Errors the console understands. Field errors come back with their field
/// so forms can show each next to its input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppError {
    Unauthenticated,
    Forbidden,
    PasswordChangeRequired,
    NotFound(String),
    Invalid(Vec<FieldError>),
    Conflict(String),
    /// Details are in the server log, never in the answer.
    Internal,
    Transport(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Unauthenticated => f.write_str("Your session has ended. Sign in again."),
            AppError::Forbidden => f.write_str("You are not allowed to do this."),
            AppError::PasswordChangeRequired => f.write_str("Change your one-time password first."),
            AppError::NotFound(what) => write!(f, "The {what} does not exist (any more)."),
            AppError::Invalid(errors) => {
                let parts: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                write!(f, "Please correct: {}", parts.join("; "))
            }
            AppError::Conflict(m) => f.write_str(m),
            AppError::Internal => f.write_str("Something went wrong on the server. The details are in its log."),
            AppError::Transport(m) => write!(f, "The server could not be reached: {m}"),
        }
    }
}

impl std::error::Error for AppError {}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport(value.to_string())
    }
}

impl AppError {
    /// The message for one field, if the error names it.
    pub fn for_field(&self, field: &str) -> Option<String> {
        match self {
            AppError::Invalid(errors) => errors.iter().find(|e| e.field == field).map(|e| e.message.clone()),
            _ => None,
        }
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    use super::AppError;
    use bindery_service::{Actor, Error, RequestContext, Service};
    use http::StatusCode;
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

    pub fn status(code: StatusCode) {
        if let Some(r) = use_context::<ResponseOptions>() {
            r.set_status(code);
        }
    }

    pub fn request() -> RequestContext {
        use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<RequestContext>().cloned()).unwrap_or_default()
    }

    pub fn service() -> Result<Service, AppError> {
        use_context::<Service>().ok_or_else(|| {
            tracing::error!("service missing from the server function context");
            AppError::Internal
        })
    }

    /// The service and the authenticated caller, or 401.
    pub fn caller() -> Result<(Service, Actor), AppError> {
        let svc = service()?;
        let actor = request().actor().map_err(map)?;
        Ok((svc, actor))
    }

    /// The one place service errors become console errors and HTTP statuses.
    pub fn map(e: Error) -> AppError {
        let (code, err) = match e {
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, AppError::Unauthenticated),
            Error::Forbidden => (StatusCode::FORBIDDEN, AppError::Forbidden),
            Error::PasswordChangeRequired => (StatusCode::FORBIDDEN, AppError::PasswordChangeRequired),
            Error::NotFound(what) => (StatusCode::NOT_FOUND, AppError::NotFound(what.to_string())),
            Error::Invalid(fields) => (StatusCode::UNPROCESSABLE_ENTITY, AppError::Invalid(fields)),
            Error::Conflict(m) => (StatusCode::CONFLICT, AppError::Conflict(m)),
            e @ (Error::Store(_) | Error::Internal(_)) => {
                tracing::error!(error = %e, "server function failed");
                (StatusCode::INTERNAL_SERVER_ERROR, AppError::Internal)
            }
        };
        status(code);
        err
    }
}

#[cfg(feature = "ssr")]
use ssr::{caller, map};

#[cfg(feature = "ssr")]
fn query(q: Option<String>, page: Option<i64>) -> bindery_model::ListQuery {
    bindery_model::ListQuery { q, page, per_page: None }
}

/// Keep only same-origin paths as redirect targets (no open redirect).
///
/// `next` comes from the client. It must be a path (`/…`), free of control
/// characters (browsers drop a TAB or LF, turning `/\t/evil.example` into
/// `//evil.example`) and backslashes (read as `/`), and must still name a
/// path on this origin once a URL parser has resolved it (`/.//x` resolves
/// to `//x`). Server functions (`/rpc/…`) are never a target. Anything else
/// sends the user to `/`. The answer is the parser's serialisation, so it is
/// percent-encoded and holds no byte a `Location` header cannot carry.
#[cfg(feature = "ssr")]
pub fn safe_next(next: Option<&str>) -> String {
    const HOME: &str = "/";
    const ORIGIN: &str = "http://bindery.invalid/";
    let Some(n) = next else { return HOME.into() };
    if !n.starts_with('/') || n.starts_with("//") || n.chars().any(|c| c.is_control() || c == '\\') {
        return HOME.into();
    }
    let Ok(base) = url::Url::parse(ORIGIN) else { return HOME.into() };
    let Ok(u) = base.join(n) else { return HOME.into() };
    let same_origin = u.scheme() == "http"
        && u.host_str() == Some("bindery.invalid")
        && u.port().is_none()
        && u.username().is_empty()
        && u.password().is_none();
    let path = u.path();
    let decoded = percent_decoded(path).to_ascii_lowercase();
    if !same_origin || !path.starts_with('/') || path.starts_with("//") || decoded.starts_with("//") || decoded.starts_with("/rpc/") {
        return HOME.into();
    }
    let mut out = path.to_string();
    if let Some(q) = u.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = u.fragment() {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `%XX` sequences decoded (for checks only; invalid ones are kept).
#[cfg(feature = "ssr")]
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every redirect a server function answers with goes through here: bytes
/// a `Location` header cannot carry (controls, spaces, non-ASCII) are
/// percent-encoded, so `leptos_axum::redirect` (which panics on an invalid
/// header value) never sees a CR or LF.
#[cfg(feature = "ssr")]
pub fn redirect(target: &str) {
    leptos_axum::redirect(&location_safe(target));
}

/// `target` with every byte outside visible ASCII percent-encoded.
pub fn location_safe(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for b in target.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A password typed into a form. The structs `#[server]` generates for a
/// server function's arguments derive `Debug`: this keeps it out of them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Password({:?})", bindery_model::redact(&self.0))
    }
}

/// Checked boxes of a form, named `field[<id>]`, as ids.
pub fn checked_ids(boxes: &Option<HashMap<String, String>>) -> Vec<i64> {
    let mut ids: Vec<i64> = boxes.iter().flat_map(|m| m.keys()).filter_map(|k| k.parse().ok()).collect();
    ids.sort_unstable();
    ids
}

// ----- session ---------------------------------------------------------------

/// Sign in. A plain HTML form posts here, with or without JavaScript; the
/// answer is always a redirect: to the console, to the forced password
/// change, or back to the login page with one generic message.
#[server(prefix = "/rpc", endpoint = "login")]
pub async fn login(username: String, password: Password, next: Option<String>) -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let svc = ssr::service()?;
    let req = ssr::request();
    match svc.login(&username, password.expose(), &req.client, "web").await {
        Ok(ok) => {
            let cookie = crate::session_cookie(SESSION_COOKIE, ok.session_token.expose(), req.secure, None);
            if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
                r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
            }
            let target = if ok.must_change_password { "/change-password".to_string() } else { safe_next(next.as_deref()) };
            redirect(&target);
            Ok(())
        }
        Err(_) => {
            let mut target = "/login?failed=1".to_string();
            let next = safe_next(next.as_deref());
            if next != "/" {
                target.push_str("&next=");
                target.push_str(&crate::url_encode(&next));
            }
            redirect(&target);
            Ok(())
        }
    }
}

#[server(prefix = "/rpc", endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let svc = ssr::service()?;
    let req = ssr::request();
    if let Some(token) = &req.session_token {
        svc.logout(token).await.map_err(map)?;
    }
    let cookie = crate::session_cookie(SESSION_COOKIE, "", req.secure, Some(0));
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
    }
    redirect("/login");
    Ok(())
}

/// Change one's own password. A plain form posts here; errors come back to
/// the page in its query string so it works without JavaScript.
#[server(prefix = "/rpc", endpoint = "change_password")]
pub async fn change_password(current_password: Password, new_password: Password, confirm_password: Password) -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let (svc, actor) = caller()?;
    let req = ssr::request();
    // Rotate the session: every old session ends, this browser gets a new one.
    let fresh = bindery_service::util::random_token();
    match svc.change_password(&actor, current_password.expose(), new_password.expose(), confirm_password.expose(), Some(&fresh)).await {
        Ok(()) => {
            let cookie = crate::session_cookie(SESSION_COOKIE, &fresh, req.secure, None);
            if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
                r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
            }
            redirect("/?password_changed=1");
            Ok(())
        }
        Err(bindery_service::Error::Invalid(fields)) => {
            let mut target = "/change-password?".to_string();
            for f in fields {
                target.push_str(&format!("err_{}={}&", f.field, crate::url_encode(&f.message)));
            }
            redirect(target.trim_end_matches('&'));
            Ok(())
        }
        Err(e) => Err(map(e)),
    }
}

/// The signed-in person, or `None`.
#[server(name = GetCurrentUser, prefix = "/rpc", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<CurrentUser>, AppError> {
    let svc = ssr::service()?;
    match ssr::request().principal {
        Some(p) => Ok(Some(svc.current_user(&p).await)),
        None => Ok(None),
    }
}

// ----- dashboard and logs ----------------------------------------------------

#[server(name = GetDashboard, prefix = "/rpc", endpoint = "dashboard")]
pub async fn dashboard() -> Result<Dashboard, AppError> {
    let (svc, actor) = caller()?;
    svc.dashboard(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "login_log")]
pub async fn login_log(#[server(default)] query: bindery_model::LogQuery) -> Result<Page<LoginEvent>, AppError> {
    let (svc, actor) = caller()?;
    svc.login_log(&actor, &query).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "operation_log")]
pub async fn operation_log(#[server(default)] query: bindery_model::LogQuery) -> Result<Page<OperationEvent>, AppError> {
    let (svc, actor) = caller()?;
    svc.operation_log(&actor, &query).await.map_err(map)
}

// ----- users -------------------------------------------------------------------

#[server(prefix = "/rpc", endpoint = "list_users")]
pub async fn list_users(q: Option<String>, page: Option<i64>) -> Result<Page<User>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_users(&actor, &query(q, page)).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "get_user")]
pub async fn get_user(id: i64) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    svc.get_user(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "explain_access")]
pub async fn explain_access(id: i64) -> Result<bindery_model::AccessExplanation, AppError> {
    let (svc, actor) = caller()?;
    svc.explain_access(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_user")]
pub async fn create_user(
    username: String,
    name: String,
    email: String,
    role: String,
    password: Password,
    orgs: Option<HashMap<String, String>>,
) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    let role = bindery_model::Role::parse(&role).ok_or_else(|| map(bindery_service::Error::field("role", "choose a role")))?;
    let input = bindery_model::NewUser { username, name, email, role, password: password.0, organisation_ids: checked_ids(&orgs) };
    svc.create_user(&actor, &input).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "update_user")]
pub async fn update_user(
    id: i64,
    name: String,
    email: String,
    role: String,
    orgs: Option<HashMap<String, String>>,
    /// A checkbox: present ("on") when the role is pinned; `pin_shown` says the form had it.
    role_pinned: Option<String>,
    pin_shown: Option<String>,
) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    let role = bindery_model::Role::parse(&role).ok_or_else(|| map(bindery_service::Error::field("role", "choose a role")))?;
    let input = bindery_model::UserUpdate {
        name: Some(name),
        email: Some(email),
        role: Some(role),
        is_active: None,
        organisation_ids: Some(checked_ids(&orgs)),
        role_pinned: pin_shown.map(|_| role_pinned.is_some()),
    };
    svc.update_user(&actor, id, &input).await.map_err(map)
}

/// Resolve a username conflict: link the user to the directory entry that
/// answers to their name now (every session and token is revoked).
#[server(prefix = "/rpc", endpoint = "relink_user")]
pub async fn relink_user(id: i64) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    svc.relink_user(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "set_user_active")]
pub async fn set_user_active(id: i64, active: bool) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    let input = bindery_model::UserUpdate { is_active: Some(active), ..Default::default() };
    svc.update_user(&actor, id, &input).await.map_err(map)
}

/// Returns the new one-time password, to show once.
#[server(prefix = "/rpc", endpoint = "reset_password")]
pub async fn reset_password(id: i64) -> Result<String, AppError> {
    let (svc, actor) = caller()?;
    svc.reset_password(&actor, id, None).await.map(|s| s.expose().to_string()).map_err(map)
}

#[server(prefix = "/rpc", endpoint = "delete_user")]
pub async fn delete_user(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_user(&actor, id).await.map_err(map)?;
    redirect("/users");
    Ok(())
}

// ----- organisations and groups ------------------------------------------------

#[server(prefix = "/rpc", endpoint = "list_organisations")]
pub async fn list_organisations() -> Result<Vec<Organisation>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_organisations(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_organisation")]
pub async fn create_organisation(name: String) -> Result<Organisation, AppError> {
    let (svc, actor) = caller()?;
    svc.create_organisation(&actor, &bindery_model::OrganisationInput { name }).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "rename_organisation")]
pub async fn rename_organisation(id: i64, name: String) -> Result<Organisation, AppError> {
    let (svc, actor) = caller()?;
    svc.rename_organisation(&actor, id, &bindery_model::OrganisationInput { name }).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "delete_organisation")]
pub async fn delete_organisation(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_organisation(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_groups")]
pub async fn list_groups() -> Result<Vec<Group>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_groups(&actor).await.map_err(map)
}

/// `members` is a comma-separated list of usernames.
#[server(prefix = "/rpc", endpoint = "save_group")]
pub async fn save_group(id: Option<i64>, name: String, description: String, members: String) -> Result<Group, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let names: Vec<&str> = members.split(',').collect();
    let member_ids = svc.resolve_usernames(&actor, "members", &names).await.map_err(map)?;
    let input = bindery_model::GroupInput { name, description, member_ids };
    match id {
        Some(id) => svc.update_group(&actor, id, &input).await,
        None => svc.create_group(&actor, &input).await,
    }
    .map_err(map)
}

#[server(prefix = "/rpc", endpoint = "delete_group")]
pub async fn delete_group(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_group(&actor, id).await.map_err(map)
}

// ----- settings ----------------------------------------------------------------

#[server(name = GetBasicSettings, prefix = "/rpc", endpoint = "basic_settings")]
pub async fn basic_settings() -> Result<BasicSettings, AppError> {
    let (svc, actor) = caller()?;
    svc.get_basic_settings(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "save_basic_settings")]
pub async fn save_basic_settings(
    site_url: String,
    session_idle_minutes: String,
    session_absolute_hours: String,
    log_retention_days: String,
) -> Result<BasicSettings, AppError> {
    let (svc, actor) = caller()?;
    let mut errors = Vec::new();
    let idle = crate::parse_int(&mut errors, "session_idle_minutes", &session_idle_minutes);
    let abs = crate::parse_int(&mut errors, "session_absolute_hours", &session_absolute_hours);
    let retention = crate::parse_int(&mut errors, "log_retention_days", &log_retention_days);
    actor.require_admin().map_err(map)?;
    if !errors.is_empty() {
        return Err(map(bindery_service::Error::Invalid(errors)));
    }
    let s = BasicSettings { site_url, session_idle_minutes: idle, session_absolute_hours: abs, log_retention_days: retention };
    svc.update_basic_settings(&actor, s).await.map_err(map)
}

#[server(name = GetSecuritySettings, prefix = "/rpc", endpoint = "security_settings")]
pub async fn security_settings() -> Result<SecuritySettings, AppError> {
    let (svc, actor) = caller()?;
    svc.get_security_settings(&actor).await.map_err(map)
}

/// The lockout fields added later (`lockout_ip_max_failures`,
/// `lockout_exempt_networks`: one network per line or comma-separated)
/// keep their stored values when a form leaves them out.
#[server(prefix = "/rpc", endpoint = "save_security_settings")]
#[allow(clippy::too_many_arguments)]
pub async fn save_security_settings(
    lockout_max_failures: String,
    lockout_window_minutes: String,
    min_password_length: String,
    only_imported_users: Option<String>,
    bearer_token_minutes: String,
    revalidate_minutes: String,
    lockout_ip_max_failures: Option<String>,
    lockout_exempt_networks: Option<String>,
) -> Result<SecuritySettings, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let stored = svc.security_settings().await.map_err(map)?;
    let mut errors = Vec::new();
    let s = SecuritySettings {
        lockout_max_failures: crate::parse_int(&mut errors, "lockout_max_failures", &lockout_max_failures),
        lockout_window_minutes: crate::parse_int(&mut errors, "lockout_window_minutes", &lockout_window_minutes),
        lockout_ip_max_failures: match lockout_ip_max_failures {
            Some(v) => crate::parse_int(&mut errors, "lockout_ip_max_failures", &v),
            None => stored.lockout_ip_max_failures,
        },
        lockout_exempt_networks: match lockout_exempt_networks {
            Some(v) => v.split([',', '\n']).map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
            None => stored.lockout_exempt_networks,
        },
        min_password_length: crate::parse_int(&mut errors, "min_password_length", &min_password_length),
        only_imported_users: only_imported_users.is_some(),
        bearer_token_minutes: crate::parse_int(&mut errors, "bearer_token_minutes", &bearer_token_minutes),
        revalidate_minutes: crate::parse_int(&mut errors, "revalidate_minutes", &revalidate_minutes),
    };
    if !errors.is_empty() {
        return Err(map(bindery_service::Error::Invalid(errors)));
    }
    svc.update_security_settings(&actor, s).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_lockouts")]
pub async fn list_lockouts() -> Result<Vec<Lockout>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_lockouts(&actor).await.map_err(map)
}

/// `key` is `user:<name>` or `ip:<address>`.
#[server(prefix = "/rpc", endpoint = "unlock")]
pub async fn unlock(key: String) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.unlock(&actor, &key).await.map_err(map)
}

// ----- API tokens ----------------------------------------------------------------

#[server(prefix = "/rpc", endpoint = "list_tokens")]
pub async fn list_tokens() -> Result<Vec<ApiToken>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_api_tokens(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_token")]
pub async fn create_token(name: String, username: String, expires_in_days: String) -> Result<CreatedApiToken, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let user_id = if username.trim().is_empty() {
        None
    } else {
        svc.resolve_usernames(&actor, "username", &[username.as_str()]).await.map_err(map)?.first().copied()
    };
    let expires_in_days = if expires_in_days.trim().is_empty() {
        None
    } else {
        let mut errors = Vec::new();
        let d = crate::parse_int(&mut errors, "expires_in_days", &expires_in_days);
        if !errors.is_empty() {
            return Err(map(bindery_service::Error::Invalid(errors)));
        }
        Some(d)
    };
    svc.create_api_token(&actor, &bindery_model::NewApiToken { name, user_id, expires_in_days }).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "revoke_token")]
pub async fn revoke_token(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.revoke_api_token(&actor, id).await.map_err(map)
}

// ----- directories (LDAP / LDAP HA) ----------------------------------------------

/// The directory form as the browser sends it (all text; checkboxes are
/// present when ticked). The bind password and client key are write-only:
/// empty means "keep the stored one".
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryForm {
    #[serde(default)]
    pub enabled: Option<String>,
    #[serde(default)]
    pub server_uris: String,
    #[serde(default)]
    pub starttls: Option<String>,
    #[serde(default)]
    pub bind_dn: String,
    #[serde(default)]
    pub bind_password: String,
    #[serde(default)]
    pub search_ous: String,
    #[serde(default)]
    pub search_filter: String,
    #[serde(default)]
    pub attr_map: String,
    #[serde(default)]
    pub group_mode: String,
    #[serde(default)]
    pub group_base: String,
    #[serde(default)]
    pub group_filter: String,
    #[serde(default)]
    pub nested_groups: Option<String>,
    /// One mapping per line: `group DN => role; organisation, …`.
    #[serde(default)]
    pub group_mappings: String,
    #[serde(default)]
    pub connect_timeout_secs: String,
    #[serde(default)]
    pub op_timeout_secs: String,
    #[serde(default)]
    pub page_size: String,
    #[serde(default)]
    pub dn_cache_secs: String,
    #[serde(default)]
    pub ca_pem: String,
    #[serde(default)]
    pub client_cert_pem: String,
    #[serde(default)]
    pub client_key_pem: String,
    #[serde(default)]
    pub skip_verify: Option<String>,
}

impl std::fmt::Debug for DirectoryForm {
    /// Secrets show as `<redacted>` (or `None` when unset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DirectoryForm {
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
        f.debug_struct("DirectoryForm")
            .field("enabled", enabled)
            .field("server_uris", server_uris)
            .field("starttls", starttls)
            .field("bind_dn", bind_dn)
            .field("bind_password", &bindery_model::redact(bind_password))
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
            .field("client_key_pem", &bindery_model::redact(client_key_pem))
            .field("skip_verify", skip_verify)
            .finish()
    }
}

impl DirectoryForm {
    /// To the API's input, naming every field that is not a number.
    pub fn into_input(self) -> Result<bindery_model::DirectoryInput, Vec<FieldError>> {
        let mut errors = Vec::new();
        let connect_timeout_secs = crate::parse_int(&mut errors, "connect_timeout_secs", &self.connect_timeout_secs);
        let op_timeout_secs = crate::parse_int(&mut errors, "op_timeout_secs", &self.op_timeout_secs);
        let page_size = crate::parse_int(&mut errors, "page_size", &self.page_size);
        let dn_cache_secs = crate::parse_int(&mut errors, "dn_cache_secs", &self.dn_cache_secs);
        let mut group_mappings = Vec::new();
        for (n, line) in self.group_mappings.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match bindery_model::GroupMapping::parse_line(line) {
                Ok(m) => group_mappings.push(m),
                Err(e) => errors.push(FieldError::new("group_mappings", format!("line {}: {e}", n + 1))),
            }
        }
        let group_mode = match self.group_mode.as_str() {
            "search" => bindery_model::GroupMode::Search,
            _ => bindery_model::GroupMode::Attribute,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(bindery_model::DirectoryInput {
            enabled: self.enabled.is_some(),
            server_uris: self.server_uris.split(['\n', ',']).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            starttls: self.starttls.is_some(),
            bind_dn: self.bind_dn,
            bind_password: (!self.bind_password.is_empty()).then_some(self.bind_password),
            search_ous: self.search_ous,
            search_filter: self.search_filter,
            attr_map: self.attr_map,
            group_mode,
            group_base: self.group_base,
            group_filter: self.group_filter,
            nested_groups: self.nested_groups.is_some(),
            group_mappings,
            connect_timeout_secs,
            op_timeout_secs,
            page_size,
            dn_cache_secs,
            ca_pem: self.ca_pem,
            client_cert_pem: self.client_cert_pem,
            client_key_pem: (!self.client_key_pem.trim().is_empty()).then_some(self.client_key_pem),
            skip_verify: self.skip_verify.is_some(),
        })
    }
}

#[cfg(feature = "ssr")]
fn directory_args(kind: &str, form: DirectoryForm) -> Result<(bindery_model::DirectoryKind, bindery_model::DirectoryInput), AppError> {
    let kind = bindery_model::DirectoryKind::parse(kind).ok_or_else(|| map(bindery_service::Error::NotFound("directory configuration")))?;
    let input = form.into_input().map_err(|e| map(bindery_service::Error::Invalid(e)))?;
    Ok((kind, input))
}

#[server(name = GetDirectoryHealth, prefix = "/rpc", endpoint = "directory_health")]
pub async fn directory_health() -> Result<Vec<bindery_model::ServerHealth>, AppError> {
    let (svc, actor) = caller()?;
    svc.directory_health(&actor).await.map_err(map)
}

#[server(name = GetDirectory, prefix = "/rpc", endpoint = "get_directory")]
pub async fn get_directory(kind: String) -> Result<bindery_model::DirectorySettings, AppError> {
    let (svc, actor) = caller()?;
    let kind =
        bindery_model::DirectoryKind::parse(&kind).ok_or_else(|| map(bindery_service::Error::NotFound("directory configuration")))?;
    svc.get_directory(&actor, kind).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "save_directory")]
pub async fn save_directory(kind: String, form: DirectoryForm) -> Result<bindery_model::DirectorySettings, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.save_directory(&actor, kind, &input).await.map_err(map)
}

/// "Test connection" on the form's current (unsaved) values.
#[server(prefix = "/rpc", endpoint = "test_directory")]
pub async fn test_directory(kind: String, form: DirectoryForm) -> Result<bindery_model::ProbeReport, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.test_directory_connection(&actor, kind, Some(&input)).await.map_err(map)
}

/// "Test login" on the form's current values; `lookup_only` skips the bind.
#[server(prefix = "/rpc", endpoint = "test_directory_login")]
pub async fn test_directory_login(
    kind: String,
    form: DirectoryForm,
    test_username: String,
    test_password: Password,
    lookup_only: Option<String>,
) -> Result<bindery_model::LoginTestReport, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    let password = if lookup_only.is_some() { None } else { Some(test_password.expose()) };
    if password.is_some_and(|p| p.trim().is_empty()) {
        return Err(map(bindery_service::Error::field("test_password", "enter the password, or tick \"lookup only\"")));
    }
    svc.test_directory_login(&actor, kind, Some(&input), &test_username, password).await.map_err(map)
}

/// "Fetch certificate": the chain each server presents.
#[server(prefix = "/rpc", endpoint = "fetch_directory_certificates")]
pub async fn fetch_directory_certificates(kind: String, form: DirectoryForm) -> Result<Vec<bindery_model::ServerCertificates>, AppError> {
    let (svc, actor) = caller()?;
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.fetch_directory_certificates(&actor, kind, Some(&input)).await.map_err(map)
}

// ----- user import ------------------------------------------------------------------

#[cfg(feature = "ssr")]
fn kind_arg(kind: &str) -> Result<bindery_model::DirectoryKind, AppError> {
    bindery_model::DirectoryKind::parse(kind).ok_or_else(|| map(bindery_service::Error::NotFound("directory configuration")))
}

#[server(prefix = "/rpc", endpoint = "start_user_fetch")]
pub async fn start_user_fetch(kind: String) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.start_user_fetch(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "cancel_user_fetch")]
pub async fn cancel_user_fetch(kind: String) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.cancel_user_fetch(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "user_fetch_status")]
pub async fn user_fetch_status(kind: String) -> Result<Option<bindery_model::SyncRun>, AppError> {
    let (svc, actor) = caller()?;
    svc.user_fetch_status(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_staged_users")]
pub async fn list_staged_users(
    kind: String,
    status: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    desc: Option<bool>,
    page: Option<i64>,
    per_page: Option<i64>,
) -> Result<bindery_model::Page<bindery_model::StagedUser>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_staged_users(
        &actor,
        kind_arg(&kind)?,
        status.as_deref(),
        q.as_deref(),
        sort.as_deref(),
        desc.unwrap_or(false),
        page.unwrap_or(1),
        per_page.unwrap_or(15),
    )
    .await
    .map_err(map)
}

/// The import form: checked rows are `ids[<id>]=on`, organisations `orgs[<id>]=on`.
#[server(prefix = "/rpc", endpoint = "import_users")]
pub async fn import_users(
    kind: String,
    ids: Option<HashMap<String, String>>,
    orgs: Option<HashMap<String, String>>,
    all_matching: Option<String>,
    status: Option<String>,
    q: Option<String>,
) -> Result<bindery_model::ImportResult, AppError> {
    let (svc, actor) = caller()?;
    let req = bindery_model::ImportRequest {
        ids: checked_ids(&ids),
        all_matching: all_matching.is_some_and(|v| v == "true" || v == "on"),
        status,
        q,
        organisation_ids: checked_ids(&orgs),
    };
    svc.import_staged_users(&actor, kind_arg(&kind)?, &req).await.map_err(map)
}

// ----- sync ----------------------------------------------------------------------

#[server(prefix = "/rpc", endpoint = "sync_settings")]
pub async fn sync_settings(kind: String) -> Result<bindery_model::SyncSettingsView, AppError> {
    let (svc, actor) = caller()?;
    svc.sync_settings(&actor, kind_arg(&kind)?).await.map_err(map)
}

/// The sync settings form: organisations are `orgs[<id>]=on`, recipients
/// usernames separated by commas.
#[server(prefix = "/rpc", endpoint = "save_sync_settings")]
pub async fn save_sync_settings(
    kind: String,
    orgs: Option<HashMap<String, String>>,
    periodic: Option<String>,
    crontab: String,
    interval_hours: String,
    recipients: String,
    disable_missing: Option<String>,
    threshold_percent: String,
    mode: Option<String>,
    full_every_hours: Option<String>,
) -> Result<bindery_model::SyncSettingsView, AppError> {
    let (svc, actor) = caller()?;
    let mut errors = Vec::new();
    let interval = if interval_hours.trim().is_empty() { 0 } else { crate::parse_int(&mut errors, "interval_hours", &interval_hours) };
    let mode = match mode.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => bindery_model::SyncMode::Full,
        Some(m) => bindery_model::SyncMode::parse(m).unwrap_or_else(|| {
            errors.push(bindery_model::FieldError::new("mode", "one of: full, delta"));
            bindery_model::SyncMode::Full
        }),
    };
    let full_every_hours = match full_every_hours.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        None => 24,
        Some(h) => crate::parse_int(&mut errors, "full_every_hours", h),
    };
    let s = bindery_model::SyncSettings {
        organisation_ids: checked_ids(&orgs),
        periodic: periodic.is_some(),
        crontab,
        interval_hours: interval,
        recipients: recipients.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect(),
        disable_missing: disable_missing.is_some(),
        threshold_percent: crate::parse_int(&mut errors, "threshold_percent", &threshold_percent),
        mode,
        full_every_hours,
    };
    actor.require_admin().map_err(map)?;
    if !errors.is_empty() {
        return Err(map(bindery_service::Error::Invalid(errors)));
    }
    svc.save_sync_settings(&actor, kind_arg(&kind)?, &s).await.map_err(map)
}

/// "Sync now", or its dry-run (`dry_run` set).
#[server(prefix = "/rpc", endpoint = "start_sync")]
pub async fn start_sync(kind: String, dry_run: Option<String>) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.start_sync(&actor, kind_arg(&kind)?, dry_run.is_some_and(|d| d == "true" || d == "on")).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_sync_runs")]
pub async fn list_sync_runs(page: Option<i64>) -> Result<Page<bindery_model::SyncRun>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_sync_runs(&actor, page.unwrap_or(1), 20).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "sync_run")]
pub async fn sync_run(id: i64, action: Option<String>, page: Option<i64>) -> Result<bindery_model::SyncRunDetail, AppError> {
    let (svc, actor) = caller()?;
    svc.sync_run(&actor, id, action.as_deref(), page.unwrap_or(1), 50).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "approve_sync")]
pub async fn approve_sync(id: i64) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.approve_sync(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "reject_sync")]
pub async fn reject_sync(id: i64) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.reject_sync(&actor, id).await.map_err(map)
}
