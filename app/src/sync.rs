//! Sync: the settings card on the LDAP / LDAP HA pages (schedule with its
//! next five run times, Sync now, Dry run), the Sync runs history, and one
//! run's page (counts, notes, per-user outcomes, approve or reject a held
//! run, CSV report).

use bindery_model::{DirectoryKind, SyncRun};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api;
use crate::components::{action_error, field_error, is_admin, me, ErrorBox};
use crate::data::Data;
use crate::rpc::{Rpc, RpcForm};

pub fn counts_text(r: &SyncRun) -> String {
    let c = &r.counts;
    let verb = if r.dry_run || r.state == "held" { "to " } else { "" };
    format!(
        "{} directory users; {verb}create {}, {verb}update {}, {verb}enable {}, {verb}disable {}; {} entries failed",
        c.directory_users, c.create, c.update, c.enable, c.disable, c.failed
    )
}

/// Sync settings of one directory configuration, with Sync now / Dry run.
#[component]
pub fn SyncCard(kind: DirectoryKind) -> impl IntoView {
    let save = Rpc::new::<api::SaveSyncSettings>();
    let start = Rpc::new::<api::StartSync>();
    let settings = Data::<bindery_model::SyncSettingsView>::new(
        move || save.version(),
        move |_| api::SyncSettings { kind: kind.as_str().to_string() },
    );
    let orgs = Data::<Vec<bindery_model::Organisation>>::new(|| (), |_| crate::accounts::ListOrganisations {});
    let me = me();
    let saved = save;
    view! {
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                let orgs = orgs.get().await.unwrap_or_default();
                match settings.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(v) => {
                        let s = v.settings.clone();
                        let interval = if s.interval_hours > 0 { s.interval_hours.to_string() } else { String::new() };
                        view! {
                            <RpcForm rpc=save class="card wide" label="Sync settings">
                                <h2>"Sync"</h2>
                                {action_error(saved)}
                                <input type="hidden" name="kind" value=kind.as_str()/>
                                <fieldset>
                                    <legend>"Organisations to import into"</legend>
                                    {orgs.into_iter().map(|o| {
                                        let checked = s.organisation_ids.contains(&o.id);
                                        view! { <label class="check"><input type="checkbox" name=format!("orgs[{}]", o.id) value="on" checked=checked disabled=!admin/>{o.name}</label> }
                                    }).collect_view()}
                                    <small class="muted">"None checked: the default organisation."</small>
                                </fieldset>
                                {field_error(saved, "organisation_ids")}
                                <label class="check"><input type="checkbox" name="periodic" value="on" checked=s.periodic disabled=!admin/>"Periodic sync"</label>
                                <label>"Crontab (minute hour day month weekday, UTC; wins over the interval)"
                                    <input name="crontab" value=s.crontab.clone() placeholder="0 3 * * *" disabled=!admin/></label>
                                {field_error(saved, "crontab")}
                                <label>"… or every N hours"
                                    <input name="interval_hours" inputmode="numeric" value=interval disabled=!admin/></label>
                                {field_error(saved, "interval_hours")}
                                <p data-testid="sync-schedule">"Schedule: " <strong>{v.schedule.clone()}</strong></p>
                                {(!v.next_runs.is_empty()).then(|| view! {
                                    <p>"Next runs (UTC):"</p>
                                    <ol data-testid="next-runs">{v.next_runs.iter().map(|t| view! { <li>{t.clone()}</li> }).collect_view()}</ol>
                                })}
                                <label>"Report recipients (usernames, separated by commas)"
                                    <input name="recipients" value=s.recipients.join(", ") disabled=!admin/></label>
                                {field_error(saved, "recipients")}
                                <label class="check"><input type="checkbox" name="disable_missing" value="on" checked=s.disable_missing disabled=!admin/>
                                    "Disable users missing from or disabled in the directory"</label>
                                <label>"Hold a run for approval when it would disable more than this share of directory users (%)"
                                    <input name="threshold_percent" inputmode="numeric" value=s.threshold_percent.to_string() disabled=!admin/></label>
                                {field_error(saved, "threshold_percent")}
                                <p data-testid="delta-detected">{match &v.detected {
                                    Some(d) if d.method != "none" => format!(
                                        "Delta method detected by Test connection: {} ({}, {}): {}",
                                        d.method, d.server, d.detected_at, d.reason
                                    ),
                                    Some(d) => format!("Test connection found no delta method: {}. Every run is a full enumeration.", d.reason),
                                    None => "No delta method detected yet: run Test connection on the saved settings to offer Delta.".to_string(),
                                }}</p>
                                <label>"Mode"
                                    <select name="mode" disabled=!admin>
                                        <option value="full" selected=s.mode == bindery_model::SyncMode::Full>"Full: enumerate every search OU"</option>
                                        {v.detected.as_ref().filter(|d| d.method != "none").map(|d| view! {
                                            <option value="delta" selected=s.mode == bindery_model::SyncMode::Delta>{format!("Delta: read only what changed ({})", d.method)}</option>
                                        })}
                                    </select></label>
                                {field_error(saved, "mode")}
                                <label>"In delta mode, a full enumeration when the last one is older than (hours)"
                                    <input name="full_every_hours" inputmode="numeric" value=s.full_every_hours.to_string() disabled=!admin/></label>
                                {field_error(saved, "full_every_hours")}
                                <label class="check"><input type="checkbox" name="live" value="on" checked=s.live disabled=!admin/>
                                    "Live deprovisioning: keep a change stream open (OpenLDAP syncrepl; Active Directory change notification with DirSync or USN) and disable a user disabled in or deleted from the directory within seconds, sessions and tokens revoked (needs the disabling above)"</label>
                                {v.detected.as_ref().and_then(|d| d.live_words()).map(|w| view! { <p data-testid="live-available">{w}</p> })}
                                {field_error(saved, "live")}
                                {v.live.clone().map(|l| view! { <crate::components::LiveStreams rows=vec![l]/> })}
                                {admin.then(|| view! { <button type="submit" class="primary">"Save sync settings"</button> })}
                                {move || saved.succeeded().then(|| view! { <p class="ok" role="status">"Saved."</p> })}
                            </RpcForm>
                            {admin.then(|| view! {
                                <div class="actions">
                                    <RpcForm rpc=start label="Sync now">
                                        <input type="hidden" name="kind" value=kind.as_str()/>
                                        <button type="submit" class="primary">"Sync now"</button>
                                    </RpcForm>
                                    <RpcForm rpc=start label="Dry run">
                                        <input type="hidden" name="kind" value=kind.as_str()/>
                                        <input type="hidden" name="dry_run" value="true"/>
                                        <button type="submit">"Dry run"</button>
                                    </RpcForm>
                                    <A href="/sync/runs">"Sync runs"</A>
                                </div>
                            })}
                        }.into_any()
                    }
                }
            })}
        </Transition>
        {action_error(start)}
        {move || start.ok::<SyncRun>().map(|r| view! {
            <p role="status" data-testid="sync-started">
                {format!("{} #{} started. ", if r.dry_run { "Dry run" } else { "Sync" }, r.id)}
                <A href=format!("/sync/runs/{}", r.id)>"Follow it"</A>
            </p>
        })}
    }
}

