//! The directory client against a real OpenLDAP (`testkit/slapd`).

use bindery_directory::authn::test_login;
use bindery_directory::config::validate;
use bindery_directory::probe::test_connection;
use bindery_directory::testing::Slapd;
use bindery_directory::{DirectoryConfig, Secret};
use bindery_model::{DirectoryInput, ProbeReport};

fn config(input: &DirectoryInput) -> DirectoryConfig {
    validate(input, Secret::new(input.bind_password.clone().unwrap_or_default()), Secret::default()).expect("valid config")
}

async fn probe(input: &DirectoryInput) -> ProbeReport {
    test_connection(&config(input), &input.server_uris).await
}

/// The one failed step of the first server, and the steps before it.
fn failed_step(r: &ProbeReport) -> (String, String, Vec<String>) {
    let s = &r.servers[0];
    let bad = s.steps.iter().find(|s| !s.ok).unwrap_or_else(|| panic!("no step failed: {r:#?}"));
    let ok_before: Vec<String> = s.steps.iter().take_while(|s| s.ok).map(|s| s.step.clone()).collect();
    (bad.step.clone(), bad.detail.clone(), ok_before)
}

#[tokio::test]
async fn connection_test_passes_over_ldap_ldaps_and_starttls() {
    let d = Slapd::start();
    for (uris, starttls) in [
        (vec![d.ldap_url.clone()], false),
        (vec![d.ldaps_url.clone()], false),
        (vec![d.ldap_url.clone()], true),
        (vec![d.ldaps_host_url.clone()], false),
    ] {
        let mut i = d.input();
        i.server_uris = uris.clone();
        i.starttls = starttls;
        let r = probe(&i).await;
        assert!(r.ok, "{uris:?} starttls={starttls}: {r:#?}");
        let steps: Vec<&str> = r.servers[0].steps.iter().map(|s| s.step.as_str()).collect();
        let tls = uris[0].starts_with("ldaps") || starttls;
        let want: Vec<&str> = if tls {
            vec!["parse", "tcp", "tls", "bind", "search_ou", "search_ou", "count", "sample", "delta"]
        } else {
            vec!["parse", "tcp", "bind", "search_ou", "search_ou", "count", "sample", "delta"]
        };
        assert_eq!(steps, want);
        // 6 people + 2 tech users, counted page by page (page size 2).
        assert_eq!(r.user_count, Some(8), "{r:#?}");
        assert_eq!(r.sample.len(), 5);
        // The test kit's slapd has syncprov: delta sync by syncrepl, deletions included.
        let delta = r.delta.as_ref().expect("delta support reported");
        assert_eq!((delta.method.as_str(), delta.sees_deletions), ("syncrepl", true), "{delta:?}");
        assert!(delta.reason.contains("paged full enumeration"), "{}", delta.reason);
        if tls {
            let detail = &r.servers[0].steps[2].detail;
            assert!(detail.contains("issuer") && detail.contains("chain and host name verified"), "{detail}");
        }
    }
}

#[tokio::test]
async fn each_connection_step_fails_in_turn_with_its_cause() {
    let d = Slapd::start();
    // Wrong port: nothing listens.
    let mut i = d.input();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    i.server_uris = vec![format!("ldap://127.0.0.1:{free}")];
    let (step, detail, _) = failed_step(&probe(&i).await);
    assert_eq!(step, "tcp");
    assert!(detail.contains("connection refused"), "{detail}");

    // TLS with a CA that did not sign the server's certificate.
    let mut i = d.input();
    i.server_uris = vec![d.ldaps_url.clone()];
    i.ca_pem = d.other_ca_pem.clone();
    let (step, detail, before) = failed_step(&probe(&i).await);
    assert_eq!((step.as_str(), before), ("tls", vec!["parse".to_string(), "tcp".to_string()]));
    assert!(detail.contains("certificate not trusted"), "{detail}");
    // … the same through StartTLS.
    i.server_uris = vec![d.ldap_url.clone()];
    i.starttls = true;
    let (step, detail, _) = failed_step(&probe(&i).await);
    assert_eq!(step, "tls");
    assert!(detail.contains("certificate not trusted"), "{detail}");

    // Wrong bind password: invalid credentials with the LDAP code.
    let mut i = d.input();
    i.bind_password = Some("wrong".into());
    let r = probe(&i).await;
    let (step, detail, _) = failed_step(&r);
    assert_eq!(step, "bind");
    assert!(detail.contains("invalid credentials (LDAP 49)"), "{detail}");
    assert_eq!(r.servers[0].steps.iter().find(|s| s.step == "bind").unwrap().ldap_code, Some(49));

    // A search OU that does not exist.
    let mut i = d.input();
    i.search_ous = format!("ou=people,{b}|ou=nowhere,{b}", b = d.base_dn);
    let (step, detail, _) = failed_step(&probe(&i).await);
    assert_eq!(step, "search_ou");
    assert!(detail.contains("no such object: ou=nowhere,dc=example,dc=com"), "{detail}");

    // A filter that matches nothing.
    let mut i = d.input();
    i.search_filter = "(&(objectClass=groupOfNames)(uid=%(user)s))".into();
    let (step, detail, _) = failed_step(&probe(&i).await);
    assert_eq!(step, "count");
    assert!(detail.contains("matches no entry"), "{detail}");
}

