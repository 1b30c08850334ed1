//! Everything the console does is in the REST API: every server function
//! has its REST operation (in the OpenAPI document), and the operations
//! added for parity work: basic settings, groups, logs with filters and
//! CSV, the dashboard, a password change.

use std::collections::BTreeSet;

use bindery_model::Role;
use http::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Each server function and the REST operation that does the same.
/// `login`, `logout` and `current_user` are exempt (sessions of the console).
const PARITY: &[(&str, &str)] = &[
    ("approve_sync", "post /api/v1/sync/runs/{id}/approve"),
    ("basic_settings", "get /api/v1/settings/basic"),
    ("cancel_user_fetch", "delete /api/v1/directories/{kind}/users/fetch"),
    ("change_password", "post /api/v1/me/password"),
    ("create_organisation", "post /api/v1/organisations"),
    ("create_token", "post /api/v1/tokens"),
    ("create_user", "post /api/v1/users"),
    ("dashboard", "get /api/v1/dashboard"),
    ("delete_group", "delete /api/v1/groups/{id}"),
    ("delete_organisation", "delete /api/v1/organisations/{id}"),
    ("delete_user", "delete /api/v1/users/{id}"),
    ("directory_health", "get /api/v1/directories/health"),
    ("explain_access", "get /api/v1/users/{id}/explain_access"),
    ("fetch_directory_certificates", "post /api/v1/directories/{kind}/fetch_certificates"),
    ("get_directory", "get /api/v1/directories/{kind}"),
    ("get_user", "get /api/v1/users/{id}"),
    ("import_users", "post /api/v1/directories/{kind}/users/import"),
    ("list_groups", "get /api/v1/groups"),
    ("list_lockouts", "get /api/v1/lockouts"),
    ("list_organisations", "get /api/v1/organisations"),
    ("list_staged_users", "get /api/v1/directories/{kind}/users"),
    ("list_sync_runs", "get /api/v1/sync/runs"),
    ("list_tokens", "get /api/v1/tokens"),
    ("list_users", "get /api/v1/users"),
    ("login_log", "get /api/v1/logs/login"),
    ("operation_log", "get /api/v1/logs/operations"),
    ("relink_user", "post /api/v1/users/{id}/relink"),
    ("rename_organisation", "patch /api/v1/organisations/{id}"),
    ("reject_sync", "post /api/v1/sync/runs/{id}/reject"),
    ("reset_password", "post /api/v1/users/{id}/reset_password"),
    ("revoke_token", "delete /api/v1/tokens/{id}"),
    ("save_basic_settings", "put /api/v1/settings/basic"),
    ("save_directory", "put /api/v1/directories/{kind}"),
    ("save_group", "post /api/v1/groups"),
    ("save_group", "put /api/v1/groups/{id}"),
    ("save_security_settings", "put /api/v1/settings/security"),
    ("save_sync_settings", "put /api/v1/directories/{kind}/sync/settings"),
    ("security_settings", "get /api/v1/settings/security"),
    ("set_user_active", "patch /api/v1/users/{id}"),
    ("start_sync", "post /api/v1/directories/{kind}/sync"),
    ("start_user_fetch", "post /api/v1/directories/{kind}/users/fetch"),
    ("sync_run", "get /api/v1/sync/runs/{id}"),
    ("sync_settings", "get /api/v1/directories/{kind}/sync/settings"),
    ("test_directory", "post /api/v1/directories/{kind}/verify_connection"),
    ("test_directory_login", "post /api/v1/directories/{kind}/test_login"),
    ("unlock", "delete /api/v1/lockouts/{key}"),
    ("update_user", "patch /api/v1/users/{id}"),
    ("user_fetch_status", "get /api/v1/directories/{kind}/users/fetch"),
];
const EXEMPT: &[&str] = &["login", "logout", "current_user"];

