//! "User import": Sync users (progress, cancel) → filter, sort, page →
//! check rows → pick organisations → Import, with each row's outcome.

use bindery_model::{DirectoryKind, ImportResult, StagedUser, SyncRun};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::api;
use crate::components::{action_error, is_admin, me, ErrorBox};
use crate::data::Data;
use crate::rpc::{Rpc, RpcForm};

const STATUSES: [(&str, &str); 6] = [
    ("all", "All"),
    ("new", "New"),
    ("imported", "Already imported"),
    ("changed", "Changed"),
    ("disabled", "Disabled in the directory"),
    ("invalid", "Missing or invalid attributes"),
];

#[derive(Clone, PartialEq)]
struct Filters {
    kind: DirectoryKind,
    status: String,
    q: String,
    sort: String,
    desc: bool,
    page: i64,
    per_page: i64,
}

impl Filters {
    fn href(&self, page: i64) -> String {
        format!(
            "?dir={}&status={}&q={}&sort={}&desc={}&per_page={}&page={page}",
            self.kind.as_str(),
            crate::url_encode(&self.status),
            crate::url_encode(&self.q),
            self.sort,
            self.desc,
            self.per_page
        )
    }
}

fn progress_text(r: &SyncRun) -> String {
    let secs = r.elapsed_ms as f64 / 1000.0;
    let what = match r.state.as_str() {
        "running" => "Fetching…",
        "done" => "Fetched",
        "cancelled" => "Cancelled after",
        "interrupted" => "Interrupted after",
        _ => "Failed after",
    };
    format!("{what} {} entries in {} pages, {secs:.1} s", r.entries, r.pages)
}

