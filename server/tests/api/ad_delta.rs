//! Delta sync against Active Directory (issue 17 §1), with a real Samba AD
//! DC (`testkit/samba`): in delta mode the first run is a full enumeration
//! that records a DirSync cookie or a USN per search OU; later runs read
//! only what changed (a modify, a disable, a deletion, a user added to or
//! removed from a mapped group) through the same plan, threshold and dry
//! run; a USN read re-reads a changed group's former members, so a removal
//! demotes, and says that it cannot see deletions; a refused, garbled or
//! foreign cookie makes a full run, with a note.

use bindery_directory::testing::Samba;
use bindery_model::{DirectoryInput, DirectoryKind, GroupMapping, Role, SyncMode, SyncSettings};
use bindery_store::Backend;
use http::StatusCode;

use crate::helpers::*;
use crate::sync::{items, names, sync, wait_sync};

fn delta(disable: bool, threshold: i64) -> SyncSettings {
    SyncSettings { disable_missing: disable, threshold_percent: threshold, mode: SyncMode::Delta, ..Default::default() }
}

/// `admins` is mapped to System Admin.
fn mapped(d: &Samba, mut input: DirectoryInput) -> DirectoryInput {
    input.group_mappings = vec![GroupMapping { group_dn: d.group_dn("admins"), role: Role::Admin, organisations: vec![] }];
    input
}

/// Save the directory, run Test connection on the saved settings (which
/// detects the delta method), check what it found, then save the sync
/// settings.
async fn configure(app: &TestApp, input: &DirectoryInput, want: (&str, bool), settings: SyncSettings) {
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, input).await.unwrap();
    let report = app.service.test_directory_connection(&admin_actor(), DirectoryKind::Ldap, None).await.unwrap();
    let found = report.delta.as_ref().map(|d| (d.method.as_str(), d.sees_deletions));
    assert_eq!(found, Some(want), "{report:#?}");
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &settings).await.unwrap();
}

/// As if Test connection had found USN (an account without the DirSync
/// right; the test kit has none): the stored finding, for the same settings.
async fn detect_usn(app: &TestApp, sees_deletions: bool) {
    let mut row = app.db.store.delta_support("ldap").await.unwrap().expect("Test connection ran");
    row.method = "usn".into();
    row.sees_deletions = sees_deletions;
    app.db.store.put_delta_support("ldap", &row).await.unwrap();
}

fn notes(run: &serde_json::Value) -> String {
    run["run"]["counts"]["notes"].to_string()
}

fn kind_state(run: &serde_json::Value) -> (Option<&str>, Option<&str>) {
    (run["run"]["kind"].as_str(), run["run"]["state"].as_str())
}

async fn user(app: &TestApp, username: &str) -> bindery_store::UserRow {
    app.db.store.find_user(username).await.unwrap().unwrap_or_else(|| panic!("{username} exists"))
}

fn reason_of<'a>(run: &'a serde_json::Value, username: &str) -> &'a str {
    run["items"]["items"].as_array().unwrap().iter().find(|i| i["username"] == username).and_then(|i| i["reason"].as_str()).unwrap_or("")
}

/// The changes every method is checked with.
async fn make_changes(d: &Samba) {
    d.modify(&d.user_dn("user06"), vec![ldap3::Mod::Replace("mail".into(), ["changed@bindery.test".to_string()].into())]).await;
    d.set_uac(&d.user_dn("user07"), 514).await;
    d.delete(&d.user_dn("user08")).await;
    d.set_member(&d.group_dn("admins"), &d.user_dn("user09"), true).await;
    d.set_member(&d.group_dn("admins"), &d.user_dn("user01"), false).await;
}

