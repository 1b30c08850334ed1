//! "Test connection": per server, ordered and timed steps — parse URI →
//! TCP → TLS → service bind → each search OU exists → users matching the
//! filter (paged count) → a sample of mapped users. A failed step names
//! itself and the cause; the server's later steps are skipped.

use std::time::Instant;

use bindery_model::{MappedUser, ProbeReport, ProbeStep, ServerProbe};
use ldap3::{Ldap, Scope, SearchEntry, SearchOptions};

use crate::config::AttrMap;
use crate::conn::{self, ServerUri, Stage};
use crate::{DirectoryConfig, Failure};

/// Hard stop for a paged enumeration that never ends (a server that keeps
/// returning a cookie): at most this many pages (the default of
/// [`DirectoryConfig::max_pages`]).
pub const MAX_PAGES: usize = 100_000;

fn step(name: &str, started: Instant, result: Result<String, &Failure>) -> ProbeStep {
    let millis = started.elapsed().as_millis() as i64;
    match result {
        Ok(detail) => ProbeStep { step: name.into(), ok: true, millis, detail, ldap_code: None },
        Err(f) => ProbeStep { step: name.into(), ok: false, millis, detail: f.message.clone(), ldap_code: f.ldap_code.map(i64::from) },
    }
}

/// Run the connection test on every configured server.
pub async fn test_connection(cfg: &DirectoryConfig, raw_uris: &[String]) -> ProbeReport {
    let mut servers = Vec::new();
    let mut user_count = None;
    let mut sample = Vec::new();
    let mut delta = None;
    for (i, raw) in raw_uris.iter().enumerate() {
        let uri = cfg.servers.get(i).cloned();
        let (probe, count, users, support) = probe_server(cfg, raw, uri).await;
        if user_count.is_none() && count.is_some() {
            user_count = count;
            sample = users;
        }
        if delta.is_none() {
            delta = support.map(|s| bindery_model::DeltaSupportInfo {
                method: s.method.as_str().to_string(),
                sees_deletions: s.sees_deletions,
                reason: s.reason,
                server: probe.uri.clone(),
                detected_at: String::new(),
            });
        }
        servers.push(probe);
    }
    let ok = !servers.is_empty() && servers.iter().all(|s| s.ok);
    ProbeReport { ok, servers, user_count, sample, delta }
}

type Probed = (ServerProbe, Option<i64>, Vec<MappedUser>, Option<crate::delta::DeltaSupport>);

