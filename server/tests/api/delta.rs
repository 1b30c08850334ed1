//! Delta sync (issue 17) against slapd with syncprov: Test connection
//! detects syncrepl; in delta mode the first run is a full enumeration that
//! records a cookie per search OU, later runs read only what changed
//! (add, modify, rename, disable, delete) through the same plan, threshold,
//! incomplete-run rule and dry-run; a stale cookie falls back to a full run.

use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, GroupMapping, Role, SyncMode, SyncSettings};
use bindery_store::Backend;
use http::StatusCode;

use crate::helpers::*;
use crate::sync::{items, names, sync, wait_sync};

fn delta(disable: bool, threshold: i64) -> SyncSettings {
    SyncSettings { disable_missing: disable, threshold_percent: threshold, mode: SyncMode::Delta, ..Default::default() }
}

/// Save the directory, run Test connection on the saved settings (which
/// detects the delta method), then save the sync settings.
async fn configure(app: &TestApp, d: &Slapd, settings: SyncSettings) {
    let mut input = d.input();
    input.page_size = 3;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let report = app.service.test_directory_connection(&admin_actor(), DirectoryKind::Ldap, None).await.unwrap();
    assert_eq!(report.delta.as_ref().map(|d| d.method.as_str()), Some("syncrepl"), "{report:#?}");
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &settings).await.unwrap();
}

fn notes(run: &serde_json::Value) -> String {
    run["run"]["counts"]["notes"].to_string()
}

async fn active(app: &TestApp, username: &str) -> bool {
    app.db.store.find_user(username).await.unwrap().unwrap_or_else(|| panic!("{username} exists")).is_active
}

/// The staged rows of the import table, without their ids, in a stable order.
async fn staged_rows(app: &TestApp) -> Vec<(String, String, String, String, Vec<String>, String, String)> {
    let page = app.service.list_staged_users(&admin_actor(), DirectoryKind::Ldap, None, None, None, false, 1, 500).await.unwrap();
    let mut rows: Vec<_> = page.items.into_iter().map(|r| (r.dn, r.username, r.name, r.email, r.groups, r.problem, r.status)).collect();
    rows.sort();
    rows
}

/// The Bindery users a directory made, as the rule left them.
async fn directory_users(app: &TestApp) -> Vec<(String, String, String, String, bool)> {
    let (users, _) = app.db.store.list_users(None, 1000, 0).await.unwrap();
    let mut out: Vec<_> = users
        .into_iter()
        .filter(|u| u.source.as_str() == "ldap")
        .map(|u| (u.username, u.name, u.email, u.role.as_str().to_string(), u.is_active))
        .collect();
    out.sort();
    out
}

