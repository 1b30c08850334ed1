//! The Bindery server: wires configuration, storage, the console (Leptos
//! SSR + server functions) and the REST API into one axum [`Router`].

pub mod config;
mod flash;
mod headers;
mod metrics;
mod middleware;
mod precompress;
mod rest;

/// mimalloc instead of glibc's malloc, for the server and everything that
/// links it (its tests and benchmarks). An enumeration allocates for every
/// BER element ldap3 decodes and every attribute value it maps: in a
/// profile of a 100,000-user resync, glibc's malloc and free were 40 % of
/// the server's CPU, and the server's one busy core, not the directory,
/// set the pace.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bindery_service::{Options, Service, Store};
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};

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
    /// `/metrics` needs `Authorization: Bearer <token>` when set.
    pub metrics_token: Option<String>,
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
        Options {
            min_failure_delay: Duration::from_millis(cfg.min_failure_delay_ms),
            secret_key: secret_key(cfg)?,
            smtp,
            ..Options::default()
        },
    );
    // One key per database: a replica with another key stops here, not
    // at the first user who cannot sign in.
    service.check_secret_key().await.map_err(|e| anyhow::anyhow!("{e}"))?;
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
        check_private(path)?;
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

/// The folder of Bindery's own files: the SQLite database's, else the
/// secret key file's (`data/` by default).
pub fn data_dir(cfg: &Config) -> std::path::PathBuf {
    let parent = |p: &str| std::path::Path::new(p).parent().filter(|d| !d.as_os_str().is_empty()).map(std::path::Path::to_path_buf);
    let sqlite = cfg.database_url.strip_prefix("sqlite:").map(|p| p.trim_start_matches("//").split('?').next().unwrap_or(""));
    match sqlite {
        Some(p) if !p.is_empty() && !p.starts_with(':') => parent(p).unwrap_or_else(|| ".".into()),
        _ => parent(&cfg.secret_key_file).unwrap_or_else(|| "data".into()),
    }
}

/// Where the first administrator's one-time password is written.
pub fn initial_password_file(cfg: &Config) -> std::path::PathBuf {
    data_dir(cfg).join(INITIAL_PASSWORD_FILE)
}

pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// The first administrator's one-time password goes to a file readable by
/// this user only (mode 0600), never into the log stream, which log
/// shippers copy far and wide: the log says where the file is. The service
/// deletes the file at the first password change of `admin`; one left
/// from a start whose password was already changed is deleted here.
async fn announce_initial_password(cfg: &Config, service: &Service, password: Option<bindery_service::Secret>) -> anyhow::Result<()> {
    let path = initial_password_file(cfg);
    match password {
        Some(p) => {
            write_private(&path, &format!("{}\n", p.expose()))
                .map_err(|e| anyhow::anyhow!("cannot write the first administrator's one-time password to {}: {e}", path.display()))?;
            service.set_initial_password_file(path.clone());
            tracing::warn!(
                file = %path.display(),
                "created the first administrator `admin`: the one-time password is in the file (mode 0600); \
                 it must be changed at first sign-in, which deletes the file"
            );
        }
        None if path.exists() => {
            if service.initial_password_pending().await? {
                service.set_initial_password_file(path.clone());
                tracing::warn!(file = %path.display(), "the first administrator `admin` has not changed the one-time password in the file yet");
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        None => {}
    }
    Ok(())
}

/// Write `text` to a new file only its owner can read or write.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(path)?, text.as_bytes())
}

/// The key file must be readable by its owner only: refuse to start
/// otherwise, saying how to fix it.
fn check_private(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the secret key file {} (config `secret_key_file`, env BINDERY_SECRET_KEY_FILE) is readable by group or others \
                 (mode {:o}); anyone who can read it can decrypt the directory passwords. Fix: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(())
}

pub fn leptos_options(cfg: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("bindery")
        .site_root(cfg.site_root.as_str())
        .site_pkg_dir("pkg")
        .site_addr(cfg.listen)
        .env(leptos::config::Env::PROD)
        .hash_files(hashed_site())
        .build()
}

/// Whether cargo-leptos built the console with hashed file names: it then
/// writes `hash.txt` beside the server binary, where Leptos reads the names
/// (and panics if the file is missing, so never claim it without the file).
fn hashed_site() -> bool {
    std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("hash.txt"))).is_some_and(|f| f.is_file())
}

