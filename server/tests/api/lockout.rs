//! Lockout that cannot be raced or turned against a whole office, client
//! addresses from trusted proxies only, Argon2 off the async workers, and
//! the security settings and lockouts over REST (issue 15, items 2–4).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use bindery_directory::testing::Slapd;
use bindery_model::{DirectoryKind, Role, SecuritySettings};
use http::StatusCode;

use crate::helpers::*;

async fn settings(app: &TestApp, s: SecuritySettings) {
    app.service.update_security_settings(&admin_actor(), s).await.unwrap();
}

/// A login form post from `peer`, with extra headers.
async fn login_from(app: &TestApp, peer: [u8; 4], headers: &[(&str, &str)], username: &str, password: &str) -> Option<String> {
    let mut req = form("/rpc/login", &[("username", username), ("password", password)], None);
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    for (k, v) in headers {
        req.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    set_cookie(&app.send(req).await)
}

async fn lockout_keys(app: &TestApp) -> Vec<String> {
    app.service.list_lockouts(&admin_actor()).await.unwrap().into_iter().map(|l| l.key).collect()
}

/// Binds of `dn` that reached the directory, from slapd's `stats` log.
fn binds_of(d: &Slapd, dn: &str) -> usize {
    let log = std::fs::read_to_string(d.dir.join("slapd.log")).unwrap();
    let needle = format!("BIND dn=\"{dn}\" method=128");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// The ppolicy lock the directory set on `uid`'s entry, if any.
fn directory_lock(d: &Slapd, base: &str) -> bool {
    let out = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &d.ldap_url,
            "-D",
            &d.admin_dn,
            "-w",
            &d.admin_password,
            "-b",
            base,
            "-s",
            "base",
            "pwdAccountLockedTime",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("pwdAccountLockedTime")
}

/// 32 parallel wrong guesses for one user: at most the limit reach the
/// directory, and with Bindery's limit below the directory's own (5), the
/// directory never locks the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_guesses_reach_the_directory_at_most_the_limit() {
    let d = Slapd::start_with(&[("SLAPD_LOGLEVEL", "stats")]);
    let app = TestApp::new().await;
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &d.input()).await.unwrap();
    let (tom, jdoe) = (format!("uid=tom,ou=tech,{}", d.base_dn), format!("uid=jdoe,ou=people,{}", d.base_dn));

    // The default limit, 5.
    let guesses = (0..32).map(|i| login_from(&app, [10, 1, 0, (i % 8) as u8], &[], "tom", "wrong-password"));
    let signed_in = futures::future::join_all(guesses).await.into_iter().filter(Option::is_some).count();
    assert_eq!(signed_in, 0);
    let binds = binds_of(&d, &tom);
    assert!(binds <= 5, "{binds} binds of 32 parallel guesses reached the directory; the limit is 5");
    assert!(binds >= 1, "the guesses did reach the directory");

    // A limit of 4, below the directory's 5: the directory keeps the account usable.
    settings(&app, SecuritySettings { lockout_max_failures: 4, ..Default::default() }).await;
    let guesses = (0..32).map(|i| login_from(&app, [10, 2, 0, (i % 8) as u8], &[], "jdoe", "wrong-password"));
    futures::future::join_all(guesses).await;
    let binds = binds_of(&d, &jdoe);
    assert!(binds <= 4, "{binds} binds of 32 parallel guesses reached the directory; the limit is 4");
    assert!(!directory_lock(&d, &jdoe), "the directory locked the account: Bindery let too many guesses through");
    assert!(lockout_keys(&app).await.contains(&"user:jdoe".to_string()));
    // Locked here, even with the right password; an admin unlocks; it works.
    assert!(login_from(&app, [10, 2, 0, 1], &[], "jdoe", "Jdoe-Password-1").await.is_none());
    assert_eq!(binds_of(&d, &jdoe), binds, "a locked user is not asked about at all");
    app.service.unlock(&admin_actor(), "user:jdoe").await.unwrap();
    assert!(login_from(&app, [10, 2, 0, 1], &[], "jdoe", "Jdoe-Password-1").await.is_some());
}

