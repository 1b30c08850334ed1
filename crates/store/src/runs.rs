//! Runs (every kind: `fetch`, `sync`, `delta`, `live`) and their items:
//! one row of `sync_runs` per enumeration, sync or live disable, and one
//! row of `sync_items` per planned change.

use bindery_model::{ItemOutcome, RunKind, RunState, SyncAction};
use sqlx::Row;

use crate::{Backend, Result, Store};

/// A run: an enumeration (`fetch`), a sync (`sync`, `delta`) or a live disable (`live`).
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

/// A planned change, as recorded.
#[derive(Debug, Clone)]
pub struct NewItem<'a> {
    pub action: SyncAction,
    pub username: &'a str,
    pub user_id: Option<i64>,
    pub staged_id: Option<i64>,
    pub reason: &'a str,
    pub outcome: ItemOutcome,
    /// The typed change (JSON) the store applies; empty for items that apply nothing.
    pub change_json: String,
}

/// A recorded item of a run (fields in the order of `ITEM_COLS`, which
/// the apply's reads take from a JSON array).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct ItemRow {
    pub id: i64,
    pub run_id: i64,
    #[sqlx(try_from = "String")]
    pub action: SyncAction,
    pub username: String,
    pub user_id: Option<i64>,
    pub staged_id: Option<i64>,
    pub reason: String,
    #[sqlx(try_from = "String")]
    pub outcome: ItemOutcome,
    pub error: String,
    pub change_json: String,
}

const RUN_COLS: &str =
    "id, directory, kind, state, started_by, dry_run, entries, pages, complete, started_at, finished_at, error, summary_json";
const ITEM_COLS: &str = "id, run_id, action, username, user_id, staged_id, reason, outcome, error, change_json";
/// The outcome of item `i` of its run `r`: `planned` up to the run's
/// `applied_through` reads as `applied` ([`items_applied`]).
macro_rules! item_outcome {
    () => {
        "CASE WHEN i.outcome = 'planned' AND i.id <= r.applied_through THEN 'applied' ELSE i.outcome END"
    };
}

/// [`ITEM_COLS`] of `sync_items i` with its run's `applied_through` as `r`
/// ([`ITEMS_OF_RUN`]): an item still `planned` up to it was applied
/// ([`items_applied`]).
const ITEM_SELECT: &str = concat!(
    "i.id, i.run_id, i.action, i.username, i.user_id, i.staged_id, i.reason, ",
    item_outcome!(),
    " AS outcome, i.error, i.change_json"
);
/// The items of run `$1`, each with its run's `applied_through`.
const ITEMS_OF_RUN: &str = "sync_items i CROSS JOIN (SELECT applied_through FROM sync_runs WHERE id = $1) r WHERE i.run_id = $1";

