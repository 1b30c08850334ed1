//! Console settings stored as JSON documents, validated field by field.

use bindery_model::{BasicSettings, FieldError, SecuritySettings};
use serde::{de::DeserializeOwned, Serialize};

use crate::logs::j;
use crate::util::now_ms;
use crate::{Actor, Error, Result, Service};

const BASIC: &str = "basic";
const SECURITY: &str = "security";

impl Service {
    async fn load<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        match self.store.get_setting(key).await? {
            Some(json) => serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored setting {key} is unreadable: {e}"))),
            None => Ok(T::default()),
        }
    }

    async fn save<T: Serialize>(&self, actor: &Actor, key: &str, before: &T, after: &T) -> Result<()> {
        let json = serde_json::to_string(after).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_setting(key, &json, now_ms()).await?;
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
        if errors.is_empty() && s.session_idle_minutes > s.session_absolute_hours * 60 {
            errors.push(FieldError::new("session_idle_minutes", "must not exceed the absolute session lifetime"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let before = self.basic_settings().await?;
        self.save(actor, BASIC, &before, &s).await?;
        Ok(s)
    }

    pub async fn update_security_settings(&self, actor: &Actor, s: SecuritySettings) -> Result<SecuritySettings> {
        actor.require_admin()?;
        let mut errors = Vec::new();
        range(&mut errors, "lockout_max_failures", s.lockout_max_failures, 1, 100);
        range(&mut errors, "lockout_window_minutes", s.lockout_window_minutes, 1, 1440);
        range(&mut errors, "min_password_length", s.min_password_length, 8, 128);
        range(&mut errors, "bearer_token_minutes", s.bearer_token_minutes, 1, 1440);
        range(&mut errors, "revalidate_minutes", s.revalidate_minutes, 0, 1440);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let before = self.security_settings().await?;
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
