//! A real OpenLDAP server for tests: wraps `testkit/slapd/start`, which
//! starts `slapd` on free loopback ports with throwaway data (TLS with a CA
//! it generates, ppolicy, memberof, an AD-like schema). Stopped and removed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use bindery_model::{DirectoryInput, GroupMode};

pub struct Slapd {
    pub ldap_url: String,
    pub ldaps_url: String,
    pub ldaps_host_url: String,
    pub base_dn: String,
    pub bind_dn: String,
    pub bind_password: String,
    pub admin_dn: String,
    pub admin_password: String,
    pub ca_pem: String,
    pub other_ca_pem: String,
    pub dir: PathBuf,
}

fn repo_root() -> PathBuf {
    // crates/directory → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root").to_path_buf()
}

impl Slapd {
    pub fn start() -> Slapd {
        Self::start_with(&[])
    }

    /// Start with extra environment for the script (e.g. `SLAPD_CERT_SANS`).
    pub fn start_with(env: &[(&str, &str)]) -> Slapd {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("bindery-slapd-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        let script = repo_root().join("testkit/slapd/start");
        let mut cmd = Command::new(&script);
        cmd.arg(&dir).env("SLAPD_WATCH_PID", std::process::id().to_string()).env("SLAPD_LOGLEVEL", "none");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {} (is slapd installed? run scripts/setup): {e}", script.display()));
        assert!(out.status.success(), "slapd fixture failed to start:\n{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fixture prints JSON");
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("fixture JSON lacks {k}")).to_string();
        let read = |k: &str| std::fs::read_to_string(s(k)).expect("CA file");
        Slapd {
            ldap_url: s("ldap_url"),
            ldaps_url: s("ldaps_url"),
            ldaps_host_url: s("ldaps_host_url"),
            base_dn: s("base_dn"),
            bind_dn: s("bind_dn"),
            bind_password: s("bind_password"),
            admin_dn: s("admin_dn"),
            admin_password: s("admin_password"),
            ca_pem: read("ca_file"),
            other_ca_pem: read("other_ca_file"),
            dir,
        }
    }

