//! The REST API: validation naming fields, API tokens, OpenAPI, health,
//! metrics, and a real listening port. Also one pass on PostgreSQL.

use bindery_model::Role;
use bindery_store::Backend;
use http::StatusCode;
use serde_json::json;

use crate::helpers::*;

async fn admin_flow(app: &TestApp) {
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let c = || Auth::Cookie(&admin);
    // Invalid input: 422 naming each field; nothing saved.
    let res = app.send(api("POST", "/api/v1/users", Some(json!({"username": " bad", "password": "short", "email": "nope"})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "invalid user");
    let body = body_json(res).await;
    let fields: Vec<&str> = body["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    for f in ["username", "email", "password"] {
        assert!(fields.contains(&f), "{f} not named in {body}");
    }
    let res = app.send(api("POST", "/api/v1/users", Some(json!({"name": "no username"})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "missing field");
    assert_eq!(body_json(res).await["fields"][0]["field"], "username");
    let (_, total) = app.db.store.list_users(None, 10, 0).await.unwrap();
    assert_eq!(total, 1, "nothing saved");

    // Valid: created, listed, updated, case-insensitive duplicate refused.
    let res = app
        .send(api("POST", "/api/v1/users", Some(json!({"username": "Grace", "name": "Grace H", "email": "grace@example.com", "password": "Grace-Secret-1", "role": "auditor"})), c()))
        .await;
    assert_status(&res, StatusCode::CREATED, "create");
    let grace = body_json(res).await;
    assert_eq!(grace["organisations"][0]["name"], "Default");
    assert_eq!(grace["source"], "local");
    assert!(grace.get("password").is_none() && !grace.to_string().contains("argon2"), "{grace}");
    let res = app.send(api("POST", "/api/v1/users", Some(json!({"username": "GRACE", "password": "Grace-Secret-1"})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "duplicate");
    let list = body_json(app.send(api("GET", "/api/v1/users?q=grace", None, c())).await).await;
    assert_eq!(list["total"], 1);
    let id = grace["id"].as_i64().unwrap();
    let res = app.send(api("PATCH", &format!("/api/v1/users/{id}"), Some(json!({"email": "x"})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "bad email");
    let res = app.send(api("PATCH", "/api/v1/users/1", Some(json!({"is_active": false})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "cannot disable yourself");

    // Organisations.
    let res = app.send(api("POST", "/api/v1/organisations", Some(json!({"name": "Tech"})), c())).await;
    assert_status(&res, StatusCode::CREATED, "org");
    let res = app.send(api("POST", "/api/v1/organisations", Some(json!({"name": "tech"})), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "duplicate org");
    let res = app.send(api("DELETE", "/api/v1/organisations/1", None, c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "default org stays");

    // The operation log recorded who did what, without secrets.
    let ops = app.service.operation_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(ops.items.iter().any(|o| o.action == "user.create" && o.actor == "admin" && o.target == "user:Grace"));
    assert!(ops.items.iter().all(|o| !o.after.clone().unwrap_or_default().contains("Grace-Secret-1")));
}

#[tokio::test]
async fn users_and_organisations_over_rest_on_sqlite() {
    admin_flow(&TestApp::new().await).await;
}

#[tokio::test]
async fn users_and_organisations_over_rest_on_postgres() {
    admin_flow(&TestApp::with_backend(Backend::Postgres).await).await;
}

#[tokio::test]
async fn api_tokens_are_shown_once_stored_hashed_and_revocable() {
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let res = app.send(api("POST", "/api/v1/tokens", Some(json!({"name": "", "expires_in_days": 0})), Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "invalid token");
    let res = app.send(api("POST", "/api/v1/tokens", Some(json!({"name": "deploy"})), Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::CREATED, "token");
    let created = body_json(res).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("bdy_") && secret.len() > 60);
    let list = body_json(app.send(api("GET", "/api/v1/tokens", None, Auth::Bearer(&secret))).await).await;
    assert!(!list.to_string().contains(&secret), "secret never listed");
    let row = app.db.store.find_api_token(&bindery_service::util::token_hash(&secret)).await.unwrap();
    assert!(row.is_some(), "stored as its hash");
    let id = created["token"]["id"].as_i64().unwrap();
    assert_status(
        &app.send(api("DELETE", &format!("/api/v1/tokens/{id}"), None, Auth::Bearer(&secret))).await,
        StatusCode::NO_CONTENT,
        "revoke",
    );
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&secret))).await, StatusCode::UNAUTHORIZED, "revoked");
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer("bdy_forged"))).await, StatusCode::UNAUTHORIZED, "forged");
    let _ = Role::Admin;
}

#[tokio::test]
async fn openapi_health_and_metrics_on_a_real_port() {
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = client.get(format!("{base}/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    for p in ["/api/v1/users", "/api/v1/users/{id}", "/api/v1/organisations", "/api/v1/tokens", "/api/v1/me"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let r = client.get(format!("{base}/users")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bindery_http_requests_total{area=\"console\",method=\"GET\",status=\"303\"} 1"), "{metrics}");
    assert!(metrics.contains("bindery_http_request_duration_seconds_bucket"));
    // The login page renders on the server and loads the WASM bundle.
    let html = client.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("/pkg/bindery.js") && html.contains("Sign in to Bindery"), "{html}");
    server.abort();
}
