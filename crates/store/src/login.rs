//! The login path's reads and writes, shaped for speed: one read for both
//! lockout counters, and one write transaction per login whatever it
//! issues (it used to be five autocommits queuing behind SQLite's writer).

use sqlx::Row;

use crate::{b, Backend, NewLoginEvent, Result, Store};

/// The credential a successful login issues.
#[derive(Debug)]
pub enum GrantCredential<'a> {
    /// A console session.
    Session { token_hash: &'a str },
    /// An API token (a short-lived bearer token or an API key).
    Token {
        name: &'a str,
        token_hash: &'a str,
        prefix: &'a str,
        expires_at: Option<i64>,
        /// Revoke the user's earlier live tokens of this name first (one
        /// API key per user).
        replace_same_name: bool,
    },
}

/// Everything a successful login writes.
#[derive(Debug)]
pub struct Grant<'a> {
    pub user_id: i64,
    pub username: &'a str,
    pub now: i64,
    /// The directory just vouched for the account (re-validation clock).
    pub validated: bool,
    /// Lockout key whose failures the success clears, when it has any.
    pub clear_failures: Option<&'a str>,
    pub credential: GrantCredential<'a>,
    pub event: NewLoginEvent<'a>,
}

impl Store {
    /// Recent failures of a username key and of a client IP key, in one read.
    pub async fn failure_counts(&self, user_key: &str, ip_key: &str, since: i64) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN key = $1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN key = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM auth_failures WHERE key IN ($1, $2) AND at >= $3",
        )
        .bind(user_key)
        .bind(ip_key)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Write a successful login in one transaction: last login (and
    /// validation) time, the cleared failures, the session or token, and
    /// the login log's line.
    pub async fn grant_login(&self, g: &Grant<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if self.backend == Backend::Sqlite {
            // SQLite runs the statements of one query in turn: one trip to
            // its worker thread instead of one per statement.
            let mut sql = String::from(if g.validated {
                "UPDATE users SET last_login_at = $1, validated_at = $1 WHERE id = $2;"
            } else {
                "UPDATE users SET last_login_at = $1 WHERE id = $2;"
            });
            if g.clear_failures.is_some() {
                sql.push_str("DELETE FROM auth_failures WHERE key = $9;");
            }
            let (name, prefix, expires_at, token_hash) = match &g.credential {
                GrantCredential::Session { token_hash } => {
                    sql.push_str(
                        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, ip, user_agent) VALUES ($8, $2, $1, $1, $4, $5);",
                    );
                    ("", "", None, *token_hash)
                }
                GrantCredential::Token { name, token_hash, prefix, expires_at, replace_same_name } => {
                    if *replace_same_name {
                        sql.push_str("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND name = $10 AND revoked_at IS NULL;");
                    }
                    sql.push_str(
                        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_by, created_at, expires_at) \
                         VALUES ($2, $10, $8, $11, $3, $1, $12);",
                    );
                    (*name, *prefix, *expires_at, *token_hash)
                }
            };
            sql.push_str(
                "INSERT INTO login_log (at, username, ip, user_agent, success, reason, method) VALUES ($1, $6, $4, $5, $13, $14, $7)",
            );
            sqlx::query(&sql)
                .bind(g.now)
                .bind(g.user_id)
                .bind(g.username)
                .bind(g.event.ip)
                .bind(g.event.user_agent)
                .bind(g.event.username)
                .bind(g.event.method)
                .bind(token_hash)
                .bind(g.clear_failures.unwrap_or(""))
                .bind(name)
                .bind(prefix)
                .bind(expires_at)
                .bind(b(g.event.success))
                .bind(g.event.reason)
                .execute(&mut *tx)
                .await?;
            return tx.commit().await;
        }
        let sql = if g.validated {
            "UPDATE users SET last_login_at = $1, validated_at = $1 WHERE id = $2"
        } else {
            "UPDATE users SET last_login_at = $1 WHERE id = $2"
        };
        sqlx::query(sql).bind(g.now).bind(g.user_id).execute(&mut *tx).await?;
        if let Some(key) = g.clear_failures {
            sqlx::query("DELETE FROM auth_failures WHERE key = $1").bind(key).execute(&mut *tx).await?;
        }
        match &g.credential {
            GrantCredential::Session { token_hash } => {
                sqlx::query(
                    "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, ip, user_agent) VALUES ($1, $2, $3, $3, $4, $5)",
                )
                .bind(*token_hash)
                .bind(g.user_id)
                .bind(g.now)
                .bind(g.event.ip)
                .bind(g.event.user_agent)
                .execute(&mut *tx)
                .await?;
            }
            GrantCredential::Token { name, token_hash, prefix, expires_at, replace_same_name } => {
                if *replace_same_name {
                    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND name = $3 AND revoked_at IS NULL")
                        .bind(g.now)
                        .bind(g.user_id)
                        .bind(*name)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(g.user_id)
                .bind(*name)
                .bind(*token_hash)
                .bind(*prefix)
                .bind(g.username)
                .bind(g.now)
                .bind(*expires_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        insert_event(&mut tx, &g.event).await?;
        tx.commit().await
    }

    /// Write a failed login in one transaction: a failure for each lockout
    /// key (none when the attempt does not count, e.g. an empty password)
    /// and the login log's line.
    pub async fn deny_login(&self, failure_keys: &[&str], event: &NewLoginEvent<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for k in failure_keys {
            sqlx::query("INSERT INTO auth_failures (key, at) VALUES ($1, $2)").bind(*k).bind(event.at).execute(&mut *tx).await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await
    }
}

pub(crate) async fn insert_event(conn: &mut sqlx::AnyConnection, e: &NewLoginEvent<'_>) -> Result<()> {
    sqlx::query("INSERT INTO login_log (at, username, ip, user_agent, success, reason, method) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(e.at)
        .bind(e.username)
        .bind(e.ip)
        .bind(e.user_agent)
        .bind(b(e.success))
        .bind(e.reason)
        .bind(e.method)
        .execute(conn)
        .await?;
    Ok(())
}
