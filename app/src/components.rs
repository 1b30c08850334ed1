//! Building blocks shared by the pages.

use bindery_model::{CurrentUser, Role};
use leptos::prelude::*;
use leptos_router::components::{Outlet, A};
use leptos_router::hooks::use_query_map;

use crate::api::AppError;
use crate::Me;

/// The signed-in user, for components inside `Suspense`.
pub fn me() -> Me {
    expect_context::<Me>()
}

/// Whether the signed-in user is a System Admin (buttons that change things
/// are shown only to them; the server checks again regardless).
pub fn is_admin(me: &Option<CurrentUser>) -> bool {
    me.as_ref().is_some_and(|u| u.role == Role::Admin)
}

#[component]
pub fn Layout() -> impl IntoView {
    let me = me();
    view! {
        <div class="layout">
            <header class="topbar">
                <a class="brand" href="/">"Bindery"</a>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let user = me.0.get().await.ok().flatten();
                        let reader = user.as_ref().is_some_and(|u| u.role.can_read_admin());
                        let who = user
                            .as_ref()
                            .map(|u| format!("{} ({})", u.username, u.role.label()))
                            .unwrap_or_default();
                        view! {
                            <nav class="mainnav" aria-label="Main">
                                <Show when=move || reader>
                                    <A href="/">"Dashboard"</A>
                                    <A href="/users">"Users"</A>
                                    <A href="/import">"User import"</A>
                                    <A href="/sync/runs">"Sync runs"</A>
                                    <A href="/groups">"Groups"</A>
                                    <A href="/organisations">"Organisations"</A>
                                    <A href="/logs/logins">"Login log"</A>
                                    <A href="/logs/operations">"Operation log"</A>
                                    <A href="/settings/basic">"Settings"</A>
                                </Show>
                            </nav>
                            <div class="whoami">
                                <span data-testid="whoami">{who}</span>
                                <a href="/change-password">"Change password"</a>
                                <form method="post" action="/rpc/logout" class="inline">
                                    <button type="submit" class="link">"Sign out"</button>
                                </form>
                            </div>
                        }
                    })}
                </Suspense>
            </header>
            <main class="content">
                <crate::flash::FlashBanner/>
                <Outlet/>
            </main>
        </div>
    }
}

/// Tabs of the settings section.
#[component]
pub fn SettingsTabs() -> impl IntoView {
    view! {
        <nav class="tabs" aria-label="Settings">
            <A href="/settings/basic">"Basic"</A>
            <A href="/settings/security">"Security"</A>
            <A href="/settings/ldap">"LDAP"</A>
            <A href="/settings/ldap-ha">"LDAP HA"</A>
            <A href="/settings/tokens">"API tokens"</A>
        </nav>
    }
}