/// DirSync with the replication right: a delta run reads the five
/// changed users only (deletion included), its dry run applies nothing,
/// and the run updates, disables, promotes and demotes.
async fn dirsync_run(backend: Backend) {
    let d = Samba::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &mapped(&d, d.input_as(&d.repl_dn, &d.repl_password)), ("dirsync", true), delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&first), (Some("sync"), Some("done")), "{first}");
    assert!(notes(&first).contains("delta cookie recorded (dirsync"), "{first}");
    assert_eq!(app.db.store.delta_cookies("ldap").await.unwrap().len(), 1, "one cookie for the one search OU");
    assert_eq!(user(&app, "user01").await.role, Role::Admin);

    let quiet = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&quiet), (Some("delta"), Some("done")), "{quiet}");
    assert_eq!(quiet["run"]["entries"], 0, "nothing changed, nothing read: {quiet}");
    assert!(notes(&quiet).contains("directory groups not rebuilt"), "{quiet}");

    make_changes(&d).await;
    let dry = sync(&app, &cookie, true).await;
    assert_eq!(kind_state(&dry), (Some("delta"), Some("done")), "{dry}");
    assert_eq!(dry["run"]["entries"], 5, "four changed users and one deletion, nothing else: {dry}");
    assert!(notes(&dry).contains("delta read (dirsync"), "{dry}");
    assert!(!notes(&dry).contains("deletions are not visible"), "{dry}");
    assert_eq!(names(&items(&dry, "update")), ["user01", "user06", "user09"], "{dry}");
    assert_eq!(names(&items(&dry, "disable")), ["user07", "user08"], "{dry}");
    assert!(reason_of(&dry, "user01").contains("no group mapping matches"), "{dry}");
    assert!(reason_of(&dry, "user09").contains("by the group mapping"), "{dry}");
    assert_eq!(user(&app, "user01").await.role, Role::Admin, "a dry run applies nothing");
    assert!(user(&app, "user07").await.is_active && user(&app, "user08").await.is_active);

    // The dry run moved the cookie on; the plan still holds what was not applied.
    let run = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&run), (Some("delta"), Some("done")), "{run}");
    assert_eq!(names(&items(&run, "update")), ["user01", "user06", "user09"], "{run}");
    assert_eq!(names(&items(&run, "disable")), ["user07", "user08"], "{run}");
    assert!(!notes(&run).contains("directory groups not rebuilt"), "after a dry run the groups are rebuilt: {run}");
    assert_eq!(user(&app, "user01").await.role, Role::User, "demoted: removed from the mapped group");
    assert_eq!(user(&app, "user09").await.role, Role::Admin, "promoted: added to the mapped group");
    assert_eq!(user(&app, "user06").await.email, "changed@bindery.test");
    assert!(!user(&app, "user07").await.is_active && !user(&app, "user08").await.is_active);
    assert!(user(&app, "user10").await.is_active);
    assert_eq!(group_members(&app, &d.group_dn("admins")).await, ["user09"]);

    // After an applied run: a membership change rebuilds the directory
    // groups, a modify alone does not.
    d.set_member(&d.group_dn("admins"), &d.user_dn("user10"), true).await;
    let run = sync(&app, &cookie, false).await;
    assert_eq!((kind_state(&run), run["run"]["entries"].as_i64()), ((Some("delta"), Some("done")), Some(1)), "{run}");
    assert!(!notes(&run).contains("directory groups not rebuilt"), "{run}");
    assert_eq!(group_members(&app, &d.group_dn("admins")).await, ["user09", "user10"]);
    d.modify(&d.user_dn("user11"), vec![ldap3::Mod::Replace("mail".into(), ["eleven@bindery.test".to_string()].into())]).await;
    let run = sync(&app, &cookie, false).await;
    assert_eq!(names(&items(&run, "update")), ["user11"], "{run}");
    assert!(notes(&run).contains("directory groups not rebuilt"), "{run}");
    assert_eq!(group_members(&app, &d.group_dn("admins")).await, ["user09", "user10"]);
}

