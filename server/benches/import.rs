//! The import table at 100,000 users, measured in one run against one
//! loopback slapd filled with slapadd:
//!
//! * the baseline — a raw paged `ldapsearch` dump of every user (the same
//!   attributes, page size 1000) to /dev/null;
//! * Bindery's full sync into SQLite — enumerate into the staging snapshot,
//!   compute the plan, apply it (100,000 users created) — and a resync with
//!   nothing changed;
//! * the server's RSS growth during the full sync (VmHWM − VmRSS before);
//! * p50/p95 of an import-table page query (search + sort) over the
//!   staged rows.
//!
//! Run with `scripts/bench import` (`BENCH_USERS` sets the size; default 100000).

use std::process::Command;
use std::time::{Duration, Instant};

use bindery_directory::testing::Slapd;
use bindery_model::DirectoryKind;
use bindery_service::{Actor, Service};

fn admin() -> Actor {
    Actor::local_admin()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sync now, waited for: (time, the finished run).
async fn sync(service: &Service) -> (Duration, bindery_model::SyncRun) {
    let t = Instant::now();
    let run = service.start_sync(&admin(), DirectoryKind::Ldap, false).await.expect("start");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = service.sync_run(&admin(), run.id, None, 1, 1).await.unwrap().run;
        if r.state != "running" {
            assert_eq!(r.state, "done", "{r:?}");
            return (t.elapsed(), r);
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let users: usize = std::env::var("BENCH_USERS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let t = Instant::now();
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", &users.to_string())]);
    println!("Import table benchmark: {users} users (+8 seeded) loaded with slapadd in {:.1} s", t.elapsed().as_secs_f64());
    let input = d.input();
    let attrs = ["uid", "cn", "mail", "userAccountControl", "memberOf", "entryUUID", "objectGUID", "pwdAccountLockedTime"];

    // Baseline: raw paged ldapsearch of every search OU.
    let t = Instant::now();
    for ou in input.search_ous.split('|') {
        let mut cmd = Command::new("ldapsearch");
        cmd.args([
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            &d.ldap_url,
            "-D",
            &d.bind_dn,
            "-w",
            &d.bind_password,
            "-b",
            ou,
            "-E",
            "pr=1000/noprompt",
            "(uid=*)",
        ]);
        cmd.args(attrs).stdout(std::process::Stdio::null());
        assert!(cmd.status().expect("ldapsearch").success());
    }
    let baseline = t.elapsed();
    println!("raw paged ldapsearch dump (baseline)      {:>8.2} s", baseline.as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let cfg = bindery_server::Config {
        database_url: format!("sqlite:{}/bench.db", dir.path().display()),
        secret_key_file: format!("{}/secret.key", dir.path().display()),
        ..Default::default()
    };
    let (service, _) = bindery_server::open(&cfg).await.expect("open");
    let mut input = input;
    input.page_size = 1000;
    service.save_directory(&admin(), DirectoryKind::Ldap, &input).await.expect("save");
    let settings = bindery_model::SyncSettings { disable_missing: true, threshold_percent: 100, ..Default::default() };
    service.save_sync_settings(&admin(), DirectoryKind::Ldap, &settings).await.expect("sync settings");

    let rss_before = status_kb("VmRSS:");
    let (full, run) = sync(&service).await;
    let rss_peak = status_kb("VmHWM:");
    println!(
        "Bindery full sync (fetch + plan + apply)   {:>8.2} s   {:.2}× baseline   ({} entries, {} created)",
        full.as_secs_f64(),
        full.as_secs_f64() / baseline.as_secs_f64(),
        run.entries,
        run.counts.create
    );
    let c = &run.counts;
    println!(
        "  where the time goes: enumerate + stage {:.2} s, plan {:.2} s, apply {:.2} s",
        c.enumerate_ms as f64 / 1000.0,
        c.plan_ms as f64 / 1000.0,
        c.apply_ms as f64 / 1000.0
    );
    let (again, run2) = sync(&service).await;
    println!(
        "Bindery resync, nothing changed            {:>8.2} s   {:.2}× baseline   ({} changes)",
        again.as_secs_f64(),
        again.as_secs_f64() / baseline.as_secs_f64(),
        run2.counts.create + run2.counts.update + run2.counts.disable + run2.counts.enable
    );
    println!(
        "  where the time goes: enumerate + stage {:.2} s, plan {:.2} s, apply {:.2} s",
        run2.counts.enumerate_ms as f64 / 1000.0,
        run2.counts.plan_ms as f64 / 1000.0,
        run2.counts.apply_ms as f64 / 1000.0
    );
    println!("server RSS growth during the full sync     {:>8.1} MB", rss_peak.saturating_sub(rss_before) as f64 / 1024.0);

    // Import-table page queries: search + sort over the staged rows.
    let mut lat = Vec::new();
    let queries = [
        ("user0", "email", true),
        ("4", "name", false),
        ("example", "username", true),
        ("", "status", false),
        ("user001", "username", false),
    ];
    for i in 0..100 {
        let (q, sort, desc) = queries[i % queries.len()];
        let t = Instant::now();
        let page = service
            .list_staged_users(&admin(), DirectoryKind::Ldap, None, Some(q), Some(sort), desc, (i as i64 % 7) + 1, 15)
            .await
            .expect("page");
        lat.push(t.elapsed());
        assert!(page.total > 0);
    }
    lat.sort();
    let p = |f: f64| lat[((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len()) - 1].as_secs_f64() * 1000.0;
    println!("import-table page (search + sort)          p50 {:.1} ms   p95 {:.1} ms", p(0.5), p(0.95));
    println!("targets: full <= 2x baseline, again <= 1.5x, RSS growth <= 64 MB, page p95 <= 50 ms");
}