/// A directory that cannot be reached, or that fails on its side, is not
/// the person's failure: nobody is locked out, and the right password works
/// the moment it is back.
#[tokio::test]
async fn a_directory_outage_or_server_error_locks_nobody_out() {
    let d = Slapd::start();
    let app = TestApp::new().await;
    settings(&app, SecuritySettings { lockout_max_failures: 2, lockout_ip_max_failures: 3, ..Default::default() }).await;
    // Unreachable: nothing listens there.
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("ldap://127.0.0.1:{port}")
    };
    let mut input = d.input();
    input.server_uris = vec![dead];
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    for _ in 0..4 {
        assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_none(), "the directory is down");
    }
    let reason = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap().items[0].reason.clone();
    assert!(reason.starts_with("LDAP unreachable"), "{reason}");
    // A server that answers, but refuses the service account (its
    // configuration, not the person).
    let mut input = d.input();
    input.bind_password = Some("not-the-service-password".into());
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &input).await.unwrap();
    for _ in 0..4 {
        assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_none(), "the service account is refused");
    }
    let reason = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap().items[0].reason.clone();
    assert!(reason.starts_with("LDAP failed") && reason.contains("service account"), "{reason}");
    assert_eq!(lockout_keys(&app).await, Vec::<String>::new(), "nothing is locked");
    assert!(app.db.store.locked_keys(0, 1, 1).await.unwrap().is_empty(), "no failure was even counted");

    // Back: the right password works at once.
    app.service.save_directory(&admin_actor(), DirectoryKind::Ldap, &d.input()).await.unwrap();
    assert!(app.login("jdoe", "Jdoe-Password-1").await.1.is_some());
    // A wrong password still counts.
    app.login("tom", "wrong-password").await;
    assert_eq!(app.db.store.locked_keys(0, 1, 1).await.unwrap().len(), 2, "user:tom and ip:127.0.0.1");
}

/// The per-address threshold is its own (an office behind NAT is one
/// address), and exempt networks are never locked as an address.
#[tokio::test]
async fn the_per_address_threshold_is_its_own_and_exempt_networks_are_never_locked() {
    let app = TestApp::new().await;
    settings(&app, SecuritySettings { lockout_max_failures: 2, lockout_ip_max_failures: 4, ..Default::default() }).await;
    let (_, pw) = app.user("carol", Role::User).await;
    let office = [192, 0, 2, 10];
    // Three people mistype once each: over the per-user limit in total, but
    // nobody is locked, the address included.
    for u in ["x1", "x2", "x3"] {
        assert!(login_from(&app, office, &[], u, "wrong-password").await.is_none());
    }
    assert!(login_from(&app, office, &[], "carol", &pw).await.is_some(), "3 failures from an address do not lock it (limit 4)");
    assert!(lockout_keys(&app).await.is_empty());
    // The fourth failure from the address locks the address ...
    login_from(&app, office, &[], "x4", "wrong-password").await;
    assert!(login_from(&app, office, &[], "carol", &pw).await.is_none(), "the address is locked");
    assert_eq!(lockout_keys(&app).await, vec!["ip:192.0.2.10".to_string()]);
    // ... and no other.
    assert!(login_from(&app, [192, 0, 2, 11], &[], "carol", &pw).await.is_some());

    // Exempt the office's network: its address is never locked (its
    // usernames still are), and it is no longer listed.
    let exempt = SecuritySettings {
        lockout_max_failures: 2,
        lockout_ip_max_failures: 4,
        lockout_exempt_networks: vec!["192.0.2.0/28".into()],
        ..Default::default()
    };
    settings(&app, exempt).await;
    assert!(login_from(&app, office, &[], "carol", &pw).await.is_some(), "an exempt address is not locked");
    assert!(lockout_keys(&app).await.is_empty(), "{:?}", lockout_keys(&app).await);
    for u in ["y1", "y2", "y3", "y4", "y5", "carol", "carol"] {
        login_from(&app, office, &[], u, "wrong-password").await;
    }
    assert!(login_from(&app, office, &[], "y6", "wrong-password").await.is_none());
    assert_eq!(lockout_keys(&app).await, vec!["user:carol".to_string()], "the username is locked, the exempt address is not");
    assert!(app.db.store.locked_keys(0, 100, 5).await.unwrap().is_empty(), "no new failure is counted against the exempt address");
}

