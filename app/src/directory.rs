//! Settings → Authentication → LDAP / LDAP HA.
//!
//! One form holds every field. Its three buttons — Save, Test connection,
//! Test login — send the same (unsaved) values to different server
//! functions; without JavaScript the form still saves (plain POST).

use bindery_model::{DirectoryKind, DirectorySettings, GroupMode, LoginTestReport, ProbeReport, ProbeStep};
use leptos::prelude::*;

use crate::api::{self, AppError};
use crate::components::{is_admin, me, ErrorBox, SettingsTabs};
use crate::data::Data;
use crate::rpc::Rpc;

#[component]
pub fn LdapPage() -> impl IntoView {
    view! { <DirectoryPage kind=DirectoryKind::Ldap/> <crate::sync::SyncCard kind=DirectoryKind::Ldap/> }
}

#[component]
pub fn LdapHaPage() -> impl IntoView {
    view! { <DirectoryPage kind=DirectoryKind::LdapHa/> <crate::sync::SyncCard kind=DirectoryKind::LdapHa/> }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Save,
    Test,
    Login,
    Fetch,
}

#[component]
fn DirectoryPage(kind: DirectoryKind) -> impl IntoView {
    let save = Rpc::new::<api::SaveDirectory>();
    let test = Rpc::new::<api::TestDirectory>();
    let login = Rpc::new::<api::TestDirectoryLogin>();
    let fetch = Rpc::new::<api::FetchDirectoryCertificates>();
    let last = RwSignal::new(Op::Save);
    let settings = Data::<DirectorySettings>::new(move || save.version(), move |_| api::GetDirectory { kind: kind.as_str().to_string() });
    let health = Data::<Vec<bindery_model::ServerHealth>>::new(move || save.version(), |_| api::GetDirectoryHealth {});
    let me = me();
    // The error of whichever button was pressed last, for the field marks.
    let last_error = Memo::new(move |_| match last.get() {
        Op::Save => save.error(),
        Op::Test => test.error(),
        Op::Login => login.error(),
        Op::Fetch => fetch.error(),
    });
    let err = move |field: &'static str| {
        move || last_error.get().and_then(|e| e.for_field(field)).map(|m| view! { <span class="field-error" data-field=field>{m}</span> })
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let op = ev.submitter().and_then(|b| b.get_attribute("value")).unwrap_or_default();
        let (op, rpc) = match op.as_str() {
            "test" => (Op::Test, test),
            "fetch" => (Op::Fetch, fetch),
            "login" => (Op::Login, login),
            _ => (Op::Save, save),
        };
        last.set(op);
        rpc.submit(&ev);
    };
    view! {
        <h1>"Settings"</h1>
        <SettingsTabs/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                health.get().await.ok().map(|rows| {
                    let rows: Vec<_> = rows.into_iter().filter(|h| h.directory == kind).collect();
                    view! {
                        <section class="card wide">
                            <h2>"Server health"</h2>
                            <p class="hint">"A server that cannot be reached costs one connect timeout, then logins skip it until the background probe finds it healthy again."</p>
                            <crate::components::HealthTable rows=rows/>
                        </section>
                    }
                })
            })}
        </Transition>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let admin = is_admin(&me.0.get().await.ok().flatten());
                match settings.get().await {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(s) => view! {
                        <form method="post" action="/rpc/save_directory" class="card wide directory" on:submit=on_submit
                            aria-label=format!("{} settings", kind.label())>
                            <h2>{kind.label()} {(kind == DirectoryKind::LdapHa).then_some(" — used when every LDAP server is unreachable")}</h2>
                            <input type="hidden" name="kind" value=kind.as_str()/>
                            {move || {
                                let msg = match last.get() {
                                    Op::Save if save.succeeded() => Some(Ok("Saved.".to_string())),
                                    Op::Save => save.error().map(Err),
                                    _ => None,
                                };
                                match msg {
                                    Some(Ok(m)) => Some(view! { <p class="ok" role="status">{m}</p> }.into_any()),
                                    Some(Err(AppError::Invalid(_))) => Some(view! { <p class="error" role="alert">"Nothing was saved. Please correct the fields marked below."</p> }.into_any()),
                                    Some(Err(e)) => Some(view! { <ErrorBox error=e/> }.into_any()),
                                    None => None,
                                }
                            }}
                            <DirectoryFields s=s.clone() admin=admin err=err/>
                            {admin.then(|| view! {
                                <div class="actions">
                                    <button type="submit" name="op" value="save" class="primary">"Save"</button>
                                    <button type="submit" name="op" value="test" formaction="/rpc/test_directory">"Test connection"</button>
                                    <button type="submit" name="op" value="fetch" formaction="/rpc/fetch_directory_certificates">"Fetch certificate"</button>
                                </div>
                                <fieldset class="test-login">
                                    <legend>"Test login"</legend>
                                    <p class="hint">"Checks a person against the values above (saved or not). Counts toward no lockout."</p>
                                    <label>"Username" <input name="test_username" autocomplete="off"/></label>
                                    {err("username")}
                                    <label>"Password" <input name="test_password" type="password" autocomplete="off"/></label>
                                    {err("test_password")}
                                    <label class="check"><input type="checkbox" name="lookup_only" value="on"/>"Lookup only (no password)"</label>
                                    <button type="submit" name="op" value="login" formaction="/rpc/test_directory_login">"Test login"</button>
                                </fieldset>
                            })}
                        </form>
                    }.into_any(),
                }
            })}
        </Transition>
        {move || match (last.get(), test.pending()) {
            (Op::Test, true) => Some(view! { <p role="status">"Testing the connection…"</p> }.into_any()),
            (Op::Test, false) => test.result::<ProbeReport>().map(|r| match r {
                Ok(report) => view! { <ProbeView report=report/> }.into_any(),
                Err(AppError::Invalid(_)) => view! { <p class="error" role="alert">"Cannot test: please correct the fields marked above."</p> }.into_any(),
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
            }),
            _ => None,
        }}
        {move || match (last.get(), fetch.pending()) {
            (Op::Fetch, true) => Some(view! { <p role="status">"Fetching the certificates…"</p> }.into_any()),
            (Op::Fetch, false) => fetch.result::<Vec<bindery_model::ServerCertificates>>().map(|r| match r {
                Ok(servers) => view! { <CertificatesView servers=servers/> }.into_any(),
                Err(AppError::Invalid(_)) => view! { <p class="error" role="alert">"Cannot fetch: please correct the fields marked above."</p> }.into_any(),
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
            }),
            _ => None,
        }}
        {move || match (last.get(), login.pending()) {
            (Op::Login, true) => Some(view! { <p role="status">"Testing the login…"</p> }.into_any()),
            (Op::Login, false) => login.result::<LoginTestReport>().map(|r| match r {
                Ok(report) => view! { <LoginTestView report=report/> }.into_any(),
                Err(AppError::Invalid(_)) => view! { <p class="error" role="alert">"Cannot test: please correct the fields marked above."</p> }.into_any(),
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
            }),
            _ => None,
        }}
    }
}

