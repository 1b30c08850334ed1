//! The login path's reads and writes, shaped for speed: one read for both
//! lockout counters, and one write transaction per login whatever it
//! issues (it used to be five autocommits queuing behind SQLite's writer).

use sqlx::any::AnyArguments;
use sqlx::{Any, Row};

use crate::{b, Backend, NewLoginEvent, Result, Store, UserRow};

/// The lockout counters and the user, read together (see [`Store::login_lookup`]).
#[derive(Debug)]
pub struct LoginLookup {
    pub user_failures: i64,
    pub ip_failures: i64,
    pub user: Option<UserRow>,
}

/// A login lookup waiting to share a read (see [`Store::login_lookup`]).
#[derive(Debug)]
pub(crate) struct QueuedLookup {
    username_key: String,
    user_key: String,
    ip_key: String,
    since: i64,
}

/// Lookups answered per read at most.
const LOOKUPS_PER_READ: usize = 32;

/// `n` lookups in one statement: a row per lookup whatever the user (the
/// counters, joined to the user if any), numbered by the lookup's place.
/// Its text depends on `n` alone, so each size is prepared once.
fn lookup_sql(n: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::from("WITH q(i, uk, ik, t, nk) AS (VALUES ");
    for i in 0..n {
        let p = i * 4;
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}(CAST({i} AS BIGINT), ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4);
    }
    sql.push_str(concat!(
        ") SELECT q.i AS i, \
           (SELECT COUNT(*) FROM auth_failures f WHERE f.key = q.uk AND f.at >= q.t) AS user_failures, \
           (SELECT COUNT(*) FROM auth_failures f WHERE f.key = q.ik AND f.at >= q.t) AS ip_failures, ",
        crate::user_columns!(),
        " FROM q LEFT JOIN users u ON u.username_key = q.nk"
    ));
    sql
}

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
    /// Write the user's last-login time (and, when `validated`, the
    /// validation time). The caller leaves it out when both are recent.
    pub user_times: bool,
    /// Lockout key whose failures the success clears, when it has any.
    pub clear_failures: Option<&'a str>,
    pub credential: GrantCredential<'a>,
    pub event: NewLoginEvent<'a>,
}

impl Store {
    /// What a login attempt needs to know before it asks a directory, in
    /// one read: the recent failures of the username's lockout key and of
    /// the client IP's key (at or after `since`), and the user of that
    /// username key, if any. On SQLite, concurrent lookups share a read
    /// (see [`crate::group`]).
    pub async fn login_lookup(&self, username_key: &str, user_key: &str, ip_key: &str, since: i64) -> Result<LoginLookup> {
        let q = QueuedLookup { username_key: username_key.into(), user_key: user_key.into(), ip_key: ip_key.into(), since };
        if self.backend == Backend::Postgres {
            return self.read_lookups(std::slice::from_ref(&q)).await.map(|mut found| found.swap_remove(0));
        }
        let store = self.clone();
        self.lookups
            .join(q, self.lookup_turn.clone().lock_owned(), LOOKUPS_PER_READ, move |batch| {
                let store = store.clone();
                async move { store.answer_lookups(batch).await }
            })
            .await
    }

    /// Read `batch` together and answer each lookup; should the read fail,
    /// each is read again on its own, so each gets its own answer.
    async fn answer_lookups(&self, batch: Vec<crate::group::Waiter<QueuedLookup, LoginLookup>>) {
        let (lookups, answers): (Vec<QueuedLookup>, Vec<_>) = batch.into_iter().unzip();
        match self.read_lookups(&lookups).await {
            Ok(found) => answers.into_iter().zip(found).for_each(|(a, l)| drop(a.send(Ok(l)))),
            Err(e) if lookups.len() == 1 => {
                if let Some(a) = answers.into_iter().next() {
                    let _ = a.send(Err(e));
                }
            }
            Err(_) => {
                for (q, a) in lookups.iter().zip(answers) {
                    let _ = a.send(self.read_lookups(std::slice::from_ref(q)).await.map(|mut found| found.swap_remove(0)));
                }
            }
        }
    }

    /// The lookups' answers, in their order.
    async fn read_lookups(&self, lookups: &[QueuedLookup]) -> Result<Vec<LoginLookup>> {
        let sql = lookup_sql(lookups.len());
        let mut query = sqlx::query(&sql);
        for q in lookups {
            query = query.bind(q.user_key.as_str()).bind(q.ip_key.as_str()).bind(q.since).bind(q.username_key.as_str());
        }
        let mut found: Vec<Option<LoginLookup>> = lookups.iter().map(|_| None).collect();
        for row in query.fetch_all(self.login_pool()).await? {
            let user = match row.try_get::<Option<i64>, _>("id")? {
                Some(_) => Some(<UserRow as sqlx::FromRow<'_, sqlx::any::AnyRow>>::from_row(&row)?),
                None => None,
            };
            let i: i64 = row.try_get("i")?;
            let lookup = LoginLookup { user_failures: row.try_get("user_failures")?, ip_failures: row.try_get("ip_failures")?, user };
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| found.get_mut(i)) {
                *slot = Some(lookup);
            }
        }
        found.into_iter().map(|l| l.ok_or_else(|| sqlx::Error::RowNotFound.into())).collect()
    }

