//! Security checklist items that each need a test able to fail (issue 15,
//! item 12): paging faults of a misbehaving directory (18, 19), an entry
//! without the username attribute (20), formula escaping in the CSV
//! exports, and the absolute session lifetime (13). Referrals (4) are in
//! the directory crate's tests; the crash mid-sync on PostgreSQL (21) is
//! in `sync.rs`.

use std::time::Duration;

use bindery_directory::testing::{plain_input, Slapd};
use bindery_ldap_responder::{Fault, Responder};
use bindery_model::{DirectoryKind, SyncSettings};
use bindery_store::Backend;
use http::StatusCode;

use crate::helpers::*;

async fn wait_json(app: &TestApp, cookie: &str, path: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..1200 {
        let v = body_json(app.send(api("GET", path, None, Auth::Cookie(cookie))).await).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} did not get there in 60 s");
}

/// "Sync now" and wait for the run to end; the run with its items.
async fn sync(app: &TestApp, cookie: &str) -> serde_json::Value {
    let res = app.send(api("POST", "/api/v1/directories/ldap/sync", Some(serde_json::json!({})), Auth::Cookie(cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "sync started");
    let id = body_json(res).await["id"].as_i64().unwrap();
    wait_json(app, cookie, &format!("/api/v1/sync/runs/{id}?per_page=200"), |d| d["run"]["state"] != "running").await
}

/// "Sync users" into the import table and wait for it to end.
async fn fetch(app: &TestApp, cookie: &str) -> serde_json::Value {
    let res = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "fetch started");
    let id = body_json(res).await["id"].clone();
    wait_json(app, cookie, "/api/v1/directories/ldap/users/fetch", |r| r["id"] == id && r["state"] != "running").await
}

fn items<'a>(detail: &'a serde_json::Value, action: &str) -> Vec<&'a serde_json::Value> {
    detail["items"]["items"].as_array().unwrap().iter().filter(|i| i["action"] == action).collect()
}

// ----- 18 and 19: paging faults disable nobody ------------------------------

/// A directory that gets paging wrong (the test kit's responder): the
/// import table's enumeration and a sync both end incomplete with the
/// reason, and the sync — with disabling on and no threshold — disables
/// none of the users the faulty answers left out.
#[tokio::test]
async fn paging_faults_are_incomplete_runs_that_disable_nobody() {
    const BASE: &str = "dc=example,dc=com";
    let r = Responder::with_users(&format!("ou=people,{BASE}"), 5).await;
    let options = bindery_service::Options { min_failure_delay: MIN_FAILURE_DELAY, max_enumeration_pages: 20, ..Default::default() };
    let app = TestApp::with_options(Backend::Sqlite, options).await;
    let input = plain_input(&r.url, BASE); // 2 entries per page
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let settings = SyncSettings { disable_missing: true, threshold_percent: 100, ..Default::default() };
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &settings).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;

    // Honest paging first: all five users exist in Bindery.
    let first = sync(&app, &cookie).await;
    assert_eq!((first["run"]["state"].as_str(), first["run"]["counts"]["create"].as_i64()), (Some("done"), Some(5)), "{first}");

    for (fault, reason) in [
        (Fault::RepeatCookie, "repeated its cookie"),
        (Fault::IgnorePaging, "ignored the paged-results control"),
        (Fault::SizeLimit, "size limit exceeded (LDAP 4)"),
        (Fault::EndlessPages, "still not finished after 20 pages: cut off"),
    ] {
        r.set_fault(fault);
        let run = fetch(&app, &cookie).await;
        assert_eq!((run["state"].as_str(), run["complete"].as_bool()), (Some("failed"), Some(false)), "{fault:?}: {run}");
        assert!(run["error"].as_str().unwrap().contains(reason), "{fault:?}: {run}");

        let detail = sync(&app, &cookie).await;
        let run = &detail["run"];
        assert_eq!(run["counts"]["disable"], 0, "{fault:?}: {run}");
        assert!(items(&detail, "disable").is_empty(), "{fault:?}: {detail}");
        assert_eq!((run["state"].as_str(), run["complete"].as_bool()), (Some("failed"), Some(false)), "{fault:?}: {run}");
        assert!(run["error"].as_str().unwrap().contains(reason), "{fault:?}: {run}");
        assert!(run["counts"]["notes"].to_string().contains("nobody was disabled: the enumeration was incomplete"), "{fault:?}: {run}");
        let (users, active) = app.db.store.count_users().await.unwrap();
        assert_eq!((users, active), (6, 6), "{fault:?}: admin and the five users, all still active");
    }

    // Honest again: a complete run, and still nobody to disable.
    r.set_fault(Fault::None);
    let all = sync(&app, &cookie).await;
    assert_eq!((all["run"]["state"].as_str(), all["run"]["counts"]["disable"].as_i64()), (Some("done"), Some(0)), "{all}");
}

