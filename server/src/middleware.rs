//! Per-request context: who is calling (session cookie or API token), from
//! where, CSRF protection, and sending signed-out browsers to the login page.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use bindery_model::ApiError;
use bindery_service::net::{any_contains, canonical, Network};
use bindery_service::{ClientInfo, RequestContext, SESSION_COOKIE};
use http::{header, HeaderMap, Method, StatusCode};

use crate::AppState;

/// A cookie's value from the request (empty values count as absent).
pub(crate) fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
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

/// One `X-Forwarded-For` hop: an address, perhaps with a port or in
/// brackets (`203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::7]:443`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse().ok()))
        .map(canonical)
}

/// Where a request comes from, and whether it reached the first proxy
/// over HTTPS. Forwarding headers are believed only from a trusted proxy:
/// the client is the rightmost `X-Forwarded-For` hop that is not a trusted
/// proxy. Everything to its left was written by the client itself (a proxy
/// appends the address it saw), so it is never read: a client cannot choose
/// its address for the lockout or the logs by sending the header.
pub(crate) fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[Network]) -> (Option<IpAddr>, bool) {
    let Some(peer) = peer.map(canonical) else {
        return (None, false);
    };
    if !any_contains(proxies, peer) {
        return (Some(peer), false);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop_address(hop) {
            Some(ip) => {
                client = ip;
                if !any_contains(proxies, ip) {
                    break;
                }
            }
            // Not an address: the nearest trusted hop is all we know.
            None => break,
        }
    }
    // The value the proxy next to us wrote (the rightmost one).
    let secure = headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    (Some(client), secure)
}

fn client_info(req: &Request, proxies: &[Network]) -> (ClientInfo, bool) {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (ip, secure) = client_address(peer, req.headers(), proxies);
    let client = ClientInfo {
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect())
            .unwrap_or_default(),
    };
    (client, secure)
}

/// The request reached Bindery over TLS: `X-Forwarded-Proto: https` from a
/// proxy Bindery trusts (Bindery has no TLS listener of its own). The one
/// place that decides it, for the cookies' `Secure` flag and for HSTS.
pub fn via_trusted_tls(req: &Request, s: &crate::Shared) -> bool {
    client_info(req, &s.trusted_proxies.0).1
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
    let (client, secure) = client_info(&req, &s.trusted_proxies.0);
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

    fn from(peer: &str, xff: &[&str], proto: Option<&str>, proxies: &[&str]) -> (String, bool) {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", p.parse().unwrap());
        }
        let proxies = Network::parse_list(proxies).unwrap();
        let (ip, secure) = client_address(Some(peer.parse().unwrap()), &h, &proxies);
        (ip.map(|i| i.to_string()).unwrap_or_default(), secure)
    }

    #[test]
    fn the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy() {
        let lo = ["127.0.0.0/8"];
        // No proxy trusted: the headers are the client's own words.
        assert_eq!(from("198.51.100.9", &["10.9.9.9"], Some("https"), &[]), ("198.51.100.9".into(), false));
        // From a trusted proxy, its hop is believed ...
        assert_eq!(from("127.0.0.1", &["203.0.113.7"], Some("https"), &lo), ("203.0.113.7".into(), true));
        // ... and nothing the client wrote left of it.
        assert_eq!(from("127.0.0.1", &["1.2.3.4, 203.0.113.7"], None, &lo), ("203.0.113.7".into(), false));
        assert_eq!(from("127.0.0.1", &["1.2.3.4", "203.0.113.7"], None, &lo), ("203.0.113.7".into(), false), "one header per hop");
        // A chain of trusted proxies is walked through.
        let chain = ["127.0.0.1", "10.0.0.0/8"];
        assert_eq!(from("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.1.1"], None, &chain), ("203.0.113.7".into(), false));
        // Every hop trusted: the leftmost.
        assert_eq!(from("127.0.0.1", &["10.2.2.2, 10.1.1.1"], None, &chain), ("10.2.2.2".into(), false));
        // No header, or garbage where the client's hop should be: the proxy itself.
        assert_eq!(from("127.0.0.1", &[], None, &lo), ("127.0.0.1".into(), false));
        assert_eq!(from("127.0.0.1", &["6.6.6.6, unknown"], None, &lo), ("127.0.0.1".into(), false));
        // Ports, brackets, IPv4-mapped peers.
        assert_eq!(from("::ffff:127.0.0.1", &["[2001:db8::7]:443"], None, &lo), ("2001:db8::7".into(), false));
        assert_eq!(from("127.0.0.1", &["203.0.113.7:4711"], None, &lo), ("203.0.113.7".into(), false));
        // X-Forwarded-Proto: the nearest proxy's word, from a trusted proxy only.
        assert!(from("127.0.0.1", &[], Some("http, https"), &lo).1);
        assert!(!from("127.0.0.1", &[], Some("https, http"), &lo).1);
        assert!(!from("10.0.0.1", &[], Some("https"), &lo).1);
    }

    #[test]
    fn pages_and_assets() {
        assert!(is_page("/users/3"));
        assert!(!is_page("/pkg/bindery.wasm"));
        assert!(!is_page("/api/v1/users"));
        assert!(!is_page("/rpc/login"));
    }
}