/// Poll while `running` says so (client side only).
fn poll(running: RwSignal<bool>, tick: RwSignal<u32>) {
    Effect::new(move |_| {
        if running.get() {
            if let Ok(h) = set_interval_with_handle(move || tick.update(|t| *t += 1), std::time::Duration::from_millis(500)) {
                on_cleanup(move || h.clear());
            }
        }
    });
}

#[component]
pub fn SyncRunsPage() -> impl IntoView {
    let query = use_query_map();
    let page = Memo::new(move |_| query.read().get("page").and_then(|p| p.parse::<i64>().ok()).unwrap_or(1).max(1));
    let tick = RwSignal::new(0u32);
    let running = RwSignal::new(false);
    let runs = Data::<bindery_model::Page<SyncRun>>::new(move || (page.get(), tick.get()), |(p, _)| api::ListSyncRuns { page: Some(p) });
    Effect::new(move |_| {
        if let Some(Ok(p)) = runs.now() {
            running.set(p.items.iter().any(|r| r.state == "running"));
        }
    });
    poll(running, tick);
    view! {
        <h1>"Sync runs"</h1>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match runs.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(p) if p.items.is_empty() => view! {
                        <p class="muted">"No sync has run yet. Start one with Sync now on Settings → LDAP or LDAP HA."</p>
                    }.into_any(),
                    Ok(p) => {
                        let (page, pages) = (p.page, p.pages());
                        view! {
                            <div class="table-scroll"><table class="grid" data-testid="sync-runs">
                                <thead><tr><th>"Run"</th><th>"Kind"</th><th>"Directory"</th><th>"Started by"</th><th>"State"</th><th>"Started (UTC)"</th><th>"Ended (UTC)"</th><th>"Counts"</th><th>"Error"</th></tr></thead>
                                <tbody>
                                    {p.items.into_iter().map(|r| {
                                        let counts = counts_text(&r);
                                        view! {
                                            <tr data-run=r.id.to_string()>
                                                <td><A href=format!("/sync/runs/{}", r.id)>{format!("#{}{}", r.id, if r.dry_run { " (dry run)" } else { "" })}</A></td>
                                                <td data-testid="run-kind">{r.kind.label()}</td>
                                                <td>{r.directory.label()}</td>
                                                <td>{r.started_by.clone()}</td>
                                                <td class=format!("state {}", r.state) data-testid="run-state">{r.state.as_str()}</td>
                                                <td>{r.started_at.clone()}</td>
                                                <td>{r.finished_at.clone().unwrap_or_default()}</td>
                                                <td>{counts}</td>
                                                <td class="bad">{r.error.clone()}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table></div>
                            <p class="pager">
                                {(page > 1).then(|| view! { <a href=format!("?page={}", page - 1)>"← Previous"</a> })}
                                " " {format!("Page {page} of {}", pages.max(1))} " "
                                {(page < pages).then(|| view! { <a href=format!("?page={}", page + 1)>"Next →"</a> })}
                            </p>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

const ACTIONS: [(&str, &str); 6] = [
    ("all", "All"),
    ("create", "Create"),
    ("update", "Update"),
    ("enable", "Enable"),
    ("disable", "Disable"),
    ("failed", "Failed entries"),
];

#[component]
pub fn SyncRunPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = Memo::new(move |_| params.read().get("id").and_then(|i| i.parse::<i64>().ok()).unwrap_or(0));
    let action =
        Memo::new(move |_| query.read().get("action").filter(|a| ACTIONS.iter().any(|(v, _)| v == a)).unwrap_or_else(|| "all".into()));
    let page = Memo::new(move |_| query.read().get("page").and_then(|p| p.parse::<i64>().ok()).unwrap_or(1).max(1));
    let approve = Rpc::new::<api::ApproveSync>();
    let reject = Rpc::new::<api::RejectSync>();
    let tick = RwSignal::new(0u32);
    let running = RwSignal::new(false);
    let detail = Data::<bindery_model::SyncRunDetail>::new(
        move || (id.get(), action.get(), page.get(), tick.get(), approve.version(), reject.version()),
        |(id, action, page, ..)| api::SyncRun { id, action: Some(action), page: Some(page) },
    );
    Effect::new(move |_| {
        if let Some(Ok(d)) = detail.now() {
            running.set(d.run.state == "running");
        }
    });
    poll(running, tick);
    let me = me();
    view! {
        <p><A href="/sync/runs">"← Sync runs"</A></p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match detail.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(d) => {
                        let r = d.run.clone();
                        let (page, pages) = (d.items.page, d.items.pages());
                        let act = action.get_untracked();
                        let href = move |p: i64| format!("?action={act}&page={p}");
                        view! {
                            <h1>{format!(
                                "{} run #{} — {}{}",
                                match r.kind {
                                    bindery_model::RunKind::Delta => "Delta sync",
                                    bindery_model::RunKind::Live => "Live deprovisioning",
                                    _ => "Sync",
                                },
                                r.id,
                                r.directory.label(),
                                if r.dry_run { " (dry run)" } else { "" }
                            )}</h1>
                            <section class="card wide">
                                <p>"State: " <strong data-testid="run-state" class=format!("state {}", r.state)>{r.state.as_str()}</strong>
                                    {format!(" · started {} by {}", r.started_at, r.started_by)}
                                    {r.finished_at.clone().map(|f| format!(" · ended {f}"))}
                                    {format!(" · {} entries in {} pages, {:.1} s", r.entries, r.pages, r.elapsed_ms as f64 / 1000.0)}
                                </p>
                                <p data-testid="run-counts">{counts_text(&r)}
                                    {(r.counts.applied + r.counts.apply_failed > 0).then(|| format!("; applied {}, failed while applying {}", r.counts.applied, r.counts.apply_failed))}
                                </p>
                                {(!r.error.is_empty()).then(|| view! { <p class="bad">{format!("Incomplete: {}", r.error)}</p> })}
                                <ul data-testid="run-notes">{r.counts.notes.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                                {(admin && r.state == "held").then(|| view! {
                                    <div class="actions">
                                        <RpcForm rpc=approve label="Approve">
                                            <input type="hidden" name="id" value=r.id.to_string()/>
                                            <button type="submit" class="primary">"Approve and apply"</button>
                                        </RpcForm>
                                        <RpcForm rpc=reject label="Reject">
                                            <input type="hidden" name="id" value=r.id.to_string()/>
                                            <button type="submit" class="danger">"Reject"</button>
                                        </RpcForm>
                                    </div>
                                })}
                                <p><a href=format!("/api/v1/sync/runs/{}/report.csv", r.id) download>"Download report (CSV)"</a></p>
                            </section>
                            <form method="get" class="search filters" aria-label="Filter the run's users">
                                <label>"Action "
                                    <select name="action">
                                        {ACTIONS.iter().map(|(v, l)| view! { <option value=*v selected=action.get_untracked() == *v>{*l}</option> }).collect_view()}
                                    </select>
                                </label>
                                <button type="submit">"Apply"</button>
                            </form>
                            <p>{format!("{} users", d.items.total)}</p>
                            <div class="table-scroll"><table class="grid" data-testid="run-items">
                                <thead><tr><th>"Action"</th><th>"Username"</th><th>"Reason"</th><th>"Outcome"</th><th>"Error"</th></tr></thead>
                                <tbody>
                                    {d.items.items.into_iter().map(|i| {
                                        let who = i.username.clone();
                                        let class = format!("outcome {}", i.outcome);
                                        view! {
                                            <tr data-username=who>
                                                <td>{i.action.as_str()}</td><td>{i.username}</td><td>{i.reason}</td>
                                                <td class=class data-testid="item-outcome">{i.outcome.as_str()}</td><td class="bad">{i.error}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table></div>
                            <p class="pager">
                                {(page > 1).then(|| view! { <a href=href(page - 1)>"← Previous"</a> })}
                                " " {format!("Page {page} of {}", pages.max(1))} " "
                                {(page < pages).then(|| view! { <a href=href(page + 1)>"Next →"</a> })}
                            </p>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        {action_error(approve)}
        {action_error(reject)}
    }
}