/// A delta run picks up an add, a modify, a rename, a disable and a
/// delete; its dry run plans the same and applies nothing; the result is
/// what a first full sync of the resulting directory gives.
async fn a_delta_run_equals_a_full_sync(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    assert_eq!((first["run"]["kind"].as_str(), first["run"]["state"].as_str()), (Some("sync"), Some("done")), "{first}");
    assert!(notes(&first).contains("no complete full enumeration yet"), "{first}");
    assert!(notes(&first).contains("delta cookie recorded (syncrepl"), "{first}");

    let quiet = sync(&app, &cookie, false).await;
    assert_eq!(quiet["run"]["kind"], "delta", "{quiet}");
    assert_eq!(quiet["run"]["entries"], 0, "nothing changed, nothing read: {quiet}");
    let c = &quiet["run"]["counts"];
    assert_eq!((c["create"].as_i64(), c["update"].as_i64(), c["disable"].as_i64()), (Some(0), Some(0), Some(0)), "{quiet}");

    let people = format!("ou=people,{}", d.base_dn);
    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!(
        "dn: uid=newbie,{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: newbie\ncn: New Bie\nsn: Bie\nmail: newbie@example.com\n"
    ));
    d.modify(&format!("dn: uid=tom,{tech}\nchangetype: modify\nreplace: mail\nmail: thomas@example.com\n"));
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: modrdn\nnewrdn: uid=tina2\ndeleteoldrdn: 1\n"));
    d.modify(&format!("dn: uid=jdoe,{people}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"));
    d.modify(&format!("dn: uid=nomail,{people}\nchangetype: delete\n"));

    let dry = sync(&app, &cookie, true).await;
    assert_eq!((dry["run"]["kind"].as_str(), dry["run"]["state"].as_str()), (Some("delta"), Some("done")), "{dry}");
    assert_eq!(names(&items(&dry, "create")), ["newbie"], "{dry}");
    assert_eq!(names(&items(&dry, "disable")), ["jdoe", "nomail"], "{dry}");
    assert!(active(&app, "jdoe").await && active(&app, "nomail").await, "a dry run applies nothing");
    assert!(app.db.store.find_user("newbie").await.unwrap().is_none());

    let run = sync(&app, &cookie, false).await;
    assert_eq!((run["run"]["kind"].as_str(), run["run"]["state"].as_str()), (Some("delta"), Some("done")), "{run}");
    assert_eq!(names(&items(&run, "create")), ["newbie"], "{run}");
    assert_eq!(names(&items(&run, "disable")), ["jdoe", "nomail"], "{run}");
    assert_eq!(names(&items(&run, "update")), ["tina2", "tom"], "the rename and the modify: {run}");
    assert!(!active(&app, "jdoe").await && !active(&app, "nomail").await);
    assert_eq!(app.db.store.find_user("tina2").await.unwrap().expect("renamed, the same user").email, "tina@example.com");
    assert!(app.db.store.find_user("tina").await.unwrap().is_none(), "tina was renamed, not copied");

    let fresh = TestApp::with_backend(backend).await;
    let mut input = d.input();
    input.page_size = 3;
    fresh.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    fresh
        .service
        .save_sync_settings(
            &admin_actor(),
            DirectoryKind::Ldap,
            &SyncSettings { disable_missing: true, threshold_percent: 100, ..Default::default() },
        )
        .await
        .unwrap();
    let fresh_cookie = fresh.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&fresh, &fresh_cookie, false).await["run"]["state"], "done");
    assert_eq!(staged_rows(&app).await, staged_rows(&fresh).await, "the import table, row by row");
    let active_only = |v: Vec<(String, String, String, String, bool)>| v.into_iter().filter(|u| u.4).collect::<Vec<_>>();
    assert_eq!(active_only(directory_users(&app).await), active_only(directory_users(&fresh).await), "the active directory users");

    // The Sync runs list (REST) shows full and delta runs.
    let list = body_json(app.send(api("GET", "/api/v1/sync/runs", None, Auth::Cookie(&cookie))).await).await;
    let kinds: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["delta", "delta", "delta", "sync"], "{list}");
}