/// The server functions of the console, read from its sources: a new one
/// without a REST operation fails this test.
fn server_functions() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src");
    let mut found = BTreeSet::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap();
                let mut lines = src.lines();
                while let Some(l) = lines.next() {
                    if l.trim_start().starts_with("#[server(") {
                        let f = lines.find(|l| l.contains("async fn ")).unwrap();
                        let name = f.split("async fn ").nth(1).unwrap().split(['(', '<']).next().unwrap();
                        found.insert(name.trim().to_string());
                    }
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn every_server_function_has_its_rest_operation() {
    let fns = server_functions();
    assert!(fns.len() > 40, "found the server functions: {fns:?}");
    let mapped: BTreeSet<&str> = PARITY.iter().map(|(f, _)| *f).collect();
    let missing: Vec<&String> = fns.iter().filter(|f| !mapped.contains(f.as_str()) && !EXEMPT.contains(&f.as_str())).collect();
    assert!(missing.is_empty(), "server functions without a REST operation: {missing:?}");
    let stale: Vec<&&str> = mapped.iter().filter(|f| !fns.contains(**f)).collect();
    assert!(stale.is_empty(), "mapped functions that no longer exist: {stale:?}");

    let app = TestApp::new().await;
    let doc = body_json(app.send(api("GET", "/api/openapi.json", None, Auth::None)).await).await;
    for (f, op) in PARITY {
        let (method, path) = op.split_once(' ').unwrap();
        assert!(doc["paths"][path][method].is_object(), "{f}: {op} is not in the OpenAPI document");
    }
}

#[tokio::test]
async fn basic_settings_groups_dashboard_and_password_over_rest() {
    let app = TestApp::new().await;
    let token = app.token("admin", ADMIN_PASSWORD).await;
    let t = || Auth::Bearer(&token);

    // Basic settings: 422 names the field and saves nothing.
    let before = body_json(app.send(api("GET", "/api/v1/settings/basic", None, t())).await).await;
    assert_eq!(before["log_retention_days"], 365);
    let mut bad = before.clone();
    bad["log_retention_days"] = json!(0);
    bad["session_idle_minutes"] = json!(99999);
    let res = app.send(api("PUT", "/api/v1/settings/basic", Some(bad), t())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "invalid basic settings");
    let fields = body_json(res).await["fields"].to_string();
    assert!(fields.contains("log_retention_days") && fields.contains("session_idle_minutes"), "{fields}");
    assert_eq!(body_json(app.send(api("GET", "/api/v1/settings/basic", None, t())).await).await, before, "nothing saved");
    let mut good = before.clone();
    good["log_retention_days"] = json!(30);
    let res = app.send(api("PUT", "/api/v1/settings/basic", Some(good), t())).await;
    assert_status(&res, StatusCode::OK, "save basic settings");
    assert_eq!(body_json(res).await["log_retention_days"], 30);

    // Groups: create, rename with members, delete.
    let (uid, _) = app.user("gina", Role::User).await;
    let res = app.send(api("POST", "/api/v1/groups", Some(json!({"name": "", "description": "", "member_ids": []})), t())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "group without a name");
    assert_eq!(body_json(res).await["fields"][0]["field"], "name");
    let res =
        app.send(api("POST", "/api/v1/groups", Some(json!({"name": "Ops", "description": "on call", "member_ids": [uid]})), t())).await;
    assert_status(&res, StatusCode::CREATED, "create group");
    let g = body_json(res).await;
    let gid = g["id"].as_i64().unwrap();
    let res = app
        .send(api("PUT", &format!("/api/v1/groups/{gid}"), Some(json!({"name": "Operations", "description": "", "member_ids": []})), t()))
        .await;
    assert_status(&res, StatusCode::OK, "update group");
    assert_eq!(body_json(res).await["name"], "Operations");
    let res = app.send(api("DELETE", &format!("/api/v1/groups/{gid}"), None, t())).await;
    assert_status(&res, StatusCode::NO_CONTENT, "delete group");
    let groups = body_json(app.send(api("GET", "/api/v1/groups", None, t())).await).await;
    assert!(!groups.to_string().contains("Operations"), "{groups}");

    // The dashboard, as the console shows it.
    let d = body_json(app.send(api("GET", "/api/v1/dashboard", None, t())).await).await;
    assert!(d["users"].as_i64().unwrap() >= 2, "{d}");

    // A password change: wrong current password names the field.
    let res = app
        .send(api(
            "POST",
            "/api/v1/me/password",
            Some(json!({"current_password": "nope", "new_password": "A-New-Secret-9", "confirm_password": "A-New-Secret-9"})),
            t(),
        ))
        .await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "wrong current password");
    assert_eq!(body_json(res).await["fields"][0]["field"], "current_password");
    let res = app
        .send(api(
            "POST",
            "/api/v1/me/password",
            Some(json!({"current_password": ADMIN_PASSWORD, "new_password": "A-New-Secret-9", "confirm_password": "A-New-Secret-9"})),
            t(),
        ))
        .await;
    assert_status(&res, StatusCode::NO_CONTENT, "password changed");
    assert!(app.login("admin", "A-New-Secret-9").await.1.is_some(), "the new password signs in");
    assert!(app.login("admin", ADMIN_PASSWORD).await.1.is_none(), "the old one does not");
}

