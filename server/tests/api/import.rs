//! The import table (issue 5): "Sync users" into the staging snapshot,
//! filters, per-row import outcomes, linking by the directory's immutable
//! id, CSV; cancel and a directory lost mid-enumeration.

use std::time::Duration;

use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, Role};
use http::StatusCode;

use crate::helpers::*;

async fn configure(app: &TestApp, d: &Slapd, page_size: i64) {
    let mut input = d.input();
    input.page_size = page_size;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
}

/// Poll the latest enumeration until `done(run)`.
async fn wait_run(app: &TestApp, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    for _ in 0..600 {
        let run = body_json(app.send(api("GET", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await).await;
        if done(&run) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the enumeration did not get there in 30 s");
}

async fn page(app: &TestApp, cookie: &str, query: &str) -> serde_json::Value {
    let res = app.send(api("GET", &format!("/api/v1/directories/ldap/users?{query}"), None, Auth::Cookie(cookie))).await;
    assert_status(&res, StatusCode::OK, query);
    body_json(res).await
}

fn row<'a>(p: &'a serde_json::Value, username: &str) -> &'a serde_json::Value {
    p["items"].as_array().unwrap().iter().find(|r| r["username"] == username).unwrap_or_else(|| panic!("{username} in {p}"))
}

async fn fetch(app: &TestApp, cookie: &str) -> serde_json::Value {
    let res = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "fetch started");
    let id = body_json(res).await["id"].clone();
    wait_run(app, |r| r["id"] == id && r["state"] != "running").await
}