/// With a trusted proxy, the client is the rightmost X-Forwarded-For hop
/// that is not a trusted proxy: what the client writes to the left is never
/// believed, nor any forwarding header from a peer that is not a proxy.
#[tokio::test]
async fn forwarded_headers_are_believed_from_trusted_proxies_only() {
    let app = TestApp::new().await; // trusts a proxy on loopback
    settings(&app, SecuritySettings { lockout_max_failures: 50, lockout_ip_max_failures: 3, ..Default::default() }).await;
    let (_, pw) = app.user("dana", Role::User).await;
    let proxy = [127, 0, 0, 1];
    // The client rotates a forged leftmost hop on every guess; the proxy
    // appends the address it really saw.
    for fake in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
        let xff = format!("{fake}, 203.0.113.7");
        login_from(&app, proxy, &[("x-forwarded-for", &xff)], "nobody", "wrong-password").await;
    }
    assert!(
        login_from(&app, proxy, &[("x-forwarded-for", "4.4.4.4, 203.0.113.7")], "dana", &pw).await.is_none(),
        "the real address is locked, whatever the client wrote"
    );
    assert_eq!(lockout_keys(&app).await, vec!["ip:203.0.113.7".to_string()]);
    let log = app.service.login_log(&admin_actor(), &Default::default()).await.unwrap();
    assert!(log.items.iter().all(|e| e.ip == "203.0.113.7"), "{:?}", log.items.iter().map(|e| &e.ip).collect::<Vec<_>>());

    // A client that is not a proxy cannot name an address at all, neither
    // to dodge its own lockout nor to lock another's.
    let direct = [198, 51, 100, 20];
    for _ in 0..3 {
        login_from(&app, direct, &[("x-forwarded-for", "203.0.113.99")], "nobody", "wrong-password").await;
    }
    let keys = lockout_keys(&app).await;
    assert!(keys.contains(&"ip:198.51.100.20".to_string()) && !keys.iter().any(|k| k.contains("203.0.113.99")), "{keys:?}");
    // Nor claim HTTPS: the cookie gets Secure only on a trusted proxy's word.
    let mut req = form("/rpc/login", &[("username", "dana"), ("password", &pw)], None);
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 21], 40000))));
    req.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let res = app.send(req).await;
    assert!(set_cookie(&res).is_some());
    assert!(!set_cookie_header(&res).contains("Secure"), "{}", set_cookie_header(&res));
}

/// Argon2 runs on the blocking pool: a burst of local sign-ins leaves the
/// async workers free for everything else.
#[test]
fn an_argon2_burst_does_not_stall_other_requests() {
    // The server on a runtime of its own, as many workers as CPUs (at
    // least 2), on a real port.
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let (app, addr) = server.block_on(async {
        let app = TestApp::new().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app.router.clone();
        tokio::spawn(async move { axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await });
        (app, addr)
    });
    // One Argon2 verification on this machine, now.
    let hash = bindery_service::util::hash_password(ADMIN_PASSWORD).unwrap();
    let t = Instant::now();
    assert!(bindery_service::util::verify_password(ADMIN_PASSWORD, &hash));
    let one = t.elapsed();

    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (worst, logins) = client.block_on(async move {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = format!("http://{addr}");
        let burst: Vec<_> = (0..20)
            .map(|_| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    http.post(format!("{base}/rpc/login"))
                        .header("origin", &base)
                        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
                        .send()
                        .await
                        .map(|r| {
                            let cookies = r.headers().get_all("set-cookie");
                            cookies
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .filter(|c| c.starts_with("bindery_session=") && !c.starts_with("bindery_session=;"))
                                .count()
                        })
                        .unwrap_or(0)
                })
            })
            .collect();
        // /healthz, one request after another, while the burst runs.
        let mut worst = Duration::ZERO;
        tokio::time::sleep(Duration::from_millis(5)).await;
        while burst.iter().any(|b| !b.is_finished()) {
            let t = Instant::now();
            let res = http.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            worst = worst.max(t.elapsed());
        }
        let mut ok = 0;
        for b in burst {
            ok += usize::from(b.await.unwrap() > 0);
        }
        (worst, ok)
    });
    assert_eq!(logins, 20, "every login succeeded");
    // Inline on the workers, /healthz waited for many hashes in a row (20
    // hashes over the workers); on the blocking pool it waits for none.
    assert!(worst < one * 3 + Duration::from_millis(30), "/healthz took {worst:?} during the burst (one Argon2 verification: {one:?})");
    drop(app);
    server.shutdown_background();
}

