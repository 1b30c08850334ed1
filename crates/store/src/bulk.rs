//! A first sync's bulk load: indexes of the snapshot are dropped while an
//! empty snapshot table is filled, and built once when the load is over.
//!
//! A first sync writes each row twice: inserted by the enumeration, then
//! settled with the user its apply created (link, status and plan key in
//! one write). On PostgreSQL a write of a row is a new entry in every index
//! of the table: ten here, four of them holding the search text, together
//! larger than the default `shared_buffers`. Loading 100,000 rows into the
//! indexed table and settling them took 3.3 s and 4 s in `psql`; without
//! the secondary indexes 0.3 s and 0.5 s, and building them afterwards
//! 1.7 s. The primary key and the unique `(directory, external_id)` stay:
//! the load reads and writes by them.
//!
//! The load starts only when no directory has a snapshot row, so no page
//! of anybody's import table loses its index. What the load drops is kept
//! in `bulk_dropped_indexes` in the transaction that drops it: whatever ends
//! the load (its enumeration once every row is in, else its run, a failed
//! run, the next start of any replica) builds exactly those indexes again.
//!
//! **Two steps.** Of the dropped indexes, those the run itself reads (the
//! user link and the partial indexes of unsettled rows and of rule
//! problems: the status computation, the plan, the apply) are built inside
//! the run, once its rows are in (PostgreSQL; SQLite keeps them). Those
//! only the import table's pages read ([`PAGE_INDEXES`]: the four sort
//! orders, each holding the search text, and the trigram search) are built
//! once the run has ended ([`Store::end_bulk_load`]), with the vacuum and
//! the whole statistics of what the run wrote: nothing the run decides
//! depends on them. At 100,000 users a PostgreSQL first sync went from
//! 4.29-4.46 s to 3.03-3.80 s (alternated runs), and a SQLite one, whose
//! one writer had spent the time on the sort indexes' entries (half of a
//! snapshot row's insert in `sqlite3`), from 1.72-1.79 s to 1.47-1.50 s.
//! Until then the pages sort and search without them, with the same
//! results ([`Store::search_index_ready`] for SQLite's search), and the
//! status computations group the values of the marked rows instead of
//! looking each up (`Store::compute_staged_status`, `Sharing::MarkedGrouped`).
//!
//! SQLite's trigram search index (`staged_search`, FTS5) is filled from the
//! snapshot in one statement: 100,000 rows written into it a trigger call
//! at a time cost 1.0-1.4 s more than the load without it in `sqlite3`, and
//! one statement fills it in 0.2-0.5 s. While the rows load, the background
//! checkpointer lets the write-ahead log grow rather than hold the load's
//! writes up to start it over (`WAL_PAUSE_PAGES_BULK`).

use sqlx::{AnyPool, Row};

use crate::{Backend, Result, Store};

/// Whether a bulk load is pending (`1`) or not (`0`), as an SQL expression
/// to read with a statement's other values ([`Store::bulk_load_pending`]).
pub(crate) const LOAD_PENDING: &str = "CASE WHEN EXISTS (SELECT 1 FROM bulk_dropped_indexes) THEN 1 ELSE 0 END";

/// The snapshot's indexes that only the import table's pages read: its
/// sort orders (each holding the search text) and its trigram search. A
/// bulk load builds them once its run has ended (see the module). Any
/// other index it dropped is built inside the run.
const PAGE_INDEXES: &[&str] = &[
    // (SQLite's index of usernames has the search text in its key;
    // PostgreSQL's, named for its id, holds it as an included column.)
    "staged_users_username",
    "staged_users_username_id",
    "staged_users_status",
    "staged_users_name",
    "staged_users_email",
    "staged_users_search_trgm",
];