#[tokio::test]
async fn a_delta_run_picks_up_an_add_a_modify_a_rename_a_disable_and_a_delete() {
    a_delta_run_equals_a_full_sync(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_delta_run_picks_up_an_add_a_modify_a_rename_a_disable_and_a_delete_on_postgres() {
    a_delta_run_equals_a_full_sync(Backend::Postgres).await;
}

/// A delta run's plan reads only what may have changed: the entry the
/// directory changed, or the entry whose Bindery user changed (here,
/// deleted by an administrator, which the next run creates again), never
/// the rest of the snapshot. Editing the mapping plans every row again.
async fn a_delta_plan_reads_only_what_changed(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    let total = app.db.store.count_staged("ldap").await.unwrap();
    assert!(total > 5, "{total}");
    // A first sync creates its users page by page; its plan reads only the
    // rows the pages left (here one entry with a problem).
    let created = first["run"]["counts"]["create"].as_i64().unwrap();
    assert!(notes(&first).contains(&format!("first sync: {created} users were created page by page")), "{first}");
    assert!(notes(&first).contains(&format!("plan: {} of {total} rows planned again", total - created)), "{first}");

    let quiet = sync(&app, &cookie, false).await;
    assert!(notes(&quiet).contains(&format!("plan: 0 of {total} rows planned again")), "{quiet}");

    d.modify(&format!(
        "dn: uid=tom,ou=tech,{}
changetype: modify
replace: mail
mail: thomas@example.com
",
        d.base_dn
    ));
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["kind"], "delta", "{run}");
    assert!(notes(&run).contains(&format!("plan: 1 of {total} rows planned again")), "{run}");
    assert_eq!(names(&items(&run, "update")), ["tom"], "{run}");

    // The directory is unchanged; the Bindery user is gone.
    let tom = app.db.store.find_user("tom").await.unwrap().expect("tom");
    let res = app.send(api("DELETE", &format!("/api/v1/users/{}", tom.id), None, Auth::Cookie(&cookie))).await;
    assert!(res.status().is_success(), "{:?}", res.status());
    let again = sync(&app, &cookie, false).await;
    assert_eq!(again["run"]["entries"], 0, "nothing read from the directory: {again}");
    assert!(notes(&again).contains(&format!("plan: 1 of {total} rows planned again")), "{again}");
    assert_eq!(names(&items(&again, "create")), ["tom"], "{again}");
    assert!(active(&app, "tom").await);

    // A new mapping: every row is compared again, though nothing changed.
    let mut input = d.input();
    input.page_size = 3;
    input.group_mappings =
        vec![GroupMapping { group_dn: format!("cn=admins,ou=groups,{}", d.base_dn), role: Role::Admin, organisations: vec![] }];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let remapped = sync(&app, &cookie, false).await;
    assert!(
        notes(&remapped).contains("plan: every row compared (the mapping, attribute map or policy changed since the last plan)"),
        "{remapped}"
    );
}

/// The directory saved with a mapping of `cn=admins` to the admin role (pages
/// of 3), and Test connection run so that delta mode is available.
async fn map_admins_to_admin(app: &TestApp, d: &Slapd) {
    let mut input = d.input();
    input.page_size = 3;
    input.group_mappings =
        vec![GroupMapping { group_dn: format!("cn=admins,ou=groups,{}", d.base_dn), role: Role::Admin, organisations: vec![] }];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    app.service.test_directory_connection(&admin_actor(), DirectoryKind::Ldap, None).await.unwrap();
}

/// A change planned but not applied (a dry run, a held run) is planned
/// again by the next run under the same rules, though neither the entry
/// nor its user changed in between: here a promotion that a new mapping
/// brings, first in a dry run.
async fn a_pending_change_is_planned_again(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    assert_eq!(app.db.store.find_user("jdoe").await.unwrap().unwrap().role.as_str(), "user");

    map_admins_to_admin(&app, &d).await;
    let dry = sync(&app, &cookie, true).await;
    assert_eq!(names(&items(&dry, "update")), ["jdoe"], "{dry}");
    assert_eq!(app.db.store.find_user("jdoe").await.unwrap().unwrap().role.as_str(), "user", "a dry run applies nothing");

    let run = sync(&app, &cookie, false).await;
    assert!(notes(&run).contains(" rows planned again"), "the same rules: only what may need it is read: {run}");
    assert_eq!(names(&items(&run, "update")), ["jdoe"], "{run}");
    assert_eq!(app.db.store.find_user("jdoe").await.unwrap().unwrap().role.as_str(), "admin");
}

/// A Bindery-side change to a user is planned again by the next run under
/// the same rules, though the directory did not change: an administrator
/// pins jdoe's role to user (the mapping would make him admin), then unpins it.
async fn a_bindery_side_change_is_planned_again(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    map_admins_to_admin(&app, &d).await;
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &delta(true, 100)).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let role = |app: &TestApp| {
        let store = app.db.store.clone();
        async move { store.find_user("jdoe").await.unwrap().unwrap().role.as_str().to_string() }
    };
    assert_eq!(role(&app).await, "admin", "the mapping");
    let id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;

    let demote = bindery_model::UserUpdate { role: Some(Role::User), ..Default::default() };
    assert!(app.service.update_user(&admin_actor(), id, &demote).await.unwrap().role_pinned, "a hand-set role is pinned");
    let run = sync(&app, &cookie, false).await;
    assert!(notes(&run).contains("plan: 1 of"), "jdoe's row, and only it, is planned again: {run}");
    assert_eq!(role(&app).await, "user", "pinned: the role stays");

    let unpin = bindery_model::UserUpdate { role_pinned: Some(false), ..Default::default() };
    app.service.update_user(&admin_actor(), id, &unpin).await.unwrap();
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["kind"], "delta", "{run}");
    assert!(notes(&run).contains("plan: 1 of"), "{run}");
    assert_eq!(names(&items(&run, "update")), ["jdoe"], "{run}");
    assert_eq!(role(&app).await, "admin", "unpinned: the mapping's role again");
}

