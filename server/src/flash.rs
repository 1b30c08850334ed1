//! Forms posted without JavaScript get a page back, never raw JSON.
//!
//! A browser without the WASM app posts a console form (`RpcForm`) straight to its
//! server function (`POST /rpc/<name>`, `Accept: text/html`). Leptos would
//! answer with the function's JSON (or, on success, a bare redirect that
//! says nothing). Here, such an answer becomes a [`Flash`]: the result in
//! words, sealed with the database key into a one-minute, HttpOnly,
//! SameSite=Strict cookie, and a `303` back to the page the form was on.
//! That page's next render shows it once and clears the cookie. Secrets
//! shown once (a new API token, a reset one-time password) travel only
//! there: never in the URL, history, `Referer` or a log.
//!
//! A server function that redirects on purpose (sign-in, sign-out,
//! password change) keeps its own answer.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bindery_app::api::AppError;
use bindery_app::flash::Flash;
use http::{header, HeaderValue, Method, StatusCode};

use crate::AppState;

pub const FLASH_COOKIE: &str = "bindery_flash";
/// Binds the sealed value to its purpose (AEAD associated data).
const CONTEXT: &str = "flash";
/// Forms that answer with a page of their own (they redirect on purpose,
/// also back to the form with `?failed=1`): left alone.
const SESSION_FORMS: &[&str] = &["login", "logout", "change_password"];
/// Answers larger than this are summarised without their body.
const MAX_BODY: usize = 256 * 1024;

