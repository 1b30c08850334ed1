//! Logins, sessions, lockout and CSRF (security checklist items 6, 7, 13, 15).

use std::time::Instant;

use bindery_model::{Role, SecuritySettings};
use http::{header, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn every_login_failure_looks_the_same_and_takes_the_minimum_time() {
    let app = TestApp::new().await;
    let (jane, pw) = app.user("jane", Role::User).await;
    app.user("dis", Role::User).await;
    let dis = app.db.store.find_user("dis").await.unwrap().unwrap();
    app.service
        .update_user(&admin_actor(), dis.id, &bindery_model::UserUpdate { is_active: Some(false), ..Default::default() })
        .await
        .unwrap();
    let _ = jane;
    let cases = [("nobody", "whatever-password"), ("jane", "wrong-password"), ("dis", "dis-Secret-123"), ("jane", "   ")];
    let mut answers = Vec::new();
    for (u, p) in cases {
        let started = Instant::now();
        let (res, cookie) = app.login(u, p).await;
        let took = started.elapsed();
        assert!(cookie.is_none(), "{u}: no session on failure");
        assert!(took >= MIN_FAILURE_DELAY, "{u}: failure answered in {took:?}, before the minimum {MIN_FAILURE_DELAY:?}");
        answers.push((res.status(), location(&res)));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "answers differ: {answers:?}");
    assert_eq!(answers[0], (StatusCode::FOUND, "/login?failed=1".to_string()));
    // The reasons are in the login log, for admins only.
    let log = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap();
    let reasons: Vec<&str> = log.items.iter().map(|e| e.reason.as_str()).collect();
    for r in ["unknown user", "wrong password", "account disabled", "empty password"] {
        assert!(reasons.contains(&r), "login log lacks {r:?}: {reasons:?}");
    }
    // And the right password works.
    let (res, cookie) = app.login("JANE", &pw).await;
    assert!(cookie.is_some(), "case-insensitive username");
    assert_eq!(location(&res), "/");
}

#[tokio::test]
async fn lockout_per_username_and_admin_unlock() {
    let app = TestApp::new().await;
    app.service.update_security_settings(&admin_actor(), SecuritySettings { lockout_max_failures: 3, ..Default::default() }).await.unwrap();
    let (_, pw) = app.user("bob", Role::User).await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    for _ in 0..3 {
        let (_, c) = app.login("bob", "wrong-password").await;
        assert!(c.is_none());
    }
    let (_, c) = app.login("bob", &pw).await;
    assert!(c.is_none(), "locked: even the right password is refused");
    let locks = app.service.list_lockouts(&admin_actor()).await.unwrap();
    assert!(locks.iter().any(|l| l.key == "user:bob" && l.failures == 3), "{locks:?}");
    // The users list shows the state (one query per page, not per row).
    let page = app.service.list_users(&admin_actor(), &Default::default()).await.unwrap();
    let states: Vec<(String, bool)> = page.items.iter().map(|u| (u.username.clone(), u.locked)).collect();
    assert!(states.contains(&("bob".to_string(), true)) && states.contains(&("admin".to_string(), false)), "{states:?}");
    // Unlock through the console's server function as admin.
    let res = app.send(rpc("/rpc/unlock", "key=user%3Abob", Some(&admin))).await;
    assert_status(&res, StatusCode::OK, "unlock");
    // The address is not: it has its own, higher threshold (50).
    assert!(!locks.iter().any(|l| l.key.starts_with("ip:")), "{locks:?}");
    let (_, c) = app.login("bob", &pw).await;
    assert!(c.is_some(), "unlocked");
}

#[tokio::test]
async fn lockout_per_client_address() {
    let app = TestApp::new().await;
    app.service
        .update_security_settings(
            &admin_actor(),
            SecuritySettings { lockout_max_failures: 5, lockout_ip_max_failures: 2, ..Default::default() },
        )
        .await
        .unwrap();
    let (_, pw) = app.user("carol", Role::User).await;
    // Failures spread over different usernames, all from one address.
    for u in ["x1", "x2"] {
        app.login(u, "wrong-password").await;
    }
    let (_, c) = app.login("carol", &pw).await;
    assert!(c.is_none(), "the address is locked");
    // Another address is not.
    let mut req = form("/rpc/login", &[("username", "carol"), ("password", &pw)], None);
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([10, 0, 0, 9], 5555))));
    let res = app.send(req).await;
    assert!(set_cookie(&res).is_some(), "another address can still sign in");
}

#[tokio::test]
async fn session_cookie_flags_rotation_logout_and_idle_expiry() {
    let app = TestApp::new().await;
    let (res, first) = app.login("admin", ADMIN_PASSWORD).await;
    let header = set_cookie_header(&res);
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Lax") && header.contains("Path=/"), "{header}");
    assert!(!header.contains("Secure"), "plain HTTP: no Secure flag");
    let first = first.unwrap();

    // Behind a TLS proxy the cookie is Secure.
    let mut req = form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD)], None);
    req.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let res = app.send(req).await;
    assert!(set_cookie_header(&res).contains("Secure"), "{}", set_cookie_header(&res));

    // Rotated: a login while holding a session yields a different one.
    let res = app.send(form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD)], Some(&first))).await;
    let second = set_cookie(&res).unwrap();
    assert_ne!(first, second);

    let me = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&second))).await;
    assert_status(&me, StatusCode::OK, "session works");

    // Logout ends the session server-side.
    let res = app.send(form("/rpc/logout", &[], Some(&second))).await;
    assert!(set_cookie_header(&res).contains("Max-Age=0"));
    let me = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&second))).await;
    assert_status(&me, StatusCode::UNAUTHORIZED, "after logout");

    // Idle expiry: a session unused for longer than the idle timeout is gone.
    let hash = bindery_service::util::token_hash(&first);
    let idle_ms = app.service.basic_settings().await.unwrap().session_idle_minutes * 60_000;
    app.db.store.touch_session(&hash, bindery_service::util::now_ms() - idle_ms - 1000).await.unwrap();
    let me = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&first))).await;
    assert_status(&me, StatusCode::UNAUTHORIZED, "idle session");
}

