//! Security hardening (issue 15): redirects, TLS downgrades, metrics,
//! headers, usernames, secrets.

use http::StatusCode;

use crate::helpers::*;

/// `next` values that browsers would follow off-site, or that cannot go
/// into a `Location` header at all. Each answer is a redirect home (never
/// a panic, never a dropped connection), with or without a correct password.
#[tokio::test]
async fn login_next_with_control_characters_or_other_origins_goes_home() {
    let app = TestApp::new().await;
    for (i, next) in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: pwned=1",
        "/\\evil.example",
        "/.//evil.example",
        "//evil.example",
        "https://evil.example/",
        "/rpc/logout",
    ]
    .into_iter()
    .enumerate()
    {
        let res = app.send(form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD), ("next", next)], None)).await;
        assert_status(&res, StatusCode::FOUND, &format!("good password, next {next:?}"));
        assert_eq!(location(&res), "/", "good password, next {next:?}");
        assert!(set_cookie(&res).is_some_and(|c| !c.is_empty()), "signed in despite the bad next {next:?}");

        // Failures from an address and a name of their own: no lockout.
        let res = app
            .send(from_ip(form("/rpc/login", &[("username", &format!("nobody{i}")), ("password", "wrong"), ("next", next)], None), i))
            .await;
        assert_status(&res, StatusCode::FOUND, &format!("bad password, next {next:?}"));
        assert_eq!(location(&res), "/login?failed=1", "bad password, next {next:?}");
    }
    // A same-origin path survives, both ways.
    let res =
        app.send(from_ip(form("/rpc/login", &[("username", "nobody"), ("password", "wrong"), ("next", "/users?page=2")], None), 99)).await;
    assert_eq!(location(&res), "/login?failed=1&next=/users%3Fpage%3D2");
    let res = app.send(form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD), ("next", "/users?page=2")], None)).await;
    assert_eq!(location(&res), "/users?page=2");
}

fn from_ip(mut req: http::Request<axum::body::Body>, i: usize) -> http::Request<axum::body::Body> {
    let addr = std::net::SocketAddr::from(([10, 9, 0, i as u8], 40000));
    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    req
}

