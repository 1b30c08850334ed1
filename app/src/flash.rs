//! The result of a form posted without JavaScript, shown once on the page
//! the form came from.
//!
//! With JavaScript, an `RpcForm` (see `rpc.rs`) calls its server function and shows the
//! result in place. Without it, the browser posts the form to `/rpc/…`; the
//! server (see `server/src/flash.rs`) turns the answer into a [`Flash`],
//! sends it back in a short-lived encrypted cookie (never in the URL: a new
//! token's secret must not reach history, `Referer` or logs) and redirects
//! to the page, which shows it here, once.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// One form's result, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// The server function (`create_token`, `save_basic_settings`, …).
    pub action: String,
    pub ok: bool,
    pub message: String,
    /// A value shown only now (a token's secret, a one-time password).
    pub secret: Option<String>,
    /// Field errors, each `(field, message)`.
    pub fields: Vec<(String, String)>,
    /// Where the result can be opened, `(href, text)`: a created user's
    /// page, which the list may show only on a later page.
    #[serde(default)]
    pub link: Option<(String, String)>,
}

/// The flash of this request, if any (server side; the browser gets it
/// with the page's serialised resources, so hydration sees the same).
fn current() -> Option<Flash> {
    #[cfg(feature = "ssr")]
    {
        use_context::<Flash>()
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}

/// The banner at the top of the console's pages.
#[component]
pub fn FlashBanner() -> impl IntoView {
    let flash = Resource::new(|| (), |_| async move { current() });
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                flash.await.map(|f| {
                    let class = if f.ok { "ok" } else { "error" };
                    let role = if f.ok { "status" } else { "alert" };
                    view! {
                        <div class=class role=role data-testid="flash" data-action=f.action.clone()>
                            <p>{f.message.clone()}</p>
                            {f.secret.clone().map(|s| view! { <p><code data-testid="flash-secret">{s}</code></p> })}
                            {f.link.clone().map(|(href, text)| view! { <p><a href=href data-testid="flash-link">{text}</a></p> })}
                            {(!f.fields.is_empty()).then(|| view! {
                                <ul>
                                    {f.fields.iter().map(|(field, m)| view! { <li data-field=field.clone()>{format!("{field}: {m}")}</li> }).collect_view()}
                                </ul>
                            })}
                        </div>
                    }
                })
            })}
        </Suspense>
    }
}
