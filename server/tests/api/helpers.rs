use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bindery_model::{NewUser, Role};
use bindery_service::{Actor, Options, Service};
use bindery_store::testing::TestDb;
use bindery_store::Backend;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const MIN_FAILURE_DELAY: Duration = Duration::from_millis(250);
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

pub struct TestApp {
    pub router: Router,
    pub service: Service,
    pub db: TestDb,
}

pub fn admin_actor() -> Actor {
    Actor::local_admin()
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_backend(Backend::Sqlite).await
    }

    pub async fn with_backend(backend: Backend) -> TestApp {
        Self::with_options(backend, Options { min_failure_delay: MIN_FAILURE_DELAY, ..Default::default() }).await
    }

    pub async fn with_options(backend: Backend, options: Options) -> TestApp {
        let db = TestDb::new(backend).await;
        let service = Service::new(db.store.clone(), options);
        let otp = service.bootstrap().await.unwrap().expect("first start creates admin");
        assert_eq!(otp.expose().len(), 20);
        // Give admin a known password without the forced change.
        let hash = bindery_service::util::hash_password(ADMIN_PASSWORD).unwrap();
        db.store.set_password(1, &hash, false, 0).await.unwrap();
        let cfg = bindery_server::Config::default();
        let router = bindery_server::app(service.clone(), bindery_server::leptos_options(&cfg), true);
        TestApp { router, service, db }
    }

    pub async fn send(&self, mut req: Request<Body>) -> Response<Body> {
        if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        }
        // A deadline, so that a request that never answers fails its test
        // by name instead of hanging the suite (and CI) until it is killed.
        let what = format!("{} {}", req.method(), req.uri());
        match tokio::time::timeout(std::time::Duration::from_secs(60), self.router.clone().oneshot(req)).await {
            Ok(res) => res.unwrap(),
            Err(_) => panic!("{what}: no answer within 60 s"),
        }
    }

    /// A local user with a usable password (no forced change).
    pub async fn user(&self, name: &str, role: Role) -> (i64, String) {
        let password = format!("{name}-Secret-123");
        let u = self
            .service
            .create_user(
                &admin_actor(),
                &NewUser { username: name.into(), name: name.into(), role, password: password.clone(), ..Default::default() },
            )
            .await
            .unwrap();
        let hash = bindery_service::util::hash_password(&password).unwrap();
        self.db.store.set_password(u.id, &hash, false, 0).await.unwrap();
        (u.id, password)
    }

    /// Sign in through the login server function; the session cookie on success.
    pub async fn login(&self, username: &str, password: &str) -> (Response<Body>, Option<String>) {
        let res = self.send(form("/rpc/login", &[("username", username), ("password", password)], None)).await;
        let cookie = set_cookie(&res).filter(|c| !c.is_empty());
        (res, cookie)
    }

    /// An API token of `username` (created through the REST API).
    pub async fn token(&self, username: &str, password: &str) -> String {
        let session = self.session(username, password).await;
        let res = self.send(api("POST", "/api/v1/tokens", Some(serde_json::json!({"name": "test"})), Auth::Cookie(&session))).await;
        body_json(res).await["secret"].as_str().expect("a token secret").to_string()
    }

    pub async fn session(&self, username: &str, password: &str) -> String {
        let (res, cookie) = self.login(username, password).await;
        cookie.unwrap_or_else(|| panic!("login of {username} failed: {:?}", res.headers()))
    }
}

/// The session cookie's value from a response, if it sets one.
pub fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("bindery_session="))
        .map(|v| v["bindery_session=".len()..].split(';').next().unwrap_or("").to_string())
}

pub fn set_cookie_header(res: &Response<Body>) -> String {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("bindery_session="))
        .unwrap_or_default()
        .to_string()
}

fn enc(s: &str) -> String {
    bindery_app::url_encode(s)
}

/// A same-origin browser form post (as a plain HTML form sends it).
pub fn form(path: &str, fields: &[(&str, &str)], cookie: Option<&str>) -> Request<Body> {
    let body = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
    let mut b = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "text/html")
        .header(header::HOST, "bindery.test")
        .header(header::ORIGIN, "http://bindery.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("bindery_session={c}"));
    }
    b.body(Body::from(body)).unwrap()
}

/// A server function call as the hydrated console makes it (JSON answer).
pub fn rpc(path: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header("sec-fetch-site", "same-origin");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("bindery_session={c}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

pub enum Auth<'a> {
    None,
    Cookie(&'a str),
    Bearer(&'a str),
}

pub fn api(method: &str, path: &str, body: Option<serde_json::Value>, auth: Auth) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    match auth {
        Auth::None => {}
        Auth::Cookie(c) => b = b.header(header::COOKIE, format!("bindery_session={c}")),
        Auth::Bearer(t) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
    }
    match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

pub async fn body_json(res: Response<Body>) -> serde_json::Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
}

pub async fn body_text(res: Response<Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into()
}

pub fn location(res: &Response<Body>) -> String {
    res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

pub fn assert_status(res: &Response<Body>, want: StatusCode, what: &str) {
    assert_eq!(res.status(), want, "{what}: got {} (headers {:?})", res.status(), res.headers());
}

/// The members of a directory group (of the `ldap` directory), by name.
pub async fn group_members(app: &TestApp, group_dn: &str) -> Vec<String> {
    let groups = app.db.store.directory_groups("ldap").await.unwrap();
    let (id, _) = groups.iter().find(|(_, dn)| dn.eq_ignore_ascii_case(group_dn)).unwrap_or_else(|| panic!("{group_dn}: {groups:?}"));
    app.db.store.members_of(&[*id]).await.unwrap().into_iter().map(|m| m.name).collect()
}
