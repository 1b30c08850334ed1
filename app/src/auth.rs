//! Signing in and out, the forced password change, API tokens and lockouts:
//! the pages and the server functions they call (the service's `auth`).

// A server function takes one argument per form field, and `#[server]` drops a
// per-function `allow` from the client half it generates: allow it here.
#![allow(clippy::too_many_arguments)]

use crate::rpc::{Rpc, RpcForm};
use bindery_model::*;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

#[cfg(feature = "ssr")]
use crate::api;
#[cfg(feature = "ssr")]
use crate::api::ssr::*;
use crate::api::{AppError, Password};
use crate::components::*;
use crate::data::Data;

/// A plain HTML form posting to the login server function: it works the
/// same with or without JavaScript.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let failed = move || query.read().get("failed").is_some();
    let next = move || query.read().get("next").unwrap_or_default();
    view! {
        <main class="login-page">
            <form method="post" action="/rpc/login" class="card login" aria-label="Sign in">
                <h1>"Sign in to Bindery"</h1>
                <Show when=failed>
                    <p class="error" role="alert" data-testid="login-error">"Invalid username or password."</p>
                </Show>
                <label>"Username" <input name="username" autocomplete="username" required autofocus/></label>
                <label>"Password" <input name="password" type="password" autocomplete="current-password" required/></label>
                <input type="hidden" name="next" value=next/>
                <button type="submit" class="primary">"Sign in"</button>
            </form>
        </main>
    }
}

#[component]
pub fn ChangePasswordPage() -> impl IntoView {
    let query = use_query_map();
    let err = move |f: &'static str| {
        move || query.read().get(&format!("err_{f}")).map(|m| view! { <span class="field-error" data-field=f>{m}</span> })
    };
    let me = me();
    view! {
        <main class="login-page">
            <form method="post" action="/rpc/change_password" class="card login" aria-label="Change password">
                <h1>"Change your password"</h1>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let forced = me.0.get().await.ok().flatten().is_some_and(|u| u.must_change_password);
                        forced.then(|| view! {
                            <p class="notice" data-testid="forced-change">
                                "You signed in with a one-time password. Choose your own password to continue."
                            </p>
                        })
                    })}
                </Suspense>
                <label>"Current password" <input name="current_password" type="password" autocomplete="current-password" required/></label>
                {err("current_password")}
                <label>"New password" <input name="new_password" type="password" autocomplete="new-password" required/></label>
                {err("new_password")}
                <label>"Confirm new password" <input name="confirm_password" type="password" autocomplete="new-password" required/></label>
                {err("confirm_password")}
                <button type="submit" class="primary">"Change password"</button>
            </form>
        </main>
    }
}

#[component]
pub fn TokensPage() -> impl IntoView {
    let create = Rpc::new::<CreateToken>();
    let revoke = Rpc::new::<RevokeToken>();
    let tokens = Data::<Vec<ApiToken>>::new(move || (create.version(), revoke.version()), |_| ListTokens {});
    let me = me();
    let created = create;
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match tokens.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) => view! {
                        <p>"API tokens authenticate scripts on the REST API (" <code>"Authorization: Bearer …"</code> "). The secret is shown once; only its hash is stored."</p>
                        <div class="table-scroll"><table class="grid" data-testid="tokens-table">
                            <thead><tr><th>"Name"</th><th>"User"</th><th>"Prefix"</th><th>"Created"</th><th>"Last used"</th><th>"Expires"</th><th>"State"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| view! {
                                    <tr>
                                        <td>{t.name}</td>
                                        <td>{t.username}</td>
                                        <td><code>{t.prefix}"…"</code></td>
                                        <td>{t.created_at}</td>
                                        <td>{t.last_used_at.unwrap_or_else(|| "never".into())}</td>
                                        <td>{t.expires_at.unwrap_or_else(|| "never".into())}</td>
                                        <td>{if t.revoked { "revoked" } else { "active" }}</td>
                                        <td>{(admin && !t.revoked).then(|| view! {
                                            <RpcForm rpc=revoke>
                                                <input type="hidden" name="id" value=t.id/>
                                                <button type="submit" class="danger small">"Revoke"</button>
                                            </RpcForm>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create a token"</h2>
                                <RpcForm rpc=create label="Create an API token">
                                    {action_error(created)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(created, "name")}
                                    <label>"For user (empty: yourself)" <input name="username"/></label>
                                    {field_error(created, "username")}
                                    <label>"Expires in days (empty: never)" <input name="expires_in_days" inputmode="numeric"/></label>
                                    {field_error(created, "expires_in_days")}
                                    <button type="submit" class="primary">"Create token"</button>
                                </RpcForm>
                                {move || created.ok::<CreatedApiToken>().map(|t| view! {
                                    <p class="ok" role="status">"Copy the token now; it is not shown again: " <code data-testid="token-secret">{t.secret}</code></p>
                                })}
                            </section>
                        })}
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Sign in. A plain HTML form posts here, with or without JavaScript; the
/// answer is always a redirect: to the console, to the forced password
/// change, or back to the login page with one generic message.
#[server(prefix = "/rpc", endpoint = "login", output = crate::api::Answer)]
pub async fn login(username: String, password: Password, next: Option<String>) -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let svc = crate::api::ssr::service()?;
    let req = crate::api::ssr::request();
    match svc.login(&username, password.expose(), &req.client, "web").await {
        Ok(ok) => {
            let cookie = crate::session_cookie(SESSION_COOKIE, ok.session_token.expose(), req.secure, None);
            if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
                r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
            }
            let target = if ok.must_change_password { "/change-password".to_string() } else { api::safe_next(next.as_deref()) };
            api::redirect(&target);
            Ok(())
        }
        Err(_) => {
            let mut target = "/login?failed=1".to_string();
            let next = api::safe_next(next.as_deref());
            if next != "/" {
                target.push_str("&next=");
                target.push_str(&crate::url_encode(&next));
            }
            api::redirect(&target);
            Ok(())
        }
    }
}

