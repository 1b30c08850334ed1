//! One identity lifecycle (issue 14): the group mapping is authoritative on
//! every path that turns a directory entry into a Bindery user, a pinned
//! role is kept, and a reused username is a conflict, never an inheritance.

use std::time::Duration;

use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, GroupMapping, GroupMode, ImportRequest, Role, SecuritySettings, UserUpdate};
use http::StatusCode;

use crate::helpers::*;

const JDOE_DN: &str = "uid=jdoe,ou=people,dc=example,dc=com";
const ADMINS: &str = "cn=admins,ou=groups,dc=example,dc=com";
const DEVELOPERS: &str = "cn=developers,ou=groups,dc=example,dc=com";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `memberOf`, direct: the mapping names `cn=admins`.
    Attribute,
    /// Group search, nested: the mapping names `cn=developers`, which jdoe
    /// is in only through `cn=admins`.
    SearchNested,
}

async fn setup(mode: Mode) -> (Slapd, TestApp) {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let mut input = d.input();
    match mode {
        Mode::Attribute => {
            input.nested_groups = false;
            input.group_mappings = vec![GroupMapping { group_dn: ADMINS.into(), role: Role::Admin, organisations: vec![] }];
        }
        Mode::SearchNested => {
            input.group_mode = GroupMode::Search;
            input.group_base = "ou=groups,dc=example,dc=com".into();
            input.group_filter = "(member={0})".into();
            input.nested_groups = true;
            input.group_mappings = vec![GroupMapping { group_dn: DEVELOPERS.into(), role: Role::Admin, organisations: vec![] }];
        }
    }
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    // Every request re-validates a directory user's session.
    let s = SecuritySettings { revalidate_minutes: 0, ..Default::default() };
    app.service.update_security_settings(&admin_actor(), s).await.unwrap();
    (d, app)
}

/// tom stays in the group: a groupOfNames needs at least one member.
const TOM_DN: &str = "uid=tom,ou=tech,dc=example,dc=com";

fn join_admins(d: &Slapd) {
    d.modify(&format!("dn: {ADMINS}\nchangetype: modify\nreplace: member\nmember: {JDOE_DN}\nmember: {TOM_DN}\n"));
}

fn leave_admins(d: &Slapd) {
    d.modify(&format!("dn: {ADMINS}\nchangetype: modify\nreplace: member\nmember: {TOM_DN}\n"));
}

