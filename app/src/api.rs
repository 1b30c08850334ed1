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

use bindery_model::{FieldError, Page};
use leptos::prelude::*;
use leptos::server_fn::codec::Post;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use leptos::server_fn::{ContentType, Decodes, Encodes, Format, FormatType};
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

/// The server functions' answers: JSON, exactly as server_fn's own `Json`
/// writes it, but read from a `&str` in the browser. The page's resources
/// are read from a `&str` too (their JSON is in the HTML), so each answer
/// type has one JSON decoder in the WASM instead of two (server_fn's `Json`
/// reads from bytes: another copy of every type's decoder, ~0.2 MB).
pub struct StrJson;

/// `output = Answer` on every server function.
pub type Answer = Post<StrJson>;

impl ContentType for StrJson {
    const CONTENT_TYPE: &'static str = "application/json";
}

impl FormatType for StrJson {
    const FORMAT_TYPE: Format = Format::Text;
}

impl<T: Serialize> Encodes<T> for StrJson {
    type Error = serde_json::Error;

    fn encode(output: &T) -> Result<leptos::server_fn::Bytes, Self::Error> {
        serde_json::to_vec(output).map(Into::into)
    }
}

impl<T: serde::de::DeserializeOwned> Decodes<T> for StrJson {
    type Error = serde_json::Error;

    fn decode(bytes: leptos::server_fn::Bytes) -> Result<T, Self::Error> {
        match std::str::from_utf8(&bytes) {
            Ok(s) => serde_json::from_str(s),
            Err(_) => Err(serde::de::Error::custom("the answer is not UTF-8")),
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = StrJson;

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
pub(crate) mod ssr {
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

    pub fn query(q: Option<String>, page: Option<i64>) -> bindery_model::ListQuery {
        bindery_model::ListQuery { q, page, per_page: None }
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

// ----- dashboard and logs ----------------------------------------------------

// ----- users -------------------------------------------------------------------

// ----- organisations and groups ------------------------------------------------

// ----- settings ----------------------------------------------------------------

// ----- API tokens ----------------------------------------------------------------

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

#[server(name = GetDirectoryHealth, prefix = "/rpc", endpoint = "directory_health", output = crate::api::Answer)]
pub async fn directory_health() -> Result<Vec<bindery_model::ServerHealth>, AppError> {
    let (svc, actor) = caller()?;
    svc.directory_health(&actor).await.map_err(map)
}

#[server(name = GetDirectory, prefix = "/rpc", endpoint = "get_directory", output = crate::api::Answer)]
pub async fn get_directory(kind: String) -> Result<bindery_model::DirectorySettings, AppError> {
    let (svc, actor) = caller()?;
    let kind =
        bindery_model::DirectoryKind::parse(&kind).ok_or_else(|| map(bindery_service::Error::NotFound("directory configuration")))?;
    svc.get_directory(&actor, kind).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "save_directory", output = crate::api::Answer)]
pub async fn save_directory(kind: String, form: DirectoryForm) -> Result<bindery_model::DirectorySettings, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.save_directory(&actor, kind, &input).await.map_err(map)
}

/// "Test connection" on the form's current (unsaved) values.
#[server(prefix = "/rpc", endpoint = "test_directory", output = crate::api::Answer)]
pub async fn test_directory(kind: String, form: DirectoryForm) -> Result<bindery_model::ProbeReport, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.test_directory_connection(&actor, kind, Some(&input)).await.map_err(map)
}

/// "Test login" on the form's current values; `lookup_only` skips the bind.
#[server(prefix = "/rpc", endpoint = "test_directory_login", output = crate::api::Answer)]
pub async fn test_directory_login(
    kind: String,
    form: DirectoryForm,
    test_username: String,
    test_password: Password,
    lookup_only: Option<String>,
) -> Result<bindery_model::LoginTestReport, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    let password = if lookup_only.is_some() { None } else { Some(test_password.expose()) };
    if password.is_some_and(|p| p.trim().is_empty()) {
        return Err(map(bindery_service::Error::field("test_password", "enter the password, or tick \"lookup only\"")));
    }
    svc.test_directory_login(&actor, kind, Some(&input), &test_username, password).await.map_err(map)
}

/// "Fetch certificate": the chain each server presents.
#[server(prefix = "/rpc", endpoint = "fetch_directory_certificates", output = crate::api::Answer)]
pub async fn fetch_directory_certificates(kind: String, form: DirectoryForm) -> Result<Vec<bindery_model::ServerCertificates>, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
    let (kind, input) = directory_args(&kind, form)?;
    svc.fetch_directory_certificates(&actor, kind, Some(&input)).await.map_err(map)
}