#[component]
pub fn ImportPage() -> impl IntoView {
    let query = use_query_map();
    let filters = Memo::new(move |_| {
        let q = query.read();
        Filters {
            kind: q.get("dir").and_then(|d| DirectoryKind::parse(&d)).unwrap_or(DirectoryKind::Ldap),
            status: q.get("status").filter(|s| STATUSES.iter().any(|(v, _)| v == s)).unwrap_or_else(|| "all".into()),
            q: q.get("q").unwrap_or_default(),
            sort: q
                .get("sort")
                .filter(|s| ["username", "name", "email", "status"].contains(&s.as_str()))
                .unwrap_or_else(|| "username".into()),
            desc: q.get("desc").is_some_and(|d| d == "true"),
            page: q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1),
            per_page: q.get("per_page").and_then(|p| p.parse().ok()).filter(|n| [15, 50, 100].contains(n)).unwrap_or(15),
        }
    });
    let start = Rpc::new::<api::StartUserFetch>();
    let cancel = Rpc::new::<api::CancelUserFetch>();
    let import = Rpc::new::<api::ImportUsers>();
    // Poll the enumeration's progress while one runs (client side only).
    let tick = RwSignal::new(0u32);
    let status = Data::<Option<SyncRun>>::new(
        move || (filters.get().kind, start.version(), cancel.version(), tick.get()),
        |(kind, ..)| api::UserFetchStatus { kind: kind.as_str().to_string() },
    );
    let running = RwSignal::new(false);
    Effect::new(move |_| {
        if let Some(Ok(r)) = status.now() {
            running.set(r.is_some_and(|r| r.state == "running"));
        }
    });
    Effect::new(move |_| {
        if running.get() || start.pending() {
            if let Ok(h) = set_interval_with_handle(move || tick.update(|t| *t += 1), std::time::Duration::from_millis(400)) {
                on_cleanup(move || h.clear());
            }
        }
    });
    // The table reloads when an enumeration finishes and after an import.
    let finished = Memo::new(move |_| status.now().and_then(|r| r.ok()).flatten().filter(|r| r.state != "running").map(|r| r.id));
    let rows = Data::<bindery_model::Page<StagedUser>>::new(
        move || (filters.get(), finished.get(), import.version()),
        |(f, ..)| api::ListStagedUsers {
            kind: f.kind.as_str().to_string(),
            status: Some(f.status.clone()),
            q: Some(f.q.clone()),
            sort: Some(f.sort.clone()),
            desc: Some(f.desc),
            page: Some(f.page),
            per_page: Some(f.per_page),
        },
    );
    let orgs = Data::<Vec<bindery_model::Organisation>>::new(|| (), |_| crate::accounts::ListOrganisations {});
    let me = me();

    view! {
        <h1>"User import"</h1>
        <nav class="tabs" aria-label="Directory">
            // Plain links: the router's <A> marks both current (same path,
            // the query differs), so the current tab comes from `dir`.
            <a href="/import?dir=ldap" aria-current=move || (filters.get().kind == DirectoryKind::Ldap).then_some("page")>"LDAP"</a>
            <a href="/import?dir=ldap_ha" aria-current=move || (filters.get().kind == DirectoryKind::LdapHa).then_some("page")>"LDAP HA"</a>
        </nav>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let kind = filters.get_untracked().kind;
                admin.then(|| view! {
                    <div class="actions">
                        <RpcForm rpc=start label="Sync users">
                            <input type="hidden" name="kind" value=kind.as_str()/>
                            <button type="submit" class="primary" disabled=move || running.get()>"Sync users"</button>
                        </RpcForm>
                        <Show when=move || running.get()>
                            <RpcForm rpc=cancel label="Cancel sync">
                                <input type="hidden" name="kind" value=kind.as_str()/>
                                <button type="submit">"Cancel"</button>
                            </RpcForm>
                        </Show>
                    </div>
                    {action_error(start)}
                })
            })}
        </Suspense>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match status.get().await {
                    Ok(Some(r)) => {
                        let ok = r.state == "done";
                        view! {
                            <div class="progress" data-testid="fetch-progress">
                                {(r.state == "running").then(|| view! { <progress aria-label="Sync progress"></progress> })}
                                <span data-testid="fetch-state" data-state=r.state.as_str() class=if ok { "ok" } else if r.state == "running" { "" } else { "bad" }>
                                    {progress_text(&r)}
                                </span>
                                {(!r.error.is_empty()).then(|| view! { <span class="bad">" — " {r.error.clone()} " (incomplete)"</span> })}
                            </div>
                        }.into_any()
                    }
                    Ok(None) => view! { <p class="muted">"No snapshot yet: press Sync users to read the directory."</p> }.into_any(),
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                }
            })}
        </Transition>
        <form method="get" class="search filters" role="search" aria-label="Filter the import table">
            <input type="hidden" name="dir" value=move || filters.get().kind.as_str()/>
            <input type="search" name="q" aria-label="Search username, name, email" placeholder="Search username, name, email" value=move || filters.get().q/>
            <label>"Status "
                <select name="status">
                    {move || STATUSES.iter().map(|(v, l)| view! { <option value=*v selected=filters.get().status == *v>{*l}</option> }).collect_view()}
                </select>
            </label>
            <label>"Sort "
                <select name="sort">
                    {move || [("username", "Username"), ("name", "Name"), ("email", "Email"), ("status", "Status")].iter()
                        .map(|(v, l)| view! { <option value=*v selected=filters.get().sort == *v>{*l}</option> }).collect_view()}
                </select>
            </label>
            <label class="check"><input type="checkbox" name="desc" value="true" checked=move || filters.get().desc/>"Descending"</label>
            <label>"Per page "
                <select name="per_page">
                    {move || [15, 50, 100].iter().map(|n| view! { <option value=n.to_string() selected=filters.get().per_page == *n>{n.to_string()}</option> }).collect_view()}
                </select>
            </label>
            <button type="submit">"Apply"</button>
            <a href=move || {
                let f = filters.get();
                format!("/api/v1/directories/{}/users.csv?status={}&q={}", f.kind.as_str(), crate::url_encode(&f.status), crate::url_encode(&f.q))
            } download>"Export CSV"</a>
        </form>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let orgs = orgs.get().await.unwrap_or_default();
                let f = filters.get_untracked();
                match rows.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(p) => {
                        let pages = p.pages();
                        let (page, total) = (p.page, p.total);
                        view! {
                            <RpcForm rpc=import label="Import users">
                                <input type="hidden" name="kind" value=f.kind.as_str()/>
                                <input type="hidden" name="status" value=f.status.clone()/>
                                <input type="hidden" name="q" value=f.q.clone()/>
                                <p data-testid="staged-total">{format!("Total {total}")}</p>
                                <StagedTable rows=p.items admin=admin/>
                                <p class="pager">
                                    {(page > 1).then(|| view! { <a href=f.href(page - 1)>"← Previous"</a> })}
                                    " " {format!("Page {page} of {}", pages.max(1))} " "
                                    {(page < pages).then(|| view! { <a href=f.href(page + 1)>"Next →"</a> })}
                                </p>
                                {admin.then(|| view! {
                                    <fieldset>
                                        <legend>"Import organisation(s)"</legend>
                                        {orgs.into_iter().map(|o| view! {
                                            <label class="check"><input type="checkbox" name=format!("orgs[{}]", o.id) value="on" checked=o.is_default/>{o.name}</label>
                                        }).collect_view()}
                                    </fieldset>
                                    <label class="check"><input type="checkbox" name="all_matching" value="true"/>
                                        {format!("Import all {total} matching rows (not only the checked ones)")}</label>
                                    <button type="submit" class="primary">"Import"</button>
                                })}
                            </RpcForm>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        {move || import.pending().then(|| view! { <p role="status">"Importing…"</p> })}
        {move || import.result::<ImportResult>().map(|r| match r {
            Ok(r) => view! { <ImportResultView r=r/> }.into_any(),
            Err(e) => view! { <ErrorBox error=e/> }.into_any(),
        })}
    }
}

