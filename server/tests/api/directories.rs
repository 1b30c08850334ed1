//! Directory settings over REST against a real slapd: validation, the
//! write-only and encrypted bind password, re-entry when servers change,
//! connection and login tests (security checklist items 1, 11, 12).

use bindery_directory::testing::Slapd;
use http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn body(d: &Slapd) -> Value {
    let i = d.input();
    serde_json::to_value(&i).unwrap()
}

#[tokio::test]
async fn settings_are_validated_saved_and_the_password_stays_secret() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let c = || Auth::Cookie(&admin);

    // Invalid: every bad field named, nothing saved.
    let bad = json!({"server_uris": ["http://x", "ldap://:0"], "bind_dn": "nonsense", "bind_password": "pw", "search_ous": "dc=,",
        "search_filter": "(uid=jdoe)", "attr_map": "{\"name\":\"cn\"}", "page_size": 0, "connect_timeout_secs": 100});
    let res = app.send(api("PUT", "/api/v1/directories/ldap", Some(bad), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let errs = body_json(res).await;
    let fields: Vec<&str> = errs["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    for f in ["server_uris", "bind_dn", "search_ous", "search_filter", "attr_map", "page_size", "connect_timeout_secs"] {
        assert!(fields.contains(&f), "{f} not named: {errs}");
    }
    assert!(app.db.store.get_directory("ldap").await.unwrap().is_none(), "nothing saved");

    // Valid: saved; the password is never returned and is encrypted at rest.
    let res = app.send(api("PUT", "/api/v1/directories/ldap", Some(body(&d)), c())).await;
    assert_status(&res, StatusCode::OK, "save");
    let saved = body_json(res).await;
    assert_eq!(saved["bind_password_set"], true);
    assert!(!saved.to_string().contains(&d.bind_password), "{saved}");
    let got = body_json(app.send(api("GET", "/api/v1/directories/ldap", None, c())).await).await;
    assert!(got.get("bind_password").is_none() && !got.to_string().contains(&d.bind_password));
    let row = app.db.store.get_directory("ldap").await.unwrap().unwrap();
    assert!(!row.settings_json.contains(&d.bind_password));
    let enc = row.bind_password_enc.clone().unwrap();
    assert!(!enc.contains(&d.bind_password) && enc.len() > 40, "{enc}");
    assert!(!format!("{row:?}").contains(&enc), "Debug hides the ciphertext too");

    // Test the stored configuration (no body): the stored password is used.
    let res = app.send(api("POST", "/api/v1/directories/ldap/verify_connection", None, c())).await;
    let report = body_json(res).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["user_count"], 8);

    // Saving again without a password keeps it while the servers are the same …
    let mut same = body(&d);
    same["bind_password"] = Value::Null;
    same["page_size"] = json!(500);
    assert_status(&app.send(api("PUT", "/api/v1/directories/ldap", Some(same.clone()), c())).await, StatusCode::OK, "keep");
    assert!(app.db.store.get_directory("ldap").await.unwrap().unwrap().bind_password_enc.is_some());

    // … but another server requires re-entering it: never sent to a new host.
    let mut moved = same.clone();
    moved["server_uris"] = json!([d.ldaps_url]);
    let res = app.send(api("PUT", "/api/v1/directories/ldap", Some(moved.clone()), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "moved");
    assert_eq!(body_json(res).await["fields"][0]["field"], "bind_password");
    let res = app.send(api("POST", "/api/v1/directories/ldap/verify_connection", Some(moved.clone()), c())).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "test with a new host and no password");
    let kept: Value = serde_json::from_str(&app.db.store.get_directory("ldap").await.unwrap().unwrap().settings_json).unwrap();
    assert_eq!(kept["server_uris"], json!([d.ldap_url]), "nothing saved");
    moved["bind_password"] = json!(d.bind_password);
    assert_status(&app.send(api("PUT", "/api/v1/directories/ldap", Some(moved), c())).await, StatusCode::OK, "re-entered");

    // No secret in the operation log.
    let ops = app.service.operation_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(ops.items.iter().any(|o| o.action == "directory.update"));
    assert!(ops.items.iter().all(|o| !format!("{o:?}").contains(&d.bind_password)));
}

#[tokio::test]
async fn test_login_over_rest_counts_toward_no_lockout() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let c = || Auth::Cookie(&admin);
    assert_status(&app.send(api("PUT", "/api/v1/directories/ldap_ha", Some(body(&d)), c())).await, StatusCode::OK, "save");
    for _ in 0..6 {
        let r = body_json(
            app.send(api("POST", "/api/v1/directories/ldap_ha/test_login", Some(json!({"username": "jdoe", "password": "wrong"})), c()))
                .await,
        )
        .await;
        assert_eq!(r["allowed"], false);
    }
    let r = body_json(
        app.send(api(
            "POST",
            "/api/v1/directories/ldap_ha/test_login",
            Some(json!({"username": "locked", "password": "Locked-Password-1"})),
            c(),
        ))
        .await,
    )
    .await;
    assert_eq!(r["account_state"], "locked", "{r}");
    let r = body_json(
        app.send(api(
            "POST",
            "/api/v1/directories/ldap_ha/test_login",
            Some(json!({"username": "tina", "password": "Tina-Password-1"})),
            c(),
        ))
        .await,
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(app.service.list_lockouts(&admin_actor()).await.unwrap().is_empty(), "test logins lock nobody in Bindery");
    let log = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(log.items.iter().all(|e| e.username != "jdoe"), "test logins are not logins");
    // Unknown configuration name.
    assert_status(&app.send(api("GET", "/api/v1/directories/ldap3", None, c())).await, StatusCode::NOT_FOUND, "unknown kind");
}