#[tokio::test]
async fn security_settings_and_lockouts_over_rest() {
    let app = TestApp::new().await;
    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let (_, apw) = app.user("audrey", Role::Auditor).await;
    let auditor = app.session("audrey", &apw).await;
    let (_, upw) = app.user("ulysses", Role::User).await;
    let user = app.session("ulysses", &upw).await;

    let got = body_json(app.send(api("GET", "/api/v1/settings/security", None, Auth::Cookie(&admin))).await).await;
    assert_eq!((got["lockout_max_failures"].as_i64(), got["lockout_ip_max_failures"].as_i64()), (Some(5), Some(50)), "{got}");
    assert_eq!(got["lockout_exempt_networks"], serde_json::json!([]));

    let mut body = got.clone();
    body["lockout_ip_max_failures"] = 20.into();
    body["lockout_exempt_networks"] = serde_json::json!(["10.1.2.3/8", "2001:db8::/32"]);
    let res = app.send(api("PUT", "/api/v1/settings/security", Some(body.clone()), Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::OK, "admin saves");
    let saved = body_json(res).await;
    assert_eq!(saved["lockout_exempt_networks"], serde_json::json!(["10.0.0.0/8", "2001:db8::/32"]), "normalised");
    assert_eq!(app.service.security_settings().await.unwrap().lockout_ip_max_failures, 20);

    // Invalid fields are named; nothing is saved.
    let mut bad = body.clone();
    bad["lockout_exempt_networks"] = serde_json::json!(["10.0.0.0/33"]);
    bad["lockout_ip_max_failures"] = 0.into();
    let res = app.send(api("PUT", "/api/v1/settings/security", Some(bad), Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let fields: Vec<String> =
        body_json(res).await["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap().to_string()).collect();
    assert_eq!(fields, ["lockout_ip_max_failures", "lockout_exempt_networks"]);
    assert_eq!(app.service.security_settings().await.unwrap().lockout_ip_max_failures, 20);

    // Roles: auditors read, only admins write; users and strangers neither.
    assert_status(&app.send(api("GET", "/api/v1/settings/security", None, Auth::Cookie(&auditor))).await, StatusCode::OK, "auditor reads");
    assert_status(&app.send(api("GET", "/api/v1/lockouts", None, Auth::Cookie(&auditor))).await, StatusCode::OK, "auditor lists");
    for (who, auth, want) in [
        ("auditor", Some(&auditor), StatusCode::FORBIDDEN),
        ("user", Some(&user), StatusCode::FORBIDDEN),
        ("anonymous", None, StatusCode::UNAUTHORIZED),
    ] {
        let a = || auth.map(|c| Auth::Cookie(c)).unwrap_or(Auth::None);
        assert_status(&app.send(api("PUT", "/api/v1/settings/security", Some(body.clone()), a())).await, want, who);
        assert_status(&app.send(api("DELETE", "/api/v1/lockouts/user%3Abob", None, a())).await, want, who);
        if who != "auditor" {
            assert_status(&app.send(api("GET", "/api/v1/settings/security", None, a())).await, want, who);
            assert_status(&app.send(api("GET", "/api/v1/lockouts", None, a())).await, want, who);
        }
    }

    // Lockouts: listed, then lifted.
    settings(&app, SecuritySettings { lockout_max_failures: 2, ..Default::default() }).await;
    for _ in 0..2 {
        app.login("bob", "wrong-password").await;
    }
    let list = body_json(app.send(api("GET", "/api/v1/lockouts", None, Auth::Cookie(&admin))).await).await;
    assert_eq!(list[0]["key"], "user:bob", "{list}");
    assert_eq!(list[0]["failures"], 2);
    let res = app.send(api("DELETE", "/api/v1/lockouts/user%3Abob", None, Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::NO_CONTENT, "unlock");
    assert!(lockout_keys(&app).await.is_empty());
    let res = app.send(api("DELETE", "/api/v1/lockouts/bob", None, Auth::Cookie(&admin))).await;
    assert_status(&res, StatusCode::UNPROCESSABLE_ENTITY, "not a key");

    // Documented.
    let doc = body_json(app.send(api("GET", "/api/openapi.json", None, Auth::None)).await).await;
    for path in ["/api/v1/settings/security", "/api/v1/lockouts", "/api/v1/lockouts/{key}"] {
        assert!(doc["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["SecuritySettings"]["properties"]["lockout_exempt_networks"].is_object());
}
