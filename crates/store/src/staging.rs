//! The import table's staging snapshot and the sync runs.

use bindery_model::{RunKind, RunState};
use sqlx::Row;

use crate::{like_pattern, Result, Store};

/// A user as enumerated from the directory, to stage.
pub struct NewStaged<'a> {
    pub external_id: &'a str,
    pub dn: &'a str,
    pub username: &'a str,
    pub username_key: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub groups: &'a str,
    pub dir_state: &'a str,
    pub problem: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StagedRow {
    pub id: i64,
    pub external_id: String,
    pub dn: String,
    pub username: String,
    pub username_key: String,
    pub name: String,
    pub email: String,
    pub groups: String,
    pub dir_state: String,
    pub problem: String,
    pub status: String,
    pub user_id: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SyncRunRow {
    pub id: i64,
    pub directory: String,
    #[sqlx(try_from = "String")]
    pub kind: RunKind,
    #[sqlx(try_from = "String")]
    pub state: RunState,
    pub started_by: String,
    #[sqlx(try_from = "i64")]
    pub dry_run: crate::Flag,
    pub entries: i64,
    pub pages: i64,
    #[sqlx(try_from = "i64")]
    pub complete: crate::Flag,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: String,
    pub summary_json: String,
}

/// Which staged rows a page (or "select all matching") is about.
#[derive(Debug, Clone, Default)]
pub struct StagedFilter<'a> {
    /// `new`, `imported`, `changed`, `disabled`, `invalid`; `None`: all.
    pub status: Option<&'a str>,
    pub search: Option<&'a str>,
}

pub(crate) const STAGED_COLS: &str =
    "id, external_id, dn, username, username_key, name, email, groups, dir_state, problem, status, user_id";
pub(crate) const RUN_COLS: &str =
    "id, directory, kind, state, started_by, dry_run, entries, pages, complete, started_at, finished_at, error, summary_json";

impl StagedFilter<'_> {
    /// ` AND …` clauses after `directory = $1`, and their bound values from `$2`.
    fn clause(&self) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        if let Some(s) = self.status {
            binds.push(s.to_string());
            sql.push_str(&format!(" AND status = ${}", binds.len() + 1));
        }
        if let Some(q) = self.search.map(str::trim).filter(|q| !q.is_empty()) {
            binds.push(like_pattern(q));
            let n = binds.len() + 1;
            sql.push_str(&format!(" AND search LIKE ${n} ESCAPE '\\'"));
        }
        (sql, binds)
    }
}

impl Store {
    pub async fn clear_staged(&self, directory: &str) -> Result<()> {
        sqlx::query("DELETE FROM staged_users WHERE directory = $1").bind(directory).execute(&self.pool).await?;
        Ok(())
    }

