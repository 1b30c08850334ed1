//! The Dashboard and the login and operation logs: the pages and the server
//! functions they call (the service's `logs`).

// A server function takes one argument per form field, and `#[server]` drops a
// per-function `allow` from the client half it generates: allow it here.
#![allow(clippy::too_many_arguments)]

use bindery_model::*;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;

#[cfg(feature = "ssr")]
use crate::api::ssr::*;
use crate::api::AppError;
use crate::components::*;
use crate::data::Data;

#[component]
pub fn HomePage() -> impl IntoView {
    let me = me();
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match me.0.get().await {
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
    let data = Data::<Dashboard>::new(|| (), |_| GetDashboard {});
    view! {
        <h1>"Dashboard"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.get().await {
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
                        <crate::components::LiveStreams rows=d.live_streams/>
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
    let rows = Data::<Page<LoginEvent>>::new(move || query.get(), |query| LoginLog { query });
    view! {
        <h1>"Login log"</h1>
        <LogFilters query=query login=true csv="/api/v1/logs/login.csv"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match rows.get().await {
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
    let rows = Data::<Page<OperationEvent>>::new(move || query.get(), |query| OperationLog { query });
    view! {
        <h1>"Operation log"</h1>
        <LogFilters query=query login=false csv="/api/v1/logs/operations.csv"/>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match rows.get().await {
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

#[server(name = GetDashboard, prefix = "/rpc", endpoint = "dashboard", output = crate::api::Answer)]
pub async fn dashboard() -> Result<Dashboard, AppError> {
    let (svc, actor) = caller()?;
    svc.dashboard(&actor).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "login_log", output = crate::api::Answer)]
pub async fn login_log(#[server(default)] query: bindery_model::LogQuery) -> Result<Page<LoginEvent>, AppError> {
    let (svc, actor) = caller()?;
    svc.login_log(&actor, &query).await.map_err(map)
}

#[server(prefix = "/rpc", endpoint = "operation_log", output = crate::api::Answer)]
pub async fn operation_log(#[server(default)] query: bindery_model::LogQuery) -> Result<Page<OperationEvent>, AppError> {
    let (svc, actor) = caller()?;
    svc.operation_log(&actor, &query).await.map_err(map)
}