#[server(prefix = "/rpc", endpoint = "logout", output = crate::api::Answer)]
pub async fn logout() -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let svc = crate::api::ssr::service()?;
    let req = crate::api::ssr::request();
    if let Some(token) = &req.session_token {
        svc.logout(token).await.map_err(map)?;
    }
    let cookie = crate::session_cookie(SESSION_COOKIE, "", req.secure, Some(0));
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
    }
    api::redirect("/login");
    Ok(())
}

/// Change one's own password. A plain form posts here; errors come back to
/// the page in its query string so it works without JavaScript.
#[server(prefix = "/rpc", endpoint = "change_password", output = crate::api::Answer)]
pub async fn change_password(current_password: Password, new_password: Password, confirm_password: Password) -> Result<(), AppError> {
    use bindery_service::SESSION_COOKIE;
    let (svc, actor) = caller()?;
    let req = crate::api::ssr::request();
    // Rotate the session: every old session ends, this browser gets a new one.
    let fresh = bindery_service::util::random_token();
    match svc.change_password(&actor, current_password.expose(), new_password.expose(), confirm_password.expose(), Some(&fresh)).await {
        Ok(()) => {
            let cookie = crate::session_cookie(SESSION_COOKIE, &fresh, req.secure, None);
            if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
                r.append_header(http::header::SET_COOKIE, http::HeaderValue::from_str(&cookie).map_err(|_| AppError::Internal)?);
            }
            api::redirect("/?password_changed=1");
            Ok(())
        }
        Err(bindery_service::Error::Invalid(fields)) => {
            let mut target = "/change-password?".to_string();
            for f in fields {
                target.push_str(&format!("err_{}={}&", f.field, crate::url_encode(&f.message)));
            }
            api::redirect(target.trim_end_matches('&'));
            Ok(())
        }
        Err(e) => Err(map(e)),
    }
}

/// The signed-in person, or `None`.
#[server(name = GetCurrentUser, prefix = "/rpc", endpoint = "current_user", output = crate::api::Answer)]
pub async fn current_user() -> Result<Option<CurrentUser>, AppError> {
    let svc = crate::api::ssr::service()?;
    match crate::api::ssr::request().principal {
        Some(p) => Ok(Some(svc.current_user(&p).await)),
        None => Ok(None),
    }
}

#[server(prefix = "/rpc", endpoint = "list_lockouts", output = crate::api::Answer)]
pub async fn list_lockouts() -> Result<Vec<Lockout>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_lockouts(&actor).await.map_err(map)
}

/// `key` is `user:<name>` or `ip:<address>`.
#[server(prefix = "/rpc", endpoint = "unlock", output = crate::api::Answer)]
pub async fn unlock(key: String) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.unlock(&actor, &key).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_tokens", output = crate::api::Answer)]
pub async fn list_tokens() -> Result<Vec<ApiToken>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_api_tokens(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_token", output = crate::api::Answer)]
pub async fn create_token(name: String, username: String, expires_in_days: String) -> Result<CreatedApiToken, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
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

#[server(prefix = "/rpc", endpoint = "revoke_token", output = crate::api::Answer)]
pub async fn revoke_token(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.revoke_api_token(&actor, id).await.map_err(map)
}
