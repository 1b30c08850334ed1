//! Scheduled sync: settings, the schedule's compare-and-set claim, leases
//! between replicas, the plan's inputs, reports, directory groups and the
//! delta read's cookies. The runs and their items are in `runs.rs`, the
//! snapshot's rows in `staging.rs`.

use sqlx::{AnyConnection, Row};

use crate::{unique, Backend, Result, Store};

/// A user changed in a way a plan reads (role, pin, activation, names,
/// link): the snapshot rows linked to it are unsettled, so the next plan
/// reads them again, and a directory user is checked for being missing.
/// Called in the transaction of every such write: this, not a clock, is how
/// a plan under unchanged rules finds what a Bindery-side change affects.
pub(crate) async fn user_changed(conn: &mut AnyConnection, user_id: i64) -> Result<()> {
    users_changed(conn, &[user_id]).await
}

/// [`user_changed`] for many users (a sync's chunk of changes): two
/// statements per 500 users, not two per user.
pub(crate) async fn users_changed(conn: &mut AnyConnection, user_ids: &[i64]) -> Result<()> {
    for chunk in user_ids.chunks(500) {
        // ids are integers: safe to inline.
        let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        // `directory IN (…)`: the (directory, user_id) index serves it.
        sqlx::query(&format!(
            "UPDATE staged_users SET settled = 0 WHERE directory IN ('ldap', 'ldap_ha') AND user_id IN ({list}) AND settled <> 0"
        ))
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO missing_check (directory, user_id) SELECT source, id FROM users WHERE id IN ({list}) \
             AND source IN ('ldap', 'ldap_ha') ON CONFLICT (directory, user_id) DO UPDATE SET claimed = 0"
        ))
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The part of a plan key that is the linked user (`u`): any change to the
/// user bumps `updated_at`; the fields the rule reads are there too. Each
/// is a `%s` of [`PLAN_KEY`], after the row's three.
const USER_SIG: &str = "u.id, u.updated_at, u.is_active, u.dir_disabled, u.role_pinned, u.role";

/// A plan key's text: the row's content hash, the rules hash and the row's
/// problem, then the user's [`USER_SIG`] (`:` between its fields), or `-`
/// when no user is linked ([`PLAN_KEY_NO_USER`]). One `format` call gives
/// the same text, on both backends, as the chain of
/// `CAST(… AS TEXT) || ':' || …` it replaced (so keys stored before still
/// match), which cost SQLite about 15,000 instructions a row: a copy of
/// the text so far for each `||` (callgrind, Python's `sqlite3`).
const PLAN_KEY: &str = "'%s/%s/%s/%s:%s:%s:%s:%s:%s'";
/// [`PLAN_KEY`] of a row with no user.
const PLAN_KEY_NO_USER: &str = "'%s/%s/%s/-'";

/// The row's part of a plan key: `format` arguments after the pattern.
fn row_key_args(row: &str, rules: &str) -> String {
    format!("{row}.hash, CAST({rules} AS TEXT), {row}.problem")
}

/// A [`PlanRow`]'s columns before its plan key, in its field order, as
/// `(expression, name)` (`s`: the staged row, `u`: its user).
const PLAN_FIELDS: &[(&str, &str)] = &[
    ("s.id", "staged_id"),
    ("s.external_id", "external_id"),
    ("s.username", "username"),
    ("s.name", "name"),
    ("s.email", "email"),
    ("s.dir_state", "dir_state"),
    ("s.problem", "problem"),
    ("s.user_id", "user_id"),
    ("u.username", "user_username"),
    ("u.name", "user_name"),
    ("u.email", "user_email"),
    ("u.external_id", "user_external_id"),
    ("u.source", "user_source"),
    ("u.is_active", "user_active"),
    ("u.dir_disabled", "user_dir_disabled"),
    ("u.role", "user_role"),
    ("u.role_pinned", "user_role_pinned"),
    ("s.groups", "groups"),
    ("CAST(s.settled AS BIGINT)", "settled"),
];

/// The names of [`plan_cols`]' columns, in [`PlanRow`]'s field order.
fn plan_columns() -> Vec<&'static str> {
    PLAN_FIELDS.iter().map(|(_, name)| *name).chain(["plan_key"]).collect()
}

/// The columns of a [`PlanRow`], with the rules hash bound as `rules` (a
/// placeholder such as `$4`).
fn plan_cols(rules: &str) -> String {
    let fields = PLAN_FIELDS.iter().map(|(expr, name)| format!("{expr} AS {name}")).collect::<Vec<_>>().join(", ");
    format!("{fields}, {} AS plan_key", plan_key_joined("s", rules))
}