#[tokio::test]
async fn host_names_are_verified() {
    let d = Slapd::start_with(&[("SLAPD_CERT_SANS", "DNS:ldap.example.invalid")]);
    let mut i = d.input();
    i.server_uris = vec![d.ldaps_url.clone()];
    let (step, detail, _) = failed_step(&probe(&i).await);
    assert_eq!(step, "tls");
    assert!(detail.contains("not valid for the host name 127.0.0.1"), "{detail}");
    // Only an explicit choice skips verification, and the report says so.
    i.skip_verify = true;
    let r = probe(&i).await;
    assert!(r.ok, "{r:#?}");
    assert!(r.servers[0].steps[2].detail.contains("WARNING: certificate verification is switched off"));
}

#[tokio::test]
async fn a_dead_server_costs_one_connect_timeout_then_the_next_is_tried() {
    let d = Slapd::start();
    let mut i = d.input();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    i.server_uris = vec![format!("ldap://127.0.0.1:{free}"), d.ldap_url.clone()];
    let cfg = config(&i);
    let r = test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await;
    assert!(r.allowed, "{r:#?}");
    assert_eq!(r.server.as_deref(), Some(d.ldap_url.as_str()));
}

#[tokio::test]
async fn test_login_reports_each_kind_of_user() {
    let d = Slapd::start();
    let cfg = config(&d.input());
    let r = test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await;
    assert!(r.allowed, "{r:#?}");
    assert_eq!((r.bind.as_str(), r.account_state.as_str(), r.local_user.as_deref()), ("ok", "active", Some("jdoe")));
    let groups = r.user.as_ref().unwrap().groups.join(";");
    assert!(groups.contains("cn=admins") && groups.contains("cn=developers"), "direct and nested: {groups}");
    assert_eq!(r.user.as_ref().unwrap().email, "jdoe@example.com");

    // Case does not matter to the directory; the local user is the directory's spelling.
    let r = test_login(&cfg, "JDOE", Some("Jdoe-Password-1")).await;
    assert_eq!(r.local_user.as_deref(), Some("jdoe"));

    let r = test_login(&cfg, "jdoe", Some("wrong-password")).await;
    assert!(!r.allowed);
    assert_eq!(r.ldap_code, Some(49));
    assert!(r.bind.contains("invalid credentials"), "{}", r.bind);

    let r = test_login(&cfg, "nomail", Some("Nomail-Password-1")).await;
    assert!(r.allowed, "{r:#?}");
    assert_eq!(r.user.unwrap().email, "");

    let r = test_login(&cfg, "élodie", Some("Pässwörd-É-1")).await;
    assert!(r.allowed, "non-ASCII name and password: {r:#?}");
    assert!(r.user.unwrap().groups.iter().any(|g| g.contains("Équipe Ünïcode")));

    let r = test_login(&cfg, "jsmith", Some("Jsmith-Password-1")).await;
    assert!(r.allowed, "escaped DN: {r:#?}");
    assert!(r.dn.unwrap().starts_with("cn=Smith"));

    let r = test_login(&cfg, "tina", Some("Tina-Password-1")).await;
    assert!(r.allowed, "second OU: {r:#?}");

    let r = test_login(&cfg, "locked", Some("Locked-Password-1")).await;
    assert!(!r.allowed);
    assert_eq!(r.account_state, "locked", "{r:#?}");

    let r = test_login(&cfg, "disabled", Some("Disabled-Password-1")).await;
    assert!(!r.allowed, "the directory accepts the bind, Bindery refuses the disabled account");
    assert_eq!((r.bind.as_str(), r.account_state.as_str()), ("ok", "disabled"));

    // Lookup only: no bind.
    let r = test_login(&cfg, "tina", None).await;
    assert!(!r.allowed && r.bind.starts_with("not checked"));
    assert!(r.verdict.contains("resolves to"), "{}", r.verdict);

    // Empty and whitespace passwords are refused before any bind.
    for pw in ["", "   "] {
        let r = test_login(&cfg, "jdoe", Some(pw)).await;
        assert!(!r.allowed);
        assert!(r.bind.contains("refused before any bind"), "{}", r.bind);
    }
}

#[tokio::test]
async fn injection_attempts_never_match_or_widen_the_search() {
    let d = Slapd::start();
    let cfg = config(&d.input());
    let long = "x".repeat(300);
    for hostile in ["*", "admin)(uid=*", "jdoe)(|(uid=*", "a\\29", "j*", "*)(objectClass=*", long.as_str(), "Ünïcødé", "\u{0}"] {
        let r = test_login(&cfg, hostile, Some("Jdoe-Password-1")).await;
        assert!(!r.allowed, "{hostile:?} let in: {r:#?}");
        assert!(r.dn.is_none(), "{hostile:?} matched {:?}", r.dn);
        assert!(r.verdict.contains("no entry matches"), "{hostile:?}: {}", r.verdict);
    }
}

#[tokio::test]
async fn the_search_must_match_exactly_one_entry() {
    let d = Slapd::start();
    let mut i = d.input();
    // A careless filter that matches everyone: refused, not "first match wins".
    i.search_filter = "(|(uid=%(user)s)(objectClass=inetOrgPerson))".into();
    let r = test_login(&config(&i), "jdoe", Some("Jdoe-Password-1")).await;
    assert!(!r.allowed);
    assert!(r.verdict.contains("or more entries match"), "{}", r.verdict);
    // A user outside the search OUs is not found.
    let mut i = d.input();
    i.search_ous = format!("ou=tech,{}", d.base_dn);
    let r = test_login(&config(&i), "jdoe", Some("Jdoe-Password-1")).await;
    assert!(!r.allowed && r.dn.is_none(), "{r:#?}");
}

