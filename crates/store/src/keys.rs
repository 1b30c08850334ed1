//! Maintenance of stored keys: username keys rewritten when their rule
//! changes, and one-time values shared by every replica (a key check).

use sqlx::Row;

use crate::{Result, Store};

impl Store {
    /// Every user's `(id, username, username_key)`.
    pub async fn username_keys(&self) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query("SELECT id, username, username_key FROM users ORDER BY id").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// A user's key under the current rule; `false` when another user
    /// already holds it (the two names are one once normalised).
    pub async fn set_username_key(&self, id: i64, key: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let taken: Option<i64> = sqlx::query("SELECT id FROM users WHERE username_key = $1 AND id <> $2")
            .bind(key)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if taken.is_some() {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET username_key = $1 WHERE id = $2").bind(key).bind(id).execute(self.write_pool()).await?;
        Ok(true)
    }

    /// Every staged row's `(id, username, username_key)`.
    pub async fn staged_username_keys(&self) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query("SELECT id, username, username_key FROM staged_users ORDER BY id").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// A staged row's key, and the search text that starts with it.
    pub async fn set_staged_username_key(&self, id: i64, key: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE staged_users SET search = $1 || substr(search, length(username_key) + 1), username_key = $1, settled = 0 WHERE id = $2",
        )
        .bind(key)
        .bind(id)
        .execute(self.write_pool())
        .await?;
        // The search text changed: no cached page count holds.
        sqlx::query("UPDATE staging_snapshots SET version = version + 1").execute(self.write_pool()).await?;
        Ok(())
    }

    /// The distinct lockout counter keys that start with `prefix`.
    pub async fn failure_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT key FROM auth_failures WHERE substr(key, 1, length($1)) = $1")
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Move a lockout counter's failures to another key.
    pub async fn rename_failure_key(&self, from: &str, to: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE auth_failures SET key = $1 WHERE key = $2").bind(to).bind(from).execute(self.write_pool()).await?;
        Ok(())
    }

    /// Store `value` under `key` unless a value is there already; returns
    /// the value stored (the first writer's, when replicas race).
    pub async fn setting_or_insert(&self, key: &str, value: &str, now: i64) -> Result<String> {
        {
            let _turn = self.write_turn().await;
            sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(self.write_pool())
                .await?;
        }
        Ok(self.get_setting(key).await?.unwrap_or_default())
    }
}