#[tokio::test]
async fn sync_users_then_import_rows_each_with_its_outcome() {
    let d = Slapd::start();
    // Entries that hurt: an invalid email, a duplicate email, a username
    // differing only in case from another, a local user's name.
    let tech = format!("ou=tech,{}", d.base_dn);
    let people = format!("ou=people,{}", d.base_dn);
    for (uid, ou, mail) in [
        ("bademail", &tech, "not-an-email"),
        ("dup1", &tech, "dup@example.com"),
        ("dup2", &tech, "DUP@example.com"),
        ("TINA.X", &people, "x@example.com"),
        ("tina.x", &tech, "y@example.com"),
    ] {
        d.modify(&format!("dn: uid={uid},{ou}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: x\nmail: {mail}\nuserPassword: P-{uid}-1\n"));
    }
    let app = TestApp::new().await;
    let mut input = d.input();
    input.page_size = 3;
    input.group_mappings =
        vec![bindery_model::GroupMapping::parse_line(&format!("cn=developers,ou=groups,{} => auditor", d.base_dn)).unwrap()];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    app.user("tom", Role::User).await; // a local user named like a directory user
    let engineering =
        app.service.create_organisation(&admin_actor(), &bindery_model::OrganisationInput { name: "Engineering".into() }).await.unwrap().id;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;

    let run = fetch(&app, &cookie).await;
    assert_eq!((run["state"].as_str(), run["complete"].as_bool(), run["entries"].as_i64()), (Some("done"), Some(true), Some(13)), "{run}");
    assert!(run["pages"].as_i64().unwrap() >= 5, "paged with 3 per page: {run}");

    let all = page(&app, &cookie, "per_page=50").await;
    assert_eq!(all["total"], 13);
    let reason = |u: &str| row(&all, u)["problem"].as_str().unwrap().to_string();
    assert_eq!(row(&all, "bademail")["status"], "invalid");
    assert_eq!(reason("bademail"), "invalid email address");
    assert!(reason("dup1").contains("same email") && reason("dup2").contains("same email"));
    assert!(reason("tina.x").contains("same username") && reason("TINA.X").contains("same username"));
    assert_eq!(reason("tom"), "a local user has this username");
    assert_eq!(row(&all, "disabled")["status"], "disabled");
    assert_eq!(row(&all, "jdoe")["status"], "new");
    assert_eq!(row(&all, "jdoe")["groups"][0], "cn=admins,ou=groups,dc=example,dc=com");

    // Filters, search, sort and paging, served from the database.
    let new = page(&app, &cookie, "status=new&per_page=2&page=1&sort=email&desc=true").await;
    assert_eq!((new["total"].as_i64(), new["items"].as_array().unwrap().len()), (Some(6), 2), "{new}");
    assert_eq!(new["items"][0]["username"], "tina", "sorted by email, descending");
    assert_eq!(page(&app, &cookie, "q=%C3%A9lodie").await["total"], 1);
    assert_eq!(page(&app, &cookie, "q=%25").await["total"], 0, "search is literal");
    let bad = app.send(api("GET", "/api/v1/directories/ldap/users?status=gone&sort=x", None, Auth::Cookie(&cookie))).await;
    assert_status(&bad, StatusCode::UNPROCESSABLE_ENTITY, "bad filter named");

    // Import checked rows into Engineering: the good ones are created, each
    // bad one fails alone with its reason.
    let id = |u: &str| row(&all, u)["id"].as_i64().unwrap();
    let body =
        serde_json::json!({ "ids": [id("tina"), id("nomail"), id("bademail"), id("tom"), id("dup1")], "organisation_ids": [engineering] });
    let res = app.send(api("POST", "/api/v1/directories/ldap/users/import", Some(body), Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "import");
    let result = body_json(res).await;
    assert_eq!((result["created"].as_i64(), result["failed"].as_i64()), (Some(2), Some(3)), "{result}");
    let outcome = |u: &str| result["outcomes"].as_array().unwrap().iter().find(|o| o["username"] == u).unwrap().clone();
    assert_eq!(outcome("tina")["outcome"], "created");
    assert_eq!(outcome("tom")["reason"], "a local user has this username");
    assert_eq!(outcome("bademail")["reason"], "invalid email address");
    let tina = app.db.store.find_user("tina").await.unwrap().unwrap();
    assert_eq!((tina.source.as_str(), tina.password_hash.is_none()), ("ldap", true));
    assert_eq!(tina.role.as_str(), "auditor", "the group mapping applies at import");
    assert!(!tina.external_id.clone().unwrap().starts_with("dn:"), "linked by entryUUID: {:?}", tina.external_id);
    assert_eq!(app.db.store.organisations_of(&[tina.id]).await.unwrap()[0].name, "Engineering");
    let after = page(&app, &cookie, "q=tina&status=imported").await;
    assert_eq!(after["items"][0]["already_exists"], true);

    // Renamed in the directory: the same Bindery user, renamed at import.
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: modrdn\nnewrdn: uid=tina2\ndeleteoldrdn: 1\n"));
    fetch(&app, &cookie).await;
    let renamed = page(&app, &cookie, "q=tina2").await;
    assert_eq!((renamed["items"][0]["status"].as_str(), renamed["items"][0]["already_exists"].as_bool()), (Some("changed"), Some(true)));
    let body = serde_json::json!({ "all_matching": true, "status": "changed" });
    let result = body_json(app.send(api("POST", "/api/v1/directories/ldap/users/import", Some(body), Auth::Cookie(&cookie))).await).await;
    assert_eq!(result["updated"], 1, "{result}");
    assert_eq!(app.db.store.find_user("tina2").await.unwrap().unwrap().id, tina.id, "same user, new name");

    // Import all matching "new": the rest, into the default organisation.
    let result = body_json(
        app.send(api(
            "POST",
            "/api/v1/directories/ldap/users/import",
            Some(serde_json::json!({ "all_matching": true, "status": "new" })),
            Auth::Cookie(&cookie),
        ))
        .await,
    )
    .await;
    assert_eq!((result["created"].as_i64(), result["failed"].as_i64()), (Some(4), Some(0)), "{result}");

    // CSV of the table, formula-safe.
    let res = app.send(api("GET", "/api/v1/directories/ldap/users.csv?status=invalid", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "csv");
    assert!(res.headers()[http::header::CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    let csv = String::from_utf8(http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(csv.starts_with("status,username,name,email,groups,already_exists,dn,problem\r\n"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(csv.contains("invalid,bademail,bademail,not-an-email"));
}

#[tokio::test]
async fn an_enumeration_can_be_cancelled_and_a_lost_directory_is_reported_incomplete() {
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", "3000")]);
    let app = TestApp::new().await;
    configure(&app, &d, 2).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;

    let res = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "started");
    let again = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await;
    assert_status(&again, StatusCode::CONFLICT, "one enumeration at a time");
    wait_run(&app, |r| r["entries"].as_i64().unwrap_or(0) > 0).await;
    let res = app.send(api("DELETE", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::NO_CONTENT, "cancel");
    let run = wait_run(&app, |r| r["state"] != "running").await;
    assert_eq!((run["state"].as_str(), run["complete"].as_bool()), (Some("cancelled"), Some(false)), "{run}");
    assert!(run["entries"].as_i64().unwrap() < 3008, "stopped early: {run}");

    // The directory goes away mid-enumeration: failed, incomplete, and why.
    let res = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "started again");
    wait_run(&app, |r| r["state"] == "running" && r["entries"].as_i64().unwrap_or(0) > 0).await;
    d.stop();
    let run = wait_run(&app, |r| r["state"] != "running").await;
    assert_eq!((run["state"].as_str(), run["complete"].as_bool()), (Some("failed"), Some(false)), "{run}");
    assert!(run["error"].as_str().unwrap().contains("paged search"), "{run}");
}