/// A staged row's plan key now (`row`, its user joined as `u`): its
/// content, the rules, its problem and its user's signature.
pub(crate) fn plan_key_joined(row: &str, rules: &str) -> String {
    let args = row_key_args(row, rules);
    format!("CASE WHEN u.id IS NULL THEN format({PLAN_KEY_NO_USER}, {args}) ELSE format({PLAN_KEY}, {args}, {USER_SIG}) END")
}

/// Whether a staged row's last plan key differs from its key now, with
/// the rules hash bound as `rules` (a placeholder such as `$4`).
fn plan_stale(rules: &str) -> String {
    format!("(s.plan_key IS NULL OR s.plan_key <> {})", plan_key_joined("s", rules))
}

/// The plan key of the staged row `row` (its columns `hash` and
/// `problem`; `staged_users` in an `UPDATE` of it) with its user the one
/// whose id is the SQL expression `user`.
pub(crate) fn plan_key_of(row: &str, rules: &str, user: &str) -> String {
    let args = row_key_args(row, rules);
    format!(
        "COALESCE((SELECT format({PLAN_KEY}, {args}, {USER_SIG}) FROM users u WHERE u.id = {user}), format({PLAN_KEY_NO_USER}, {args}))"
    )
}

/// A staged row's user: the one linked, else the one its change just
/// created (by the immutable id, as the status computation links it).
const LINKED_OR_CREATED: &str = "COALESCE(staged_users.user_id, (SELECT c.id FROM users c WHERE c.external_id = staged_users.external_id))";

/// Settle staged rows as they and their users are now, in the transaction
/// that applied their planned changes, so that no later change of their
/// users can be settled unseen. A row whose change created its user is
/// linked to it here (by the immutable id, as the status computation would
/// link it), so that the link does not unsettle it afterwards.
/// `staged_ids`: rows of one directory (one run's).
pub(crate) async fn settle_applied(conn: &mut AnyConnection, backend: Backend, rules: &str, staged_ids: &[i64]) -> Result<()> {
    // PostgreSQL pulls a `FROM` subquery up into the statement, and each
    // use of `v.uid` became the lookup again (four per row when the row
    // is not linked yet, as in a first sync): `OFFSET 0` keeps it a
    // subquery, evaluated once a row (11 ms instead of 14 ms for 500 rows).
    // On SQLite both forms measured the same.
    let fence = if backend == Backend::Postgres { " OFFSET 0" } else { "" };
    for chunk in staged_ids.chunks(1000) {
        // ids are integers: safe to inline.
        let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        // One write of each row, link and settle together: on PostgreSQL
        // every write of a row is a new version in each of its indexes.
        // The status too: the computation after the apply then finds it
        // right and writes nothing (on PostgreSQL a second write of every
        // applied row was a fifth of a first sync).
        // The user is found once per row (`v.uid`), not once per use of it
        // (four lookups by immutable id).
        sqlx::query(&format!(
            "UPDATE staged_users SET user_id = v.uid, settled = 1, plan_key = {}, status = {} \
             FROM (SELECT staged_users.id, {LINKED_OR_CREATED} AS uid FROM staged_users WHERE staged_users.id IN ({list}){fence}) v \
             WHERE staged_users.id = v.id",
            plan_key_of("staged_users", "$1", "v.uid"),
            crate::staging::status_case("staged_users", "v.uid")
        ))
        // A text of its own for each chunk: not kept prepared. sqlx keeps
        // a connection's last 100 statements prepared, and statements with
        // inlined ids are each new: a first sync's plan and apply filled
        // those caches with them (SQLite, in this process: the RSS growth of
        // a first sync of 100,000 users went from 58-72 MB to 24 MB once
        // none of them was kept).
        .persistent(false)
        .bind(rules)
        .execute(&mut *conn)
        .await?;
    }
    // The statuses changed: the import table's counts of an older version
    // are not used. A run's rows are all of one directory: one row names it
    // (reading the directory of every settled row took 2.2 ms a chunk on
    // PostgreSQL, 0.45 s of a first sync).
    if let Some(first) = staged_ids.first() {
        sqlx::query(
            "UPDATE staging_snapshots SET version = version + 1 WHERE directory = (SELECT s.directory FROM staged_users s WHERE s.id = $1)",
        )
        .bind(*first)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A staged entry with the Bindery user linked to it, if any: one input
/// of the sync plan.
/// Fields in the order of [`plan_columns`] (SQLite reads them from a JSON array).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct PlanRow {
    pub staged_id: i64,
    pub external_id: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub dir_state: String,
    pub problem: String,
    pub user_id: Option<i64>,
    pub user_username: Option<String>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub user_external_id: Option<String>,
    pub user_source: Option<String>,
    pub user_active: Option<i64>,
    pub user_dir_disabled: Option<i64>,
    pub user_role: Option<String>,
    pub user_role_pinned: Option<i64>,
    /// Group DNs, one per line.
    pub groups: String,
    /// Whether the row was settled when read (1) or is read again by the
    /// next plan anyway (0): a row planned a change is unsettled only if
    /// it was settled ([`Store::unsettle`]).
    pub settled: i64,
    /// The row's plan key as read: [`Store::settle_plan`] settles the row
    /// only if its key is still this one.
    pub plan_key: String,
}

/// A Bindery user of a directory whose entry the last enumeration did not see.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MissingUser {
    pub id: i64,
    pub username: String,
}

