//! Persistence for Bindery: one sqlx [`AnyPool`] over embedded SQLite (the
//! default) or PostgreSQL (several replicas sharing state), chosen by the
//! database URL at run time.
//!
//! All SQL of the project lives in this crate. Queries are written once in
//! the dialect both backends accept (`$1` placeholders, `RETURNING`, `LIMIT
//! .. OFFSET`); DDL differs, so each backend has its own migrations folder.
//! Timestamps are Unix milliseconds and booleans 0/1 integers so that every
//! column decodes through the Any driver identically on both backends.

mod batch;
mod bulk;
mod first_load;
mod group;
mod identity;
mod keys;
mod live;
mod login;
mod logs;
mod rows;
mod runs;
mod staging;
mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, ConnectOptions, Row};

tokio::task_local! {
    /// Set while a sync run's job runs ([`Store::within_run`]).
    static IN_RUN: ();
}

/// PostgreSQL: a write transaction whose commit does not wait for the
/// flush of the write-ahead log (one round trip for both statements).
const BEGIN_UNFLUSHED: &str = "BEGIN; SET LOCAL synchronous_commit = off";

pub use first_load::{KeyHasher, KeyHashing, LoadedValues, ValueHashes};
pub use identity::{Activation, Applied, Change, NewAccount, OrgSource, Update};
pub use live::LiveRow;
pub use login::{Grant, GrantCredential, LoginLookup};
pub(crate) use logs::LogBind;
pub use logs::LogFilter;
pub use rows::*;
pub use runs::{ItemRow, NewItem, SyncRunRow};
pub use staging::{stable_hash, NewStaged, StagedFilter, StagedPage, StagedRow};
pub use sync::{CookieRow, DeltaSupportRow, MissingUser, NotificationRow, PlanRow};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:… or postgres://…)")]
    UnsupportedUrl,
    #[error("{0} already exists")]
    Conflict(&'static str),
}

impl Error {
    /// True when the error is a violated UNIQUE constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            Error::Conflict(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer: this process's write transactions take turns
    /// here instead of inside SQLite, whose busy handler sleeps in steps of
    /// 1, 2, 5, 10… ms and turned lock contention into a 60 ms p99 at 32
    /// concurrent logins. `None` on PostgreSQL (row locks, many writers).
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// SQLite: one connection of its own for the login path's lookups and
    /// grants. A connection drops its whole page cache whenever another
    /// connection has written since its last read, so with the grants
    /// written on one connection and the lookups read on others, every
    /// lookup re-read its pages from the file; on one connection, its own
    /// writes keep its cache warm. `None` on PostgreSQL.
    login_lane: Option<AnyPool>,
    /// SQLite: the one connection that writes in this process's write turn
    /// ([`Store::write_tx`] and the other writes in the turn). A connection
    /// drops its whole page cache whenever another one has written since
    /// its last transaction: with the turn's writes spread over the pool,
    /// each of a first sync's page transactions read every page it wrote
    /// to (the right edges of some twenty b-trees) from the file again,
    /// and prepared its statements again on each connection. Inserting
    /// 100,000 snapshot rows a thousand a transaction took 0.97-0.98 s
    /// alternating between two connections against 0.75-0.79 s on one
    /// (Python's `sqlite3`, three runs each). `None` on PostgreSQL.
    writer: Option<AnyPool>,
    /// Successful logins waiting for their group commit (SQLite).
    grants: group::Group<login::QueuedGrant, ()>,
    /// Login lookups waiting to share a read (SQLite).
    lookups: group::Group<login::QueuedLookup, login::LoginLookup>,
    /// The read turn of the login lookups (SQLite): one read at a time,
    /// and every lookup that arrives meanwhile goes in the next one.
    lookup_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// SQLite: the connection that checkpoints the write-ahead log in the
    /// background (see [`checkpoints`]); alive while any clone of this
    /// store is. `None` on PostgreSQL.
    checkpointer: Option<std::sync::Arc<Checkpointer>>,
    /// The import table's "Total N" per directory and filter, with the
    /// snapshot version it was counted at (see [`staging::PageCounts`]).
    page_counts: staging::PageCounts,
}

/// How often the background checkpointer moves the write-ahead log into the
/// database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The background checkpointer's connection; dropping it (with the last
/// clone of the store) ends the checkpoints.
struct Checkpointer {
    pool: AnyPool,
    stop: tokio::sync::watch::Sender<()>,
    /// A bulk load's times ([`Store::begin_bulk_load`]).
    bulk: std::sync::Arc<BulkClock>,
}

