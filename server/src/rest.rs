//! The REST API under `/api/v1`, documented at `/api/openapi.json`.
//!
//! Callers authenticate with the console's session cookie or with
//! `Authorization: Bearer <API token>`. Handlers are thin: caller → service
//! → one exhaustive error mapping.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bindery_model::{
    AccessExplanation, AccessFact, ActivityBucket, ApiError, ApiToken, BasicSettings, CertificateDetails, CreatedApiToken, CurrentUser,
    Dashboard, DeltaSupportInfo, DirectoryInput, DirectoryKind, DirectorySettings, FieldError, Group, GroupInput, GroupMapping, GroupMode,
    ImportOutcome, ImportRequest, ImportResult, ListQuery, LiveStatus, Lockout, LogQuery, LoginEvent, LoginTestReport, MappedUser,
    NamedRef, NewApiToken, NewUser, OperationEvent, Organisation, OrganisationInput, Page, ProbeReport, ProbeStep, Role, SecuritySettings,
    ServerCertificates, ServerHealth, ServerProbe, StagedQuery, StagedUser, SyncCounts, SyncItem, SyncMode, SyncPoint, SyncRequest,
    SyncRun, SyncRunDetail, SyncSettings, SyncSettingsView, User, UserSource, UserUpdate,
};
use bindery_service::{Actor, Error, RequestContext};
use http::StatusCode;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;

/// Mounted at `/api` (its fallback answers unknown API paths in JSON).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/me", get(me))
        .route("/v1/me/password", post(change_password))
        .route("/v1/dashboard", get(dashboard))
        .route("/v1/logs/login", get(login_log))
        .route("/v1/logs/login.csv", get(login_log_csv))
        .route("/v1/logs/operations", get(operation_log))
        .route("/v1/logs/operations.csv", get(operation_log_csv))
        .route("/v1/settings/basic", get(get_basic_settings).put(put_basic_settings))
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{id}", get(get_user).patch(update_user).delete(delete_user))
        .route("/v1/users/{id}/reset_password", post(reset_password))
        .route("/v1/users/{id}/explain_access", get(explain_access))
        .route("/v1/users/{id}/relink", post(relink_user))
        .route("/v1/organisations", get(list_organisations).post(create_organisation))
        .route("/v1/organisations/{id}", axum::routing::patch(rename_organisation).delete(delete_organisation))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{id}", axum::routing::put(update_group).delete(delete_group))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/settings/security", get(get_security_settings).put(put_security_settings))
        .route("/v1/lockouts", get(list_lockouts))
        .route("/v1/lockouts/{key}", axum::routing::delete(unlock))
        .route("/v1/authn/ldap/{username}/authenticate", post(authn_authenticate))
        .route("/v1/authn/ldap/login", get(authn_login))
        .route("/v1/directories", get(list_directories))
        .route("/v1/directories/health", get(directory_health))
        .route("/v1/directories/{kind}", get(get_directory).put(put_directory).delete(delete_directory))
        .route("/v1/directories/{kind}/verify_connection", post(verify_connection))
        .route("/v1/directories/{kind}/test_login", post(test_login))
        .route("/v1/directories/{kind}/fetch_certificates", post(fetch_certificates))
        .route("/v1/directories/{kind}/users", get(list_staged))
        .route("/v1/directories/{kind}/users.csv", get(staged_csv))
        .route("/v1/directories/{kind}/users/fetch", get(fetch_status).post(start_fetch).delete(cancel_fetch))
        .route("/v1/directories/{kind}/users/import", post(import_users))
        .route("/v1/directories/{kind}/sync/settings", get(get_sync_settings).put(put_sync_settings))
        .route("/v1/directories/{kind}/sync", post(start_sync))
        .route("/v1/directories/{kind}/sync/live", get(get_live_status))
        .route("/v1/sync/runs", get(list_sync_runs))
        .route("/v1/sync/runs/{id}", get(get_sync_run))
        .route("/v1/sync/runs/{id}/report.csv", get(sync_run_csv))
        .route("/v1/sync/runs/{id}/approve", post(approve_sync))
        .route("/v1/sync/runs/{id}/reject", post(reject_sync))
        .route("/v1/sync/runs/{id}/cancel", post(cancel_sync))
        .fallback(|| async { ApiErr(Error::NotFound("endpoint")) })
}

