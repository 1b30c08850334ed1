//! Signing in with a directory password (security checklist items 1, 3, 8, 9).

use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, Role, SecuritySettings};
use http::StatusCode;

use crate::helpers::*;

async fn configure(app: &TestApp, kind: DirectoryKind, d: &Slapd, uris: Vec<String>) {
    let mut input = d.input();
    input.server_uris = uris;
    app.service.save_directory(&admin_actor(), kind, &input).await.unwrap();
}

fn dead_uri() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("ldap://127.0.0.1:{port}")
}

async fn last_reason(app: &TestApp) -> String {
    app.service.login_log(&admin_actor(), &Default::default()).await.unwrap().items[0].reason.clone()
}

#[tokio::test]
async fn a_directory_user_signs_in_and_is_created_without_a_local_password() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldaps_url.clone()]).await;
    let (res, cookie) = app.login("JDoe", "Jdoe-Password-1").await;
    assert_eq!(location(&res), "/");
    let cookie = cookie.expect("signed in");
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!((me["username"].as_str(), me["role"].as_str()), (Some("jdoe"), Some("user")));
    let row = app.db.store.find_user("jdoe").await.unwrap().unwrap();
    assert_eq!((row.source.as_str(), row.password_hash.is_none()), ("ldap", true));
    assert_eq!(row.email, "jdoe@example.com");
    let orgs = app.db.store.organisations_of(&[row.id]).await.unwrap();
    assert_eq!(orgs[0].name, "Default");

    // Wrong password, unknown user, injection, empty password: the same generic answer.
    for (u, p, reason) in [
        ("jdoe", "wrong", "invalid credentials"),
        ("nobody", "whatever", "no entry matches"),
        ("*", "Jdoe-Password-1", "no entry matches"),
        ("jdoe", "  ", "empty password"),
    ] {
        let (res, c) = app.login(u, p).await;
        assert!(c.is_none(), "{u}");
        assert_eq!(location(&res), "/login?failed=1");
        assert!(last_reason(&app).await.contains(reason), "{u}: {}", last_reason(&app).await);
    }
    // Directory users have no local password to reset.
    let res = app
        .send(api(
            "POST",
            &format!("/api/v1/users/{}/reset_password", row.id),
            None,
            Auth::Cookie(&app.session("admin", ADMIN_PASSWORD).await),
        ))
        .await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "no local password for directory users");
}

#[tokio::test]
async fn ldap_ha_serves_only_when_every_ldap_server_is_unreachable() {
    let primary = Slapd::start();
    let backup = Slapd::start();
    // The backup knows jdoe with another password: if a wrong password on
    // LDAP ever fell through to LDAP HA, this one would get in.
    backup.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userPassword\nuserPassword: Backup-Password-1\n");
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &primary, vec![dead_uri(), primary.ldap_url.clone()]).await;
    configure(&app, DirectoryKind::LdapHa, &backup, vec![backup.ldap_url.clone()]).await;

    let (_, c) = app.login("jdoe", "Backup-Password-1").await;
    assert!(c.is_none(), "a wrong password on LDAP never tries LDAP HA");
    assert!(last_reason(&app).await.starts_with("LDAP refused"), "{}", last_reason(&app).await);
    let (_, c) = app.login("jdoe", "Jdoe-Password-1").await;
    assert!(c.is_some(), "the second LDAP server answers when the first is dead");

    // All of LDAP down: LDAP HA takes over.
    primary.stop();
    let (_, c) = app.login("tina", "Tina-Password-1").await;
    assert!(c.is_some(), "LDAP HA: {}", last_reason(&app).await);
    assert_eq!(app.db.store.find_user("tina").await.unwrap().unwrap().source.as_str(), "ldap_ha");
    // The backup answers for jdoe while LDAP is down (its password is the
    // one that counts). These two fixtures are separate directories, not
    // replicas: the backup's jdoe has another entryUUID, so it is another
    // person — a conflict, never the primary's jdoe account.
    let (_, c) = app.login("jdoe", "Backup-Password-1").await;
    assert!(c.is_none(), "another entry never signs in as the account");
    let reason = last_reason(&app).await;
    assert!(reason.starts_with("LDAP HA refused") && reason.contains("conflict"), "the backup's answer was used: {reason}");

    // Everything down: refused, reason says unreachable.
    backup.stop();
    let (_, c) = app.login("tina", "Tina-Password-1").await;
    assert!(c.is_none());
    assert!(last_reason(&app).await.contains("unreachable"), "{}", last_reason(&app).await);
}

