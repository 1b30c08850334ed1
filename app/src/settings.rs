//! Basic and security settings: the pages and the server functions they
//! call (the service's `settings`).

// A server function takes one argument per form field, and `#[server]` drops a
// per-function `allow` from the client half it generates: allow it here.
#![allow(clippy::too_many_arguments)]

use crate::rpc::{Rpc, RpcForm};
use bindery_model::*;
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::api::ssr::*;
use crate::api::AppError;
use crate::components::*;
use crate::data::Data;

#[component]
pub fn BasicSettingsPage() -> impl IntoView {
    let save = Rpc::new::<SaveBasicSettings>();
    let settings = Data::<BasicSettings>::new(move || save.version(), |_| GetBasicSettings {});
    let me = me();
    let saved = save;
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match settings.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(s) => view! {
                        <RpcForm rpc=save class="card" label="Basic settings">
                            {action_error(saved)}
                            <label>"Site URL" <input name="site_url" value=s.site_url disabled=!admin/></label>
                            {field_error(saved, "site_url")}
                            <label>"Session idle timeout (minutes)" <input name="session_idle_minutes" inputmode="numeric" value=s.session_idle_minutes.to_string() disabled=!admin/></label>
                            {field_error(saved, "session_idle_minutes")}
                            <label>"Session lifetime (hours)" <input name="session_absolute_hours" inputmode="numeric" value=s.session_absolute_hours.to_string() disabled=!admin/></label>
                            {field_error(saved, "session_absolute_hours")}
                            <label>"Keep login and operation log entries for (days)" <input name="log_retention_days" inputmode="numeric" value=s.log_retention_days.to_string() disabled=!admin/></label>
                            {field_error(saved, "log_retention_days")}
                            {admin.then(|| view! { <button type="submit" class="primary">"Save"</button> })}
                            {move || saved.succeeded().then(|| view! { <p class="ok" role="status">"Saved."</p> })}
                        </RpcForm>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn SecuritySettingsPage() -> impl IntoView {
    let save = Rpc::new::<SaveSecuritySettings>();
    let unlock = Rpc::new::<crate::auth::Unlock>();
    let settings = Data::<SecuritySettings>::new(move || save.version(), |_| GetSecuritySettings {});
    let locks = Data::<Vec<Lockout>>::new(move || (save.version(), unlock.version()), |_| crate::auth::ListLockouts {});
    let me = me();
    let saved = save;
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let locks = locks.get().await;
                match settings.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(s) => view! {
                        <RpcForm rpc=save class="card" label="Security settings">
                            <h2>"Login restriction"</h2>
                            {action_error(saved)}
                            <label>"Lock a username after this many failed logins" <input name="lockout_max_failures" inputmode="numeric" value=s.lockout_max_failures.to_string() disabled=!admin/></label>
                            {field_error(saved, "lockout_max_failures")}
                            <label>"Lock a client address after this many failed logins, whatever the usernames (an office behind NAT is one address)" <input name="lockout_ip_max_failures" inputmode="numeric" value=s.lockout_ip_max_failures.to_string() disabled=!admin/></label>
                            {field_error(saved, "lockout_ip_max_failures")}
                            <label>"… within this many minutes (both)" <input name="lockout_window_minutes" inputmode="numeric" value=s.lockout_window_minutes.to_string() disabled=!admin/></label>
                            {field_error(saved, "lockout_window_minutes")}
                            <label>"Networks never locked out as an address (CIDR, one per line, e.g. 10.0.0.0/8; their usernames still are)"
                                <textarea name="lockout_exempt_networks" rows="3" disabled=!admin placeholder="10.0.0.0/8">{s.lockout_exempt_networks.join("\n")}</textarea></label>
                            {field_error(saved, "lockout_exempt_networks")}
                            <p class="hint">"Only a refused password or account counts; a directory that cannot be reached or fails counts toward nothing."</p>
                            <label>"Minimum password length" <input name="min_password_length" inputmode="numeric" value=s.min_password_length.to_string() disabled=!admin/></label>
                            {field_error(saved, "min_password_length")}
                            <h2>"Directory users"</h2>
                            <label class="check">
                                <input type="checkbox" name="only_imported_users" value="on" checked=s.only_imported_users disabled=!admin/>
                                "Only users already imported may log in (otherwise a directory user is created at their first login, in the default organisation)"
                            </label>
                            <label>"REST bearer token lifetime (minutes)" <input name="bearer_token_minutes" inputmode="numeric" value=s.bearer_token_minutes.to_string() disabled=!admin/></label>
                            {field_error(saved, "bearer_token_minutes")}
                            <label>"Re-check a directory user's account against the directory every (minutes, 0 = on every request) while they have a session or token; disabled or removed → signed out"
                                <input name="revalidate_minutes" inputmode="numeric" value=s.revalidate_minutes.to_string() disabled=!admin/></label>
                            {field_error(saved, "revalidate_minutes")}
                            {admin.then(|| view! { <button type="submit" class="primary">"Save"</button> })}
                            {move || saved.succeeded().then(|| view! { <p class="ok" role="status">"Saved."</p> })}
                        </RpcForm>
                        <h2>"Locked out now"</h2>
                        {action_error(unlock)}
                        {match locks {
                            Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                            Ok(list) => view! {
                                <div class="table-scroll"><table class="grid" data-testid="lockouts-table">
                                    <thead><tr><th>"Who"</th><th>"Failures"</th><th>"Last failure (UTC)"</th><th></th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|l| view! {
                                            <tr>
                                                <td>{l.key.clone()}</td>
                                                <td>{l.failures}</td>
                                                <td>{l.last_failure_at}</td>
                                                <td>{admin.then(|| view! {
                                                    <RpcForm rpc=unlock>
                                                        <input type="hidden" name="key" value=l.key.clone()/>
                                                        <button type="submit" class="small">"Unlock"</button>
                                                    </RpcForm>
                                                })}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table></div>
                            }.into_any(),
                        }}
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[server(name = GetBasicSettings, prefix = "/rpc", endpoint = "basic_settings", output = crate::api::Answer)]
pub async fn basic_settings() -> Result<BasicSettings, AppError> {
    let (svc, actor) = caller()?;
    svc.get_basic_settings(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "save_basic_settings", output = crate::api::Answer)]
pub async fn save_basic_settings(
    site_url: String,
    session_idle_minutes: String,
    session_absolute_hours: String,
    log_retention_days: String,
) -> Result<BasicSettings, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
    actor.require_admin().map_err(map)?;
    let mut errors = Vec::new();
    let idle = crate::parse_int(&mut errors, "session_idle_minutes", &session_idle_minutes);
    let abs = crate::parse_int(&mut errors, "session_absolute_hours", &session_absolute_hours);
    let retention = crate::parse_int(&mut errors, "log_retention_days", &log_retention_days);
    if !errors.is_empty() {
        return Err(map(bindery_service::Error::Invalid(errors)));
    }
    let s = BasicSettings { site_url, session_idle_minutes: idle, session_absolute_hours: abs, log_retention_days: retention };
    svc.update_basic_settings(&actor, s).await.map_err(map)
}

#[server(name = GetSecuritySettings, prefix = "/rpc", endpoint = "security_settings", output = crate::api::Answer)]
pub async fn security_settings() -> Result<SecuritySettings, AppError> {
    let (svc, actor) = caller()?;
    svc.get_security_settings(&actor).await.map_err(map)
}

/// The lockout fields added later (`lockout_ip_max_failures`,
/// `lockout_exempt_networks`: one network per line or comma-separated)
/// keep their stored values when a form leaves them out.
#[server(prefix = "/rpc", endpoint = "save_security_settings", output = crate::api::Answer)]
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
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
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