#[tokio::test]
async fn ad_style_filters_and_disabled_bits() {
    let d = Slapd::start();
    let mut i = d.input();
    i.search_filter = "(&(objectClass=binderyADUser)(sAMAccountName=%(user)s))".into();
    i.attr_map = r#"{"username":"sAMAccountName","name":"cn","is_active":"userAccountControl"}"#.into();
    let cfg = config(&i);
    assert!(test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await.allowed);
    let r = test_login(&cfg, "disabled", Some("Disabled-Password-1")).await;
    assert_eq!(r.account_state, "disabled");
    assert!(!r.user.unwrap().is_active);
    // The directory changes: disabling jdoe (uac 514) is seen at once.
    d.modify("dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n");
    let r = test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await;
    assert_eq!(r.account_state, "disabled");
}

#[tokio::test]
async fn group_mapping_gives_the_highest_role_and_every_organisation() {
    let d = Slapd::start();
    let mut i = d.input();
    i.group_mappings = vec![
        bindery_model::GroupMapping::parse_line("CN=Developers, ou=groups,dc=example,dc=com => auditor; Tech").unwrap(),
        bindery_model::GroupMapping::parse_line("cn=admins,ou=groups,dc=example,dc=com => admin; Ops").unwrap(),
        bindery_model::GroupMapping::parse_line("cn=nobody,ou=groups,dc=example,dc=com => admin; Nope").unwrap(),
    ];
    let cfg = config(&i);
    let r = test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await;
    assert_eq!(r.mapped_role, Some(bindery_model::Role::Admin), "{r:#?}");
    assert_eq!(r.mapped_organisations, vec!["Tech".to_string(), "Ops".to_string()], "nested developers + direct admins");
    assert!(r.verdict.contains("role System Admin"), "{}", r.verdict);
    let r = test_login(&cfg, "tina", Some("Tina-Password-1")).await;
    assert_eq!((r.mapped_role, r.mapped_organisations), (Some(bindery_model::Role::Auditor), vec!["Tech".to_string()]));
    let r = test_login(&cfg, "nomail", Some("Nomail-Password-1")).await;
    assert_eq!(r.mapped_role, None);
    // At sign-in the groups are read too.
    let gateway = bindery_directory::gateway::Gateway::new(cfg.clone());
    let done = gateway.login("jdoe", "Jdoe-Password-1").await.unwrap();
    assert!(!done.cached);
    assert_eq!(bindery_directory::authn::apply_mappings(&cfg, &done.found.user.groups).map(|m| m.0), Some(bindery_model::Role::Admin));
    // With group mappings the groups decide the role: every sign-in reads
    // them again (a demotion is never served from the user DN cache).
    let again = gateway.login("JDoe", "Jdoe-Password-1").await.unwrap();
    assert!(!again.cached);
    assert_eq!(again.found.user.groups, done.found.user.groups);
}

#[tokio::test]
async fn fetch_certificate_shows_the_chain_and_its_ca_can_be_trusted() {
    let d = Slapd::start();
    let mut i = d.input();
    i.server_uris = vec![d.ldaps_url.clone()];
    i.ca_pem = String::new(); // nothing trusted yet (not even the system's CAs know this one)
    let cfg = config(&i);
    let server = &cfg.servers[0];
    let chain = bindery_directory::conn::fetch_certificates(server, &cfg).await.expect("fetched");
    assert_eq!(chain.len(), 2, "leaf and CA: {chain:#?}");
    assert!(chain[0].subject.contains("CN=localhost") && !chain[0].is_ca);
    // The fixture's certificates live 10 days: flagged as expiring (< 30 days).
    assert!(chain[1].is_ca && chain[1].expiring && (9..=10).contains(&chain[1].days_left), "{:?}", chain[1]);
    let ca_der = bindery_directory::conn::parse_certs(&d.ca_pem).unwrap().remove(0);
    let fetched = bindery_directory::conn::parse_certs(&chain[1].pem).unwrap().remove(0);
    assert_eq!(fetched.as_ref(), ca_der.as_ref(), "the fetched CA is the directory's CA");
    // Before: not trusted. After trusting the fetched CA: verified, host name included.
    assert!(!probe(&i).await.ok);
    i.ca_pem = chain[1].pem.clone();
    let r = probe(&i).await;
    assert!(r.ok, "{r:#?}");
    // Plain ldap:// without StartTLS has nothing to fetch.
    let mut plain = d.input();
    plain.starttls = false;
    let cfg = config(&plain);
    assert!(bindery_directory::conn::fetch_certificates(&cfg.servers[0], &cfg).await.is_err());
}

#[tokio::test]
async fn groups_by_searching_member_direct_and_nested() {
    let d = Slapd::start();
    let mut i = d.input();
    i.group_mode = bindery_model::GroupMode::Search;
    i.group_base = format!("ou=groups,{}", d.base_dn);
    i.group_filter = "(&(objectClass=groupOfNames)(member={0}))".into();
    i.nested_groups = false;
    let r = test_login(&config(&i), "jdoe", None).await;
    let direct = r.user.unwrap().groups;
    assert_eq!(direct.len(), 1, "{direct:?}");
    assert!(direct[0].starts_with("cn=admins"), "{direct:?}");
    i.nested_groups = true;
    let r = test_login(&config(&i), "jdoe", None).await;
    let all = r.user.unwrap().groups.join(";");
    assert!(all.contains("cn=admins") && all.contains("cn=developers"), "nested through cn=admins: {all}");
    // The DN in the filter is escaped too: the escaped-DN user's groups resolve.
    let r = test_login(&config(&i), "jsmith", None).await;
    assert!(r.dn.is_some() && r.user.is_some(), "{r:#?}");
}

