//! Directory login speed, measured in one run against one loopback slapd:
//!
//! * the baseline — raw ldap3 logins (one search on a service-bound
//!   connection + one bind on a second connection, both kept open), at 1
//!   and 32 concurrent clients;
//! * Bindery's HTTP login (`POST /api/v1/authn/ldap/{username}/authenticate`,
//!   which also issues and stores a bearer token), at 1 and 32 concurrent
//!   clients, with a warm user DN cache (the default) and without one;
//! * failover: the first login after the first server starts dropping
//!   packets, and the ones after it.
//!
//! Run with `scripts/bench login` (or `cargo bench -p bindery --features
//! bindery-app/ssr --bench login`). `BENCH_SECONDS` sets each measurement's
//! length (default 4). Needs root for the nftables blackhole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use bindery_directory::testing::{Blackhole, Slapd};
use bindery_model::DirectoryKind;
use bindery_service::{Actor, Service};
use http_body_util::{BodyExt, Full};

const USERS: usize = 200;
static FAILURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The last few failed answers (status and body), for the panic message:
/// an answer that is not 200 may never reach the login log.
static FAILED_ANSWERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Stop with the login log's reasons if any HTTP login failed.
async fn check_failures(service: &Service, phase: &str) {
    let n = FAILURES.swap(0, std::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        let log = service.login_log(&admin(), &Default::default()).await.unwrap();
        let reasons: Vec<String> =
            log.items.iter().filter(|e| !e.success).take(5).map(|e| format!("{}: {}", e.username, e.reason)).collect();
        let answers = std::mem::take(&mut *FAILED_ANSWERS.lock().unwrap());
        panic!("{n} logins failed during {phase}; login log: {reasons:#?}; answers: {answers:#?}");
    }
}
const PASSWORD: &str = "User-Password-1";

fn username(i: usize) -> String {
    format!("user{:06}", i % USERS + 1)
}

struct Run {
    logins: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// CPU time (user + system, in clock ticks of 10 ms) a process has used so
/// far, from `/proc/<pid>/stat`; 0 when it cannot be read.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// The CPU a phase cost per login, on this side (this process: the client,
/// and Bindery when it is measured) and in slapd: a steadier figure than
/// logins per second on a machine whose speed varies from run to run.
struct Cpu {
    slapd: String,
    at: (u64, u64),
}

impl Cpu {
    fn start(slapd_pid: &str) -> Cpu {
        Cpu { slapd: slapd_pid.to_string(), at: (cpu_ticks("self"), cpu_ticks(slapd_pid)) }
    }

    /// `(this process, slapd)` in microseconds per login.
    fn per_login(&self, logins: usize) -> (f64, f64) {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / logins.max(1) as f64;
        (per(cpu_ticks("self").saturating_sub(self.at.0)), per(cpu_ticks(&self.slapd).saturating_sub(self.at.1)))
    }
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.logins as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// `clients` tasks doing `one(client, n)` until `time` is up.
async fn load<F, Fut>(clients: usize, time: Duration, one: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = c * 7;
                while start.elapsed() < time {
                    let t = Instant::now();
                    one(c, n).await;
                    lat.push(t.elapsed());
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    Run { logins: latencies.len(), elapsed: start.elapsed(), latencies }
}

async fn raw_conn(d: &Slapd, bind: bool) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&d.ldap_url).await.expect("connect");
    ldap3::drive!(conn);
    if bind {
        ldap.simple_bind(&d.bind_dn, &d.bind_password).await.unwrap().success().expect("service bind");
    }
    ldap
}

/// The baseline: what a login costs with ldap3 directly.
async fn baseline(d: &Slapd, clients: usize, time: Duration) -> Run {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(tokio::sync::Mutex::new((raw_conn(d, true).await, raw_conn(d, false).await)));
    }
    let conns = Arc::new(conns);
    let base = format!("ou=people,{}", d.base_dn);
    load(clients, time, move |c, n| {
        let conns = conns.clone();
        let base = base.clone();
        async move {
            let mut pair = conns[c].lock().await;
            let (search, bind) = &mut *pair;
            let filter = format!("(uid={})", ldap3::ldap_escape(username(n)));
            let (entries, _) =
                search.search(&base, ldap3::Scope::Subtree, &filter, vec!["uid", "cn", "mail"]).await.unwrap().success().unwrap();
            let dn = ldap3::SearchEntry::construct(entries.into_iter().next().expect("one entry")).dn;
            bind.simple_bind(&dn, PASSWORD).await.unwrap().success().expect("user bind");
        }
    })
    .await
}

