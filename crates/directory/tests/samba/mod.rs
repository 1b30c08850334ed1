//! Active Directory behaviour against a real Samba AD DC (`testkit/samba`):
//! delta reads (DirSync, USN with Deleted Objects), and the AD specifics of
//! sign-in (objectGUID as uid, bind sub-codes).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use bindery_directory::ad_delta::{detect, initial_cookie, read_changes};
use bindery_directory::delta::{Change, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use bindery_directory::enumerate::{enumerate, Entry};
use bindery_directory::testing::Samba;
use bindery_directory::{DirectoryConfig, Secret};
use bindery_model::{AccountState, DirectoryInput};

fn config(input: &DirectoryInput) -> DirectoryConfig {
    bindery_directory::config::validate(input, Secret::new(input.bind_password.clone().unwrap_or_default()), Secret::default())
        .expect("valid config")
}

/// Every user of the configuration by username, as the full enumeration reads them.
async fn users(cfg: &DirectoryConfig) -> HashMap<String, Entry> {
    let all = std::sync::Mutex::new(HashMap::new());
    enumerate(cfg, &AtomicBool::new(false), |page, _| {
        for e in page {
            all.lock().unwrap().insert(e.user.username.to_lowercase(), e);
        }
        async { Ok(()) }
    })
    .await
    .expect("full enumeration");
    all.into_inner().unwrap()
}

/// The batch's upserts by username and its deleted uids.
fn split(batch: &DeltaBatch) -> (HashMap<String, Entry>, Vec<String>) {
    let mut up = HashMap::new();
    let mut del = Vec::new();
    for c in &batch.changes {
        match c {
            Change::Upsert(e) => {
                assert!(up.insert(e.user.username.to_lowercase(), e.clone()).is_none(), "one upsert per user: {batch:#?}");
            }
            Change::Delete { uid } => del.push(uid.clone()),
        }
    }
    (up, del)
}

fn in_group(e: &Entry, group_dn: &str) -> bool {
    e.user.groups.iter().any(|g| g.eq_ignore_ascii_case(group_dn))
}

/// The scenario every method is checked with: returns what it changed.
struct Scenario {
    modified: &'static str,
    disabled: &'static str,
    deleted: &'static str,
    joined: &'static str,
    left: &'static str,
    added: &'static str,
    untouched: &'static str,
}

async fn make_changes(d: &Samba, s: &Scenario) {
    d.modify(&d.user_dn(s.modified), vec![ldap3::Mod::Replace("mail".into(), ["changed@bindery.test".to_string()].into())]).await;
    d.set_uac(&d.user_dn(s.disabled), 514).await;
    d.delete(&d.user_dn(s.deleted)).await;
    d.set_member(&d.group_dn("admins"), &d.user_dn(s.joined), true).await;
    d.set_member(&d.group_dn("staff"), &d.user_dn(s.left), false).await;
    d.add_user(s.added).await;
}

const SCENARIO: Scenario = Scenario {
    modified: "user06",
    disabled: "user07",
    deleted: "user08",
    joined: "user09",
    left: "user02",
    added: "newbie",
    untouched: "user11",
};

#[tokio::test]
async fn samba_dirsync_with_the_replication_right_reads_changes_memberships_and_deletions() {
    let d = Samba::start();
    let cfg = config(&d.input_as(&d.repl_dn, &d.repl_password));
    let support = detect(&cfg).await;
    assert_eq!((support.method, support.sees_deletions), (DeltaMethod::Dirsync, true), "{support:?}");
    assert!(support.reason.contains("Replicating Directory Changes"), "{}", support.reason);

    let before = users(&cfg).await;
    let start = initial_cookie(&cfg, &d.people_ou, &support).await.expect("initial cookie");
    assert!(start.changes.is_empty());
    assert_eq!(start.server, d.ldap_url.trim_end_matches('/').to_string() + ":389");

    make_changes(&d, &SCENARIO).await;
    // Moved out of the search OU: gone from its scope.
    d.move_to(&d.user_dn("user10"), &format!("CN=Users,{}", d.base_dn)).await;

    let batch = read_changes(&cfg, &d.people_ou, &start.cookie).await.expect("delta read");
    assert_eq!(batch.server, start.server);
    let (up, del) = split(&batch);
    let s = &SCENARIO;
    assert_eq!(up[s.modified].user.email, "changed@bindery.test");
    assert_eq!(up[s.modified].uid, before[s.modified].uid, "the uid is the objectGUID, unchanged by a modify");
    assert_eq!(up[s.disabled].state, Some(AccountState::Disabled));
    assert!(in_group(&up[s.joined], &d.group_dn("admins")), "{:?}", up[s.joined].user.groups);
    assert!(!in_group(&up[s.left], &d.group_dn("staff")), "removal from a group is seen: {:?}", up[s.left].user.groups);
    assert_eq!(up[s.added].state, None);
    assert!(!up.contains_key(s.untouched) && !up.contains_key(s.deleted), "{up:#?}");
    assert!(del.contains(&before[s.deleted].uid), "the deletion is reported through its tombstone: {del:?}");
    assert!(del.contains(&before["user10"].uid), "a user moved out of the OU is gone from it: {del:?}");
    assert_eq!(del.len(), 2, "{del:?}");
    // Every upsert is exactly what the full enumeration reads now.
    let after = users(&cfg).await;
    for (name, e) in &up {
        assert_eq!(format!("{:?}", e), format!("{:?}", after[name]), "{name}");
    }

    // The next read from the new cookie sees only what changed since.
    d.set_uac(&d.user_dn(s.untouched), 514).await;
    let next = read_changes(&cfg, &d.people_ou, &batch.cookie).await.expect("second delta read");
    let (up, del) = split(&next);
    assert_eq!(up.keys().collect::<Vec<_>>(), vec![&s.untouched.to_string()], "{next:#?}");
    assert!(del.is_empty());
}

#[tokio::test]
async fn samba_unprivileged_account_uses_dirsync_with_object_security_and_sees_no_deletions() {
    let d = Samba::start();
    let cfg = config(&d.input());
    let support = detect(&cfg).await;
    assert_eq!((support.method, support.sees_deletions), (DeltaMethod::Dirsync, false), "{support:?}");
    assert!(support.reason.contains("the service account lacks the DirSync right"), "{}", support.reason);
    assert!(
        support
            .reason
            .contains("Deleted Objects is not readable by the service account, so deletions are found only by the full enumeration"),
        "{}",
        support.reason
    );

    let before = users(&cfg).await;
    let start = initial_cookie(&cfg, &d.people_ou, &support).await.expect("initial cookie");
    make_changes(&d, &SCENARIO).await;
    let batch = read_changes(&cfg, &d.people_ou, &start.cookie).await.expect("delta read");
    let (up, del) = split(&batch);
    let s = &SCENARIO;
    assert_eq!(up[s.modified].user.email, "changed@bindery.test");
    assert_eq!(up[s.disabled].state, Some(AccountState::Disabled));
    assert!(in_group(&up[s.joined], &d.group_dn("admins")));
    assert!(!in_group(&up[s.left], &d.group_dn("staff")), "object security still shows removed members");
    assert!(up.contains_key(s.added));
    assert!(!up.contains_key(s.untouched));
    // What detect said: the tombstone is invisible to this account.
    assert!(!del.contains(&before[s.deleted].uid) && !up.contains_key(s.deleted), "{batch:#?}");
}

#[tokio::test]
async fn samba_dirsync_follows_a_group_nested_into_another_to_its_members() {
    let d = Samba::start();
    let mut input = d.input_as(&d.repl_dn, &d.repl_password);
    input.nested_groups = true;
    let cfg = config(&input);
    let ops = d.add_group("ops").await;
    let support = detect(&cfg).await;
    let start = initial_cookie(&cfg, &d.people_ou, &support).await.expect("initial cookie");
    // admins (user01) becomes a member of ops: user01 is now in ops, through admins.
    d.set_member(&ops, &d.group_dn("admins"), true).await;
    let batch = read_changes(&cfg, &d.people_ou, &start.cookie).await.expect("delta read");
    let (up, del) = split(&batch);
    assert_eq!(up.keys().collect::<Vec<_>>(), vec!["user01"], "{batch:#?}");
    assert!(in_group(&up["user01"], &ops) && in_group(&up["user01"], &d.group_dn("admins")), "{:?}", up["user01"].user.groups);
    assert!(del.is_empty());
}

#[tokio::test]
async fn samba_change_notification_tells_an_ordinary_account_of_a_disable_within_seconds() {
    let d = Samba::start();
    let cfg = config(&d.input());
    let mut n = bindery_directory::ad_delta::notifications(&cfg, &d.people_ou, None, false).await.expect("notification search");
    assert_eq!(n.next(std::time::Duration::from_millis(300)).await.expect("open"), None, "nothing changed yet");
    let t = std::time::Instant::now();
    d.set_uac(&d.user_dn("user05"), 514).await;
    let target = d.user_dn("user05").to_lowercase();
    loop {
        let dn = n.next(std::time::Duration::from_secs(10)).await.expect("still open").expect("a change within 10 s");
        if dn.to_lowercase() == target {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "user05 not notified within 10 s");
    }
    println!("notified {:?} after the disable", t.elapsed());
    // The server going away ends the stream with an error, for the caller to reconnect.
    d.stop();
    let t = std::time::Instant::now();
    loop {
        // (Changes notified before the stop may still be queued.)
        match n.next(std::time::Duration::from_secs(10)).await {
            Err(f) => {
                assert!(f.unreachable, "{f:?}");
                break;
            }
            Ok(Some(_)) if t.elapsed() < std::time::Duration::from_secs(10) => continue,
            other => panic!("the stream did not end with the server: {other:?}"),
        }
    }
}

#[tokio::test]
async fn samba_usn_reads_changes_and_reads_deletions_only_where_deleted_objects_is_readable() {
    let d = Samba::start();
    let usn = |sees_deletions| DeltaSupport { method: DeltaMethod::Usn, sees_deletions, reason: String::new() };
    // The replication account may read Deleted Objects; the service account may not.
    let repl = config(&d.input_as(&d.repl_dn, &d.repl_password));
    let svc = config(&d.input());
    let before = users(&svc).await;
    let repl_start = initial_cookie(&repl, &d.people_ou, &usn(true)).await.expect("initial cookie (replication account)");
    let svc_start = initial_cookie(&svc, &d.people_ou, &usn(false)).await.expect("initial cookie (service account)");
    make_changes(&d, &SCENARIO).await;
    let s = &SCENARIO;

    for (who, cfg, start, sees_deletions) in
        [("replication account", &repl, &repl_start, true), ("service account", &svc, &svc_start, false)]
    {
        let batch = read_changes(cfg, &d.people_ou, &start.cookie).await.unwrap_or_else(|e| panic!("{who}: {e:?}"));
        let (up, del) = split(&batch);
        assert_eq!(up[s.modified].user.email, "changed@bindery.test", "{who}");
        assert_eq!(up[s.disabled].state, Some(AccountState::Disabled), "{who}");
        assert!(up.contains_key(s.added), "{who}");
        // memberOf is a back-link: found through the changed group.
        assert!(in_group(&up[s.joined], &d.group_dn("admins")), "{who}: {batch:#?}");
        assert!(!up.contains_key(s.untouched), "{who}");
        assert_eq!(del.contains(&before[s.deleted].uid), sees_deletions, "{who}: {del:?}");
        // The second read from the new cookie: nothing new.
        let again = read_changes(cfg, &d.people_ou, &batch.cookie).await.unwrap_or_else(|e| panic!("{who}: {e:?}"));
        assert!(again.changes.is_empty(), "{who}: {again:#?}");
    }
    // A USN run may not see a removal from a group (the removed user is no
    // longer a member, and their own uSNChanged did not move).
}

#[tokio::test]
async fn samba_refused_garbage_and_foreign_cookies_need_a_full_enumeration() {
    let d = Samba::start();
    let cfg = config(&d.input());
    let support = detect(&cfg).await;
    let start = initial_cookie(&cfg, &d.people_ou, &support).await.expect("initial cookie");
    let full = |r: Result<DeltaBatch, DeltaError>| match r {
        Err(DeltaError::FullRequired(why)) => why,
        other => panic!("expected FullRequired, got {other:?}"),
    };
    let why = full(read_changes(&cfg, &d.people_ou, "garbage").await);
    assert!(why.contains("not an Active Directory delta cookie"), "{why}");
    // A well-formed cookie whose DirSync part the server cannot use.
    let mut v: serde_json::Value = serde_json::from_str(&start.cookie).unwrap();
    v["dirsync"] = "Z2FyYmFnZQ==".into();
    let why = full(read_changes(&cfg, &d.people_ou, &v.to_string()).await);
    assert!(why.contains("refused the DirSync cookie"), "{why}");
    // Another OU's cookie.
    let why = full(read_changes(&cfg, &d.groups_ou, &start.cookie).await);
    assert!(why.contains("belongs to the search OU"), "{why}");
    // Another server's cookie (a failover, or the settings changed).
    let mut v: serde_json::Value = serde_json::from_str(&start.cookie).unwrap();
    v["server"] = "ldap://127.0.0.1:1".into();
    let why = full(read_changes(&cfg, &d.people_ou, &v.to_string()).await);
    assert!(why.contains("no longer a configured server"), "{why}");
    // A USN cookie from a restored or different domain controller.
    let usn = DeltaSupport { method: DeltaMethod::Usn, sees_deletions: false, reason: String::new() };
    let start = initial_cookie(&cfg, &d.people_ou, &usn).await.expect("initial USN cookie");
    let mut v: serde_json::Value = serde_json::from_str(&start.cookie).unwrap();
    v["invocation"] = "00".into();
    let why = full(read_changes(&cfg, &d.people_ou, &v.to_string()).await);
    assert!(why.contains("invocation id changed"), "{why}");
    // The untouched cookies still work.
    read_changes(&cfg, &d.people_ou, &start.cookie).await.expect("the real cookie reads");
}

#[tokio::test]
async fn samba_is_enumerated_in_pages_although_it_repeats_its_paging_cookie() {
    // Samba's paged-results cookie names the search, not the position: the
    // same cookie comes back with every page.
    let d = Samba::start();
    let mut input = d.input();
    input.page_size = 4;
    let cfg = config(&input);
    let all = users(&cfg).await;
    assert_eq!(all.len(), 21, "{:?}", all.keys());
    let report = bindery_directory::probe::test_connection(&cfg, &input.server_uris).await;
    assert_eq!(report.user_count, Some(21), "{report:#?}");
    // Groups read from the groups' side, in pages of one group.
    input.page_size = 1;
    input.group_mode = bindery_model::GroupMode::Search;
    input.group_base = d.groups_ou.clone();
    input.attr_map = input.attr_map.replace(r#","groups":"memberOf""#, "");
    let all = users(&config(&input)).await;
    let mut groups = all["user01"].user.groups.clone();
    groups.sort();
    assert_eq!(groups, vec![d.group_dn("admins"), d.group_dn("staff")]);
    assert_eq!(all["user06"].user.groups, Vec::<String>::new());
}

#[tokio::test]
async fn samba_uid_is_the_object_guid_and_binds_give_ad_subcodes() {
    let d = Samba::start();
    let cfg = config(&d.input());
    let all = users(&cfg).await;
    assert_eq!(all.len(), 21, "{:?}", all.keys());
    for e in all.values() {
        assert!(e.uid.len() == 32 && e.uid.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{}", e.uid);
    }
    assert_eq!(all["disabled01"].state, Some(AccountState::Disabled));
    assert_eq!(all["user01"].state, None);
    assert!(in_group(&all["user01"], &d.group_dn("admins")));

    let bind = |dn: String, pw: String| {
        let cfg = cfg.clone();
        async move {
            let (mut ldap, _) = bindery_directory::conn::connect(&cfg.servers[0], &cfg).await.map_err(|(_, f, _)| f).expect("connect");
            bindery_directory::authn::bind_user(&mut ldap, &cfg, &dn, &pw).await
        }
    };
    bind(d.user_dn("user01"), d.user_password.clone()).await.expect("right password");
    let f = bind(d.user_dn("user01"), "wrong-password".into()).await.unwrap_err();
    assert_eq!((f.ldap_code, f.ad_subcode.as_deref()), (Some(49), Some("52e")), "{f:?}");
    assert!(f.message.contains("invalid credentials"), "{}", f.message);
    let f = bind(d.user_dn("disabled01"), d.user_password.clone()).await.unwrap_err();
    assert_eq!((f.ldap_code, f.ad_subcode.as_deref()), (Some(49), Some("533")), "{f:?}");
    assert!(f.message.contains("account disabled"), "{}", f.message);
}

#[tokio::test]
async fn ad_delta_detect_on_openldap_says_it_is_not_active_directory() {
    let d = bindery_directory::testing::Slapd::start();
    let support = detect(&config(&d.input())).await;
    assert_eq!((support.method, support.sees_deletions), (DeltaMethod::None, false), "{support:?}");
    assert!(support.reason.contains("not Active Directory"), "{}", support.reason);
    let full = DeltaSupport { method: DeltaMethod::Dirsync, sees_deletions: false, reason: String::new() };
    let cfg = config(&d.input());
    let ou = cfg.search_ous[0].clone();
    assert!(matches!(initial_cookie(&cfg, &ou, &full).await, Err(DeltaError::Failed(_))));
}

/// Figures for the issue's note (a delta read of 100 modifications and 10
/// deletions against a full enumeration), per account. Run with
/// `SAMBA_BENCH_USERS=10000 cargo test -p bindery-directory --test directory samba_delta_figures -- --ignored --nocapture`
/// (the first run builds a template with that many users: 1,000 take ~6 s,
/// 10,000 ~6 min). Measured with 10,000: the full enumeration 2.8–4.2 s,
/// the delta read 0.19–0.25 s (5–8 %) by DirSync and by USN.
#[tokio::test]
#[ignore = "measurement: builds a large template once"]
async fn samba_delta_figures() {
    let n = std::env::var("SAMBA_BENCH_USERS").unwrap_or_else(|_| "10000".into());
    let d = Samba::start_with(&[("SAMBA_EXTRA_USERS", &n)]);
    let n: usize = n.parse().expect("SAMBA_BENCH_USERS is a number");
    let mut accounts = Vec::new();
    let usn = Some(DeltaSupport { method: DeltaMethod::Usn, sees_deletions: true, reason: String::new() });
    for (who, mut input, forced) in [
        ("replication account", d.input_as(&d.repl_dn, &d.repl_password), None),
        ("replication account", d.input_as(&d.repl_dn, &d.repl_password), usn),
        ("service account", d.input(), None),
    ] {
        input.page_size = 1000;
        let cfg = config(&input);
        let support = match forced {
            Some(s) => s,
            None => detect(&cfg).await,
        };
        let t = std::time::Instant::now();
        let all = users(&cfg).await;
        let full = t.elapsed();
        assert_eq!(all.len(), n + 21);
        let t = std::time::Instant::now();
        let start = initial_cookie(&cfg, &d.people_ou, &support).await.expect("initial cookie");
        let initial = t.elapsed();
        accounts.push((who, cfg, support, full, initial, start));
    }
    let mut ldap = d.admin().await;
    for i in 1..=100 {
        let dn = d.user_dn(&format!("extra{i:06}"));
        let r = ldap.modify(&dn, vec![ldap3::Mod::Replace("mail".to_string(), [format!("changed{i}@bindery.test")].into())]).await.unwrap();
        assert_eq!(r.rc, 0);
    }
    for i in 101..=110 {
        let r = ldap.delete(&d.user_dn(&format!("extra{i:06}"))).await.unwrap();
        assert_eq!(r.rc, 0);
    }
    for (who, cfg, support, full, initial, start) in accounts {
        let t = std::time::Instant::now();
        let batch = read_changes(&cfg, &d.people_ou, &start.cookie).await.expect("delta read");
        let delta = t.elapsed();
        let (up, del) = split(&batch);
        println!(
            "{who}: {} ({} deletions seen), {n} users: full enumeration {:.0} ms, initial cookie {:.0} ms, delta of 100 modifications + 10 deletions {:.0} ms ({} upserts, {} deletes) = {:.1} % of the full enumeration",
            support.method.as_str(),
            if support.sees_deletions { "with" } else { "no" },
            full.as_secs_f64() * 1000.0,
            initial.as_secs_f64() * 1000.0,
            delta.as_secs_f64() * 1000.0,
            up.len(),
            del.len(),
            100.0 * delta.as_secs_f64() / full.as_secs_f64()
        );
        assert_eq!(up.len(), 100, "{who}");
        assert_eq!(del.len(), if support.sees_deletions { 10 } else { 0 }, "{who}");
    }
}