#[tokio::test]
async fn disabled_in_the_directory_means_refused_and_signed_out_everywhere() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    // Without the user DN cache every login reads the entry, so a state only
    // an attribute shows (userAccountControl on OpenLDAP) is seen at once.
    // (With the cache, the bind itself still refuses what AD and ppolicy
    // enforce; attribute-only states are re-read when the entry expires
    // and by session re-validation — see failover.rs.)
    let mut input = d.input();
    input.dn_cache_secs = 0;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    let session = app.session("jdoe", "Jdoe-Password-1").await;
    let id = app.db.store.find_user("jdoe").await.unwrap().unwrap().id;
    let token = app
        .service
        .create_api_token(&admin_actor(), &bindery_model::NewApiToken { name: "t".into(), user_id: Some(id), expires_in_days: None })
        .await
        .unwrap()
        .secret;
    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n");
    let (_, c) = app.login("jdoe", "Jdoe-Password-1").await;
    assert!(c.is_none(), "disabled in the directory");
    assert!(last_reason(&app).await.contains("disabled"), "{}", last_reason(&app).await);
    assert!(!app.db.store.get_user(id).await.unwrap().unwrap().is_active, "disabled here too");
    for auth in [Auth::Cookie(&session), Auth::Bearer(&token)] {
        assert_status(&app.send(api("GET", "/api/v1/me", None, auth)).await, StatusCode::UNAUTHORIZED, "revoked");
    }
    // The locked account is refused with its state as the reason.
    let (_, c) = app.login("locked", "Locked-Password-1").await;
    assert!(c.is_none());
}