/// A service error as an HTTP answer.
pub struct ApiErr(pub Error);

impl From<Error> for ApiErr {
    fn from(e: Error) -> Self {
        ApiErr(e)
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        // Exhaustive on purpose: a new error variant must be decided here.
        let (status, code, message, fields) = match self.0 {
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", "authentication required".to_string(), vec![]),
            Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "your role does not allow this".to_string(), vec![]),
            Error::PasswordChangeRequired => {
                (StatusCode::FORBIDDEN, "password_change_required", "change the one-time password first".to_string(), vec![])
            }
            Error::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", format!("{what} not found"), vec![]),
            Error::Invalid(fields) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", "some fields are invalid".to_string(), fields),
            Error::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, vec![]),
            e @ (Error::Store(_) | Error::Internal(_)) => {
                tracing::error!(error = %e, "REST request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log".to_string(), vec![])
            }
        };
        let mut res = (status, Json(ApiError { error: code.into(), message, fields })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"bindery\""));
        }
        res
    }
}

/// JSON body whose parse errors name the offending field, as a 422.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiErr;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let message = match &rejection {
                    JsonRejection::JsonDataError(e) => std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.body_text()),
                    other => other.body_text(),
                };
                let field = message.split('`').nth(1).filter(|_| message.contains("field")).unwrap_or("body").to_string();
                Err(ApiErr(Error::Invalid(vec![FieldError::new(field, message)])))
            }
        }
    }
}

fn actor(ctx: &RequestContext) -> Result<Actor, ApiErr> {
    Ok(ctx.actor()?)
}

type ApiResult<T> = Result<T, ApiErr>;

/// A password change through the API.
#[derive(serde::Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
    pub confirm_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { <redacted> }")
    }
}

#[derive(Serialize, ToSchema)]
pub struct OneTimePassword {
    pub password: String,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "session", responses((status = 200, body = CurrentUser), (status = 401, body = ApiError)))]