#[component]
fn StagedTable(rows: Vec<StagedUser>, admin: bool) -> impl IntoView {
    view! {
        <div class="table-scroll"><table class="grid" data-testid="staged-table">
            <thead><tr><th>"✓"</th><th>"Status"</th><th>"Username"</th><th>"Name"</th><th>"Email"</th><th>"Groups"</th><th>"Already exists"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|r| {
                    let label = format!("Select {}", r.username);
                    let name = format!("ids[{}]", r.id);
                    let uname = r.username.clone();
                    view! {
                    <tr data-username=uname>
                        <td>{admin.then(|| view! {
                            <input type="checkbox" name=name value="on" aria-label=label/>
                        })}</td>
                        <td class=format!("status {}", r.status) title=r.problem.clone() data-testid="staged-status">
                            {r.status.clone()}
                            {(!r.problem.is_empty()).then(|| view! { <small>{format!(" ({})", r.problem)}</small> })}
                        </td>
                        <td>{r.username}</td>
                        <td>{r.name}</td>
                        <td>{r.email}</td>
                        <td>{r.groups.iter().map(|g| g.split(',').next().unwrap_or(g).trim_start_matches("cn=").to_string()).collect::<Vec<_>>().join(", ")}</td>
                        <td data-testid="already-exists">{if r.already_exists { "yes" } else { "no" }}</td>
                    </tr>
                }}).collect_view()}
            </tbody>
        </table></div>
    }
}

#[component]
fn ImportResultView(r: ImportResult) -> impl IntoView {
    view! {
        <section class="card wide" data-testid="import-result">
            <h2>"Import result"</h2>
            <p role="status" data-testid="import-summary">
                {format!("{} created, {} updated, {} unchanged, {} failed.", r.created, r.updated, r.unchanged, r.failed)}
            </p>
            <div class="table-scroll"><table class="grid">
                <thead><tr><th>"Username"</th><th>"Outcome"</th><th>"Reason"</th></tr></thead>
                <tbody>
                    {r.outcomes.into_iter().map(|o| {
                        let class = if o.outcome == "failed" { "bad" } else { "ok" };
                        view! { <tr><td>{o.username}</td><td class=class>{o.outcome}</td><td>{o.reason}</td></tr> }
                    }).collect_view()}
                </tbody>
            </table></div>
        </section>
    }
}
