//! Configuration: built-in defaults, then `bindery.toml`, then `BINDERY_*`
//! environment variables (highest). Errors name the key and its variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bindery_service::net::Network;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite:data/bindery.db` (default) or `postgres://user@host/db`.
    pub database_url: String,
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `bindery=debug,info`.
    pub log_level: String,
    /// Folder with the built console (`pkg/bindery.js`, `.wasm`, `.css`).
    pub site_root: String,
    /// Reverse proxies (CIDR networks or addresses) whose
    /// `X-Forwarded-For` / `X-Forwarded-Proto` are believed. A TOML list,
    /// or in the environment a comma-separated string.
    #[serde(deserialize_with = "string_list")]
    pub trusted_proxies: Vec<String>,
    /// Deprecated: `true` trusts a proxy on this machine (loopback), as
    /// `trusted_proxies = ["127.0.0.0/8", "::1"]`; ignored when
    /// `trusted_proxies` is set.
    pub trust_proxy: bool,
    /// Minimum time of every failed login answer, in milliseconds.
    pub min_failure_delay_ms: u64,
    /// Every directory server is probed this often (seconds): a server
    /// marked down is used again once a probe finds it healthy.
    pub directory_probe_seconds: u64,
    /// How often (seconds) the scheduler looks for a due sync. Each firing
    /// of a schedule runs on exactly one replica.
    pub sync_tick_seconds: u64,
    /// Plain-SMTP relay for sync reports, `host:port` (e.g. the local MTA);
    /// unset: reports are shown in the console only.
    pub smtp_relay: Option<String>,
    /// From address of the reports.
    pub smtp_from: String,
    /// Key that encrypts directory secrets at rest: 64 hex characters.
    /// When unset, the key is read from (or generated into) `secret_key_file`.
    pub secret_key: Option<String>,
    pub secret_key_file: String,
    /// When set, `/metrics` answers only requests with
    /// `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: "sqlite:data/bindery.db".into(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            site_root: "target/site".into(),
            trusted_proxies: Vec::new(),
            trust_proxy: false,
            min_failure_delay_ms: 400,
            directory_probe_seconds: 10,
            sync_tick_seconds: 30,
            smtp_relay: None,
            smtp_from: "bindery@localhost".into(),
            secret_key: None,
            secret_key_file: "data/secret.key".into(),
            metrics_token: None,
        }
    }
}