#[component]
fn DirectoryFields<F, V>(s: DirectorySettings, admin: bool, err: F) -> impl IntoView
where
    F: Fn(&'static str) -> V + Copy + Send + Sync + 'static,
    V: IntoView + 'static,
{
    let ro = !admin;
    let password_note = if s.bind_password_set {
        "A password is set. Leave empty to keep it (re-enter it when you change the servers, turn StartTLS off, skip verification, or change the CA or client certificate)."
    } else {
        "No password is set."
    };
    let key_note = if s.client_key_set { "A client key is set. Leave empty to keep it." } else { "No client key is set." };
    view! {
        <label class="check"><input type="checkbox" name="form[enabled]" value="on" checked=s.enabled disabled=ro/>"Enabled"</label>
        <label>"Server URIs (one per line, tried in order; at most 3)"
            <textarea name="form[server_uris]" rows="3" disabled=ro placeholder="ldaps://ldap1.example.com:636">{s.server_uris.join("\n")}</textarea>
        </label>
        {err("server_uris")}
        <label class="check"><input type="checkbox" name="form[starttls]" value="on" checked=s.starttls disabled=ro/>"StartTLS (upgrade ldap:// connections)"</label>
        {err("starttls")}
        <label>"Bind DN" <input name="form[bind_dn]" value=s.bind_dn disabled=ro placeholder="cn=bindery,ou=services,dc=example,dc=com"/></label>
        {err("bind_dn")}
        <label>"Bind password" <input name="form[bind_password]" type="password" autocomplete="new-password" disabled=ro/></label>
        <span class="hint" data-testid="bind-password-state">{password_note}</span>
        {err("bind_password")}
        <label>"Search OUs (separate several with |)" <input name="form[search_ous]" value=s.search_ous disabled=ro placeholder="ou=people,dc=example,dc=com"/></label>
        {err("search_ous")}
        <label>"Search filter" <input name="form[search_filter]" value=s.search_filter disabled=ro/></label>
        {err("search_filter")}
        <label>"User attribute map (JSON)" <textarea name="form[attr_map]" rows="3" disabled=ro>{s.attr_map}</textarea></label>
        {err("attr_map")}
        <fieldset>
            <legend>"Group membership"</legend>
            <label>"Groups come from"
                <select name="form[group_mode]" disabled=ro>
                    <option value="attribute" selected=s.group_mode == GroupMode::Attribute>"a user attribute (the map's \"groups\", e.g. memberOf)"</option>
                    <option value="search" selected=s.group_mode == GroupMode::Search>"searching groups that contain the user"</option>
                </select>
            </label>
            <label>"Group search base (empty: the search OUs)" <input name="form[group_base]" value=s.group_base disabled=ro/></label>
            {err("group_base")}
            <label>"Group filter ({0} = user DN, {1} = username)" <input name="form[group_filter]" value=s.group_filter disabled=ro/></label>
            {err("group_filter")}
            <label class="check"><input type="checkbox" name="form[nested_groups]" value="on" checked=s.nested_groups disabled=ro/>"Include nested groups"</label>
            <label>"Group mapping (one per line: group DN => role; organisation, …)"
                <textarea name="form[group_mappings]" rows="3" disabled=ro placeholder="cn=admins,ou=groups,dc=example,dc=com => admin; Default">
                    {s.group_mappings.iter().map(|m| m.to_line()).collect::<Vec<_>>().join("\n")}
                </textarea>
            </label>
            <span class="hint">"Members get the highest mapped role and every mapped organisation, at first sign-in and at each sign-in after."</span>
            {err("group_mappings")}
        </fieldset>
        <div class="row">
            <label>"Connect timeout (s)" <input name="form[connect_timeout_secs]" inputmode="numeric" value=s.connect_timeout_secs.to_string() disabled=ro/></label>
            <label>"Operation timeout (s)" <input name="form[op_timeout_secs]" inputmode="numeric" value=s.op_timeout_secs.to_string() disabled=ro/></label>
            <label>"Search page size" <input name="form[page_size]" inputmode="numeric" value=s.page_size.to_string() disabled=ro/></label>
            <label>"User DN cache (s)" <input name="form[dn_cache_secs]" inputmode="numeric" value=s.dn_cache_secs.to_string() disabled=ro/></label>
        </div>
        {err("connect_timeout_secs")}
        {err("op_timeout_secs")}
        {err("page_size")}
        {err("dn_cache_secs")}
        <fieldset>
            <legend>"TLS"</legend>
            <label>"CA certificate (PEM; empty: the system's trusted CAs)" <textarea name="form[ca_pem]" rows="4" disabled=ro>{s.ca_pem}</textarea></label>
            {err("ca_pem")}
            <label>"Client certificate (PEM, optional)" <textarea name="form[client_cert_pem]" rows="3" disabled=ro>{s.client_cert_pem}</textarea></label>
            {err("client_cert_pem")}
            <label>"Client key (PEM; write-only)" <textarea name="form[client_key_pem]" rows="3" disabled=ro></textarea></label>
            <span class="hint">{key_note}</span>
            {err("client_key_pem")}
            <label class="check warn"><input type="checkbox" name="form[skip_verify]" value="on" checked=s.skip_verify disabled=ro/>"Skip certificate verification (dangerous: anyone on the network path can read passwords)"</label>
            {s.skip_verify.then(|| view! { <p class="notice" data-testid="skip-verify-warning">"Certificate verification is OFF for this directory."</p> })}
        </fieldset>
        {s.updated_at.map(|t| view! { <p class="hint">"Last saved " {t}</p> })}
    }
}

fn steps_table(steps: Vec<ProbeStep>) -> impl IntoView {
    view! {
        <div class="table-scroll"><table class="grid steps">
            <thead><tr><th>"Step"</th><th>"Result"</th><th>"Time"</th><th>"Details"</th></tr></thead>
            <tbody>
                {steps.into_iter().map(|s| {
                    let name = s.step.clone();
                    view! {
                    <tr data-step=name class=if s.ok { "ok" } else { "bad" }>
                        <td>{s.step}</td>
                        <td>{if s.ok { "✓ ok" } else { "✗ failed" }}</td>
                        <td>{format!("{} ms", s.millis)}</td>
                        <td>{s.detail}{s.ldap_code.map(|c| format!(" [LDAP code {c}]"))}</td>
                    </tr>
                }}).collect_view()}
            </tbody>
        </table></div>
    }
}

#[component]
fn ProbeView(report: ProbeReport) -> impl IntoView {
    view! {
        <section class="card wide" data-testid="probe-report">
            <h2>{if report.ok { "Connection test passed" } else { "Connection test failed" }}</h2>
            {report.user_count.map(|n| view! { <p data-testid="user-count">{format!("{n} users match the filter.")}</p> })}
            {report.delta.map(|d| view! {
                <p data-testid="delta-support">"Delta sync: " <strong>{d.method.clone()}</strong> " — " {d.reason.clone()}</p>
                {d.live_words().map(|w| view! { <p data-testid="live-support">{w}</p> })}
            })}
            {report.servers.into_iter().map(|s| view! {
                <h3>{s.uri.clone()} " — " {if s.ok { "ok" } else { "failed" }}</h3>
                {steps_table(s.steps)}
            }).collect_view()}
            {(!report.sample.is_empty()).then(|| view! {
                <h3>"Sample of mapped users"</h3>
                <div class="table-scroll"><table class="grid">
                    <thead><tr><th>"Username"</th><th>"Name"</th><th>"Email"</th><th>"Active"</th><th>"DN"</th></tr></thead>
                    <tbody>
                        {report.sample.into_iter().map(|u| view! {
                            <tr><td>{u.username}</td><td>{u.name}</td><td>{u.email}</td><td>{if u.is_active { "yes" } else { "no" }}</td><td>{u.dn}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table></div>
            })}
        </section>
    }
}

#[component]
fn LoginTestView(report: LoginTestReport) -> impl IntoView {
    view! {
        <section class="card wide" data-testid="login-report">
            <h2 class=if report.allowed { "ok" } else { "bad" } data-testid="login-verdict">{report.verdict.clone()}</h2>
            <dl class="facts">
                <dt>"Server"</dt><dd>{report.server.unwrap_or_else(|| "none reachable".into())}</dd>
                <dt>"Entry"</dt><dd>{report.dn.unwrap_or_else(|| "not found".into())}</dd>
                <dt>"Bind"</dt><dd>{report.bind}{report.ad_subcode.map(|c| format!(" (AD sub-code {c})"))}</dd>
                <dt>"Account state"</dt><dd data-testid="account-state">{report.account_state.as_str()}</dd>
                <dt>"Local user"</dt><dd>{report.local_user.unwrap_or_else(|| "—".into())}</dd>
                <dt>"Mapped role"</dt><dd data-testid="mapped-role">{report.mapped_role.map(|r| r.label().to_string()).unwrap_or_else(|| "no mapping matches (User)".into())}</dd>
                <dt>"Mapped organisations"</dt><dd>{if report.mapped_organisations.is_empty() { "default".to_string() } else { report.mapped_organisations.join(", ") }}</dd>
            </dl>
            {(!report.facts.is_empty()).then(|| view! {
                <div class="table-scroll"><table class="grid" data-testid="login-facts" aria-label="Why: the facts of the verdict, in order">
                    <tbody>
                        {report.facts.clone().into_iter().map(|f| {
                            let class = match f.ok { Some(true) => "ok", Some(false) => "bad", None => "" };
                            view! { <tr><th scope="row">{f.label}</th><td class=class>{f.value}</td></tr> }
                        }).collect_view()}
                    </tbody>
                </table></div>
            })}
            {report.user.map(|u| view! {
                <h3>"Mapped attributes"</h3>
                <dl class="facts">
                    <dt>"Username"</dt><dd>{u.username}</dd>
                    <dt>"Name"</dt><dd>{u.name}</dd>
                    <dt>"Email"</dt><dd>{u.email}</dd>
                    <dt>"Active (by the map)"</dt><dd>{if u.is_active { "yes" } else { "no" }}</dd>
                    <dt>"Groups"</dt><dd data-testid="login-groups">{u.groups.join("; ")}</dd>
                </dl>
            })}
            {steps_table(report.steps)}
        </section>
    }
}

/// Put a PEM into the form's CA field (the admin saves it with the form).
fn trust_ca(pem: &str) {
    use leptos::wasm_bindgen::JsCast;
    if let Some(area) = document()
        .query_selector("textarea[name='form[ca_pem]']")
        .ok()
        .flatten()
        .and_then(|e| e.dyn_into::<leptos::web_sys::HtmlTextAreaElement>().ok())
    {
        area.set_value(pem);
    }
}

#[component]
fn CertificatesView(servers: Vec<bindery_model::ServerCertificates>) -> impl IntoView {
    let trusted = RwSignal::new(false);
    view! {
        <section class="card wide" data-testid="certificates">
            <h2>"Certificates presented"</h2>
            {servers.into_iter().map(|s| view! {
                <h3>{s.uri}</h3>
                {s.error.map(|e| view! { <p class="error">{e}</p> })}
                {s.certificates.into_iter().enumerate().map(|(i, c)| {
                    let pem = c.pem.clone();
                    view! {
                        <dl class="facts cert" data-testid="certificate">
                            <dt>{if i == 0 { "Server certificate" } else { "Issuer certificate" }}</dt><dd></dd>
                            <dt>"Subject"</dt><dd>{c.subject}</dd>
                            <dt>"Issuer"</dt><dd>{c.issuer}</dd>
                            <dt>"Valid"</dt><dd>{format!("{} – {} ({} days left)", c.not_before, c.not_after, c.days_left)}</dd>
                            <dt>"SHA-256"</dt><dd><code>{c.sha256}</code></dd>
                        </dl>
                        {c.expiring.then(|| view! { <p class="notice" data-testid="expiring">"This certificate expires in less than 30 days."</p> })}
                        {c.is_ca.then(|| view! {
                            <button type="button" on:click=move |_| { trust_ca(&pem); trusted.set(true); }>"Trust this CA"</button>
                        })}
                    }
                }).collect_view()}
            }).collect_view()}
            <Show when=move || trusted.get()>
                <p class="ok" role="status">"The CA is in the form's CA certificate field. Test the connection, then Save."</p>
            </Show>
            <p class="hint">"No \"Trust this CA\" button? The server did not send its CA: paste the CA certificate into the field instead."</p>
        </section>
    }
}