// ----- user import ------------------------------------------------------------------

#[cfg(feature = "ssr")]
fn kind_arg(kind: &str) -> Result<bindery_model::DirectoryKind, AppError> {
    bindery_model::DirectoryKind::parse(kind).ok_or_else(|| map(bindery_service::Error::NotFound("directory configuration")))
}

#[server(prefix = "/rpc", endpoint = "start_user_fetch", output = crate::api::Answer)]
pub async fn start_user_fetch(kind: String) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.start_user_fetch(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "cancel_user_fetch", output = crate::api::Answer)]
pub async fn cancel_user_fetch(kind: String) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.cancel_user_fetch(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "user_fetch_status", output = crate::api::Answer)]
pub async fn user_fetch_status(kind: String) -> Result<Option<bindery_model::SyncRun>, AppError> {
    let (svc, actor) = caller()?;
    svc.user_fetch_status(&actor, kind_arg(&kind)?).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_staged_users", output = crate::api::Answer)]
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
#[server(prefix = "/rpc", endpoint = "import_users", output = crate::api::Answer)]
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

#[server(prefix = "/rpc", endpoint = "sync_settings", output = crate::api::Answer)]
pub async fn sync_settings(kind: String) -> Result<bindery_model::SyncSettingsView, AppError> {
    let (svc, actor) = caller()?;
    svc.sync_settings(&actor, kind_arg(&kind)?).await.map_err(map)
}

/// The sync settings form: organisations are `orgs[<id>]=on`, recipients
/// usernames separated by commas.
#[server(prefix = "/rpc", endpoint = "save_sync_settings", output = crate::api::Answer)]
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
    live: Option<String>,
) -> Result<bindery_model::SyncSettingsView, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
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
        live: live.is_some(),
    };
    if !errors.is_empty() {
        return Err(map(bindery_service::Error::Invalid(errors)));
    }
    svc.save_sync_settings(&actor, kind_arg(&kind)?, &s).await.map_err(map)
}

/// "Sync now", or its dry-run (`dry_run` set).
#[server(prefix = "/rpc", endpoint = "start_sync", output = crate::api::Answer)]
pub async fn start_sync(kind: String, dry_run: Option<String>) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.start_sync(&actor, kind_arg(&kind)?, dry_run.is_some_and(|d| d == "true" || d == "on")).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_sync_runs", output = crate::api::Answer)]
pub async fn list_sync_runs(page: Option<i64>) -> Result<Page<bindery_model::SyncRun>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_sync_runs(&actor, page.unwrap_or(1), 20).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "sync_run", output = crate::api::Answer)]
pub async fn sync_run(id: i64, action: Option<String>, page: Option<i64>) -> Result<bindery_model::SyncRunDetail, AppError> {
    let (svc, actor) = caller()?;
    svc.sync_run(&actor, id, action.as_deref(), page.unwrap_or(1), 50).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "approve_sync", output = crate::api::Answer)]
pub async fn approve_sync(id: i64) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.approve_sync(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "reject_sync", output = crate::api::Answer)]
pub async fn reject_sync(id: i64) -> Result<bindery_model::SyncRun, AppError> {
    let (svc, actor) = caller()?;
    svc.reject_sync(&actor, id).await.map_err(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::server_fn::codec::JsonEncoding;

    /// `Answer` writes the bytes server_fn's `Json` writes (the no-JS flash
    /// and any other reader of `/rpc/` see no change) and reads them back.
    #[test]
    fn answers_are_the_same_json() {
        let answer: Result<Page<FieldError>, AppError> =
            Ok(Page { items: vec![FieldError::new("name", "é — ok")], total: 1, page: 1, per_page: 50 });
        let ours = <StrJson as Encodes<_>>::encode(&answer).unwrap();
        assert_eq!(ours, <JsonEncoding as Encodes<_>>::encode(&answer).unwrap());
        let back: Result<Page<FieldError>, AppError> = <StrJson as Decodes<_>>::decode(ours).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&answer).unwrap());

        let error = AppError::Invalid(vec![FieldError::new("site_url", "must be a URL")]);
        let bytes = <StrJson as Encodes<_>>::encode(&error).unwrap();
        assert_eq!(<StrJson as Decodes<AppError>>::decode(bytes).unwrap(), error);
        assert!(<StrJson as Decodes<AppError>>::decode(vec![0xff, 0xfe].into()).is_err(), "not UTF-8");
    }
}
