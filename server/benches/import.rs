//! The import table at 100,000 users, measured in one run against one
//! loopback slapd filled with slapadd, on SQLite and then on PostgreSQL
//! (a fresh database each):
//!
//! * the baseline — the median of three raw paged `ldapsearch` dumps of
//!   every user (the same attributes, page size 1000) to /dev/null,
//!   measured before each backend;
//! * Bindery's full sync — enumerate into the staging snapshot, compute the
//!   plan, apply it (100,000 users created) — and its ratio to the baseline;
//! * a resync with nothing changed, and its ratio;
//! * a resync after 100 modifications (`ldapmodify`) and 10 deletions
//!   (`ldapdelete`) made during the bench; each run after changes starts
//!   once slapd has finished its own work on them (its refint overlay
//!   works on a deletion after answering it; the wait is printed);
//! * three delta syncs (syncrepl refreshOnly, issue 17), each after 100
//!   more modifications and 10 more deletions, and the median's share of
//!   the baseline;
//! * the server's RSS growth during the full sync (VmHWM − VmRSS before;
//!   the peak is reset through /proc/self/clear_refs before each backend);
//! * the CPU time of a dump and of the full sync, by process (Bindery,
//!   `ldapsearch`, slapd, PostgreSQL; from /proc): on a machine of two
//!   cores a full sync is bound by the sum of the work, which moves less
//!   from run to run than the wall-clock times do;
//! * p50/p95/max of an import-table page (search, sort, page and the
//!   "Total N" count) over a query mix: 1- and 2-character searches,
//!   substrings that match nothing, a few rows, thousands of rows and every
//!   row, each in every sort order, first and deep pages.
//!
//! Run with `scripts/bench import`. `BENCH_USERS` sets the size (default
//! 100000); `BENCH_BACKENDS` picks `sqlite`, `postgres` or both (default
//! `sqlite,postgres`); PostgreSQL is the server of `BINDERY_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); `BENCH_KEEP_SQLITE`
//! names a file to keep the SQLite database in; `BENCH_TRACE` names a file
//! that receives every SQL statement with its elapsed time (sqlx's
//! statement log), for finding where a phase's time goes; `BENCH_KEEP_PG`
//! keeps the PostgreSQL database (its URL is printed); `BENCH_FULL_REPEAT`
//! runs only the SQLite full sync, that many times;
//! `BENCH_SLAPD_LOGLEVEL` sets slapd's log level (default `none`; `stats`
//! logs each operation with its time to `slapd.log` in slapd's directory).

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
///
/// The time is from the call to the run's own `finished_at` (what the run
/// wrote when it ended, in milliseconds of the system clock), not to when
/// a poll found it: polling every 2 ms for a delta run of a tenth of a
/// second was a PostgreSQL query every 2 ms on the same two cores, and
/// the discovery added up to a poll's interval. The run's own row is
/// polled (one primary-key read), not the console's run page, which also
/// counts and lists the run's items.
async fn sync(service: &Service) -> (Duration, bindery_model::SyncRun) {
    let t = Instant::now();
    let started = wall_ms();
    let run = service.start_sync(&admin(), DirectoryKind::Ldap, false).await.expect("start");
    loop {
        tokio::time::sleep((t.elapsed() / 10).max(Duration::from_millis(20))).await;
        let row = service.store().get_run(run.id).await.unwrap().expect("the run");
        if row.state != bindery_model::RunState::Running {
            let finished = row.finished_at.expect("a finished run has its end time");
            let elapsed = Duration::from_millis(u64::try_from(finished - started).expect("the run ended after it started"));
            let r = service.sync_run(&admin(), run.id, None, 1, 1).await.unwrap().run;
            assert_eq!(r.state, "done", "{r:?}");
            return (elapsed, r);
        }
    }
}

/// Milliseconds since the Unix epoch, as the runs record their times.
fn wall_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("a time in range")
}

/// The raw paged dump of every search OU: the baseline.
fn raw_dump(d: &Slapd, input: &bindery_model::DirectoryInput) -> Duration {
    let attrs = ["uid", "cn", "mail", "userAccountControl", "memberOf", "entryUUID", "objectGUID", "pwdAccountLockedTime"];
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
    t.elapsed()
}

