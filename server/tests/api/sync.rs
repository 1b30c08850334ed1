//! Sync (issue 5): settings and schedule, the plan (dry-run applies
//! nothing), create / update / disable / re-enable, the mass-change
//! threshold holding a run for approval, an incomplete enumeration that
//! disables nobody, reports to recipients (console and SMTP), and two
//! server processes on one PostgreSQL running each scheduled firing once.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, Role, SyncSettings};
use bindery_store::Backend;
use http::StatusCode;

use crate::helpers::*;

async fn configure(app: &TestApp, d: &Slapd, page_size: i64, settings: SyncSettings) {
    let mut input = d.input();
    input.page_size = page_size;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &settings).await.unwrap();
}

fn settings(disable: bool, threshold: i64) -> SyncSettings {
    SyncSettings { disable_missing: disable, threshold_percent: threshold, ..Default::default() }
}

pub(crate) async fn wait_sync(app: &TestApp, cookie: &str, id: i64, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..1200 {
        let detail =
            body_json(app.send(api("GET", &format!("/api/v1/sync/runs/{id}?per_page=200"), None, Auth::Cookie(cookie))).await).await;
        if done(&detail["run"]) {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sync run {id} did not get there in 60 s");
}

/// "Sync now" (or its dry-run) and wait for it to stop running.
pub(crate) async fn sync(app: &TestApp, cookie: &str, dry_run: bool) -> serde_json::Value {
    let res =
        app.send(api("POST", "/api/v1/directories/ldap/sync", Some(serde_json::json!({ "dry_run": dry_run })), Auth::Cookie(cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "sync started");
    let id = body_json(res).await["id"].as_i64().unwrap();
    wait_sync(app, cookie, id, |r| r["state"] != "running").await
}

pub(crate) fn items<'a>(detail: &'a serde_json::Value, action: &str) -> Vec<&'a serde_json::Value> {
    detail["items"]["items"].as_array().unwrap().iter().filter(|i| i["action"] == action).collect()
}

pub(crate) fn names(items: &[&serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|i| i["username"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

async fn active(app: &TestApp, username: &str) -> bool {
    app.db.store.find_user(username).await.unwrap().unwrap_or_else(|| panic!("{username} exists")).is_active
}

#[tokio::test]
async fn dry_run_applies_nothing_then_sync_creates_updates_disables_and_enables_again() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let engineering =
        app.service.create_organisation(&admin_actor(), &bindery_model::OrganisationInput { name: "Engineering".into() }).await.unwrap().id;
    configure(&app, &d, 3, SyncSettings { organisation_ids: vec![engineering], ..settings(true, 50) }).await;
    // Members of developers become auditors in the Support organisation.
    app.service.create_organisation(&admin_actor(), &bindery_model::OrganisationInput { name: "Support".into() }).await.unwrap();
    let mut input = d.input();
    input.page_size = 3;
    input.group_mappings =
        vec![bindery_model::GroupMapping::parse_line(&format!("cn=developers,ou=groups,{} => auditor; Support", d.base_dn)).unwrap()];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let (users_before, _) = app.db.store.count_users().await.unwrap();

    let dry = sync(&app, &cookie, true).await;
    assert_eq!(dry["run"]["state"], "done", "{dry}");
    assert_eq!(dry["run"]["dry_run"], true);
    let created = ["disabled", "jdoe", "jsmith", "locked", "nomail", "tina", "tom", "élodie"].len() - 1; // a disabled entry is not created
    assert_eq!(dry["run"]["counts"]["create"], created as i64, "{dry}");
    assert_eq!(dry["run"]["counts"]["directory_users"], 8);
    assert!(items(&dry, "create").iter().all(|i| i["outcome"] == "planned"));
    assert_eq!(app.db.store.count_users().await.unwrap().0, users_before, "a dry run creates nobody");

    let first = sync(&app, &cookie, false).await;
    assert_eq!((first["run"]["state"].as_str(), first["run"]["complete"].as_bool()), (Some("done"), Some(true)), "{first}");
    assert_eq!(first["run"]["counts"]["applied"], created as i64, "{first}");
    assert!(items(&first, "create").iter().all(|i| i["outcome"] == "applied"), "{first}");
    let tina = app.db.store.find_user("tina").await.unwrap().unwrap();
    assert_eq!((tina.source.as_str(), tina.password_hash.is_none()), ("ldap", true));
    assert_eq!(app.db.store.organisations_of(&[tina.id]).await.unwrap()[0].name, "Engineering");
    assert!(app.db.store.find_user("disabled").await.unwrap().is_none());
    // The group mapping applied at import: tina (developers) is an auditor in Support too.
    assert_eq!(tina.role.as_str(), "auditor");
    let orgs: Vec<String> = app.db.store.organisations_of(&[tina.id]).await.unwrap().into_iter().map(|o| o.name).collect();
    assert!(orgs.contains(&"Support".to_string()) && orgs.contains(&"Engineering".to_string()), "{orgs:?}");
    assert_eq!(app.db.store.find_user("tom").await.unwrap().unwrap().role.as_str(), "user");
    // Directory groups became Bindery groups with their members.
    let groups = app.service.list_groups(&admin_actor()).await.unwrap();
    let developers = groups.iter().find(|g| g.name == "developers").unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(developers.source, bindery_model::UserSource::Ldap);
    let members: Vec<&str> = developers.members.iter().map(|m| m.name.as_str()).collect();
    // Groups are computed as at sign-in: nested groups count (jdoe is in
    // developers through admins).
    assert_eq!(members, ["jdoe", "tina"], "{developers:?}");
    assert!(groups.iter().any(|g| g.name == "admins" && g.members.iter().any(|m| m.name == "jdoe")), "{groups:?}");

    // jdoe signs in (a live session); an admin disables tom by hand.
    let jdoe_cookie = app.session("jdoe", "Jdoe-Password-1").await;
    let tom = app.db.store.find_user("tom").await.unwrap().unwrap();
    app.service
        .update_user(&admin_actor(), tom.id, &bindery_model::UserUpdate { is_active: Some(false), ..Default::default() })
        .await
        .unwrap();

    // Directory changes: tina renamed, jdoe disabled, nomail deleted.
    let people = format!("ou=people,{}", d.base_dn);
    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: modrdn\nnewrdn: uid=tina2\ndeleteoldrdn: 1\n"));
    d.modify(&format!("dn: uid=jdoe,{people}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"));
    d.modify(&format!("dn: uid=nomail,{people}\nchangetype: delete\n"));
    let second = sync(&app, &cookie, false).await;
    assert_eq!(second["run"]["state"], "done", "{second}");
    let update = items(&second, "update");
    assert_eq!(names(&update), ["tina2"], "{second}");
    assert!(update[0]["reason"].as_str().unwrap().contains("renamed from tina to tina2"), "{second}");
    assert_eq!(app.db.store.find_user("tina2").await.unwrap().unwrap().id, tina.id, "same user, renamed");
    let disable = items(&second, "disable");
    assert_eq!(names(&disable), ["jdoe", "nomail"], "{second}");
    let reason = |u: &str| disable.iter().find(|i| i["username"] == u).unwrap()["reason"].as_str().unwrap().to_string();
    assert_eq!(reason("jdoe"), "disabled in the directory");
    assert_eq!(reason("nomail"), "missing from the directory");
    assert!(!active(&app, "jdoe").await && !active(&app, "nomail").await);
    let me = app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&jdoe_cookie))).await;
    assert_status(&me, StatusCode::UNAUTHORIZED, "the disabled user's session ended");

    // Back in the directory: jdoe is enabled again; tom, disabled by an
    // admin, stays disabled.
    d.modify(&format!("dn: uid=jdoe,{people}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n"));
    let third = sync(&app, &cookie, false).await;
    assert_eq!(names(&items(&third, "enable")), ["jdoe"], "{third}");
    assert!(active(&app, "jdoe").await);
    assert!(!active(&app, "tom").await, "an admin's disable is kept");

    // The run report as CSV.
    let id = second["run"]["id"].as_i64().unwrap();
    let res = app.send(api("GET", &format!("/api/v1/sync/runs/{id}/report.csv"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "csv");
    let csv = body_text(res).await;
    assert!(csv.starts_with("action,username,reason,outcome,error\r\n"), "{csv}");
    assert!(csv.contains("disable,nomail,missing from the directory,applied,"), "{csv}");

    // History, newest first.
    let runs = body_json(app.send(api("GET", "/api/v1/sync/runs", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!(runs["total"], 4);
    assert_eq!(runs["items"][0]["id"], third["run"]["id"]);
}

#[tokio::test]
async fn bad_entries_fail_alone_and_disabling_is_off_by_default() {
    let d = Slapd::start();
    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!("dn: uid=bademail,{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: bademail\ncn: b\nsn: b\nmail: nope\n"));
    let app = TestApp::new().await;
    configure(&app, &d, 100, SyncSettings::default()).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    let failed = items(&first, "failed");
    assert_eq!(names(&failed), ["bademail"], "{first}");
    assert_eq!((failed[0]["reason"].as_str(), failed[0]["outcome"].as_str()), (Some("invalid email address"), Some("failed")));
    assert_eq!(first["run"]["counts"]["create"], 7, "the others are created: {first}");

    d.modify(&format!("dn: uid=tom,{tech}\nchangetype: delete\n"));
    let second = sync(&app, &cookie, false).await;
    assert!(items(&second, "disable").is_empty(), "{second}");
    assert!(active(&app, "tom").await, "disabling is off by default");
    let notes = second["run"]["counts"]["notes"].to_string();
    assert!(notes.contains("disabling is off"), "{notes}");
}

#[tokio::test]
async fn a_run_over_the_threshold_waits_for_approval_or_rejection() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, &d, 100, settings(true, 10)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");

    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!("dn: uid=tom,{tech}\nchangetype: delete\n"));
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: delete\n"));
    let held = sync(&app, &cookie, false).await;
    assert_eq!(held["run"]["state"], "held", "2 of 6 is over 10%: {held}");
    assert!(held["run"]["counts"]["notes"].to_string().contains("held for approval"), "{held}");
    assert_eq!(names(&items(&held, "disable")), ["tina", "tom"]);
    assert!(active(&app, "tom").await && active(&app, "tina").await, "nothing applied while held");

    let id = held["run"]["id"].as_i64().unwrap();
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/reject"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "rejected");
    let rejected = wait_sync(&app, &cookie, id, |r| r["state"] == "rejected").await;
    assert!(items(&rejected, "disable").iter().all(|i| i["outcome"] == "rejected"));
    assert!(active(&app, "tom").await);
    let again = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/approve"), None, Auth::Cookie(&cookie))).await;
    assert_status(&again, StatusCode::CONFLICT, "a rejected run cannot be approved");

    // A held run whose snapshot was replaced by a newer enumeration cannot be approved.
    let stale = sync(&app, &cookie, false).await;
    assert_eq!(stale["run"]["state"], "held");
    let res = app.send(api("POST", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "fetch");
    for _ in 0..200 {
        let f = body_json(app.send(api("GET", "/api/v1/directories/ldap/users/fetch", None, Auth::Cookie(&cookie))).await).await;
        if f["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sid = stale["run"]["id"].as_i64().unwrap();
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{sid}/approve"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::CONFLICT, "snapshot replaced");
    assert!(body_json(res).await.to_string().contains("enumerated again"));

    // Auditors cannot approve; admins can, and the plan is applied.
    let held = sync(&app, &cookie, false).await;
    let id = held["run"]["id"].as_i64().unwrap();
    let (_, pw) = app.user("audrey", Role::Auditor).await;
    let auditor = app.session("audrey", &pw).await;
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/approve"), None, Auth::Cookie(&auditor))).await;
    assert_status(&res, StatusCode::FORBIDDEN, "auditor");
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/approve"), None, Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::OK, "approved");
    let done = wait_sync(&app, &cookie, id, |r| r["state"] != "running").await;
    assert_eq!(done["run"]["state"], "done", "{done}");
    assert!(items(&done, "disable").iter().all(|i| i["outcome"] == "applied"), "{done}");
    assert!(!active(&app, "tom").await && !active(&app, "tina").await);
}

#[tokio::test]
async fn a_directory_lost_mid_enumeration_disables_nobody() {
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", "3000")]);
    let app = TestApp::new().await;
    configure(&app, &d, 1000, settings(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let first = sync(&app, &cookie, false).await;
    assert_eq!((first["run"]["state"].as_str(), first["run"]["counts"]["create"].as_i64()), (Some("done"), Some(3007)), "{}", first["run"]);

    let mut input = d.input();
    input.page_size = 3;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let res = app.send(api("POST", "/api/v1/directories/ldap/sync", Some(serde_json::json!({})), Auth::Cookie(&cookie))).await;
    let id = body_json(res).await["id"].as_i64().unwrap();
    wait_sync(&app, &cookie, id, |r| r["entries"].as_i64().unwrap_or(0) > 0).await;
    d.stop();
    let run = wait_sync(&app, &cookie, id, |r| r["state"] != "running").await;
    assert_eq!((run["run"]["state"].as_str(), run["run"]["complete"].as_bool()), (Some("failed"), Some(false)), "{}", run["run"]);
    assert_eq!(run["run"]["counts"]["disable"], 0);
    assert!(run["run"]["counts"]["notes"].to_string().contains("nobody was disabled: the enumeration was incomplete"), "{}", run["run"]);
    let (users, active_users) = app.db.store.count_users().await.unwrap();
    assert_eq!(users, active_users, "everybody is still active");
}

#[tokio::test]
async fn settings_are_validated_and_a_crontab_wins_over_the_interval() {
    let app = TestApp::new().await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let put = |body: serde_json::Value| api("PUT", "/api/v1/directories/ldap/sync/settings", Some(body), Auth::Cookie(&cookie));

    let res = app
        .send(put(serde_json::json!({ "periodic": true, "crontab": "0 3 * * 1-5", "interval_hours": 6, "recipients": ["admin"] })))
        .await;
    assert_status(&res, StatusCode::OK, "saved");
    let view = body_json(res).await;
    assert_eq!(view["schedule"], "crontab 0 3 * * 1-5 (UTC)", "{view}");
    let runs: Vec<&str> = view["next_runs"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|t| t.ends_with("T03:00:00Z")), "{runs:?}");
    assert!(runs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(view["settings"]["threshold_percent"], 10, "default threshold");
    assert_eq!(view["settings"]["disable_missing"], false, "off by default");

    let res = app.send(put(serde_json::json!({ "periodic": true, "interval_hours": 6 }))).await;
    let view = body_json(res).await;
    assert_eq!(view["schedule"], "every 6 h");

    for (body, field, words) in [
        (serde_json::json!({ "periodic": true, "crontab": "61 * * * *" }), "crontab", "invalid crontab"),
        (serde_json::json!({ "periodic": true, "crontab": "* * *" }), "crontab", "five fields"),
        (serde_json::json!({ "periodic": true }), "crontab", "crontab or an interval"),
        (serde_json::json!({ "interval_hours": -1 }), "interval_hours", "between"),
        (serde_json::json!({ "threshold_percent": 101 }), "threshold_percent", "between"),
        (serde_json::json!({ "organisation_ids": [999] }), "organisation_ids", "999"),
        (serde_json::json!({ "recipients": ["nobody-here"] }), "recipients", "nobody-here"),
    ] {
        let res = app.send(put(body.clone())).await;
        assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, &body.to_string());
        let err = body_json(res).await.to_string();
        assert!(err.contains(field) && err.contains(words), "{body}: {err}");
    }
    let kept = body_json(app.send(api("GET", "/api/v1/directories/ldap/sync/settings", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!(kept["schedule"], "every 6 h", "nothing invalid was saved: {kept}");
}

/// A minimal SMTP sink: accepts one message and returns it.
fn smtp_sink() -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut message = String::new();
        let mut in_data = false;
        out.write_all(b"220 sink ESMTP\r\n").unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    out.write_all(b"250 queued\r\n").unwrap();
                } else {
                    message.push_str(&line);
                }
            } else {
                let cmd = line.to_ascii_uppercase();
                if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                    out.write_all(b"250 sink\r\n").unwrap();
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    out.write_all(b"354 go ahead\r\n").unwrap();
                } else if cmd.starts_with("QUIT") {
                    out.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    out.write_all(b"250 ok\r\n").unwrap();
                }
            }
            line.clear();
        }
        message
    });
    (port, handle)
}

#[tokio::test]
async fn recipients_get_the_summary_in_the_console_and_by_email() {
    let d = Slapd::start();
    let (port, sink) = smtp_sink();
    let options = bindery_service::Options {
        min_failure_delay: MIN_FAILURE_DELAY,
        smtp: Some(bindery_service::SmtpOptions { host: "127.0.0.1".into(), port, from: "bindery@example.com".into() }),
        ..Default::default()
    };
    let app = TestApp::with_options(Backend::Sqlite, options).await;
    let (rid, _) = app.user("rita", Role::Auditor).await;
    app.service
        .update_user(&admin_actor(), rid, &bindery_model::UserUpdate { email: Some("rita@example.com".into()), ..Default::default() })
        .await
        .unwrap();
    configure(&app, &d, 100, SyncSettings { recipients: vec!["rita".into()], ..Default::default() }).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let run = sync(&app, &cookie, false).await;
    let id = run["run"]["id"].as_i64().unwrap();

    let mail = tokio::task::spawn_blocking(move || sink.join().unwrap()).await.unwrap();
    assert!(mail.contains("To: rita@example.com") && mail.contains(&format!("Sync #{id}")), "{mail}");
    assert!(mail.contains("7 created"), "{mail}");
    let mut note = None;
    for _ in 0..100 {
        let n = app.db.store.list_notifications(rid, 5).await.unwrap();
        if let Some(first) = n.into_iter().next() {
            note = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let note = note.expect("a console notification");
    assert_eq!(note.email_status, "sent to rita@example.com");
    assert!(note.body.contains("7 created"), "{}", note.body);
}

/// Two `bindery` processes on one PostgreSQL database, both ticking the
/// scheduler every second: each firing of the schedule runs exactly once.
#[tokio::test]
async fn two_server_processes_on_one_postgres_run_each_scheduled_sync_once() {
    let d = Slapd::start();
    let key = bindery_service::SecretKey::generate();
    let options = bindery_service::Options { min_failure_delay: MIN_FAILURE_DELAY, secret_key: key.clone(), ..Default::default() };
    let app = TestApp::with_options(Backend::Postgres, options).await;
    configure(&app, &d, 100, SyncSettings { periodic: true, interval_hours: 24, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = [serve(&app.db.url, &key, dir.path(), "server1.log"), serve(&app.db.url, &key, dir.path(), "server2.log")];

    let store = &app.db.store;
    let firings = 3;
    for firing in 1..=firings {
        // Make the schedule due now, as if its time had come.
        let (_, next) = store.get_sync_settings("ldap").await.unwrap().unwrap();
        assert!(store.claim_schedule("ldap", next.unwrap(), Some(bindery_service::util::now_ms() - 1)).await.unwrap());
        let mut runs = 0;
        for _ in 0..200 {
            let (rows, total) = store.list_runs(bindery_model::RunKind::Sync, 50, 0).await.unwrap();
            runs = total;
            if total == firing && rows.iter().all(|r| r.state != "running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if runs != firing {
            let logs: String =
                (1..=2).map(|n| std::fs::read_to_string(dir.path().join(format!("server{n}.log"))).unwrap_or_default()).collect();
            panic!("firing {firing}: {runs} runs, want one per firing\n{logs}");
        }
    }
    // Both replicas had their chance for another few ticks: still one run each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rows, total) = store.list_runs(bindery_model::RunKind::Sync, 50, 0).await.unwrap();
    for s in servers.iter_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    let logs: String = (1..=2).map(|n| std::fs::read_to_string(dir.path().join(format!("server{n}.log"))).unwrap_or_default()).collect();
    assert_eq!(total, firings, "{rows:?}\n{logs}");
    assert!(rows.iter().all(|r| r.state == "done" && r.started_by == "schedule"), "{rows:?}\n{logs}");
    // The replica that lost a firing never even tried (no lease conflict logged).
    let (ops, _) =
        store.list_operation_events(&bindery_store::LogFilter { search: Some("sync_skipped"), ..Default::default() }, 50, 0).await.unwrap();
    assert!(ops.is_empty(), "a replica tried to run a firing it did not claim: {ops:?}");
}

/// A `bindery serve` process on the test's database, ticking the scheduler every second.
pub(crate) fn serve(db_url: &str, key: &bindery_service::SecretKey, dir: &std::path::Path, log: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_bindery"))
        .arg("serve")
        .env("BINDERY_DATABASE_URL", db_url)
        .env("BINDERY_LISTEN", "127.0.0.1:0")
        .env("BINDERY_SECRET_KEY", key.to_hex())
        .env("BINDERY_SYNC_TICK_SECONDS", "1")
        .env("BINDERY_LOG_LEVEL", "warn")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .expect("start bindery")
}

/// Killed while a first sync creates its users (SIGKILL, no goodbye): after a restart the run is
/// interrupted, never "running"; what was committed is whole; the next run
/// completes the job.
#[tokio::test]
async fn a_crash_mid_sync_leaves_no_run_running_and_the_next_run_completes() {
    crash_mid_sync(Backend::Sqlite).await;
}

/// The same on PostgreSQL, where live replicas may share the database: the
/// dead process's run is left alone while its lease could still be renewed,
/// and interrupted once the lease has lapsed (aged here by the lease's TTL,
/// rather than waiting a minute).
#[tokio::test]
async fn a_crash_mid_sync_on_postgres_leaves_no_run_running_and_the_next_run_completes() {
    crash_mid_sync(Backend::Postgres).await;
}

async fn crash_mid_sync(backend: Backend) {
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", "3000")]);
    let key = bindery_service::SecretKey::generate();
    let options = bindery_service::Options { min_failure_delay: MIN_FAILURE_DELAY, secret_key: key.clone(), ..Default::default() };
    let app = TestApp::with_options(backend, options).await;
    configure(&app, &d, 1000, SyncSettings { periodic: true, interval_hours: 24, ..Default::default() }).await;
    let store = &app.db.store;
    let dir = tempfile::tempdir().unwrap();
    let fire = || async {
        let (_, next) = store.get_sync_settings("ldap").await.unwrap().unwrap();
        assert!(store.claim_schedule("ldap", next.unwrap(), Some(bindery_service::util::now_ms() - 1)).await.unwrap());
    };

    let mut server = serve(&app.db.url, &key, dir.path(), "first.log");
    fire().await;
    // Kill it as soon as the apply has committed something.
    let mut killed_with = 0;
    for _ in 0..1200 {
        let (users, _) = store.count_users().await.unwrap();
        if users > 1 {
            killed_with = users;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(killed_with > 1, "the apply never started: {}", std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default());
    let (rows, _) = store.list_runs(bindery_model::RunKind::Sync, 10, 0).await.unwrap();
    assert_eq!(rows[0].state, "running", "killed mid-run: {rows:?}");
    let (users_after_kill, _) = store.count_users().await.unwrap();
    assert!(users_after_kill < 3008, "killed before the end ({users_after_kill} users)");
    // A first sync creates users page by page (`first_load`): each page's
    // users, their items and their rows' links in one transaction, so
    // what was committed is whole.
    let (_, created_items) = store.list_items(rows[0].id, Some(bindery_model::SyncAction::Create), 1, 0).await.unwrap();
    assert_eq!(users_after_kill - 1, created_items, "each user committed with its item");
    let linked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM staged_users WHERE user_id IS NOT NULL AND settled = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(users_after_kill - 1, linked, "each user committed with its row linked and settled");

    // Restart: the run is interrupted; the next firing completes the job.
    let mut server = serve(&app.db.url, &key, dir.path(), "second.log");
    if backend == Backend::Postgres {
        // The killed process's lease is still current: another replica
        // cannot tell it from a live one, so its run is left running…
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            store.list_runs(bindery_model::RunKind::Sync, 10, 0).await.unwrap().0[0].state,
            "running",
            "a run under a current lease"
        );
        // … until the lease lapses (its TTL is a minute; move it past).
        let aged = sqlx::query("UPDATE sync_leases SET expires_at = expires_at - 120000").execute(store.pool()).await.unwrap();
        assert_eq!(aged.rows_affected(), 1, "the dead process's lease");
        sqlx::query("UPDATE sync_runs SET started_at = started_at - 120000").execute(store.pool()).await.unwrap();
    }
    let mut state = bindery_model::RunState::Running;
    for _ in 0..300 {
        state = store.list_runs(bindery_model::RunKind::Sync, 10, 0).await.unwrap().0[0].state;
        if state == "interrupted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "interrupted");
    fire().await;
    let mut last = None;
    for _ in 0..600 {
        let (rows, total) = store.list_runs(bindery_model::RunKind::Sync, 10, 0).await.unwrap();
        if total == 2 && rows[0].state != "running" {
            last = Some(rows[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    let last = last.unwrap_or_else(|| panic!("{}", std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default()));
    assert_eq!(last.state, "done", "{last:?}");
    let counts: bindery_model::SyncCounts = serde_json::from_str(&last.summary_json).unwrap();
    assert_eq!(counts.create, 3008 - users_after_kill, "the rest created: {counts:?}");
    assert_eq!(store.count_users().await.unwrap().0, 3008, "admin + 3007 directory users, each once");
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
        .filter(|u| u.source.as_str() == "ldap" && u.is_active)
        .map(|u| (u.username, u.name, u.email, u.role.as_str().to_string(), u.is_active))
        .collect();
    out.sort();
    out
}

/// Issue 16: a resync diffs the snapshot in place. After an add, a modify,
/// a rename, a disable and a delete, the import table and the active
/// directory users are what a first sync of the resulting directory gives.
async fn resync_equals_a_first_sync(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, 3, settings(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let unchanged = sync(&app, &cookie, false).await;
    assert_eq!(unchanged["run"]["counts"]["update"], 0, "{unchanged}");
    let notes = |run: &serde_json::Value| run["run"]["counts"]["notes"].to_string();
    assert!(notes(&unchanged).contains("directory groups not rebuilt: the enumeration changed no row"), "{unchanged}");
    let developers = format!("cn=developers,ou=groups,{}", d.base_dn);
    assert_eq!(group_members(&app, &developers).await, ["jdoe", "tina"], "jdoe through the nested admins");

    let people = format!("ou=people,{}", d.base_dn);
    let tech = format!("ou=tech,{}", d.base_dn);
    d.modify(&format!("dn: {developers}\nchangetype: modify\nadd: member\nmember: uid=tom,{tech}\n"));
    d.modify(&format!(
        "dn: uid=newbie,{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: newbie\ncn: New Bie\nsn: Bie\nmail: newbie@example.com\n"
    ));
    d.modify(&format!("dn: uid=tom,{tech}\nchangetype: modify\nreplace: mail\nmail: thomas@example.com\n"));
    d.modify(&format!("dn: uid=tina,{tech}\nchangetype: modrdn\nnewrdn: uid=tina2\ndeleteoldrdn: 1\n"));
    d.modify(&format!("dn: uid=jdoe,{people}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"));
    d.modify(&format!("dn: uid=nomail,{people}\nchangetype: delete\n"));
    let second = sync(&app, &cookie, false).await;
    assert_eq!(second["run"]["state"], "done", "{second}");
    assert_eq!(names(&items(&second, "create")), ["newbie"], "{second}");
    assert_eq!(names(&items(&second, "disable")), ["jdoe", "nomail"], "{second}");
    assert!(!notes(&second).contains("directory groups not rebuilt"), "{second}");
    assert_eq!(group_members(&app, &developers).await, ["jdoe", "tina2", "tom"], "a membership the directory added (tina renamed)");

    let fresh = TestApp::with_backend(backend).await;
    configure(&fresh, &d, 3, settings(true, 100)).await;
    let fresh_cookie = fresh.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&fresh, &fresh_cookie, false).await["run"]["state"], "done");
    let (a, b) = (staged_rows(&app).await, staged_rows(&fresh).await);
    assert_eq!(a.len(), 8, "{a:?}");
    assert_eq!(a, b, "the import table, row by row");
    assert_eq!(directory_users(&app).await, directory_users(&fresh).await, "the active directory users");
    // Nothing changed since: the next resync plans nothing.
    let again = sync(&app, &cookie, false).await;
    let c = &again["run"]["counts"];
    assert_eq!((c["create"].as_i64(), c["update"].as_i64(), c["disable"].as_i64()), (Some(0), Some(0), Some(0)), "{again}");
}

#[tokio::test]
async fn a_resync_equals_a_first_sync_of_the_resulting_directory() {
    resync_equals_a_first_sync(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_resync_equals_a_first_sync_of_the_resulting_directory_on_postgres() {
    resync_equals_a_first_sync(Backend::Postgres).await;
}

/// A run's items as (username, action, outcome, reason), sorted.
fn item_facts(detail: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = detail["items"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let f = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (f("username"), f("action"), f("outcome"), f("reason"))
        })
        .collect();
    v.sort();
    v
}

/// Issue 16: a first sync creates its users page by page as the
/// enumeration reads them, and ends as a plan over the whole snapshot
/// would: an entry whose username (case aside) or email a later page
/// repeats, or whose email a local user has, is created by its page and
/// taken back once every entry is read; a local user's name is never
/// taken. Compared with a directory synced after a dry run (whose sync
/// plans the whole snapshot), row by row, user by user, item by item.
async fn first_sync_page_by_page(backend: Backend) {
    let d = Slapd::start();
    let tech = format!("ou=tech,{}", d.base_dn);
    // In the last OU, so on a later page (2 entries a page) than the people they repeat.
    let add = |uid: &str, mail: &str| {
        format!("dn: uid={uid},{tech}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\n")
    };
    d.modify(&add("JDOE", "jdoe2@example.com"));
    d.modify(&add("twin", "jsmith@example.com"));
    d.modify(&add("olga", "olga@example.com"));
    let local = |username: &str, email: &str| bindery_model::NewUser {
        username: username.into(),
        name: username.into(),
        email: email.into(),
        role: Role::User,
        password: "Local-Pass-12345".into(),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for dry_run_first in [false, true] {
        let app = TestApp::with_backend(backend).await;
        // A local user with tina's email, and one with olga's name.
        app.service.create_user(&admin_actor(), &local("ann", "tina@example.com")).await.unwrap();
        app.service.create_user(&admin_actor(), &local("olga", "o@example.org")).await.unwrap();
        configure(&app, &d, 2, settings(true, 100)).await;
        let cookie = app.session("admin", ADMIN_PASSWORD).await;
        if dry_run_first {
            assert_eq!(sync(&app, &cookie, true).await["run"]["state"], "done");
        }
        let run = sync(&app, &cookie, false).await;
        assert_eq!(run["run"]["state"], "done", "{run}");
        runs.push((app, run));
    }
    let ((paged, by_page), (whole, by_plan)) = (&runs[0], &runs[1]);
    let notes = |run: &serde_json::Value| run["run"]["counts"]["notes"].to_string();
    assert!(
        notes(by_page).contains("deleted again once every entry was read, because another entry shares their username or email"),
        "{by_page}"
    );
    assert!(!notes(by_plan).contains("page by page"), "the sync after a dry run plans the whole snapshot: {by_plan}");
    let refused: Vec<_> = items(by_page, "failed").iter().map(|i| i["username"].as_str().unwrap().to_string()).collect();
    for name in ["jdoe", "JDOE", "jsmith", "twin", "tina", "olga"] {
        assert!(refused.iter().any(|r| r == name), "{name} refused: {by_page}");
        let user = paged.db.store.find_user(name).await.unwrap();
        assert!(user.is_none_or(|u| u.source.as_str() == "local"), "no directory user {name}");
    }
    assert_eq!(item_facts(by_page), item_facts(by_plan), "the run's items");
    assert_eq!(by_page["run"]["counts"]["create"], by_plan["run"]["counts"]["create"], "{by_page} {by_plan}");
    assert_eq!(staged_rows(paged).await, staged_rows(whole).await, "the import table, row by row");
    assert_eq!(directory_users(paged).await, directory_users(whole).await, "the directory users");
}

#[tokio::test]
async fn a_first_sync_creates_page_by_page_and_ends_as_a_plan_of_the_whole_snapshot() {
    first_sync_page_by_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_first_sync_creates_page_by_page_and_ends_as_a_plan_of_the_whole_snapshot_on_postgres() {
    first_sync_page_by_page(Backend::Postgres).await;
}

/// A first sync cancelled while its pages create users applies nothing,
/// as any cancelled sync: the users its pages created are deleted again,
/// and the next sync creates everyone.
#[tokio::test]
async fn a_cancelled_first_sync_takes_back_the_users_its_pages_created() {
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", "3000")]);
    let app = TestApp::new().await;
    configure(&app, &d, 2, settings(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let res =
        app.send(api("POST", "/api/v1/directories/ldap/sync", Some(serde_json::json!({ "dry_run": false })), Auth::Cookie(&cookie))).await;
    assert_status(&res, StatusCode::ACCEPTED, "sync started");
    let id = body_json(res).await["id"].as_i64().unwrap();
    let store = &app.db.store;
    for _ in 0..1000 {
        if store.count_users().await.unwrap().0 > 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let created = store.count_users().await.unwrap().0 - 1;
    assert!(created > 0, "the pages were creating users");
    let res = app.send(api("POST", &format!("/api/v1/sync/runs/{id}/cancel"), None, Auth::Cookie(&cookie))).await;
    assert!(res.status().is_success(), "cancel: {:?}", res.status());
    let run = wait_sync(&app, &cookie, id, |r| r["state"] != "running").await;
    assert_eq!(run["run"]["state"], "cancelled", "{run}");
    assert_eq!(store.count_users().await.unwrap().0, 1, "only the administrator is left: {run}");
    assert!(items(&run, "create").is_empty(), "no create is recorded: {run}");
    let linked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM staged_users WHERE user_id IS NOT NULL OR settled = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(linked, 0, "the staged rows are new again");
    let staged = store.count_staged("ldap").await.unwrap();
    assert!(staged > 0, "the rows read stay staged");

    let next = sync(&app, &cookie, false).await;
    assert_eq!(next["run"]["state"], "done", "{next}");
    assert_eq!(store.count_users().await.unwrap().0, 3008, "admin + 3007 directory users");
}

/// A page of a first sync that cannot create its users (here a trigger
/// refuses one of them) is staged only, as are the pages after it, and the
/// plan decides their rows: that user's change fails alone, everyone else
/// is created, and the run says why.
#[tokio::test]
async fn a_first_sync_page_that_cannot_create_its_users_leaves_them_to_the_plan() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    sqlx::query(
        "CREATE TRIGGER refuse_tom BEFORE INSERT ON users WHEN NEW.username = 'tom' BEGIN SELECT RAISE(ABORT, 'tom is refused'); END",
    )
    .execute(app.db.store.pool())
    .await
    .unwrap();
    configure(&app, &d, 2, settings(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let run = sync(&app, &cookie, false).await;
    assert_eq!(run["run"]["state"], "done", "{run}");
    let notes = run["run"]["counts"]["notes"].to_string();
    assert!(notes.contains("first sync: a page could not create its users"), "{notes}");
    assert!(notes.contains("tom is refused"), "{notes}");
    let tom: Vec<_> = run["items"]["items"].as_array().unwrap().iter().filter(|i| i["username"] == "tom").collect();
    assert_eq!(tom.len(), 1, "{run}");
    assert_eq!(tom[0]["outcome"], "failed", "{run}");
    assert!(app.db.store.find_user("tom").await.unwrap().is_none());
    for name in ["jdoe", "jsmith", "tina", "élodie"] {
        assert!(active(&app, name).await, "{name} created");
    }
    let c = &run["run"]["counts"];
    assert_eq!((c["create"].as_i64(), c["applied"].as_i64(), c["apply_failed"].as_i64()), (Some(7), Some(6), Some(1)), "{run}");
}

/// Issue 16: the plan skips rows whose last plan needed nothing only while
/// the rules are the same: editing the group mapping of an unchanged
/// directory promotes, then demotes, the users it names.
async fn mapping_edit_re_plans(backend: Backend) {
    let d = Slapd::start();
    let app = TestApp::with_backend(backend).await;
    configure(&app, &d, 3, settings(true, 100)).await;
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    assert_eq!(sync(&app, &cookie, false).await["run"]["state"], "done");
    let role = |u: &'static str| {
        let store = app.db.store.clone();
        async move { store.find_user(u).await.unwrap().unwrap().role.as_str().to_string() }
    };
    assert_eq!(role("tina").await, "user");
    let quiet = sync(&app, &cookie, false).await;
    assert_eq!(quiet["run"]["counts"]["update"], 0, "{quiet}");

    let mut input = d.input();
    input.page_size = 3;
    input.group_mappings =
        vec![bindery_model::GroupMapping::parse_line(&format!("cn=developers,ou=groups,{} => auditor", d.base_dn)).unwrap()];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let promoted = sync(&app, &cookie, false).await;
    assert_eq!(names(&items(&promoted, "update")), ["jdoe", "tina"], "{promoted}");
    assert_eq!(role("tina").await, "auditor");

    // The mapping now names admins only (jdoe is one; tina is not).
    input.group_mappings = vec![bindery_model::GroupMapping::parse_line(&format!("cn=admins,ou=groups,{} => auditor", d.base_dn)).unwrap()];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let demoted = sync(&app, &cookie, false).await;
    assert_eq!(names(&items(&demoted, "update")), ["tina"], "{demoted}");
    assert_eq!((role("tina").await, role("jdoe").await), ("user".to_string(), "auditor".to_string()));
}

#[tokio::test]
async fn editing_a_mapping_re_plans_an_unchanged_directory() {
    mapping_edit_re_plans(Backend::Sqlite).await;
}

#[tokio::test]
async fn editing_a_mapping_re_plans_an_unchanged_directory_on_postgres() {
    mapping_edit_re_plans(Backend::Postgres).await;
}

/// SQLite: (rows in the trigram search index, rows of the snapshot, whether
/// the trigger that adds new rows to the index exists, definitions a bulk
/// load has yet to put back).
async fn search_index_state(app: &TestApp) -> (i64, i64, i64, i64) {
    let pool = app.db.store.pool();
    let one = |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap() };
    (
        bindery_store::testing::search_index_rows(&app.db.store).await,
        one("SELECT COUNT(*) FROM staged_users").await,
        one("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'staged_search_insert'").await,
        one("SELECT COUNT(*) FROM bulk_dropped_indexes").await,
    )
}

/// Wait (up to 10 s) until the import table's indexes a first sync's bulk
/// load left out (SQLite: its search index too) are back, which happens
/// once its run has ended.
async fn wait_for_page_indexes(app: &TestApp) {
    let t = std::time::Instant::now();
    while app.db.store.bulk_load_pending().await.unwrap() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the import table's indexes were not built after the run");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Issue 16: a first sync on SQLite loads the empty snapshot without
/// writing each row into the trigram search index, and fills the index
/// once the run has ended (the run does not wait for it). Whether the run
/// applies its plan or stops after it: as soon as it is seen done, the
/// import table's search finds (through the index, or the search text
/// while it is filled); then the index holds every row, the trigger that
/// keeps it is back, and the search finds through it; a later sync adds a
/// new entry through the trigger again.
#[tokio::test]
async fn a_first_sync_fills_the_search_index_once_on_sqlite() {
    let d = Slapd::start();
    for dry_run in [true, false] {
        let app = TestApp::with_backend(Backend::Sqlite).await;
        assert_eq!(search_index_state(&app).await, (0, 0, 1, 0));
        configure(&app, &d, 3, settings(true, 100)).await;
        let cookie = app.session("admin", ADMIN_PASSWORD).await;
        let run = sync(&app, &cookie, dry_run).await;
        assert_eq!(run["run"]["state"], "done", "{run}");
        assert!(
            run["run"]["counts"]["notes"].to_string().contains("loaded without its indexes of sorts and search"),
            "dry run {dry_run}: {run}"
        );
        let page = |q: &'static str| {
            let (app, cookie) = (&app, &cookie);
            async move {
                let res = app.send(api("GET", &format!("/api/v1/directories/ldap/users?q={q}"), None, Auth::Cookie(cookie))).await;
                assert_status(&res, StatusCode::OK, q);
                let body = body_json(res).await;
                let names: Vec<String> =
                    body["items"].as_array().unwrap().iter().map(|r| r["username"].as_str().unwrap().to_string()).collect();
                (body["total"].as_i64().unwrap(), names)
            }
        };
        assert_eq!(page("jdoe").await, (1, vec!["jdoe".to_string()]), "dry run {dry_run}, as soon as the run is done");
        wait_for_page_indexes(&app).await;
        assert_eq!(search_index_state(&app).await, (8, 8, 1, 0), "dry run {dry_run}");
        // A search the last one's count is not kept for, through the index.
        assert_eq!(page("doe").await, (1, vec!["jdoe".to_string()]), "dry run {dry_run}");
        if dry_run {
            continue;
        }
        // The next sync has a snapshot: no bulk load, and the trigger adds
        // the new entry to the index.
        d.modify(&format!(
            "dn: uid=zelda.search,ou=people,{}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: zelda.search\ncn: Zelda\nsn: x\nmail: zelda@example.com\n",
            d.base_dn
        ));
        let again = sync(&app, &cookie, false).await;
        assert!(!again["run"]["counts"]["notes"].to_string().contains("loaded without its indexes of sorts and search"), "{again}");
        assert_eq!(search_index_state(&app).await, (9, 9, 1, 0));
        assert_eq!(page("lda.sea").await, (1, vec!["zelda.search".to_string()]));
    }
}

/// The snapshot table's indexes as the catalog defines them, and how many
/// a bulk load still has to build.
async fn snapshot_indexes(app: &TestApp) -> (Vec<(String, String)>, i64) {
    let pool = app.db.store.pool();
    let mut defs: Vec<(String, String)> =
        sqlx::query_as("SELECT CAST(indexname AS TEXT), indexdef FROM pg_indexes WHERE tablename = 'staged_users'")
            .fetch_all(pool)
            .await
            .unwrap();
    defs.sort();
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bulk_dropped_indexes").fetch_one(pool).await.unwrap();
    (defs, pending)
}

/// Issue 16: a first sync on PostgreSQL loads the empty snapshot table
/// without its secondary indexes. Whether the run applies its plan or
/// stops after it (a dry run), the indexes the migrations made are back,
/// defined the same, when the run is seen done, and the run says so.
#[tokio::test]
async fn a_first_sync_builds_the_import_tables_indexes_again_on_postgres() {
    let d = Slapd::start();
    for dry_run in [true, false] {
        let app = TestApp::with_backend(Backend::Postgres).await;
        let migrated = snapshot_indexes(&app).await;
        assert!(migrated.0.len() > 2 && migrated.1 == 0, "{migrated:?}");
        configure(&app, &d, 3, settings(true, 100)).await;
        let cookie = app.session("admin", ADMIN_PASSWORD).await;
        let run = sync(&app, &cookie, dry_run).await;
        assert_eq!(run["run"]["state"], "done", "{run}");
        let notes = run["run"]["counts"]["notes"].to_string();
        assert!(notes.contains("loaded without its indexes of sorts and search"), "dry run {dry_run}: {run}");
        // The indexes the run reads were built inside it; the import
        // table's own (its sorts and search) once it ended.
        let at_end: Vec<String> = snapshot_indexes(&app).await.0.into_iter().map(|(n, _)| n).collect();
        for name in ["staged_users_user", "staged_users_unsettled", "staged_users_rule_problem"] {
            assert!(at_end.contains(&name.to_string()), "dry run {dry_run}: {name} built in the run: {at_end:?}");
        }
        wait_for_page_indexes(&app).await;
        assert_eq!(snapshot_indexes(&app).await, migrated, "dry run {dry_run}");
        assert_eq!(app.db.store.count_staged("ldap").await.unwrap(), 8);
        // The next sync has a snapshot: no bulk load.
        let again = sync(&app, &cookie, false).await;
        assert!(!again["run"]["counts"]["notes"].to_string().contains("loaded without its indexes of sorts and search"), "{again}");
        assert_eq!(snapshot_indexes(&app).await, migrated);
    }
}