impl Store {
    /// Start a bulk load when the snapshot table is empty: on PostgreSQL
    /// its secondary indexes are dropped, on SQLite the import table's own
    /// (its sort indexes and the trigger that fills the search index), and
    /// remembered. Returns whether it started. With
    /// any snapshot row: `false`, nothing done.
    pub async fn begin_bulk_load(&self) -> Result<bool> {
        if self.backend == Backend::Sqlite {
            return self.begin_search_load().await;
        }
        // Without a lock first: every enumeration asks, and a snapshot
        // with rows answers at once.
        let any: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM staged_users)").fetch_one(&self.pool).await?.try_get(0)?;
        if any {
            return Ok(false);
        }
        let mut tx = self.write_tx().await?;
        // The drop takes this lock anyway; taken first, nobody adds a row
        // between the check and the drop.
        sqlx::query("LOCK TABLE staged_users IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
        let any: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM staged_users)").fetch_one(&mut *tx).await?.try_get(0)?;
        if any {
            return Ok(false);
        }
        // Every index but those of a constraint (the primary key and the
        // unique immutable id), as its own definition says it.
        let rows = sqlx::query(
            "SELECT CAST(i.indexname AS TEXT), i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() AND i.tablename = 'staged_users' \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname) ORDER BY i.indexname",
        )
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            set_aside(&mut tx, &r.try_get::<String, _>(0)?, &r.try_get::<String, _>(1)?).await?;
        }
        // (The load's pages are filled whole. They were filled half while
        // each row was written a second time to settle it, so that the
        // write stayed on its page; a page now inserts each row settled
        // (`staging::linked_insert`), and in a whole bench run at 100,000
        // users none of the snapshot's 1,201 updates was heap-only: the
        // half-empty pages only doubled the heap (70 MB) that the index
        // builds and the vacuum read.)
        tx.commit().await?;
        Ok(!rows.is_empty())
    }

    /// End any bulk load: build every index it dropped, several at once
    /// (each on a connection of its own; building one takes a lock that
    /// lets the others build beside it), then forget them, and vacuum and
    /// analyse what the load wrote; on SQLite fill the search index and
    /// build the sort indexes, in one transaction. Cheap when no load is
    /// pending: one read. Returns whether it built any. A run that may
    /// have begun a load calls it once it has ended (see the module).
    pub async fn end_bulk_load(&self) -> Result<bool> {
        if self.backend == Backend::Sqlite {
            // Every run ends here: without a pending load, one read and
            // not the write turn.
            if self.search_index_ready().await? {
                return Ok(false);
            }
            let _turn = self.write_turn().await;
            let filled = fill_search_index(self.write_pool()).await;
            if filled.is_ok() {
                self.note_bulk_load(false);
            }
            return filled;
        }
        build_dropped_indexes(&self.pool, Builds::All).await
    }

    /// End a bulk load inside the run that began it, before the run's
    /// reads that need the snapshot's indexes (the status computation, the
    /// plan, the apply): PostgreSQL builds the indexes it dropped that the
    /// run reads, and analyses the snapshot. SQLite: nothing; its load
    /// dropped only what the import table's pages read. The rest comes
    /// once the run has ended ([`Store::end_bulk_load`]; see the module).
    pub async fn end_bulk_load_within_run(&self) -> Result<bool> {
        match self.backend {
            Backend::Sqlite => Ok(false),
            Backend::Postgres => build_dropped_indexes(&self.pool, Builds::RunsAnalysed).await,
        }
    }

    /// [`Store::end_bulk_load_within_run`] without its `ANALYZE` of the
    /// snapshot: for the enumeration that began the load, which ends it as
    /// soon as its rows are in and then refreshes the statistics of every
    /// table it wrote at once ([`Store::finish_staging`] with `refresh`).
    /// The status computation, the plan and the apply then read a snapshot
    /// with the indexes they use, analysed once.
    /// On SQLite its rows are in: the checkpointer may copy the log again.
    pub async fn end_bulk_load_unanalysed(&self) -> Result<bool> {
        match self.backend {
            Backend::Sqlite => {
                self.note_bulk_rows_loaded();
                Ok(false)
            }
            Backend::Postgres => build_dropped_indexes(&self.pool, Builds::Runs).await,
        }
    }

    /// SQLite: whether the trigram search index holds every row of the
    /// snapshot, that is, no bulk load is under way. While one is, the
    /// import table's searches read the search text instead. PostgreSQL:
    /// always (its searches are the same `LIKE` with the index or without).
    pub async fn search_index_ready(&self) -> Result<bool> {
        Ok(self.backend != Backend::Sqlite || !self.bulk_load_pending().await?)
    }

    /// Whether a bulk load has indexes (or, on SQLite, the search index's
    /// fill) still to come: until then the import table's pages sort and
    /// search without them, and the status computations group the
    /// snapshot rather than look names up in it.
    pub async fn bulk_load_pending(&self) -> Result<bool> {
        let pending: i64 = sqlx::query(&format!("SELECT {LOAD_PENDING}")).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(pending != 0)
    }

    /// SQLite's bulk load ([`Store::begin_bulk_load`]): into an empty
    /// snapshot table, the trigger that writes each new row into the
    /// search index and the sort indexes are dropped, and their
    /// definitions kept for the end.
    async fn begin_search_load(&self) -> Result<bool> {
        let any: i64 = sqlx::query("SELECT EXISTS (SELECT 1 FROM staged_users)").fetch_one(&self.pool).await?.try_get(0)?;
        if any != 0 {
            return Ok(false);
        }
        // The write lock is taken at BEGIN: nobody adds a row between this
        // check and the drop.
        let mut tx = self.write_tx().await?;
        let any: i64 = sqlx::query("SELECT EXISTS (SELECT 1 FROM staged_users)").fetch_one(&mut *tx).await?.try_get(0)?;
        let trigger: Option<String> = sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = $1")
            .bind(SEARCH_TRIGGER)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        // (No trigger: a load is under way already, and this one adds to it.)
        let Some(definition) = trigger.filter(|_| any == 0) else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO bulk_dropped_indexes (name, definition) VALUES ($1, $2)")
            .bind(SEARCH_TRIGGER)
            .bind(&definition)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TRIGGER {SEARCH_TRIGGER}")).execute(&mut *tx).await?;
        // And the import table's sort indexes: each holds the search text,
        // and they were half of the cost of a snapshot row's insert.
        let indexes =
            sqlx::query("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'staged_users' AND sql IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        for r in &indexes {
            let name: String = r.try_get(0)?;
            if PAGE_INDEXES.contains(&name.as_str()) {
                set_aside(&mut tx, &name, &r.try_get::<String, _>(1)?).await?;
            }
        }
        tx.commit().await?;
        self.note_bulk_load(true);
        Ok(true)
    }
}

