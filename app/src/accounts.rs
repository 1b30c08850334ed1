//! Users, organisations and groups: the pages and the server functions they
//! call (the service's `accounts` and `explain`).

// A server function takes one argument per form field, and `#[server]` drops a
// per-function `allow` from the client half it generates: allow it here.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;

use crate::rpc::{Rpc, RpcForm};
use bindery_model::*;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

#[cfg(feature = "ssr")]
use crate::api;
#[cfg(feature = "ssr")]
use crate::api::ssr::*;
use crate::api::{AppError, Password};
use crate::components::*;
use crate::data::Data;

#[component]
pub fn UsersPage() -> impl IntoView {
    let (q, page) = list_params();
    let create = Rpc::new::<CreateUser>();
    let users = Data::<Page<User>>::new(move || (q.get(), page.get(), create.version()), |(q, page, _)| ListUsers { q, page });
    let orgs = Data::<Vec<Organisation>>::new(|| (), |_| ListOrganisations {});
    let me = me();
    let created = create;
    view! {
        <h1>"Users"</h1>
        <SearchBox q=q placeholder="Search username, name, email"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match users.get().await {
                    Ok(p) => {
                        let pages = p.pages();
                        view! {
                            <UserTable users=p.items/>
                            <Pager total=p.total page=p.page pages=pages q=q.get_untracked()/>
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Transition>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let orgs = orgs.get().await.unwrap_or_default();
                admin.then(|| view! {
                    <section class="card">
                        <h2>"Create a user"</h2>
                        <RpcForm rpc=create label="Create a user">
                            {action_error(created)}
                            <label>"Username" <input name="username" required/></label>
                            {field_error(created, "username")}
                            <label>"Full name" <input name="name"/></label>
                            {field_error(created, "name")}
                            <label>"Email" <input name="email" type="email"/></label>
                            {field_error(created, "email")}
                            <label>"Role"
                                <select name="role">
                                    {Role::ALL.into_iter().rev().map(|r| view! { <option value=r.as_str()>{r.label()}</option> }).collect_view()}
                                </select>
                            </label>
                            <label>"One-time password" <input name="password" type="password" autocomplete="new-password" required/></label>
                            {field_error(created, "password")}
                            <fieldset>
                                <legend>"Organisations"</legend>
                                {orgs.into_iter().map(|o| view! {
                                    <label class="check"><input type="checkbox" name=format!("orgs[{}]", o.id) value="on" checked=o.is_default/>{o.name}</label>
                                }).collect_view()}
                            </fieldset>
                            {field_error(created, "organisation_ids")}
                            <button type="submit" class="primary">"Create user"</button>
                        </RpcForm>
                        {move || created.ok::<User>().map(|u| view! {
                            <p class="ok" role="status">"Created "<a href=format!("/users/{}", u.id)>{u.username.clone()}</a>". They must change the password at first sign-in."</p>
                        })}
                    </section>
                })
            })}
        </Suspense>
    }
}