async fn role(app: &TestApp, name: &str) -> Role {
    app.db.store.find_user(name).await.unwrap().unwrap_or_else(|| panic!("{name} exists")).role
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn wait_fetch(app: &TestApp) {
    for _ in 0..600 {
        let run = app.service.user_fetch_status(&admin_actor(), DirectoryKind::Ldap).await.unwrap();
        if run.as_ref().is_some_and(|r| r.state != "running") {
            assert_eq!(run.unwrap().state, "done");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the enumeration did not finish in 30 s");
}

/// Enumerate the directory into the import table and wait for it.
async fn fetch(app: &TestApp) {
    app.service.start_user_fetch(&admin_actor(), DirectoryKind::Ldap).await.unwrap();
    wait_fetch(app).await;
}

/// The import table's row of `name`.
async fn staged(app: &TestApp, name: &str) -> bindery_model::StagedUser {
    let page = app.service.list_staged_users(&admin_actor(), DirectoryKind::Ldap, None, Some(name), None, false, 1, 50).await.unwrap();
    page.items.into_iter().find(|r| r.username == name).unwrap_or_else(|| panic!("{name} staged"))
}

/// "Sync now", waited for; returns the run's detail.
async fn sync(app: &TestApp) -> bindery_model::SyncRunDetail {
    let run = app.service.start_sync(&admin_actor(), DirectoryKind::Ldap, false).await.unwrap();
    for _ in 0..600 {
        let d = app.service.sync_run(&admin_actor(), run.id, None, 1, 500).await.unwrap();
        if d.run.state != "running" {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sync did not finish in 30 s");
}

/// Demote jdoe through one path, after a web sign-in made them admin.
async fn demote_through(app: &TestApp, d: &Slapd, path: &str) {
    join_admins(d);
    let cookie = app.session("jdoe", "Jdoe-Password-1").await;
    assert_eq!(role(app, "jdoe").await, Role::Admin, "{path}: in the mapped group, sign-in makes jdoe admin");
    leave_admins(d);
    match path {
        "web" => {
            app.session("jdoe", "Jdoe-Password-1").await;
        }
        "rest" => {
            let body = serde_json::json!({ "password": "Jdoe-Password-1" });
            let res = app.send(api("POST", "/api/v1/authn/ldap/jdoe/authenticate", Some(body), Auth::None)).await;
            assert_status(&res, StatusCode::OK, "REST authenticate");
        }
        "basic" => {
            let mut req = api("GET", "/api/v1/authn/ldap/login", None, Auth::None);
            req.headers_mut().insert(http::header::AUTHORIZATION, basic("jdoe", "Jdoe-Password-1").parse().unwrap());
            assert_status(&app.send(req).await, StatusCode::OK, "HTTP Basic");
        }
        "revalidation" => {
            let res = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await;
            assert_status(&res, StatusCode::OK, "the live session is re-validated, not ended");
            assert_eq!(body_json(res).await["role"], "user", "the session's own answer already has the new role");
        }
        "import" => {
            fetch(app).await;
            let row = staged(app, "jdoe").await;
            let req = ImportRequest { ids: vec![row.id], ..Default::default() };
            let r = app.service.import_staged_users(&admin_actor(), DirectoryKind::Ldap, &req).await.unwrap();
            assert_eq!(r.updated, 1, "{r:?}");
        }
        "sync" => {
            let detail = sync(app).await;
            assert_eq!(detail.run.state, "done", "{:?}", detail.run);
            assert!(
                detail.items.items.iter().any(|i| i.username == "jdoe" && i.reason.contains("no group mapping matches")),
                "{:?}",
                detail.items
            );
        }
        other => unreachable!("{other}"),
    }
    assert_eq!(role(app, "jdoe").await, Role::User, "{path}: removed from the mapped group, jdoe is User again");
}

async fn mapping_is_authoritative_on_every_path(mode: Mode) {
    let (d, app) = setup(mode).await;
    for path in ["web", "rest", "basic", "revalidation", "import", "sync"] {
        demote_through(&app, &d, path).await;
    }
    // Every role change the directory made is in the operation log.
    let ops = app
        .service
        .operation_log(&admin_actor(), &bindery_model::LogQuery { per_page: Some(500), ..Default::default() })
        .await
        .unwrap()
        .items;
    let role_changes = ops.iter().filter(|o| o.action == "user.role" && o.target == "user:jdoe").count();
    // The first promotion is the creation (created as admin); every later promotion and each demotion is logged.
    assert!(role_changes >= 11, "{mode:?}: a promotion and a demotion per path, each logged ({role_changes})");

    // A pinned role is never changed by the directory.
    join_admins(&d);
    app.session("jdoe", "Jdoe-Password-1").await;
    let id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;
    let pin = UserUpdate { role_pinned: Some(true), ..Default::default() };
    let u = app.service.update_user(&admin_actor(), id, &pin).await.unwrap();
    assert!(u.role_pinned && u.role == Role::Admin);
    leave_admins(&d);
    app.session("jdoe", "Jdoe-Password-1").await;
    sync(&app).await;
    assert_eq!(role(&app, "jdoe").await, Role::Admin, "{mode:?}: pinned, the role stays");
    let x = app.service.explain_access(&admin_actor(), id).await.unwrap();
    assert!(x.role_pinned && x.facts.iter().any(|f| f.label == "Role" && f.value.contains("pinned")), "{x:?}");
}

#[tokio::test]
async fn group_mapping_is_authoritative_on_every_path_with_the_group_attribute() {
    mapping_is_authoritative_on_every_path(Mode::Attribute).await;
}

#[tokio::test]
async fn group_mapping_is_authoritative_on_every_path_with_nested_group_search() {
    mapping_is_authoritative_on_every_path(Mode::SearchNested).await;
}

#[tokio::test]
async fn test_login_sign_in_and_explain_access_agree_after_a_demotion() {
    let (d, app) = setup(Mode::Attribute).await;
    app.session("jdoe", "Jdoe-Password-1").await;
    assert_eq!(role(&app, "jdoe").await, Role::Admin);
    leave_admins(&d);
    let report =
        app.service.test_directory_login(&admin_actor(), DirectoryKind::Ldap, None, "jdoe", Some("Jdoe-Password-1")).await.unwrap();
    assert!(report.allowed, "{report:?}");
    assert!(report.verdict.contains("No group mapping matches: role User"), "{}", report.verdict);
    let id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;
    let x = app.service.explain_access(&admin_actor(), id).await.unwrap();
    assert!(x.allowed, "{x:?}");
    assert!(x.facts.iter().any(|f| f.value.contains("role System Admin → User")), "Explain access says what sign-in will do: {x:?}");
    app.session("jdoe", "Jdoe-Password-1").await;
    assert_eq!(role(&app, "jdoe").await, Role::User, "and sign-in does it");
}

#[tokio::test]
async fn a_reused_username_is_a_conflict_until_an_administrator_relinks() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &d.input()).await.unwrap();
    // The old jdoe signs in and gets an API key.
    let mut req = api("GET", "/api/v1/authn/ldap/login", None, Auth::None);
    req.headers_mut().insert(http::header::AUTHORIZATION, basic("jdoe", "Jdoe-Password-1").parse().unwrap());
    let old_key = body_json(app.send(req).await).await["api_key"].as_str().unwrap().to_string();
    let old = app.db.store.find_user("jdoe").await.unwrap().unwrap();
    let old_link = old.external_id.clone().unwrap();
    assert!(!old_link.starts_with("dn:"), "entryUUID links the account");

    // jdoe leaves; a new person gets the name (a new entryUUID).
    d.modify(&format!("dn: {JDOE_DN}\nchangetype: delete\n"));
    d.modify(&format!(
        "dn: {JDOE_DN}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: jdoe\ncn: Jane New\nsn: New\nmail: jane.new@example.com\nuserPassword: New-Jdoe-Password-1\n"
    ));

    // The new person cannot sign in as the old account.
    let (_, cookie) = app.login("jdoe", "New-Jdoe-Password-1").await;
    assert!(cookie.is_none(), "no inheritance of the old account");
    let reason = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap().items[0].reason.clone();
    assert!(reason.contains("conflict"), "{reason}");

    // The import table says conflict, with the reason.
    fetch(&app).await;
    let row = staged(&app, "jdoe").await;
    assert_eq!(row.status, "conflict", "{row:?}");
    assert!(row.problem.contains("linked to another directory entry"), "{row:?}");
    let r = app
        .service
        .import_staged_users(&admin_actor(), DirectoryKind::Ldap, &ImportRequest { ids: vec![row.id], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(r.failed, 1, "{r:?}");

    // Sync reports the conflict and changes neither account.
    let detail = sync(&app).await;
    assert!(detail.items.items.iter().any(|i| i.username == "jdoe" && i.action == "conflict"), "{:?}", detail.items);
    assert_eq!(detail.run.counts.conflict, 1);
    let still = app.db.store.find_user("jdoe").await.unwrap().unwrap();
    assert_eq!((still.id, still.external_id.as_deref(), still.name.as_str()), (old.id, Some(old_link.as_str()), old.name.as_str()));
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&old_key))).await, StatusCode::OK, "unchanged until relinked");

    // An administrator relinks: every old token is revoked, the new person signs in.
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let res = app.send(api("POST", &format!("/api/v1/users/{}/relink", old.id), None, Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::OK, "relink");
    let u = body_json(res).await;
    assert_ne!(u["external_id"].as_str(), Some(old_link.as_str()));
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&old_key))).await, StatusCode::UNAUTHORIZED, "old token revoked");
    let cookie = app.session("jdoe", "New-Jdoe-Password-1").await;
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!(me["username"], "jdoe");
    let ops = app
        .service
        .operation_log(&admin_actor(), &bindery_model::LogQuery { per_page: Some(500), ..Default::default() })
        .await
        .unwrap()
        .items;
    assert!(ops.iter().any(|o| o.action == "user.relink"), "audited");
    fetch(&app).await;
    assert_eq!(staged(&app, "jdoe").await.status, "imported", "the conflict is gone from the import table");
}