/// A page-level error (not a field error).
/// Per-server directory health, as the circuit breaker sees it.
#[component]
pub fn HealthTable(rows: Vec<bindery_model::ServerHealth>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="muted">"No directory configuration is enabled."</p> }.into_any();
    }
    view! {
        <div class="table-scroll"><table class="grid" data-testid="health-table">
            <thead><tr><th>"Directory"</th><th>"Server"</th><th>"State"</th><th>"Latency"</th><th>"Since"</th><th>"Checked"</th><th>"Last error"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|h| {
                    let class = match h.state.as_str() { "up" => "ok", "down" => "bad", _ => "" };
                    view! {
                        <tr>
                            <td>{h.directory.label()}</td>
                            <td>{h.uri}</td>
                            <td class=class data-testid="health-state">{h.state}</td>
                            <td>{h.latency_ms.map(|l| format!("{l} ms")).unwrap_or_else(|| "—".into())}</td>
                            <td>{h.since.unwrap_or_else(|| "—".into())}</td>
                            <td>{h.checked_at.unwrap_or_else(|| "—".into())}</td>
                            <td>{h.last_error.unwrap_or_default()}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table></div>
    }
    .into_any()
}

/// The live change streams (issue 17 §2), under the servers' health:
/// "Live stream: connected since …, last change …".
#[component]
pub fn LiveStreams(rows: Vec<bindery_model::LiveStatus>) -> impl IntoView {
    (!rows.is_empty()).then(|| {
        view! {
            <ul data-testid="live-streams">
                {rows.into_iter().map(|l| {
                    let state = if l.connected {
                        format!("connected to {} since {}", l.server, l.since.clone().unwrap_or_else(|| "—".into()))
                    } else {
                        format!("not connected{}", l.since.clone().map(|s| format!(" since {s}")).unwrap_or_default())
                    };
                    let last = l.last_change.clone().map(|t| format!(", last change {t}")).unwrap_or_else(|| ", no change seen yet".into());
                    let error = l.last_error.clone().map(|e| format!(" — {e}")).unwrap_or_default();
                    let method = if l.method.is_empty() { String::new() } else { format!("; {}", l.method) };
                    view! {
                        <li class=if l.connected { "ok" } else { "bad" }>
                            {format!("{} live stream: {state}{last}; {} users disabled{method}{error}", l.directory.label(), l.disabled)}
                            {l.unseen.clone().map(|u| view! { <br/><span data-testid="live-unseen">{format!("Not seen live: {u}")}</span> })}
                        </li>
                    }
                }).collect_view()}
            </ul>
        }
    })
}

#[component]
pub fn ErrorBox(error: AppError) -> impl IntoView {
    view! { <p class="error" role="alert">{error.to_string()}</p> }
}

/// The message for `field` from the last answer of a form, next to its input.
pub fn field_error(rpc: crate::rpc::Rpc, field: &'static str) -> impl IntoView {
    move || rpc.error().and_then(|e| e.for_field(field)).map(|m| view! { <span class="field-error" data-field=field>{m}</span> })
}

/// Errors of a form's last answer that are not about one field.
pub fn action_error(rpc: crate::rpc::Rpc) -> impl IntoView {
    move || {
        rpc.error().map(|e| {
            let text = match &e {
                AppError::Invalid(_) => "Please correct the fields marked below.".to_string(),
                other => other.to_string(),
            };
            view! { <p class="error" role="alert">{text}</p> }
        })
    }
}

/// `?q=` and `?page=` of the current URL.
pub fn list_params() -> (Memo<Option<String>>, Memo<Option<i64>>) {
    let query = use_query_map();
    let q = Memo::new(move |_| query.read().get("q").filter(|s| !s.trim().is_empty()));
    let page = Memo::new(move |_| query.read().get("page").and_then(|p| p.parse().ok()));
    (q, page)
}

/// A search box: a plain GET form, so it works without JavaScript.
#[component]
pub fn SearchBox(q: Memo<Option<String>>, placeholder: &'static str) -> impl IntoView {
    view! {
        <form method="get" class="search" role="search">
            <input type="search" name="q" placeholder=placeholder aria-label=placeholder value=move || q.get().unwrap_or_default()/>
            <button type="submit">"Search"</button>
        </form>
    }
}

/// "Total N" and previous / next links.
#[component]
pub fn Pager(
    total: i64,
    page: i64,
    pages: i64,
    q: Option<String>,
    /// More of the query string to keep (`&user=…&from=…`), already encoded.
    #[prop(optional)]
    keep: String,
) -> impl IntoView {
    let href = move |p: i64| {
        let mut h = format!("?page={p}");
        if let Some(q) = &q {
            h.push_str("&q=");
            h.push_str(&crate::url_encode(q));
        }
        h.push_str(&keep);
        h
    };
    let prev = (page > 1).then(|| href(page - 1));
    let next = (page < pages).then(|| href(page + 1));
    view! {
        <div class="pager">
            <span data-testid="total">{format!("Total {total}")}</span>
            <span>{format!("Page {page} of {pages}")}</span>
            {prev.map(|h| view! { <a href=h rel="prev">"Previous"</a> })}
            {next.map(|h| view! { <a href=h rel="next">"Next"</a> })}
        </div>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <main class="narrow">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to the console"</a></p>
        </main>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use bindery_model::{DirectoryKind, LiveStatus};

    fn render(rows: Vec<LiveStatus>) -> String {
        Owner::new().with(|| view! { <LiveStreams rows=rows/> }.to_html())
    }

    /// The AD line of a stream that cannot see deletions says so (its
    /// end-to-end test needs Samba, which the Playwright suite does not
    /// provision); a stream that sees everything lists nothing unseen.
    #[test]
    fn a_live_stream_says_how_it_works_and_what_it_cannot_see() {
        let ad = LiveStatus {
            directory: DirectoryKind::Ldap,
            enabled: true,
            connected: true,
            server: "ldap://dc.example.test:389".into(),
            since: Some("2026-12-03 10:00".into()),
            method: "change notification, changes read by DirSync".into(),
            unseen: Some("deletions (the service account may not read Deleted Objects): the next sync disables them".into()),
            ..Default::default()
        };
        let html = render(vec![ad.clone()]);
        assert!(html.contains("LDAP live stream: connected to ldap://dc.example.test:389 since 2026-12-03 10:00"), "{html}");
        assert!(html.contains("; change notification, changes read by DirSync"), "{html}");
        assert!(html.contains(r#"data-testid="live-unseen""#), "{html}");
        assert!(html.contains("Not seen live: deletions (the service account may not read Deleted Objects)"), "{html}");
        let html = render(vec![LiveStatus { unseen: None, connected: false, ..ad }]);
        assert!(!html.contains("live-unseen"), "{html}");
        assert!(html.contains("LDAP live stream: not connected since 2026-12-03 10:00"), "{html}");
        assert!(!render(vec![]).contains("live-streams"), "no stream, no list");
    }
}