impl Store {
    // ----- settings and schedule -----------------------------------------

    pub async fn get_sync_settings(&self, directory: &str) -> Result<Option<(String, Option<i64>)>> {
        let row = sqlx::query("SELECT settings_json, next_run_at FROM sync_settings WHERE directory = $1")
            .bind(directory)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        })
    }

    pub async fn put_sync_settings(&self, directory: &str, json: &str, next_run_at: Option<i64>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO sync_settings (directory, settings_json, next_run_at, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (directory) DO UPDATE SET settings_json = excluded.settings_json, next_run_at = excluded.next_run_at, \
             updated_at = excluded.updated_at",
        )
        .bind(directory)
        .bind(json)
        .bind(next_run_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Directories whose schedule is due: `(directory, next_run_at)`.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT directory, next_run_at FROM sync_settings WHERE next_run_at IS NOT NULL AND next_run_at <= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Claim one firing of the schedule: moves `next_run_at` from `expected`
    /// to `next` only if nobody else did. Exactly one replica wins.
    pub async fn claim_schedule(&self, directory: &str, expected: i64, next: Option<i64>) -> Result<bool> {
        let r = sqlx::query("UPDATE sync_settings SET next_run_at = $1 WHERE directory = $2 AND next_run_at = $3")
            .bind(next)
            .bind(directory)
            .bind(expected)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // ----- leases --------------------------------------------------------

    /// Take the lease `name` for `holder` unless a live one is held by
    /// someone else. Atomic on both backends (one upsert).
    pub async fn acquire_lease(&self, name: &str, holder: &str, run_id: i64, now: i64, ttl_ms: i64) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        acquire_lease_in(&mut conn, name, holder, run_id, now, ttl_ms).await
    }

    /// Extend a lease this holder has; false when it was lost.
    pub async fn renew_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE sync_leases SET expires_at = $1 WHERE name = $2 AND holder = $3")
            .bind(now + ttl_ms)
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM sync_leases WHERE name = $1 AND holder = $2").bind(name).bind(holder).execute(&self.pool).await?;
        Ok(())
    }

    // ----- plan inputs ---------------------------------------------------

    /// Staged entries after `after` (by id) with their linked users, that
    /// need planning: every row but those whose last plan needed nothing (or
    /// was applied) under the same key — the row's content hash and
    /// problem, `rules` (a hash of the mapping, attribute map and policy the
    /// plan uses) and the linked user's state ([`USER_SIG`]).
    ///
    /// On SQLite the `|| ''` keeps the read on the id range: through the
    /// directory's index it sorted the whole snapshot for every chunk (4 s
    /// at 100,000 users). PostgreSQL takes the id range by itself, unless
    /// it is given that form: it then expects almost no row of the directory
    /// (a default selectivity) and, while a chunk's plan is made for its own
    /// values, read and sorted the whole snapshot for each of the first
    /// chunks (45-100 ms each at 100,000 rows, against 2-4 ms).
    pub async fn plan_rows(&self, directory: &str, rules: &str, after: i64, limit: i64) -> Result<Vec<PlanRow>> {
        let of_directory = match self.backend {
            Backend::Sqlite => "s.directory || '' = $1",
            Backend::Postgres => "s.directory = $1",
        };
        let inner = format!(
            "SELECT {} FROM staged_users s LEFT JOIN users u ON u.id = s.user_id \
             WHERE s.id > $2 AND {of_directory} AND {} ORDER BY s.id LIMIT $3",
            plan_cols("$4"),
            plan_stale("$4")
        );
        let json = crate::json_rows_sql(&inner, &plan_columns());
        let rows = crate::fetch_rows(&self.pool, self.backend, &inner, &json, |q| q.bind(directory).bind(after).bind(limit).bind(rules));
        Ok(in_order(rows.await?))
    }

    /// [`Store::plan_rows`] among the rows that can need it when the rules
    /// are those of the last plan: the unsettled ones (written since, a new
    /// problem or link, their user changed — [`user_changed`] — or a change
    /// still pending), read through a partial index; the rest of the
    /// snapshot is not read. Returns the rows after `after` that need
    /// planning and, when more candidates may follow, the last candidate id
    /// looked at (`None`: this read reached the last one, so a plan of a few
    /// changed rows reads once).
    pub async fn plan_rows_targeted(&self, directory: &str, rules: &str, after: i64, limit: i64) -> Result<(Vec<PlanRow>, Option<i64>)> {
        let ids: Vec<i64> =
            sqlx::query("SELECT id FROM staged_users WHERE directory = $1 AND settled = 0 AND id > $2 ORDER BY id LIMIT $3")
                .bind(directory)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
        let Some(last) = ids.last().copied() else { return Ok((Vec::new(), None)) };
        let next = (ids.len() as i64 >= limit).then_some(last);
        // ids are integers: safe to inline.
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let inner = format!(
            "SELECT {} FROM staged_users s LEFT JOIN users u ON u.id = s.user_id \
             WHERE s.id IN ({list}) AND s.directory = $1 AND {} ORDER BY s.id",
            plan_cols("$2"),
            plan_stale("$2")
        );
        let json = crate::json_rows_sql(&inner, &plan_columns());
        // (The ids make a text of its own: not kept prepared.)
        let rows = crate::fetch_rows(&self.pool, self.backend, &inner, &json, |q| q.persistent(false).bind(directory).bind(rules));
        Ok((in_order(rows.await?), next))
    }

    /// How many rows a targeted plan would look at: the unsettled ones.
    pub async fn count_unsettled(&self, directory: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM staged_users WHERE directory = $1 AND settled = 0")
            .bind(directory)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The rules hash of the directory's last plan.
    pub async fn plan_rules(&self, directory: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT plan_rules FROM staging_snapshots WHERE directory = $1").bind(directory).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    /// Record a finished plan: every row is settled under `rules`, or unsettled.
    pub async fn put_plan_rules(&self, directory: &str, rules: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO staging_snapshots (directory, plan_rules) VALUES ($1, $2) \
             ON CONFLICT (directory) DO UPDATE SET plan_rules = excluded.plan_rules",
        )
        .bind(directory)
        .bind(rules)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// These staged rows have a planned change that is not applied yet
    /// (held, a dry run, failed, a conflict): the next plan reads them again.
    pub async fn unsettle(&self, staged_ids: &[i64]) -> Result<()> {
        if staged_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for chunk in staged_ids.chunks(1000) {
            // ids are integers: safe to inline.
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            sqlx::query(&format!("UPDATE staged_users SET settled = 0 WHERE id IN ({list}) AND settled <> 0"))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Remember that these staged rows need nothing under `rules` (their
    /// plan found nothing to do): the next plan skips them until one of
    /// them changes. Each row comes with its plan key as the plan read it
    /// ([`PlanRow::plan_key`]); a row whose key changed since (its user was
    /// changed, its entry restaged while the plan ran) stays unsettled, so
    /// the next plan reads it again.
    pub async fn settle_plan(&self, rules: &str, rows: &[(i64, &str)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        const COLUMNS: [crate::Col; 2] = [crate::Col::Int("id"), crate::Col::Text("plan_key")];
        let mut tx = self.write_tx().await?;
        for chunk in rows.chunks(1000) {
            let mut batch = crate::batch::Batch::new(self.backend, &COLUMNS, chunk.len());
            for (id, key) in chunk {
                batch.push([crate::batch::Cell::Int(*id), crate::batch::Cell::Text(key)]);
            }
            let sql = format!(
                "UPDATE staged_users SET settled = 1, plan_key = v.plan_key FROM ({}) AS v \
                 WHERE staged_users.id = v.id AND {} = v.plan_key",
                batch.source(),
                plan_key_of("staged_users", &batch.param(1), "staged_users.user_id")
            );
            batch.bind(sqlx::query(&sql))?.bind(rules).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Claim the directory's queued missing-user checks for the plan that
    /// starts now: [`Store::reset_missing_checks`] deletes only these, so a
    /// check queued while the plan runs ([`user_changed`]) is kept.
    pub async fn claim_missing_checks(&self, directory: &str) -> Result<()> {
        sqlx::query("UPDATE missing_check SET claimed = 1 WHERE directory = $1 AND claimed = 0")
            .bind(directory)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`Store::missing_users`] among the users that can have become
    /// missing since the last plan under the same rules: those in
    /// `missing_check` (their row left the snapshot or may link elsewhere,
    /// they changed — [`user_changed`] —, or a disable is still pending).
    pub async fn missing_users_targeted(&self, directory: &str, source: &str) -> Result<Vec<MissingUser>> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.username FROM missing_check c JOIN users u ON u.id = c.user_id WHERE c.directory = $1 \
             AND u.source = $2 AND u.is_active = 1 \
             AND NOT EXISTS (SELECT 1 FROM staged_users s WHERE s.directory = $1 AND s.user_id = u.id) ORDER BY u.id",
        )
        .bind(directory)
        .bind(source)
        .fetch_all(&self.pool)
        .await?)
    }

    /// After a plan: the users left to check for being missing are those
    /// whose disable is pending (`pending`) and those queued since the plan
    /// claimed the queue ([`Store::claim_missing_checks`]); every other one
    /// was checked.
    pub async fn reset_missing_checks(&self, directory: &str, pending: &[i64]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM missing_check WHERE directory = $1 AND claimed = 1").bind(directory).execute(&mut *tx).await?;
        for chunk in pending.chunks(500) {
            // ids are integers: safe to inline.
            let values = chunk.iter().map(|id| format!("($1, {id})")).collect::<Vec<_>>().join(",");
            sqlx::query(&format!("INSERT INTO missing_check (directory, user_id) VALUES {values} ON CONFLICT DO NOTHING"))
                .bind(directory)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Active users of `source` that no staged entry of `directory` links to.
    pub async fn missing_users(&self, directory: &str, source: &str, after: i64, limit: i64) -> Result<Vec<MissingUser>> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.username FROM users u WHERE u.source = $2 AND u.is_active = 1 AND u.id > $3 \
             AND NOT EXISTS (SELECT 1 FROM staged_users s WHERE s.directory = $1 AND s.user_id = u.id) ORDER BY u.id LIMIT $4",
        )
        .bind(directory)
        .bind(source)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A report for a user, shown in the console.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    pub email_status: String,
}

impl Store {
    pub async fn insert_notification(&self, user_id: i64, subject: &str, body: &str, email_status: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO notifications (user_id, subject, body, created_at, email_status) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id)
            .bind(subject)
            .bind(body)
            .bind(now)
            .bind(email_status)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest reports for a user.
    pub async fn list_notifications(&self, user_id: i64, limit: i64) -> Result<Vec<NotificationRow>> {
        Ok(sqlx::query_as(
            "SELECT id, subject, body, created_at, email_status FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Staged entries linked to a user, with their group DNs (one per line).
    pub async fn staged_memberships(&self, directory: &str, after: i64, limit: i64) -> Result<Vec<(i64, i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, user_id, groups FROM staged_users WHERE directory = $1 AND id > $2 AND user_id IS NOT NULL \
             AND groups <> '' AND problem = '' ORDER BY id LIMIT $3",
        )
        .bind(directory)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Bindery groups made from a directory's groups: `(id, DN)`.
    pub async fn directory_groups(&self, source: &str) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT id, external_dn FROM user_groups WHERE source = $1 AND external_dn IS NOT NULL")
            .bind(source)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// A Bindery group for a directory group. When a group of that name
    /// exists already, the new one is named `name (source)`.
    pub async fn create_directory_group(&self, name: &str, source: &str, dn: &str, now: i64) -> Result<i64> {
        let mut last = None;
        for candidate in [name.to_string(), format!("{name} ({source})")] {
            let r = sqlx::query(
                "INSERT INTO user_groups (name, name_key, description, source, created_at, external_dn) VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id",
            )
            .bind(&candidate)
            .bind(candidate.to_lowercase())
            .bind(format!("Directory group {dn}"))
            .bind(source)
            .bind(now)
            .bind(dn)
            .fetch_one(&self.pool)
            .await
            .map_err(unique("group"));
            match r {
                Ok(row) => return Ok(row.try_get(0)?),
                Err(e) if e.is_unique_violation() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(crate::Error::Conflict("group")))
    }

    /// Make a group's members exactly `members`, in one transaction.
    pub async fn replace_group_members(&self, group_id: i64, members: &[i64]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(group_id).execute(&mut *tx).await?;
        let sql = format!(
            "INSERT INTO group_members (group_id, user_id) SELECT $1, j.id FROM ({}) j WHERE true ON CONFLICT DO NOTHING",
            crate::json_ids(self.backend, 2)
        );
        for chunk in members.chunks(5000) {
            sqlx::query(&sql).bind(group_id).bind(crate::to_json(chunk)?).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A stored delta cookie: `(search_ou, server, method, cookie)`.
pub type CookieRow = (String, String, String, String);

/// What Test connection detected for a directory's delta sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSupportRow {
    pub fingerprint: String,
    pub method: String,
    pub sees_deletions: bool,
    pub reason: String,
    pub server: String,
    pub detected_at: i64,
}

impl Store {
    // ----- delta sync -----------------------------------------------------

    /// The directory's delta cookies, one per search OU.
    pub async fn delta_cookies(&self, directory: &str) -> Result<Vec<CookieRow>> {
        let rows = sqlx::query("SELECT search_ou, server, method, cookie FROM delta_cookies WHERE directory = $1 ORDER BY search_ou")
            .bind(directory)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }

    /// Replace every cookie of the directory with `cookies` (`(search_ou,
    /// server, cookie)`), in one transaction.
    pub async fn put_delta_cookies(&self, directory: &str, method: &str, cookies: &[(String, String, String)], now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM delta_cookies WHERE directory = $1").bind(directory).execute(&mut *tx).await?;
        for (ou, server, cookie) in cookies {
            sqlx::query(
                "INSERT INTO delta_cookies (directory, search_ou, server, method, cookie, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (directory, search_ou) DO UPDATE SET server = excluded.server, method = excluded.method, \
                 cookie = excluded.cookie, updated_at = excluded.updated_at",
            )
            .bind(directory)
            .bind(ou)
            .bind(server)
            .bind(method)
            .bind(cookie)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Forget the directory's cookies: its next delta run is a full enumeration.
    pub async fn clear_delta_cookies(&self, directory: &str) -> Result<()> {
        sqlx::query("DELETE FROM delta_cookies WHERE directory = $1").bind(directory).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn put_delta_support(&self, directory: &str, s: &DeltaSupportRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO delta_support (directory, fingerprint, method, sees_deletions, reason, server, detected_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (directory) DO UPDATE SET fingerprint = excluded.fingerprint, \
             method = excluded.method, sees_deletions = excluded.sees_deletions, reason = excluded.reason, server = excluded.server, \
             detected_at = excluded.detected_at",
        )
        .bind(directory)
        .bind(&s.fingerprint)
        .bind(&s.method)
        .bind(s.sees_deletions as i64)
        .bind(&s.reason)
        .bind(&s.server)
        .bind(s.detected_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delta_support(&self, directory: &str) -> Result<Option<DeltaSupportRow>> {
        let row =
            sqlx::query("SELECT fingerprint, method, sees_deletions, reason, server, detected_at FROM delta_support WHERE directory = $1")
                .bind(directory)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => Some(DeltaSupportRow {
                fingerprint: r.try_get(0)?,
                method: r.try_get(1)?,
                sees_deletions: r.try_get::<i64, _>(2)? != 0,
                reason: r.try_get(3)?,
                server: r.try_get(4)?,
                detected_at: r.try_get(5)?,
            }),
            None => None,
        })
    }
}

/// [`Store::acquire_lease`] in the caller's transaction.
pub(crate) async fn acquire_lease_in(
    conn: &mut AnyConnection,
    name: &str,
    holder: &str,
    run_id: i64,
    now: i64,
    ttl_ms: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO sync_leases (name, holder, run_id, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, run_id = excluded.run_id, expires_at = excluded.expires_at \
         WHERE sync_leases.expires_at < $5 OR sync_leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(run_id)
    .bind(now + ttl_ms)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Plan rows in id order, however they were read (see [`crate::fetch_rows`]).
fn in_order(mut rows: Vec<PlanRow>) -> Vec<PlanRow> {
    rows.sort_by_key(|r| r.staged_id);
    rows
}