    /// Write a successful login in one transaction: last login (and
    /// validation) time, the cleared failures, the session or token, and
    /// the login log's line.
    pub async fn grant_login(&self, g: &Grant<'_>) -> Result<()> {
        if self.backend == Backend::Sqlite {
            return self.grant_in_group(QueuedGrant::of(g)).await;
        }
        let mut tx = self.write_tx().await?;
        if g.user_times {
            let sql = if g.validated {
                "UPDATE users SET last_login_at = $1, validated_at = $1 WHERE id = $2"
            } else {
                "UPDATE users SET last_login_at = $1 WHERE id = $2"
            };
            sqlx::query(sql).bind(g.now).bind(g.user_id).execute(&mut *tx).await?;
        }
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

/// A successful login's writes on SQLite, owned, waiting for the next
/// group commit. [`QueuedGrant::bind`] binds its values as `$1`…`$14` of
/// the statements [`QueuedGrant::push_sql`] writes (renumbered for its
/// place in a batch).
#[derive(Debug)]
pub(crate) struct QueuedGrant {
    validated: bool,
    user_times: bool,
    clear: bool,
    /// `None`: a session; `Some(replace_same_name)`: an API token.
    token: Option<bool>,
    now: i64,
    user_id: i64,
    username: String,
    ip: String,
    user_agent: String,
    logged_name: String,
    method: String,
    token_hash: String,
    clear_key: String,
    name: String,
    prefix: String,
    expires_at: Option<i64>,
    success: i64,
    reason: String,
}

/// A queued grant and where its result goes.
pub(crate) type Waiting = crate::group::Waiter<QueuedGrant, ()>;

/// Grants written per transaction at most.
const GRANTS_PER_COMMIT: usize = 64;

/// Parameters per grant in a batch.
const GRANT_PARAMS: usize = 14;

impl QueuedGrant {
    fn of(g: &Grant<'_>) -> QueuedGrant {
        let (token, name, prefix, expires_at, token_hash) = match &g.credential {
            GrantCredential::Session { token_hash } => (None, "", "", None, *token_hash),
            GrantCredential::Token { name, token_hash, prefix, expires_at, replace_same_name } => {
                (Some(*replace_same_name), *name, *prefix, *expires_at, *token_hash)
            }
        };
        QueuedGrant {
            validated: g.validated,
            user_times: g.user_times,
            clear: g.clear_failures.is_some(),
            token,
            now: g.now,
            user_id: g.user_id,
            username: g.username.into(),
            ip: g.event.ip.into(),
            user_agent: g.event.user_agent.into(),
            logged_name: g.event.username.into(),
            method: g.event.method.into(),
            token_hash: token_hash.into(),
            clear_key: g.clear_failures.unwrap_or("").into(),
            name: name.into(),
            prefix: prefix.into(),
            expires_at,
            success: b(g.event.success),
            reason: g.event.reason.into(),
        }
    }

    /// What decides this grant's statements (not their values).
    fn shape(&self) -> (bool, bool, Option<bool>, bool) {
        (self.user_times, self.validated, self.token, self.clear)
    }

    /// This grant's statements, their parameters numbered after `base`.
    fn push_sql(&self, sql: &mut String, base: usize) {
        let mut push = |template: &str| renumber(sql, template, base);
        if self.user_times {
            push(if self.validated {
                "UPDATE users SET last_login_at = $1, validated_at = $1 WHERE id = $2;"
            } else {
                "UPDATE users SET last_login_at = $1 WHERE id = $2;"
            });
        }
        if self.clear {
            push("DELETE FROM auth_failures WHERE key = $9;");
        }
        match self.token {
            None => push(
                "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, ip, user_agent) VALUES ($8, $2, $1, $1, $4, $5);",
            ),
            Some(replace_same_name) => {
                if replace_same_name {
                    push("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND name = $10 AND revoked_at IS NULL;");
                }
                push(
                    "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_by, created_at, expires_at) \
                     VALUES ($2, $10, $8, $11, $3, $1, $12);",
                );
            }
        }
        push("INSERT INTO login_log (at, username, ip, user_agent, success, reason, method) VALUES ($1, $6, $4, $5, $13, $14, $7);");
    }

    fn bind<'q>(&'q self, q: sqlx::query::Query<'q, Any, AnyArguments<'q>>) -> sqlx::query::Query<'q, Any, AnyArguments<'q>> {
        q.bind(self.now)
            .bind(self.user_id)
            .bind(self.username.as_str())
            .bind(self.ip.as_str())
            .bind(self.user_agent.as_str())
            .bind(self.logged_name.as_str())
            .bind(self.method.as_str())
            .bind(self.token_hash.as_str())
            .bind(self.clear_key.as_str())
            .bind(self.name.as_str())
            .bind(self.prefix.as_str())
            .bind(self.expires_at)
            .bind(self.success)
            .bind(self.reason.as_str())
    }
}

/// Append `template` with every `$n` turned into `$(n + base)`.
fn renumber(out: &mut String, template: &str, base: usize) {
    if base == 0 {
        out.push_str(template);
        return;
    }
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: usize = rest[..digits].parse().unwrap_or(0);
        out.push_str(&(n + base).to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

impl Store {
    /// Group commit (SQLite): a login queues its writes, then waits for the
    /// write turn; whoever gets it writes every grant queued by then in one
    /// transaction, a single trip to SQLite's worker thread (see
    /// [`crate::group`]). Under load, one commit serves many logins instead
    /// of each waiting for its own.
    async fn grant_in_group(&self, g: QueuedGrant) -> Result<()> {
        let store = self.clone();
        self.grants
            .join(g, self.write_turn(), GRANTS_PER_COMMIT, move |batch| {
                let store = store.clone();
                async move { store.commit_grants(batch).await }
            })
            .await
    }

    /// Write `batch` in one transaction and answer each grant. Should the
    /// transaction fail, each grant is written again on its own, so one bad
    /// grant fails alone.
    async fn commit_grants(&self, mut batch: Vec<Waiting>) {
        // Grants of one shape together: the batch's text (a prepared
        // statement per text) depends on the shapes in order, so sorted
        // there are as many texts as mixes of shapes, not orders of them.
        batch.sort_by_key(|(g, _)| g.shape());
        let (grants, answers): (Vec<QueuedGrant>, Vec<_>) = batch.into_iter().unzip();
        match self.write_grants(&grants).await {
            Ok(()) => answers.into_iter().for_each(|a| drop(a.send(Ok(())))),
            Err(e) if grants.len() == 1 => {
                if let Some(a) = answers.into_iter().next() {
                    let _ = a.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, grants = grants.len(), "a group of logins failed to commit: writing them one by one");
                for (g, a) in grants.iter().zip(answers) {
                    let _ = a.send(self.write_grants(std::slice::from_ref(g)).await);
                }
            }
        }
    }

    /// One transaction, BEGIN to COMMIT, in one query: SQLite runs the
    /// statements of one query in turn on its worker thread.
    async fn write_grants(&self, grants: &[QueuedGrant]) -> Result<()> {
        let mut sql = String::from("BEGIN IMMEDIATE;");
        for (i, g) in grants.iter().enumerate() {
            g.push_sql(&mut sql, i * GRANT_PARAMS);
        }
        sql.push_str("COMMIT");
        // Kept prepared whatever the batch: its text depends only on its
        // size and its grants' shapes, and parsing a batch of dozens of
        // statements cost more than running it. The connection's statement
        // cache (least recently used out) bounds what is kept.
        let mut query = sqlx::query(&sql);
        for g in grants {
            query = g.bind(query);
        }
        let mut conn = self.login_pool().acquire().await?;
        if let Err(e) = query.execute(&mut *conn).await {
            // A statement failed inside the transaction: undo it here, or
            // never hand this connection out again.
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e.into());
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::QueuedLookup;
    use crate::testing::TestDb;
    use crate::{Backend, NewLoginEvent, NewUserRow};

    /// Several lookups in one read, on both backends: each answer is its
    /// own lookup's, in order, whoever the user and whatever the window.
    #[tokio::test]
    async fn one_read_answers_each_lookup_in_its_place() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let db = TestDb::new(backend).await;
            let store = &db.store;
            let user = NewUserRow {
                username: "Ann",
                username_key: "ann",
                name: "Ann",
                email: "",
                role: "user",
                source: "ldap",
                is_active: true,
                password_hash: None,
                must_change_password: false,
                external_id: None,
                organisation_ids: &[],
                now: 1,
            };
            let id = store.insert_user(&user).await.unwrap();
            for (keys, at) in [(&["user:ann", "ip:1"][..], 1), (&["user:ann"][..], 10), (&["user:ann", "ip:1"][..], 20)] {
                let event =
                    NewLoginEvent { at, username: "ann", ip: "1", user_agent: "", success: false, reason: "wrong password", method: "web" };
                store.deny_login(keys, &event).await.unwrap();
            }
            let q = |name: &str, ip: &str, since| QueuedLookup {
                username_key: name.into(),
                user_key: format!("user:{name}"),
                ip_key: ip.into(),
                since,
            };
            let found = store.read_lookups(&[q("ann", "ip:1", 5), q("nobody", "ip:1", 0), q("ann", "", 15)]).await.unwrap();
            let got: Vec<_> = found.iter().map(|l| (l.user_failures, l.ip_failures, l.user.as_ref().map(|u| u.id))).collect();
            assert_eq!(got, vec![(2, 1, Some(id)), (0, 2, None), (1, 0, Some(id))], "{backend:?}");
        }
    }

    #[test]
    fn renumber_shifts_every_parameter() {
        let mut out = String::from("BEGIN;");
        super::renumber(&mut out, "UPDATE t SET a = $1, b = $12 WHERE id = $2;", 14);
        assert_eq!(out, "BEGIN;UPDATE t SET a = $15, b = $26 WHERE id = $16;");
        let mut same = String::new();
        super::renumber(&mut same, "VALUES ($1, $14)", 0);
        assert_eq!(same, "VALUES ($1, $14)");
    }
}