/// When a bulk load began and until when it counts as under way
/// (milliseconds since the epoch; 0: none), for the checkpointer.
#[derive(Default)]
struct BulkClock {
    /// See [`WAL_PAUSE_PAGES_BULK`].
    until: std::sync::atomic::AtomicU64,
    /// See [`BULK_CHECKPOINT_HOLD`].
    since: std::sync::atomic::AtomicU64,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Past this many pages (4 KiB each) in the write-ahead log, the
/// checkpointer pauses this process's writers for one catch-up checkpoint.
const WAL_PAUSE_PAGES: i64 = 4096;

/// [`WAL_PAUSE_PAGES`] while a first sync's bulk load is under way (256 MiB
/// of log). The load writes the log at about 90 MB a second, and each
/// catch-up checkpoint held its writes up for 25-35 ms, five times in a
/// first sync of 100,000 users; with this limit none comes before the load
/// ends, which measured 2.09 / 2.18 s against 2.28 / 2.26 s, alternated.
/// The log then grows to about 180 MB at 100,000 users (the passive
/// checkpoints copy it into the database file once the load has ended, or
/// meanwhile after [`BULK_CHECKPOINT_HOLD`]). The
/// limit stays [`BULK_AFTERGLOW`] past the load's end: the catch-up that
/// starts the log over (0.09 s after a load, which blocks every writer)
/// then comes after the rest of the first sync (its status computation,
/// plan and groups), not in the middle of it; the log is cut back to
/// `journal_size_limit` then.
const WAL_PAUSE_PAGES_BULK: i64 = 65536;

/// How long past its end a bulk load still counts for the checkpointer.
const BULK_AFTERGLOW: Duration = Duration::from_secs(3);

/// For this long from its start, while a bulk load is under way, the
/// checkpointer leaves the write-ahead log alone. Its passive checkpoints
/// ran on the second of two cores beside the load's one writer, every
/// 250 ms, 30-45 ms each at 100,000 users, copying index pages that the
/// next pages wrote again: without them a first sync took 1.31-1.38 s
/// against 1.36-1.51 s, five alternated pairs. The log is copied once the
/// load's rows are in (passive checkpoints again, beside the rest of the
/// run and the search index's fill, then a catch-up if still past
/// [`WAL_PAUSE_PAGES_BULK`]). Past this time (a load of millions of
/// entries) the checkpoints resume, so that the log cannot grow without
/// bound, for instance if a load's end failed and nothing ended it yet.
const BULK_CHECKPOINT_HOLD: Duration = Duration::from_secs(60);

/// Milliseconds since the Unix epoch (the checkpointer's clock).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Checkpoint the write-ahead log every [`CHECKPOINT_EVERY`] until `stop`
/// fires. A checkpoint syncs the database file to disk, which took up to
/// seconds on a busy virtual disk: left to SQLite (every 1,000 pages, by
/// whichever connection commits), it stalled the login path's connection
/// and every login queued behind it. Here it runs on a connection of its
/// own, PASSIVE: it never waits for readers or the writer, nor they for it.
///
/// The log starts over only when a write begins with all of it already
/// checkpointed, which steady writes never let happen (the log grew by
/// 35 MB a second under the login benchmark); so once it passes
/// [`WAL_PAUSE_PAGES`], one RESTART checkpoint runs in the write turn
/// (`gate`): it copies only what came in since the last one (a few
/// milliseconds), and the next write starts the log over.
async fn checkpoints(
    pool: AnyPool,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    bulk: std::sync::Arc<BulkClock>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    async fn checkpoint(conn: &mut sqlx::AnyConnection, mode: &str) -> std::result::Result<i64, sqlx::Error> {
        let row = sqlx::query(mode).fetch_one(conn).await?;
        // (busy, pages in the log, pages checkpointed)
        row.try_get::<i64, _>(1)
    }
    async fn turn(pool: &AnyPool, gate: &tokio::sync::Mutex<()>, pause: i64) -> std::result::Result<(), sqlx::Error> {
        let mut conn = pool.acquire().await?;
        if checkpoint(&mut conn, "PRAGMA wal_checkpoint(PASSIVE)").await? > pause {
            let _turn = gate.lock().await;
            // Readers are waited for briefly (a long one, e.g. an export,
            // would hold the writers up): the log starts over next time.
            sqlx::query("PRAGMA busy_timeout = 20").execute(&mut *conn).await?;
            let restarted = checkpoint(&mut conn, "PRAGMA wal_checkpoint(RESTART)").await;
            sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
            restarted?;
        }
        Ok(())
    }
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let (until, since) = (bulk.until.load(std::sync::atomic::Ordering::Relaxed), bulk.since.load(std::sync::atomic::Ordering::Relaxed));
        let now = epoch_ms();
        if since != 0 && now.saturating_sub(since) < BULK_CHECKPOINT_HOLD.as_millis() as u64 {
            continue;
        }
        let pause = match now < until {
            true => WAL_PAUSE_PAGES_BULK,
            false => WAL_PAUSE_PAGES,
        };
        if let Err(e) = turn(&pool, &gate, pause).await {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
    }
    pool.close().await;
}

/// A write transaction; on SQLite it also holds this process's write turn
/// until it is committed or dropped (rolled back).
pub(crate) struct WriteTx {
    // Declared first, dropped first: the rollback of an abandoned
    // transaction is queued before the turn passes on.
    tx: sqlx::Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The database it writes to.
    pub(crate) backend: Backend,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// Escape `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
fn like_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The ids of the JSON array bound as `$n`, as a subquery with one column,
/// `id`. A list of ids is one parameter and one statement text whatever
/// its length: inlined, each list was a statement of its own to parse and
/// plan (and, on SQLite, a prepared statement that pushed a useful one out
/// of the connection's cache).
pub(crate) fn json_ids(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value AS id FROM json_each(${n})"),
        Backend::Postgres => format!("SELECT value::bigint AS id FROM json_array_elements_text(${n}::json)"),
    }
}

/// A column of a bulk statement's rows ([`batch::Batch`]): its name, and
/// whether it holds an integer (PostgreSQL reads every JSON field as text
/// and casts these).
#[derive(Clone, Copy)]
pub(crate) enum Col {
    Text(&'static str),
    Int(&'static str),
}

/// Rows or ids as one JSON parameter: PostgreSQL's bulk rows
/// ([`batch::Batch`]) and the lists of ids of both backends ([`json_ids`]).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(rows: &T) -> Result<String> {
    serde_json::to_string(rows).map_err(|e| Error::Database(sqlx::Error::Encode(Box::new(e))))
}

/// `inner`'s rows as one JSON text, an array of arrays (SQLite), for
/// [`fetch_rows`]: `columns` are the names of its columns, in the order of
/// the fields they are read into (serde reads a struct from an array in
/// field order).
pub(crate) fn json_rows_sql(inner: &str, columns: &[&str]) -> String {
    let cols = columns.iter().map(|c| format!("q.{c}")).collect::<Vec<_>>().join(", ");
    format!("SELECT json_group_array(json_array({cols})) FROM ({inner}) q")
}

/// A query's rows: on SQLite through `json` ([`json_rows_sql`] of
/// `inner`), else row by row through `inner`; `bind` binds the
/// parameters, the same for both. sqlx's SQLite driver hands over each
/// row from its worker thread with an allocation per column: a plan's
/// 100,000 rows took 1.3-1.5 s to read that way, against 0.23 s for SQLite
/// to produce them, and 0.22 s as JSON. PostgreSQL's rows arrive from the
/// socket, and JSON was slower there (0.88 s against 0.75 s). On SQLite
/// the rows come in the order the aggregate met them: sort them if the
/// order matters.
pub(crate) async fn fetch_rows<'q, T>(
    pool: &AnyPool,
    backend: Backend,
    inner: &'q str,
    json: &'q str,
    bind: impl Fn(sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
) -> Result<Vec<T>>
where
    T: serde::de::DeserializeOwned + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    match backend {
        Backend::Sqlite => {
            let text: String = bind(sqlx::query(json)).fetch_one(pool).await?.try_get(0)?;
            serde_json::from_str(&text).map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))
        }
        Backend::Postgres => {
            let rows = bind(sqlx::query(inner)).fetch_all(pool).await?;
            Ok(rows.iter().map(T::from_row).collect::<std::result::Result<_, _>>()?)
        }
    }
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

