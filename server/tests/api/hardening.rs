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

    let ops = app.service.operation_log(&admin, &bindery_model::ListQuery { per_page: Some(100), ..Default::default() }).await.unwrap();
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