/// An index's definition as the catalog wrote it (`CREATE INDEX name ON
/// …`), built only if no index has its name: another replica ending the
/// same load may have built it already. Any other definition (SQLite's
/// trigger, which exists only once its load has ended) as it is.
fn if_not_there(definition: &str) -> String {
    match definition.strip_prefix("CREATE INDEX ") {
        Some(rest) => format!("CREATE INDEX IF NOT EXISTS {rest}"),
        None => definition.to_string(),
    }
}

/// Inside a bulk load's first transaction: keep an index's definition for
/// the load's end, and drop the index.
async fn set_aside(tx: &mut crate::WriteTx, name: &str, definition: &str) -> Result<()> {
    sqlx::query("INSERT INTO bulk_dropped_indexes (name, definition) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(definition)
        .execute(&mut **tx)
        .await?;
    // Names come from the catalog: quoted as identifiers.
    sqlx::query(&format!("DROP INDEX IF EXISTS \"{}\"", name.replace('"', "\"\""))).execute(&mut **tx).await?;
    Ok(())
}

/// SQLite: the trigger that writes each new snapshot row into the search
/// index (migration `0009_staged_diff`).
const SEARCH_TRIGGER: &str = "staged_search_insert";

/// SQLite: end a bulk load: fill the search index with every row of the
/// snapshot and put the dropped trigger back, in one transaction; whether
/// one was under way. The index is emptied first: rows written during the
/// load were never added, and those a delete or an update of the load
/// touched are written again as they are now.
async fn fill_search_index(pool: &AnyPool) -> Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query("SELECT name, definition FROM bulk_dropped_indexes ORDER BY name").fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(false);
    }
    // The index reads its text from the snapshot (migration
    // `0021_search_external_content`): emptied by its own command. An
    // index from before that migration (a load a stopped process left,
    // ended before the migrations run) keeps its own copy, deleted as rows.
    let external: i64 = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE name = 'staged_search' AND sql LIKE '%content_rowid%'")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let empty = if external == 1 { "INSERT INTO staged_search (staged_search) VALUES ('delete-all')" } else { "DELETE FROM staged_search" };
    sqlx::query(empty).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO staged_search (rowid, search) SELECT id, search FROM staged_users").execute(&mut *tx).await?;
    for r in &rows {
        let definition: String = r.try_get(1)?;
        sqlx::query(&if_not_there(&definition)).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM bulk_dropped_indexes").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// A bulk load that a stopped process left, ended at the start of any
/// replica, before the migrations: one that changes an index of the
/// snapshot (or, on SQLite, its search trigger) finds it where it expects
/// it. Nothing when the table of dropped indexes does not exist yet.
pub(crate) async fn end_bulk_load_before_migrations(pool: &AnyPool, backend: Backend) -> Result<()> {
    if backend == Backend::Sqlite {
        let exists: i64 = sqlx::query("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bulk_dropped_indexes')")
            .fetch_one(pool)
            .await?
            .try_get(0)?;
        if exists == 1 {
            fill_search_index(pool).await?;
        }
        return Ok(());
    }
    let exists: bool = sqlx::query("SELECT to_regclass('bulk_dropped_indexes') IS NOT NULL").fetch_one(pool).await?.try_get(0)?;
    if exists {
        build_dropped_indexes(pool, Builds::All).await?;
    }
    Ok(())
}

/// Run `sql`, an index build, in a transaction of its own; a b-tree's
/// without parallel workers. The builds already run side by side, one per
/// index; each b-tree's build also started PostgreSQL's parallel workers
/// (two by default), which on a machine of two cores only added processes
/// to share them and sorted runs to merge: the eight builds of a first sync
/// at 100,000 users took 1.01-1.06 s and 1.41-1.51 CPU-s without them,
/// against 1.12-1.15 s and 1.59-1.63 CPU-s with them, alternated in
/// `psql`. The trigram index is the one the others wait for, on any
/// machine: its build keeps the server's setting (PostgreSQL 18 gives a
/// GIN build workers, which then have the cores the b-trees left).
async fn build(pool: &AnyPool, sql: &str) -> std::result::Result<(), sqlx::Error> {
    let begin = match sql.contains(" USING btree ") {
        true => "BEGIN; SET LOCAL max_parallel_maintenance_workers = 0",
        false => "BEGIN",
    };
    let mut tx = pool.begin_with(begin).await?;
    sqlx::query(sql).execute(&mut *tx).await?;
    tx.commit().await
}

/// Which of the indexes a bulk load dropped to build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Builds {
    /// Those the run reads, not the [`PAGE_INDEXES`].
    Runs,
    /// [`Builds::Runs`], then analyse the snapshot.
    RunsAnalysed,
    /// Every one left, then vacuum and analyse the tables a first sync
    /// writes (the run left that to this: `Store::refresh_statistics`; the
    /// statistics of the indexed expressions, `lower(email)` and
    /// `lower(name)`, are taken only once their index exists). The load
    /// is over, and its indexes forgotten, only then: whoever waits for it
    /// ([`Store::bulk_load_pending`]) finds the tables maintained too.
    All,
}