// ----- referrals (checklist 4) ----------------------------------------------

/// `ou=partners,ou=people` in the fixture is a referral object: every
/// subtree search of ou=people answers with a continuation reference to
/// it. Here it points at a server that would answer for anyone (a duplicate
/// jdoe, a `partner` user, any password). ldap3 hands continuation
/// references back in the result's `refs`; Bindery never reads them.
/// Lookup, login, the connection test and the enumeration ignore the
/// reference: nobody connects there, and the people of ou=people still
/// work. (Checked by hand: a lookup that opens a connection to each `refs`
/// URL fails this test.)
#[tokio::test]
async fn referrals_in_a_search_ou_are_never_followed() {
    use bindery_directory::enumerate::enumerate;
    use bindery_directory::gateway::Gateway;
    use bindery_ldap_responder::{Entry, Responder};
    let d = Slapd::start();
    let partners = format!("ou=partners,{}", d.base_dn);
    let elsewhere = Responder::start(vec![Entry::user(&partners, "partner", 1), Entry::user(&partners, "jdoe", 2)]).await;
    d.modify_manage_dsa_it(&format!(
        "dn: ou=partners,ou=people,{b}\nchangetype: modify\nreplace: ref\nref: {}/{partners}\n",
        elsewhere.url,
        b = d.base_dn
    ));
    let cfg = config(&d.input());

    // Lookup and login of a user beside the referral: exactly one entry.
    let r = test_login(&cfg, "jdoe", None).await;
    assert!(r.verdict.contains("resolves to"), "{r:#?}");
    let r = test_login(&cfg, "jdoe", Some("Jdoe-Password-1")).await;
    assert!(r.allowed, "{r:#?}");
    // A user only the referral's target knows is not found (any password would do there).
    let r = test_login(&cfg, "partner", Some("anything-at-all")).await;
    assert!(!r.allowed && r.dn.is_none(), "{r:#?}");
    assert!(r.verdict.contains("no entry matches"), "{}", r.verdict);

    let gw = Gateway::new(cfg.clone());
    let found = gw.lookup("jdoe").await.expect("lookup").found.expect("jdoe found");
    assert_eq!(found.dn, format!("uid=jdoe,ou=people,{}", d.base_dn));
    assert!(gw.lookup("partner").await.expect("lookup").found.is_none());
    let logged_in = gw.login("jdoe", "Jdoe-Password-1").await.expect("jdoe signs in");
    assert_eq!(logged_in.found.dn, found.dn);
    assert!(gw.login("partner", "anything-at-all").await.is_err(), "partner is unknown here");

    // Enumeration (page size 2, so the reference lands amid the pages) and the paged count.
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut names = Vec::new();
    let totals = enumerate(&cfg, &cancel, |page, _| {
        names.extend(page.into_iter().map(|e| e.user.username));
        async { Ok(()) }
    })
    .await
    .expect("a complete enumeration");
    names.sort();
    assert_eq!(names, ["disabled", "jdoe", "jsmith", "locked", "nomail", "tina", "tom", "élodie"]);
    assert_eq!(totals.entries, 8);
    let report = test_connection(&cfg, &d.input().server_uris).await;
    assert_eq!(report.user_count, Some(8), "{report:#?}");

    assert_eq!(elsewhere.connections(), 0, "somebody followed the referral");

    // A search OU that is itself the referral: refused with LDAP 10, not chased.
    let mut i = d.input();
    i.search_ous = format!("ou=partners,ou=people,{}", d.base_dn);
    let r = test_login(&config(&i), "partner", Some("anything-at-all")).await;
    assert!(!r.allowed, "{r:#?}");
    assert!(r.verdict.contains("referral (not followed)"), "{}", r.verdict);
    let err = enumerate(&config(&i), &cancel, |_, _| async { Ok(()) }).await.expect_err("incomplete");
    assert_eq!(err.ldap_code, Some(10), "{err:?}");
    assert_eq!(elsewhere.connections(), 0, "somebody followed the referral");
}

// ----- delta sync: RFC 4533 refreshOnly against slapd with syncprov ----------

mod syncrepl {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    use bindery_directory::delta::{Change, DeltaBatch, DeltaError};
    use bindery_directory::enumerate::enumerate;
    use bindery_directory::syncrepl::{read_changes, start_cookies, StoredCookie};
    use bindery_directory::testing::Slapd;
    use bindery_directory::DirectoryConfig;

    /// username → entryUUID, by a full enumeration.
    async fn uuids(cfg: &DirectoryConfig) -> HashMap<String, String> {
        let cancel = AtomicBool::new(false);
        let mut out = HashMap::new();
        enumerate(cfg, &cancel, |page, _| {
            out.extend(page.into_iter().map(|e| (e.user.username, e.uid)));
            async { Ok(()) }
        })
        .await
        .expect("enumeration");
        out
    }