/// The usernames in the Bindery group made from a directory group.
#[tokio::test]
async fn ad_dirsync_delta_run_reads_only_the_changes_and_demotes_through_the_group_mapping() {
    dirsync_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn ad_dirsync_delta_run_reads_only_the_changes_and_demotes_through_the_group_mapping_on_postgres() {
    dirsync_run(Backend::Postgres).await;
}

/// USN for an ordinary account: a removal from the mapped group is found
/// through the snapshot's former members; deletions are not visible, the
/// run says so, and the full enumeration finds them.
async fn usn_run(backend: Backend) {
    let d = Samba::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &mapped(&d, d.input()), ("dirsync", false), delta(true, 100)).await;
    detect_usn(&app, false).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&first), (Some("sync"), Some("done")), "{first}");
    assert!(notes(&first).contains("delta cookie recorded (usn"), "{first}");

    make_changes(&d).await;
    let run = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&run), (Some("delta"), Some("done")), "{run}");
    assert!(notes(&run).contains("delta read (usn"), "{run}");
    assert!(notes(&run).contains("former members of changed groups re-read"), "{run}");
    assert!(notes(&run).contains("deletions are not visible to usn"), "{run}");
    assert_eq!(run["run"]["entries"], 4, "the four changed users; the deletion is not visible: {run}");
    assert_eq!(names(&items(&run, "update")), ["user01", "user06", "user09"], "{run}");
    assert_eq!(names(&items(&run, "disable")), ["user07"], "{run}");
    assert_eq!(user(&app, "user01").await.role, Role::User, "demoted: removed from the mapped group");
    assert_eq!(user(&app, "user09").await.role, Role::Admin);
    assert!(user(&app, "user08").await.is_active, "the deletion waits for the full enumeration");

    // The safety net: a full enumeration (here: no cookie left) disables the deleted user.
    app.db.store.clear_delta_cookies("ldap").await.unwrap();
    let full = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&full), (Some("sync"), Some("done")), "{full}");
    assert_eq!(names(&items(&full, "disable")), ["user08"], "{full}");
    assert!(notes(&full).contains("delta cookie recorded (usn"), "{full}");
}

#[tokio::test]
async fn ad_usn_delta_run_demotes_a_removed_member_and_leaves_deletions_to_the_full_run() {
    usn_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn ad_usn_delta_run_demotes_a_removed_member_and_leaves_deletions_to_the_full_run_on_postgres() {
    usn_run(Backend::Postgres).await;
}

#[tokio::test]
async fn ad_garbled_refused_and_foreign_cookies_fall_back_to_a_full_run() {
    let d = Samba::start();
    let app = TestApp::new().await;
    configure(&app, &d.input(), ("dirsync", false), delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let stored = app.db.store.delta_cookies("ldap").await.unwrap();
    let (ou, server, method, good) = stored[0].clone();
    assert_eq!((method.as_str(), server.as_str()), ("dirsync", format!("{}:389", d.ldap_url.trim_end_matches('/')).as_str()));
    let put = |c: String| {
        let (ou, server) = (ou.clone(), server.clone());
        let store = app.db.store.clone();
        async move { store.put_delta_cookies("ldap", "dirsync", &[(ou, server, c)], 0).await.unwrap() }
    };
    let edit = |field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v[field] = value.into();
        v.to_string()
    };
    for (cookie_value, why) in [
        ("garbage".to_string(), "not an Active Directory delta cookie"),
        (edit("dirsync", "Z2FyYmFnZQ=="), "refused the DirSync cookie"),
        (edit("server", "ldap://127.0.0.1:1"), "no longer a configured server"),
    ] {
        put(cookie_value).await;
        d.set_uac(&d.user_dn("user12"), 514).await;
        let run = sync(&app, &cookie, false).await;
        assert_eq!(kind_state(&run), (Some("sync"), Some("done")), "{run}");
        assert!(notes(&run).contains("fell back to a full enumeration"), "{run}");
        assert!(notes(&run).contains(why), "{why}: {run}");
        assert!(notes(&run).contains("delta cookie recorded (dirsync"), "a new cookie: {run}");
        assert!(!user(&app, "user12").await.is_active, "the full run read the disable");
        d.set_uac(&d.user_dn("user12"), 512).await;
        let next = sync(&app, &cookie, false).await;
        assert_eq!(kind_state(&next), (Some("delta"), Some("done")), "the new cookie reads changes again: {next}");
        assert_eq!(names(&items(&next, "enable")), ["user12"], "{next}");
    }

    // Test connection again: the same finding keeps the cookie; another one
    // (here: the stored finding said deletions were visible) drops it.
    let admin = admin_actor();
    let test = || app.service.test_directory_connection(&admin, DirectoryKind::Ldap, None);
    test().await.unwrap();
    assert_eq!(app.db.store.delta_cookies("ldap").await.unwrap().len(), 1, "the same finding keeps the cookie");
    let mut row = app.db.store.delta_support("ldap").await.unwrap().unwrap();
    row.sees_deletions = true;
    app.db.store.put_delta_support("ldap", &row).await.unwrap();
    test().await.unwrap();
    assert!(app.db.store.delta_cookies("ldap").await.unwrap().is_empty(), "a new finding drops the cookie");
    let run = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&run), (Some("sync"), Some("done")), "{run}");
    assert!(notes(&run).contains("no delta cookie is stored"), "{run}");
}