async fn me(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<CurrentUser>> {
    let a = actor(&ctx)?;
    Ok(Json(s.service.current_user(&a.principal).await))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, body = Page<User>), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_users(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(s.service.list_users(&actor(&ctx)?, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 422, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn create_user(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((StatusCode::CREATED, Json(s.service.create_user(&actor(&ctx)?, &input).await?)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 404, body = ApiError)))]
async fn get_user(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<Json<User>> {
    Ok(Json(s.service.get_user(&actor(&ctx)?, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserUpdate,
    responses((status = 200, body = User), (status = 422, body = ApiError), (status = 404, body = ApiError)))]
async fn update_user(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
    Body(input): Body<UserUpdate>,
) -> ApiResult<Json<User>> {
    Ok(Json(s.service.update_user(&actor(&ctx)?, id, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
async fn delete_user(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    s.service.delete_user(&actor(&ctx)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/{id}/explain_access", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = AccessExplanation, description = "Why the user can or cannot sign in, fact by fact"), (status = 404, body = ApiError)))]
async fn explain_access(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
) -> ApiResult<Json<AccessExplanation>> {
    Ok(Json(s.service.explain_access(&actor(&ctx)?, id).await?))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/relink", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User, description = "Linked to the directory entry that answers to the user's name now; every session and token revoked, role and organisations recomputed"),
        (status = 409, body = ApiError), (status = 404, body = ApiError)))]
async fn relink_user(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<Json<User>> {
    Ok(Json(s.service.relink_user(&actor(&ctx)?, id).await?))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reset_password", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = OneTimePassword, description = "A new one-time password, shown once")))]
async fn reset_password(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
) -> ApiResult<Json<OneTimePassword>> {
    let p = s.service.reset_password(&actor(&ctx)?, id, None).await?;
    Ok(Json(OneTimePassword { password: p.expose().to_string() }))
}

#[utoipa::path(get, path = "/api/v1/organisations", tag = "organisations", responses((status = 200, body = Vec<Organisation>)))]
async fn list_organisations(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<Organisation>>> {
    Ok(Json(s.service.list_organisations(&actor(&ctx)?).await?))
}

#[utoipa::path(post, path = "/api/v1/organisations", tag = "organisations", request_body = OrganisationInput,
    responses((status = 201, body = Organisation), (status = 422, body = ApiError)))]
async fn create_organisation(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<OrganisationInput>,
) -> ApiResult<(StatusCode, Json<Organisation>)> {
    Ok((StatusCode::CREATED, Json(s.service.create_organisation(&actor(&ctx)?, &input).await?)))
}

#[utoipa::path(patch, path = "/api/v1/organisations/{id}", tag = "organisations", params(("id" = i64, Path)), request_body = OrganisationInput,
    responses((status = 200, body = Organisation)))]
async fn rename_organisation(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
    Body(input): Body<OrganisationInput>,
) -> ApiResult<Json<Organisation>> {
    Ok(Json(s.service.rename_organisation(&actor(&ctx)?, id, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/organisations/{id}", tag = "organisations", params(("id" = i64, Path)), responses((status = 204)))]
async fn delete_organisation(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    s.service.delete_organisation(&actor(&ctx)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", responses((status = 200, body = Vec<Group>)))]
async fn list_groups(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(s.service.list_groups(&actor(&ctx)?).await?))
}

#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = GroupInput,
    responses((status = 201, body = Group), (status = 422, body = ApiError, description = "Names each invalid field"), (status = 403, body = ApiError)))]
async fn create_group(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<GroupInput>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    Ok((StatusCode::CREATED, Json(s.service.create_group(&actor(&ctx)?, &input).await?)))
}

#[utoipa::path(put, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = i64, Path)), request_body = GroupInput,
    responses((status = 200, body = Group), (status = 422, body = ApiError), (status = 404, body = ApiError)))]
async fn update_group(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
    Body(input): Body<GroupInput>,
) -> ApiResult<Json<Group>> {
    Ok(Json(s.service.update_group(&actor(&ctx)?, id, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
async fn delete_group(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    s.service.delete_group(&actor(&ctx)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "session", request_body = PasswordChange,
    responses((status = 204, description = "Changed; every session of the user ends (API tokens stay)"),
        (status = 422, body = ApiError, description = "Names the field: current_password, new_password or confirm_password")))]
async fn change_password(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<PasswordChange>,
) -> ApiResult<StatusCode> {
    s.service.change_password(&actor(&ctx)?, &input.current_password, &input.new_password, &input.confirm_password, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/dashboard", tag = "dashboard",
    responses((status = 200, body = Dashboard, description = "Counts, sign-in activity, server health and notifications"), (status = 401, body = ApiError)))]
async fn dashboard(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Dashboard>> {
    Ok(Json(s.service.dashboard(&actor(&ctx)?).await?))
}

#[utoipa::path(get, path = "/api/v1/logs/login", tag = "logs", params(LogQuery),
    responses((status = 200, body = Page<LoginEvent>), (status = 422, body = ApiError, description = "Names the invalid filter")))]
async fn login_log(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Page<LoginEvent>>> {
    Ok(Json(s.service.login_log(&actor(&ctx)?, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/logs/login.csv", tag = "logs", params(LogQuery),
    responses((status = 200, content_type = "text/csv", description = "Every matching entry, newest first, formula-safe"), (status = 422, body = ApiError)))]
async fn login_log_csv(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    Ok(csv_download("bindery-login-log.csv", s.service.login_log_csv(&actor(&ctx)?, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/logs/operations", tag = "logs", params(LogQuery),
    responses((status = 200, body = Page<OperationEvent>), (status = 422, body = ApiError, description = "Names the invalid filter")))]
async fn operation_log(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Page<OperationEvent>>> {
    Ok(Json(s.service.operation_log(&actor(&ctx)?, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/logs/operations.csv", tag = "logs", params(LogQuery),
    responses((status = 200, content_type = "text/csv", description = "Every matching entry, newest first, formula-safe"), (status = 422, body = ApiError)))]
async fn operation_log_csv(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    Ok(csv_download("bindery-operation-log.csv", s.service.operation_log_csv(&actor(&ctx)?, &q).await?))
}

fn csv_download(name: &str, csv: String) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        csv,
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/settings/basic", tag = "settings", responses((status = 200, body = BasicSettings)))]
async fn get_basic_settings(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<BasicSettings>> {
    Ok(Json(s.service.get_basic_settings(&actor(&ctx)?).await?))
}

#[utoipa::path(put, path = "/api/v1/settings/basic", tag = "settings", request_body = BasicSettings,
    responses((status = 200, body = BasicSettings), (status = 422, body = ApiError, description = "Names each invalid field; nothing saved"),
        (status = 403, body = ApiError)))]
async fn put_basic_settings(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<BasicSettings>,
) -> ApiResult<Json<BasicSettings>> {
    Ok(Json(s.service.update_basic_settings(&actor(&ctx)?, input).await?))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<ApiToken>)))]
async fn list_tokens(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(s.service.list_api_tokens(&actor(&ctx)?).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewApiToken,
    responses((status = 201, body = CreatedApiToken, description = "The secret is in this answer only")))]
async fn create_token(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<NewApiToken>,
) -> ApiResult<(StatusCode, Json<CreatedApiToken>)> {
    Ok((StatusCode::CREATED, Json(s.service.create_api_token(&actor(&ctx)?, &input).await?)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)), responses((status = 204)))]
async fn revoke_token(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    s.service.revoke_api_token(&actor(&ctx)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/settings/security", tag = "security",
    responses((status = 200, body = SecuritySettings), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn get_security_settings(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<SecuritySettings>> {
    Ok(Json(s.service.get_security_settings(&actor(&ctx)?).await?))
}

#[utoipa::path(put, path = "/api/v1/settings/security", tag = "security", request_body = SecuritySettings,
    responses((status = 200, body = SecuritySettings, description = "As saved (exempt networks normalised, e.g. 10.1.2.3/8 → 10.0.0.0/8)"),
        (status = 422, body = ApiError, description = "Names each invalid field; nothing saved"), (status = 403, body = ApiError)))]
async fn put_security_settings(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Body(input): Body<SecuritySettings>,
) -> ApiResult<Json<SecuritySettings>> {
    Ok(Json(s.service.update_security_settings(&actor(&ctx)?, input).await?))
}

#[utoipa::path(get, path = "/api/v1/lockouts", tag = "security",
    responses((status = 200, body = Vec<Lockout>, description = "Usernames and client addresses locked out now, each against its own limit"),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_lockouts(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<Lockout>>> {
    Ok(Json(s.service.list_lockouts(&actor(&ctx)?).await?))
}

/// Lift a lockout: clears the key's failures.
#[utoipa::path(delete, path = "/api/v1/lockouts/{key}", tag = "security",
    params(("key" = String, Path, description = "`user:<name>` or `ip:<address>`, URL-encoded (e.g. `ip%3A203.0.113.7`)")),
    responses((status = 204), (status = 422, body = ApiError), (status = 403, body = ApiError)))]
async fn unlock(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(key): Path<String>) -> ApiResult<StatusCode> {
    s.service.unlock(&actor(&ctx)?, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An optional JSON body of unsaved settings: empty means "the stored ones".
fn optional_input(body: &[u8]) -> Result<Option<DirectoryInput>, ApiErr> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| ApiErr(Error::field("body", e.to_string())))
}

fn kind(s: &str) -> Result<DirectoryKind, ApiErr> {
    DirectoryKind::parse(s).ok_or(ApiErr(Error::NotFound("directory configuration (use ldap or ldap_ha)")))
}

#[utoipa::path(get, path = "/api/v1/directories", tag = "directories",
    responses((status = 200, body = Vec<DirectorySettings>, description = "Both configurations; secrets are never returned, only *_set flags")))]
async fn list_directories(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<DirectorySettings>>> {
    Ok(Json(s.service.list_directories(&actor(&ctx)?).await?))
}

#[utoipa::path(post, path = "/api/v1/directories/{kind}/users/fetch", tag = "import", params(("kind" = String, Path)),
    responses((status = 202, body = SyncRun, description = "Enumeration started; poll GET …/users/fetch"), (status = 409, body = ApiError)))]
async fn start_fetch(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<(StatusCode, Json<SyncRun>)> {
    Ok((StatusCode::ACCEPTED, Json(s.service.start_user_fetch(&actor(&ctx)?, kind(&k)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}/users/fetch", tag = "import", params(("kind" = String, Path)),
    responses((status = 200, body = Option<SyncRun>, description = "The latest enumeration and its progress (null: never)")))]
async fn fetch_status(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<Json<Option<SyncRun>>> {
    Ok(Json(s.service.user_fetch_status(&actor(&ctx)?, kind(&k)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/directories/{kind}/users/fetch", tag = "import", params(("kind" = String, Path)),
    responses((status = 204, description = "Cancel requested"), (status = 409, body = ApiError)))]
async fn cancel_fetch(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<StatusCode> {
    s.service.cancel_user_fetch(&actor(&ctx)?, kind(&k)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}/users", tag = "import", params(("kind" = String, Path), StagedQuery),
    responses((status = 200, body = Page<StagedUser>)))]
async fn list_staged(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Query(q): Query<StagedQuery>,
) -> ApiResult<Json<Page<StagedUser>>> {
    Ok(Json(
        s.service
            .list_staged_users(
                &actor(&ctx)?,
                kind(&k)?,
                q.status.as_deref(),
                q.q.as_deref(),
                q.sort.as_deref(),
                q.desc.unwrap_or(false),
                q.page.unwrap_or(1),
                q.per_page.unwrap_or(15),
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}/users.csv", tag = "import", params(("kind" = String, Path), StagedQuery),
    responses((status = 200, content_type = "text/csv", body = String)))]
async fn staged_csv(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Query(q): Query<StagedQuery>,
) -> ApiResult<Response> {
    let kind = kind(&k)?;
    let csv = s.service.staged_users_csv(&actor(&ctx)?, kind, q.status.as_deref(), q.q.as_deref()).await?;
    Ok((
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"bindery-{}-users.csv\"", kind.as_str())),
        ],
        csv,
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/directories/{kind}/users/import", tag = "import", params(("kind" = String, Path)), request_body = ImportRequest,
    responses((status = 200, body = ImportResult, description = "Each row's outcome; a bad row fails alone"), (status = 422, body = ApiError)))]
async fn import_users(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Body(req): Body<ImportRequest>,
) -> ApiResult<Json<ImportResult>> {
    Ok(Json(s.service.import_staged_users(&actor(&ctx)?, kind(&k)?, &req).await?))
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}/sync/settings", tag = "sync", params(("kind" = String, Path)),
    responses((status = 200, body = SyncSettingsView, description = "The settings (mode full or delta), the schedule in words, its next five run times (UTC), and the delta method Test connection detected for the saved directory settings")))]
async fn get_sync_settings(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<Json<SyncSettingsView>> {
    Ok(Json(s.service.sync_settings(&actor(&ctx)?, kind(&k)?).await?))
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}/sync/live", tag = "sync", params(("kind" = String, Path)),
    responses((status = 200, body = LiveStatus, description = "The live change stream (live deprovisioning): whether it is on, connected (on the replica holding its lease), since when, the last change seen, users disabled, the last error")))]
async fn get_live_status(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<Json<LiveStatus>> {
    Ok(Json(s.service.live_status(&actor(&ctx)?, kind(&k)?).await?))
}

#[utoipa::path(put, path = "/api/v1/directories/{kind}/sync/settings", tag = "sync", params(("kind" = String, Path)), request_body = SyncSettings,
    responses((status = 200, body = SyncSettingsView), (status = 422, body = ApiError, description = "Names each invalid field (an invalid crontab with the reason; mode delta without a detected delta method); nothing saved")))]
async fn put_sync_settings(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Body(input): Body<SyncSettings>,
) -> ApiResult<Json<SyncSettingsView>> {
    Ok(Json(s.service.save_sync_settings(&actor(&ctx)?, kind(&k)?, &input).await?))
}

#[utoipa::path(post, path = "/api/v1/directories/{kind}/sync", tag = "sync", params(("kind" = String, Path)), request_body = SyncRequest,
    responses((status = 202, body = SyncRun, description = "Sync (or dry-run) started; poll GET /api/v1/sync/runs/{id}"), (status = 409, body = ApiError)))]
async fn start_sync(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Body(req): Body<SyncRequest>,
) -> ApiResult<(StatusCode, Json<SyncRun>)> {
    Ok((StatusCode::ACCEPTED, Json(s.service.start_sync(&actor(&ctx)?, kind(&k)?, req.dry_run).await?)))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
struct RunsQuery {
    page: Option<i64>,
    per_page: Option<i64>,
    /// Items of one action only: create, update, enable, disable, failed.
    action: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/sync/runs", tag = "sync", params(RunsQuery), responses((status = 200, body = Page<SyncRun>)))]
async fn list_sync_runs(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Page<SyncRun>>> {
    Ok(Json(s.service.list_sync_runs(&actor(&ctx)?, q.page.unwrap_or(1), q.per_page.unwrap_or(20)).await?))
}

#[utoipa::path(get, path = "/api/v1/sync/runs/{id}", tag = "sync", params(("id" = i64, Path), RunsQuery),
    responses((status = 200, body = SyncRunDetail), (status = 404, body = ApiError)))]
async fn get_sync_run(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<SyncRunDetail>> {
    Ok(Json(s.service.sync_run(&actor(&ctx)?, id, q.action.as_deref(), q.page.unwrap_or(1), q.per_page.unwrap_or(50)).await?))
}

#[utoipa::path(get, path = "/api/v1/sync/runs/{id}/report.csv", tag = "sync", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/csv", description = "Every planned change and its outcome")))]
async fn sync_run_csv(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<Response> {
    let csv = s.service.sync_run_csv(&actor(&ctx)?, id).await?;
    Ok((
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"bindery-sync-{id}.csv\"")),
        ],
        csv,
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/sync/runs/{id}/approve", tag = "sync", params(("id" = i64, Path)),
    responses((status = 200, body = SyncRun, description = "Applying the held plan"), (status = 409, body = ApiError)))]
async fn approve_sync(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
) -> ApiResult<Json<SyncRun>> {
    Ok(Json(s.service.approve_sync(&actor(&ctx)?, id).await?))
}

#[utoipa::path(post, path = "/api/v1/sync/runs/{id}/reject", tag = "sync", params(("id" = i64, Path)),
    responses((status = 200, body = SyncRun), (status = 409, body = ApiError)))]
async fn reject_sync(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<i64>,
) -> ApiResult<Json<SyncRun>> {
    Ok(Json(s.service.reject_sync(&actor(&ctx)?, id).await?))
}

#[utoipa::path(post, path = "/api/v1/sync/runs/{id}/cancel", tag = "sync", params(("id" = i64, Path)),
    responses((status = 204, description = "Cancel requested: the enumeration stops at the next page and nothing is applied"), (status = 409, body = ApiError)))]
async fn cancel_sync(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    s.service.cancel_sync(&actor(&ctx)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/directories/health", tag = "directories",
    responses((status = 200, body = Vec<ServerHealth>, description = "Every server of every enabled configuration, as the circuit breaker sees it")))]
async fn directory_health(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>) -> ApiResult<Json<Vec<ServerHealth>>> {
    Ok(Json(s.service.directory_health(&actor(&ctx)?).await?))
}

#[utoipa::path(get, path = "/api/v1/directories/{kind}", tag = "directories", params(("kind" = String, Path, description = "ldap or ldap_ha")),
    responses((status = 200, body = DirectorySettings), (status = 404, body = ApiError)))]
async fn get_directory(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<Json<DirectorySettings>> {
    Ok(Json(s.service.get_directory(&actor(&ctx)?, kind(&k)?).await?))
}

#[utoipa::path(put, path = "/api/v1/directories/{kind}", tag = "directories", params(("kind" = String, Path, description = "ldap or ldap_ha")),
    request_body = DirectoryInput,
    responses((status = 200, body = DirectorySettings), (status = 422, body = ApiError, description = "Names each invalid field; nothing saved")))]
async fn put_directory(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Body(input): Body<DirectoryInput>,
) -> ApiResult<Json<DirectorySettings>> {
    Ok(Json(s.service.save_directory(&actor(&ctx)?, kind(&k)?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/directories/{kind}", tag = "directories", params(("kind" = String, Path)), responses((status = 204)))]
async fn delete_directory(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_directory(&actor(&ctx)?, kind(&k)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Optional body: unsaved settings to test instead of the stored ones.
#[utoipa::path(post, path = "/api/v1/directories/{kind}/verify_connection", tag = "directories", params(("kind" = String, Path)),
    request_body(content = Option<DirectoryInput>, description = "Settings to test; omit to test the stored configuration"),
    responses((status = 200, body = ProbeReport)))]
async fn verify_connection(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ProbeReport>> {
    let a = actor(&ctx)?;
    let input = optional_input(&body)?;
    Ok(Json(s.service.test_directory_connection(&a, kind(&k)?, input.as_ref()).await?))
}

/// The certificate chain each server presents (no bind, nothing trusted).
#[utoipa::path(post, path = "/api/v1/directories/{kind}/fetch_certificates", tag = "directories", params(("kind" = String, Path)),
    request_body(content = Option<DirectoryInput>, description = "Settings to use; omit for the stored configuration"),
    responses((status = 200, body = Vec<ServerCertificates>)))]
async fn fetch_certificates(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Vec<ServerCertificates>>> {
    let a = actor(&ctx)?;
    let input = optional_input(&body)?;
    Ok(Json(s.service.fetch_directory_certificates(&a, kind(&k)?, input.as_ref()).await?))
}

#[derive(serde::Deserialize, ToSchema)]
pub struct TestLoginRequest {
    pub username: String,
    /// Omit for a lookup only.
    #[serde(default)]
    pub password: Option<String>,
    /// Unsaved settings to test; omit for the stored configuration.
    #[serde(default)]
    pub settings: Option<DirectoryInput>,
}

#[utoipa::path(post, path = "/api/v1/directories/{kind}/test_login", tag = "directories", params(("kind" = String, Path)),
    request_body = TestLoginRequest, responses((status = 200, body = LoginTestReport)))]
async fn test_login(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(k): Path<String>,
    Body(req): Body<TestLoginRequest>,
) -> ApiResult<Json<LoginTestReport>> {
    let a = actor(&ctx)?;
    Ok(Json(s.service.test_directory_login(&a, kind(&k)?, req.settings.as_ref(), &req.username, req.password.as_deref()).await?))
}

/// The one answer to every failed directory sign-in (the reason is in the login log).
fn authn_refused(basic: bool) -> Response {
    let body = ApiError { error: "unauthenticated".into(), message: bindery_service::LoginFailure::GENERIC_MESSAGE.into(), fields: vec![] };
    let mut res = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    let challenge = if basic { "Basic realm=\"bindery\", charset=\"UTF-8\"" } else { "Bearer realm=\"bindery\"" };
    res.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
    res
}

#[derive(serde::Deserialize, ToSchema)]
pub struct AuthenticateRequest {
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct BearerToken {
    pub token: String,
    pub token_type: String,
    pub expires_at: String,
    pub expires_in: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub username: String,
    pub api_key: String,
}

/// Sign a directory user in: a short-lived bearer token for the REST API.
#[utoipa::path(post, path = "/api/v1/authn/ldap/{username}/authenticate", tag = "authn", security(()),
    params(("username" = String, Path)), request_body = AuthenticateRequest,
    responses((status = 200, body = BearerToken), (status = 401, body = ApiError, description = "One generic answer for every reason")))]
async fn authn_authenticate(
    State(s): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(username): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    // A malformed body is a failed sign-in like any other (same answer, same time).
    let password = serde_json::from_slice::<AuthenticateRequest>(&body).map(|b| b.password).unwrap_or_default();
    match s.service.sign_in(&username, &password, &ctx.client, "rest", bindery_service::Issue::Bearer).await {
        Ok(issued) => {
            let expires = issued.expires_at.unwrap_or_default();
            let now = bindery_service::util::now_ms();
            Json(BearerToken {
                token: issued.secret.expose().to_string(),
                token_type: "Bearer".into(),
                expires_at: bindery_service::util::fmt_ts(expires),
                expires_in: (expires - now) / 1000,
            })
            .into_response()
        }
        Err(_) => authn_refused(false),
    }
}

fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// HTTP Basic with the directory password: the user's API key (a new one
/// replaces the previous key from this endpoint).
#[utoipa::path(get, path = "/api/v1/authn/ldap/login", tag = "authn", security(("basic" = [])),
    responses((status = 200, body = ApiKey), (status = 401, body = ApiError, description = "One generic answer for every reason")))]
async fn authn_login(State(s): State<AppState>, Extension(ctx): Extension<RequestContext>, headers: http::HeaderMap) -> Response {
    let (username, password) = basic_credentials(&headers).unwrap_or_default();
    match s.service.sign_in(&username, &password, &ctx.client, "rest-basic", bindery_service::Issue::ApiKey).await {
        Ok(issued) => Json(ApiKey { username, api_key: issued.secret.expose().to_string() }).into_response(),
        Err(_) => authn_refused(true),
    }
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(utoipa::openapi::security::ApiKeyValue::new(
                bindery_service::SESSION_COOKIE,
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bindery API", description = "Directory-backed users, organisations and authentication."),
    paths(
        me, list_users, create_user, get_user, update_user, delete_user, reset_password, explain_access, relink_user, directory_health,
        list_organisations, create_organisation, rename_organisation, delete_organisation,
        list_groups, create_group, update_group, delete_group, list_tokens, create_token, revoke_token,
        change_password, dashboard, login_log, login_log_csv, operation_log, operation_log_csv, get_basic_settings, put_basic_settings,
        get_security_settings, put_security_settings, list_lockouts, unlock,
        list_directories, get_directory, put_directory, delete_directory, verify_connection, test_login, fetch_certificates,
        start_fetch, fetch_status, cancel_fetch, list_staged, staged_csv, import_users,
        get_sync_settings, put_sync_settings, start_sync, get_live_status, list_sync_runs, get_sync_run, sync_run_csv, approve_sync, reject_sync, cancel_sync,
        authn_authenticate, authn_login
    ),
    components(schemas(ApiError, FieldError, User, NamedRef, Role, UserSource, NewUser, UserUpdate, Organisation, OrganisationInput,
        Group, ApiToken, NewApiToken, CreatedApiToken, CurrentUser, OneTimePassword,
        DirectoryKind, GroupMode, DirectorySettings, DirectoryInput, ProbeReport, ServerProbe, ProbeStep, MappedUser, LoginTestReport, TestLoginRequest, AuthenticateRequest, BearerToken, ApiKey, ServerCertificates, CertificateDetails, GroupMapping, ServerHealth, AccessExplanation, AccessFact, SyncRun, StagedUser, ImportRequest, ImportResult, ImportOutcome,
        SyncSettings, SyncSettingsView, SyncMode, DeltaSupportInfo, LiveStatus, SyncRequest, SyncCounts, SyncItem, SyncRunDetail, SecuritySettings, Lockout,
        GroupInput, PasswordChange, Dashboard, LoginEvent, OperationEvent, LogQuery, BasicSettings, ActivityBucket, SyncPoint)),
    modifiers(&SecurityAddon),
    security(("bearer" = []), ("session" = []))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