#[tokio::test]
async fn every_seed_account_gets_the_same_verdict_from_test_login_sign_in_and_explain_access() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    // An account whose password an administrator reset, under a policy
    // with pwdMustChange: it binds, but must change its password first.
    d.modify(
        "dn: uid=mustchange,ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: inetOrgPerson\nuid: mustchange\ncn: Must Change\n\
         sn: Change\nmail: mustchange@example.com\nuserPassword: Mustchange-Password-1\n\
         pwdPolicySubentry: cn=mustchange,ou=policies,dc=example,dc=com\n",
    );
    d.modify("dn: uid=mustchange,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: pwdReset\npwdReset: TRUE\n");
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &d.input()).await.unwrap();
    // Imported first, so every account has a Bindery user to explain.
    fetch(&app).await;
    let all = ImportRequest { all_matching: true, ..Default::default() };
    app.service.import_staged_users(&admin_actor(), DirectoryKind::Ldap, &all).await.unwrap();
    for (name, password, allowed) in [
        ("jdoe", "Jdoe-Password-1", true),              // a plain user
        ("nomail", "Nomail-Password-1", true),          // no mail
        ("élodie", "Pässwörd-É-1", true),               // non-ASCII name, UTF-8 password
        ("jsmith", "Jsmith-Password-1", true),          // RDN with , ( ) *
        ("tina", "Tina-Password-1", true),              // another OU
        ("locked", "Locked-Password-1", false),         // ppolicy lock
        ("disabled", "Disabled-Password-1", false),     // userAccountControl 514
        ("mustchange", "Mustchange-Password-1", false), // ppolicy pwdReset under pwdMustChange
    ] {
        let report = app.service.test_directory_login(&admin_actor(), DirectoryKind::Ldap, None, name, Some(password)).await.unwrap();
        let (_, cookie) = app.login(name, password).await;
        let user = app.db.store.find_user(name).await.unwrap().unwrap_or_else(|| panic!("{name} imported"));
        let x = app.service.explain_access(&admin_actor(), user.id).await.unwrap();
        assert_eq!(
            (report.allowed, cookie.is_some(), x.allowed),
            (allowed, allowed, allowed),
            "{name}: Test login {:?} / sign-in / Explain access {:?}",
            report.verdict,
            x.verdict
        );
        assert!(!report.verdict.contains(" is must "), "{name}: {}", report.verdict);
    }
}