impl std::fmt::Debug for Config {
    /// The database URL may hold a password: show only its scheme.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("site_root", &self.site_root)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("trust_proxy", &self.trust_proxy)
            .field("min_failure_delay_ms", &self.min_failure_delay_ms)
            .field("directory_probe_seconds", &self.directory_probe_seconds)
            .field("sync_tick_seconds", &self.sync_tick_seconds)
            .field("smtp_relay", &self.smtp_relay)
            .field("smtp_from", &self.smtp_from)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("secret_key_file", &self.secret_key_file)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***`:
/// the password of the user-info part and of any `password` parameter
/// (also `sslpassword`) of the query string.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..s + 3], &base[at..]),
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// A list, or (from the environment) one comma-separated string.
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
    };
    Ok(items.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Load from defaults, the TOML file (when it exists) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let path: PathBuf = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("bindery.toml"));
        if file.is_some() && !path.exists() {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        let cfg = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&path))
            .merge(Env::prefixed("BINDERY_"))
            .extract::<Config>()
            .map_err(|e| ConfigError(describe(&e, &path)))?;
        cfg.proxies()?;
        Ok(cfg)
    }

    /// The trusted reverse proxies: `trusted_proxies`, or loopback when
    /// only the deprecated `trust_proxy = true` is set.
    pub fn proxies(&self) -> Result<Vec<Network>, ConfigError> {
        let networks = Network::parse_list(&self.trusted_proxies)
            .map_err(|e| ConfigError(format!("invalid value for `trusted_proxies` (env BINDERY_TRUSTED_PROXIES): {e}")))?;
        Ok(if networks.is_empty() && self.trust_proxy { Network::loopback() } else { networks })
    }
}

/// A figment error in words: which key, which variable, what is wrong.
fn describe(e: &figment::Error, path: &Path) -> String {
    let mut out = Vec::new();
    for err in e.clone() {
        let key = err.path.join(".");
        let var = format!("BINDERY_{}", key.replace('.', "_").to_uppercase());
        let source = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_else(|| format!("{} or the environment", path.display()));
        if key.is_empty() {
            out.push(format!("configuration ({source}): {}", err.kind));
        } else {
            out.push(format!(
                "invalid value for `{key}` (file key `{key}` in {}, or env {var}; from {source}): {}",
                path.display(),
                err.kind
            ));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact_url("postgres://bob:s3cret@db/x"), "postgres://bob:***@db/x");
        assert_eq!(redact_url("sqlite:data/x.db"), "sqlite:data/x.db");
        assert_eq!(redact_url("postgres://bob@db/x?password=s3cret&sslmode=require"), "postgres://bob@db/x?password=***&sslmode=require");
        assert_eq!(redact_url("postgres://db/x?sslmode=require&PASSWORD=s3cret"), "postgres://db/x?sslmode=require&PASSWORD=***");
        assert_eq!(redact_url("postgres://a:b@db/x?sslpassword=k"), "postgres://a:***@db/x?sslpassword=***");
        let c = Config {
            database_url: "postgres://a:pw@h/d?password=qs-secret".into(),
            secret_key: Some("ab".repeat(32)),
            metrics_token: Some("metrics-secret".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw@") && !shown.contains("abab") && !shown.contains("qs-secret") && !shown.contains("metrics-secret"),
            "{shown}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn trusted_proxies_from_file_or_env_and_the_old_switch() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).expect("loads");
            assert!(c.proxies().unwrap().is_empty(), "no proxy is trusted by default");
            jail.create_file("bindery.toml", "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]")?;
            let shown: Vec<String> = Config::load(None).unwrap().proxies().unwrap().iter().map(|n| n.to_string()).collect();
            assert_eq!(shown, ["10.0.0.0/8", "::1/128"]);
            jail.set_env("BINDERY_TRUSTED_PROXIES", "192.168.0.0/16, 127.0.0.1");
            let shown: Vec<String> = Config::load(None).unwrap().proxies().unwrap().iter().map(|n| n.to_string()).collect();
            assert_eq!(shown, ["192.168.0.0/16", "127.0.0.1/32"]);
            jail.set_env("BINDERY_TRUSTED_PROXIES", "10.0.0.0/40");
            let e = Config::load(None).unwrap_err().0;
            assert!(e.contains("`trusted_proxies`") && e.contains("BINDERY_TRUSTED_PROXIES") && e.contains("10.0.0.0/40"), "{e}");
            // The old switch means "a proxy on this machine".
            jail.set_env("BINDERY_TRUSTED_PROXIES", "");
            jail.create_file("bindery.toml", "trust_proxy = true")?;
            let shown: Vec<String> = Config::load(None).unwrap().proxies().unwrap().iter().map(|n| n.to_string()).collect();
            assert_eq!(shown, ["127.0.0.0/8", "::1/128"]);
            Ok(())
        });
    }

    #[test]
    // figment's own test harness returns its (large) error type.
    #[allow(clippy::result_large_err)]
    fn env_overrides_file_and_errors_name_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bindery.toml", "listen = \"127.0.0.1:4000\"\nlog_level = \"debug\"")?;
            jail.set_env("BINDERY_LOG_LEVEL", "warn");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.listen.port(), 4000);
            assert_eq!(c.log_level, "warn");
            jail.set_env("BINDERY_LISTEN", "not-an-address");
            let e = Config::load(None).unwrap_err().0;
            assert!(e.contains("`listen`") && e.contains("BINDERY_LISTEN"), "{e}");
            Ok(())
        });
    }
}
