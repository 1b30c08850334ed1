//! Console settings stored as JSON documents, validated field by field.

use bindery_model::{BasicSettings, FieldError, SecuritySettings};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::logs::j;
use crate::util::now_ms;
use crate::{Actor, Error, Result, Service};

const BASIC: &str = "basic";
const SECURITY: &str = "security";

/// How long a replica may answer from its copy of the settings (read on
/// every login and page): saving on this replica forgets the copy at once;
/// other replicas see the change within this time.
const SETTINGS_TTL: Duration = Duration::from_secs(1);

/// This replica's recent copies of the stored settings documents.
#[derive(Default)]
pub(crate) struct SettingsCache {
    copies: Mutex<HashMap<&'static str, (Instant, Option<String>)>>,
}

impl SettingsCache {
    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, (Instant, Option<String>)>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for SettingsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SettingsCache")
    }
}

fn parse<T: DeserializeOwned + Default>(key: &str, json: Option<&str>) -> Result<T> {
    match json {
        Some(json) => serde_json::from_str(json).map_err(|e| Error::Internal(format!("stored setting {key} is unreadable: {e}"))),
        None => Ok(T::default()),
    }
}

impl Service {
    async fn load<T: DeserializeOwned + Default>(&self, key: &'static str) -> Result<T> {
        let copy = self.settings.copies().get(key).filter(|(at, _)| at.elapsed() < SETTINGS_TTL).map(|(_, json)| json.clone());
        let json = match copy {
            Some(json) => json,
            None => {
                let json = self.store.get_setting(key).await?;
                self.settings.copies().insert(key, (Instant::now(), json.clone()));
                json
            }
        };
        parse(key, json.as_deref())
    }

    /// The stored document itself, never a copy (for the audit's "before").
    async fn load_stored<T: DeserializeOwned + Default>(&self, key: &'static str) -> Result<T> {
        parse(key, self.store.get_setting(key).await?.as_deref())
    }

    async fn save<T: Serialize>(&self, actor: &Actor, key: &'static str, before: &T, after: &T) -> Result<()> {
        let json = serde_json::to_string(after).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_setting(key, &json, now_ms()).await?;
        self.settings.copies().remove(key);
        self.audit(actor, "settings.update", &format!("settings:{key}"), Some(j(before)), Some(j(after))).await;
        Ok(())
    }

    pub async fn basic_settings(&self) -> Result<BasicSettings> {
        self.load(BASIC).await
    }

    pub async fn security_settings(&self) -> Result<SecuritySettings> {
        self.load(SECURITY).await
    }

    pub async fn get_basic_settings(&self, actor: &Actor) -> Result<BasicSettings> {
        actor.require_reader()?;
        self.basic_settings().await
    }

    pub async fn get_security_settings(&self, actor: &Actor) -> Result<SecuritySettings> {
        actor.require_reader()?;
        self.security_settings().await
    }

    pub async fn update_basic_settings(&self, actor: &Actor, mut s: BasicSettings) -> Result<BasicSettings> {
        actor.require_admin()?;
        s.site_url = s.site_url.trim().trim_end_matches('/').to_string();
        let mut errors = Vec::new();
        if !valid_site_url(&s.site_url) {
            errors.push(FieldError::new("site_url", "must be an http:// or https:// URL with a host, e.g. https://bindery.example.com"));
        }
        range(&mut errors, "session_idle_minutes", s.session_idle_minutes, 1, 1440);
        range(&mut errors, "session_absolute_hours", s.session_absolute_hours, 1, 720);
        range(&mut errors, "log_retention_days", s.log_retention_days, 1, 3650);
        if errors.is_empty() && s.session_idle_minutes > s.session_absolute_hours * 60 {
            errors.push(FieldError::new("session_idle_minutes", "must not exceed the absolute session lifetime"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let before: BasicSettings = self.load_stored(BASIC).await?;
        self.save(actor, BASIC, &before, &s).await?;
        Ok(s)
    }

    pub async fn update_security_settings(&self, actor: &Actor, mut s: SecuritySettings) -> Result<SecuritySettings> {
        actor.require_admin()?;
        let mut errors = Vec::new();
        range(&mut errors, "lockout_max_failures", s.lockout_max_failures, 1, 100);
        range(&mut errors, "lockout_window_minutes", s.lockout_window_minutes, 1, 1440);
        range(&mut errors, "lockout_ip_max_failures", s.lockout_ip_max_failures, 1, 100_000);
        // Stored as parsed (host bits cleared), one network per entry.
        let mut networks = Vec::new();
        for n in s.lockout_exempt_networks.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            match n.parse::<crate::net::Network>() {
                Ok(net) if !networks.contains(&net.to_string()) => networks.push(net.to_string()),
                Ok(_) => {}
                Err(e) => errors.push(FieldError::new("lockout_exempt_networks", e)),
            }
        }
        if networks.len() > 256 {
            errors.push(FieldError::new("lockout_exempt_networks", "at most 256 networks"));
        }
        s.lockout_exempt_networks = networks;
        range(&mut errors, "min_password_length", s.min_password_length, 8, 128);
        range(&mut errors, "bearer_token_minutes", s.bearer_token_minutes, 1, 1440);
        range(&mut errors, "revalidate_minutes", s.revalidate_minutes, 0, 1440);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let before: SecuritySettings = self.load_stored(SECURITY).await?;
        self.save(actor, SECURITY, &before, &s).await?;
        Ok(s)
    }
}

fn range(errors: &mut Vec<FieldError>, field: &str, v: i64, lo: i64, hi: i64) {
    if !(lo..=hi).contains(&v) {
        errors.push(FieldError::new(field, format!("must be between {lo} and {hi}")));
    }
}

fn valid_site_url(s: &str) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace) && !host.starts_with(':') && !host.contains('@')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::valid_site_url;

    #[test]
    fn site_urls() {
        assert!(valid_site_url("https://bindery.example.com"));
        assert!(valid_site_url("http://127.0.0.1:3000/console"));
        assert!(!valid_site_url("ftp://x"));
        assert!(!valid_site_url("https://"));
        assert!(!valid_site_url("https://user@evil"));
        assert!(!valid_site_url("bindery.example.com"));
    }
}