/// 100 modifications (name and email) with `ldapmodify` and 10 deletions
/// with `ldapdelete`, on bulk users from `first` on.
fn change_directory(d: &Slapd, users: usize, first: usize) {
    let people = "ou=people,dc=example,dc=com";
    let mut ldif = String::new();
    for i in first..first + 100 {
        let i = (i % users) + 1;
        ldif.push_str(&format!(
            "dn: uid=user{i:06},{people}\nchangetype: modify\nreplace: cn\ncn: Renamed {i:06}\n-\nreplace: mail\nmail: moved{i:06}@example.org\n\n"
        ));
    }
    d.modify(&ldif);
    let dns: Vec<String> = (first + 100..first + 110).map(|i| format!("uid=user{:06},{people}", (i % users) + 1)).collect();
    let status = Command::new("ldapdelete")
        .args(["-x", "-H", &d.ldap_url, "-D", &d.admin_dn, "-w", &d.admin_password])
        .args(&dns)
        .status()
        .expect("ldapdelete");
    assert!(status.success(), "ldapdelete failed");
    let waited = wait_for_quiet_directory(d);
    println!("  (slapd busy for {} ms after the changes answered: waited before the run)", waited.as_millis());
}

/// slapd's CPU time in clock ticks (utime + stime of /proc/PID/stat).
fn slapd_ticks(d: &Slapd) -> Option<u64> {
    let pid = std::fs::read_to_string(d.dir.join("slapd.pid")).ok()?;
    stat_ticks(&format!("/proc/{}/stat", pid.trim())).map(|(own, _)| own)
}

/// The CPU time in clock ticks of the process whose `/proc/PID/stat` is
/// `path`, and that of the children it waited for: (utime + stime,
/// cutime + cstime).
fn stat_ticks(path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((field(11)? + field(12)?, field(13)? + field(14)?))
}

/// CPU time so far, in clock ticks, of this process (Bindery: the bench
/// runs the service in process), its reaped children (`ldapsearch`),
/// slapd, and every PostgreSQL process with the children the postmaster
/// reaped (backends and parallel workers that ended).
#[derive(Clone, Copy, Default)]
struct Cpu {
    bindery: u64,
    children: u64,
    slapd: u64,
    postgres: u64,
}

impl Cpu {
    fn now(d: &Slapd) -> Cpu {
        let (own, children) = stat_ticks("/proc/self/stat").unwrap_or_default();
        let mut postgres = 0;
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).map(str::to_string) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
                postgres += stat_ticks(&format!("/proc/{pid}/stat")).map_or(0, |(own, reaped)| own + reaped);
            }
        }
        Cpu { bindery: own, children, slapd: slapd_ticks(d).unwrap_or(0), postgres }
    }

    /// What was used since `before`, in seconds, as a line.
    fn since(&self, before: Cpu, ticks_per_second: f64) -> String {
        let s = |a: u64, b: u64| a.saturating_sub(b) as f64 / ticks_per_second;
        let (b, c, l, p) = (
            s(self.bindery, before.bindery),
            s(self.children, before.children),
            s(self.slapd, before.slapd),
            s(self.postgres, before.postgres),
        );
        let mut parts = Vec::new();
        if b > 0.0 {
            parts.push(format!("Bindery {b:.2}"));
        }
        if c > 0.0 {
            parts.push(format!("child processes (ldapsearch) {c:.2}"));
        }
        parts.push(format!("slapd {l:.2}"));
        if p > 0.0 {
            parts.push(format!("PostgreSQL {p:.2}"));
        }
        format!("{} = {:.2} CPU-s", parts.join(" + "), b + c + l + p)
    }
}

/// Clock ticks a second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Wait until slapd has used no CPU for 100 ms (at most 10 s), and return
/// how long that took. A deletion answers before slapd's own work on it
/// is done: the refint overlay then looks for references to the deleted
/// entry in the background, about 50 ms of CPU per entry on this
/// directory. Timed right after the changes, a run on two cores shared
/// with that work measured slapd's work as well as Bindery's (the delta
/// runs' medians, 12.0 % and 17.6 % of the dump on this VM; 10.4 % once
/// slapd was quiet, with nothing else changed).
fn wait_for_quiet_directory(d: &Slapd) -> Duration {
    let t = Instant::now();
    let mut last = slapd_ticks(d);
    let mut quiet = 0;
    while quiet < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        let now = slapd_ticks(d);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    t.elapsed()
}