    pub fn port(&self, url: &str) -> u16 {
        url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// A working configuration for this directory (over `ldap://`).
    pub fn input(&self) -> DirectoryInput {
        DirectoryInput {
            enabled: true,
            server_uris: vec![self.ldap_url.clone()],
            starttls: false,
            bind_dn: self.bind_dn.clone(),
            bind_password: Some(self.bind_password.clone()),
            search_ous: format!("ou=people,{b}|ou=tech,{b}", b = self.base_dn),
            search_filter: "(uid=%(user)s)".into(),
            attr_map: r#"{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}"#.into(),
            group_mode: GroupMode::Attribute,
            group_base: String::new(),
            group_filter: "(member={0})".into(),
            nested_groups: true,
            group_mappings: vec![],
            connect_timeout_secs: 3,
            op_timeout_secs: 5,
            page_size: 2,
            dn_cache_secs: 300,
            ca_pem: self.ca_pem.clone(),
            client_cert_pem: String::new(),
            client_key_pem: None,
            skip_verify: false,
        }
    }

    /// Run `ldapmodify` as the directory's admin.
    pub fn modify(&self, ldif: &str) {
        self.ldapmodify(&[], ldif)
    }

    /// Run `ldapmodify -M` (the ManageDsaIT control, RFC 3296) as the
    /// admin: for changes to referral objects themselves, e.g. their `ref`.
    pub fn modify_manage_dsa_it(&self, ldif: &str) {
        self.ldapmodify(&["-M"], ldif)
    }

    fn ldapmodify(&self, extra: &[&str], ldif: &str) {
        use std::io::Write;
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.ldap_url, "-D", &self.admin_dn, "-w", &self.admin_password])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ldapmodify");
        child.stdin.take().expect("stdin").write_all(ldif.as_bytes()).expect("write ldif");
        assert!(child.wait().expect("ldapmodify").success(), "ldapmodify failed:\n{ldif}");
    }

    pub fn stop(&self) {
        let _ = Command::new(repo_root().join("testkit/slapd/stop")).arg(&self.dir).status();
    }

    /// Stop slapd and start the same instance again: the same ports, the
    /// same data (what clients see of a directory restart). Returns once
    /// the service account can bind again.
    pub fn restart(&self) {
        use std::os::unix::process::CommandExt;
        // The start script's watchdog stops this DIR's slapd once the one it
        // started is gone (which init may reap late): it would stop the
        // new one. Replaced by one that watches this process only.
        stop_watchdogs(&self.dir);
        self.stop();
        let (p1, p2) = (self.port(&self.ldap_url), self.port(&self.ldaps_url));
        let log = std::fs::File::options().append(true).create(true).open(self.dir.join("slapd.log")).expect("slapd.log");
        let mut child = Command::new("/usr/sbin/slapd")
            .args(["-d", "none", "-h", &format!("ldap://127.0.0.1:{p1}/ ldaps://127.0.0.1:{p2}/"), "-f"])
            .arg(self.dir.join("slapd.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("restart slapd");
        std::fs::write(self.dir.join("fixture.pid"), child.id().to_string()).expect("fixture.pid");
        // Reap it when it stops (`stop` counts a zombie as stopped anyway).
        std::thread::spawn(move || child.wait());
        watch_from_this_process(&repo_root().join("testkit/slapd/stop"), &self.dir);
        let mut whoami = Command::new("ldapwhoami");
        whoami.args(["-x", "-o", "nettimeout=1", "-H", &self.ldap_url, "-D", &self.bind_dn, "-w", &self.bind_password]);
        wait_until_it_answers(whoami, 10, "slapd", &self.dir.join("slapd.log"));
    }
}

/// End the test kit's watchdogs of `dir` (by their process ids).
fn stop_watchdogs(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = dir.to_string_lossy().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        if args.iter().any(|a| a == "watchdog") && args.iter().any(|a| a == &dir) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A configuration for a plain `ldap://` server at `url` laid out as
/// [`Slapd`] is (users in `ou=people` and `ou=tech` under `base_dn`): for
/// the test kit's misbehaving LDAP responder (`bindery-ldap-responder`).
pub fn plain_input(url: &str, base_dn: &str) -> DirectoryInput {
    DirectoryInput {
        enabled: true,
        server_uris: vec![url.to_string()],
        starttls: false,
        bind_dn: format!("cn=bindery,ou=services,{base_dn}"),
        bind_password: Some("Bindery-Service-Password-1".into()),
        search_ous: format!("ou=people,{b}|ou=tech,{b}", b = base_dn),
        search_filter: "(uid=%(user)s)".into(),
        attr_map: r#"{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl"}"#.into(),
        group_mode: GroupMode::Attribute,
        group_base: String::new(),
        group_filter: "(member={0})".into(),
        nested_groups: false,
        group_mappings: vec![],
        connect_timeout_secs: 3,
        op_timeout_secs: 5,
        page_size: 2,
        dn_cache_secs: 0,
        ca_pem: String::new(),
        client_cert_pem: String::new(),
        client_key_pem: None,
        skip_verify: false,
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Operation counters of a [`Slapd`] (its `cn=Monitor`), read over one
/// connection bound as the admin once — so reading costs one search each
/// time and no bind.
pub struct Monitor {
    ldap: ldap3::Ldap,
}

impl Slapd {
    pub async fn monitor(&self) -> Monitor {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&self.ldap_url).await.expect("monitor connection");
        ldap3::drive!(conn);
        ldap.simple_bind(&self.admin_dn, &self.admin_password).await.expect("monitor bind").success().expect("monitor bind");
        Monitor { ldap }
    }
}

impl Monitor {
    /// Completed (binds, searches, compares) so far. The search doing the
    /// reading is not yet complete when it reads, but is counted by the
    /// next reading.
    pub async fn counts(&mut self) -> (u64, u64, u64) {
        let (entries, _) = self
            .ldap
            .search("cn=Operations,cn=Monitor", ldap3::Scope::OneLevel, "(|(cn=Bind)(cn=Search)(cn=Compare))", vec!["monitorOpCompleted"])
            .await
            .expect("monitor search")
            .success()
            .expect("monitor search");
        let (mut binds, mut searches, mut compares) = (0, 0, 0);
        for e in entries {
            let e = ldap3::SearchEntry::construct(e);
            let n: u64 = e.attrs.get("monitorOpCompleted").and_then(|v| v.first()).and_then(|v| v.parse().ok()).expect("counter");
            if e.dn.starts_with("cn=Bind") {
                binds = n;
            } else if e.dn.starts_with("cn=Compare") {
                compares = n;
            } else {
                searches = n;
            }
        }
        (binds, searches, compares)
    }
}

/// Silently drop every packet sent to a loopback port (an nftables rule),
/// as a dead network path does: connects and requests get no answer at all.
/// The rule goes when this is dropped.
pub struct Blackhole {
    table: String,
}

impl Blackhole {
    pub fn port(port: u16) -> Blackhole {
        let table = format!("bindery_blackhole_{port}");
        let nft = |args: &str| {
            let out =
                Command::new("nft").args(args.split(' ')).output().unwrap_or_else(|e| panic!("nft (scripts/setup installs nftables): {e}"));
            assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        nft(&format!("add table inet {table}"));
        nft(&format!("add chain inet {table} out {{ type filter hook output priority 0 ; }}"));
        nft(&format!("add rule inet {table} out ip daddr 127.0.0.1 tcp dport {port} drop"));
        Blackhole { table }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

/// A real Active Directory for tests: wraps `testkit/samba/start`, which
/// starts a Samba AD domain controller (realm `BINDERY.TEST`) copied from a
/// provisioned template, on a loopback alias `127.0.0.x` of its own (Samba's
/// LDAP server listens on ports 389/636 only). Stopped, its alias removed and
/// its files deleted when dropped. Needs root.
///
/// Seeded: `user01`…`user20` and `disabled01` (uac 514) in `OU=People`,
/// groups `staff` (user01…user05) and `admins` (user01) in `OU=Groups`, the
/// service accounts `bindery-svc` (an ordinary domain user) and
/// `bindery-repl` (with "Replicating Directory Changes", and allowed to list
/// and read Deleted Objects) in `OU=Services`; one tombstone (`deleted01`).
pub struct Samba {
    pub ldap_url: String,
    pub ldaps_url: String,
    pub ip: String,
    pub base_dn: String,
    pub people_ou: String,
    pub groups_ou: String,
    /// The unprivileged service account.
    pub bind_dn: String,
    pub bind_password: String,
    /// A service account holding "Replicating Directory Changes" that may
    /// read Deleted Objects.
    pub repl_dn: String,
    pub repl_password: String,
    pub admin_dn: String,
    pub admin_password: String,
    /// Every seeded user's password.
    pub user_password: String,
    pub ca_pem: String,
    pub smb_conf: PathBuf,
    pub dir: PathBuf,
}

impl Samba {
    pub fn start() -> Samba {
        Self::start_with(&[])
    }

    /// Start with extra environment for the script (e.g. `SAMBA_EXTRA_USERS`).
    pub fn start_with(env: &[(&str, &str)]) -> Samba {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("bindery-samba-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        let script = repo_root().join("testkit/samba/start");
        let out = Command::new(&script)
            .arg(&dir)
            .env("SAMBA_WATCH_PID", std::process::id().to_string())
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} (is Samba installed? run scripts/setup): {e}", script.display()));
        assert!(out.status.success(), "samba fixture failed to start:\n{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fixture prints JSON");
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("fixture JSON lacks {k}")).to_string();
        Samba {
            ldap_url: s("ldap_url"),
            ldaps_url: s("ldaps_url"),
            ip: s("ip"),
            base_dn: s("base_dn"),
            people_ou: s("people_ou"),
            groups_ou: s("groups_ou"),
            bind_dn: s("bind_dn"),
            bind_password: s("bind_password"),
            repl_dn: s("repl_dn"),
            repl_password: s("repl_password"),
            admin_dn: s("admin_dn"),
            admin_password: s("admin_password"),
            user_password: s("user_password"),
            ca_pem: std::fs::read_to_string(s("ca_file")).expect("CA file"),
            smb_conf: PathBuf::from(s("smb_conf")),
            dir,
        }
    }

    /// A working configuration for this directory as the unprivileged
    /// service account, over `ldap://`: users of `OU=People` by
    /// `sAMAccountName`, groups from `memberOf`.
    pub fn input(&self) -> DirectoryInput {
        DirectoryInput {
            enabled: true,
            server_uris: vec![self.ldap_url.clone()],
            starttls: false,
            bind_dn: self.bind_dn.clone(),
            bind_password: Some(self.bind_password.clone()),
            search_ous: self.people_ou.clone(),
            search_filter: "(&(objectClass=user)(sAMAccountName=%(user)s))".into(),
            attr_map: r#"{"username":"sAMAccountName","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}"#
                .into(),
            group_mode: GroupMode::Attribute,
            group_base: String::new(),
            group_filter: "(member={0})".into(),
            nested_groups: false,
            group_mappings: vec![],
            connect_timeout_secs: 3,
            op_timeout_secs: 10,
            page_size: 50,
            dn_cache_secs: 0,
            ca_pem: self.ca_pem.clone(),
            client_cert_pem: String::new(),
            client_key_pem: None,
            skip_verify: false,
        }
    }

    /// [`Samba::input`] binding as another account.
    pub fn input_as(&self, dn: &str, password: &str) -> DirectoryInput {
        DirectoryInput { bind_dn: dn.to_string(), bind_password: Some(password.to_string()), ..self.input() }
    }

    /// A connection bound as the domain's Administrator, over `ldaps://`
    /// (AD sets passwords only over an encrypted connection).
    pub async fn admin(&self) -> ldap3::Ldap {
        let mut input = self.input_as(&self.admin_dn, &self.admin_password);
        input.server_uris = vec![self.ldaps_url.clone()];
        let cfg = crate::config::validate(&input, crate::Secret::new(self.admin_password.clone()), crate::Secret::default())
            .expect("valid admin configuration");
        let (mut ldap, _) = crate::conn::connect(&cfg.servers[0], &cfg).await.map_err(|(_, f, _)| f).expect("admin connection");
        crate::conn::service_bind(&mut ldap, &cfg).await.expect("admin bind");
        ldap
    }

    /// Modify `dn` as the Administrator.
    pub async fn modify(&self, dn: &str, mods: Vec<ldap3::Mod<String>>) {
        let mut ldap = self.admin().await;
        let r = ldap.modify(dn, mods).await.expect("modify");
        assert_eq!(r.rc, 0, "modify {dn}: {r:?}");
        let _ = ldap.unbind().await;
    }

    /// The DN of a user `name` in `OU=People`.
    pub fn user_dn(&self, name: &str) -> String {
        format!("CN={},{}", ldap3::dn_escape(name), self.people_ou)
    }

    /// The DN of a group `name` in `OU=Groups`.
    pub fn group_dn(&self, name: &str) -> String {
        format!("CN={},{}", ldap3::dn_escape(name), self.groups_ou)
    }

    /// Add an enabled user `name` to `OU=People` with [`Samba::user_password`];
    /// returns its DN.
    pub async fn add_user(&self, name: &str) -> String {
        let dn = self.user_dn(name);
        let pw: Vec<u8> = format!("\"{}\"", self.user_password).encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut ldap = self.admin().await;
        let upn = format!("{name}@bindery.test");
        let mail = upn.clone();
        let attrs: Vec<(Vec<u8>, std::collections::HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), [b"user".to_vec()].into()),
            (b"sAMAccountName".to_vec(), [name.as_bytes().to_vec()].into()),
            (b"userPrincipalName".to_vec(), [upn.into_bytes()].into()),
            (b"mail".to_vec(), [mail.into_bytes()].into()),
            (b"unicodePwd".to_vec(), [pw].into()),
            (b"userAccountControl".to_vec(), [b"512".to_vec()].into()),
        ];
        let r = ldap.add(&dn, attrs).await.expect("add");
        assert_eq!(r.rc, 0, "add {dn}: {r:?}");
        let _ = ldap.unbind().await;
        dn
    }

    /// Add a (global security) group `name` to `OU=Groups`; returns its DN.
    pub async fn add_group(&self, name: &str) -> String {
        let dn = self.group_dn(name);
        let mut ldap = self.admin().await;
        let attrs: Vec<(Vec<u8>, std::collections::HashSet<Vec<u8>>)> =
            vec![(b"objectClass".to_vec(), [b"group".to_vec()].into()), (b"sAMAccountName".to_vec(), [name.as_bytes().to_vec()].into())];
        let r = ldap.add(&dn, attrs).await.expect("add group");
        assert_eq!(r.rc, 0, "add {dn}: {r:?}");
        let _ = ldap.unbind().await;
        dn
    }

    /// Set a user's `userAccountControl` (514 disables, 512 enables).
    pub async fn set_uac(&self, dn: &str, uac: u32) {
        self.modify(dn, vec![ldap3::Mod::Replace("userAccountControl".to_string(), [uac.to_string()].into())]).await
    }

    /// Add (`true`) or remove (`false`) `member_dn` as a member of group `group_dn`.
    pub async fn set_member(&self, group_dn: &str, member_dn: &str, add: bool) {
        let values = [member_dn.to_string()].into();
        let m = if add { ldap3::Mod::Add("member".to_string(), values) } else { ldap3::Mod::Delete("member".to_string(), values) };
        self.modify(group_dn, vec![m]).await
    }

    /// Delete an entry as the Administrator (AD keeps a tombstone in
    /// `CN=Deleted Objects`).
    pub async fn delete(&self, dn: &str) {
        let mut ldap = self.admin().await;
        let r = ldap.delete(dn).await.expect("delete");
        assert_eq!(r.rc, 0, "delete {dn}: {r:?}");
        let _ = ldap.unbind().await;
    }

    /// Move an entry under `new_parent`, keeping its RDN.
    pub async fn move_to(&self, dn: &str, new_parent: &str) {
        let rdn = dn.split(',').next().expect("rdn").to_string();
        let mut ldap = self.admin().await;
        let r = ldap.modifydn(dn, &rdn, true, Some(new_parent)).await.expect("modifydn");
        assert_eq!(r.rc, 0, "move {dn}: {r:?}");
        let _ = ldap.unbind().await;
    }

    pub fn stop(&self) {
        let _ = Command::new(repo_root().join("testkit/samba/stop")).arg(&self.dir).status();
    }

    /// Stop Samba and start the same instance again: the same address, the
    /// same data, the same invocation id (what clients see of a domain
    /// controller restarting). Returns once the service account can bind.
    pub fn restart(&self) {
        use std::os::unix::process::CommandExt;
        // The start script's watchdog stops this DIR once the samba it
        // started is gone: it would stop the new one. Replaced by one that
        // watches this process only.
        stop_watchdogs(&self.dir);
        self.stop();
        // `stop` gave the loopback alias back; claim it again (the start
        // script picks among 200 at random, so it is still free).
        let claimed = Command::new("ip").args(["addr", "add", &format!("{}/32", self.ip), "dev", "lo"]).status();
        assert!(claimed.is_ok_and(|s| s.success()), "could not claim {} again", self.ip);
        std::fs::write(self.dir.join("ip"), format!("{}\n", self.ip)).expect("ip file");
        let log = std::fs::File::options().append(true).create(true).open(self.dir.join("samba.out")).expect("samba.out");
        let mut child = Command::new("/usr/sbin/samba")
            .args(["-F", "-M", "single", "-s"])
            .arg(&self.smb_conf)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("restart samba");
        // `stop` recognises its samba by pid and start time (field 22 of stat).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("samba's stat");
        let started = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(19)).expect("start time").to_string();
        std::fs::write(self.dir.join("fixture.pid"), format!("{} {started}\n", child.id())).expect("fixture.pid");
        std::thread::spawn(move || child.wait());
        watch_from_this_process(&repo_root().join("testkit/samba/stop"), &self.dir);
        let mut search = Command::new("ldapsearch");
        search.args(["-x", "-o", "nettimeout=1", "-H", &self.ldap_url, "-D", &self.bind_dn, "-w", &self.bind_password]).args([
            "-b",
            "",
            "-s",
            "base",
            "(objectClass=*)",
            "1.1",
        ]);
        wait_until_it_answers(search, 30, "samba", &self.dir.join("samba.log"));
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// After a restart: a watchdog that runs `stop DIR` once this test process
/// is gone (as the start scripts' own watchdog does for the first start),
/// so a killed test never leaves a server behind.
fn watch_from_this_process(stop: &Path, dir: &Path) {
    use std::os::unix::process::CommandExt;
    let _ = Command::new("bash")
        .args(["-c", "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; exec \"$2\" \"$3\"", "watchdog"])
        .arg(std::process::id().to_string())
        .arg(stop)
        .arg(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

/// Run `probe` (an LDAP client command that binds) until it succeeds;
/// panic naming `what` and its log after `secs` seconds.
fn wait_until_it_answers(mut probe: Command, secs: u64, what: &str, log: &Path) {
    probe.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !probe.status().is_ok_and(|s| s.success()) {
        assert!(std::time::Instant::now() < deadline, "{what} did not come back within {secs} s (log: {})", log.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