#[tokio::test]
async fn ad_the_threshold_holds_a_delta_run_that_would_disable_too_many() {
    let d = Samba::start();
    let app = TestApp::new().await;
    configure(&app, &d.input(), ("dirsync", false), delta(true, 10)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    // 3 of 21 users (14 %) is more than 10 %.
    for u in ["user13", "user14", "user15"] {
        d.set_uac(&d.user_dn(u), 514).await;
    }
    let held = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&held), (Some("delta"), Some("held")), "{held}");
    assert!(notes(&held).contains("held for approval"), "{held}");
    assert_eq!(names(&items(&held, "disable")), ["user13", "user14", "user15"], "{held}");
    assert!(user(&app, "user13").await.is_active, "nothing applied while held");

    let id = held["run"]["id"].as_i64().unwrap();
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/approve"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "approved");
    let done = wait_sync(&app, &cookie, id, |r| r["state"] != "running").await;
    assert_eq!(done["run"]["state"], "done", "{done}");
    assert!(!user(&app, "user13").await.is_active && !user(&app, "user15").await.is_active);
}

/// Two search OUs, one cookie each: a user moved from one to the other
/// is the same user (the upsert in one OU's read wins over the other's
/// "gone from the scope"); a user moved out of both is gone.
#[tokio::test]
async fn ad_a_user_moved_between_search_ous_stays_and_one_moved_out_of_them_is_disabled() {
    let d = Samba::start();
    let app = TestApp::new().await;
    let users_ou = format!("CN=Users,{}", d.base_dn);
    let mut input = d.input_as(&d.repl_dn, &d.repl_password);
    input.search_ous = format!("{}|{users_ou}", d.people_ou);
    configure(&app, &input, ("dirsync", true), delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&first), (Some("sync"), Some("done")), "{first}");
    assert_eq!(app.db.store.delta_cookies("ldap").await.unwrap().len(), 2, "one cookie per search OU");
    d.move_to(&d.user_dn("user10"), &users_ou).await;
    d.move_to(&d.user_dn("user11"), &d.groups_ou).await;
    let run = sync(&app, &cookie, false).await;
    assert_eq!(kind_state(&run), (Some("delta"), Some("done")), "{run}");
    assert_eq!(names(&items(&run, "disable")), ["user11"], "{run}");
    assert!(user(&app, "user10").await.is_active && !user(&app, "user11").await.is_active);
    let staged = app.service.list_staged_users(&admin_actor(), DirectoryKind::Ldap, None, None, None, false, 1, 500).await.unwrap();
    let dn = staged.items.iter().find(|r| r.username == "user10").map(|r| r.dn.clone()).unwrap_or_default();
    assert!(dn.to_lowercase().ends_with(&users_ou.to_lowercase()), "the snapshot has user10's new DN: {dn}");
}