async fn probe_server(cfg: &DirectoryConfig, raw: &str, uri: Option<ServerUri>) -> Probed {
    let mut steps = Vec::new();
    let t = Instant::now();
    let parsed = match uri {
        Some(u) => Ok(u),
        None => ServerUri::parse(raw).map_err(|e| Failure::answer(format!("{raw:?} {e}"))),
    };
    let server = match parsed {
        Ok(u) => {
            steps.push(step("parse", t, Ok(format!("{} host {} port {}", if u.ldaps { "ldaps" } else { "ldap" }, u.host, u.port))));
            u
        }
        Err(f) => {
            steps.push(step("parse", t, Err(&f)));
            return (ServerProbe { uri: raw.to_string(), ok: false, steps }, None, vec![], None);
        }
    };
    let done = |steps: Vec<ProbeStep>, ok: bool| ServerProbe { uri: server.to_string(), ok, steps };

    let t = Instant::now();
    let mut ldap = match conn::connect(&server, cfg).await {
        Ok((ldap, report)) => {
            steps.push(tcp_step(&report, &server));
            if let Some(tls) = report.tls {
                steps.push(ProbeStep {
                    step: "tls".into(),
                    ok: true,
                    millis: tls.as_millis() as i64,
                    detail: tls_detail(&report, cfg),
                    ldap_code: None,
                });
            }
            ldap
        }
        Err((stage, failure, report)) => {
            match stage {
                Stage::Tcp => steps.push(step("tcp", t, Err(&failure))),
                Stage::Tls => {
                    steps.push(tcp_step(&report, &server));
                    let mut s = step("tls", t, Err(&failure));
                    if let Some(c) = &report.cert {
                        s.detail.push_str(&format!(" — server certificate: subject {}, issuer {}", c.subject, c.issuer));
                    }
                    steps.push(s);
                }
            }
            return (done(steps, false), None, vec![], None);
        }
    };

    let t = Instant::now();
    match conn::service_bind(&mut ldap, cfg).await {
        Ok(()) => steps.push(step("bind", t, Ok(format!("bound as {}", cfg.bind_dn)))),
        Err(f) => {
            steps.push(step("bind", t, Err(&f)));
            let _ = ldap.unbind().await;
            return (done(steps, false), None, vec![], None);
        }
    }

    for ou in &cfg.search_ous {
        let t = Instant::now();
        match ou_exists(&mut ldap, cfg, ou).await {
            Ok(()) => steps.push(step("search_ou", t, Ok(format!("{ou} exists")))),
            Err(f) => {
                steps.push(step("search_ou", t, Err(&f)));
                let _ = ldap.unbind().await;
                return (done(steps, false), None, vec![], None);
            }
        }
    }

    let t = Instant::now();
    let filter = cfg.search_filter.replace("%(user)s", "*");
    let mut total = 0i64;
    for ou in &cfg.search_ous {
        match paged_count(&mut ldap, cfg, ou, &filter).await {
            Ok(n) => total += n,
            Err(f) => {
                steps.push(step("count", t, Err(&f)));
                let _ = ldap.unbind().await;
                return (done(steps, false), None, vec![], None);
            }
        }
    }
    if total == 0 {
        let f = Failure::answer(format!("the filter {filter} matches no entry in the search OUs"));
        steps.push(step("count", t, Err(&f)));
        let _ = ldap.unbind().await;
        return (done(steps, false), Some(0), vec![], None);
    }
    steps.push(step("count", t, Ok(format!("{total} users match {filter} (paged, {} per page)", cfg.page_size))));

    let t = Instant::now();
    let sample = match sample_users(&mut ldap, cfg, &filter, 5).await {
        Ok(users) => {
            let names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
            steps.push(step("sample", t, Ok(format!("mapped {}: {}", users.len(), names.join(", ")))));
            users
        }
        Err(f) => {
            steps.push(step("sample", t, Err(&f)));
            vec![]
        }
    };
    // Delta sync: which method, and why (a step of its own that never
    // fails the test: a directory without one is synced in full).
    let t = Instant::now();
    let mut support = crate::syncrepl::detect(&mut ldap, cfg).await;
    if support.method == crate::delta::DeltaMethod::None {
        // Not OpenLDAP / 389-ds content synchronisation: Active Directory's
        // DirSync or USN, else both reasons.
        let ad = crate::ad_delta::detect_on(&mut ldap, cfg).await;
        support = if ad.method == crate::delta::DeltaMethod::None {
            crate::delta::DeltaSupport { reason: format!("{}; {}", support.reason, ad.reason), ..ad }
        } else {
            ad
        };
    }
    steps.push(ProbeStep {
        step: "delta".into(),
        ok: true,
        millis: t.elapsed().as_millis() as i64,
        detail: format!("{}: {}", support.method.as_str(), support.reason),
        ldap_code: None,
    });
    let _ = ldap.unbind().await;
    let ok = steps.iter().all(|s| s.ok);
    (done(steps, ok), Some(total), sample, Some(support))
}

fn tcp_step(report: &conn::ConnectReport, server: &ServerUri) -> ProbeStep {
    ProbeStep {
        step: "tcp".into(),
        ok: true,
        millis: report.tcp.as_millis() as i64,
        detail: format!("connected to {}:{}", server.host, server.port),
        ldap_code: None,
    }
}

fn tls_detail(report: &conn::ConnectReport, cfg: &DirectoryConfig) -> String {
    let mut d = match &report.cert {
        Some(c) => {
            let mut s = format!("subject {}; issuer {}; expires {} ({} days)", c.subject, c.issuer, c.not_after, c.days_left);
            if c.days_left < 30 {
                s.push_str(" — WARNING: expires in less than 30 days");
            }
            s
        }
        None => "TLS established".into(),
    };
    if cfg.skip_verify {
        d.push_str(" — WARNING: certificate verification is switched off");
    } else {
        d.push_str(" — chain and host name verified");
    }
    d
}

