//! The console's pages.

use bindery_model::{Role, User};
use leptos::form::ActionForm;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api;
use crate::components::{action_error, field_error, is_admin, list_params, me, ErrorBox, Pager, SearchBox, SettingsTabs};

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <main class="narrow">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to the console"</a></p>
        </main>
    }
}

// ----- login and password ----------------------------------------------------

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
                        let forced = me.0.await.ok().flatten().is_some_and(|u| u.must_change_password);
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

// ----- home / dashboard --------------------------------------------------------

#[component]
pub fn HomePage() -> impl IntoView {
    let me = me();
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match me.0.await {
                    Ok(Some(u)) if u.role.can_read_admin() => view! { <Dashboard/> }.into_any(),
                    Ok(Some(u)) => view! {
                        <section>
                            <h1>{format!("Welcome, {}", if u.name.is_empty() { u.username.clone() } else { u.name.clone() })}</h1>
                            <p data-testid="home-user">{format!("You are signed in as {} ({}).", u.username, u.role.label())}</p>
                        </section>
                    }.into_any(),
                    Ok(None) => view! { <p><a href="/login">"Sign in"</a></p> }.into_any(),
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Dashboard() -> impl IntoView {
    let data = Resource::new(|| (), |_| api::dashboard());
    view! {
        <h1>"Dashboard"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(d) => view! {
                        <div class="cards">
                            <div class="stat"><span class="n" data-testid="stat-users">{d.users}</span>" users"</div>
                            <div class="stat"><span class="n">{d.active_users}</span>" active"</div>
                            <div class="stat"><span class="n">{d.organisations}</span>" organisations"</div>
                            <div class="stat"><span class="n">{d.groups}</span>" groups"</div>
                            <div class="stat"><span class="n">{d.successful_logins_24h}</span>" logins (24 h)"</div>
                            <div class="stat"><span class="n">{d.failed_logins_24h}</span>" failed logins (24 h)"</div>
                        </div>
                        <h2>"Sign-in activity"</h2>
                        <div class="charts">
                            <crate::charts::ActivityChart buckets=d.activity_hours title="Sign-ins per hour, last 24 hours (UTC)"
                                label=crate::charts::hour_label test_id="activity-hours"/>
                            <crate::charts::ActivityChart buckets=d.activity_days title="Sign-ins per day, last 30 days (UTC)"
                                label=crate::charts::day_label test_id="activity-days"/>
                        </div>
                        <h2>"Sync history"</h2>
                        <crate::charts::SyncHistoryChart runs=d.sync_history/>
                        <h2>"Directory servers"</h2>
                        <crate::components::HealthTable rows=d.directory_health/>
                        <h2>"Last sync"</h2>
                        {if d.last_syncs.is_empty() {
                            view! { <p class="muted">"No sync has run yet."</p> }.into_any()
                        } else {
                            view! {
                                <ul data-testid="last-syncs">
                                    {d.last_syncs.into_iter().map(|r| view! {
                                        <li>
                                            <A href=format!("/sync/runs/{}", r.id)>{format!("{} #{}", r.directory.label(), r.id)}</A>
                                            {format!(" — {} ({}), {}", r.state, r.started_at, crate::sync::counts_text(&r))}
                                        </li>
                                    }).collect_view()}
                                </ul>
                            }.into_any()
                        }}
                        {(!d.notifications.is_empty()).then(|| view! {
                            <h2>"Reports for you"</h2>
                            <ul data-testid="notifications">
                                {d.notifications.into_iter().map(|n| view! {
                                    <li><strong>{n.subject}</strong>{format!(" ({}) ", n.at)}{n.body}
                                        {(!n.email_status.is_empty()).then(|| view! { <small class="muted">{format!(" — email: {}", n.email_status)}</small> })}</li>
                                }).collect_view()}
                            </ul>
                        })}
                        <h2>"Recent logins"</h2>
                        <LoginTable rows=d.recent_logins/>
                    }.into_any(),
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn LoginTable(rows: Vec<bindery_model::LoginEvent>) -> impl IntoView {
    view! {
        <div class="table-scroll"><table class="grid" data-testid="login-table">
            <thead><tr><th>"Time (UTC)"</th><th>"User"</th><th>"IP"</th><th>"Method"</th><th>"Result"</th><th>"Reason"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|e| view! {
                    <tr>
                        <td>{e.at}</td>
                        <td>{e.username}</td>
                        <td>{e.ip}</td>
                        <td>{e.method}</td>
                        <td class=if e.success { "ok" } else { "bad" }>{if e.success { "success" } else { "failure" }}</td>
                        <td>{e.reason}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table></div>
    }
}

// ----- users --------------------------------------------------------------------

#[component]
pub fn UsersPage() -> impl IntoView {
    let (q, page) = list_params();
    let create = ServerAction::<api::CreateUser>::new();
    let users = Resource::new(move || (q.get(), page.get(), create.version().get()), |(q, p, _)| api::list_users(q, p));
    let orgs = Resource::new(|| (), |_| api::list_organisations());
    let me = me();
    let created = create.value();
    view! {
        <h1>"Users"</h1>
        <SearchBox q=q placeholder="Search username, name, email"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
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
                let admin = is_admin(&me.0.await.ok().flatten());
                let orgs = orgs.await.unwrap_or_default();
                admin.then(|| view! {
                    <section class="card">
                        <h2>"Create a user"</h2>
                        <ActionForm action=create attr:aria-label="Create a user">
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
                        </ActionForm>
                        {move || created.get().and_then(|r| r.ok()).map(|u| view! {
                            <p class="ok" role="status">{format!("Created {}. They must change the password at first sign-in.", u.username)}</p>
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
    let update = ServerAction::<api::UpdateUser>::new();
    let toggle = ServerAction::<api::SetUserActive>::new();
    let reset = ServerAction::<api::ResetPassword>::new();
    let unlock = ServerAction::<api::Unlock>::new();
    let delete = ServerAction::<api::DeleteUser>::new();
    let explain = ServerAction::<api::ExplainAccess>::new();
    let relink = ServerAction::<api::RelinkUser>::new();
    let user = Resource::new(
        move || {
            (
                id.get(),
                update.version().get(),
                toggle.version().get(),
                reset.version().get(),
                unlock.version().get(),
                relink.version().get(),
            )
        },
        |(id, ..)| api::get_user(id),
    );
    let orgs = Resource::new(|| (), |_| api::list_organisations());
    let me = me();
    let updated = update.value();
    view! {
        <p><A href="/users">"← Users"</A></p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                let orgs = orgs.await.unwrap_or_default();
                match user.await {
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
                            <ActionForm action=explain attr:aria-label="Explain access">
                                <input type="hidden" name="id" value=uid/>
                                <button type="submit">"Explain access"</button>
                            </ActionForm>
                            {move || explain.pending().get().then(|| view! { <p role="status">"Asking the directory…"</p> })}
                            {move || explain.value().get().map(|r| match r {
                                Ok(x) => view! { <ExplainView x=x/> }.into_any(),
                                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                            })}
                            {admin.then(move || view! {
                                <div class="actions">
                                    <ActionForm action=toggle>
                                        <input type="hidden" name="id" value=uid/>
                                        <input type="hidden" name="active" value=if u.is_active { "false" } else { "true" }/>
                                        <button type="submit">{if u.is_active { "Disable" } else { "Enable" }}</button>
                                    </ActionForm>
                                    {(u.source == bindery_model::UserSource::Local).then(|| view! {
                                        <ActionForm action=reset>
                                            <input type="hidden" name="id" value=uid/>
                                            <button type="submit">"Reset password"</button>
                                        </ActionForm>
                                    })}
                                    {u.locked.then(|| view! {
                                        <ActionForm action=unlock>
                                            <input type="hidden" name="key" value=format!("user:{}", u.username)/>
                                            <button type="submit">"Unlock"</button>
                                        </ActionForm>
                                    })}
                                    {(u.source != bindery_model::UserSource::Local).then(|| view! {
                                        <ActionForm action=relink attr:aria-label="Relink to the directory entry">
                                            <input type="hidden" name="id" value=uid/>
                                            <button type="submit" title="Link this account to the directory entry that answers to its name now; every session and token is revoked">"Relink to this entry"</button>
                                        </ActionForm>
                                    })}
                                    <ActionForm action=delete>
                                        <input type="hidden" name="id" value=uid/>
                                        <button type="submit" class="danger">"Delete"</button>
                                    </ActionForm>
                                </div>
                                {move || relink.value().get().map(|r| match r {
                                    Ok(u) => view! { <p class="ok" role="status" data-testid="relinked">{format!("{} is now linked to the directory entry; every session and token was revoked.", u.username)}</p> }.into_any(),
                                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                                })}
                                {action_error(toggle.value())}
                                {action_error(delete.value())}
                                {move || reset.value().get().map(|r| match r {
                                    Ok(p) => view! { <p class="ok" role="status">"New one-time password (shown once): " <code data-testid="one-time-password">{p}</code></p> }.into_any(),
                                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                                })}
                                <section class="card">
                                    <h2>"Edit"</h2>
                                    <ActionForm action=update attr:aria-label="Edit user">
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
                                    </ActionForm>
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

// ----- groups and organisations ---------------------------------------------------

#[component]
pub fn GroupsPage() -> impl IntoView {
    let save = ServerAction::<api::SaveGroup>::new();
    let delete = ServerAction::<api::DeleteGroup>::new();
    let groups = Resource::new(move || (save.version().get(), delete.version().get()), |_| api::list_groups());
    let me = me();
    let saved = save.value();
    view! {
        <h1>"Groups"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                match groups.await {
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
                                            <ActionForm action=delete>
                                                <input type="hidden" name="id" value=g.id/>
                                                <button type="submit" class="danger small">"Delete"</button>
                                            </ActionForm>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create a group"</h2>
                                <ActionForm action=save attr:aria-label="Create a group">
                                    {action_error(saved)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(saved, "name")}
                                    <label>"Description" <input name="description"/></label>
                                    {field_error(saved, "description")}
                                    <label>"Members (usernames, comma-separated)" <input name="members"/></label>
                                    {field_error(saved, "members")}
                                    <button type="submit" class="primary">"Create group"</button>
                                </ActionForm>
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
    let create = ServerAction::<api::CreateOrganisation>::new();
    let rename = ServerAction::<api::RenameOrganisation>::new();
    let delete = ServerAction::<api::DeleteOrganisation>::new();
    let orgs =
        Resource::new(move || (create.version().get(), rename.version().get(), delete.version().get()), |_| api::list_organisations());
    let me = me();
    let created = create.value();
    view! {
        <h1>"Organisations"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                match orgs.await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) => view! {
                        {action_error(rename.value())}
                        {action_error(delete.value())}
                        <div class="table-scroll"><table class="grid" data-testid="orgs-table">
                            <thead><tr><th>"Name"</th><th>"Users"</th><th>"Created"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|o| view! {
                                    <tr>
                                        <td>{o.name.clone()}{o.is_default.then_some(" (default)")}</td>
                                        <td>{o.user_count}</td>
                                        <td>{o.created_at}</td>
                                        <td>{admin.then(|| view! {
                                            <ActionForm action=rename attr:class="inline">
                                                <input type="hidden" name="id" value=o.id/>
                                                <input name="name" value=o.name.clone() aria-label="New name"/>
                                                <button type="submit" class="small">"Rename"</button>
                                            </ActionForm>
                                            {(!o.is_default).then(|| view! {
                                                <ActionForm action=delete attr:class="inline">
                                                    <input type="hidden" name="id" value=o.id/>
                                                    <button type="submit" class="danger small">"Delete"</button>
                                                </ActionForm>
                                            })}
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create an organisation"</h2>
                                <ActionForm action=create attr:aria-label="Create an organisation">
                                    {action_error(created)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(created, "name")}
                                    <button type="submit" class="primary">"Create organisation"</button>
                                </ActionForm>
                            </section>
                        })}
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

// ----- logs ------------------------------------------------------------------------

/// The filters of a log page, read from the query string (a GET form, so
/// they work without JavaScript and can be bookmarked).
fn log_query() -> Memo<bindery_model::LogQuery> {
    let query = use_query_map();
    Memo::new(move |_| {
        let m = query.read();
        let get = |k: &str| m.get(k).filter(|v| !v.trim().is_empty());
        bindery_model::LogQuery {
            q: get("q"),
            page: get("page").and_then(|p| p.parse().ok()),
            per_page: None,
            user: get("user"),
            result: get("result"),
            method: get("method"),
            action: get("action"),
            from: get("from"),
            to: get("to"),
        }
    })
}

/// The filters as a query string (`&user=…`), for the pager and the CSV link.
fn log_keep(q: &bindery_model::LogQuery) -> String {
    [("user", &q.user), ("result", &q.result), ("method", &q.method), ("action", &q.action), ("from", &q.from), ("to", &q.to)]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("&{k}={}", crate::url_encode(v))))
        .collect()
}

/// A log's filter bar: a GET form.
#[component]
fn LogFilters(query: Memo<bindery_model::LogQuery>, login: bool, csv: &'static str) -> impl IntoView {
    let v = move |f: fn(&bindery_model::LogQuery) -> &Option<String>| move || f(&query.get()).clone().unwrap_or_default();
    let selected =
        move |f: fn(&bindery_model::LogQuery) -> &Option<String>, want: &'static str| move || f(&query.get()).as_deref() == Some(want);
    let csv_href = move || {
        let q = query.get();
        let mut h = format!("{csv}?q={}", crate::url_encode(q.q.as_deref().unwrap_or("")));
        h.push_str(&log_keep(&q));
        h
    };
    view! {
        <form method="get" class="search filters" role="search" aria-label="Filter the log">
            <input type="search" name="q" aria-label="Search" placeholder=if login { "Search user, IP, reason" } else { "Search actor, action, target" } value=v(|q| &q.q)/>
            <label>{if login { "User" } else { "Who" }}
                <input name="user" value=v(|q| &q.user) size="12"/>
            </label>
            {if login {
                view! {
                    <label>"Result"
                        <select name="result">
                            <option value="">"Any"</option>
                            <option value="success" selected=selected(|q| &q.result, "success")>"Success"</option>
                            <option value="failure" selected=selected(|q| &q.result, "failure")>"Failure"</option>
                        </select>
                    </label>
                    <label>"Method"
                        <select name="method">
                            <option value="">"Any"</option>
                            <option value="web" selected=selected(|q| &q.method, "web")>"Web"</option>
                            <option value="rest" selected=selected(|q| &q.method, "rest")>"REST"</option>
                            <option value="basic" selected=selected(|q| &q.method, "basic")>"HTTP Basic"</option>
                        </select>
                    </label>
                }.into_any()
            } else {
                view! {
                    <label>"Action"
                        <input name="action" value=v(|q| &q.action) placeholder="user. or user.create" size="16"/>
                    </label>
                }.into_any()
            }}
            <label>"From" <input type="date" name="from" value=v(|q| &q.from)/></label>
            <label>"To" <input type="date" name="to" value=v(|q| &q.to)/></label>
            <button type="submit">"Apply"</button>
            <a href=csv_href download>"Export CSV"</a>
        </form>
    }
}

#[component]
pub fn LoginLogPage() -> impl IntoView {
    let query = log_query();
    let rows = Resource::new(move || query.get(), api::login_log);
    view! {
        <h1>"Login log"</h1>
        <LogFilters query=query login=true csv="/api/v1/logs/login.csv"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match rows.await {
                    Ok(p) => {
                        let pages = p.pages();
                        let q = query.get_untracked();
                        view! {
                            <LoginTable rows=p.items/>
                            <Pager total=p.total page=p.page pages=pages q=q.q.clone() keep=log_keep(&q)/>
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn OperationLogPage() -> impl IntoView {
    let query = log_query();
    let rows = Resource::new(move || query.get(), api::operation_log);
    view! {
        <h1>"Operation log"</h1>
        <LogFilters query=query login=false csv="/api/v1/logs/operations.csv"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match rows.await {
                    Ok(p) => {
                        let pages = p.pages();
                        let q = query.get_untracked();
                        view! {
                            <div class="table-scroll"><table class="grid" data-testid="operations-table">
                                <thead><tr><th>"Time (UTC)"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"Before"</th><th>"After"</th><th>"IP"</th></tr></thead>
                                <tbody>
                                    {p.items.into_iter().map(|e| view! {
                                        <tr>
                                            <td>{e.at}</td>
                                            <td>{e.actor}</td>
                                            <td>{e.action}</td>
                                            <td>{e.target}</td>
                                            <td><code class="json">{e.before.unwrap_or_default()}</code></td>
                                            <td><code class="json">{e.after.unwrap_or_default()}</code></td>
                                            <td>{e.ip}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table></div>
                            <Pager total=p.total page=p.page pages=pages q=q.q.clone() keep=log_keep(&q)/>
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

// ----- settings ------------------------------------------------------------------------

#[component]
pub fn BasicSettingsPage() -> impl IntoView {
    let save = ServerAction::<api::SaveBasicSettings>::new();
    let settings = Resource::new(move || save.version().get(), |_| api::basic_settings());
    let me = me();
    let saved = save.value();
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                match settings.await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(s) => view! {
                        <ActionForm action=save attr:class="card" attr:aria-label="Basic settings">
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
                            {move || saved.get().and_then(|r| r.ok()).map(|_| view! { <p class="ok" role="status">"Saved."</p> })}
                        </ActionForm>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn SecuritySettingsPage() -> impl IntoView {
    let save = ServerAction::<api::SaveSecuritySettings>::new();
    let unlock = ServerAction::<api::Unlock>::new();
    let settings = Resource::new(move || save.version().get(), |_| api::security_settings());
    let locks = Resource::new(move || (save.version().get(), unlock.version().get()), |_| api::list_lockouts());
    let me = me();
    let saved = save.value();
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                let locks = locks.await;
                match settings.await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(s) => view! {
                        <ActionForm action=save attr:class="card" attr:aria-label="Security settings">
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
                            {move || saved.get().and_then(|r| r.ok()).map(|_| view! { <p class="ok" role="status">"Saved."</p> })}
                        </ActionForm>
                        <h2>"Locked out now"</h2>
                        {action_error(unlock.value())}
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
                                                    <ActionForm action=unlock>
                                                        <input type="hidden" name="key" value=l.key.clone()/>
                                                        <button type="submit" class="small">"Unlock"</button>
                                                    </ActionForm>
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

#[component]
pub fn TokensPage() -> impl IntoView {
    let create = ServerAction::<api::CreateToken>::new();
    let revoke = ServerAction::<api::RevokeToken>::new();
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| api::list_tokens());
    let me = me();
    let created = create.value();
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.await.ok().flatten());
                match tokens.await {
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
                                            <ActionForm action=revoke>
                                                <input type="hidden" name="id" value=t.id/>
                                                <button type="submit" class="danger small">"Revoke"</button>
                                            </ActionForm>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                        {admin.then(|| view! {
                            <section class="card">
                                <h2>"Create a token"</h2>
                                <ActionForm action=create attr:aria-label="Create an API token">
                                    {action_error(created)}
                                    <label>"Name" <input name="name" required/></label>
                                    {field_error(created, "name")}
                                    <label>"For user (empty: yourself)" <input name="username"/></label>
                                    {field_error(created, "username")}
                                    <label>"Expires in days (empty: never)" <input name="expires_in_days" inputmode="numeric"/></label>
                                    {field_error(created, "expires_in_days")}
                                    <button type="submit" class="primary">"Create token"</button>
                                </ActionForm>
                                {move || created.get().and_then(|r| r.ok()).map(|t| view! {
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