/// A domain controller that does not answer makes a delta run incomplete:
/// nobody is disabled and the cookie stays where it was.
#[tokio::test]
async fn ad_an_unreachable_dc_makes_an_incomplete_delta_run_that_disables_nobody() {
    let d = Samba::start();
    let app = TestApp::new().await;
    configure(&app, &d.input(), ("dirsync", false), delta(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let before = app.db.store.delta_cookies("ldap").await.unwrap();
    d.stop();
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["kind"], "delta", "{run}");
    assert_eq!((run["run"]["state"].as_str(), run["run"]["complete"].as_bool()), (Some("failed"), Some(false)), "{run}");
    assert_eq!(run["run"]["counts"]["disable"], 0, "{run}");
    assert!(notes(&run).contains("nobody was disabled: the delta read was incomplete"), "{run}");
    let (users, active_users) = app.db.store.count_users().await.unwrap();
    assert_eq!(users, active_users, "everybody is still active");
    assert_eq!(app.db.store.delta_cookies("ldap").await.unwrap(), before, "the cookie stays where it was");
}

/// Figures for the note: a delta run against a full run of the
/// same kind of change (100 modifications and 10 deletions), whole runs
/// (read, plan, apply) through the service, per AD method. Run with
/// `SAMBA_BENCH_USERS=3000 cargo test -p bindery --features bindery-app/ssr --test api ad_delta_figures -- --ignored --nocapture`
/// (the first run builds a Samba template with that many extra users).
/// Measured on the 2-core dev VM (shared), debug build, the replication
/// account — 3,000 extra users: DirSync delta run 373 ms (read 211) against
/// a full run of 986 ms (read 779), 38 %; USN 229 ms against 634 ms, 36 %.
/// 10,000: DirSync 949 ms (read 503) against 3,234 ms (read 2,753), 29 %;
/// USN 919 ms (read 440) against 3,476 ms (read 3,045), 26 %.
#[tokio::test]
#[ignore = "measurement: builds a large template once"]
async fn ad_delta_figures() {
    let n = std::env::var("SAMBA_BENCH_USERS").unwrap_or_else(|_| "3000".into());
    for usn in [false, true] {
        let d = Samba::start_with(&[("SAMBA_EXTRA_USERS", &n)]);
        let app = TestApp::new().await;
        let mut input = d.input_as(&d.repl_dn, &d.repl_password);
        input.page_size = 1000;
        configure(&app, &input, ("dirsync", true), delta(true, 100)).await;
        if usn {
            detect_usn(&app, true).await;
        }
        let cookie = app.session("admin", ADMIN_PASSWORD).await;
        let t = std::time::Instant::now();
        let first = sync(&app, &cookie, false).await;
        let first_time = t.elapsed();
        assert_eq!(kind_state(&first), (Some("sync"), Some("done")), "{first}");
        let mut ldap = d.admin().await;
        let mut runs = Vec::new();
        // A delta run, then a full run (no cookie), each after 100 modifications and 10 deletions.
        for (round, from) in [(0, 1), (1, 201)] {
            let dns: Vec<String> = (from..from + 110).map(|i| d.user_dn(&format!("extra{i:06}"))).collect();
            for (i, dn) in dns.iter().enumerate() {
                let r = if i < 100 {
                    ldap.modify(dn, vec![ldap3::Mod::Replace("mail".to_string(), [format!("changed{round}-{i}@bindery.test")].into())])
                        .await
                        .unwrap()
                } else {
                    ldap.delete(dn).await.unwrap()
                };
                assert_eq!(r.rc, 0, "{dn}: {r:?}");
            }
            if round == 1 {
                app.db.store.clear_delta_cookies("ldap").await.unwrap();
            }
            let t = std::time::Instant::now();
            let run = sync(&app, &cookie, false).await;
            let took = t.elapsed();
            assert_eq!(run["run"]["state"], "done", "{run}");
            let c = &run["run"]["counts"];
            assert_eq!((c["update"].as_i64(), c["disable"].as_i64()), (Some(100), Some(10)), "{run}");
            runs.push((run["run"]["kind"].as_str().unwrap().to_string(), took, c.clone()));
        }
        let method = if usn { "usn" } else { "dirsync" };
        println!("{method}, {n} extra users: first full run {:.0} ms", first_time.as_secs_f64() * 1000.0);
        for (kind, took, c) in &runs {
            println!(
                "{method}: {kind} run of 100 modifications + 10 deletions: {:.0} ms (read {} ms, plan {} ms, apply {} ms)",
                took.as_secs_f64() * 1000.0,
                c["enumerate_ms"],
                c["plan_ms"],
                c["apply_ms"]
            );
        }
        assert_eq!((runs[0].0.as_str(), runs[1].0.as_str()), ("delta", "sync"));
        println!("{method}: the delta run took {:.1} % of the full run", 100.0 * runs[0].1.as_secs_f64() / runs[1].1.as_secs_f64());
    }
}
