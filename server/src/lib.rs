//! The Bindery server: wires configuration, storage, the console (Leptos
//! SSR + server functions) and the REST API into one axum [`Router`].

pub mod config;
mod metrics;
mod middleware;
mod rest;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bindery_service::{Options, Service, Store};
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::Config;
pub use metrics::Metrics;

/// Everything a request handler may need; one allocation shared by all
/// (each extractor and middleware clones the state of every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub service: Service,
    pub leptos: LeptosOptions,
    pub metrics: Metrics,
    pub trusted_proxies: TrustedProxies,
}

/// The reverse proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are
/// believed (see `middleware::client_address`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<bindery_service::net::Network>);

impl From<Vec<bindery_service::net::Network>> for TrustedProxies {
    fn from(networks: Vec<bindery_service::net::Network>) -> Self {
        TrustedProxies(networks)
    }
}

impl From<bool> for TrustedProxies {
    /// `true`: a proxy on this machine (loopback), as the deprecated
    /// `trust_proxy = true` means; `false`: none.
    fn from(trust_loopback: bool) -> Self {
        TrustedProxies(if trust_loopback { bindery_service::net::Network::loopback() } else { Vec::new() })
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> LeptosOptions {
        s.leptos.clone()
    }
}

/// Open the database (migrating it), build the service and bootstrap the
/// first admin. Returns the one-time admin password when one was created.
pub async fn open(cfg: &Config) -> anyhow::Result<(Service, Option<bindery_service::Secret>)> {
    if let Some(path) = cfg.database_url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//").split('?').next().unwrap_or("");
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create the database folder {}: {e}", dir.display()))?;
        }
    }
    let store = Store::connect(&cfg.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", config::redact_url(&cfg.database_url)))?;
    let smtp = match cfg.smtp_relay.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        None => None,
        Some(relay) => {
            let (host, port) = relay.rsplit_once(':').unwrap_or((relay, "25"));
            let port = port
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid value for `smtp_relay` (env BINDERY_SMTP_RELAY): expected host:port, got {relay}"))?;
            Some(bindery_service::SmtpOptions { host: host.to_string(), port, from: cfg.smtp_from.clone() })
        }
    };
    let service = Service::new(
        store,
        Options { min_failure_delay: Duration::from_millis(cfg.min_failure_delay_ms), secret_key: secret_key(cfg)?, smtp },
    );
    let password = service.bootstrap().await?;
    Ok((service, password))
}

/// The key that encrypts directory secrets: from the configuration, or from
/// its file (created with a fresh random key, mode 0600, on first start).
pub fn secret_key(cfg: &Config) -> anyhow::Result<bindery_service::SecretKey> {
    use bindery_service::SecretKey;
    if let Some(hex) = &cfg.secret_key {
        return SecretKey::from_hex(hex)
            .ok_or_else(|| anyhow::anyhow!("invalid `secret_key` (env BINDERY_SECRET_KEY): expected 64 hex characters"));
    }
    let path = std::path::Path::new(&cfg.secret_key_file);
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        return SecretKey::from_hex(&text).ok_or_else(|| {
            anyhow::anyhow!("{} (config `secret_key_file`, env BINDERY_SECRET_KEY_FILE) does not hold 64 hex characters", path.display())
        });
    }
    let key = SecretKey::generate();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        f.write_all(key.to_hex().as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, key.to_hex())?;
    tracing::info!(file = %path.display(), "generated the key that encrypts directory secrets; back it up with the database");
    Ok(key)
}

pub fn leptos_options(cfg: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("bindery")
        .site_root(cfg.site_root.as_str())
        .site_pkg_dir("pkg")
        .site_addr(cfg.listen)
        .env(leptos::config::Env::PROD)
        .build()
}

/// The whole HTTP application.
pub fn app(service: Service, leptos: LeptosOptions, proxies: impl Into<TrustedProxies>) -> Router {
    let state = AppState(Arc::new(Shared {
        service: service.clone(),
        leptos: leptos.clone(),
        metrics: Metrics::new(),
        trusted_proxies: proxies.into(),
    }));
    let routes = generate_route_list(bindery_app::App);
    let ctx_service = service.clone();
    let console = Router::<AppState>::new()
        .leptos_routes_with_context(&state, routes, move || leptos::prelude::provide_context(ctx_service.clone()), {
            let leptos = leptos.clone();
            move || bindery_app::shell(leptos.clone())
        })
        .fallback({
            // The 404 page renders the app too: it needs the service.
            let fb_service = service.clone();
            leptos_axum::file_and_error_handler_with_context::<AppState, _>(
                move || leptos::prelude::provide_context(fb_service.clone()),
                bindery_app::shell,
            )
        });

    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .nest("/api", rest::router())
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::context))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(SetResponseHeaderLayer::if_not_present(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(http::header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(http::header::REFERRER_POLICY, http::HeaderValue::from_static("same-origin")))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.service.store().ping().await {
        Ok(()) => (http::StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (http::StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

/// Serve until SIGINT/SIGTERM, then finish in-flight requests.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let (service, password) = open(&cfg).await?;
    if let Some(p) = password {
        // Printed once, on first start only; the admin must change it at first login.
        tracing::warn!(
            "created the first administrator: username `admin`, one-time password `{}` (it must be changed at first sign-in)",
            p.expose()
        );
    }
    let sweeper = tokio::spawn(sweep(service.clone()));
    let prober = tokio::spawn(probe(service.clone(), Duration::from_secs(cfg.directory_probe_seconds.max(1))));
    let scheduler = tokio::spawn(schedule(service.clone(), Duration::from_secs(cfg.sync_tick_seconds.max(1))));
    let proxies = cfg.proxies()?;
    if cfg.trust_proxy {
        if cfg.trusted_proxies.is_empty() {
            tracing::warn!(
                "`trust_proxy` is deprecated: it now trusts a proxy on this machine only (127.0.0.0/8, ::1); set `trusted_proxies` instead"
            );
        } else {
            tracing::warn!("`trust_proxy` is deprecated and ignored: `trusted_proxies` is set");
        }
    }
    let router = app(service.clone(), leptos_options(&cfg), proxies);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (config key `listen`, env BINDERY_LISTEN): {e}", cfg.listen))?;
    tracing::info!("Bindery listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    sweeper.abort();
    prober.abort();
    scheduler.abort();
    service.store().close().await;
    tracing::info!("Bindery stopped");
    Ok(())
}

/// Probe the directory servers: the circuit breaker's way back.
async fn probe(service: Service, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        service.probe_directories().await;
    }
}

/// The sync scheduler: due schedules start here (one replica per firing),
/// and runs of a replica that stopped are marked interrupted.
async fn schedule(service: Service, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match service.scheduler_tick().await {
            Ok(runs) => {
                for r in runs {
                    tracing::info!(run = r.id, directory = r.directory.as_str(), "scheduled sync started");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sync scheduler tick failed"),
        }
    }
}

/// Remove expired sessions and old lockout counters every few minutes.
async fn sweep(service: Service) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        let now = bindery_service::util::now_ms();
        let (idle, abs) = match service.basic_settings().await {
            Ok(b) => (b.session_idle_minutes * 60_000, b.session_absolute_hours * 3_600_000),
            Err(_) => continue,
        };
        if let Err(e) = service.store().purge_sessions(now - idle, now - abs).await {
            tracing::warn!(error = %e, "session sweep failed");
        }
        if let Err(e) = service.store().purge_failures(now - 86_400_000).await {
            tracing::warn!(error = %e, "lockout sweep failed");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
