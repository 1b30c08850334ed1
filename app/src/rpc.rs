//! One way for every console form to call its server function (issue 18).
//!
//! Leptos' `ServerAction<F>` and `ActionForm` are generic over the server
//! function: each form had its own copy of the submission code in the WASM,
//! a decoder of its arguments from the form's fields (`serde_qs`), an
//! encoder of them back into a body, and a decoder of its answer — ≈15 KB
//! per form. Here every form is one [`Rpc`]: a path, and the last answer as
//! the JSON text the server sent. With JavaScript the form's own fields are
//! posted as the browser would post them (`application/x-www-form-urlencoded`,
//! so the server reads the same body either way) to the same path, with
//! `Accept: application/json` as server_fn's client sends it; a page decodes
//! the answer ([`Rpc::ok`]) only where it shows it. Without JavaScript the
//! form is a plain `<form method="post" action="/rpc/…">`, answered by the
//! server's flash middleware (`server/src/flash.rs`), as before.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use serde::de::DeserializeOwned;

use crate::api::AppError;

/// A form's server function and the outcome of its last submission.
#[derive(Clone, Copy)]
pub struct Rpc {
    path: &'static str,
    /// The answer's JSON text, or the error.
    value: RwSignal<Option<Result<String, AppError>>>,
    version: RwSignal<usize>,
    pending: RwSignal<bool>,
}

impl Rpc {
    /// The form of server function `F` (its path; nothing of its types).
    pub fn new<F: ServerFn>() -> Self {
        Rpc { path: F::PATH, value: RwSignal::new(None), version: RwSignal::new(0), pending: RwSignal::new(false) }
    }

    /// How many answers came back (reactive): resources refetch on it.
    pub fn version(&self) -> usize {
        self.version.get()
    }

    /// Whether a submission waits for its answer (reactive).
    pub fn pending(&self) -> bool {
        self.pending.get()
    }

    /// Whether the last answer was a success (reactive).
    pub fn succeeded(&self) -> bool {
        self.value.with(|v| matches!(v, Some(Ok(_))))
    }

    /// The last answer's error, if it was one (reactive).
    pub fn error(&self) -> Option<AppError> {
        self.value.with(|v| v.as_ref().and_then(|r| r.as_ref().err().cloned()))
    }

    /// The last answer, decoded, if it was a success (reactive).
    pub fn ok<T: DeserializeOwned>(&self) -> Option<T> {
        self.value.with(|v| match v {
            Some(Ok(json)) => serde_json::from_str(json).ok(),
            _ => None,
        })
    }

    /// The last answer, decoded (reactive); `None` before the first.
    pub fn result<T: DeserializeOwned>(&self) -> Option<Result<T, AppError>> {
        self.value.with(|v| {
            v.as_ref().map(|r| match r {
                Ok(json) => serde_json::from_str(json).map_err(|e| AppError::Transport(e.to_string())),
                Err(e) => Err(e.clone()),
            })
        })
    }

    /// Posts the form of a submit event (its fields and the button that
    /// submitted it) to this server function. The caller prevents the
    /// browser's own submission.
    pub fn submit(self, ev: &leptos::ev::SubmitEvent) {
        #[cfg(feature = "hydrate")]
        match client::body(ev) {
            Some(body) => {
                self.pending.set(true);
                leptos::task::spawn_local(async move {
                    let answer = client::post(self.path, body).await;
                    // The page may be gone (a redirect): then nobody listens.
                    self.value.try_set(Some(answer));
                    self.version.try_update(|n| *n += 1);
                    self.pending.try_set(false);
                });
            }
            None => {
                self.value.set(Some(Err(AppError::Transport("the form could not be read".into()))));
                self.version.update(|n| *n += 1);
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    }
}

#[cfg(feature = "hydrate")]
pub(crate) mod client {
    use leptos::server_fn::client::{browser::BrowserClient, Client};
    use leptos::server_fn::error::FromServerFnError;
    use leptos::server_fn::request::{browser::BrowserRequest, ClientReq};
    use leptos::server_fn::response::ClientRes;
    use leptos::wasm_bindgen::JsCast;
    use leptos::web_sys::{FormData, HtmlButtonElement, HtmlFormElement, UrlSearchParams};

    use crate::api::AppError;

    /// The form's fields as the browser would post them, with the name and
    /// value of the button that submitted it (if it has a name).
    pub fn body(ev: &leptos::ev::SubmitEvent) -> Option<String> {
        let form: HtmlFormElement = ev.target()?.dyn_into().ok()?;
        let data = FormData::new_with_form(&form).ok()?;
        if let Some(button) = ev.submitter().and_then(|s| s.dyn_into::<HtmlButtonElement>().ok()) {
            let name = button.name();
            if !name.is_empty() {
                data.append_with_str(&name, &button.value()).ok()?;
            }
        }
        UrlSearchParams::new_with_str_sequence_sequence(&data).ok()?.to_string().as_string()
    }

    /// What server_fn's client does for a server function, with the body
    /// and the answer as text.
    pub async fn post(path: &str, body: String) -> Result<String, AppError> {
        let req =
            <BrowserRequest as ClientReq<AppError>>::try_new_post(path, "application/x-www-form-urlencoded", "application/json", body)?;
        let res = <BrowserClient as Client<AppError>>::send(req).await?;
        let status = <_ as ClientRes<AppError>>::status(&res);
        let location = <_ as ClientRes<AppError>>::location(&res);
        let redirect = <_ as ClientRes<AppError>>::has_redirect(&res);
        let text = <_ as ClientRes<AppError>>::try_into_string(res).await?;
        if (400..=599).contains(&status) {
            return Err(<AppError as FromServerFnError>::de(text.into()));
        }
        if (300..=399).contains(&status) || redirect {
            leptos::server_fn::redirect::call_redirect_hook(&location);
        }
        Ok(text)
    }
}

/// `<form method="post" action="/rpc/…">` of one server function: posted
/// by [`Rpc::submit`] with JavaScript, by the browser without.
#[component]
pub fn RpcForm(
    rpc: Rpc,
    /// The form's accessible name.
    #[prop(optional)]
    label: Option<&'static str>,
    #[prop(optional)] class: Option<&'static str>,
    children: Children,
) -> impl IntoView {
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        if ev.default_prevented() {
            return;
        }
        ev.prevent_default();
        rpc.submit(&ev);
    };
    view! {
        <form action=rpc.path method="post" class=class aria-label=label on:submit=on_submit>
            {children()}
        </form>
    }
}