#[tokio::test]
async fn cross_site_posts_are_refused_and_change_nothing() {
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let body = "username=mallory&name=&email=&role=admin&password=Mallory-Secret-1";
    for (h, v) in [("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")] {
        let mut req = rpc("/rpc/create_user", body, Some(&admin));
        req.headers_mut().remove("sec-fetch-site");
        req.headers_mut().insert(header::HOST, "bindery.test".parse().unwrap());
        req.headers_mut().insert(h, v.parse().unwrap());
        let res = app.send(req).await;
        assert_status(&res, StatusCode::FORBIDDEN, h);
    }
    // A cross-site login (login CSRF) is refused as well.
    let mut req = form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD)], None);
    req.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_status(&app.send(req).await, StatusCode::FORBIDDEN, "login csrf");
    assert!(app.db.store.find_user("mallory").await.unwrap().is_none(), "nothing was created");
    // The same call from the console's own origin works.
    let res = app.send(rpc("/rpc/create_user", body, Some(&admin))).await;
    assert_status(&res, StatusCode::OK, "same-origin");
    assert!(app.db.store.find_user("mallory").await.unwrap().is_some());
}

#[tokio::test]
async fn passwords_are_argon2id_and_one_time_passwords_force_a_change() {
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let res = app
        .send(rpc("/rpc/create_user", "username=dave&name=Dave&email=dave%40example.com&role=user&password=Dave-OneTime-1", Some(&admin)))
        .await;
    assert_status(&res, StatusCode::OK, "create");
    let row = app.db.store.find_user("dave").await.unwrap().unwrap();
    let hash = row.password_hash.clone().unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains("Dave-OneTime-1"));

    // First sign-in goes to the forced change; pages redirect there.
    let (res, cookie) = app.login("dave", "Dave-OneTime-1").await;
    assert_eq!(location(&res), "/change-password");
    let cookie = cookie.unwrap();
    let page = app.send(api("GET", "/users", None, Auth::Cookie(&cookie))).await;
    assert_eq!(location(&page), "/change-password");
    let res = app.send(api("GET", "/api/v1/users", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::FORBIDDEN, "API before the change");

    // A wrong confirmation comes back to the form with the field named.
    let res = app
        .send(form(
            "/rpc/change_password",
            &[("current_password", "Dave-OneTime-1"), ("new_password", "Dave-Own-Password-2"), ("confirm_password", "x")],
            Some(&cookie),
        ))
        .await;
    assert!(location(&res).contains("err_confirm_password="), "{}", location(&res));
    let res = app
        .send(form(
            "/rpc/change_password",
            &[("current_password", "Dave-OneTime-1"), ("new_password", "Dave-Own-Password-2"), ("confirm_password", "Dave-Own-Password-2")],
            Some(&cookie),
        ))
        .await;
    assert_eq!(location(&res), "/?password_changed=1");
    let fresh = set_cookie(&res).expect("a new session after the change");
    assert_ne!(fresh, cookie, "session rotated");
    let old = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await;
    assert_status(&old, StatusCode::UNAUTHORIZED, "old session ended");
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&fresh))).await).await;
    assert_eq!(me["must_change_password"], false);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_tokens() {
    let app = TestApp::new().await;
    let (id, pw) = app.user("erin", Role::Auditor).await;
    let session = app.session("erin", &pw).await;
    let token = app
        .service
        .create_api_token(&admin_actor(), &bindery_model::NewApiToken { name: "ci".into(), user_id: Some(id), expires_in_days: None })
        .await
        .unwrap()
        .secret;
    for auth in [Auth::Cookie(&session), Auth::Bearer(&token)] {
        assert_status(&app.send(api("GET", "/api/v1/users", None, auth)).await, StatusCode::OK, "before");
    }
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let res =
        app.send(api("PATCH", &format!("/api/v1/users/{id}"), Some(serde_json::json!({"is_active": false})), Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::OK, "disable");
    for auth in [Auth::Cookie(&session), Auth::Bearer(&token)] {
        assert_status(&app.send(api("GET", "/api/v1/users", None, auth)).await, StatusCode::UNAUTHORIZED, "after");
    }
    let (_, c) = app.login("erin", &pw).await;
    assert!(c.is_none(), "a disabled user cannot sign in");
}

#[tokio::test]
async fn signed_out_pages_redirect_to_login_with_next() {
    let app = TestApp::new().await;
    let res = app.send(api("GET", "/users?page=2", None, Auth::None)).await;
    assert_status(&res, StatusCode::SEE_OTHER, "redirect");
    assert_eq!(location(&res), "/login?next=/users%3Fpage%3D2");
    let res = app.send(api("GET", "/login", None, Auth::None)).await;
    assert_status(&res, StatusCode::OK, "login page");
    let html = body_text(res).await;
    assert!(html.contains("action=\"/rpc/login\""), "plain HTML form");
    // An off-site `next` is ignored after login.
    let res = app.send(form("/rpc/login", &[("username", "admin"), ("password", ADMIN_PASSWORD), ("next", "//evil.example/")], None)).await;
    assert_eq!(location(&res), "/");
}
