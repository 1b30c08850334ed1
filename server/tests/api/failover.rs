//! Directory faults, the circuit breaker, pooled connections and the user
//! DN cache (issue 6; security checklist items 16 and 17), against real
//! slapd servers — one of them made to drop packets with nftables.

use std::time::{Duration, Instant};

use bindery_directory::gateway::ENTRY_CHECK_HOLDS;
use bindery_directory::testing::{Blackhole, Slapd};
use bindery_model::{DirectoryKind, SecuritySettings};
use http::StatusCode;

use crate::helpers::*;

async fn configure(app: &TestApp, kind: DirectoryKind, d: &Slapd, uris: Vec<String>, connect_timeout_secs: i64) {
    let mut input = d.input();
    input.server_uris = uris;
    input.connect_timeout_secs = connect_timeout_secs;
    app.service.save_directory(&admin_actor(), kind, &input).await.unwrap();
}

async fn states(app: &TestApp) -> Vec<(String, String)> {
    app.service.directory_health(&admin_actor()).await.unwrap().into_iter().map(|h| (h.uri, h.state)).collect()
}

async fn last_reason(app: &TestApp) -> String {
    app.service.login_log(&admin_actor(), &Default::default()).await.unwrap().items[0].reason.clone()
}

async fn timed_login(app: &TestApp, user: &str, password: &str) -> (bool, Duration) {
    let t = Instant::now();
    let (_, cookie) = app.login(user, password).await;
    (cookie.is_some(), t.elapsed())
}

#[tokio::test]
async fn a_login_costs_one_search_and_one_bind_or_one_bind_with_a_warm_cache() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    // One search OU: the user search is one search per search OU.
    let mut input = d.input();
    input.search_ous = format!("ou=people,{}", d.base_dn);
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let mut monitor = d.monitor().await;
    // Warm the pools (the service connection's bind is paid once).
    assert!(app.login("nomail", "Nomail-Password-1").await.1.is_some());

    let (b0, s0, c0) = monitor.counts().await;
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some());
    let (b1, s1, c1) = monitor.counts().await;
    // The reading search itself shows up once in each difference.
    assert_eq!((b1 - b0, s1 - s0 - 1, c1 - c0), (1, 1, 0), "a cold login: one bind, one search");
    assert_eq!(app.service.dn_cache_size(DirectoryKind::Ldap).await.unwrap(), 2);

    let cached_at = Instant::now();
    assert!(app.login("JDOE", "Jdoe-Password-1").await.1.is_some());
    let (b2, s2, c2) = monitor.counts().await;
    // Just after the search that cached it, the entry is proven: one bind.
    assert_eq!(
        (b2 - b1, s2 - s1 - 1, c2 - c1),
        (1, 0, 0),
        "a warm login {:?} after the search: one bind, nothing else",
        cached_at.elapsed()
    );

    // Once that has lapsed: one bind, and at the same time a Compare of the
    // entry's immutable id (a deleted and re-added entry is another
    // person); no user search.
    tokio::time::sleep(ENTRY_CHECK_HOLDS).await;
    assert!(app.login("JDOE", "Jdoe-Password-1").await.1.is_some());
    let (b3, s3, c3) = monitor.counts().await;
    assert_eq!((b3 - b2, s3 - s2 - 1, c3 - c2), (1, 0, 1), "a warm login: one bind and one compare, no search");

    // A wrong password with a cached DN, just after a proof made with the
    // right one: it is checked anyway (the proof holds for its password
    // only); the bind fails, the entry is looked up again, the same DN is
    // never bound twice.
    assert!(app.login("jdoe", "wrong-password").await.1.is_none());
    let (b4, s4, c4) = monitor.counts().await;
    assert_eq!((b4 - b3, s4 - s3 - 1, c4 - c3), (1, 1, 1), "the bind and its compare, then the search");
    // Still cached; a search with no successful bind proves nothing.
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some());
    let (b5, s5, c5) = monitor.counts().await;
    assert_eq!((b5 - b4, s5 - s4 - 1, c5 - c4), (1, 0, 1), "still cached after a wrong password: one bind and its compare");

    d.modify("dn: ou=moved,ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: moved\n");
    // A user moved in the directory while cached: the old DN fails, the
    // entry is found again under its new DN, the login works.
    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modrdn\nnewrdn: uid=jdoe\ndeleteoldrdn: 1\nnewsuperior: ou=moved,ou=people,dc=example,dc=com\n");
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some(), "{}", last_reason(&app).await);

    // Saving the settings empties the cache.
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some());
    assert!(app.service.dn_cache_size(DirectoryKind::Ldap).await.unwrap() > 0);
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    assert_eq!(app.service.dn_cache_size(DirectoryKind::Ldap).await.unwrap(), 0, "saving clears the DN cache");
}

