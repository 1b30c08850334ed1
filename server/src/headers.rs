//! Security headers on every answer (pages, API, static files):
//! a Content-Security-Policy with a fresh nonce per request, HSTS when the
//! request came over TLS (through a trusted proxy), X-Content-Type-Options,
//! X-Frame-Options and Referrer-Policy; and, in the same layer, the
//! request's metrics and the console files' cache policy.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use http::{header, HeaderValue};

use crate::AppState;

/// This request's CSP nonce: the server's page rendering gives it to Leptos,
/// which puts it on every inline script it writes (hydration, resources).
#[derive(Clone, Debug)]
pub struct CspNonce(pub String);

impl CspNonce {
    fn fresh() -> CspNonce {
        let mut bytes = [0u8; 18];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        CspNonce(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The policy: everything from this origin only; scripts only with this
/// request's nonce (no `unsafe-inline`); WebAssembly may be compiled
/// (`wasm-unsafe-eval`, which allows no JavaScript `eval`); no framing, no
/// plugins, forms post here only.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// One year, subdomains left alone (the console may share a domain).
pub const HSTS: &str = "max-age=31536000";

/// What every answer gets on its way out, in one layer (each layer of its
/// own costs the login path an allocation or two per request): the
/// request's metrics; the CSP with this request's nonce; HSTS over TLS;
/// X-Content-Type-Options, X-Frame-Options and Referrer-Policy unless the
/// answer set its own; a cache policy for the console's files.
pub async fn response_headers(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (method, area) = (crate::metrics::method(req.method()), crate::metrics::area(req.uri().path()));
    let nonce = CspNonce::fresh();
    let tls = crate::middleware::via_trusted_tls(&req, &s);
    req.extensions_mut().insert(nonce.clone());
    let mut res = next.run(req).await;
    let status = res.status();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&nonce.0)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    for (name, value) in
        [(header::X_CONTENT_TYPE_OPTIONS, "nosniff"), (header::X_FRAME_OPTIONS, "DENY"), (header::REFERRER_POLICY, "same-origin")]
    {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    // Hashed console files (`/pkg/bindery.<hash>.wasm`) never change under
    // their name: a year, immutable. Unhashed ones (a debug build) are
    // revalidated on every use, so a new build is never hidden by a cache.
    if area == crate::metrics::ASSETS && status.is_success() {
        let policy = if s.leptos.hash_files { "public, max-age=31536000, immutable" } else { "no-cache" };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    s.metrics.record(method, area, status, started);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_allows_no_inline_script_but_the_nonce() {
        let p = content_security_policy("abc");
        assert!(p.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval';"), "{p}");
        assert!(!p.contains("unsafe-inline") && !p.contains("'unsafe-eval'"), "{p}");
        assert_ne!(CspNonce::fresh().0, CspNonce::fresh().0);
        assert!(CspNonce::fresh().0.len() >= 22);
    }
}