/// The whole HTTP application.
pub fn app(service: Service, leptos: LeptosOptions, proxies: impl Into<TrustedProxies>) -> Router {
    app_with_metrics_token(service, leptos, proxies, None)
}

/// The whole HTTP application, `/metrics` behind a bearer token when one is given.
pub fn app_with_metrics_token(
    service: Service,
    leptos: LeptosOptions,
    proxies: impl Into<TrustedProxies>,
    metrics_token: Option<String>,
) -> Router {
    let metrics_token = metrics_token.filter(|t| !t.trim().is_empty());
    let state = AppState(Arc::new(Shared {
        service: service.clone(),
        leptos: leptos.clone(),
        metrics: Metrics::new(),
        trusted_proxies: proxies.into(),
        metrics_token,
    }));
    let routes = generate_route_list(bindery_app::App);
    let ctx_service = service.clone();
    let console = Router::<AppState>::new()
        .leptos_routes_with_context(&state, routes, move || request_context(&ctx_service), {
            let leptos = leptos.clone();
            move || bindery_app::shell(leptos.clone())
        })
        .fallback({
            // The 404 page renders the app too: it needs the service.
            let fb_service = service.clone();
            leptos_axum::file_and_error_handler_with_context::<AppState, _>(move || request_context(&fb_service), bindery_app::shell)
        })
        // Flash messages belong to the console's plain forms and pages.
        .layer(axum::middleware::from_fn_with_state(state.clone(), flash::flash));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .nest("/api", rest::router())
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::context))
        .layer(axum::middleware::from_fn_with_state(state.clone(), headers::response_headers))
        // HTML and JSON answers compressed on the fly; the console's static
        // files come precompressed (.br/.gz beside each, written at start by
        // `precompress`), which this layer leaves alone (they carry a
        // Content-Encoding).
        .layer(compression())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// On-the-fly compression of pages and API answers: a fast level (brotli's
/// default, 11, costs more CPU than the page itself). The WASM is left out:
/// a release build ships it precompressed, and compressing a debug build's
/// 100 MB on every load would only slow the tests down.
fn compression() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate};
    use tower_http::compression::{CompressionLayer, CompressionLevel, DefaultPredicate};
    CompressionLayer::new()
        .br(true)
        .gzip(true)
        .quality(CompressionLevel::Precise(4))
        .compress_when(DefaultPredicate::new().and(NotForContentType::const_new("application/wasm")))
}

/// What every page render gets: the service, and this request's CSP nonce
/// (Leptos puts it on its hydration and resource scripts).
fn request_context(service: &Service) {
    use leptos::prelude::{provide_context, use_context};
    provide_context(service.clone());
    if let Some(f) = use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<bindery_app::flash::Flash>().cloned()) {
        provide_context(f);
    }
    if let Some(nonce) = use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<headers::CspNonce>().cloned()) {
        provide_context(leptos::nonce::Nonce::from_value(nonce.0));
    }
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

async fn metrics_handler(State(s): State<AppState>, headers: http::HeaderMap) -> axum::response::Response {
    if !metrics::authorised(s.metrics_token.as_deref(), &headers) {
        return (http::StatusCode::UNAUTHORIZED, [(http::header::WWW_AUTHENTICATE, "Bearer")], "metrics need the bearer token\n")
            .into_response();
    }
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render()).into_response()
}

/// Serve until SIGINT/SIGTERM, then finish in-flight requests.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let (service, password) = open(&cfg).await?;
    announce_initial_password(&cfg, &service, password).await?;
    let sweeper = tokio::spawn(sweep(service.clone()));
    let prober = tokio::spawn(probe(service.clone(), Duration::from_secs(cfg.directory_probe_seconds.max(1))));
    let scheduler = tokio::spawn(schedule(service.clone(), Duration::from_secs(cfg.sync_tick_seconds.max(1))));
    // Live deprovisioning: each directory's change stream, where its settings turn it on.
    let live = service.spawn_live_streams();
    precompress::spawn(cfg.site_root.clone());
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
    let router = app_with_metrics_token(service.clone(), leptos_options(&cfg), proxies, cfg.metrics_token.clone());
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
    live.abort();
    // Give the streams' leases back: another replica takes over at once.
    service.stop_live_streams().await;
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