#[tokio::test]
async fn a_cached_dn_whose_entry_was_deleted_and_added_again_is_another_person() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    let mut input = d.input();
    input.search_ous = format!("ou=people,{}", d.base_dn);
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some());
    assert_eq!(app.service.dn_cache_size(DirectoryKind::Ldap).await.unwrap(), 1, "jdoe's DN is cached");
    let before = app.db.store.find_user("jdoe").await.unwrap().expect("jdoe");

    // Another person under the same DN: a new entry, a new entryUUID.
    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: delete\n");
    d.modify(
        "dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: inetOrgPerson\nuid: jdoe\ncn: Someone Else\nsn: Else\nuserPassword: Other-Password-1\n",
    );
    // At once: the sign-in that proved jdoe's entry used another password.
    let (_, cookie) = app.login("jdoe", "Other-Password-1").await;
    assert!(cookie.is_none(), "the new entry signed in as the earlier jdoe");
    let reason = last_reason(&app).await;
    assert!(reason.contains("conflict") || reason.contains("another"), "{reason}");
    let after = app.db.store.find_user("jdoe").await.unwrap().expect("jdoe");
    assert_eq!((after.id, after.external_id), (before.id, before.external_id), "still linked to the earlier entry");
}

#[tokio::test]
async fn a_dead_server_costs_one_timeout_then_is_skipped_until_a_probe_sees_it_healthy() {
    let a = Slapd::start();
    let b = Slapd::start();
    let ha = Slapd::start();
    let app = TestApp::new().await;
    // A 1 s connect timeout keeps the test short.
    configure(&app, DirectoryKind::Ldap, &a, vec![a.ldap_url.clone(), b.ldap_url.clone()], 1).await;
    configure(&app, DirectoryKind::LdapHa, &ha, vec![ha.ldap_url.clone()], 1).await;
    assert!(timed_login(&app, "jdoe", "Jdoe-Password-1").await.0);
    assert_eq!(app.db.store.find_user("jdoe").await.unwrap().unwrap().source.as_str(), "ldap");

    // Connection refused: the second server of LDAP answers.
    a.stop();
    assert!(timed_login(&app, "tina", "Tina-Password-1").await.0, "{}", last_reason(&app).await);
    assert_eq!(app.db.store.find_user("tina").await.unwrap().unwrap().source.as_str(), "ldap");
    assert_eq!(states(&app).await[0], (a.ldap_url.clone(), "down".to_string()));

    // Warm b's pooled connections, then make it drop every packet.
    assert!(timed_login(&app, "nomail", "Nomail-Password-1").await.0);
    let (_, normal) = timed_login(&app, "nomail", "Nomail-Password-1").await;
    let hole = Blackhole::port(b.port(&b.ldap_url));
    // The first login pays one timeout (1 s), not two, and LDAP HA serves it.
    let (ok, first) = timed_login(&app, "tom", "Tom-Password-1").await;
    assert!(ok, "LDAP HA serves while every LDAP server is down: {}", last_reason(&app).await);
    assert_eq!(app.db.store.find_user("tom").await.unwrap().unwrap().source.as_str(), "ldap_ha");
    assert!(first >= Duration::from_millis(900), "the dead server was tried once: {first:?}");
    assert!(first < Duration::from_millis(1900), "at most one connect timeout: {first:?}");
    // The next ones skip both dead servers at once.
    let (ok, next) = timed_login(&app, "tom", "Tom-Password-1").await;
    assert!(ok);
    assert!(next < Duration::from_millis(500) && next < normal + Duration::from_millis(300), "skipped: {next:?} (normal {normal:?})");
    let s = states(&app).await;
    assert_eq!((s[0].1.as_str(), s[1].1.as_str(), s[2].1.as_str()), ("down", "down", "up"), "{s:?}");
    let health = app.service.directory_health(&admin_actor()).await.unwrap();
    assert!(health[1].last_error.as_deref().unwrap_or("").contains("no answer"), "{health:?}");

    // A probe while b is still dark keeps it down (and costs the probe, not a login).
    app.service.probe_directories().await;
    assert_eq!(states(&app).await[1].1, "down");
    // Network back: the next probe marks b healthy, and logins use it again.
    drop(hole);
    app.service.probe_directories().await;
    let s = states(&app).await;
    assert_eq!((s[0].1.as_str(), s[1].1.as_str(), s[2].1.as_str()), ("down", "up", "up"), "{s:?}");
    assert!(app.service.directory_health(&admin_actor()).await.unwrap()[1].latency_ms.is_some());
    assert!(timed_login(&app, "élodie", "Pässwörd-É-1").await.0, "{}", last_reason(&app).await);
    assert_eq!(app.db.store.find_user("élodie").await.unwrap().unwrap().source.as_str(), "ldap");

    // A wrong password on a live LDAP never tries LDAP HA.
    ha.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userPassword\nuserPassword: Backup-Password-1\n");
    assert!(!timed_login(&app, "jdoe", "Backup-Password-1").await.0);
    assert!(last_reason(&app).await.starts_with("LDAP refused"), "{}", last_reason(&app).await);
}