impl Store {
    pub async fn start_run(&self, directory: &str, kind: RunKind, started_by: &str, dry_run: bool, now: i64) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        insert_run(&mut conn, directory, kind, started_by, dry_run, now).await
    }

    /// Take the lease `name` for `holder` (as [`Store::acquire_lease`]) and
    /// record a new run holding it, in one transaction: the run's id, or
    /// `None` (and no run) when another holder has the lease.
    pub async fn start_leased_run(
        &self,
        lease: (&str, &str, i64),
        directory: &str,
        kind: RunKind,
        started_by: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<Option<i64>> {
        let (name, holder, ttl_ms) = lease;
        let mut tx = self.write_tx().await?;
        if !crate::sync::acquire_lease_in(&mut tx, name, holder, 0, now, ttl_ms).await? {
            return Ok(None);
        }
        let id = insert_run(&mut tx, directory, kind, started_by, dry_run, now).await?;
        sqlx::query("UPDATE sync_leases SET run_id = $1 WHERE name = $2 AND holder = $3")
            .bind(id)
            .bind(name)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    pub async fn run_progress(&self, id: i64, entries: i64, pages: i64) -> Result<()> {
        // On SQLite in its turn among this process's writers: the pages of
        // the enumeration it reports on hold the write lock one after the
        // other, and outside the turn the update slept in SQLite's busy
        // handler (about 330 ms an update with three pages stored at once).
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE sync_runs SET entries = $1, pages = $2 WHERE id = $3")
            .bind(entries)
            .bind(pages)
            .bind(id)
            .execute(self.write_pool())
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
        // Not the live streams' leases: another replica may hold one now, and
        // one this process held expires within seconds by itself.
        sqlx::query("DELETE FROM sync_leases WHERE name NOT LIKE 'live:%'").execute(&self.pool).await?;
        Ok(sqlx::query(
            "UPDATE sync_runs SET state = 'interrupted', finished_at = $1, error = 'the server stopped during the run' WHERE state = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Runs left "running" by a process that is gone (its lease expired, or
    /// it never took one) become interrupted. Safe with live replicas.
    pub async fn interrupt_orphaned_runs(&self, now: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE sync_runs SET state = 'interrupted', finished_at = $1, error = 'the server stopped during the run' \
             WHERE state = 'running' AND started_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM sync_leases l WHERE l.run_id = sync_runs.id AND l.expires_at >= $1)",
        )
        .bind(now)
        // A run gets its lease right after its row is written: leave it a moment.
        .bind(now - 30_000)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn list_runs(&self, kind: RunKind, limit: i64, offset: i64) -> Result<(Vec<SyncRunRow>, i64)> {
        let total: i64 =
            sqlx::query("SELECT COUNT(*) FROM sync_runs WHERE kind = $1").bind(kind.as_str()).fetch_one(&self.pool).await?.try_get(0)?;
        let rows = sqlx::query_as(&format!("SELECT {RUN_COLS} FROM sync_runs WHERE kind = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"))
            .bind(kind.as_str())
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok((rows, total))
    }

    /// The run that last filled a directory's staging snapshot (any kind).
    pub async fn latest_staging_run(&self, directory: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(id) FROM sync_runs WHERE directory = $1").bind(directory).fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn set_run_state(&self, id: i64, from: RunState, to: RunState) -> Result<bool> {
        let r = sqlx::query("UPDATE sync_runs SET state = $1 WHERE id = $2 AND state = $3")
            .bind(to.as_str())
            .bind(id)
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// When the last complete full sync of the directory started (Unix ms).
    ///
    /// Read from the newest run back (the index of the directory's runs by
    /// id), stopping at the first complete full one: a delta mode's runs
    /// between two full ones are all it walks. Every delta run asks, and
    /// runs are kept: `MAX(started_at)` over every run of the directory
    /// grew with each run (a delta a minute is half a million a year).
    pub async fn last_complete_full_sync(&self, directory: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT started_at FROM sync_runs WHERE directory = $1 AND kind = 'sync' AND complete = 1 ORDER BY id DESC LIMIT 1",
        )
        .bind(directory)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// The directory's run (of any kind) just before run `id`.
    pub async fn previous_run(&self, directory: &str, id: i64) -> Result<Option<SyncRunRow>> {
        Ok(sqlx::query_as(&format!("SELECT {RUN_COLS} FROM sync_runs WHERE directory = $1 AND id < $2 ORDER BY id DESC LIMIT 1"))
            .bind(directory)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sync runs, full and delta, and the live stream's disables, newest first.
    pub async fn list_sync_runs(&self, limit: i64, offset: i64) -> Result<(Vec<SyncRunRow>, i64)> {
        let total: i64 = sqlx::query("SELECT COUNT(*) FROM sync_runs WHERE kind IN ('sync', 'delta', 'live')")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let rows = sqlx::query_as(&format!(
            "SELECT {RUN_COLS} FROM sync_runs WHERE kind IN ('sync', 'delta', 'live') ORDER BY id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows, total))
    }

    /// A delta run that fell back to a full enumeration becomes a full run.
    pub async fn set_run_kind(&self, id: i64, kind: RunKind) -> Result<()> {
        sqlx::query("UPDATE sync_runs SET kind = $1 WHERE id = $2").bind(kind.as_str()).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    // ----- items ---------------------------------------------------------

    pub async fn insert_items(&self, run_id: i64, items: &[NewItem<'_>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        insert_items_in(&mut tx, self.backend, run_id, items).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Planned items after `after` (by id), in order.
    pub async fn planned_items(&self, run_id: i64, after: i64, limit: i64) -> Result<Vec<ItemRow>> {
        // (Those up to the run's `applied_through` were applied.) One lower
        // bound: of two, SQLite's index search took `$2` and walked every
        // item from there (a first sync's 100,000 applied ones, 8 ms).
        let greatest = match self.backend {
            Backend::Sqlite => "max",
            Backend::Postgres => "GREATEST",
        };
        let inner = format!(
            "SELECT {ITEM_COLS} FROM sync_items WHERE run_id = $1 \
             AND id > {greatest}($2, (SELECT applied_through FROM sync_runs WHERE id = $1)) AND outcome = 'planned' ORDER BY id LIMIT $3"
        );
        // 500 items a read, 200 reads in a first sync.
        let json = crate::json_rows_sql(&inner, &ITEM_COLS.split(", ").collect::<Vec<_>>());
        let mut items: Vec<ItemRow> =
            crate::fetch_rows(&self.pool, self.backend, &inner, &json, |q| q.bind(run_id).bind(after).bind(limit)).await?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    /// A page of a run's items; `action`/`outcome` filter when given.
    pub async fn list_items(&self, run_id: i64, action: Option<SyncAction>, limit: i64, offset: i64) -> Result<(Vec<ItemRow>, i64)> {
        // No `($2 = '' OR action = $2)`: a prepared statement's generic plan
        // cannot tell which side holds, and walked every run's items in id
        // order (70 ms a page at 100,000 items on PostgreSQL). Each form has
        // its own statement, served by the (run_id, id) index.
        let filter = if action.is_some() { " AND i.action = $2" } else { "" };
        let count = format!("SELECT COUNT(*) FROM sync_items i WHERE i.run_id = $1{filter}");
        let mut q = sqlx::query(&count).bind(run_id);
        if let Some(a) = action {
            q = q.bind(a.as_str());
        }
        let total: i64 = q.fetch_one(&self.pool).await?.try_get(0)?;
        let (l, o) = if action.is_some() { ("$3", "$4") } else { ("$2", "$3") };
        let page = format!("SELECT {ITEM_SELECT} FROM {ITEMS_OF_RUN}{filter} ORDER BY i.id LIMIT {l} OFFSET {o}");
        let mut q = sqlx::query_as(&page).bind(run_id);
        if let Some(a) = action {
            q = q.bind(a.as_str());
        }
        let rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows, total))
    }

    /// `(action, outcome, count)` of a run's items.
    pub async fn item_counts(&self, run_id: i64) -> Result<Vec<(String, String, i64)>> {
        let sql = format!("SELECT i.action, {}, COUNT(*) FROM {ITEMS_OF_RUN} GROUP BY 1, 2", item_outcome!());
        let rows = sqlx::query(&sql).bind(run_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    pub async fn set_item_failed(&self, id: i64, error: &str) -> Result<()> {
        sqlx::query("UPDATE sync_items SET outcome = 'failed', error = $1 WHERE id = $2").bind(error).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Every planned item of a run gets `outcome` (a rejected run).
    pub async fn close_planned_items(&self, run_id: i64, outcome: ItemOutcome) -> Result<()> {
        sqlx::query(
            "UPDATE sync_items SET outcome = $1 WHERE run_id = $2 AND outcome = 'planned' \
             AND id > (SELECT applied_through FROM sync_runs WHERE id = $2)",
        )
        .bind(outcome.as_str())
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Record items inside the caller's transaction ([`Store::insert_items`]),
/// 1,000 a statement (`crate::batch`).
pub(crate) async fn insert_items_in(tx: &mut crate::WriteTx, backend: Backend, run_id: i64, items: &[NewItem<'_>]) -> Result<()> {
    use crate::batch::Cell;
    use crate::Col::{Int, Text};
    const COLUMNS: [crate::Col; 7] =
        [Text("action"), Text("username"), Int("user_id"), Int("staged_id"), Text("reason"), Text("outcome"), Text("change_json")];
    for chunk in items.chunks(1000) {
        let mut batch = crate::batch::Batch::new(backend, &COLUMNS, chunk.len());
        for it in chunk {
            batch.push([
                Cell::Text(it.action.as_str()),
                Cell::Text(it.username),
                it.user_id.into(),
                it.staged_id.into(),
                Cell::Text(it.reason),
                Cell::Text(it.outcome.as_str()),
                Cell::Text(&it.change_json),
            ]);
        }
        let sql = format!(
            "INSERT INTO sync_items (run_id, action, username, user_id, staged_id, reason, outcome, change_json) \
             SELECT {}, i.action, i.username, i.user_id, i.staged_id, i.reason, i.outcome, i.change_json FROM ({}) i",
            batch.param(1),
            batch.source()
        );
        batch.bind(sqlx::query(&sql))?.bind(run_id).execute(&mut **tx).await?;
    }
    Ok(())
}

/// A new run's row, `running`; its id.
async fn insert_run(
    conn: &mut sqlx::AnyConnection,
    directory: &str,
    kind: RunKind,
    started_by: &str,
    dry_run: bool,
    now: i64,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO sync_runs (directory, kind, state, started_by, dry_run, started_at) VALUES ($1, $2, 'running', $3, $4, $5) RETURNING id",
    )
    .bind(directory)
    .bind(kind.as_str())
    .bind(started_by)
    .bind(dry_run as i64)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// In the transaction that applied them: every item of `run` up to
/// `through` that is still `planned` was applied. The apply takes the
/// planned items in id order and records each that fails as `failed`
/// before it goes on, so that is each applied one. One write of the run
/// instead of one of each item (100,000 in a first sync); the reads give
/// them the outcome `applied` (`ITEM_SELECT`).
pub(crate) async fn items_applied(conn: &mut sqlx::AnyConnection, run: i64, through: i64) -> Result<()> {
    sqlx::query("UPDATE sync_runs SET applied_through = $2 WHERE id = $1 AND applied_through < $2")
        .bind(run)
        .bind(through)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
