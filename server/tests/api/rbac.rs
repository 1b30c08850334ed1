//! Every server function and REST endpoint checks the caller's role
//! (security checklist item 14): anonymous → 401, plain user → 403, and
//! auditors may read but not change.

use std::collections::BTreeSet;

use bindery_model::Role;
use http::StatusCode;

use crate::helpers::*;

/// Every server function with a valid body. `public` ones need no sign-in.
/// The test fails when a server function exists that is not listed here,
/// so a new one cannot skip this check.
const SERVER_FNS: &[(&str, &str, Access)] = &[
    ("login", "username=x&password=y", Access::Public),
    ("logout", "", Access::Public),
    ("current_user", "", Access::Public),
    ("change_password", "current_password=a&new_password=b&confirm_password=b", Access::AnyUser),
    ("dashboard", "", Access::Read),
    ("login_log", "", Access::Read),
    ("operation_log", "", Access::Read),
    ("list_users", "", Access::Read),
    ("get_user", "id=1", Access::Read),
    ("explain_access", "id=1", Access::Read),
    ("relink_user", "id=1", Access::Write),
    ("directory_health", "", Access::Read),
    ("user_fetch_status", "kind=ldap", Access::Read),
    ("list_staged_users", "kind=ldap", Access::Read),
    ("start_user_fetch", "kind=ldap", Access::Write),
    ("cancel_user_fetch", "kind=ldap", Access::Write),
    ("import_users", "kind=ldap&ids[1]=on", Access::Write),
    ("sync_settings", "kind=ldap", Access::Read),
    ("save_sync_settings", "kind=ldap&crontab=&interval_hours=&recipients=&threshold_percent=10", Access::Write),
    ("start_sync", "kind=ldap", Access::Write),
    ("list_sync_runs", "", Access::Read),
    ("sync_run", "id=1", Access::Read),
    ("approve_sync", "id=1", Access::Write),
    ("reject_sync", "id=1", Access::Write),
    ("list_organisations", "", Access::Read),
    ("list_groups", "", Access::Read),
    ("basic_settings", "", Access::Read),
    ("security_settings", "", Access::Read),
    ("list_lockouts", "", Access::Read),
    ("list_tokens", "", Access::Read),
    ("get_directory", "kind=ldap", Access::Read),
    ("save_directory", "kind=ldap&form[bind_dn]=cn%3Dx", Access::Write),
    ("test_directory", "kind=ldap&form[bind_dn]=cn%3Dx", Access::Write),
    ("test_directory_login", "kind=ldap&form[bind_dn]=cn%3Dx&test_username=u&test_password=p", Access::Write),
    ("fetch_directory_certificates", "kind=ldap&form[bind_dn]=cn%3Dx", Access::Write),
    ("create_user", "username=zz&name=&email=&role=admin&password=Zz-Secret-123", Access::Write),
    ("update_user", "id=1&name=x&email=&role=admin", Access::Write),
    ("set_user_active", "id=1&active=false", Access::Write),
    ("reset_password", "id=1", Access::Write),
    ("delete_user", "id=1", Access::Write),
    ("create_organisation", "name=x", Access::Write),
    ("rename_organisation", "id=1&name=x", Access::Write),
    ("delete_organisation", "id=1", Access::Write),
    ("save_group", "name=g&description=&members=", Access::Write),
    ("delete_group", "id=1", Access::Write),
    ("save_basic_settings", "site_url=http%3A%2F%2Fx&session_idle_minutes=1&session_absolute_hours=1&log_retention_days=1", Access::Write),
    (
        "save_security_settings",
        "lockout_max_failures=1&lockout_window_minutes=1&min_password_length=8&bearer_token_minutes=5&revalidate_minutes=5",
        Access::Write,
    ),
    ("unlock", "key=user%3Aadmin", Access::Write),
    ("create_token", "name=t&username=&expires_in_days=", Access::Write),
    ("revoke_token", "id=1", Access::Write),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Public,
    AnyUser,
    Read,
    Write,
}

#[tokio::test]
async fn every_server_function_is_listed() {
    let registered: BTreeSet<String> =
        leptos::server_fn::axum::server_fn_paths().map(|(p, _)| p.trim_start_matches("/rpc/").to_string()).collect();
    let listed: BTreeSet<String> = SERVER_FNS.iter().map(|(n, ..)| n.to_string()).collect();
    assert_eq!(registered, listed, "server functions and this test's table differ");
}