    /// Stage a page of users in one transaction. An entry seen twice (search
    /// OUs that overlap) is kept once.
    pub async fn insert_staged(&self, directory: &str, rows: &[NewStaged<'_>]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        // What the table's search looks in: the fields, lower-cased, kept
        // apart by a character nobody types (one LIKE per row, not three).
        let search: Vec<String> =
            rows.iter().map(|r| format!("{}\u{1}{}\u{1}{}", r.username_key, r.name.to_lowercase(), r.email.to_lowercase())).collect();
        for (chunk, search) in rows.chunks(crate::rows_per_statement(10)).zip(search.chunks(crate::rows_per_statement(10))) {
            let mut sql = String::from(
                "INSERT INTO staged_users (directory, external_id, dn, username, username_key, name, email, groups, dir_state, problem, search) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 10 + 2;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("($1, {})", (b..b + 10).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")));
            }
            sql.push_str(" ON CONFLICT (directory, external_id) DO NOTHING");
            let mut q = sqlx::query(&sql).bind(directory);
            for (r, search) in chunk.iter().zip(search) {
                q = q
                    .bind(r.external_id)
                    .bind(r.dn)
                    .bind(r.username)
                    .bind(r.username_key)
                    .bind(r.name)
                    .bind(r.email)
                    .bind(r.groups)
                    .bind(r.dir_state)
                    .bind(r.problem)
                    .bind(search.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Link staged rows to local users (by immutable id, then by name) and
    /// compute every row's status, in a few set-based statements.
    pub async fn compute_staged_status(&self, directory: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let statements = [
            // A conflict resolved since (relinked, renamed, deleted) is computed anew.
            "UPDATE staged_users SET problem = '' WHERE directory = $1 AND problem LIKE 'conflict:%'",
            "UPDATE staged_users SET user_id = (SELECT u.id FROM users u WHERE u.external_id = staged_users.external_id) WHERE directory = $1",
            "UPDATE staged_users SET user_id = (SELECT u.id FROM users u WHERE u.username_key = staged_users.username_key) \
             WHERE directory = $1 AND user_id IS NULL",
            // A username held by a user linked to another immutable id is a
            // conflict (never an inheritance): an administrator decides.
            "UPDATE staged_users SET problem = 'conflict: the username belongs to a Bindery user linked to another directory entry (' || \
             (SELECT u.external_id FROM users u WHERE u.id = staged_users.user_id) || '); relink, rename or delete that account' \
             WHERE directory = $1 AND problem = '' AND external_id NOT LIKE 'dn:%' AND EXISTS \
             (SELECT 1 FROM users u WHERE u.id = staged_users.user_id AND u.source <> 'local' AND u.external_id IS NOT NULL \
              AND u.external_id NOT LIKE 'dn:%' AND u.external_id <> staged_users.external_id)",
            // Two directory entries whose usernames differ only in case never become two users.
            "UPDATE staged_users SET problem = 'another directory entry has the same username (compared case-insensitively)' \
             WHERE directory = $1 AND problem = '' AND username_key IN \
             (SELECT username_key FROM staged_users WHERE directory = $1 GROUP BY username_key HAVING COUNT(*) > 1)",
            "UPDATE staged_users SET problem = 'another directory entry has the same email' \
             WHERE directory = $1 AND problem = '' AND email <> '' AND lower(email) IN \
             (SELECT lower(email) FROM staged_users WHERE directory = $1 AND email <> '' GROUP BY lower(email) HAVING COUNT(*) > 1)",
            "UPDATE staged_users SET problem = 'a local user has this username' \
             WHERE directory = $1 AND problem = '' AND user_id IN (SELECT id FROM users WHERE source = 'local')",
            // A Bindery user other than the linked one already has the email.
            "UPDATE staged_users SET problem = 'another Bindery user has this email' \
             WHERE directory = $1 AND problem = '' AND email <> '' AND EXISTS \
             (SELECT 1 FROM users u WHERE lower(u.email) = lower(staged_users.email) AND u.id <> COALESCE(staged_users.user_id, -1))",
            "UPDATE staged_users SET status = CASE \
                WHEN problem LIKE 'conflict:%' THEN 'conflict' \
                WHEN problem <> '' THEN 'invalid' \
                WHEN dir_state = 'disabled' THEN 'disabled' \
                WHEN user_id IS NULL THEN 'new' \
                WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = staged_users.user_id AND \
                    (u.username <> staged_users.username OR u.name <> staged_users.name OR u.email <> staged_users.email \
                     OR u.external_id IS NULL OR u.external_id <> staged_users.external_id)) THEN 'changed' \
                ELSE 'imported' END \
             WHERE directory = $1",
        ];
        for s in statements {
            sqlx::query(s).bind(directory).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One page of the import table. `sort`: username | name | email | status.
    pub async fn list_staged(
        &self,
        directory: &str,
        filter: &StagedFilter<'_>,
        sort: &str,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<StagedRow>, i64)> {
        let (clause, binds) = filter.clause();
        let total = {
            let sql = format!("SELECT COUNT(*) FROM staged_users WHERE directory = $1{clause}");
            let mut q = sqlx::query(&sql).bind(directory);
            for b in &binds {
                q = q.bind(b.as_str());
            }
            q.fetch_one(&self.pool).await?.try_get::<i64, _>(0)?
        };
        // Each order has an index that yields it (`id` is the rowid that
        // ends every SQLite index), so a page never sorts the snapshot.
        let keys: &[&str] = match sort {
            "name" => &["lower(name)", "id"],
            "email" => &["lower(email)", "id"],
            "status" => &["status", "username_key", "id"],
            _ => &["username_key", "id"],
        };
        let dir = if descending { "DESC" } else { "ASC" };
        let order = keys.iter().map(|k| format!("{k} {dir}")).collect::<Vec<_>>().join(", ");
        let n = binds.len() + 2;
        let sql =
            format!("SELECT {STAGED_COLS} FROM staged_users WHERE directory = $1{clause} ORDER BY {order} LIMIT ${n} OFFSET ${}", n + 1);
        let mut q = sqlx::query_as::<_, StagedRow>(&sql).bind(directory);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows, total))
    }

    /// Every staged row matching `filter` ("select all matching"), or the given ids.
    pub async fn staged_rows(&self, directory: &str, filter: &StagedFilter<'_>, ids: Option<&[i64]>) -> Result<Vec<StagedRow>> {
        let (clause, binds) = filter.clause();
        let mut sql = format!("SELECT {STAGED_COLS} FROM staged_users WHERE directory = $1{clause}");
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(vec![]);
            }
            // ids are integers: safe to inline.
            sql.push_str(&format!(" AND id IN ({})", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")));
        }
        sql.push_str(" ORDER BY username_key");
        let mut q = sqlx::query_as::<_, StagedRow>(&sql).bind(directory);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Another user (not `except`) with this email, compared case-insensitively.
    pub async fn email_taken(&self, email: &str, except: Option<i64>) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM users WHERE lower(email) = $1 AND id <> $2")
            .bind(email.to_lowercase())
            .bind(except.unwrap_or(-1))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    // ----- runs ---------------------------------------------------------

    pub async fn start_run(&self, directory: &str, kind: RunKind, started_by: &str, dry_run: bool, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO sync_runs (directory, kind, state, started_by, dry_run, started_at) VALUES ($1, $2, 'running', $3, $4, $5) RETURNING id",
        )
        .bind(directory)
        .bind(kind.as_str())
        .bind(started_by)
        .bind(dry_run as i64)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn run_progress(&self, id: i64, entries: i64, pages: i64) -> Result<()> {
        sqlx::query("UPDATE sync_runs SET entries = $1, pages = $2 WHERE id = $3")
            .bind(entries)
            .bind(pages)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_run(&self, id: i64, state: RunState, complete: bool, error: &str, summary_json: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sync_runs SET state = $1, complete = $2, error = $3, summary_json = $4, finished_at = $5 WHERE id = $6")
            .bind(state.as_str())
            .bind(complete as i64)
            .bind(error)
            .bind(summary_json)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_run(&self, id: i64) -> Result<Option<SyncRunRow>> {
        Ok(sqlx::query_as(&format!("SELECT {RUN_COLS} FROM sync_runs WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?)
    }

    pub async fn latest_run(&self, directory: &str, kind: RunKind) -> Result<Option<SyncRunRow>> {
        Ok(sqlx::query_as(&format!("SELECT {RUN_COLS} FROM sync_runs WHERE directory = $1 AND kind = $2 ORDER BY id DESC LIMIT 1"))
            .bind(directory)
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// At start-up: runs a crash or restart left "running" are marked
    /// interrupted (nothing they half-did is trusted as complete).
    pub async fn interrupt_running_runs(&self, now: i64) -> Result<u64> {
        sqlx::query("DELETE FROM sync_leases").execute(&self.pool).await?;
        Ok(sqlx::query(
            "UPDATE sync_runs SET state = 'interrupted', finished_at = $1, error = 'the server stopped during the run' WHERE state = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