impl Store {
    /// Connect and bring the schema up to date.
    ///
    /// `sqlite:path/to/file.db` (created if missing) or
    /// `postgres://user@host:port/db`.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl);
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?.log_statements(tracing::log::LevelFilter::Trace);
        let pool = open_pool(&opts, backend, if backend == Backend::Sqlite { 4 } else { 16 }).await?;
        bulk::end_bulk_load_before_migrations(&pool, backend).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let (write_gate, login_lane, writer, checkpointer) = match backend {
            Backend::Sqlite => {
                let pool = open_pool(&opts, backend, 1).await?;
                let gate = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                let (stop, stopped) = tokio::sync::watch::channel(());
                let bulk = std::sync::Arc::new(BulkClock::default());
                tokio::spawn(checkpoints(pool.clone(), gate.clone(), bulk.clone(), stopped));
                let checkpointer = std::sync::Arc::new(Checkpointer { pool, stop, bulk });
                (Some(gate), Some(open_pool(&opts, backend, 1).await?), Some(open_pool(&opts, backend, 1).await?), Some(checkpointer))
            }
            Backend::Postgres => (None, None, None, None),
        };
        Ok(Store {
            pool,
            backend,
            write_gate,
            login_lane,
            writer,
            grants: Default::default(),
            lookups: Default::default(),
            lookup_turn: Default::default(),
            checkpointer,
            page_counts: Default::default(),
        })
    }

    /// Where the login path reads and writes: on SQLite its own connection
    /// (see [`Store::login_lane`]), on PostgreSQL the pool.
    pub(crate) fn login_pool(&self) -> &AnyPool {
        self.login_lane.as_ref().unwrap_or(&self.pool)
    }

    /// Begin a write transaction (on SQLite, after this process's earlier
    /// writers are done).
    pub(crate) async fn write_tx(&self) -> Result<WriteTx> {
        let turn = self.write_turn().await;
        // SQLite: the write lock is taken at BEGIN. A deferred transaction
        // that reads first and writes later fails at once (SQLITE_BUSY_SNAPSHOT,
        // "database is locked", code 517) when a write outside the turn
        // (an audit line, a run's state) commits in between; seen failing a
        // user enumeration.
        let tx = match self.backend {
            Backend::Sqlite => self.write_pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres if IN_RUN.try_with(|_| ()).is_ok() => self.pool.begin_with(BEGIN_UNFLUSHED).await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn, backend: self.backend })
    }

    /// Run `job`, a sync run's work, with its write transactions committed
    /// on PostgreSQL without waiting for the write-ahead log to reach the
    /// disk (`synchronous_commit = off` for each of them, [`Store::write_tx`]).
    ///
    /// A delta run of 100 changes committed a dozen transactions (its
    /// start, its staging, two status computations, its cookies, plan,
    /// missing-user checks and apply), and each commit waited 0.3-1.5 ms
    /// for its flush: a tenth of the run. The log is written in order, so
    /// what a crash of the database server can take is always the newest
    /// transactions, whole: the same state as a crash a moment earlier,
    /// which a run survives (the next one finds its rows marked and its
    /// changes unsettled, or its cookies not yet moved on). The run's end
    /// ([`Store::finish_run`], outside any transaction) commits
    /// synchronously and so flushes every transaction before it. Only this
    /// task's transactions are concerned: the pages a run's enumeration
    /// writes from tasks of their own do the same by [`Store::page_tx`],
    /// and every other write of the process (an administrator's, a login's,
    /// a live disable) keeps waiting for its flush.
    pub async fn within_run<F: std::future::Future>(job: F) -> F::Output {
        IN_RUN.scope((), job).await
    }

    /// A write transaction for one page of an enumeration. On PostgreSQL
    /// its commit does not wait for the write-ahead log to reach the disk
    /// (`synchronous_commit = off` for this transaction only): a page's
    /// commit waited 3-4 ms for its flush, a third of a second of a first
    /// sync at 100,000 users. Nothing is at risk but the newest pages, and
    /// only if the database server itself stops within a fraction of a
    /// second; a transaction is then lost whole, never half (the run ends
    /// failed, and the next one writes those pages again). The run's own
    /// end is committed synchronously, which flushes every page before it.
    pub(crate) async fn page_tx(&self) -> Result<WriteTx> {
        IN_RUN.scope((), self.write_tx()).await
    }

    /// SQLite: tell the background checkpointer that a bulk load is under
    /// way, or that it ended ([`WAL_PAUSE_PAGES_BULK`], [`BULK_AFTERGLOW`],
    /// [`BULK_CHECKPOINT_HOLD`]).
    pub(crate) fn note_bulk_load(&self, under_way: bool) {
        if let Some(c) = &self.checkpointer {
            let until = if under_way { u64::MAX } else { epoch_ms() + BULK_AFTERGLOW.as_millis() as u64 };
            c.bulk.until.store(until, std::sync::atomic::Ordering::Relaxed);
            c.bulk.since.store(if under_way { epoch_ms() } else { 0 }, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// SQLite: a bulk load's rows are in (its search index is filled
    /// later): the checkpointer may copy the log again
    /// ([`BULK_CHECKPOINT_HOLD`]) while the rest of the run goes on.
    pub(crate) fn note_bulk_rows_loaded(&self) {
        if let Some(c) = &self.checkpointer {
            c.bulk.since.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Where the writes in this process's write turn go: on SQLite its one
    /// writing connection (see [`Store::writer`]), on PostgreSQL the pool.
    pub(crate) fn write_pool(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// This process's write turn on SQLite (`None` on PostgreSQL).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many write transactions of one job (an enumeration's pages) are
    /// worth running at once: two on PostgreSQL, whose writers run side by
    /// side (one kept one of two cores busy while the other sat about half
    /// idle). Two on SQLite too, although its writes take turns
    /// ([`Store::write_tx`]): each page is stored by a task of its own, so
    /// the second page's rows are made and its entries planned on the
    /// other core while the first one writes. With one at a time, that work
    /// stood between every two pages' writes: in the statement log of a
    /// first sync of 100,000 users, statements filled 70 % of the
    /// enumeration (77 % with two), and its pages ended at 4.5 s (3.7 s).
    pub fn writers_at_once(&self) -> usize {
        2
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        if let Some(lane) = &self.login_lane {
            lane.close().await;
        }
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
        if let Some(c) = &self.checkpointer {
            let _ = c.stop.send(());
            c.pool.close().await;
        }
    }

    /// Cheap liveness check for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ----- organisations -------------------------------------------------

    pub async fn insert_organisation(&self, name: &str, is_default: bool, now: i64) -> Result<i64> {
        let row = sqlx::query("INSERT INTO organisations (name, name_key, is_default, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(name.to_lowercase())
            .bind(b(is_default))
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(unique("organisation"))?;
        Ok(row.try_get(0)?)
    }

    pub async fn default_organisation(&self) -> Result<Option<OrganisationRow>> {
        Ok(sqlx::query_as(ORG_SELECT_DEFAULT).fetch_optional(&self.pool).await?)
    }

    pub async fn list_organisations(&self) -> Result<Vec<OrganisationRow>> {
        Ok(sqlx::query_as(&format!(
            "{ORG_SELECT} GROUP BY o.id, o.name, o.is_default, o.created_at ORDER BY o.is_default DESC, o.name_key"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::list_organisations`] without the member counts (which
    /// read every membership): what a sync plan, a login or a form check needs.
    pub async fn organisation_names(&self) -> Result<Vec<OrganisationRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, is_default, created_at, CAST(0 AS BIGINT) AS user_count FROM organisations \
             ORDER BY is_default DESC, name_key",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_organisation(&self, id: i64) -> Result<Option<OrganisationRow>> {
        Ok(sqlx::query_as(&format!("{ORG_SELECT} WHERE o.id = $1 GROUP BY o.id, o.name, o.is_default, o.created_at"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn rename_organisation(&self, id: i64, name: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE organisations SET name = $1, name_key = $2 WHERE id = $3")
            .bind(name)
            .bind(name.to_lowercase())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unique("organisation"))?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_organisation(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM organisations WHERE id = $1 AND is_default = 0").bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    // ----- users -----------------------------------------------------------

    pub async fn insert_user(&self, u: &NewUserRow<'_>) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO users (username, username_key, name, email, role, source, is_active, password_hash, \
             must_change_password, external_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING id",
        )
        .bind(u.username)
        .bind(u.username_key)
        .bind(u.name)
        .bind(u.email)
        .bind(u.role)
        .bind(u.source)
        .bind(b(u.is_active))
        .bind(u.password_hash)
        .bind(b(u.must_change_password))
        .bind(u.external_id)
        .bind(u.now)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique("user"))?;
        let id: i64 = row.try_get(0)?;
        for org in u.organisation_ids {
            sqlx::query("INSERT INTO user_organisations (user_id, organisation_id) VALUES ($1, $2)")
                .bind(id)
                .bind(*org)
                .execute(&mut *tx)
                .await?;
        }
        sync::user_changed(&mut tx, id).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Record that a directory user's account was checked against the directory.
    pub async fn set_user_validated(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE users SET validated_at = $1 WHERE id = $2").bind(now).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(&format!("{USER_SELECT} WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?)
    }

    /// The users of `ids` that exist, in id order: one query per 500, not
    /// one per user.
    pub async fn get_users(&self, ids: &[i64]) -> Result<Vec<UserRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            // ids are integers: safe to inline.
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            out.extend(
                sqlx::query_as::<_, UserRow>(&format!("{USER_SELECT} WHERE id IN ({list})"))
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        out.sort_by_key(|u| u.id);
        Ok(out)
    }

    /// Look a user up by the case-folded username.
    /// The directory user linked to a directory entry's immutable id.
    pub async fn find_user_by_external_id(&self, external_id: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(&format!("{USER_SELECT} WHERE external_id = $1 AND source <> 'local'"))
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn find_user(&self, username_key: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(&format!("{USER_SELECT} WHERE username_key = $1")).bind(username_key).fetch_optional(&self.pool).await?)
    }

    /// One page of users, newest last, matching `search` in username, name or email.
    pub async fn list_users(&self, search: Option<&str>, limit: i64, offset: i64) -> Result<(Vec<UserRow>, i64)> {
        let (filter, pattern) = match search {
            Some(s) => (
                " WHERE (username_key LIKE $1 ESCAPE '\\' OR lower(name) LIKE $1 ESCAPE '\\' OR lower(email) LIKE $1 ESCAPE '\\')",
                Some(like_pattern(s)),
            ),
            None => ("", None),
        };
        let total: i64 = {
            let q = format!("SELECT COUNT(*) FROM users{filter}");
            let mut q = sqlx::query(&q);
            if let Some(p) = &pattern {
                q = q.bind(p.clone());
            }
            q.fetch_one(&self.pool).await?.try_get(0)?
        };
        let (l, o) = if pattern.is_some() { ("$2", "$3") } else { ("$1", "$2") };
        let sql = format!("{USER_SELECT}{filter} ORDER BY username_key LIMIT {l} OFFSET {o}");
        let mut q = sqlx::query_as::<Any, UserRow>(&sql);
        if let Some(p) = pattern {
            q = q.bind(p);
        }
        let rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows, total))
    }

    pub async fn update_user(&self, id: i64, u: &UserRowUpdate<'_>, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query("UPDATE users SET name = $1, email = $2, role = $3, is_active = $4, dir_disabled = CASE WHEN $4 = 1 THEN 0 ELSE dir_disabled END, updated_at = $5 WHERE id = $6")
            .bind(u.name)
            .bind(u.email)
            .bind(u.role)
            .bind(b(u.is_active))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sync::user_changed(&mut tx, id).await?;
        if let Some(orgs) = u.organisation_ids {
            sqlx::query("DELETE FROM user_organisations WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
            for org in orgs {
                sqlx::query("INSERT INTO user_organisations (user_id, organisation_id) VALUES ($1, $2)")
                    .bind(id)
                    .bind(*org)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_password(&self, id: i64, hash: &str, must_change: bool, now: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE users SET password_hash = $1, must_change_password = $2, updated_at = $3 WHERE id = $4")
            .bind(hash)
            .bind(b(must_change))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Delete a user. The snapshot rows linked to it get a new status (they
    /// are new again, or link to someone else).
    pub async fn delete_user(&self, id: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users WHERE user_id = $1 ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn count_users(&self) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT COUNT(*), CAST(COALESCE(SUM(is_active), 0) AS BIGINT) FROM users").fetch_one(&self.pool).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// (user id, organisation) pairs for the given users.
    pub async fn organisations_of(&self, user_ids: &[i64]) -> Result<Vec<MembershipRow>> {
        self.memberships(
            "SELECT uo.user_id AS owner_id, o.id AS id, o.name AS name FROM user_organisations uo \
             JOIN organisations o ON o.id = uo.organisation_id WHERE uo.user_id IN ({ids}) ORDER BY o.name_key",
            user_ids,
        )
        .await
    }

    /// (user id, group) pairs for the given users.
    pub async fn groups_of(&self, user_ids: &[i64]) -> Result<Vec<MembershipRow>> {
        self.memberships(
            "SELECT gm.user_id AS owner_id, g.id AS id, g.name AS name FROM group_members gm \
             JOIN user_groups g ON g.id = gm.group_id WHERE gm.user_id IN ({ids}) ORDER BY g.name_key",
            user_ids,
        )
        .await
    }

    /// (group id, member) pairs for the given groups.
    pub async fn members_of(&self, group_ids: &[i64]) -> Result<Vec<MembershipRow>> {
        self.memberships(
            "SELECT gm.group_id AS owner_id, u.id AS id, u.username AS name FROM group_members gm \
             JOIN users u ON u.id = gm.user_id WHERE gm.group_id IN ({ids}) ORDER BY u.username_key",
            group_ids,
        )
        .await
    }

    async fn memberships(&self, template: &str, ids: &[i64]) -> Result<Vec<MembershipRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // ids are i64 from our own rows: formatting them cannot inject SQL,
        // and one IN list is one round trip for a whole page.
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = template.replace("{ids}", &list);
        Ok(sqlx::query_as(&sql).persistent(false).fetch_all(&self.pool).await?)
    }

    // ----- groups ------------------------------------------------------------

    pub async fn insert_group(&self, name: &str, description: &str, source: &str, members: &[i64], now: i64) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO user_groups (name, name_key, description, source, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(name.to_lowercase())
        .bind(description)
        .bind(source)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique("group"))?;
        let id: i64 = row.try_get(0)?;
        for m in members {
            sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)").bind(id).bind(*m).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn update_group(&self, id: i64, name: &str, description: &str, members: &[i64]) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query("UPDATE user_groups SET name = $1, name_key = $2, description = $3 WHERE id = $4")
            .bind(name)
            .bind(name.to_lowercase())
            .bind(description)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unique("group"))?;
        sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(id).execute(&mut *tx).await?;
        for m in members {
            sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)").bind(id).bind(*m).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupRow>> {
        Ok(sqlx::query_as("SELECT id, name, description, source, created_at FROM user_groups ORDER BY name_key")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn get_group(&self, id: i64) -> Result<Option<GroupRow>> {
        Ok(sqlx::query_as("SELECT id, name, description, source, created_at FROM user_groups WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn delete_group(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM user_groups WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn count_groups_and_orgs(&self) -> Result<(i64, i64)> {
        let g: i64 = sqlx::query("SELECT COUNT(*) FROM user_groups").fetch_one(&self.pool).await?.try_get(0)?;
        let o: i64 = sqlx::query("SELECT COUNT(*) FROM organisations").fetch_one(&self.pool).await?.try_get(0)?;
        Ok((g, o))
    }

    // ----- sessions ----------------------------------------------------------

    pub async fn insert_session(&self, token_hash: &str, user_id: i64, ip: &str, user_agent: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, ip, user_agent) VALUES ($1, $2, $3, $3, $4, $5)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .bind(ip)
            .bind(user_agent)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        Ok(sqlx::query_as("SELECT token_hash, user_id, created_at, last_seen_at FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2").bind(now).bind(token_hash).execute(&mut *tx).await?;
        tx.commit().await
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
        Ok(())
    }

    /// Revoke every session of a user; returns how many ended.
    pub async fn delete_user_sessions(&self, user_id: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    pub async fn purge_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    // ----- API tokens --------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        prefix: &str,
        created_by: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(prefix)
        .bind(created_by)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn list_api_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiTokenRow>> {
        let mut sql = TOKEN_SELECT.to_string();
        if user_id.is_some() {
            sql.push_str(" WHERE t.user_id = $1");
        }
        sql.push_str(" ORDER BY t.id DESC");
        let mut q = sqlx::query_as::<Any, ApiTokenRow>(&sql);
        if let Some(u) = user_id {
            q = q.bind(u);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    pub async fn get_api_token(&self, id: i64) -> Result<Option<ApiTokenRow>> {
        Ok(sqlx::query_as(&format!("{TOKEN_SELECT} WHERE t.id = $1")).bind(id).fetch_optional(&self.pool).await?)
    }

    pub async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRow>> {
        Ok(sqlx::query_as(&format!("{TOKEN_SELECT} WHERE t.token_hash = $1")).bind(token_hash).fetch_optional(&self.pool).await?)
    }

    pub async fn touch_api_token(&self, id: i64, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2").bind(now).bind(id).execute(&mut *tx).await?;
        tx.commit().await
    }

    pub async fn revoke_api_token(&self, id: i64, now: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn revoke_user_api_tokens(&self, user_id: i64, now: i64) -> Result<u64> {
        let r = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    // ----- logs --------------------------------------------------------------

    pub async fn insert_login_event(&self, e: &NewLoginEvent<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        login::insert_event(&mut tx, e).await?;
        tx.commit().await
    }

    pub async fn list_login_events(&self, f: &LogFilter<'_>, limit: i64, offset: i64) -> Result<(Vec<LoginEventRow>, i64)> {
        let (where_, binds) = f.login_clause();
        self.list_log("login_log", "id, at, username, ip, user_agent, success, reason, method", &where_, binds, limit, offset).await
    }

    pub async fn list_operation_events(&self, f: &LogFilter<'_>, limit: i64, offset: i64) -> Result<(Vec<OperationEventRow>, i64)> {
        let (where_, binds) = f.operation_clause();
        self.list_log("operation_log", "id, at, actor, action, target, before_json, after_json, ip", &where_, binds, limit, offset).await
    }

    async fn list_log<T>(
        &self,
        table: &str,
        columns: &str,
        where_: &str,
        binds: Vec<LogBind>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<T>, i64)>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let count_sql = format!("SELECT COUNT(*) FROM {table}{where_}");
        let mut cq = sqlx::query(&count_sql);
        for b in &binds {
            cq = b.bind(cq);
        }
        let total: i64 = cq.fetch_one(&self.pool).await?.try_get(0)?;
        let n = binds.len();
        let sql = format!("SELECT {columns} FROM {table}{where_} ORDER BY id DESC LIMIT ${} OFFSET ${}", n + 1, n + 2);
        let mut q = sqlx::query_as::<Any, T>(&sql);
        for b in &binds {
            q = b.bind_as(q);
        }
        Ok((q.bind(limit).bind(offset).fetch_all(&self.pool).await?, total))
    }

    /// Delete log entries older than `before` (ms), a batch at a time so no
    /// statement holds the database for long. Returns (login, operation) rows deleted.
    pub async fn purge_logs(&self, before: i64) -> Result<(u64, u64)> {
        sqlx::query("DELETE FROM login_stats WHERE hour < $1").bind(before.div_euclid(3_600_000)).execute(&self.pool).await?;
        let mut deleted = [0u64; 2];
        for (i, table) in ["login_log", "operation_log"].iter().enumerate() {
            loop {
                let sql = format!("DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE at < $1 ORDER BY id LIMIT 5000)");
                let n = sqlx::query(&sql).bind(before).execute(&self.pool).await?.rows_affected();
                deleted[i] += n;
                if n < 5000 {
                    break;
                }
            }
        }
        Ok((deleted[0], deleted[1]))
    }

    /// Sign-ins per hour from `from_hour` (hours since the epoch) up to the
    /// hour of `now`, by method and result: `(hour, method, success, count)`.
    /// Completed hours come from `login_stats` (rolled up here first, for
    /// the hours since the last roll-up); the current hour from the log.
    pub async fn login_activity(&self, from_hour: i64, now: i64) -> Result<Vec<(i64, String, bool, i64)>> {
        const HOUR: i64 = 3_600_000;
        let current = now.div_euclid(HOUR);
        self.roll_up_login_stats(from_hour, current).await?;
        let rows = sqlx::query(
            "SELECT hour, method, success, n FROM login_stats WHERE hour >= $1 AND hour < $2 \
             UNION ALL SELECT $2, method, success, COUNT(*) FROM login_log WHERE at >= $3 GROUP BY method, success",
        )
        .bind(from_hour)
        .bind(current)
        .bind(current * HOUR)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)? != 0, r.try_get::<i64, _>(3)?)))
            .collect()
    }

    /// Count the completed hours `[max(done_until, from_hour), until_hour)`
    /// into `login_stats`. Replicas sharing a database may race: the one
    /// whose marker update finds the marker moved rolls back.
    async fn roll_up_login_stats(&self, from_hour: i64, until_hour: i64) -> Result<()> {
        const HOUR: i64 = 3_600_000;
        let mut tx = self.write_tx().await?;
        let done: i64 = sqlx::query("SELECT done_until FROM login_stats_state WHERE id = 1").fetch_one(&mut *tx).await?.try_get(0)?;
        let start = done.max(from_hour);
        if start >= until_hour {
            drop(tx); // rolls back
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO login_stats (hour, method, success, n) \
             SELECT at / 3600000, method, success, COUNT(*) FROM login_log WHERE at >= $1 AND at < $2 \
             GROUP BY at / 3600000, method, success ON CONFLICT (hour, method, success) DO NOTHING",
        )
        .bind(start * HOUR)
        .bind(until_hour * HOUR)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query("UPDATE login_stats_state SET done_until = $1 WHERE id = 1 AND done_until = $2")
            .bind(until_hour)
            .bind(done)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 1 {
            tx.commit().await?;
        } else {
            drop(tx); // rolls back
        }
        Ok(())
    }

    pub async fn count_logins_since(&self, since: i64) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(success), 0) AS BIGINT), COUNT(*) FROM login_log WHERE at >= $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        let ok: i64 = row.try_get(0)?;
        let all: i64 = row.try_get(1)?;
        Ok((ok, all - ok))
    }

    pub async fn insert_operation(&self, e: &NewOperationEvent<'_>) -> Result<()> {
        operation_insert(e).execute(&self.pool).await?;
        Ok(())
    }

    /// Several operation-log entries in one transaction (a sync chunk's
    /// role changes and disables: one commit, not one per entry), 1,000 a
    /// statement (`batch`): a delta sync's ten disables were ten
    /// statements, 2.6 ms of a 50 ms run on PostgreSQL.
    pub async fn insert_operations(&self, events: &[NewOperationEvent<'_>]) -> Result<()> {
        use crate::batch::Cell;
        use crate::Col::{Int, Text};
        const COLUMNS: [Col; 7] =
            [Int("at"), Text("actor"), Text("action"), Text("target"), Text("before_json"), Text("after_json"), Text("ip")];
        if events.is_empty() {
            return Ok(());
        }
        let mut statements = Vec::new();
        for chunk in events.chunks(1000) {
            let mut batch = crate::batch::Batch::new(self.backend, &COLUMNS, chunk.len());
            for e in chunk {
                batch.push([
                    Cell::Int(e.at),
                    Cell::Text(e.actor),
                    Cell::Text(e.action),
                    Cell::Text(e.target),
                    e.before.into(),
                    e.after.into(),
                    Cell::Text(e.ip),
                ]);
            }
            let sql = format!(
                "INSERT INTO operation_log (at, actor, action, target, before_json, after_json, ip) \
                 SELECT o.at, o.actor, o.action, o.target, o.before_json, o.after_json, o.ip FROM ({}) o",
                batch.source()
            );
            statements.push(crate::batch::Statement { sql, batch });
        }
        let queries = statements.iter().map(|st| st.batch.bind(sqlx::query(&st.sql))).collect::<Result<Vec<_>>>()?;
        let mut tx = self.write_tx().await?;
        for q in queries {
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    // ----- lockout -----------------------------------------------------------

    pub async fn clear_failures(&self, key: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM auth_failures WHERE key = $1").bind(key).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    /// Keys with at least their threshold of failures since `since`:
    /// `user_threshold` for `user:` keys, `ip_threshold` for the others
    /// (`ip:` keys).
    pub async fn locked_keys(&self, since: i64, user_threshold: i64, ip_threshold: i64) -> Result<Vec<LockoutRow>> {
        Ok(sqlx::query_as(
            "SELECT key, COUNT(*) AS failures, MAX(at) AS last_at FROM auth_failures WHERE at >= $1 \
             GROUP BY key HAVING COUNT(*) >= CASE WHEN key LIKE 'user:%' THEN $2 ELSE $3 END ORDER BY MAX(at) DESC",
        )
        .bind(since)
        .bind(user_threshold)
        .bind(ip_threshold)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn purge_failures(&self, before: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM auth_failures WHERE at < $1").bind(before).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    // ----- directory configurations -------------------------------------------

    pub async fn get_directory(&self, kind: &str) -> Result<Option<DirectoryRow>> {
        Ok(sqlx::query_as(
            "SELECT kind, settings_json, bind_password_enc, client_key_enc, updated_at FROM directory_configs WHERE kind = $1",
        )
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// When a configuration was last saved (its version), without reading it.
    pub async fn directory_version(&self, kind: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT updated_at FROM directory_configs WHERE kind = $1").bind(kind).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    pub async fn put_directory(&self, row: &DirectoryRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO directory_configs (kind, settings_json, bind_password_enc, client_key_enc, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind) DO UPDATE SET settings_json = excluded.settings_json, bind_password_enc = excluded.bind_password_enc, \
             client_key_enc = excluded.client_key_enc, updated_at = excluded.updated_at",
        )
        .bind(&row.kind)
        .bind(&row.settings_json)
        .bind(&row.bind_password_enc)
        .bind(&row.client_key_enc)
        .bind(row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_directory(&self, kind: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM directory_configs WHERE kind = $1").bind(kind).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    // ----- settings ----------------------------------------------------------

    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    pub async fn put_setting(&self, key: &str, value: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn unique(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::Conflict(what),
        _ => Error::Database(e),
    }
}

/// SQLite's page size for a new database, in bytes. A first sync is bound
/// by its writes, which go into the snapshot's nine indexes, the users'
/// five and the write-ahead log, a frame per page. With pages of 8 KiB
/// instead of SQLite's 4 KiB, 100 transactions of 1,000 snapshot rows
/// into the snapshot's table and indexes in `sqlite3` made 43,000 writes
/// to the log instead of 75,600 (10 % more bytes) and ran 3.3 % fewer
/// instructions (3.71 against 3.83 billion, counted by callgrind); the
/// file was the same size. The import table's deep pages read fewer
/// pages: its p95 in `scripts/bench import` went from 11.0-11.1 ms to
/// 8.9-9.8 ms, alternated. The page cache is sized in bytes (SQLite's
/// default), so memory stays the same.
const SQLITE_PAGE_SIZE: u32 = 8192;

/// The columns of a [`UserRow`], for `SELECT`s of users.
/// A pool of at most `max` connections, each set up for the backend.
async fn open_pool(opts: &AnyConnectOptions, backend: Backend, max: u32) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        // A ping before every query doubled the round trips to SQLite's
        // worker threads; an embedded database has no network to lose.
        .test_before_acquire(backend == Backend::Postgres)
        .acquire_timeout(Duration::from_secs(10))
        .after_release(move |conn, _| {
            Box::pin(async move {
                if backend != Backend::Sqlite {
                    return Ok(true);
                }
                // A connection that comes back inside a transaction is
                // closed, which rolls it back, instead of being handed out
                // again holding SQLite's write lock: every other writer
                // would wait out its busy timeout and fail ("database is
                // locked"). sqlx leaves one behind when a `begin_with`
                // future is dropped after the worker answered its `BEGIN`
                // but before the `Transaction` that would roll it back
                // exists (an enumeration's page store dropped there left an
                // administrator's login failing for 10 s). Almost every
                // connection comes back outside one and costs no round trip;
                // one inside is pinged first, which lets its worker run what
                // is queued: a dropped transaction's own rollback.
                if !sqlx::Connection::is_in_transaction(&*conn) {
                    return Ok(true);
                }
                sqlx::Connection::ping(&mut *conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(&*conn))
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // Pages of 8 KiB for a new database (an existing one
                    // keeps its own: the size is fixed once the file has
                    // its header, which the switch to WAL below writes).
                    // See `SQLITE_PAGE_SIZE`.
                    sqlx::query(&format!("PRAGMA page_size = {SQLITE_PAGE_SIZE}")).execute(&mut *conn).await?;
                    // WAL: readers never block the writer; NORMAL is
                    // durable across application crashes in WAL mode.
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    // No connection checkpoints when it commits: the
                    // background checkpointer does (see `checkpoints`).
                    sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA journal_size_limit = 33554432").execute(&mut *conn).await?;
                } else {
                    // No JIT compilation: it pays off for long analytic
                    // queries, and ours are short. A status computation of
                    // 200 marks was estimated above `jit_above_cost` and
                    // spent about 150 ms compiling 306 functions to run
                    // for a few milliseconds; over 100,000 marks, with
                    // LLVM's optimisation on, seconds.
                    sqlx::query("SET jit = off").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(opts.clone())
        .await?;
    Ok(pool)
}

macro_rules! user_columns {
    () => {
        "id, username, username_key, name, email, role, source, is_active, password_hash, \
         must_change_password, external_id, created_at, updated_at, last_login_at, validated_at, dir_disabled, role_pinned"
    };
}
pub(crate) use user_columns;

const USER_SELECT: &str = concat!("SELECT ", user_columns!(), " FROM users");

const ORG_SELECT: &str = "SELECT o.id AS id, o.name AS name, o.is_default AS is_default, o.created_at AS created_at, \
    COUNT(uo.user_id) AS user_count FROM organisations o LEFT JOIN user_organisations uo ON uo.organisation_id = o.id";

/// The statement that writes one operation-log entry.
fn operation_insert<'q>(e: &NewOperationEvent<'q>) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query("INSERT INTO operation_log (at, actor, action, target, before_json, after_json, ip) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(e.at)
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.before)
        .bind(e.after)
        .bind(e.ip)
}

const ORG_SELECT_DEFAULT: &str =
    "SELECT id, name, is_default, created_at, CAST(0 AS BIGINT) AS user_count FROM organisations WHERE is_default = 1 ORDER BY id LIMIT 1";

const TOKEN_SELECT: &str = "SELECT t.id AS id, t.user_id AS user_id, u.username AS username, t.name AS name, \
    t.prefix AS prefix, t.created_at AS created_at, t.last_used_at AS last_used_at, t.expires_at AS expires_at, \
    t.revoked_at AS revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id";

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("A_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    /// PostgreSQL: a sync run's write transactions (and a page's) commit
    /// without waiting for the log flush; every other write, and a run's
    /// statements outside a transaction (its end), still wait for it.
    #[tokio::test]
    async fn only_a_runs_transactions_commit_unflushed() {
        let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
        let store = db.store.clone();
        // The setting inside a transaction (committed), or on the pool.
        async fn setting(store: &crate::Store, tx: Option<crate::WriteTx>) -> String {
            use sqlx::Row;
            let show = sqlx::query("SHOW synchronous_commit");
            let row = match tx {
                Some(mut tx) => {
                    let row = show.fetch_one(&mut *tx.tx).await.unwrap();
                    tx.commit().await.unwrap();
                    row
                }
                None => show.fetch_one(&store.pool).await.unwrap(),
            };
            row.try_get::<String, _>(0).unwrap()
        }
        assert_eq!(setting(&store, Some(store.write_tx().await.unwrap())).await, "on", "an administrator's write");
        let (in_run, outside_tx) =
            crate::Store::within_run(async { (setting(&store, Some(store.write_tx().await.unwrap())).await, setting(&store, None).await) })
                .await;
        assert_eq!((in_run.as_str(), outside_tx.as_str()), ("off", "on"), "a run's transaction, and a statement of its own");
        let page = setting(&store, Some(store.page_tx().await.unwrap())).await;
        assert_eq!(page, "off", "a page's transaction, from a task of its own");
        assert_eq!(setting(&store, Some(store.write_tx().await.unwrap())).await, "on", "the setting ends with its transaction");
    }

    /// Eight writes, each through [`crate::Store::write_tx`] and within
    /// 3 s, on whichever pooled connection: none finds the lock held.
    async fn writes_go_through(store: &crate::Store, after: &str) {
        for i in 0..8 {
            let written = tokio::time::timeout(std::time::Duration::from_secs(3), async {
                let mut tx = store.write_tx().await?;
                sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ($1, '1', 0)")
                    .bind(format!("t.{after}.{i}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<(), crate::Error>(())
            })
            .await;
            assert!(matches!(written, Ok(Ok(()))), "write {i} after {after}: {written:?}");
        }
    }

    /// Drop, after 50 ms, a write transaction that runs `write` (if any)
    /// and then reads every row of `read`.
    async fn drop_while_reading(store: &crate::Store, write: Option<&str>, read: &str) {
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(50), async {
            let mut tx = store.write_tx().await?;
            if let Some(write) = write {
                sqlx::query(write).execute(&mut *tx).await?;
            }
            let rows = sqlx::query(read).fetch_all(&mut *tx).await?;
            assert!(!rows.is_empty());
            tx.commit().await
        })
        .await;
        assert!(dropped.is_err(), "not dropped ({read}): {dropped:?}");
    }

    /// SQLite: the writes in the write turn go through one connection of
    /// their own (`Store::writer`). None waits for the pool's connections,
    /// here all held by readers (as the import table's pages and a sync's
    /// reads hold them), and each finds what the writes before it left on
    /// their connection: a temporary table, which only its connection
    /// sees. So the page cache of a first sync's writes stays warm from
    /// one page's transaction to the next.
    #[tokio::test]
    async fn sqlite_writes_in_the_turn_go_through_one_connection_of_their_own() {
        use std::time::Duration;
        let db = crate::testing::TestDb::new(crate::Backend::Sqlite).await;
        let store = &db.store;
        let mut readers = Vec::new();
        for _ in 0..4 {
            readers.push(store.pool.acquire().await.expect("a reader"));
        }
        for i in 0..6 {
            if i == 3 {
                readers.clear();
            }
            let mut tx = tokio::time::timeout(Duration::from_secs(2), store.write_tx())
                .await
                .expect("a write in the turn does not wait for the pool's connections")
                .expect("begin");
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS turn_marks (n INTEGER)").execute(&mut *tx).await.expect("mark table");
            sqlx::query("INSERT INTO temp.turn_marks (n) VALUES ($1)").bind(i).execute(&mut *tx).await.expect("mark");
            tx.commit().await.expect("commit");
            // Once the readers are gone, a read in between, on the pool.
            if readers.is_empty() {
                sqlx::query("SELECT COUNT(*) FROM users").fetch_one(&store.pool).await.expect("a read");
            }
        }
        store.run_progress(1, 1, 1).await.expect("a run's progress, in the turn");
        let mut tx = store.write_tx().await.expect("begin");
        let marks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM temp.turn_marks").fetch_one(&mut *tx).await.expect("marks");
        assert_eq!(marks, 6, "every write in the turn on one connection");
    }

    /// A connection handed back to the pool inside a transaction nobody
    /// can end (sqlx answered a `BEGIN` whose `Transaction` was never made:
    /// a future dropped between the two) is closed, not handed out again
    /// with SQLite's write lock. Fails without the pool's `after_release`
    /// (the first write after it times out). Seen for real: an
    /// enumeration's page store dropped inside `write_tx` made the API
    /// cancel test's login fail, 2 runs of 4; with this, 0 of 24.
    #[tokio::test]
    async fn a_connection_returned_inside_a_transaction_is_not_reused() {
        use sqlx::Connection;
        let db = crate::testing::TestDb::new(crate::Backend::Sqlite).await;
        let store = &db.store;
        for round in 0..3 {
            let mut conn = store.pool.acquire().await.expect("a connection");
            let tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
            // As if the future that began it were dropped before it had the
            // transaction: nothing will commit or roll it back.
            std::mem::forget(tx);
            drop(conn);
            writes_go_through(store, &format!("a connection returned inside a transaction ({round})")).await;
        }
    }

    /// A write whose future is dropped half-way (a request whose client
    /// went away, a timeout) leaves no lock behind on SQLite: dropped while
    /// its `BEGIN IMMEDIATE` waits for another writer, in the middle of a
    /// long statement, while it reads rows after a write, or while it reads
    /// the rows an insert returns. The next writes, on whichever pooled
    /// connection, go through, and the dropped ones are rolled back. (sqlx rolls a dropped transaction back on the
    /// connection's worker; the handlers rely on it, and this checks it
    /// whenever sqlx changes. The one window it misses, a `begin_with`
    /// dropped after its `BEGIN` was answered, is the pool's
    /// `after_release`: see the test below.)
    #[tokio::test]
    async fn a_write_dropped_half_way_leaves_no_lock_behind() {
        use sqlx::Connection;
        use std::time::Duration;
        let db = crate::testing::TestDb::new(crate::Backend::Sqlite).await;
        let store = &db.store;
        // Another process's writer holds the lock for a moment.
        let mut other = sqlx::AnyConnection::connect(&db.url).await.expect("a second connection");
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.expect("the lock");
        let dropped = tokio::time::timeout(Duration::from_millis(100), async {
            let mut tx = store.write_tx().await?;
            sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ('t.dropped', '1', 0)").execute(&mut *tx).await?;
            tx.commit().await
        })
        .await;
        assert!(dropped.is_err(), "the write waited for the lock: {dropped:?}");
        sqlx::query("COMMIT").execute(&mut other).await.expect("lock released");
        // The next writes go through, on whichever pooled connection.
        writes_go_through(store, "a write dropped waiting for the lock").await;
        // Dropped in the middle of a long statement of its transaction.
        let dropped = tokio::time::timeout(Duration::from_millis(50), async {
            let mut tx = store.write_tx().await?;
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) \
                 SELECT 't.long' || i, '1', 0 FROM c",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
        .await;
        assert!(dropped.is_err(), "the long write was dropped: {dropped:?}");
        writes_go_through(store, "a write dropped in a long statement").await;
        // Dropped while reading the rows of a long query, after a write.
        drop_while_reading(
            store,
            Some("INSERT INTO settings (key, value, updated_at) VALUES ('t.dropped', '1', 0)"),
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000000) SELECT i FROM c",
        )
        .await;
        writes_go_through(store, "a write dropped reading rows").await;
        // Dropped while reading the rows an insert returns.
        drop_while_reading(
            store,
            None,
            "INSERT INTO settings (key, value, updated_at) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) \
             SELECT 't.returned' || i, '1', 0 FROM c WHERE true RETURNING key",
        )
        .await;
        writes_go_through(store, "an insert dropped reading what it returns").await;
        let kept: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key = 't.dropped' OR key LIKE 't.long%' OR key LIKE 't.returned%'")
                .fetch_one(&store.pool)
                .await
                .expect("count");
        assert_eq!(kept, 0, "the dropped writes were rolled back");
    }
}
