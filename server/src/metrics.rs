//! Prometheus metrics at `/metrics` (OpenMetrics text).

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `console`, `rpc`, `api`, `assets` or `other`: bounded cardinality.
    area: &'static str,
    /// The standard methods by name, any other as `other`: a client
    /// cannot grow the label set.
    method: &'static str,
    status: u16,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bindery");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("http_request_duration_seconds", "Time to answer HTTP requests", latency.clone());
        Metrics { registry: Mutex::new(registry), requests, latency }
    }

    /// Count an answered request and its time (see [`crate::headers::response_headers`]).
    pub fn record(&self, method: &'static str, area: &'static str, status: http::StatusCode, started: Instant) {
        self.requests.get_or_create(&RequestLabels { area, method, status: status.as_u16() }).inc();
        self.latency.observe(started.elapsed().as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

pub(crate) fn method(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// `/metrics` with a `metrics_token` configured: only with that bearer token.
pub fn authorised(token: Option<&str>, headers: &http::HeaderMap) -> bool {
    use sha2::{Digest, Sha256};
    let Some(token) = token else { return true };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Compare digests: the time taken says nothing about the token.
    Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes()) && !given.is_empty()
}

/// The area of the console's files under `/pkg/`.
pub(crate) const ASSETS: &str = "assets";

pub(crate) fn area(path: &str) -> &'static str {
    if path.starts_with("/rpc/") {
        "rpc"
    } else if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/pkg/") {
        ASSETS
    } else if path == "/metrics" || path == "/healthz" {
        "other"
    } else {
        "console"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_are_one_label() {
        assert_eq!(method(&http::Method::GET), "GET");
        assert_eq!(method(&http::Method::from_bytes(b"PROPFIND").unwrap()), "other");
        assert_eq!(method(&http::Method::from_bytes(b"X1234").unwrap()), "other");
    }
}