#[tokio::test]
async fn server_functions_refuse_callers_without_the_role() {
    let app = TestApp::new().await;
    let (_, upw) = app.user("plain", Role::User).await;
    let (_, apw) = app.user("auditor", Role::Auditor).await;
    let user = app.session("plain", &upw).await;
    let auditor = app.session("auditor", &apw).await;
    // Sync run 1 exists, so reading it answers 200.
    let run = app.db.store.start_run("ldap", bindery_model::RunKind::Sync, "admin", true, 0).await.unwrap();
    app.db.store.finish_run(run, bindery_model::RunState::Done, true, "", "{}", 0).await.unwrap();
    for (name, body, access) in SERVER_FNS {
        let path = format!("/rpc/{name}");
        if *access != Access::Public {
            let res = app.send(rpc(&path, body, None)).await;
            assert_status(&res, StatusCode::UNAUTHORIZED, &format!("anonymous {name}"));
        }
        if matches!(access, Access::Read | Access::Write) {
            let res = app.send(rpc(&path, body, Some(&user))).await;
            assert_status(&res, StatusCode::FORBIDDEN, &format!("plain user {name}"));
        }
        if *access == Access::Write {
            let res = app.send(rpc(&path, body, Some(&auditor))).await;
            assert_status(&res, StatusCode::FORBIDDEN, &format!("auditor {name}"));
        }
        if *access == Access::Read {
            let res = app.send(rpc(&path, body, Some(&auditor))).await;
            assert_status(&res, StatusCode::OK, &format!("auditor reads {name}"));
        }
    }
    // Nothing changed: admin is still admin, still active, settings untouched.
    let admin = app.db.store.get_user(1).await.unwrap().unwrap();
    assert_eq!((admin.role.as_str(), admin.is_active), ("admin", true));
    assert!(app.db.store.find_user("zz").await.unwrap().is_none());
    assert_eq!(app.service.security_settings().await.unwrap(), Default::default());
}

/// Every REST operation, as the OpenAPI document names it.
const REST: &[(&str, &str, Access)] = &[
    ("get", "/api/v1/me", Access::AnyUser),
    ("get", "/api/v1/users", Access::Read),
    ("post", "/api/v1/users", Access::Write),
    ("get", "/api/v1/users/{id}", Access::Read),
    ("patch", "/api/v1/users/{id}", Access::Write),
    ("delete", "/api/v1/users/{id}", Access::Write),
    ("post", "/api/v1/users/{id}/reset_password", Access::Write),
    ("get", "/api/v1/users/{id}/explain_access", Access::Read),
    ("post", "/api/v1/users/{id}/relink", Access::Write),
    ("get", "/api/v1/directories/health", Access::Read),
    ("get", "/api/v1/directories/{kind}/users", Access::Read),
    ("get", "/api/v1/directories/{kind}/users.csv", Access::Read),
    ("get", "/api/v1/directories/{kind}/users/fetch", Access::Read),
    ("post", "/api/v1/directories/{kind}/users/fetch", Access::Write),
    ("delete", "/api/v1/directories/{kind}/users/fetch", Access::Write),
    ("post", "/api/v1/directories/{kind}/users/import", Access::Write),
    ("get", "/api/v1/directories/{kind}/sync/settings", Access::Read),
    ("put", "/api/v1/directories/{kind}/sync/settings", Access::Write),
    ("post", "/api/v1/directories/{kind}/sync", Access::Write),
    ("get", "/api/v1/directories/{kind}/sync/live", Access::Read),
    ("get", "/api/v1/sync/runs", Access::Read),
    ("get", "/api/v1/sync/runs/{id}", Access::Read),
    ("get", "/api/v1/sync/runs/{id}/report.csv", Access::Read),
    ("post", "/api/v1/sync/runs/{id}/approve", Access::Write),
    ("post", "/api/v1/sync/runs/{id}/reject", Access::Write),
    ("post", "/api/v1/sync/runs/{id}/cancel", Access::Write),
    ("get", "/api/v1/organisations", Access::Read),
    ("post", "/api/v1/organisations", Access::Write),
    ("patch", "/api/v1/organisations/{id}", Access::Write),
    ("delete", "/api/v1/organisations/{id}", Access::Write),
    ("get", "/api/v1/groups", Access::Read),
    ("post", "/api/v1/groups", Access::Write),
    ("put", "/api/v1/groups/{id}", Access::Write),
    ("delete", "/api/v1/groups/{id}", Access::Write),
    ("get", "/api/v1/dashboard", Access::Read),
    ("get", "/api/v1/logs/login", Access::Read),
    ("get", "/api/v1/logs/login.csv", Access::Read),
    ("get", "/api/v1/logs/operations", Access::Read),
    ("get", "/api/v1/logs/operations.csv", Access::Read),
    ("get", "/api/v1/settings/basic", Access::Read),
    ("put", "/api/v1/settings/basic", Access::Write),
    ("post", "/api/v1/me/password", Access::AnyUser),
    ("get", "/api/v1/tokens", Access::Read),
    ("post", "/api/v1/tokens", Access::Write),
    ("delete", "/api/v1/tokens/{id}", Access::Write),
    ("get", "/api/v1/settings/security", Access::Read),
    ("put", "/api/v1/settings/security", Access::Write),
    ("get", "/api/v1/lockouts", Access::Read),
    ("delete", "/api/v1/lockouts/{key}", Access::Write),
    ("get", "/api/v1/directories", Access::Read),
    ("get", "/api/v1/directories/{kind}", Access::Read),
    ("put", "/api/v1/directories/{kind}", Access::Write),
    ("delete", "/api/v1/directories/{kind}", Access::Write),
    ("post", "/api/v1/directories/{kind}/verify_connection", Access::Write),
    ("post", "/api/v1/directories/{kind}/test_login", Access::Write),
    ("post", "/api/v1/directories/{kind}/fetch_certificates", Access::Write),
    // Public: they take credentials themselves, and refuse everything else.
    ("post", "/api/v1/authn/ldap/{username}/authenticate", Access::Public),
    ("get", "/api/v1/authn/ldap/login", Access::Public),
];

