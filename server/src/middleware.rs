//! Per-request context: who is calling (session cookie or API token), from
//! where, CSRF protection, and sending signed-out browsers to the login page.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use bindery_model::ApiError;
use bindery_service::{ClientInfo, RequestContext, SESSION_COOKIE};
use http::{header, Method, StatusCode};

use crate::AppState;

fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn client_info(req: &Request, trust_proxy: bool) -> ClientInfo {
    let forwarded = trust_proxy
        .then(|| req.headers().get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().to_string());
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    ClientInfo {
        ip: forwarded.or(peer).unwrap_or_default(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect())
            .unwrap_or_default(),
    }
}

/// The request reached Bindery over TLS: `X-Forwarded-Proto: https` from a
/// proxy Bindery trusts (Bindery has no TLS listener of its own). The one
/// place that decides it, for the cookies' `Secure` flag and for HSTS.
pub fn via_trusted_tls(req: &Request, s: &crate::Shared) -> bool {
    s.trust_proxy
        && req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Cross-site request forgery check for state-changing requests, after
/// the Fetch Metadata / Origin approach (as in Go's `CrossOriginProtection`):
/// browsers always say where a request comes from; a request that says it
/// comes from another site is refused. Clients that are not browsers send
/// neither header and cannot carry a victim's cookie anyway.
pub fn is_cross_site(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        return origin == "null" || origin_host != host;
    }
    false
}

fn is_page(path: &str) -> bool {
    !(path.starts_with("/rpc/")
        || path.starts_with("/api/")
        || path.starts_with("/pkg/")
        || path == "/healthz"
        || path == "/metrics"
        || path == "/favicon.ico"
        || path.contains('.'))
}

pub async fn context(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_cross_site(&req) {
        tracing::warn!(path = %req.uri().path(), "refused a cross-site state-changing request");
        let body = ApiError { error: "csrf".into(), message: "cross-site request refused".into(), fields: vec![] };
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let client = client_info(&req, s.trust_proxy);
    let secure = via_trusted_tls(&req, &s);
    let mut ctx = RequestContext { principal: None, client, session_token: None, secure };
    if let Some(token) = cookie(&req, SESSION_COOKIE).map(str::to_string) {
        match s.service.session_principal(&token).await {
            Ok(Some(p)) => {
                ctx.principal = Some(p);
                ctx.session_token = Some(token);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "session lookup failed"),
        }
    }
    if ctx.principal.is_none() {
        if let Some(token) = bearer(&req).map(str::to_string) {
            match s.service.token_principal(&token).await {
                Ok(p) => ctx.principal = p,
                Err(e) => tracing::error!(error = %e, "token lookup failed"),
            }
        }
    }

    let path = req.uri().path().to_string();
    if req.method() == Method::GET && is_page(&path) {
        match &ctx.principal {
            None if path != "/login" => {
                let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let target = if next == "/" { "/login".to_string() } else { format!("/login?next={}", bindery_app::url_encode(next)) };
                return Redirect::to(&target).into_response();
            }
            Some(p) if p.must_change_password && path != "/change-password" => {
                return Redirect::to("/change-password").into_response();
            }
            Some(_) if path == "/login" => return Redirect::to("/").into_response(),
            _ => {}
        }
    }
    req.extensions_mut().insert(ctx);
    let mut res = next.run(req).await;
    if is_page(&path) {
        // Pages show per-user data: never cache them.
        res.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().method(method).uri("/rpc/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn csrf_rules() {
        assert!(!is_cross_site(&req("GET", &[("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&req("POST", &[("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&req("POST", &[("sec-fetch-site", "same-site")])));
        assert!(!is_cross_site(&req("POST", &[("sec-fetch-site", "same-origin")])));
        assert!(is_cross_site(&req("POST", &[("origin", "https://evil.example"), ("host", "bindery:3000")])));
        assert!(!is_cross_site(&req("POST", &[("origin", "http://bindery:3000"), ("host", "bindery:3000")])));
        assert!(is_cross_site(&req("DELETE", &[("origin", "null"), ("host", "bindery:3000")])));
        assert!(!is_cross_site(&req("POST", &[])), "non-browser clients send neither header");
    }

    #[test]
    fn pages_and_assets() {
        assert!(is_page("/users/3"));
        assert!(!is_page("/pkg/bindery.wasm"));
        assert!(!is_page("/api/v1/users"));
        assert!(!is_page("/rpc/login"));
    }
}