// ----- 20: an entry without the username attribute --------------------------

/// Two entries lack `uid` (the username attribute) but match the filter:
/// each fails alone with its reason, in the import table, at import and in
/// a sync; every other entry is imported.
#[tokio::test]
async fn an_entry_without_the_username_attribute_fails_alone_with_its_reason() {
    let d = Slapd::start();
    let tech = format!("ou=tech,{}", d.base_dn);
    for n in [1, 2] {
        d.modify(&format!(
            "dn: employeeNumber={n},{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nemployeeNumber: {n}\ncn: No Username {n}\nsn: x\nmail: nouid{n}@example.com\n"
        ));
    }
    let app = TestApp::new().await;
    let mut input = d.input();
    input.search_filter = "(&(objectClass=inetOrgPerson)(|(uid=%(user)s)(cn=%(user)s)))".into();
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let reason = "no value for the username attribute";

    // The import table.
    let run = fetch(&app, &cookie).await;
    assert_eq!((run["state"].as_str(), run["entries"].as_i64()), (Some("done"), Some(10)), "{run}");
    let res = app.send(api("GET", "/api/v1/directories/ldap/users?status=invalid&per_page=50", None, Auth::Cookie(&cookie))).await;
    let invalid = body_json(res).await;
    let rows = invalid["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{invalid}");
    for row in rows {
        assert_eq!((row["username"].as_str(), row["problem"].as_str()), (Some(""), Some(reason)), "{row}");
        assert!(row["dn"].as_str().unwrap().starts_with("employeeNumber="), "{row}");
    }

    // Import all: those two fail, with the reason, under their DN; the rest are created.
    let body = serde_json::json!({ "all_matching": true });
    let result = body_json(app.send(api("POST", "/api/v1/directories/ldap/users/import", Some(body), Auth::Cookie(&cookie))).await).await;
    let outcomes = result["outcomes"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = outcomes.iter().filter(|o| o["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{result}");
    for o in &failed {
        assert_eq!(o["reason"], reason, "{o}");
        assert!(o["username"].as_str().unwrap().starts_with("employeeNumber="), "{o}");
    }
    assert_eq!(result["created"], 8, "every other entry, the disabled one too: {result}");

    // A sync: the same two fail alone; the run completes.
    let detail = sync(&app, &cookie).await;
    assert_eq!((detail["run"]["state"].as_str(), detail["run"]["complete"].as_bool()), (Some("done"), Some(true)), "{detail}");
    let failed = items(&detail, "failed");
    assert_eq!(failed.len(), 2, "{detail}");
    for i in &failed {
        assert_eq!((i["reason"].as_str(), i["outcome"].as_str()), (Some(reason), Some("failed")), "{i}");
    }
    assert_eq!(detail["run"]["counts"]["failed"], 2, "{detail}");
    assert!(app.db.store.find_user("").await.unwrap().is_none(), "no user without a name");
}

// ----- CSV exports: formula escaping -----------------------------------------

/// Split RFC 4180 CSV into rows of fields.
fn parse_csv(csv: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = csv.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// Names and usernames that a spreadsheet would run as formulas (`=`, `+`,
/// `-`, `@`, and a leading tab or carriage return) are neutralised with a
/// leading `'` in the import table's CSV and in the sync report's CSV.
#[tokio::test]
async fn csv_exports_neutralise_formulas() {
    use base64::Engine;
    let d = Slapd::start();
    let tech = format!("ou=tech,{}", d.base_dn);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let entries = [
        ("=cmd", "=HYPERLINK(\"http://evil.example\",\"x\")"),
        ("+cmd", "+1+1"),
        ("-cmd", "-1+1"),
        ("@cmd", "@SUM(1)"),
        ("tabname", "\t=1+1"),
        ("crname", "\r=1+1"),
    ];
    for (n, (uid, cn)) in entries.iter().enumerate() {
        d.modify(&format!(
            "dn: employeeNumber={n},{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nemployeeNumber: {n}\nuid:: {}\ncn:: {}\nsn: x\nmail: f{n}@example.com\n",
            b64(uid),
            b64(cn)
        ));
    }
    let app = TestApp::new().await;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &d.input()).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let formula = |f: &str| f.starts_with(['=', '+', '-', '@', '\t', '\r']);

    // The import table's CSV.
    assert_eq!(fetch(&app, &cookie).await["state"], "done");
    let res = app.send(api("GET", "/api/v1/directories/ldap/users.csv", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "import table csv");
    let csv = body_text(res).await;
    let rows = parse_csv(&csv);
    assert_eq!(rows[0], ["status", "username", "name", "email", "groups", "already_exists", "dn", "problem"], "{csv}");
    for (uid, cn) in entries {
        let row = rows.iter().find(|r| r[1].trim_start_matches('\'') == uid).unwrap_or_else(|| panic!("{uid:?} in {csv:?}"));
        assert_eq!(row[2], format!("'{cn}"), "the name of {uid:?}: {csv:?}");
        if formula(uid) {
            assert_eq!(row[1], format!("'{uid}"), "{csv:?}");
        }
    }
    let live: Vec<&String> = rows.iter().flatten().filter(|f| formula(f)).collect();
    assert!(live.is_empty(), "fields a spreadsheet would run: {live:?}\n{csv:?}");

    // The sync report's CSV: the usernames of the created users.
    let detail = sync(&app, &cookie).await;
    assert_eq!(detail["run"]["state"], "done", "{detail}");
    let id = detail["run"]["id"].as_i64().unwrap();
    let res = app.send(api("GET", &format!("/api/v1/sync/runs/{id}/report.csv"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "sync report csv");
    let csv = body_text(res).await;
    let rows = parse_csv(&csv);
    for (uid, _) in entries.iter().filter(|(u, _)| formula(u)) {
        assert!(rows.iter().any(|r| r[0] == "create" && r[1] == format!("'{uid}")), "{uid:?} neutralised: {csv:?}");
    }
    let live: Vec<&String> = rows.iter().flatten().filter(|f| formula(f)).collect();
    assert!(live.is_empty(), "fields a spreadsheet would run: {live:?}\n{csv:?}");
}

// ----- 13: the absolute session lifetime ------------------------------------

/// Move a session's creation time (the clock, seen from the session).
async fn created_at(app: &TestApp, cookie: &str, at: i64) {
    let hash = bindery_service::util::token_hash(cookie);
    let r = sqlx::query("UPDATE sessions SET created_at = $1 WHERE token_hash = $2")
        .bind(at)
        .bind(hash)
        .execute(app.db.store.pool())
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 1, "the session exists");
}

/// A session in continuous use is still refused once it is older than the
/// absolute lifetime (Settings → Basic), and removed; just inside the
/// lifetime it works.
#[tokio::test]
async fn a_session_older_than_the_absolute_lifetime_is_refused_even_in_continuous_use() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::with_backend(backend).await;
        let mut basic = app.service.basic_settings().await.unwrap();
        basic.session_absolute_hours = 2;
        basic.session_idle_minutes = 30;
        app.service.update_basic_settings(&admin_actor(), basic).await.unwrap();
        let cookie = app.session("admin", ADMIN_PASSWORD).await;
        let me = || app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie)));
        let hash = bindery_service::util::token_hash(&cookie);
        let lifetime = 2 * 3_600_000;

        // One minute left: works, and every use keeps it from idling out.
        created_at(&app, &cookie, bindery_service::util::now_ms() - lifetime + 60_000).await;
        for _ in 0..3 {
            assert_status(&me().await, StatusCode::OK, &format!("{backend:?}: inside the lifetime"));
            app.db.store.touch_session(&hash, bindery_service::util::now_ms()).await.unwrap();
        }
        // A second past it, though used a moment ago: refused, and gone.
        created_at(&app, &cookie, bindery_service::util::now_ms() - lifetime - 1000).await;
        app.db.store.touch_session(&hash, bindery_service::util::now_ms()).await.unwrap();
        assert_status(&me().await, StatusCode::UNAUTHORIZED, &format!("{backend:?}: past the absolute lifetime"));
        assert!(app.db.store.get_session(&hash).await.unwrap().is_none(), "{backend:?}: the session row is removed");
    }
}