fn where_the_time_goes(c: &bindery_model::SyncCounts) -> String {
    format!(
        "enumerate + stage {:.2} s, plan {:.2} s, apply {:.2} s",
        c.enumerate_ms as f64 / 1000.0,
        c.plan_ms as f64 / 1000.0,
        c.apply_ms as f64 / 1000.0
    )
}

/// One backend's run: full sync, no-change resync, resync after changes,
/// RSS growth, page latencies.
async fn run_backend(label: &str, database_url: &str, d: &Slapd, users: usize, first_change: usize) {
    println!("--- {label} ---");
    let mut input = d.input();
    // The median of three dumps (`three_dumps`).
    let tps = ticks_per_second();
    let cpu = Cpu::now(d);
    let dumps = three_dumps(d, &input);
    let dump_cpu = Cpu::now(d).since(cpu, tps * 3.0);
    let baseline = dumps[1];
    println!(
        "raw paged ldapsearch dump (baseline)      {:>8.2} s   (median of {:.2}, {:.2}, {:.2} s)",
        baseline.as_secs_f64(),
        dumps[0].as_secs_f64(),
        dumps[1].as_secs_f64(),
        dumps[2].as_secs_f64()
    );
    println!("  CPU time a dump (mean of the three): {dump_cpu}");
    let ratio = |t: Duration| t.as_secs_f64() / baseline.as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    input.page_size = 1000;
    let service = configured(database_url, dir.path(), &input).await;

    // Reset the peak RSS (Linux ≥ 4.0) so each backend's growth is its own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kb("VmRSS:");
    let cpu = Cpu::now(d);
    let started = wall_ms();
    let (full, run) = sync(&service).await;
    let full_cpu = Cpu::now(d).since(cpu, tps);
    // The import table's own indexes (its sort orders and its trigram
    // search; on PostgreSQL with the vacuum of what the run wrote) come
    // once the run has ended (`bindery_store` `bulk.rs`): waited for
    // before anything else, and in the RSS growth.
    indexes_built(&service).await;
    let index_wait = wall_ms() - (started + full.as_millis() as i64);
    let rss_peak = status_kb("VmHWM:");
    println!(
        "Bindery full sync (fetch + plan + apply)   {:>8.2} s   {:.2}× baseline   ({} entries, {} created)",
        full.as_secs_f64(),
        ratio(full),
        run.entries,
        run.counts.create
    );
    println!("  where the time goes: {}", where_the_time_goes(&run.counts));
    println!("  CPU time: {full_cpu} (on {} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "  the import table's indexes ready {:.2} s after the run's end (built then; until they are, its pages sort and search without them)",
        index_wait as f64 / 1000.0
    );
    let (again, run2) = sync(&service).await;
    let changes = |r: &bindery_model::SyncRun| r.counts.create + r.counts.update + r.counts.disable + r.counts.enable;
    println!(
        "Bindery resync, nothing changed            {:>8.2} s   {:.2}× baseline   ({} changes)",
        again.as_secs_f64(),
        ratio(again),
        changes(&run2)
    );
    println!("  where the time goes: {}", where_the_time_goes(&run2.counts));
    println!("  notes: {}", run2.counts.notes.join(" | "));
    change_directory(d, users, first_change);
    let (changed, run3) = sync(&service).await;
    println!(
        "Bindery resync, 100 modified + 10 deleted  {:>8.2} s   {:.2}× baseline   ({} updated, {} disabled)",
        changed.as_secs_f64(),
        ratio(changed),
        run3.counts.update,
        run3.counts.disable
    );
    println!("  where the time goes: {}", where_the_time_goes(&run3.counts));

    // Delta sync (syncrepl refreshOnly): Test connection detects it, a full
    // run records the cookies, then 100 more modifications and 10 deletions.
    let report = service.test_directory_connection(&admin(), DirectoryKind::Ldap, None).await.expect("test connection");
    let method = report.delta.as_ref().map(|d| d.method.clone()).unwrap_or_default();
    assert_eq!(method, "syncrepl", "{:?}", report.delta);
    let delta_settings = bindery_model::SyncSettings { mode: bindery_model::SyncMode::Delta, ..sync_settings() };
    service.save_sync_settings(&admin(), DirectoryKind::Ldap, &delta_settings).await.expect("delta settings");
    let (recording, run4) = sync(&service).await;
    assert_eq!(run4.kind, bindery_model::RunKind::Sync, "the first run in delta mode is a full one");
    println!("Bindery full sync recording delta cookies  {:>8.2} s   {:.2}× baseline", recording.as_secs_f64(), ratio(recording));
    // Three delta runs, each after its own 100 modifications and 10
    // deletions: one run of about a tenth of a second moves with whatever
    // else the machine does, so the median is the figure.
    let mut deltas = Vec::new();
    for round in 1..=3 {
        change_directory(d, users, first_change + 200 * round);
        let (delta, run5) = sync(&service).await;
        assert_eq!(run5.kind, bindery_model::RunKind::Delta, "{:?}", run5.counts.notes);
        println!(
            "Bindery delta sync, 100 modified + 10 deleted {:>5.2} s   {:.1} % of baseline ({} updated, {} disabled)",
            delta.as_secs_f64(),
            ratio(delta) * 100.0,
            run5.counts.update,
            run5.counts.disable
        );
        println!("  where the time goes: {} (enumerate = the delta read + stage)", where_the_time_goes(&run5.counts));
        if round == 1 {
            println!("  notes: {}", run5.counts.notes.join(" | "));
        }
        deltas.push(delta);
    }
    deltas.sort();
    println!(
        "Bindery delta sync, median of the three     {:>8.2} s   {:.1} % of baseline (target <= 10 %)",
        deltas[1].as_secs_f64(),
        ratio(deltas[1]) * 100.0
    );
    println!("server RSS growth during the full sync     {:>8.1} MB", rss_peak.saturating_sub(rss_before) as f64 / 1024.0);

    // Import-table pages: every query of the mix in every sort order, its
    // first page and a deep one, each with its "Total N" count.
    let queries = [
        ("", "every row"),
        ("u", "1 char, every row"),
        ("7", "1 char, many rows"),
        ("q", "1 char, no match"),
        ("r0", "2 chars, many rows"),
        ("zq", "2 chars, no match"),
        ("qqqq", "no match"),
        ("nobody-here", "no match"),
        ("user012345", "one row"),
        ("user01234", "a few rows"),
        ("user01", "thousands of rows"),
        ("example", "every row"),
        ("@example.com", "every row"),
        ("renamed", "the modified rows"),
    ];
    let mut lat: Vec<(Duration, String)> = Vec::new();
    for (q, what) in queries {
        for sort in ["username", "name", "email", "status"] {
            for desc in [false, true] {
                let first =
                    service.list_staged_users(&admin(), DirectoryKind::Ldap, None, Some(q), Some(sort), desc, 1, 15).await.expect("page");
                let deep = ((first.total / 15) / 2).max(1);
                for page in [1, deep] {
                    let t = Instant::now();
                    let p = service
                        .list_staged_users(&admin(), DirectoryKind::Ldap, None, Some(q), Some(sort), desc, page, 15)
                        .await
                        .expect("page");
                    lat.push((
                        t.elapsed(),
                        format!("{q:?} ({what}, total {}) by {sort}{} page {page}", p.total, if desc { " desc" } else { "" }),
                    ));
                }
            }
        }
    }
    lat.sort_by_key(|l| l.0);
    let p = |f: f64| lat[((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len()) - 1].0.as_secs_f64() * 1000.0;
    println!(
        "import-table page ({} pages: search + sort + count)  p50 {:.1} ms   p95 {:.1} ms   max {:.1} ms",
        lat.len(),
        p(0.5),
        p(0.95),
        p(1.0)
    );
    for (t, what) in lat.iter().rev().take(5) {
        println!("  slowest: {:>7.1} ms  {what}", t.as_secs_f64() * 1000.0);
    }
    service.store().close().await;
}

/// Three raw dumps, sorted: the median is the baseline. Single dumps on
/// this two-core VM ranged from 0.74 s to 1.16 s in one session, and every
/// ratio moved with the one taken.
fn three_dumps(d: &Slapd, input: &bindery_model::DirectoryInput) -> Vec<Duration> {
    let mut dumps: Vec<Duration> = (0..3).map(|_| raw_dump(d, input)).collect();
    dumps.sort();
    dumps
}

/// Bindery on `database_url` (its key file in `dir`), with the directory
/// `input` and the bench's sync settings saved.
async fn configured(database_url: &str, dir: &std::path::Path, input: &bindery_model::DirectoryInput) -> Service {
    let cfg = bindery_server::Config {
        database_url: database_url.to_string(),
        secret_key_file: format!("{}/secret.key", dir.display()),
        ..Default::default()
    };
    let (service, _) = bindery_server::open(&cfg).await.expect("open");
    service.save_directory(&admin(), DirectoryKind::Ldap, input).await.expect("save");
    service.save_sync_settings(&admin(), DirectoryKind::Ldap, &sync_settings()).await.expect("sync settings");
    service
}

/// The bench's sync: it disables users missing from the directory, any
/// number of them.
fn sync_settings() -> bindery_model::SyncSettings {
    bindery_model::SyncSettings { disable_missing: true, threshold_percent: 100, ..Default::default() }
}

/// Wait until the import table's own indexes, which a first sync builds
/// once its run has ended (`bindery_store` `bulk.rs`), are built.
async fn indexes_built(service: &Service) {
    while service.store().bulk_load_pending().await.expect("bulk load state") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `BENCH_FULL_REPEAT=n`: the full sync only, `n` times, each into a new
/// SQLite database, after the dumps: many samples of the one figure in
/// little time, for comparing two builds (alternated: this machine's speed
/// drifts by a third within minutes).
async fn full_syncs_only(d: &Slapd, n: usize) {
    let mut input = d.input();
    let baseline = three_dumps(d, &input)[1].as_secs_f64();
    println!("raw paged ldapsearch dump (baseline)      {baseline:>8.2} s");
    input.page_size = 1000;
    let mut times = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let service = configured(&format!("sqlite:{}/bench.db", dir.path().display()), dir.path(), &input).await;
        let (full, _) = sync(&service).await;
        indexes_built(&service).await;
        service.store().close().await;
        println!(
            "Bindery full sync                         {:>8.2} s   {:.2}× baseline",
            full.as_secs_f64(),
            full.as_secs_f64() / baseline
        );
        times.push(full.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("full syncs: median {:.2} s ({:.2}×), {:.2}-{:.2} s", times[n / 2], times[n / 2] / baseline, times[0], times[n - 1]);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(path) = std::env::var("BENCH_TRACE") {
        let file = std::fs::File::create(&path).expect("the BENCH_TRACE file");
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("sqlx::query=trace"))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    let users: usize = std::env::var("BENCH_USERS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    // Each backend modifies and deletes its own 810 entries (a resync's and
    // three delta runs'), the second from the middle on: they must not meet.
    assert!(users >= 2_000, "BENCH_USERS must be at least 2000 (each backend changes its own 810 entries)");
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let t = Instant::now();
    let users_env = users.to_string();
    let loglevel = std::env::var("BENCH_SLAPD_LOGLEVEL").unwrap_or_else(|_| "none".into());
    let d = Slapd::start_with(&[("SLAPD_EXTRA_USERS", &users_env), ("SLAPD_LOGLEVEL", &loglevel)]);
    println!("Import table benchmark: {users} users (+8 seeded) loaded with slapadd in {:.1} s", t.elapsed().as_secs_f64());
    if let Some(n) = std::env::var("BENCH_FULL_REPEAT").ok().and_then(|s| s.parse::<usize>().ok()).filter(|n| *n > 0) {
        full_syncs_only(&d, n).await;
        return;
    }
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        run_backend("SQLite", &format!("sqlite:{}/bench.db", dir.path().display()), &d, users, 0).await;
        // For a look at the plans afterwards (`sqlite3 FILE`).
        if let Ok(to) = std::env::var("BENCH_KEEP_SQLITE") {
            std::fs::copy(dir.path().join("bench.db"), &to).expect("copy the SQLite database");
            println!("SQLite database kept as {to}");
        }
    }
    if backends.contains("postgres") {
        let db = bindery_store::testing::TestDb::new(bindery_store::Backend::Postgres).await;
        run_backend("PostgreSQL", &db.url, &d, users, users / 2).await;
        if std::env::var("BENCH_KEEP_PG").is_ok() {
            println!("PostgreSQL database kept: {}", db.url);
            std::mem::forget(db);
        }
    }
    println!("targets: full <= 2x baseline, no-change resync <= 1.5x, delta sync <= 10 % of the baseline, RSS growth <= 64 MB, page p95 <= 50 ms");
}