#[component]
fn UserTable(users: Vec<User>) -> impl IntoView {
    view! {
        <div class="table-scroll"><table class="grid" data-testid="users-table">
            <thead><tr><th>"Username"</th><th>"Name"</th><th>"Email"</th><th>"Role"</th><th>"Source"</th><th>"Status"</th><th>"Organisations"</th><th>"Groups"</th></tr></thead>
            <tbody>
                {users.into_iter().map(|u| {
                    let status = if !u.is_active { "disabled" } else if u.locked { "locked" } else { "active" };
                    view! {
                        <tr>
                            <td><A href=format!("/users/{}", u.id)>{u.username.clone()}</A></td>
                            <td>{u.name}</td>
                            <td>{u.email}</td>
                            <td>{u.role.label()}</td>
                            <td>{u.source.as_str()}</td>
                            <td class=format!("status {status}")>{status}</td>
                            <td>{u.organisations.into_iter().map(|o| o.name).collect::<Vec<_>>().join(", ")}</td>
                            <td>{u.groups.into_iter().map(|g| g.name).collect::<Vec<_>>().join(", ")}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table></div>
    }
}

#[component]
pub fn UserPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0));
    let update = Rpc::new::<UpdateUser>();
    let toggle = Rpc::new::<SetUserActive>();
    let reset = Rpc::new::<ResetPassword>();
    let unlock = Rpc::new::<crate::auth::Unlock>();
    let delete = Rpc::new::<DeleteUser>();
    let explain = Rpc::new::<ExplainAccess>();
    let relink = Rpc::new::<RelinkUser>();
    let user = Data::<User>::new(
        move || (id.get(), update.version(), toggle.version(), reset.version(), unlock.version(), relink.version()),
        |(id, ..)| GetUser { id },
    );
    let orgs = Data::<Vec<Organisation>>::new(|| (), |_| ListOrganisations {});
    let me = me();
    let updated = update;
    view! {
        <p><A href="/users">"← Users"</A></p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let orgs = orgs.get().await.unwrap_or_default();
                match user.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(u) => {
                        let status = if !u.is_active { "disabled" } else if u.locked { "locked" } else { "active" };
                        let member_of: Vec<i64> = u.organisations.iter().map(|o| o.id).collect();
                        let uid = u.id;
                        let role = u.role;
                        view! {
                            <h1>{u.username.clone()}</h1>
                            <dl class="facts">
                                <dt>"Status"</dt><dd data-testid="user-status">{status}</dd>
                                <dt>"Source"</dt><dd>{u.source.as_str()}</dd>
                                <dt>"Role"</dt><dd data-testid="user-role">{u.role.label()}{u.role_pinned.then_some(" (pinned: managed in Bindery)")}</dd>
                                {u.external_id.clone().map(|x| view! { <dt>"Directory entry"</dt><dd data-testid="user-link"><code>{x}</code></dd> })}
                                <dt>"Organisations"</dt><dd>{u.organisations.iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(", ")}</dd>
                                <dt>"Groups"</dt><dd>{u.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>().join(", ")}</dd>
                                <dt>"Created"</dt><dd>{u.created_at.clone()}</dd>
                                <dt>"Last sign-in"</dt><dd>{u.last_login_at.clone().unwrap_or_else(|| "never".into())}</dd>
                                <dt>"Must change password"</dt><dd>{if u.must_change_password { "yes" } else { "no" }}</dd>
                            </dl>
                            <RpcForm rpc=explain label="Explain access">
                                <input type="hidden" name="id" value=uid/>
                                <button type="submit">"Explain access"</button>
                            </RpcForm>
                            {move || explain.pending().then(|| view! { <p role="status">"Asking the directory…"</p> })}
                            {move || explain.result::<bindery_model::AccessExplanation>().map(|r| match r {
                                Ok(x) => view! { <ExplainView x=x/> }.into_any(),
                                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                            })}
                            {admin.then(move || view! {
                                <div class="actions">
                                    <RpcForm rpc=toggle>
                                        <input type="hidden" name="id" value=uid/>
                                        <input type="hidden" name="active" value=if u.is_active { "false" } else { "true" }/>
                                        <button type="submit">{if u.is_active { "Disable" } else { "Enable" }}</button>
                                    </RpcForm>
                                    {(u.source == bindery_model::UserSource::Local).then(|| view! {
                                        <RpcForm rpc=reset>
                                            <input type="hidden" name="id" value=uid/>
                                            <button type="submit">"Reset password"</button>
                                        </RpcForm>
                                    })}
                                    {u.locked.then(|| view! {
                                        <RpcForm rpc=unlock>
                                            <input type="hidden" name="key" value=format!("user:{}", u.username)/>
                                            <button type="submit">"Unlock"</button>
                                        </RpcForm>
                                    })}
                                    {(u.source != bindery_model::UserSource::Local).then(|| view! {
                                        <RpcForm rpc=relink label="Relink to the directory entry">
                                            <input type="hidden" name="id" value=uid/>
                                            <button type="submit" title="Link this account to the directory entry that answers to its name now; every session and token is revoked">"Relink to this entry"</button>
                                        </RpcForm>
                                    })}
                                    <RpcForm rpc=delete>
                                        <input type="hidden" name="id" value=uid/>
                                        <button type="submit" class="danger">"Delete"</button>
                                    </RpcForm>
                                </div>
                                {move || relink.result::<User>().map(|r| match r {
                                    Ok(u) => view! { <p class="ok" role="status" data-testid="relinked">{format!("{} is now linked to the directory entry; every session and token was revoked.", u.username)}</p> }.into_any(),
                                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                                })}
                                {action_error(toggle)}
                                {action_error(delete)}
                                {move || reset.result::<String>().map(|r| match r {
                                    Ok(p) => view! { <p class="ok" role="status">"New one-time password (shown once): " <code data-testid="one-time-password">{p}</code></p> }.into_any(),
                                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                                })}
                                <section class="card">
                                    <h2>"Edit"</h2>
                                    <RpcForm rpc=update label="Edit user">
                                        {action_error(updated)}
                                        <input type="hidden" name="id" value=uid/>
                                        <label>"Full name" <input name="name" value=u.name.clone()/></label>
                                        {field_error(updated, "name")}
                                        <label>"Email" <input name="email" type="email" value=u.email.clone()/></label>
                                        {field_error(updated, "email")}
                                        <label>"Role"
                                            <select name="role">
                                                {Role::ALL.into_iter().map(|r| view! { <option value=r.as_str() selected=r == role>{r.label()}</option> }).collect_view()}
                                            </select>
                                        </label>
                                        {field_error(updated, "role")}
                                        {(u.source != bindery_model::UserSource::Local).then(|| view! {
                                            <input type="hidden" name="pin_shown" value="1"/>
                                            <label class="check"><input type="checkbox" name="role_pinned" value="on" checked=u.role_pinned/>"Pin the role (managed in Bindery: the directory's group mapping never changes it)"</label>
                                        })}
                                        <fieldset>
                                            <legend>"Organisations"</legend>
                                            {orgs.iter().map(|o| view! {
                                                <label class="check"><input type="checkbox" name=format!("orgs[{}]", o.id) value="on" checked=member_of.contains(&o.id)/>{o.name.clone()}</label>
                                            }).collect_view()}
                                        </fieldset>
                                        <button type="submit" class="primary">"Save"</button>
                                    </RpcForm>
                                </section>
                            })}
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

#[component]
fn ExplainView(x: bindery_model::AccessExplanation) -> impl IntoView {
    view! {
        <section class="card" data-testid="explain">
            <h2>"Access explained"</h2>
            <p class=if x.allowed { "ok" } else { "bad" } data-testid="explain-verdict">{x.verdict}</p>
            <div class="table-scroll"><table class="grid">
                <tbody>
                    {x.facts.into_iter().map(|f| {
                        let class = match f.ok { Some(true) => "ok", Some(false) => "bad", None => "" };
                        view! { <tr><th scope="row">{f.label}</th><td class=class>{f.value}</td></tr> }
                    }).collect_view()}
                </tbody>
            </table></div>
        </section>
    }
}

#[component]
pub fn GroupsPage() -> impl IntoView {
    let save = Rpc::new::<SaveGroup>();
    let delete = Rpc::new::<DeleteGroup>();
    let groups = Data::<Vec<Group>>::new(move || (save.version(), delete.version()), |_| ListGroups {});
    let me = me();
    let saved = save;
    view! {
        <h1>"Groups"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match groups.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) => view! {
                        <div class="table-scroll"><table class="grid" data-testid="groups-table">
                            <thead><tr><th>"Name"</th><th>"Description"</th><th>"Source"</th><th>"Members"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|g| view! {
                                    <tr>
                                        <td>{g.name}</td>
                                        <td>{g.description}</td>
                                        <td>{g.source.as_str()}</td>
                                        <td>{g.members.into_iter().map(|m| m.name).collect::<Vec<_>>().join(", ")}</td>
                                        <td>{admin.then(|| view! {
                                            <RpcForm rpc=delete>
                                                <input type="hidden" name="id" value=g.id/>
                                                <button type="submit" class="danger small">"Delete"</button>
                                            </RpcForm>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create a group"</h2>
                                <RpcForm rpc=save label="Create a group">
                                    {action_error(saved)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(saved, "name")}
                                    <label>"Description" <input name="description"/></label>
                                    {field_error(saved, "description")}
                                    <label>"Members (usernames, comma-separated)" <input name="members"/></label>
                                    {field_error(saved, "members")}
                                    <button type="submit" class="primary">"Create group"</button>
                                </RpcForm>
                            </section>
                        })}
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn OrganisationsPage() -> impl IntoView {
    let create = Rpc::new::<CreateOrganisation>();
    let rename = Rpc::new::<RenameOrganisation>();
    let delete = Rpc::new::<DeleteOrganisation>();
    let orgs = Data::<Vec<Organisation>>::new(move || (create.version(), rename.version(), delete.version()), |_| ListOrganisations {});
    let me = me();
    let created = create;
    view! {
        <h1>"Organisations"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match orgs.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) => view! {
                        {action_error(rename)}
                        {action_error(delete)}
                        <div class="table-scroll"><table class="grid" data-testid="orgs-table">
                            <thead><tr><th>"Name"</th><th>"Users"</th><th>"Created"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|o| view! {
                                    <tr>
                                        <td>{o.name.clone()}{o.is_default.then_some(" (default)")}</td>
                                        <td>{o.user_count}</td>
                                        <td>{o.created_at}</td>
                                        <td>{admin.then(|| view! {
                                            <RpcForm rpc=rename class="inline">
                                                <input type="hidden" name="id" value=o.id/>
                                                <input name="name" value=o.name.clone() aria-label="New name"/>
                                                <button type="submit" class="small">"Rename"</button>
                                            </RpcForm>
                                            {(!o.is_default).then(|| view! {
                                                <RpcForm rpc=delete class="inline">
                                                    <input type="hidden" name="id" value=o.id/>
                                                    <button type="submit" class="danger small">"Delete"</button>
                                                </RpcForm>
                                            })}
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create an organisation"</h2>
                                <RpcForm rpc=create label="Create an organisation">
                                    {action_error(created)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(created, "name")}
                                    <button type="submit" class="primary">"Create organisation"</button>
                                </RpcForm>
                            </section>
                        })}
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[server(prefix = "/rpc", endpoint = "list_users", output = crate::api::Answer)]
pub async fn list_users(q: Option<String>, page: Option<i64>) -> Result<Page<User>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_users(&actor, &query(q, page)).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "get_user", output = crate::api::Answer)]
pub async fn get_user(id: i64) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    svc.get_user(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "explain_access", output = crate::api::Answer)]
pub async fn explain_access(id: i64) -> Result<bindery_model::AccessExplanation, AppError> {
    let (svc, actor) = caller()?;
    svc.explain_access(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_user", output = crate::api::Answer)]
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
    let input = bindery_model::NewUser { username, name, email, role, password: password.0, organisation_ids: api::checked_ids(&orgs) };
    svc.create_user(&actor, &input).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "update_user", output = crate::api::Answer)]
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
        organisation_ids: Some(api::checked_ids(&orgs)),
        role_pinned: pin_shown.map(|_| role_pinned.is_some()),
    };
    svc.update_user(&actor, id, &input).await.map_err(map)
}

/// Resolve a username conflict: link the user to the directory entry that
/// answers to their name now (every session and token is revoked).
#[server(prefix = "/rpc", endpoint = "relink_user", output = crate::api::Answer)]
pub async fn relink_user(id: i64) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    svc.relink_user(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "set_user_active", output = crate::api::Answer)]
pub async fn set_user_active(id: i64, active: bool) -> Result<User, AppError> {
    let (svc, actor) = caller()?;
    let input = bindery_model::UserUpdate { is_active: Some(active), ..Default::default() };
    svc.update_user(&actor, id, &input).await.map_err(map)
}

/// Returns the new one-time password, to show once.
#[server(prefix = "/rpc", endpoint = "reset_password", output = crate::api::Answer)]
pub async fn reset_password(id: i64) -> Result<String, AppError> {
    let (svc, actor) = caller()?;
    svc.reset_password(&actor, id, None).await.map(|s| s.expose().to_string()).map_err(map)
}

#[server(prefix = "/rpc", endpoint = "delete_user", output = crate::api::Answer)]
pub async fn delete_user(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_user(&actor, id).await.map_err(map)?;
    api::redirect("/users");
    Ok(())
}

#[server(prefix = "/rpc", endpoint = "list_organisations", output = crate::api::Answer)]
pub async fn list_organisations() -> Result<Vec<Organisation>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_organisations(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "create_organisation", output = crate::api::Answer)]
pub async fn create_organisation(name: String) -> Result<Organisation, AppError> {
    let (svc, actor) = caller()?;
    svc.create_organisation(&actor, &bindery_model::OrganisationInput { name }).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "rename_organisation", output = crate::api::Answer)]
pub async fn rename_organisation(id: i64, name: String) -> Result<Organisation, AppError> {
    let (svc, actor) = caller()?;
    svc.rename_organisation(&actor, id, &bindery_model::OrganisationInput { name }).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "delete_organisation", output = crate::api::Answer)]
pub async fn delete_organisation(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_organisation(&actor, id).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "list_groups", output = crate::api::Answer)]
pub async fn list_groups() -> Result<Vec<Group>, AppError> {
    let (svc, actor) = caller()?;
    svc.list_groups(&actor).await.map_err(map)
}

/// `members` is a comma-separated list of usernames.
#[server(prefix = "/rpc", endpoint = "save_group", output = crate::api::Answer)]
pub async fn save_group(id: Option<i64>, name: String, description: String, members: String) -> Result<Group, AppError> {
    let (svc, actor) = caller()?;
    // The form is shaped here before the service sees it: a caller
    // without the role gets 403, not field errors.
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

#[server(prefix = "/rpc", endpoint = "delete_group", output = crate::api::Answer)]
pub async fn delete_group(id: i64) -> Result<(), AppError> {
    let (svc, actor) = caller()?;
    svc.delete_group(&actor, id).await.map_err(map)
}