/// A stored bind password never goes out over a weaker connection, or one
/// trusting other certificates, than the one it was saved for: saving,
/// Test connection and Test login on such unsaved values all ask for it
/// again. Every test is an operation-log entry without the password.
#[tokio::test]
async fn weakening_tls_requires_the_bind_password_again_and_tests_are_logged() {
    use bindery_directory::testing::Slapd;
    use bindery_model::DirectoryKind;
    let d = Slapd::start();
    let app = TestApp::new().await;
    let admin = admin_actor();
    let kind = DirectoryKind::Ldap;
    let mut saved = d.input();
    saved.starttls = true;
    app.service.save_directory(&admin, kind, &saved).await.expect("saved with StartTLS");
    let mut keep = saved.clone();
    keep.bind_password = None;
    keep.page_size = 500;
    let report = app.service.test_directory_connection(&admin, kind, Some(&keep)).await.expect("same TLS: the stored password is used");
    assert!(report.ok, "{report:?}");

    let mut variants: Vec<(&str, bindery_model::DirectoryInput)> = Vec::new();
    let mut v = keep.clone();
    v.starttls = false;
    variants.push(("StartTLS off", v));
    let mut v = keep.clone();
    v.skip_verify = true;
    variants.push(("skip verification on", v));
    let mut v = keep.clone();
    v.ca_pem = d.other_ca_pem.clone();
    variants.push(("another CA", v));
    let mut v = keep.clone();
    v.ca_pem = String::new();
    variants.push(("no CA", v));
    let mut v = keep.clone();
    v.client_cert_pem = d.ca_pem.clone();
    v.client_key_pem = Some("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----".into());
    variants.push(("a client certificate", v));
    for (what, input) in &variants {
        let err = app.service.save_directory(&admin, kind, input).await.expect_err(what);
        assert!(bad_field(&err, "bind_password"), "{what}: save: {err}");
        let err = app.service.test_directory_connection(&admin, kind, Some(input)).await.expect_err(what);
        assert!(bad_field(&err, "bind_password"), "{what}: test connection: {err}");
        let err = app.service.test_directory_login(&admin, kind, Some(input), "jdoe", Some("x")).await.expect_err(what);
        assert!(bad_field(&err, "bind_password"), "{what}: test login: {err}");
    }
    // With the password typed again, the same values are accepted.
    let mut v = keep.clone();
    v.starttls = false;
    v.bind_password = Some(d.bind_password.clone());
    assert!(app.service.test_directory_connection(&admin, kind, Some(&v)).await.unwrap().ok);
    // Strengthening needs no password: verification back on is fine.
    app.service.fetch_directory_certificates(&admin, kind, None).await.unwrap();

    let ops = app.service.operation_log(&admin, &bindery_model::LogQuery { per_page: Some(100), ..Default::default() }).await.unwrap();
    for action in ["directory.test_connection", "directory.test_login", "directory.fetch_certificate"] {
        let mine: Vec<_> = ops.items.iter().filter(|o| o.action == action).collect();
        assert!(!mine.is_empty(), "no {action} in the operation log");
        assert!(mine.iter().all(|o| o.actor == "admin" && o.target == "directory:ldap"), "{mine:?}");
    }
    let refused = ops.items.iter().filter(|o| o.action == "directory.test_connection" && format!("{o:?}").contains("re-enter")).count();
    assert_eq!(refused, variants.len(), "refused tests are logged too");
    assert!(ops.items.iter().all(|o| !format!("{o:?}").contains(&d.bind_password)), "no password in the operation log");
}

fn bad_field(e: &bindery_service::Error, field: &str) -> bool {
    matches!(e, bindery_service::Error::Invalid(f) if f.iter().any(|f| f.field == field))
}

/// `/metrics`: a made-up method is counted as `other`; with a
/// `metrics_token`, only that bearer token may read it.
#[tokio::test]
async fn metrics_bound_their_labels_and_can_require_a_token() {
    let app = TestApp::new().await;
    let cfg = bindery_server::Config::default();
    let router =
        bindery_server::app_with_metrics_token(app.service.clone(), bindery_server::leptos_options(&cfg), false, Some("m-token".into()));
    let send = |req: http::Request<axum::body::Body>| {
        let router = router.clone();
        async move { tower::ServiceExt::oneshot(router, with_peer(req)).await.unwrap() }
    };
    for m in ["PROPFIND", "X-MADE-UP-1", "X-MADE-UP-2"] {
        send(http::Request::builder().method(m).uri("/healthz").body(axum::body::Body::empty()).unwrap()).await;
    }
    let res = send(api("GET", "/metrics", None, Auth::None)).await;
    assert_status(&res, StatusCode::UNAUTHORIZED, "no token");
    let res = send(api("GET", "/metrics", None, Auth::Bearer("wrong"))).await;
    assert_status(&res, StatusCode::UNAUTHORIZED, "wrong token");
    let res = send(api("GET", "/metrics", None, Auth::Bearer("m-token"))).await;
    assert_status(&res, StatusCode::OK, "token");
    let text = body_text(res).await;
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("PROPFIND") && !text.contains("MADE-UP"), "{text}");
    // Without a token configured, /metrics stays open (scraped on a private network).
    assert_status(&app.send(api("GET", "/metrics", None, Auth::None)).await, StatusCode::OK, "open");
}

fn with_peer(mut req: http::Request<axum::body::Body>) -> http::Request<axum::body::Body> {
    if req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().is_none() {
        req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
    }
    req
}