/// Build the indexes a bulk load dropped that `which` says; whether it
/// built any.
async fn build_dropped_indexes(pool: &AnyPool, which: Builds) -> Result<bool> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, definition FROM bulk_dropped_indexes ORDER BY name")
        .fetch_all(pool)
        .await?
        .into_iter()
        .filter(|(name, _): &(String, String)| which == Builds::All || !PAGE_INDEXES.contains(&name.as_str()))
        .collect();
    if rows.is_empty() {
        return Ok(false);
    }
    // A load begun by an earlier version filled its pages half: later
    // rows fill them whole again. Before the builds: this lock and theirs
    // exclude each other.
    sqlx::query("ALTER TABLE staged_users RESET (fillfactor)").execute(pool).await?;
    let mut builds = tokio::task::JoinSet::new();
    for (name, definition) in rows {
        let pool = pool.clone();
        builds.spawn(async move {
            // Another replica ending the same load may have built it already.
            let built = build(&pool, &if_not_there(&definition)).await;
            // Two builders of one name at once: the second fails on the
            // catalog's unique name although the index now exists.
            if let Err(e) = built {
                let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&pool).await?.try_get(0)?;
                if !exists {
                    return Err(crate::Error::Database(e));
                }
            }
            if which != Builds::All {
                sqlx::query("DELETE FROM bulk_dropped_indexes WHERE name = $1").bind(&name).execute(&pool).await?;
            }
            Ok::<String, crate::Error>(name)
        });
    }
    let mut built = Vec::new();
    let mut first_error = None;
    while let Some(done) = builds.join_next().await {
        let r = done.map_err(|e| crate::Error::Database(sqlx::Error::Protocol(format!("an index build stopped: {e}"))));
        match r.and_then(|r| r) {
            Ok(name) => built.push(name),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match which {
        Builds::Runs => {}
        Builds::RunsAnalysed => {
            sqlx::query("ANALYZE staged_users").execute(pool).await?;
        }
        Builds::All => {
            crate::staging::side_by_side(pool, &crate::staging::VACUUM_ANALYZE_BULK).await?;
            for name in &built {
                sqlx::query("DELETE FROM bulk_dropped_indexes WHERE name = $1").bind(name).execute(pool).await?;
            }
        }
    }
    Ok(true)
}