#[tokio::test]
async fn policies_only_imported_and_local_names_never_work_both_ways() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldap_url.clone()]).await;
    // A local user named like a directory user: only the local password works.
    let (_, local_pw) = app.user("tina", Role::User).await;
    let (_, c) = app.login("tina", "Tina-Password-1").await;
    assert!(c.is_none(), "the directory password of a local name is refused");
    assert!(app.login("tina", &local_pw).await.1.is_some());
    // Only imported users may log in.
    let s = SecuritySettings { only_imported_users: true, ..Default::default() };
    app.service.update_security_settings(&admin_actor(), s).await.unwrap();
    let (_, c) = app.login("jdoe", "Jdoe-Password-1").await;
    assert!(c.is_none());
    assert!(last_reason(&app).await.contains("not imported"), "{}", last_reason(&app).await);
    assert!(app.db.store.find_user("jdoe").await.unwrap().is_none());
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn rest_authentication_issues_bearer_tokens_and_api_keys() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldap_url.clone()]).await;

    // Bearer token: short-lived, usable on the REST API.
    let res = app
        .send(api("POST", "/api/v1/authn/ldap/jdoe/authenticate", Some(serde_json::json!({"password": "Jdoe-Password-1"})), Auth::None))
        .await;
    assert_status(&res, StatusCode::OK, "authenticate");
    let t = body_json(res).await;
    assert_eq!(t["token_type"], "Bearer");
    let expires_in = t["expires_in"].as_i64().unwrap();
    assert!((890..=900).contains(&expires_in), "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&token))).await).await;
    assert_eq!(me["username"], "jdoe");

    // Every failure: the same 401 and body.
    let mut bodies = Vec::new();
    for (user, body) in [
        ("jdoe", serde_json::json!({"password": "wrong"})),
        ("nobody", serde_json::json!({"password": "x"})),
        ("jdoe", serde_json::json!({"password": ""})),
        ("jdoe", serde_json::json!({"nope": 1})),
        ("admin", serde_json::json!({"password": ADMIN_PASSWORD})),
    ] {
        let res = app.send(api("POST", &format!("/api/v1/authn/ldap/{user}/authenticate"), Some(body), Auth::None)).await;
        assert_status(&res, StatusCode::UNAUTHORIZED, user);
        bodies.push(body_json(res).await);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["message"], "Invalid username or password.");
    assert!(last_reason(&app).await.contains("local user"), "a local user cannot use the directory endpoints");

    // API key with HTTP Basic; a second one replaces the first.
    let mut req = api("GET", "/api/v1/authn/ldap/login", None, Auth::None);
    req.headers_mut().insert(http::header::AUTHORIZATION, basic("tina", "Tina-Password-1").parse().unwrap());
    let res = app.send(req).await;
    assert_status(&res, StatusCode::OK, "basic");
    let first = body_json(res).await["api_key"].as_str().unwrap().to_string();
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&first))).await, StatusCode::OK, "api key works");
    let mut req = api("GET", "/api/v1/authn/ldap/login", None, Auth::None);
    req.headers_mut().insert(http::header::AUTHORIZATION, basic("tina", "Tina-Password-1").parse().unwrap());
    let second = body_json(app.send(req).await).await["api_key"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_status(&app.send(api("GET", "/api/v1/me", None, Auth::Bearer(&first))).await, StatusCode::UNAUTHORIZED, "replaced");
    let mut req = api("GET", "/api/v1/authn/ldap/login", None, Auth::None);
    req.headers_mut().insert(http::header::AUTHORIZATION, basic("tina", "nope").parse().unwrap());
    let res = app.send(req).await;
    assert_status(&res, StatusCode::UNAUTHORIZED, "bad basic");
    assert!(res.headers()[http::header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic"));

    // Lockout is shared with the console login.
    let s = SecuritySettings { lockout_max_failures: 2, ..Default::default() };
    app.service.update_security_settings(&admin_actor(), s).await.unwrap();
    for _ in 0..2 {
        app.send(api("POST", "/api/v1/authn/ldap/tom/authenticate", Some(serde_json::json!({"password": "wrong"})), Auth::None)).await;
    }
    let (_, c) = app.login("tom", "Tom-Password-1").await;
    assert!(c.is_none(), "locked after REST failures");
}

#[tokio::test]
async fn group_mapping_decides_role_and_organisations_at_sign_in() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    app.service.create_organisation(&admin_actor(), &bindery_model::OrganisationInput { name: "Tech".into() }).await.unwrap();
    let mut input = d.input();
    input.group_mappings =
        vec![bindery_model::GroupMapping::parse_line("cn=developers,ou=groups,dc=example,dc=com => auditor; Tech").unwrap()];
    // A mapping to an unknown organisation is refused, naming the field.
    let mut bad = input.clone();
    bad.group_mappings[0].organisations = vec!["Nowhere".into()];
    let e = app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &bad).await.unwrap_err();
    assert!(e.to_string().contains("group_mappings"), "{e}");
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();

    let cookie = app.session("tina", "Tina-Password-1").await;
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!(me["role"], "auditor");
    let tina = app.db.store.find_user("tina").await.unwrap().unwrap();
    let orgs: Vec<String> = app.db.store.organisations_of(&[tina.id]).await.unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(orgs, vec!["Tech".to_string()]);
    // Not in the mapped group: plain user, default organisation.
    let cookie = app.session("nomail", "Nomail-Password-1").await;
    let me = body_json(app.send(api("GET", "/api/v1/me", None, Auth::Cookie(&cookie))).await).await;
    assert_eq!(me["role"], "user");
    let _ = Role::User;
}

#[tokio::test]
async fn concurrent_first_logins_of_one_person_all_succeed() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    configure(&app, DirectoryKind::Ldap, &d, vec![d.ldap_url.clone()]).await;
    // Eight first logins of the same person at once: one creates the user,
    // the others sign in as it (none fails, none counts toward lockout).
    let results = futures::future::join_all((0..8).map(|_| app.login("jdoe", "Jdoe-Password-1"))).await;
    let ok = results.iter().filter(|(_, c)| c.is_some()).count();
    assert_eq!(ok, 8, "{}", last_reason(&app).await);
}