/// Security headers on a page, an API answer and a static file; the
/// page's scripts carry the nonce its policy names; HSTS only over TLS
/// from a trusted proxy.
#[tokio::test]
async fn security_headers_on_pages_api_answers_and_static_files() {
    let app = TestApp::new().await;
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    std::fs::write(site.path().join("pkg/bindery.css"), "body{}").unwrap();
    let cfg = bindery_server::Config { site_root: site.path().display().to_string(), ..Default::default() };
    let router = bindery_server::app(app.service.clone(), bindery_server::leptos_options(&cfg), true);
    let send = |req: http::Request<axum::body::Body>| {
        let router = router.clone();
        async move { tower::ServiceExt::oneshot(router, with_peer(req)).await.unwrap() }
    };
    let page = send(api("GET", "/login", None, Auth::None)).await;
    assert_status(&page, StatusCode::OK, "page");
    let api_answer = send(api("GET", "/api/v1/me", None, Auth::None)).await;
    assert_status(&api_answer, StatusCode::UNAUTHORIZED, "api");
    let file = send(api("GET", "/pkg/bindery.css", None, Auth::None)).await;
    assert_status(&file, StatusCode::OK, "static file");
    let mut nonces = Vec::new();
    for (what, res) in [("page", &page), ("api", &api_answer), ("static", &file)] {
        let h = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(h("x-frame-options"), "DENY", "{what}");
        assert_eq!(h("referrer-policy"), "same-origin", "{what}");
        let csp = h("content-security-policy");
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        let script = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).unwrap_or_else(|| panic!("{what}: {csp}"));
        assert!(script.contains("'wasm-unsafe-eval'") && !script.contains("unsafe-inline"), "{what}: {script}");
        let nonce = script.split_whitespace().find_map(|t| t.strip_prefix("'nonce-")).and_then(|t| t.strip_suffix('\'')).expect("a nonce");
        nonces.push(nonce.to_string());
        assert!(h("strict-transport-security").is_empty(), "{what}: no HSTS over plain HTTP");
    }
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "a fresh nonce per request");
    // Every script of the page carries the nonce of its own policy.
    let html = body_text(page).await;
    let scripts: Vec<&str> = html.split("<script").skip(1).map(|s| s.split('>').next().unwrap_or("")).collect();
    assert!(!scripts.is_empty(), "the page has its hydration script");
    for s in &scripts {
        assert!(s.contains(&format!("nonce=\"{}\"", nonces[0])), "script without the nonce: <script{s}>");
    }
    // HSTS when the request came over TLS through the (trusted) proxy.
    let mut req = api("GET", "/api/v1/me", None, Auth::None);
    req.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let res = send(req).await;
    let hsts = res.headers().get("strict-transport-security").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(hsts.starts_with("max-age=31536000"), "HSTS: {hsts:?}");
    // Not when proxies are not trusted.
    let untrusted = bindery_server::app(app.service.clone(), bindery_server::leptos_options(&cfg), false);
    let mut req = api("GET", "/api/v1/me", None, Auth::None);
    req.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let res = tower::ServiceExt::oneshot(untrusted, with_peer(req)).await.unwrap();
    assert!(res.headers().get("strict-transport-security").is_none(), "forged X-Forwarded-Proto");
}

