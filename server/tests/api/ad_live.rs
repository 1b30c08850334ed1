//! Live deprovisioning of Active Directory (issue 17 §2) against a real
//! Samba AD DC (`testkit/samba`): change notification triggers a DirSync
//! read with the stream's own cookie. A user disabled (`userAccountControl`
//! bit 2) or deleted in AD loses every session and API token within 10
//! seconds, without a sync, and the disable is a `live` run; an ordinary
//! service account, which may not read Deleted Objects, still sees the
//! disable and its status says plainly that deletions are left to the
//! sync; the stream comes back after the domain controller restarts.

use std::time::{Duration, Instant};

use bindery_directory::testing::Samba;
use bindery_model::{DirectoryInput, DirectoryKind};
use http::StatusCode;

use crate::helpers::*;
use crate::live::{accepted, connected, disabled_by_live, disconnected, live_settings, live_status, refused_within, signed_in};
use crate::sync::sync;

/// Save the directory, detect the delta method (Test connection), check
/// it, turn live deprovisioning on and sync once so the users are linked.
async fn configure(app: &TestApp, input: &DirectoryInput, want: (&str, bool)) -> String {
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, input).await.unwrap();
    let report = app.service.test_directory_connection(&admin_actor(), DirectoryKind::Ldap, None).await.unwrap();
    assert_eq!(report.delta.as_ref().map(|d| (d.method.as_str(), d.sees_deletions)), Some(want), "{report:#?}");
    // Test connection offers live deprovisioning, and says what it cannot see.
    let words = report.delta.as_ref().and_then(|d| d.live_words()).unwrap_or_default();
    assert!(words.contains("Live deprovisioning: available (change notification, read by DirSync)"), "{words}");
    assert_eq!(words.contains("deletions are not visible"), !want.1, "{words}");
    app.service.save_sync_settings(&admin_actor(), DirectoryKind::Ldap, &live_settings()).await.unwrap();
    let cookie = app.session("admin", ADMIN_PASSWORD).await;
    let run = sync(app, &cookie, false).await;
    assert_eq!(run["run"]["state"], "done", "{run}");
    cookie
}

