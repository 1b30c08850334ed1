//! The live change stream's status row (issue 17 §2): one per directory,
//! written by the replica holding the stream's lease.

use crate::{Result, Store};

/// A directory's live stream as last written.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct LiveRow {
    pub directory: String,
    pub holder: String,
    #[sqlx(try_from = "i64")]
    pub connected: crate::Flag,
    pub server: String,
    pub since: Option<i64>,
    pub last_change_at: Option<i64>,
    pub changes: i64,
    pub disabled: i64,
    pub last_error: String,
    pub cookies: String,
    pub updated_at: i64,
    /// How the stream works, in words ("syncrepl refreshAndPersist",
    /// "change notification with show-deleted, changes read by DirSync").
    pub method: String,
    /// What it cannot see, in words ('' when it sees disables and deletions).
    pub unseen: String,
    /// Whether the holder's lease is alive now (computed, not stored): a
    /// row whose holder died says nothing about a connection.
    #[sqlx(try_from = "i64")]
    pub held: crate::Flag,
}

impl Store {
    /// Write the stream's status (the whole row; `held` is ignored).
    pub async fn put_live_status(&self, r: &LiveRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO live_streams (directory, holder, connected, server, since, last_change_at, changes, disabled, last_error, cookies, updated_at, method, unseen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (directory) DO UPDATE SET holder = excluded.holder, connected = excluded.connected, server = excluded.server, \
             since = excluded.since, last_change_at = excluded.last_change_at, changes = excluded.changes, disabled = excluded.disabled, \
             last_error = excluded.last_error, cookies = excluded.cookies, updated_at = excluded.updated_at, \
             method = excluded.method, unseen = excluded.unseen",
        )
        .bind(&r.directory)
        .bind(&r.holder)
        .bind(i64::from(r.connected.0))
        .bind(&r.server)
        .bind(r.since)
        .bind(r.last_change_at)
        .bind(r.changes)
        .bind(r.disabled)
        .bind(&r.last_error)
        .bind(&r.cookies)
        .bind(r.updated_at)
        .bind(&r.method)
        .bind(&r.unseen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The directory's stream status, with whether its holder still holds
    /// the lease `lease` at `now`.
    pub async fn live_status(&self, directory: &str, lease: &str, now: i64) -> Result<Option<LiveRow>> {
        Ok(sqlx::query_as(
            "SELECT s.directory, s.holder, s.connected, s.server, s.since, s.last_change_at, s.changes, s.disabled, s.last_error, \
             s.cookies, s.updated_at, s.method, s.unseen, \
             (SELECT COUNT(*) FROM sync_leases l WHERE l.name = $2 AND l.holder = s.holder AND l.expires_at >= $3) AS held \
             FROM live_streams s WHERE s.directory = $1",
        )
        .bind(directory)
        .bind(lease)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The holder of a lease, if it is alive at `now`.
    pub async fn lease_holder(&self, name: &str, now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT holder FROM sync_leases WHERE name = $1 AND expires_at >= $2")
            .bind(name)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }
}