/// A `bindery serve` process of its own, its output collected.
pub struct Proc {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    pub fn spawn(dir: &std::path::Path, env: &[(&str, String)]) -> Proc {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bindery"));
        cmd.arg("serve")
            .current_dir(dir)
            .env_remove("BINDERY_SECRET_KEY")
            .env_remove("BINDERY_DATABASE_URL")
            .env("BINDERY_LISTEN", "127.0.0.1:0")
            .env("BINDERY_SITE_ROOT", dir)
            .env("BINDERY_LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start bindery");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipes: Vec<Box<dyn std::io::Read + Send>> =
            vec![Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for pipe in pipes {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Proc { child, out }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The address it listens on, once it does (None: it exited or took too long).
    pub fn listening(&mut self) -> Option<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(addr) = self.output().split("listening on http://").nth(1) {
                return Some(addr.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect());
            }
            if self.child.try_wait().unwrap().is_some() {
                std::thread::sleep(std::time::Duration::from_millis(200));
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Waits for the process to end on its own.
    pub fn exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(std::time::Duration::from_millis(200));
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first administrator's one-time password is in a 0600 file next to
/// the database, never in the log; the first password change deletes it.
#[tokio::test]
async fn the_first_one_time_password_is_in_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db/bindery.db");
    let mut p = Proc::spawn(dir.path(), &[("BINDERY_DATABASE_URL", format!("sqlite:{}", db.display()))]);
    let addr = p.listening().unwrap_or_else(|| panic!("did not start:\n{}", p.output()));
    let file = dir.path().join("db/initial-admin-password");
    let otp = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), p.output()));
    let otp = otp.trim().to_string();
    assert_eq!(otp.len(), 20, "{otp:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let log = p.output();
    assert!(!log.contains(&otp), "the password is in the log:\n{log}");
    assert!(log.contains("initial-admin-password"), "the log says where it is:\n{log}");

    // The first password change deletes the file.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).cookie_store(true).build().unwrap();
    let base = format!("http://{addr}");
    let res = http
        .post(format!("{base}/rpc/login"))
        .header("accept", "text/html")
        .form(&[("username", "admin"), ("password", otp.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("location").unwrap(), "/change-password");
    assert!(file.exists(), "still there until the change");
    let new = "A-brand-new-Passw0rd";
    let res = http
        .post(format!("{base}/rpc/change_password"))
        .header("accept", "text/html")
        .form(&[("current_password", otp.as_str()), ("new_password", new), ("confirm_password", new)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("location").unwrap(), "/?password_changed=1");
    assert!(!file.exists(), "deleted at the first password change");
}

/// Usernames are one key whatever their Unicode spelling (NFC) or case;
/// keys stored under the old rule are rewritten at start; control
/// characters are refused at every entry and escaped in the login log.
#[tokio::test]
async fn usernames_are_nfc_keys_and_control_characters_are_refused() {
    use bindery_model::{NewUser, Role};
    let app = TestApp::new().await;
    let admin = admin_actor();
    let nfc = "\u{e9}lodie";
    let nfd = "E\u{301}lodie";
    let pw = "Elodie-Secret-123";
    let u = app
        .service
        .create_user(
            &admin,
            &NewUser { username: nfc.into(), name: "É".into(), role: Role::User, password: pw.into(), ..Default::default() },
        )
        .await
        .unwrap();
    let err = app
        .service
        .create_user(
            &admin,
            &NewUser { username: nfd.into(), name: "E".into(), role: Role::User, password: pw.into(), ..Default::default() },
        )
        .await
        .expect_err("the decomposed spelling is the same name");
    assert!(bad_field(&err, "username"), "{err}");
    let hash = bindery_service::util::hash_password(pw).unwrap();
    app.db.store.set_password(u.id, &hash, false, 0).await.unwrap();
    let (_, cookie) = app.login(nfd, pw).await;
    assert!(cookie.is_some(), "signs in with the other spelling");

    // Control characters: refused with a field error when creating …
    for bad in ["eve\tx", "eve\nINFO forged", "eve\u{1b}[31m"] {
        let err = app
            .service
            .create_user(
                &admin,
                &NewUser { username: bad.into(), name: "x".into(), role: Role::User, password: pw.into(), ..Default::default() },
            )
            .await
            .expect_err(bad);
        assert!(bad_field(&err, "username") && err.to_string().contains("control characters"), "{err}");
    }
    // … in Test login …
    let err = app
        .service
        .test_directory_login(&admin, bindery_model::DirectoryKind::Ldap, None, "jdoe\n", Some("x"))
        .await
        .expect_err("control character");
    assert!(bad_field(&err, "username"), "{err}");
    // … and at sign-in (the generic failure), logged escaped.
    let (res, cookie) = app.login("admin\nINFO forged line", ADMIN_PASSWORD).await;
    assert!(cookie.is_none(), "{:?}", res.headers());
    let log = app.service.login_log(&admin, &Default::default()).await.unwrap();
    let line = log.items.iter().find(|e| e.username.contains("forged")).expect("logged");
    assert_eq!(line.username, "admin\\nINFO forged line");

    // Keys stored under the old rule (lowercase only) are rewritten at start.
    let store = &app.db.store;
    let old_key = "zo\u{308}e"; // decomposed ö, lowercased, as the old rule left it
    let id = store
        .insert_user(&bindery_store::NewUserRow {
            username: "Zo\u{308}e",
            username_key: old_key,
            name: "Zoë",
            email: "",
            role: "user",
            source: "local",
            is_active: true,
            password_hash: None,
            must_change_password: false,
            external_id: None,
            organisation_ids: &[],
            now: 0,
        })
        .await
        .unwrap();
    let ukey = format!("user:{old_key}");
    store.deny_login(&[ukey.as_str()], &failed_line()).await.unwrap();
    store.put_setting("username_key_rule", "", 0).await.unwrap();
    app.service.migrate_username_keys().await.unwrap();
    let keys = store.username_keys().await.unwrap();
    assert!(keys.contains(&(id, "Zo\u{308}e".into(), "z\u{f6}e".into())), "{keys:?}");
    assert_eq!(store.find_user("z\u{f6}e").await.unwrap().expect("found under the NFC key").id, id);
    assert_eq!(
        store.failure_keys("user:").await.unwrap().iter().filter(|k| k.starts_with("user:z")).collect::<Vec<_>>(),
        vec!["user:z\u{f6}e"]
    );
}

fn failed_line() -> bindery_store::NewLoginEvent<'static> {
    bindery_store::NewLoginEvent { at: 0, username: "x", ip: "", user_agent: "", success: false, reason: "test", method: "web" }
}

/// The secret key file must be private: a readable one stops the start
/// with the fix in the message.
#[tokio::test]
async fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    let cfg = bindery_server::Config { secret_key_file: path.display().to_string(), ..Default::default() };
    bindery_server::secret_key(&cfg).expect("generated");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    bindery_server::secret_key(&cfg).expect("a private file is fine");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = bindery_server::secret_key(&cfg).expect_err("world-readable").to_string();
    assert!(err.contains("chmod 600") && err.contains("secret.key"), "{err}");
}

/// One key per database: a second replica on the same PostgreSQL with
/// another key refuses to start, naming both fingerprints.
#[tokio::test]
async fn a_replica_with_another_secret_key_refuses_to_start() {
    let db = bindery_store::testing::TestDb::new(bindery_store::Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (bindery_service::SecretKey::new([1; 32]), bindery_service::SecretKey::new([2; 32]));
    let env = |k: &bindery_service::SecretKey| vec![("BINDERY_DATABASE_URL", db.url.clone()), ("BINDERY_SECRET_KEY", k.to_hex())];
    let mut first = Proc::spawn(dir.path(), &env(&a));
    first.listening().unwrap_or_else(|| panic!("the first replica did not start:\n{}", first.output()));
    let mut same = Proc::spawn(dir.path(), &env(&a));
    same.listening().unwrap_or_else(|| panic!("a replica with the same key did not start:\n{}", same.output()));
    let mut other = Proc::spawn(dir.path(), &env(&b));
    let status = other.exit().unwrap_or_else(|| panic!("a replica with another key kept running:\n{}", other.output()));
    assert!(!status.success());
    let out = other.output();
    assert!(out.contains(&a.fingerprint()) && out.contains(&b.fingerprint()), "both fingerprints: {out}");
    assert!(out.contains("same `secret_key`"), "{out}");
    assert!(!out.contains(&a.to_hex()) && !out.contains(&b.to_hex()), "no key in the output");
}