async fn ou_exists(ldap: &mut Ldap, cfg: &DirectoryConfig, ou: &str) -> Result<(), Failure> {
    let r = ldap
        .with_timeout(cfg.op_timeout)
        .search(ou, Scope::Base, "(objectClass=*)", vec!["1.1"])
        .await
        .map_err(|e| Failure::from_ldap(e, "search OU", cfg.op_timeout))?;
    match r.1.rc {
        0 => Ok(()),
        32 => Err(Failure {
            message: format!("no such object: {ou}"),
            ldap_code: Some(32),
            ad_subcode: None,
            unreachable: false,
            timed_out: false,
        }),
        _ => crate::check(r.1, &format!("search OU {ou}")).map(|_| ()),
    }
}

/// Count the entries matching `filter` under `base`, page by page with an
/// explicit loop (each page has the operation timeout; an enumeration that
/// does not end is cut off and reported, never taken as complete).
pub async fn paged_count(ldap: &mut Ldap, cfg: &DirectoryConfig, base: &str, filter: &str) -> Result<i64, Failure> {
    let mut cookie: Vec<u8> = Vec::new();
    let mut count = 0i64;
    let mut last_page: Option<u64> = None;
    for page in 0..cfg.max_pages {
        let what = format!("paged search (page {})", page + 1);
        let (raw, next) = crate::search_page(ldap, cfg, base, filter, &["1.1"], &cookie, &what).await?;
        let entries: Vec<SearchEntry> = raw.into_iter().map(SearchEntry::construct).collect();
        count += entries.len() as i64;
        let this_page = crate::page_fingerprint(entries.iter().map(|e| e.dn.as_str()));
        match next {
            Some(c) if !c.is_empty() => {
                if c == cookie && last_page == Some(this_page) {
                    return Err(Failure::answer("paged search did not advance (the server repeated its cookie): result incomplete"));
                }
                cookie = c;
                last_page = Some(this_page);
            }
            Some(_) => return Ok(count),
            None => {
                return Err(Failure::answer(
                    "the server ignored the paged-results control: the result may be truncated, so it is reported as incomplete",
                ))
            }
        }
    }
    Err(Failure::answer(format!("paged search still not finished after {} pages: cut off, result incomplete", cfg.max_pages)))
}

async fn sample_users(ldap: &mut Ldap, cfg: &DirectoryConfig, filter: &str, n: i32) -> Result<Vec<MappedUser>, Failure> {
    let attrs = cfg.attr_map.attributes();
    let mut out = Vec::new();
    for ou in &cfg.search_ous {
        if out.len() >= n as usize {
            break;
        }
        let r = ldap
            .with_search_options(SearchOptions::new().sizelimit(n))
            .with_timeout(cfg.op_timeout)
            .search(ou, Scope::Subtree, filter, attrs.clone())
            .await
            .map_err(|e| Failure::from_ldap(e, "sample search", cfg.op_timeout))?;
        // 4 = size limit exceeded: expected, we asked for a few.
        if r.1.rc != 0 && r.1.rc != 4 {
            crate::check(r.1, "sample search")?;
        }
        for e in r.0.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()) {
            if out.len() < n as usize {
                out.push(map_entry(&SearchEntry::construct(e), &cfg.attr_map));
            }
        }
    }
    Ok(out)
}

/// The first value of `attr` (case-insensitive), if any.
pub fn first<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first()).map(String::as_str)
}

pub fn all<'a>(e: &'a SearchEntry, attr: &str) -> Vec<&'a str> {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).map(|(_, v)| v.iter().map(String::as_str).collect()).unwrap_or_default()
}

/// Apply the attribute map to an entry.
pub fn map_entry(e: &SearchEntry, map: &AttrMap) -> MappedUser {
    let get = |a: &Option<String>| a.as_deref().and_then(|a| first(e, a)).unwrap_or("").to_string();
    let is_active = match map.is_active.as_deref().and_then(|a| first(e, a)) {
        None => true,
        Some(v) => match v.trim().parse::<i64>() {
            // userAccountControl: bit 0x2 = disabled
            Ok(n) if map.is_active.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("userAccountControl")) => {
                n & crate::ad::UAC_ACCOUNTDISABLE == 0
            }
            Ok(n) => n != 0,
            Err(_) => matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "active" | "enabled"),
        },
    };
    MappedUser {
        dn: e.dn.clone(),
        username: first(e, &map.username).unwrap_or("").to_string(),
        name: get(&map.name),
        email: get(&map.email),
        is_active,
        phone: get(&map.phone),
        comment: get(&map.comment),
        groups: map.groups.as_deref().map(|g| all(e, g).into_iter().map(str::to_string).collect()).unwrap_or_default(),
    }
}