pub async fn flash(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let sealed = crate::middleware::cookie(&req, FLASH_COOKIE).map(str::to_string);
    if req.method() == Method::GET {
        let Some(sealed) = sealed else { return next.run(req).await };
        let key = &s.service.options().secret_key;
        if let Some(f) = key.decrypt(CONTEXT, &sealed).ok().and_then(|j| serde_json::from_str::<Flash>(&j).ok()) {
            req.extensions_mut().insert(f);
        }
        let secure = crate::middleware::via_trusted_tls(&req, &s);
        let mut res = next.run(req).await;
        // Shown once: whatever the page was, the flash is gone after it.
        if let Ok(v) = HeaderValue::from_str(&flash_cookie("", 0, secure)) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        return res;
    }
    let Some(action) = plain_form_post(&req).filter(|a| !SESSION_FORMS.contains(&a.as_str())) else { return next.run(req).await };
    let referer = req.headers().get(header::REFERER).cloned();
    let back = back_to(referer.as_ref());
    let secure = crate::middleware::via_trusted_tls(&req, &s);
    let res = next.run(req).await;
    let status = res.status();
    if status.is_redirection() {
        // Leptos sends a plain form back to its Referer (with a `?…` of its
        // own); any other target is the function's own redirect (sign-in,
        // sign-out, password change), which is its answer.
        let target = res.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()).map(path_of);
        let from = referer.as_ref().and_then(|r| r.to_str().ok()).map(path_of);
        if target.is_some() && target != from {
            return res;
        }
    }
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let flash = describe(&action, status, &body);
    let key = &s.service.options().secret_key;
    let mut out = (StatusCode::SEE_OTHER, [(header::LOCATION, back.clone())]).into_response();
    // Cookies the function set (a new session) still apply.
    for c in parts.headers.get_all(header::SET_COOKIE) {
        out.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    match serde_json::to_string(&flash).map_err(|e| e.to_string()).and_then(|j| key.encrypt(CONTEXT, &j).map_err(|e| e.to_string())) {
        Ok(sealed) => {
            if let Ok(v) = HeaderValue::from_str(&flash_cookie(&sealed, 60, secure)) {
                out.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        Err(e) => tracing::error!(error = %e, "could not seal a form result"),
    }
    out
}

/// `Some(server function name)` for a form a browser posted by itself.
fn plain_form_post(req: &Request) -> Option<String> {
    if req.method() != Method::POST {
        return None;
    }
    let name = req.uri().path().strip_prefix("/rpc/")?;
    let h = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = h(header::CONTENT_TYPE).starts_with("application/x-www-form-urlencoded")
        || h(header::CONTENT_TYPE).starts_with("multipart/form-data");
    (form && h(header::ACCEPT).contains("text/html")).then(|| name.to_string())
}

/// The page the form was on: a same-origin path from `Referer`, else `/`.
fn back_to(referer: Option<&HeaderValue>) -> String {
    // `scheme://authority/path?query#fragment` → `/path?query` (then
    // checked like any redirect target: a same-origin path, never /rpc/).
    let path = referer.and_then(|r| r.to_str().ok()).and_then(|r| {
        let rest = &r[r.find("://")? + 3..];
        let path = &rest[rest.find('/')?..];
        Some(path.split('#').next().unwrap_or(path).to_string())
    });
    bindery_app::api::safe_next(path.as_deref())
}

/// The path of a URL or of an absolute path, without query or fragment.
fn path_of(u: &str) -> String {
    let rest = match u.find("://") {
        Some(i) => {
            let after = &u[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("/")
        }
        None => u,
    };
    rest.split(['?', '#']).next().unwrap_or("/").to_string()
}

fn flash_cookie(value: &str, max_age: i64, secure: bool) -> String {
    format!("{FLASH_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

/// The answer of `action` in words.
fn describe(action: &str, status: StatusCode, body: &[u8]) -> Flash {
    let mut f =
        Flash { action: action.to_string(), ok: status.as_u16() < 400, message: String::new(), secret: None, fields: vec![], link: None };
    if !f.ok {
        match serde_json::from_slice::<AppError>(body) {
            Ok(AppError::Invalid(errors)) => {
                f.message = "Nothing was saved. Please correct the fields below.".into();
                f.fields = errors.into_iter().map(|e| (e.field, e.message)).collect();
            }
            Ok(e) => f.message = e.to_string(),
            Err(_) => f.message = format!("The request failed (HTTP {}).", status.as_u16()),
        }
        return f;
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let n = |k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
    f.message = match action {
        "create_token" => {
            f.secret = v.get("secret").and_then(|x| x.as_str()).map(str::to_string);
            format!("API token “{}” created. Copy its secret now: it is not shown again.", v["token"]["name"].as_str().unwrap_or(""))
        }
        "reset_password" => {
            f.secret = v.as_str().map(str::to_string);
            "Password reset. The new one-time password, shown only now (they must change it at first sign-in):".into()
        }
        "create_user" => {
            f.link = Some((format!("/users/{}", n("id")), format!("Open {}", s("username"))));
            format!("Created {}. They must change the password at first sign-in.", s("username"))
        }
        "import_users" => format!(
            "Import finished: {} created, {} updated, {} unchanged, {} failed.",
            n("created"),
            n("updated"),
            n("unchanged"),
            n("failed")
        ),
        "test_directory" => {
            if v.get("ok").and_then(|x| x.as_bool()).unwrap_or(false) {
                match v.get("user_count").and_then(|x| x.as_i64()) {
                    Some(n) => format!("Connection test passed: every server answered; {n} users match the filter."),
                    None => "Connection test passed: every server answered.".into(),
                }
            } else {
                // Each failing server's first failed step, with its LDAP code.
                let failed: Vec<String> = v["servers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|srv| !srv["ok"].as_bool().unwrap_or(false))
                    .map(|srv| {
                        let step = srv["steps"].as_array().into_iter().flatten().find(|st| !st["ok"].as_bool().unwrap_or(true));
                        let why =
                            step.map(|st| format!("{} step: {}", st["step"].as_str().unwrap_or("?"), st["detail"].as_str().unwrap_or("")));
                        format!("{}: {}", srv["uri"].as_str().unwrap_or("?"), why.unwrap_or_else(|| "failed".into()))
                    })
                    .collect();
                format!("Connection test failed — {}", failed.join("; "))
            }
        }
        "fetch_directory_certificates" => {
            // Vec<ServerCertificates>: per server, its chain (or why not).
            let servers: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|srv| {
                    let uri = srv["uri"].as_str().unwrap_or("?");
                    match srv["error"].as_str() {
                        Some(e) => format!("{uri}: {e}"),
                        None => {
                            let chain: Vec<String> = srv["certificates"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|c| {
                                    format!(
                                        "{} (issuer {}, expires {}, SHA-256 {})",
                                        c["subject"].as_str().unwrap_or("?"),
                                        c["issuer"].as_str().unwrap_or("?"),
                                        c["not_after"].as_str().unwrap_or("?"),
                                        c["sha256"].as_str().unwrap_or("?")
                                    )
                                })
                                .collect();
                            format!("{uri}: {}", chain.join(" ← "))
                        }
                    }
                })
                .collect();
            format!("Certificates — {}", servers.join("; "))
        }
        "test_directory_login" | "explain_access" => s("verdict"),
        "start_user_fetch" => "Sync users started: the table fills as the directory is read.".into(),
        "start_sync" => format!(
            "{} #{} started: follow it on the Sync runs page.",
            if v.get("dry_run").and_then(|x| x.as_bool()).unwrap_or(false) { "Dry run" } else { "Sync run" },
            n("id")
        ),
        "approve_sync" => "Approved: the held run is being applied.".into(),
        "reject_sync" => "Rejected: nothing of the held run was applied.".into(),
        "unlock" => "Unlocked.".into(),
        "delete_user" | "delete_group" | "delete_organisation" => "Deleted.".into(),
        "revoke_token" => "Token revoked.".into(),
        "relink_user" => "Relinked: every session and token of the account was revoked.".into(),
        _ => "Saved.".into(),
    };
    if f.message.is_empty() {
        f.message = "Done.".into();
    }
    // A check that answered "no" is shown as a failure, though the request worked.
    let said_no = |k: &str| v.get(k).and_then(|x| x.as_bool()) == Some(false);
    if matches!(action, "test_directory") && said_no("ok")
        || matches!(action, "test_directory_login" | "explain_access") && said_no("allowed")
    {
        f.ok = false;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_words() {
        let e = serde_json::to_vec(&AppError::Invalid(vec![bindery_model::FieldError::new("site_url", "must be a URL")])).unwrap();
        let f = describe("save_basic_settings", StatusCode::UNPROCESSABLE_ENTITY, &e);
        assert!(!f.ok && f.fields == vec![("site_url".to_string(), "must be a URL".to_string())], "{f:?}");
        let t = br#"{"token":{"name":"ci"},"secret":"bdy_s3cret"}"#;
        let f = describe("create_token", StatusCode::OK, t);
        assert!(f.ok && f.secret.as_deref() == Some("bdy_s3cret") && f.message.contains("“ci”"), "{f:?}");
        assert_eq!(describe("save_group", StatusCode::OK, b"{}").message, "Saved.");
        let probe = br#"{"ok":false,"servers":[{"uri":"ldap://x","ok":false,"steps":[{"step":"tcp","ok":true,"detail":"ok"},{"step":"bind","ok":false,"detail":"invalid credentials (LDAP 49)"}]}]}"#;
        let f = describe("test_directory", StatusCode::OK, probe);
        assert_eq!(f.message, "Connection test failed — ldap://x: bind step: invalid credentials (LDAP 49)");
        assert!(!f.ok, "shown as a failure");
        assert_eq!(back_to(Some(&HeaderValue::from_static("http://x/settings/basic?a=1"))), "/settings/basic?a=1");
        assert_eq!(back_to(Some(&HeaderValue::from_static("http://x/rpc/save"))), "/");
        assert_eq!(back_to(None), "/");
        assert_eq!(path_of("http://x/settings/basic?"), "/settings/basic");
        assert_eq!(path_of("/?password_changed=1"), "/");
        assert_eq!(path_of("https://x"), "/");
    }
}