#[tokio::test]
async fn logs_filter_page_and_export_over_rest() {
    let app = TestApp::new().await;
    let token = app.token("admin", ADMIN_PASSWORD).await;
    let t = || Auth::Bearer(&token);
    app.user("=cmd", Role::User).await;
    for _ in 0..3 {
        app.login("=cmd", "wrong-password").await;
    }
    app.login("admin", ADMIN_PASSWORD).await;

    let get = |path: String| {
        let app = &app;
        let token = token.clone();
        async move { app.send(api("GET", &path, None, Auth::Bearer(&token))).await }
    };
    // An HTTP Basic sign-in (logged as `rest-basic`): the `basic` filter and the chart find it.
    let basic = bindery_store::NewLoginEvent {
        at: bindery_service::util::now_ms(),
        username: "basic-user",
        ip: "::1",
        user_agent: "curl",
        success: true,
        reason: "",
        method: "rest-basic",
    };
    app.db.store.insert_login_event(&basic).await.unwrap();
    let by_basic = body_json(get("/api/v1/logs/login?method=basic".into()).await).await;
    assert_eq!((by_basic["total"].as_i64(), by_basic["items"][0]["username"].as_str()), (Some(1), Some("basic-user")), "{by_basic}");
    let failures = body_json(get("/api/v1/logs/login?result=failure&user=%3DCMD&method=web".into()).await).await;
    assert_eq!(failures["total"], 3, "{failures}");
    let today = bindery_service::util::fmt_ts(bindery_service::util::now_ms())[..10].to_string();
    let page = body_json(get(format!("/api/v1/logs/login?from={today}&to={today}&per_page=2&page=2")).await).await;
    assert!(page["total"].as_i64().unwrap() >= 4 && page["items"].as_array().unwrap().len() == 2, "{page}");
    let none = body_json(get("/api/v1/logs/login?to=2000-01-01".into()).await).await;
    assert_eq!(none["total"], 0);

    // The Dashboard's charts count them, by method and result.
    let d = body_json(get("/api/v1/dashboard".into()).await).await;
    let hours = d["activity_hours"].as_array().unwrap();
    assert_eq!((hours.len(), d["activity_days"].as_array().unwrap().len()), (24, 30));
    let now = &hours[23];
    assert!(now["failed"].as_i64().unwrap() >= 3 && now["web"].as_i64().unwrap() >= 2, "{now}");
    assert_eq!(now["basic"], 1, "HTTP Basic counted as Basic, not web: {now}");
    assert_eq!(d["activity_days"][29]["failed"], now["failed"], "today holds this hour");

    // Bad filters: 422 naming each.
    let res = get("/api/v1/logs/login?from=yesterday&result=maybe&method=ftp".into()).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "bad filters");
    let fields = body_json(res).await["fields"].to_string();
    for f in ["from", "result", "method"] {
        assert!(fields.contains(&format!("\"{f}\"")), "{f} in {fields}");
    }
    let res = get("/api/v1/logs/operations?result=success".into()).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "the operation log has no result");

    // CSV: every matching row, formula-safe.
    let res = get("/api/v1/logs/login.csv?result=failure".into()).await;
    assert_status(&res, StatusCode::OK, "login csv");
    assert!(res.headers()["content-disposition"].to_str().unwrap().contains("bindery-login-log.csv"));
    let csv = body_text(res).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "time,username,result,method,ip,user_agent,reason");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1..].iter().all(|l| l.contains(",'=cmd,failure,web,")), "a formula is neutralised: {csv}");

    let ops = body_text(get("/api/v1/logs/operations.csv?action=user.".into()).await).await;
    assert!(ops.starts_with("time,actor,action,target,before,after,ip") && ops.contains("user.create"), "{ops}");
    // Readers only: a plain user is refused.
    let (_, pw) = app.user("reader-less", Role::User).await;
    let user = app.session("reader-less", &pw).await;
    assert_status(&app.send(api("GET", "/api/v1/logs/login", None, Auth::Cookie(&user))).await, StatusCode::FORBIDDEN, "a user");
    assert_status(&app.send(api("GET", "/api/v1/logs/login", None, t())).await, StatusCode::OK, "the admin");
}