/// The kinds of the runs on the Sync runs page, newest first.
async fn run_kinds(app: &TestApp, admin: &str) -> Vec<String> {
    let res = app.send(api("GET", "/api/v1/sync/runs", None, Auth::Cookie(admin))).await;
    assert_status(&res, StatusCode::OK, "sync runs");
    let runs = body_json(res).await;
    runs["items"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect()
}

/// The runs' kinds once they are `want`, waited for briefly: a live
/// disable refuses the user's session and token first, in its own
/// transaction, and records its run just after (`record_live_run`).
async fn runs_become(app: &TestApp, admin: &str, want: &[&str]) {
    let t = Instant::now();
    loop {
        let kinds = run_kinds(app, admin).await;
        if kinds == want || t.elapsed() >= Duration::from_secs(5) {
            assert_eq!(kinds, want, "the sync runs");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until `username` is disabled in Bindery (or panic after `within`).
async fn disabled_within(app: &TestApp, username: &str, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if !app.db.store.find_user(username).await.unwrap().unwrap().is_active {
            return Some(t.elapsed());
        }
        if t.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With the replication account (DirSync, which may read Deleted Objects):
/// a disable and a deletion each end the user's session and token within
/// 10 s; each is a `live` run and an operation-log entry; no sync ran.
#[tokio::test]
async fn ad_a_user_disabled_or_deleted_in_ad_loses_sessions_and_tokens_within_10_s() {
    let d = Samba::start();
    let app = TestApp::new().await;
    let admin = configure(&app, &d.input_as(&d.repl_dn, &d.repl_password), ("dirsync", true)).await;
    let (s5, t5) = signed_in(&app, &admin, "user05", &d.user_password).await;
    let (s6, t6) = signed_in(&app, &admin, "user06", &d.user_password).await;
    let streams = app.service.spawn_live_streams();
    let (status, took) = connected(&app, &admin).await;
    eprintln!("AD live stream connected after {} ms: {status}", took.as_millis());
    assert_eq!(status["method"], "change notification with show-deleted, changes read by DirSync", "{status}");
    assert!(status["unseen"].is_null(), "disables and deletions are both seen: {status}");

    d.set_uac(&d.user_dn("user05"), 514).await;
    let took = refused_within(&app, &s5, &t5, "AD disable").await;
    eprintln!("AD live: user05 disabled in AD, session and token refused after {} ms", took.as_millis());
    assert!(!app.db.store.find_user("user05").await.unwrap().unwrap().is_active);
    disabled_by_live(&app, "user05").await;
    assert_eq!(accepted(&app, &s6, &t6).await, (true, true), "user06 untouched");

    d.delete(&d.user_dn("user06")).await;
    let took = refused_within(&app, &s6, &t6, "AD delete").await;
    eprintln!("AD live: user06 deleted in AD, session and token refused after {} ms", took.as_millis());
    disabled_by_live(&app, "user06").await;

    // Two live runs on the Sync runs page; the one sync is `configure`'s.
    runs_become(&app, &admin, &["live", "live", "sync"]).await;
    let status = live_status(&app, &admin).await;
    assert_eq!((status["disabled"].as_i64(), status["connected"].as_bool()), (Some(2), Some(true)), "{status}");
    assert!(status["last_change"].is_string(), "{status}");
    assert!(app.db.store.find_user("user07").await.unwrap().unwrap().is_active, "others untouched");
    let html = body_text(app.send(api("GET", "/", None, Auth::Cookie(&admin))).await).await;
    assert!(html.contains(&format!("LDAP live stream: connected to {}", d.ldap_url)) && html.contains("read by DirSync"), "{html}");
    streams.abort();
}

/// The ordinary service account (DirSync with object security): a disable
/// is seen live; a deletion is not (Samba notifies it, and DirSync
/// reports it, only to an account that may read Deleted Objects), and the
/// status says so plainly.
#[tokio::test]
async fn ad_an_ordinary_account_sees_disables_live_and_says_deletions_are_left_to_the_sync() {
    let d = Samba::start();
    let app = TestApp::new().await;
    let admin = configure(&app, &d.input(), ("dirsync", false)).await;
    let (session, token) = signed_in(&app, &admin, "user05", &d.user_password).await;
    let streams = app.service.spawn_live_streams();
    let (status, _) = connected(&app, &admin).await;
    assert_eq!(status["method"], "change notification, changes read by DirSync", "{status}");
    let unseen = status["unseen"].as_str().unwrap_or_default();
    assert!(unseen.contains("may not read Deleted Objects") && unseen.contains("the next sync disables them"), "{status}");
    let card = app.service.sync_settings(&admin_actor(), DirectoryKind::Ldap).await.unwrap();
    assert!(card.live.as_ref().and_then(|l| l.unseen.as_deref()).is_some_and(|u| u.contains("Deleted Objects")), "{card:?}");

    d.set_uac(&d.user_dn("user05"), 514).await;
    let took = refused_within(&app, &session, &token, "AD disable, ordinary account").await;
    eprintln!("AD live (ordinary account): user05 disabled, refused after {} ms", took.as_millis());
    disabled_by_live(&app, "user05").await;

    d.delete(&d.user_dn("user06")).await;
    let seen = disabled_within(&app, "user06", Duration::from_secs(8)).await;
    assert_eq!(seen, None, "the ordinary account cannot see deletions: left to the sync");
    runs_become(&app, &admin, &["live", "sync"]).await;
    streams.abort();
}

/// Samba stops: the stream says it is disconnected; Samba starts again:
/// it reconnects (backoff capped at 5 s) and a disable made afterwards
/// still lands within 10 s.
#[tokio::test]
async fn ad_the_stream_reconnects_after_the_domain_controller_restarts() {
    let d = Samba::start();
    let app = TestApp::new().await;
    let admin = configure(&app, &d.input_as(&d.repl_dn, &d.repl_password), ("dirsync", true)).await;
    let (session, token) = signed_in(&app, &admin, "user05", &d.user_password).await;
    let streams = app.service.spawn_live_streams();
    connected(&app, &admin).await;

    d.stop();
    let gone = disconnected(&app, &admin).await;
    eprintln!("AD live: saw the domain controller go after {} ms", gone.as_millis());
    let t = Instant::now();
    d.restart();
    eprintln!("AD live: Samba restarted in {} ms", t.elapsed().as_millis());
    let (after, took) = connected(&app, &admin).await;
    eprintln!("AD live: reconnected {} ms after Samba was back: {after}", took.as_millis());
    assert!(took < Duration::from_secs(7), "backoff is capped at 5 s");
    assert_eq!(accepted(&app, &session, &token).await, (true, true), "nothing changed yet");

    d.set_uac(&d.user_dn("user05"), 514).await;
    let took = refused_within(&app, &session, &token, "AD disable after a restart").await;
    eprintln!("AD live: user05 disabled after the restart, refused after {} ms", took.as_millis());
    runs_become(&app, &admin, &["live", "sync"]).await;
    streams.abort();
}