fn rest_body(method: &str, path: &str) -> Option<serde_json::Value> {
    match (method, path) {
        ("post", "/api/v1/users") => Some(serde_json::json!({"username": "zz", "password": "Zz-Secret-123", "role": "admin"})),
        ("patch", "/api/v1/users/{id}") => Some(serde_json::json!({"role": "user"})),
        ("post", "/api/v1/organisations") | ("patch", "/api/v1/organisations/{id}") => Some(serde_json::json!({"name": "x"})),
        ("post", "/api/v1/tokens") => Some(serde_json::json!({"name": "t"})),
        ("post", "/api/v1/groups") | ("put", "/api/v1/groups/{id}") => {
            Some(serde_json::json!({"name": "g", "description": "", "member_ids": []}))
        }
        ("put", "/api/v1/settings/basic") => Some(
            serde_json::json!({"site_url": "http://x", "session_idle_minutes": 1, "session_absolute_hours": 1, "log_retention_days": 1}),
        ),
        ("post", "/api/v1/me/password") => {
            Some(serde_json::json!({"current_password": "x", "new_password": "Yy-Secret-123", "confirm_password": "Yy-Secret-123"}))
        }
        ("put", "/api/v1/directories/{kind}") => Some(serde_json::json!({"server_uris": ["ldap://127.0.0.1:1"], "search_ous": "dc=x"})),
        ("post", "/api/v1/directories/{kind}/test_login") => Some(serde_json::json!({"username": "x"})),
        ("post", "/api/v1/directories/{kind}/users/import") => Some(serde_json::json!({"ids": [1]})),
        ("put", "/api/v1/directories/{kind}/sync/settings") => Some(serde_json::json!({"disable_missing": true})),
        ("post", "/api/v1/directories/{kind}/sync") => Some(serde_json::json!({})),
        ("put", "/api/v1/settings/security") => {
            Some(serde_json::json!({"lockout_max_failures": 1, "lockout_window_minutes": 1, "min_password_length": 8}))
        }
        _ => None,
    }
}

#[tokio::test]
async fn rest_endpoints_refuse_callers_without_the_role() {
    let app = TestApp::new().await;
    let (_, upw) = app.user("plain", Role::User).await;
    let (aid, _) = app.user("auditor", Role::Auditor).await;
    let user = app.session("plain", &upw).await;
    let auditor_token = app
        .service
        .create_api_token(&admin_actor(), &bindery_model::NewApiToken { name: "audit".into(), user_id: Some(aid), expires_in_days: None })
        .await
        .unwrap()
        .secret;
    // The table covers exactly the operations of the OpenAPI document, so
    // a new endpoint cannot skip this test.
    let doc = body_json(app.send(api("GET", "/api/openapi.json", None, Auth::None)).await).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), p.clone())))
        .collect();
    let tabled: BTreeSet<(String, String)> = REST.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, tabled, "REST operations and this test's table differ");
    for (method, path, access) in REST {
        let body = rest_body(method, path);
        // Id 1 is the admin: a refused call must not touch them.
        let concrete = path.replace("{id}", "1").replace("{kind}", "ldap").replace("{username}", "admin").replace("{key}", "user%3Aadmin");
        let m = method.to_uppercase();
        let res = app.send(api(&m, &concrete, body.clone(), Auth::None)).await;
        assert_status(&res, StatusCode::UNAUTHORIZED, &format!("anonymous {m} {path}"));
        assert!(res.headers().contains_key(http::header::WWW_AUTHENTICATE));
        if matches!(access, Access::Read | Access::Write) {
            let res = app.send(api(&m, &concrete, body.clone(), Auth::Cookie(&user))).await;
            assert_status(&res, StatusCode::FORBIDDEN, &format!("plain user {m} {path}"));
        }
        if *access == Access::Write {
            let res = app.send(api(&m, &concrete, body.clone(), Auth::Bearer(&auditor_token))).await;
            assert_status(&res, StatusCode::FORBIDDEN, &format!("auditor {m} {path}"));
        }
    }
    assert!(app.db.store.find_user("zz").await.unwrap().is_none());
    let admin = app.db.store.get_user(1).await.unwrap().unwrap();
    assert_eq!((admin.role.as_str(), admin.is_active), ("admin", true));
}