    fn next_cookies(batches: &[DeltaBatch]) -> Vec<StoredCookie> {
        batches
            .iter()
            .map(|b| StoredCookie { search_ou: b.search_ou.clone(), server: b.server.clone(), cookie: b.cookie.clone() })
            .collect()
    }

    /// (usernames upserted with their state, uids deleted) of one batch.
    fn summary(b: &DeltaBatch) -> (Vec<(String, String)>, Vec<String>) {
        let mut up = Vec::new();
        let mut del = Vec::new();
        for c in &b.changes {
            match c {
                Change::Upsert(e) => up.push((e.user.username.clone(), e.state.map(|s| s.as_str().to_string()).unwrap_or_default())),
                Change::Delete { uid } => del.push(uid.clone()),
            }
        }
        up.sort();
        del.sort();
        (up, del)
    }

    #[tokio::test]
    async fn a_refresh_reads_adds_modifies_renames_disables_and_deletes_by_entry_uuid() {
        let d = Slapd::start();
        let cfg = super::config(&d.input());
        let before = uuids(&cfg).await;
        let (server, cookies) = start_cookies(&cfg).await.expect("cookies from contextCSN");
        assert_eq!(server, d.ldap_url);
        assert_eq!(cookies.len(), 2, "one cookie per search OU: {cookies:?}");
        assert!(cookies.iter().all(|c| c.cookie.starts_with("rid=000,csn=")), "{cookies:?}");
        let cancel = AtomicBool::new(false);

        // Nothing changed: nothing read.
        let b = read_changes(&cfg, &cookies, &cancel).await.expect("refresh");
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|b| b.changes.is_empty() && b.present.is_none()), "{b:?}");

        let base = &d.base_dn;
        d.modify(&format!(
            "dn: uid=newbie,ou=people,{base}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: newbie\ncn: New Bie\nsn: Bie\nmail: newbie@example.com\n\n\
             dn: uid=jdoe,ou=people,{base}\nchangetype: modify\nreplace: cn\ncn: John Changed\n\n\
             dn: uid=nomail,ou=people,{base}\nchangetype: modrdn\nnewrdn: uid=nomail2\ndeleteoldrdn: 1\n\n\
             dn: uid=tina,ou=tech,{base}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n\n\
             dn: uid=locked,ou=people,{base}\nchangetype: delete\n"
        ));
        let b = read_changes(&cfg, &cookies, &cancel).await.expect("refresh");
        let people = b.iter().find(|b| b.search_ou.starts_with("ou=people")).expect("people");
        let tech = b.iter().find(|b| b.search_ou.starts_with("ou=tech")).expect("tech");
        assert!(people.present.is_none() && tech.present.is_none(), "the session log covers the cookie: a delete phase");
        let (up, del) = summary(people);
        assert_eq!(
            up,
            [("jdoe".to_string(), String::new()), ("newbie".into(), String::new()), ("nomail2".into(), String::new())],
            "{people:?}"
        );
        assert!(del.contains(&before["locked"]), "the deleted entry, by entryUUID: {del:?}");
        // syncprov also lists, as "no longer matching", entries that changed
        // outside the search (tina, in ou=tech): the caller takes a delete
        // only when no search reports the entry.
        assert!(del.iter().all(|u| *u == before["locked"] || *u == before["tina"]), "{del:?}");
        // The rename keeps the entry's immutable id.
        let renamed = people.changes.iter().find_map(|c| match c {
            Change::Upsert(e) if e.user.username == "nomail2" => Some(e.uid.clone()),
            _ => None,
        });
        assert_eq!(renamed, Some(before["nomail"].clone()));
        let (up, del) = summary(tech);
        assert_eq!(up, [("tina".to_string(), "disabled".to_string())]);
        let people_changed = [&before["jdoe"], &before["nomail"], &before["locked"]];
        assert!(del.iter().all(|u| people_changed.contains(&u)), "only entries of the other OU: {del:?}");
        assert!(b.iter().zip(&cookies).all(|(b, c)| b.cookie != c.cookie), "the cookies moved on");

        // From the new cookies: nothing more.
        let again = read_changes(&cfg, &next_cookies(&b), &cancel).await.expect("refresh");
        assert!(again.iter().all(|b| b.changes.is_empty()), "{again:?}");

        // A cookie from before the session log (here: before every entry) is
        // served by a present phase: every entry is listed, the rest is gone.
        let old: Vec<StoredCookie> = cookies
            .iter()
            .map(|c| StoredCookie { cookie: "rid=000,csn=20000101000000.000000Z#000000#000#000000".into(), ..c.clone() })
            .collect();
        let b = read_changes(&cfg, &old, &cancel).await.expect("refresh");
        let people = b.iter().find(|b| b.search_ou.starts_with("ou=people")).expect("people");
        assert!(people.present.is_some(), "a present phase: {people:?}");
        let listed: Vec<String> = people
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(e) => Some(e.uid.clone()),
                Change::Delete { .. } => None,
            })
            .chain(people.present.iter().flatten().cloned())
            .collect();
        assert!(listed.contains(&before["jdoe"]) && !listed.contains(&before["locked"]), "{listed:?}");
    }

    #[tokio::test]
    async fn a_stale_or_foreign_cookie_requires_a_full_enumeration() {
        let d = Slapd::start();
        let cfg = super::config(&d.input());
        let (_, cookies) = start_cookies(&cfg).await.expect("cookies");
        let cancel = AtomicBool::new(false);
        // A cookie ahead of the server (a directory restored from a backup).
        let ahead: Vec<StoredCookie> = cookies
            .iter()
            .map(|c| StoredCookie { cookie: "rid=000,csn=20991231000000.000000Z#000000#000#000000".into(), ..c.clone() })
            .collect();
        match read_changes(&cfg, &ahead, &cancel).await {
            Err(DeltaError::FullRequired(why)) => assert!(why.contains("ahead of the server"), "{why}"),
            other => panic!("expected FullRequired, got {other:?}"),
        }
        // A cookie of another server.
        let foreign: Vec<StoredCookie> =
            cookies.iter().map(|c| StoredCookie { server: "ldap://elsewhere:389".into(), ..c.clone() }).collect();
        match read_changes(&cfg, &foreign, &cancel).await {
            Err(DeltaError::FullRequired(why)) => assert!(why.contains("belongs to ldap://elsewhere:389"), "{why}"),
            other => panic!("expected FullRequired, got {other:?}"),
        }
        // No cookie for a search OU.
        match read_changes(&cfg, &cookies[..1], &cancel).await {
            Err(DeltaError::FullRequired(why)) => assert!(why.contains("no cookie"), "{why}"),
            other => panic!("expected FullRequired, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refresh_the_size_limit_would_cut_requires_a_full_enumeration() {
        // 600 users: more than slapd's size limit of 500, which the service
        // account escapes for paged searches only.
        let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", "600")]);
        let cfg = super::config(&d.input());
        let (_, cookies) = start_cookies(&cfg).await.expect("cookies");
        let old: Vec<StoredCookie> = cookies
            .iter()
            .map(|c| StoredCookie { cookie: "rid=000,csn=20000101000000.000000Z#000000#000#000000".into(), ..c.clone() })
            .collect();
        match read_changes(&cfg, &old, &AtomicBool::new(false)).await {
            Err(DeltaError::FullRequired(why)) => assert!(why.contains("size limit"), "{why}"),
            other => panic!("expected FullRequired, got {other:?}"),
        }
    }
}

// ----- paging faults (checklist 18), on the test kit's misbehaving server ----

mod paging_faults {
    use std::sync::atomic::AtomicBool;

    use bindery_directory::enumerate::enumerate;
    use bindery_directory::testing::plain_input;
    use bindery_directory::Failure;
    use bindery_ldap_responder::{Fault, Responder};

    const BASE: &str = "dc=example,dc=com";

    async fn responder() -> Responder {
        Responder::with_users(&format!("ou=people,{BASE}"), 5).await
    }

    fn cfg(r: &Responder, max_pages: usize) -> bindery_directory::DirectoryConfig {
        let mut cfg = super::config(&plain_input(&r.url, BASE));
        cfg.max_pages = max_pages;
        cfg
    }

    /// A store in progress: records (page, whether it finished) when it is
    /// dropped, finished or not.
    struct Store<'a>(u64, bool, &'a std::cell::RefCell<Vec<(u64, bool)>>);
    impl Drop for Store<'_> {
        fn drop(&mut self) {
            self.2.borrow_mut().push((self.0, self.1));
        }
    }

    /// Enumerate; the entries seen, and the end.
    async fn run(cfg: &bindery_directory::DirectoryConfig) -> (u64, Result<u64, Failure>) {
        let cancel = AtomicBool::new(false);
        let mut seen = 0u64;
        let r = enumerate(cfg, &cancel, |page, _| {
            seen += page.len() as u64;
            async { Ok(()) }
        })
        .await;
        (seen, r.map(|t| t.entries))
    }

    /// A server without RFC 4533: Test connection says so and why; a
    /// refresh it answers as a plain search (ignoring the critical control)
    /// is a failed read, never "every entry is gone".
    #[tokio::test]
    async fn a_server_without_syncrepl_is_named_and_never_read_as_changes() {
        use bindery_directory::delta::DeltaError;
        use bindery_directory::syncrepl::{read_changes, StoredCookie};
        let r = responder().await;
        let cfg = cfg(&r, 100);
        let report = bindery_directory::probe::test_connection(&cfg, std::slice::from_ref(&r.url)).await;
        let delta = report.delta.expect("delta support reported");
        assert_eq!(delta.method, "none", "{delta:?}");
        assert!(delta.reason.contains("1.3.6.1.4.1.4203.1.9.1.1"), "{}", delta.reason);
        let cookies: Vec<StoredCookie> = cfg
            .search_ous
            .iter()
            .map(|ou| StoredCookie { search_ou: ou.clone(), server: r.url.clone(), cookie: "rid=000,csn=x".into() })
            .collect();
        match read_changes(&cfg, &cookies, &AtomicBool::new(false)).await {
            Err(DeltaError::Failed(f)) => assert!(f.message.contains("Sync State"), "{f:?}"),
            other => panic!("expected a failed read, got {other:?}"),
        }
    }

    /// Pages are read ahead of their storing (the first page's store waits
    /// for the snapshot's hashes), a bounded number of them, yet stored one
    /// at a time and in order, each with the totals up to and including it;
    /// a store that fails ends the enumeration with its error, and no page
    /// after it is stored.
    #[tokio::test]
    async fn pages_are_read_ahead_of_a_slow_store_and_stored_in_order() {
        use std::cell::RefCell;
        let r = Responder::with_users(&format!("ou=people,{BASE}"), 20).await;
        let mut cfg = cfg(&r, 100);
        cfg.page_size = 2;
        let cancel = AtomicBool::new(false);
        // (page number, entries counted up to it, entries in it)
        let stored = RefCell::new(Vec::new());
        let read_during_first = RefCell::new(0);
        let totals = enumerate(&cfg, &cancel, |page, t| {
            let (n, entries, len) = (t.pages, t.entries, page.len() as u64);
            let (stored, read_during_first, r) = (&stored, &read_during_first, &r);
            async move {
                if n == 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    *read_during_first.borrow_mut() = r.paged_searches();
                }
                stored.borrow_mut().push((n, entries, len));
                Ok(())
            }
        })
        .await
        .expect("a complete enumeration");
        assert_eq!(totals.entries, 20);
        let stored = stored.into_inner();
        assert_eq!(stored.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=totals.pages).collect::<Vec<_>>());
        let mut sum = 0;
        for (n, entries, len) in &stored {
            sum += len;
            assert_eq!(*entries, sum, "page {n}: the totals it was given");
        }
        assert_eq!(sum, 20);
        // While the first page was stored: that page, the next one (mapped
        // meanwhile), the two queued behind it and the one waiting for
        // room were read; no more.
        assert_eq!(read_during_first.into_inner(), 5);

        let kept = RefCell::new(Vec::new());
        let err = enumerate(&cfg, &cancel, |_, t| {
            let (n, kept) = (t.pages, &kept);
            async move {
                if n == 2 {
                    return Err("the disk is full".to_string());
                }
                kept.borrow_mut().push(n);
                Ok(())
            }
        })
        .await
        .expect_err("a failed store is an incomplete enumeration");
        assert!(err.message.contains("storing page 2: the disk is full"), "{err:?}");
        assert_eq!(kept.into_inner(), [1], "no page after the failed one is stored");
    }

    /// With two stores at once (PostgreSQL's setting), every page is
    /// stored once, never more than two at a time, each with the totals up
    /// to and including it; a store that fails starts no other, and the
    /// one beside it ends by itself rather than being dropped half-way.
    #[tokio::test]
    async fn two_stores_at_once_store_every_page_once_and_a_failure_lets_the_other_finish() {
        use std::cell::{Cell, RefCell};
        let r = Responder::with_users(&format!("ou=people,{BASE}"), 20).await;
        let mut cfg = cfg(&r, 100);
        cfg.page_size = 2;
        cfg.stores_at_once = 2;
        let cancel = AtomicBool::new(false);
        let (running, most) = (Cell::new(0), Cell::new(0));
        let stored = RefCell::new(Vec::new());
        let totals = enumerate(&cfg, &cancel, |page, t| {
            let (n, entries, len) = (t.pages, t.entries, page.len() as u64);
            let (running, most, stored) = (&running, &most, &stored);
            async move {
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                // Odd pages take longer: the even ones overtake them.
                tokio::time::sleep(std::time::Duration::from_millis(if n % 2 == 1 { 40 } else { 10 })).await;
                running.set(running.get() - 1);
                stored.borrow_mut().push((n, entries, len));
                Ok(())
            }
        })
        .await
        .expect("a complete enumeration");
        assert_eq!(totals.entries, 20);
        assert_eq!(most.get(), 2, "two pages were stored at once, never more");
        let mut stored = stored.into_inner();
        assert_ne!(stored.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=totals.pages).collect::<Vec<_>>(), "stores overlapped");
        stored.sort();
        assert_eq!(stored.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=totals.pages).collect::<Vec<_>>(), "each page once");
        let mut sum = 0;
        for (n, entries, len) in &stored {
            sum += len;
            assert_eq!(*entries, sum, "page {n}: the totals it was given");
        }

        let ended = RefCell::new(Vec::new());
        let err = enumerate(&cfg, &cancel, |_, t| {
            let (n, ended) = (t.pages, &ended);
            async move {
                let mut store = Store(n, false, ended);
                if n == 2 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    return Err("the disk is full".to_string());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                store.1 = true;
                Ok(())
            }
        })
        .await
        .expect_err("a failed store is an incomplete enumeration");
        assert!(err.message.contains("storing page 2: the disk is full"), "{err:?}");
        assert_eq!(ended.into_inner(), [(2, false), (1, true)], "page 1 finished beside the failed page 2, and none started after");
    }

    /// A read that fails (here a cancel) while a page is being stored lets
    /// that store finish: a store holds a write transaction, and one
    /// dropped half-way left SQLite locked for every other writer (an
    /// administrator's login failed). Pages are stored as a prefix.
    #[tokio::test]
    async fn a_failed_read_lets_the_store_in_progress_finish() {
        use std::cell::RefCell;
        use std::sync::atomic::Ordering;
        let r = Responder::with_users(&format!("ou=people,{BASE}"), 20).await;
        let mut cfg = cfg(&r, 100);
        cfg.page_size = 2;
        let cancel = AtomicBool::new(false);
        let ended = RefCell::new(Vec::new());
        let err = enumerate(&cfg, &cancel, |_, t| {
            let (n, ended, cancel) = (t.pages, &ended, &cancel);
            async move {
                let mut store = Store(n, false, ended);
                if n == 2 {
                    cancel.store(true, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                store.1 = true;
                Ok(())
            }
        })
        .await
        .expect_err("a cancelled enumeration is incomplete");
        assert!(err.message.contains("cancelled"), "{err:?}");
        let ended = ended.into_inner();
        assert!(ended.iter().all(|(_, finished)| *finished), "a store was dropped half-way: {ended:?}");
        let pages: Vec<u64> = ended.iter().map(|(n, _)| *n).collect();
        assert!(pages.len() >= 2 && pages.len() < 10, "{pages:?}");
        assert_eq!(pages, (1..=pages.len() as u64).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_honest_server_is_enumerated_completely() {
        let r = responder().await;
        let (seen, end) = run(&cfg(&r, 100)).await;
        assert_eq!((seen, end), (5, Ok(5)));
        // 3 pages of ou=people (2+2+1) and one of the empty ou=tech.
        assert_eq!(r.paged_searches(), 4);
    }

    #[tokio::test]
    async fn each_paging_fault_is_an_incomplete_enumeration_with_its_reason() {
        let r = responder().await;
        for (fault, reason) in [
            (Fault::RepeatCookie, "repeated its cookie"),
            (Fault::IgnorePaging, "ignored the paged-results control"),
            (Fault::SizeLimit, "size limit exceeded (LDAP 4)"),
            (Fault::EndlessPages, "still not finished after 20 pages: cut off"),
        ] {
            r.set_fault(fault);
            let before = r.paged_searches();
            let (seen, end) = run(&cfg(&r, 20)).await;
            let err = end.expect_err(&format!("{fault:?} taken as complete after {seen} entries"));
            assert!(err.message.contains(reason), "{fault:?}: {}", err.message);
            assert!(err.message.contains("incomplete") || err.ldap_code == Some(4), "{fault:?}: {}", err.message);
            assert!(!err.unreachable, "{fault:?}: an answer, not an outage");
            if fault == Fault::EndlessPages {
                assert_eq!(r.paged_searches() - before, 20, "cut off at the limit");
            }
            if fault == Fault::IgnorePaging {
                // Its one answer is checked before it is queued: not stored.
                assert_eq!(seen, 0, "a page without the paging control was stored");
            }
        }
    }

    #[tokio::test]
    async fn the_connection_test_counts_no_incomplete_result() {
        let r = responder().await;
        r.set_fault(Fault::RepeatCookie);
        let cfg = cfg(&r, 20);
        let report = bindery_directory::probe::test_connection(&cfg, std::slice::from_ref(&r.url)).await;
        assert_eq!(report.user_count, None, "{report:#?}");
        let count = report.servers[0].steps.iter().find(|s| s.step == "count").expect("a count step");
        assert!(!count.ok && count.detail.contains("repeated its cookie"), "{count:?}");
        r.set_fault(Fault::EndlessPages);
        let report = bindery_directory::probe::test_connection(&cfg, std::slice::from_ref(&r.url)).await;
        let count = report.servers[0].steps.iter().find(|s| s.step == "count").expect("a count step");
        assert!(!count.ok && count.detail.contains("cut off"), "{count:?}");
    }
}

// ----- Active Directory against a real Samba AD DC (testkit/samba) ----------

mod samba;

// ----- the warm-cache entry check (Compare, or a read where it is refused) ----

/// With a cached DN a login binds and compares the entry's `entryUUID` at
/// once (unless the entry was proven within `ENTRY_CHECK_HOLDS`); a server
/// that refuses Compare gets a base read of the entry instead, from then
/// on, and the login still works.
#[tokio::test]
async fn a_server_that_refuses_compare_gets_the_entry_check_as_a_read() {
    use bindery_directory::gateway::{Gateway, ENTRY_CHECK_HOLDS};
    use bindery_directory::testing::plain_input;
    use bindery_ldap_responder::Responder;
    let r = Responder::with_users("ou=people,dc=example,dc=com", 3).await;
    let mut input = plain_input(&r.url, "dc=example,dc=com");
    input.dn_cache_secs = 300;
    let gw = Gateway::new(config(&input));
    let counts = || (r.binds(), r.searches(), r.compares());

    let cold = gw.login("user2", "any password will do here").await.expect("user2 signs in");
    assert!(!cold.cached);
    let (b, s, c) = counts();
    let warm = gw.login("user2", "any password will do here").await.expect("user2 signs in again");
    assert!(warm.cached && warm.found.uid == cold.found.uid, "{warm:?}");
    let (b0, s0, c0) = counts();
    assert_eq!((b0 - b, s0 - s, c0 - c), (1, 0, 0), "just after the search that cached it: one bind");
    tokio::time::sleep(ENTRY_CHECK_HOLDS).await;
    gw.login("user2", "any password will do here").await.expect("user2 signs in again");
    let (b1, s1, c1) = counts();
    assert_eq!((b1 - b0, s1 - s0, c1 - c0), (1, 0, 1), "a warm login: one bind and one compare");

    r.refuse_compare(true);
    tokio::time::sleep(ENTRY_CHECK_HOLDS).await;
    let refused = gw.login("user2", "any password will do here").await.expect("user2 signs in with Compare refused");
    assert!(refused.cached, "{refused:?}");
    let (b2, s2, c2) = counts();
    assert_eq!((b2 - b1, s2 - s1, c2 - c1), (1, 1, 1), "the refused compare, then a base read of the entry");
    tokio::time::sleep(ENTRY_CHECK_HOLDS).await;
    gw.login("user2", "any password will do here").await.expect("user2 signs in");
    let (b3, s3, c3) = counts();
    assert_eq!((b3 - b2, s3 - s2, c3 - c2), (1, 1, 0), "this server's entries are read from now on, not compared");
}