#[tokio::test]
async fn live_sessions_and_tokens_are_revalidated_against_the_directory() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldap_url.clone()], 3).await;
    let jdoe = app.session("jdoe", "Jdoe-Password-1").await;
    let tina = app.session("tina", "Tina-Password-1").await;
    let jdoe_id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;
    let token = app
        .service
        .create_api_token(&admin_actor(), &bindery_model::NewApiToken { name: "t".into(), user_id: Some(jdoe_id), expires_in_days: None })
        .await
        .unwrap()
        .secret;
    let me = |auth: Auth<'_>| api("GET", "/api/v1/me", None, auth);

    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n");
    d.modify("dn: uid=tina,ou=tech,dc=example,dc=com\nchangetype: delete\n");
    // Checked at most every 5 minutes (the default): not yet.
    assert_status(&app.send(me(Auth::Cookie(&jdoe))).await, StatusCode::OK, "checked at login, not due again");
    // Once the last check is older than the interval, the next request asks the directory.
    let tina_id = app.db.store.find_user("tina").await.unwrap().unwrap().id;
    for id in [jdoe_id, tina_id] {
        app.db.store.set_user_validated(id, 0).await.unwrap();
    }
    assert_status(&app.send(me(Auth::Bearer(&token))).await, StatusCode::UNAUTHORIZED, "disabled in the directory");
    assert_status(&app.send(me(Auth::Cookie(&jdoe))).await, StatusCode::UNAUTHORIZED, "and every session ends with it");
    assert!(!app.db.store.get_user(jdoe_id).await.unwrap().unwrap().is_active);
    assert_status(&app.send(me(Auth::Cookie(&tina))).await, StatusCode::UNAUTHORIZED, "removed from the directory");
    let ops = app.service.operation_log(&admin_actor(), &Default::default()).await.unwrap().items;
    assert!(
        ops.iter().any(|o| o.actor == "(system)" && o.after.as_deref().unwrap_or("").contains("missing from the directory")),
        "{ops:?}"
    );

    // An outage never signs anybody out; 0 minutes means every request.
    let s = SecuritySettings { revalidate_minutes: 0, ..Default::default() };
    app.service.update_security_settings(&admin_actor(), s).await.unwrap();
    let nomail = app.session("nomail", "Nomail-Password-1").await;
    assert_status(&app.send(me(Auth::Cookie(&nomail))).await, StatusCode::OK, "valid");
    d.stop();
    assert_status(&app.send(me(Auth::Cookie(&nomail))).await, StatusCode::OK, "directory down: kept");
}

async fn explain(app: &TestApp, id: i64, admin: &str) -> serde_json::Value {
    body_json(app.send(api("GET", &format!("/api/v1/users/{id}/explain_access"), None, Auth::Cookie(admin))).await).await
}

#[tokio::test]
async fn explain_access_says_why() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldap_url.clone()], 3).await;
    let _ = app.session("jdoe", "Jdoe-Password-1").await;
    let id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let x = explain(&app, id, &admin).await;
    assert_eq!(x["allowed"], true, "{x}");
    let fact = |x: &serde_json::Value, label: &str| {
        x["facts"].as_array().unwrap().iter().find(|f| f["label"] == label).map(|f| f["value"].as_str().unwrap().to_string())
    };
    assert_eq!(fact(&x, "Search OU matched").as_deref(), Some("ou=people,dc=example,dc=com"));
    assert!(fact(&x, "Server that answered").unwrap().contains(&d.ldap_url));
    assert!(fact(&x, "Groups").unwrap().contains("cn=developers"), "{x}");
    assert!(fact(&x, "Last sign-in attempt").unwrap().contains("succeeded"));

    // Locked by ppolicy: the explainer says locked, and why.
    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n");
    let x = explain(&app, id, &admin).await;
    assert_eq!(x["allowed"], false);
    assert_eq!(fact(&x, "Account state in the directory").as_deref(), Some("locked in the directory"));
    assert!(x["verdict"].as_str().unwrap().contains("locked"), "{x}");

    // A plain user may not ask.
    let (_, pw) = app.user("plain", bindery_model::Role::User).await;
    let plain = app.session("plain", &pw).await;
    let res = app.send(api("GET", &format!("/api/v1/users/{id}/explain_access"), None, Auth::Cookie(&plain))).await;
    assert_status(&res, StatusCode::FORBIDDEN, "explain is for admins and auditors");
}