#[tokio::test]
async fn a_bindery_side_change_is_planned_again_on_sqlite() {
    a_bindery_side_change_is_planned_again(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_bindery_side_change_is_planned_again_on_postgres() {
    a_bindery_side_change_is_planned_again(Backend::Postgres).await;
}

#[tokio::test]
async fn a_pending_change_is_planned_again_on_sqlite() {
    a_pending_change_is_planned_again(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_pending_change_is_planned_again_on_postgres() {
    a_pending_change_is_planned_again(Backend::Postgres).await;
}

#[tokio::test]
async fn a_delta_plan_reads_only_what_changed_on_sqlite() {
    a_delta_plan_reads_only_what_changed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_delta_plan_reads_only_what_changed_on_postgres() {
    a_delta_plan_reads_only_what_changed(Backend::Postgres).await;
}

async fn stale_cookie_falls_back(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    // The directory is restored from a backup older than the cookies: they are ahead of it.
    let stored = app.db.store.delta_cookies("ldap").await.unwrap();
    assert_eq!(stored.len(), 2, "one per search OU: {stored:?}");
    let ahead: Vec<(String, String, String)> = stored
        .into_iter()
        .map(|(ou, server, _, _)| (ou, server, "rid=000,csn=20991231000000.000000Z#000000#000#000000".to_string()))
        .collect();
    app.db.store.put_delta_cookies("ldap", "syncrepl", &ahead, 0).await.unwrap();
    d.modify(&format!("dn: uid=tom,ou=tech,{}\nchangetype: delete\n", d.base_dn));

    let run = sync(&app, &cookie, false).await;
    assert_eq!((run["run"]["kind"].as_str(), run["run"]["state"].as_str()), (Some("sync"), Some("done")), "{run}");
    assert!(notes(&run).contains("fell back to a full enumeration"), "{run}");
    assert!(notes(&run).contains("ahead of the server"), "{run}");
    assert_eq!(names(&items(&run, "disable")), ["tom"], "{run}");
    assert!(notes(&run).contains("delta cookie recorded"), "a new cookie: {run}");
    // … and the next run reads changes again.
    let next = sync(&app, &cookie, false).await;
    assert_eq!((next["run"]["kind"].as_str(), next["run"]["state"].as_str()), (Some("delta"), Some("done")), "{next}");

    // A change of the directory settings drops the cookies: a full run, which says why.
    let mut input = d.input();
    input.page_size = 5;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    assert!(app.db.store.delta_cookies("ldap").await.unwrap().is_empty());
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["kind"], "sync", "{run}");
    assert!(notes(&run).contains("no delta cookie is stored"), "{run}");
}

#[tokio::test]
async fn a_stale_cookie_falls_back_to_a_full_run() {
    stale_cookie_falls_back(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_stale_cookie_falls_back_to_a_full_run_on_postgres() {
    stale_cookie_falls_back(Backend::Postgres).await;
}

#[tokio::test]
async fn an_incomplete_delta_run_disables_nobody() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    d.modify(&format!("dn: uid=tom,ou=tech,{}\nchangetype: delete\n", d.base_dn));
    d.stop();
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["kind"], "delta", "{run}");
    assert_eq!((run["run"]["state"].as_str(), run["run"]["complete"].as_bool()), (Some("failed"), Some(false)), "{run}");
    assert_eq!(run["run"]["counts"]["disable"], 0, "{run}");
    assert!(notes(&run).contains("nobody was disabled: the delta read was incomplete"), "{run}");
    let (users, active_users) = app.db.store.count_users().await.unwrap();
    assert_eq!(users, active_users, "everybody is still active");
    assert_eq!(app.db.store.delta_cookies("ldap").await.unwrap().len(), 2, "the cookies stay where they were");
}

#[tokio::test]
async fn the_threshold_holds_a_delta_run_that_would_disable_too_many() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, &d, delta(true, 10)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!("dn: uid=tom,{tech}\nchangetype: delete\n"));
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: delete\n"));
    let held = sync(&app, &cookie, false).await;
    assert_eq!((held["run"]["kind"].as_str(), held["run"]["state"].as_str()), (Some("delta"), Some("held")), "{held}");
    assert!(notes(&held).contains("held for approval"), "{held}");
    assert_eq!(names(&items(&held, "disable")), ["tina", "tom"]);
    assert!(active(&app, "tom").await && active(&app, "tina").await, "nothing applied while held");

    let id = held["run"]["id"].as_i64().unwrap();
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/approve"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "approved");
    let done = wait_sync(&app, &cookie, id, |r| r["state"] != "running").await;
    assert_eq!(done["run"]["state"], "done", "{done}");
    assert!(!active(&app, "tom").await && !active(&app, "tina").await);
}

#[tokio::test]
async fn delta_mode_needs_a_detected_method_and_the_settings_show_it() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let mut input = d.input();
    input.page_size = 3;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let body = serde_json::json!({ "mode": "delta", "threshold_percent": 10 });
    let res = app.send(api("PUT", "/api/v1/directories/ldap/sync/settings", Some(body.clone()), Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "delta before Test connection");
    let err = body_json(res).await.to_string();
    assert!(err.contains("\"mode\"") && err.contains("Test connection"), "{err}");
    let view = body_json(app.send(api("GET", "/api/v1/directories/ldap/sync/settings", None, Auth::Cookie(&cookie))).await).await;
    assert!(view["detected"].is_null(), "{view}");

    let res = app.send(api("POST", "/api/v1/directories/ldap/verify_connection", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "test connection");
    assert_eq!(body_json(res).await["delta"]["method"], "syncrepl");
    let res = app.send(api("PUT", "/api/v1/directories/ldap/sync/settings", Some(body), Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "delta after Test connection");
    let view = body_json(res).await;
    assert_eq!((view["settings"]["mode"].as_str(), view["settings"]["full_every_hours"].as_i64()), (Some("delta"), Some(24)), "{view}");
    assert_eq!(view["detected"]["method"], "syncrepl", "{view}");
    assert_eq!(view["detected"]["server"], d.ldap_url, "{view}");

    let bad = serde_json::json!({ "mode": "delta", "full_every_hours": 0 });
    let res = app.send(api("PUT", "/api/v1/directories/ldap/sync/settings", Some(bad), Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "full_every_hours 0");
    assert!(body_json(res).await.to_string().contains("full_every_hours"));

    // Documented (OpenAPI): the mode, what was detected, and Test connection's finding.
    let doc = body_json(app.send(api("GET", "/api/openapi.json", None, Auth::None)).await).await;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("SyncSettings", "mode"),
        ("SyncSettings", "full_every_hours"),
        ("SyncSettingsView", "detected"),
        ("ProbeReport", "delta"),
        ("DeltaSupportInfo", "method"),
    ] {
        assert!(schemas[schema]["properties"][field].is_object(), "{schema}.{field} is not in the OpenAPI document");
    }
    // (The document spells the values of these string enums capitalised,
    // as it does for every enum of the model; the API sends them lower-case.)
    assert!(schemas["SyncMode"].to_string().to_lowercase().contains("\"delta\""), "{}", schemas["SyncMode"]);
    assert!(schemas["RunKind"].to_string().to_lowercase().contains("\"delta\""), "{}", schemas["RunKind"]);

    // Other search OUs: what was detected is not shown for them.
    input.search_ous = format!("ou=people,{}", d.base_dn);
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let view = body_json(app.send(api("GET", "/api/v1/directories/ldap/sync/settings", None, Auth::Cookie(&cookie))).await).await;
    assert!(view["detected"].is_null(), "{view}");
}

/// A cookie the session log no longer covers is served by a present phase
/// (every entry listed, unchanged ones as present): the snapshot's entries
/// of the OU that were not listed are the deleted ones.
#[tokio::test]
async fn a_present_phase_tells_the_deleted_entries_by_what_it_did_not_list() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, &d, delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let old: Vec<(String, String, String)> = app
        .db
        .store
        .delta_cookies("ldap")
        .await
        .unwrap()
        .into_iter()
        .map(|(ou, server, _, _)| (ou, server, "rid=000,csn=20000101000000.000000Z#000000#000#000000".to_string()))
        .collect();
    app.db.store.put_delta_cookies("ldap", "syncrepl", &old, 0).await.unwrap();
    d.modify(&format!("dn: uid=tom,ou=tech,{}\nchangetype: delete\n", d.base_dn));
    let run = sync(&app, &cookie, false).await;
    assert_eq!((run["run"]["kind"].as_str(), run["run"]["state"].as_str()), (Some("delta"), Some("done")), "{run}");
    assert!(notes(&run).contains("a present phase"), "{run}");
    assert_eq!(names(&items(&run, "disable")), ["tom"], "{run}");
    assert_eq!(names(&items(&run, "create")), Vec::<String>::new(), "{run}");
    assert!(!active(&app, "tom").await && active(&app, "tina").await);
}