/// A keep-alive HTTP/1 connection to Bindery.
async fn http_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to Bindery");
    stream.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("HTTP handshake");
    tokio::spawn(conn);
    send
}

/// One login over `conn`; true when it succeeded.
async fn http_login(conn: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, n: usize) -> bool {
    let req = http::Request::post(format!("/api/v1/authn/ldap/{}/authenticate", username(n)))
        .header(http::header::HOST, "bindery")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(format!("{{\"password\":\"{PASSWORD}\"}}"))))
        .unwrap();
    let res = conn.send_request(req).await.expect("HTTP");
    let status = res.status();
    let body = res.into_body().collect().await.expect("HTTP body").to_bytes();
    if status != 200 {
        let mut answers = FAILED_ANSWERS.lock().unwrap();
        if answers.len() < 5 {
            answers.push(format!("{} {}: {}", status, username(n), String::from_utf8_lossy(&body[..body.len().min(300)])));
        }
    }
    status == 200
}

/// `clients` clients logging in, each on its own keep-alive connection.
/// The load generator is hyper's bare HTTP/1 client, the least it can
/// cost: it shares the machine with Bindery and slapd, as raw ldap3 does
/// in the baseline.
async fn http_logins(addr: SocketAddr, clients: usize, time: Duration) -> Run {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(tokio::sync::Mutex::new(http_conn(addr).await));
    }
    let conns = Arc::new(conns);
    load(clients, time, move |c, n| {
        let conns = conns.clone();
        async move {
            if !http_login(&mut *conns[c].lock().await, n).await {
                FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await
}

fn admin() -> Actor {
    Actor::local_admin()
}

async fn configure(service: &Service, uris: Vec<String>, d: &Slapd, dn_cache_secs: i64, connect_timeout_secs: i64) {
    let mut input = d.input();
    input.server_uris = uris;
    input.search_ous = format!("ou=people,{}", d.base_dn);
    input.dn_cache_secs = dn_cache_secs;
    input.connect_timeout_secs = connect_timeout_secs;
    service.save_directory(&admin(), DirectoryKind::Ldap, &input).await.expect("save directory");
}

fn line(label: &str, r: &mut Run, baseline: Option<f64>) {
    let ratio = baseline.map(|b| format!("  {:>5.0}% of baseline", 100.0 * r.per_sec() / b)).unwrap_or_default();
    println!("{label:<44} {:>8.0} logins/s   p50 {:>6.2} ms   p99 {:>6.2} ms{ratio}", r.per_sec(), r.pct(0.50), r.pct(0.99));
}

fn cpu_line(label: &str, (here, slapd): (f64, f64)) {
    println!("  CPU per login, {label:<36} {here:>6.0} µs here + {slapd:>6.0} µs slapd = {:>6.0} µs", here + slapd);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())).init();
    let time = Duration::from_secs(std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4));
    // The failover spare is a replica: the same users under the same
    // entryUUIDs, so logins that reach it succeed (a directory with other
    // ids would hold other people, and the identity rule refuses them).
    let pair = [("SLAPD_EXTRA_USERS", USERS.to_string()), ("SLAPD_UUID_SEED", "login-bench".to_string())];
    let pair: Vec<(&str, &str)> = pair.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = Slapd::start_with(&pair);
    let spare = Slapd::start_with(&pair);

    println!("Directory login benchmark: {USERS} users, {} s per measurement, one loopback slapd", time.as_secs());
    let slapd_pid = std::fs::read_to_string(d.dir.join("fixture.pid")).unwrap_or_default().trim().to_string();
    let mut base1 = baseline(&d, 1, time).await;
    let cpu = Cpu::start(&slapd_pid);
    let mut base32 = baseline(&d, 32, time).await;
    let base32_cpu = cpu.per_login(base32.logins);
    line("raw ldap3 search+bind, 1 client", &mut base1, None);
    line("raw ldap3 search+bind, 32 clients", &mut base32, None);
    cpu_line("raw ldap3, 32 clients:", base32_cpu);

    let dir = tempfile::tempdir().unwrap();
    let cfg = bindery_server::Config {
        database_url: format!("sqlite:{}/bench.db", dir.path().display()),
        secret_key_file: format!("{}/secret.key", dir.path().display()),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let (service, _) = bindery_server::open(&cfg).await.expect("open");
    configure(&service, vec![d.ldap_url.clone()], &d, 300, 1).await;
    let router = bindery_server::app(service.clone(), bindery_server::leptos_options(&cfg), false);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await });

    // Every user once: creates them (first login) and warms the DN cache.
    http_logins(addr, 8, Duration::from_millis(1500)).await;
    check_failures(&service, "warm-up").await;
    let mut warm1 = http_logins(addr, 1, time).await;
    let cpu = Cpu::start(&slapd_pid);
    let mut warm32 = http_logins(addr, 32, time).await;
    let warm32_cpu = cpu.per_login(warm32.logins);
    line("Bindery HTTP login, 1 client (warm cache)", &mut warm1, Some(base1.per_sec()));
    check_failures(&service, "warm-cache runs").await;
    line("Bindery HTTP login, 32 clients (warm cache)", &mut warm32, Some(base32.per_sec()));
    cpu_line("Bindery (and its HTTP client), 32:", warm32_cpu);
    configure(&service, vec![d.ldap_url.clone()], &d, 0, 1).await;
    let mut cold1 = http_logins(addr, 1, time).await;
    let mut cold32 = http_logins(addr, 32, time).await;
    line("Bindery HTTP login, 1 client (no cache)", &mut cold1, Some(base1.per_sec()));
    check_failures(&service, "no-cache runs").await;
    line("Bindery HTTP login, 32 clients (no cache)", &mut cold32, Some(base32.per_sec()));

    // Failover: [spare, d]; the spare starts dropping every packet.
    configure(&service, vec![spare.ldap_url.clone(), d.ldap_url.clone()], &d, 300, 1).await;
    http_logins(addr, 4, Duration::from_millis(500)).await;
    let mut normal = http_logins(addr, 1, Duration::from_secs(1)).await;
    let hole = Blackhole::port(spare.port(&spare.ldap_url));
    let mut conn = http_conn(addr).await;
    let t = Instant::now();
    assert!(http_login(&mut conn, 3).await, "the first login after the blackhole failed");
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let mut after = http_logins(addr, 1, Duration::from_secs(1)).await;
    check_failures(&service, "failover").await;
    drop(hole);
    let normal_p50 = normal.pct(0.5);
    println!(
        "failover (connect timeout 1000 ms): normal p50 {normal_p50:.2} ms; first login after a blackhole {:.0} ms (= timeout + {:.0} ms); later logins p50 {:.2} ms, p99 {:.2} ms",
        first,
        first - 1000.0,
        after.pct(0.5),
        after.pct(0.99)
    );
    println!(
        "targets: throughput >= 80% of baseline ({:.0}% at 32 clients, warm cache), p99 <= 20 ms at 32 ({:.2} ms), first login after a blackhole <= timeout + 50 ms ({:.0} ms over)",
        100.0 * warm32.per_sec() / base32.per_sec(),
        warm32.pct(0.99),
        first - 1000.0
    );
}