/// The daily retention task deletes what is older than the setting, in
/// both logs, and records that it did.
#[tokio::test]
async fn log_retention_deletes_old_entries() {
    let app = TestApp::new().await;
    let now = bindery_service::util::now_ms();
    let day = 86_400_000;
    for (at, name) in [(now - 40 * day, "old"), (now - 10 * day, "recent")] {
        app.db
            .store
            .insert_login_event(&bindery_store::NewLoginEvent {
                at,
                username: name,
                ip: "::1",
                user_agent: "t",
                success: true,
                reason: "",
                method: "web",
            })
            .await
            .unwrap();
    }
    let mut s = app.service.get_basic_settings(&admin_actor()).await.unwrap();
    s.log_retention_days = 30;
    app.service.update_basic_settings(&admin_actor(), s).await.unwrap();
    let (logins, _) = app.service.purge_old_logs().await.unwrap();
    assert_eq!(logins, 1);
    let left = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(left.items.iter().any(|e| e.username == "recent") && !left.items.iter().any(|e| e.username == "old"));
    let ops = app.service.operation_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(ops.items.iter().any(|o| o.action == "logs.purge"), "recorded");
}

/// A form posted without JavaScript gets its page back: a 303 to the page
/// it came from with the result sealed in a one-time cookie, which that
/// page shows once; a function's own redirect (sign-in) is left alone.
#[tokio::test]
async fn forms_without_javascript_get_their_page_back_with_the_result() {
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let post = |body: &str| {
        http::Request::builder()
            .method("POST")
            .uri("/rpc/save_basic_settings")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html,application/xhtml+xml")
            .header("host", "bindery.test")
            .header("referer", "http://bindery.test/settings/basic")
            .header("origin", "http://bindery.test")
            .header("cookie", format!("bindery_session={admin}"))
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let res =
        app.send(post("site_url=http%3A%2F%2Flocalhost&session_idle_minutes=lots&session_absolute_hours=12&log_retention_days=365")).await;
    assert_status(&res, StatusCode::SEE_OTHER, "a failed form");
    assert_eq!(location(&res), "/settings/basic");
    let flash = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("bindery_flash="))
        .expect("a flash cookie")
        .to_string();
    assert!(flash.contains("HttpOnly") && flash.contains("SameSite=Strict") && flash.contains("Max-Age=60"), "{flash}");
    assert!(!flash.contains("session_idle_minutes"), "sealed, not readable: {flash}");
    let value = flash.split(';').next().unwrap().to_string();

    let page = http::Request::builder()
        .uri("/settings/basic")
        .header("cookie", format!("bindery_session={admin}; {value}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.send(page).await;
    assert_status(&res, StatusCode::OK, "the page");
    let cleared = res.headers().get_all("set-cookie").iter().any(|v| v.to_str().unwrap_or("").starts_with("bindery_flash=;"));
    assert!(cleared, "shown once");
    let html = body_text(res).await;
    assert!(html.contains("data-testid=\"flash\"") && html.contains("session_idle_minutes"), "the field error is on the page");

    // Saved: the page says so; nothing is JSON.
    let res =
        app.send(post("site_url=http%3A%2F%2Flocalhost&session_idle_minutes=30&session_absolute_hours=12&log_retention_days=90")).await;
    assert_status(&res, StatusCode::SEE_OTHER, "a saved form");
    assert_eq!(app.service.get_basic_settings(&admin_actor()).await.unwrap().log_retention_days, 90);

    // A tampered cookie is ignored (and still cleared).
    let page = http::Request::builder()
        .uri("/settings/basic")
        .header("cookie", format!("bindery_session={admin}; bindery_flash=00ff"))
        .body(axum::body::Body::empty())
        .unwrap();
    let html = body_text(app.send(page).await).await;
    assert!(!html.contains("data-testid=\"flash\""), "no flash from a forged cookie");
}
